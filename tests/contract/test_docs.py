"""The docs stay true: every variable the code reads is documented (and in ``.env.example``), every
documented one is read; every route is documented; every ``make X``, ``manage.py X`` and path the
docs name exists; no half HTML comment, no duplicate heading on a page. (Links and anchors between
pages: ``make docs``, MkDocs in strict mode.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.core.management import call_command, get_commands
from django.urls import URLPattern, URLResolver, get_resolver

ROOT = Path(__file__).resolve().parents[2]
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
RUNTIME = [
    *(ROOT / "bankproject").rglob("*.py"),
    *(ROOT / "users").rglob("*.py"),
    *(ROOT / "tasks").rglob("*.py"),
    ROOT / "gunicorn.conf.py",
    ROOT / "Procfile",
    ROOT / "scripts" / "run.sh",
]
TOOLS = [
    *(ROOT / "bench").rglob("*.py"),
    ROOT / "scripts" / "stress.sh",
    ROOT / "tests" / "integration" / "test_brokers.py",
    ROOT / "tests" / "browser" / "conftest.py",
]
# Ours are upper case; Dramatiq's own start "dramatiq_" in lower case (dramatiq_prom_db…).
NAME = r"[A-Z][A-Z0-9_]+|dramatiq_[a-z_]+"
PYTHON_READ = re.compile(
    rf"""(?:os\.environ\.get|os\.getenv|env_int|env_bool|env_list|env_rate|env_str|os\.environ\.setdefault)\(\s*["']({NAME})["']"""
    rf"""|os\.environ\[["']({NAME})["']\]"""
)
# Read by Dramatiq itself, not by our code: documented because an operator sets them.
READ_BY_DRAMATIQ = {"dramatiq_prom_port", "dramatiq_prom_host", "dramatiq_prom_db", "dramatiq_worker_timeout"}
SHELL_READ = re.compile(r"\$\{([A-Z][A-Z0-9_]+)(?::?-[^}]*)?\}")
NOT_OURS = {"DJANGO_SETTINGS_MODULE", "PYTHON"}  # Django's own; the Makefile's interpreter


def _read(files: list[Path]) -> set[str]:
    names: set[str] = set()
    for path in files:
        if ("tests" in path.parts and path not in TOOLS) or path.name == "settings_test.py":
            continue
        text = path.read_text()
        names |= {a or b for a, b in PYTHON_READ.findall(text)} | set(SHELL_READ.findall(text))
    return names - NOT_OURS


def _configuration() -> str:
    return (ROOT / "docs" / "configuration.md").read_text()


def test_every_variable_the_service_reads_is_documented_and_in_env_example():
    configuration, example = _configuration(), (ROOT / ".env.example").read_text()
    read = _read(RUNTIME)
    assert {n for n in read if f"`{n}`" not in configuration} == set(), "missing from docs/configuration.md"
    assert {n for n in read if not re.search(rf"(?m)^#? ?{n}=", example)} == set(), "missing from .env.example"


def test_every_variable_the_tools_read_is_documented():
    configuration = _configuration()
    assert {n for n in _read(TOOLS) if f"`{n}`" not in configuration} == set()


def test_every_documented_variable_is_read_somewhere():
    documented = {
        n
        for row in re.findall(r"(?m)^\| (`(?:[A-Z]|dramatiq_).*?) \|", _configuration())
        for n in re.findall(rf"`({NAME})`", row)
    }
    makefile = (ROOT / "Makefile").read_text()
    read = _read(RUNTIME) | _read(TOOLS) | {n for n in documented if f"$({n})" in makefile} | READ_BY_DRAMATIQ
    assert documented - read == set(), "documented but read nowhere"


def _routes(patterns: list, prefix: str = "") -> list[str]:
    found = []
    for entry in patterns:
        if isinstance(entry, URLResolver):
            found += _routes(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            found.append(prefix + str(entry.pattern))
    return found


def test_every_route_is_documented():
    """Every route of the service on the API or the accounts page (anymail's, Django admin's and
    the static files' are theirs; the admin is named as a whole)."""
    pages = (ROOT / "docs" / "api.md").read_text() + (ROOT / "docs" / "accounts.md").read_text()
    pages += (ROOT / "docs" / "delivery-feedback.md").read_text()
    pages = re.sub(r"<[\w-]+>", "<>", pages)  # a placeholder is a placeholder, whatever its name
    missing = []
    for route in _routes(get_resolver().url_patterns):
        if route.startswith(("admin/", "anymail/", "static/", "media/")) or route in ("", "admin/"):
            continue
        shown = "/" + re.sub(r"<(?:\w+:)?\w+>", "<>", route)
        if shown not in pages and shown.rstrip("/") not in pages:
            missing.append(shown)
    assert missing == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_what_a_page_names_exists(doc: Path):
    text = doc.read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    assert {t for t in re.findall(r"`make ([a-z][a-z-]*)", text) if t not in targets} == set(), "make targets"
    commands = set(get_commands())
    assert {c for c in re.findall(r"manage\.py ([a-z_]+)", text) if c not in commands} == set(), "commands"
    paths = re.findall(r"`((?:users|tasks|bankproject|tests|bench|scripts|deploy|docs|templates)/[\w./-]*)`", text)
    assert [p for p in paths if "*" not in p and "<" not in p and not (ROOT / p).exists()] == [], "paths"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_comments_balance_and_headings_are_unique(doc: Path):
    text = re.sub(r"(?ms)^```.*?^```", "", doc.read_text())  # code blocks hold no headings
    assert text.count("<!--") == text.count("-->")
    headings = re.findall(r"(?m)^#{1,6} (.+)$", text)
    assert sorted({h for h in headings if headings.count(h) > 1}) == []


def _threads(text: str) -> set[int]:
    return {int(n) for n in re.findall(r"--threads[\"', ]+(?:\$\{DRAMATIQ_NTHREADS:-)?(\d+)", text)}


def test_the_shipped_worker_and_the_bench_agree_or_the_docs_say_why():
    shipped = set()
    for unit in ("Procfile", "docker-compose.yml", "deploy/systemd/simplebank-worker.service"):
        shipped |= _threads((ROOT / unit).read_text())
    assert len(shipped) == 1, f"the shipped worker threads differ between units: {shipped}"
    [threads] = shipped
    bench = int(re.search(r'"--threads", type=int, default=(\d+)', (ROOT / "bench" / "__main__.py").read_text())[1])
    if bench != threads:
        summary = (ROOT / "docs" / "performance-summary.md").read_text()
        assert f"The bench runs {bench} threads" in summary and f"runs {threads}:" in summary


def test_the_api_reference_is_the_schema_it_is_generated_from():
    """docs/api-reference.md is written from the OpenAPI schema; an API change without
    ``python manage.py api_reference --write`` fails here."""
    call_command("api_reference", "--check")


def test_a_bench_row_lands_in_the_runs_table_wherever_it_is():
    """`python -m bench --update-docs` adds its row to the runs table, not to the end of the page:
    `bench scale --update-docs` appends sections after it."""
    from bench.__main__ import insert_row

    page = (ROOT / "docs" / "performance.md").read_text() + "\n## Scale run (appended later)\n\n| a | b |\n|---|---|\n"
    row = "| 2030-01-01T00:00:00+00:00 | full | the new row |\n"
    lines = insert_row(page, row).splitlines()
    at = lines.index(row.strip())
    assert lines[at - 1].startswith("| 20") and lines[at + 1] == ""  # the table's last row, then its end
    assert any(line.startswith("| when (UTC) |") for line in lines[:at])
    runs = next(n for n, line in enumerate(lines) if line.startswith("## Runs"))
    assert runs < at and not any(line.startswith("## ") for line in lines[runs + 1 : at])  # in Runs itself
    assert lines.index("## Scale run (appended later)") > at


PROMQL = re.compile(r"\b(increase|rate|irate|delta|idelta|deriv)\((\w+)")
FOR_COUNTERS = {"increase", "rate", "irate"}  # a counter only rises; delta/deriv are a gauge's


def test_every_promql_example_suits_its_metrics_type():
    """``increase()`` of a gauge reads every fall (dead letters requeued) as a counter reset and
    adds the whole value back: an alert copied from the docs fires on a requeue (a review)."""
    from tasks.metrics import QueueCollector
    from users.metrics import EmailCollector

    types = {
        metric.name: metric.type
        for collector in (QueueCollector(), EmailCollector())
        for metric in collector.describe()
    }
    assert types["simplebank_dead_letters"] == "gauge"
    wrong = []
    for doc in DOCS:
        for function, metric in PROMQL.findall(doc.read_text()):
            counter = metric.endswith("_total") or types.get(metric) == "counter"
            if (function in FOR_COUNTERS) != counter:
                wrong.append(f"{doc.name}: {function}({metric})")
    assert wrong == []
