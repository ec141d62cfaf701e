#!/usr/bin/env bash
# ruff (lint + format check) and mypy on the package.
# mypy does not run setuptools' editable import hooks, so it type-checks through a tree of
# symlinks that mirrors the installed names (reprlab.schemas -> schemas/, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
tree=.build/typecheck/reprlab
mkdir -p "$tree"
for pkg in schemas client server worker; do ln -sfn "../../../$pkg" "$tree/$pkg"; done
"$PY" -m ruff check .
"$PY" -m ruff format --check .
MYPYPATH=.build/typecheck "$PY" -m mypy --namespace-packages --explicit-package-bases -p reprlab
