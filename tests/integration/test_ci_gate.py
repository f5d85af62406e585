"""A short run of the perf regression job users copy from ci/ (the same script, short windows)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_perf_gate_script_writes_then_passes_its_baseline(tmp_path: Path) -> None:
    """The script's wiring (build, serve, measure, baseline, gate). Two runs on a shared 2-core machine can
    differ several-fold in p99, so the tolerance is wide here; the gate's judgement (a slowed model fails,
    the unchanged one passes) is tested with side-by-side runs in test_perf.py."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PERF_CONCURRENCY": "1",
        "PERF_WINDOW_MS": "500",
        "PERF_TOLERANCE": "4",
        "PERF_OUT": str(tmp_path / "report"),
    }
    baseline = tmp_path / "perf-baseline.json"
    cmd = ["bash", str(ROOT / "ci/perf-gate.sh"), str(ROOT / "examples/tabular/spec.yaml"), "classifier", str(baseline)]
    first = subprocess.run(
        cmd, env={**env, "UPDATE_BASELINE": "1"}, capture_output=True, text=True, timeout=300, check=False
    )
    assert first.returncode == 0, first.stderr
    assert baseline.exists()
    gate = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert gate.returncode == 0, gate.stderr
    assert "perf gate passed" in gate.stderr
