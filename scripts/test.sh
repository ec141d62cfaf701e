#!/usr/bin/env bash
# The test suite: set-up, lint (ruff + mypy), then every test including the few slow ones on
# the real SmolLM2 model. Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHON=.venv/bin/python
bash scripts/lint.sh
exec .venv/bin/python -m pytest "$@"
