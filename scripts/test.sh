#!/usr/bin/env bash
# Installs everything the tests need (apt + .venv) and runs the whole suite against real servers.
# Usage: scripts/test.sh [pytest args...]      e.g. scripts/test.sh tests/unit   (the fast lane: no servers)
# Lint (ruff), format (ruff format --check), types (mypy), the layers (lint-imports, contracts in pyproject.toml)
# and the import-cycle check (imports inside functions counted) run first, so a finding fails CI.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh --test
export PYTHONUNBUFFERED=1
echo "==> ruff check, ruff format --check, mypy, lint-imports, import cycles"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports --no-cache
.venv/bin/python scripts/check_import_cycles.py
# the 20 slowest tests are listed at the end, so a suite creeping towards its 20-minute budget shows where
exec .venv/bin/python -m pytest -q --durations=20 "$@"
