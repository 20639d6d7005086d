"""The users app reaches the worker through one seam, and the worker's plumbing knows nothing of
users: no module of ``users/`` imports ``tasks.tasks``, no module of ``tasks/`` imports the users
app — except ``tasks/__init__.py``'s lazy re-export of ``send_verify_email``, which the contract's
``from tasks import send_verify_email`` needs. Read from the source (``ast``), so a new import
anywhere, even one inside a function, fails here."""

from __future__ import annotations

import ast
from pathlib import Path

from django.conf import settings

ROOT = Path(settings.BASE_DIR)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _modules(package: str) -> list[Path]:
    return [p for p in sorted((ROOT / package).rglob("*.py")) if "tests" not in p.relative_to(ROOT).parts]


def test_users_never_imports_the_worker_tasks_module():
    found = {
        (str(path.relative_to(ROOT)), name)
        for path in _modules("users")
        for name in _imports(path)
        if name == "tasks.tasks" or name.startswith("tasks.tasks.")
    }
    assert found == set()


def test_tasks_knows_nothing_of_users():
    allowed = {("tasks/__init__.py", "users.tasks"), ("tasks/__init__.py", "users.tasks.send_verify_email")}
    found = {
        (str(path.relative_to(ROOT)), name)
        for path in _modules("tasks")
        for name in _imports(path)
        if name == "users" or name.startswith("users.")
    }
    assert found == allowed  # the contract's re-export, and nothing else


def test_the_checks_see_the_imports_they_guard(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from tasks.tasks import x\n    import users.services.delivery\n")
    assert {"tasks.tasks", "tasks.tasks.x", "users.services.delivery"} <= _imports(probe)
