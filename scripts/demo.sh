#!/usr/bin/env bash
# The main job end to end on a shipped example: build → serve in a real Triton → infer → perf report.
# Installs what it needs first (apt + .venv). Output goes to demo-out/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
export PYTHONUNBUFFERED=1
exec .venv/bin/python examples/demo.py "$@"
