#!/usr/bin/env bash
# Rebuild the demo model shipped in stream_app/model/demo_artifact/: generates the demo's synthetic
# workload, trains the attention model on it (fixed seed, small settings; a few minutes on 2 CPU
# cores) and copies the served files into the package. Needs the training extras:
#   pip install -e '.[train]'
# Extra arguments go to `interest-tracker build-demo-model` (e.g. --work-dir DIR to keep the report).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
exec "$PY" -m stream_app build-demo-model "$@"
