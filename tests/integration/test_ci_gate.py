"""A short run of the perf regression job users copy from ci/ (the same script, short windows)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TABULAR = ROOT / "examples" / "tabular"


def test_perf_gate_script_writes_then_passes_its_baseline(tmp_path: Path) -> None:
    """The script's wiring (build, serve, measure, baseline, gate), run as CI should on a noisy host: with a
    calibration model measured side by side, so the gate compares ratios taken at the same load. Absolute p99s of
    two runs a minute apart on a shared 2-core host differ several-fold (a run measured while other jobs ran
    against a baseline measured while none did failed the gate so), and the tolerance stays wide; the gate's
    judgement (a slowed model fails, the unchanged one passes) is tested with side-by-side runs in test_perf.py."""
    spec = yaml.safe_load((TABULAR / "spec.yaml").read_text())
    model = spec["models"][0]
    model["path"] = str(TABULAR / model["path"])
    spec["models"].append({**model, "name": "calibration"})  # the same model: a known cost
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PERF_CONCURRENCY": "1",
        "PERF_WINDOW_MS": "500",
        # three 500 ms windows within 30 % of each other (the default on <= 4 cores) were out of reach at load 6-8
        # ("could not get a stable measurement"), more often now that each run measures two models
        "PERF_STABILITY": "100",
        "PERF_TOLERANCE": "4",
        "PERF_OUT": str(tmp_path / "report"),
    }
    baseline = tmp_path / "perf-baseline.json"
    cmd = [
        "bash",
        str(ROOT / "ci/perf-gate.sh"),
        str(tmp_path / "spec.yaml"),
        "classifier",
        str(baseline),
        "calibration",
    ]
    first = subprocess.run(
        cmd, env={**env, "UPDATE_BASELINE": "1"}, capture_output=True, text=True, timeout=300, check=False
    )
    assert first.returncode == 0, first.stderr
    assert baseline.exists()
    gate = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert gate.returncode == 0, gate.stderr
    assert "perf gate passed" in gate.stderr
    assert "classifier vs classifier (relative," in gate.stderr, (
        gate.stderr
    )  # the ratios were compared, not absolute numbers
