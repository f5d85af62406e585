#!/usr/bin/env bash
# Installs everything repoforge needs on a fresh Debian 12 machine: system libraries (apt) and a
# virtual environment in .venv with Triton (from nvidia-pytriton), perf_analyzer, onnxruntime and
# repoforge itself. Safe to run again: it only installs what is missing.
# Usage: scripts/install.sh [--test]   (--test adds the test and benchmark dependencies, TorchServe and Ray)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
extras="demo"
[ "${1:-}" = "--test" ] && extras="test"

apt_pkgs=(libb64-0d redis-server python3-venv)
[ "$extras" = "test" ] && apt_pkgs+=(openjdk-17-jre-headless prometheus)  # TorchServe runs on Java; promtool + prometheus check deploy k8s rules
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "==> apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=".venv/.repoforge-$extras-$(sha256sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "==> pip install -e .[$extras] (Triton 2.51 via nvidia-pytriton, perf_analyzer, onnxruntime)"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  # numpy<2 and protobuf<5 are pinned in pyproject: tritonclient 2.51 breaks with newer ones.
  .venv/bin/pip install -q -e ".[$extras]"
  touch "$stamp"
fi
echo "==> environment ready: $(.venv/bin/python -c 'import repoforge; print("repoforge", repoforge.__version__)')"
