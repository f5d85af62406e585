#!/usr/bin/env bash
# Installs everything the tests need (apt + .venv) and runs the whole suite against real servers.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh --test
export PYTHONUNBUFFERED=1
exec .venv/bin/python -m pytest -q "$@"
