"""Multi-model `repoforge tune` on a real tritonserver: two tiny models in one server, each combination measured by
one perf_analyzer per model at the same time, a budget per model, a patch per model (issue 26.3). Short windows and
a handful of runs: this checks the plumbing; the search itself is tested on synthetic measurements in
tests/unit/test_tune_multi.py."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from repoforge.perf import tune as tune_mod
from repoforge.perf.tune import TuneSpace
from repoforge.perf.tune_multi import ModelGoal, tune_models
from repoforge.triton.config import parse_config

ROOT = Path(__file__).resolve().parents[2]

SPEC = """
version: 1
repository: two
models:
  - name: a
    format: onnx
    path: models/classifier.onnx
    max_batch_size: 16
    dynamic_batching: {max_queue_delay_us: 0}
    instance_groups: [{kind: cpu, count: 1}]
  - name: b
    format: onnx
    path: models/classifier.onnx
    max_batch_size: 16
    dynamic_batching: {max_queue_delay_us: 0}
    instance_groups: [{kind: cpu, count: 1}]
"""


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_two_models_tuned_together_in_one_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from repoforge.servers.triton import TritonServer

    shutil.copytree(ROOT / "examples" / "tabular" / "models", tmp_path / "models")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)

    starts: list[Any] = []
    loads: list[str] = []
    windows: list[tuple[str, float, float]] = []
    real_start, real_load, real_run = TritonServer.start, TritonServer.load_model, tune_mod.run

    def counting_start(self: TritonServer, *a: Any, **k: Any) -> TritonServer:
        starts.append(self.options.model_control)
        return real_start(self, *a, **k)

    def counting_load(self: TritonServer, name: str, *a: Any, **k: Any) -> None:
        loads.append(name)
        real_load(self, name, *a, **k)

    def timed_run(opts: Any, cfg: Any, *a: Any, **k: Any) -> Any:
        t0 = time.monotonic()
        try:
            return real_run(opts, cfg, *a, **k)
        finally:
            windows.append((opts.model, t0, time.monotonic()))

    monkeypatch.setattr(TritonServer, "start", counting_start)
    monkeypatch.setattr(TritonServer, "load_model", counting_load)
    monkeypatch.setattr(tune_mod, "run", timed_run)

    # A 60 ms queue delay at concurrency 2 with max_batch_size 16 makes every batch wait the full delay, so a
    # combination with it is over a 40 ms budget for that model for sure; delay 0 is well within it.
    space = TuneSpace(
        max_batch_sizes=(8, 16), preferred=("none",), max_queue_delays_us=(0, 60000), instance_counts=(1,)
    )
    out = tmp_path / "tune-out"
    goals = [ModelGoal("a", 40.0, concurrency=2), ModelGoal("b", 40.0, concurrency=1)]
    lines: list[str] = []
    result = tune_models(spec, goals, space=space, measurement_interval_ms=300, max_trials=3, max_runs=5, confirm=2,
                         output=out, progress=lines.append)  # fmt: skip

    assert starts == ["explicit"] and result.server_starts == 1
    # The spec's own configs are on the grid: served as built, so only the moves reload, and only what they change.
    assert set(loads) <= {"a", "b"} and len(loads) <= result.reloads - 2
    assert result.space_size == 16 and 3 <= result.runs_used <= 5
    # Each run measured both models at once: one perf_analyzer per model, their runs overlapping in time (a run
    # perf_analyzer found unstable is run again, so a model may have one more).
    by_model = {m: [(t0, t1) for n, t0, t1 in windows if n == m] for m in ("a", "b")}
    assert min(len(by_model["a"]), len(by_model["b"])) >= result.runs_used
    assert all(any(a0 < b1 and b0 < a1 for a0, a1 in by_model["a"]) for b0, b1 in by_model["b"])

    best = result.best
    assert best is not None and best.feasible
    assert all(t.candidate.max_queue_delay_us == 0 and t.p99_ms <= 40.0 for t in best.models)
    slow = [t for t in result.trials if t.error is None and t.runs and any(c.max_queue_delay_us for c in t.combo)]
    assert slow and all(not t.feasible for t in slow)
    for t in result.rejected:  # each rejection names the model over its budget
        over = {o.split(":")[0] for o in t.over_budget(goals)}
        assert over == {g.name for g, c in zip(goals, t.combo, strict=True) if c.max_queue_delay_us}

    data = json.loads((out / "tune.json").read_text())
    assert set(data["picks"]) == {"a", "b"} and data["runs_used"] == result.runs_used
    assert data["budget"] == {"search": 3, "confirm": 2}
    assert not (out / tune_mod.CHECKPOINT).exists()  # a completed tune leaves no checkpoint
    patch = yaml.safe_load((out / "spec-patch.yaml").read_text())
    assert [m["name"] for m in patch["models"]] == ["a", "b"]
    for g, t in zip(goals, best.models, strict=True):
        own = yaml.safe_load((out / g.name / "spec-patch.yaml").read_text())["models"][0]
        assert own["name"] == g.name and own["max_batch_size"] == t.candidate.max_batch_size
        assert parse_config((out / g.name / "config.pbtxt").read_text()).max_batch_size == t.candidate.max_batch_size
    assert "picks (total" in result.summary()
    assert any(m.startswith("tune a, b together") and "at most 5 runs (3 to search, 2 to confirm" in m for m in lines)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_an_interrupted_multi_model_tune_continues_from_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C after the first run (each run measures both models at once) keeps it in the output's checkpoint; the
    same call again replays it, measures only the run left, and deletes the checkpoint once the tune is complete."""
    from repoforge.errors import Interrupted
    from repoforge.perf.tune_multi import ConcurrentMeasurer

    shutil.copytree(ROOT / "examples" / "tabular" / "models", tmp_path / "models")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    runs: list[int] = []
    real_measure = ConcurrentMeasurer.measure

    def counting_measure(self: Any, combo: Any) -> Any:
        runs.append(1)
        return real_measure(self, combo)

    monkeypatch.setattr(ConcurrentMeasurer, "measure", counting_measure)
    space = TuneSpace(max_batch_sizes=(8, 16), preferred=("none",), max_queue_delays_us=(0,), instance_counts=(1,))
    out = tmp_path / "tune-out"
    goals = [ModelGoal("a", 200.0, concurrency=1), ModelGoal("b", 200.0, concurrency=1)]
    kw: dict[str, Any] = dict(space=space, measurement_interval_ms=300, max_trials=3, max_runs=2, confirm=0,
                              stability_percentage=1000.0, output=out)  # fmt: skip
    lines: list[str] = []

    def stop_after_one_run(msg: str) -> None:
        lines.append(msg)
        if msg.startswith("[1/"):
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="run the same command again to continue"):
        tune_models(spec, goals, progress=stop_after_one_run, **kw)
    saved = json.loads((out / tune_mod.CHECKPOINT).read_text())
    assert sum(e["op"] == "measure" for e in saved["entries"]) == 1
    assert json.loads((out / "tune.json").read_text())["runs_used"] == 1  # what was measured is reported too

    again: list[str] = []
    result = tune_models(spec, goals, progress=again.append, **kw)
    assert any("resuming from" in m and "1 runs were measured" in m for m in again)
    assert result.resumed_runs == 1 and result.runs_used == 2
    assert len(runs) == 1 + 1  # only the run left was measured on the rerun
    said = [m for m in lines if m.startswith("[")]
    assert [m for m in again if m.startswith("[")][:1] == said  # the first is the interrupted run's, replayed
    assert not (out / tune_mod.CHECKPOINT).exists()
    assert json.loads((out / "tune.json").read_text())["resumed_runs"] == 1
