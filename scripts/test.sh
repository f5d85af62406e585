#!/usr/bin/env bash
# Installs everything the tests need (apt + .venv) and runs the whole suite against real servers.
# Usage: scripts/test.sh [pytest args...]      e.g. scripts/test.sh tests/unit   (the fast lane: no servers)
# Lint (ruff), format (ruff format --check) and types (mypy) run first, so a finding fails CI.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh --test
export PYTHONUNBUFFERED=1
echo "==> ruff check, ruff format --check, mypy"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/python -m pytest -q "$@"
