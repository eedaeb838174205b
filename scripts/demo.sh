#!/usr/bin/env bash
# The README's first command: create .venv, install the service, run the demo on the embedded
# broker (no external services). Extra arguments go to `interest-tracker demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e .
exec .venv/bin/interest-tracker demo --duration 300 "$@"
