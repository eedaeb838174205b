#!/usr/bin/env bash
# The README's test command: create .venv, install the project with its extras, check lint, layer
# contracts and types, run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[train,dev]'
.venv/bin/ruff check stream_app export tests benchmarks
.venv/bin/lint-imports          # the layer contracts in pyproject.toml
.venv/bin/mypy                  # types of stream_app
.venv/bin/python -m pytest -ra --durations=25 "$@"   # the 25 slowest, for the suite's time budget
