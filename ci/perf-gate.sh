#!/usr/bin/env bash
# Perf regression gate for CI: build the spec, serve it, measure MODEL with perf_analyzer and compare
# against a committed baseline. Exit 1 (with a table of what regressed) on a regression.
#
#   ci/perf-gate.sh SPEC MODEL BASELINE [CALIBRATION_MODEL]
#
# First run (or after an intended change): UPDATE_BASELINE=1 ci/perf-gate.sh ... and commit BASELINE.
# CI machines are noisy: pass a CALIBRATION_MODEL (a small model of known cost in the same spec) so the
# gate compares throughput ratios measured side by side in one run instead of absolute numbers.
# Settings from the environment: PERF_CONCURRENCY (1,8), PERF_WINDOW_MS (2000), PERF_TOLERANCE (0.15), PERF_OUT,
# PERF_STABILITY (perf_analyzer's stability percentage; repoforge's default for the host when unset).
set -euo pipefail
spec=$1 model=$2 baseline=$3 calib=${4:-}
out=${PERF_OUT:-perf-report}
repo=$(mktemp -d)/repo
repoforge build "$spec" -o "$repo" --device cpu -q
args=(perf "$repo" -m "$model" --concurrency "${PERF_CONCURRENCY:-1,8}" --measurement-interval "${PERF_WINDOW_MS:-2000}"
      -o "$out" --baseline "$baseline" --tolerance "${PERF_TOLERANCE:-0.15}")
[ -n "${PERF_STABILITY:-}" ] && args+=(--stability-percentage "$PERF_STABILITY")
[ -n "$calib" ] && args+=(--calibration-model "$calib")
[ "${UPDATE_BASELINE:-0}" = "1" ] && args+=(--update-baseline)
exec repoforge "${args[@]}"
