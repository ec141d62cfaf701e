#!/usr/bin/env bash
# The main job: set-up, pull the built-in SmolLM2, start Redis + API server + one worker, then
# submit a real ICL-vs-SFT analysis (the icl-vs-sft recipe: zero-shot, ICL k in {1, 5}, LoRA SFT
# with checkpoints) through the Python SDK (examples/quickstart.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
reprlab models pull smollm2-135m-instruct
reprlab up
exec python examples/quickstart.py "$@"
