"""`repoforge tune`: the search logic against a synthetic landscape (fast, no server), and one short
integration run on a real tritonserver (explicit model control, one server start, patch + plot)."""

from __future__ import annotations

import copy
import json
import statistics
from pathlib import Path
from typing import Any

import pytest
import yaml

from repoforge.perf import tune as tune_mod
from repoforge.perf.analyzer import PerfOptions, PerfPoint
from repoforge.perf.tune import (
    Candidate,
    Trial,
    TuneError,
    TuneSpace,
    apply_candidate,
    pareto_front,
    tune,
)
from repoforge.triton.config import parse_config, to_text

ROOT = Path(__file__).resolve().parents[2]
TABULAR = ROOT / "examples" / "tabular" / "spec.yaml"

BASE = """
name: "m"
max_batch_size: 64
input { name: "x" data_type: TYPE_FP32 dims: 8 }
output { name: "y" data_type: TYPE_FP32 dims: 3 }
instance_group { count: 1 kind: KIND_CPU }
dynamic_batching { }
parameters { key: "intra_op_threads" value { string_value: "1" } }
model_warmup { name: "w64" batch_size: 64 inputs { key: "x" value { data_type: TYPE_FP32 dims: 8 zero_data: true } } }
model_warmup { name: "w1" batch_size: 1 inputs { key: "x" value { data_type: TYPE_FP32 dims: 8 zero_data: true } } }
backend: "python"
"""


# --------------------------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------------------------
def test_default_space_is_the_120_config_grid() -> None:
    space = TuneSpace()
    assert space.size == 120 == len(space.candidates()) == len(set(space.candidates()))
    assert {tuple(c.preferred_batch_sizes) for c in space.candidates() if c.max_batch_size == 8} == {(), (4, 8), (8,)}
    assert TuneSpace(intra_op_threads=(1, 2)).size == 240
    with pytest.raises(TuneError):
        TuneSpace(max_batch_sizes=())
    with pytest.raises(TuneError):
        TuneSpace(preferred=("half",))


def test_apply_candidate_edits_the_protobuf() -> None:
    base = parse_config(BASE)
    cfg = apply_candidate(base, Candidate(16, "half_max", 500, 2, intra_op_threads=2))
    assert cfg.max_batch_size == 16
    assert list(cfg.dynamic_batching.preferred_batch_size) == [8, 16]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.count, g.kind) for g in cfg.instance_group] == [(2, base.instance_group[0].kind)]
    assert cfg.parameters["intra_op_threads"].string_value == "2"
    native = parse_config(BASE.replace('backend: "python"', 'backend: "onnxruntime"'))
    del native.parameters["intra_op_threads"]  # a native ONNX build's threads: onnxruntime_backend's own parameter
    tuned = apply_candidate(native, Candidate(16, "half_max", 500, 2, intra_op_threads=2)).parameters
    assert tuned["intra_op_thread_count"].string_value == "2" and "intra_op_threads" not in tuned
    assert [w.name for w in cfg.model_warmup] == ["w1"]  # the 64-row warm-up no longer fits
    assert parse_config(to_text(cfg)) == cfg
    assert base.max_batch_size == 64 and len(base.model_warmup) == 2  # the base is not modified
    no_batch = parse_config(BASE.replace("max_batch_size: 64", "max_batch_size: 0"))
    with pytest.raises(TuneError, match="max_batch_size 0"):
        apply_candidate(no_batch, Candidate(16, "none", 0, 1))


def test_snap_and_pareto_front() -> None:
    space = TuneSpace()
    assert space.snap(64, [], 0, 1, 1) == Candidate(64, "none", 0, 1, None)
    assert space.snap(48, [24, 48], 700, 3, None).max_queue_delay_us in (500, 1000)
    trials = [Trial(Candidate(8, "none", 0, 1), throughput=tp, p99_ms=p99, runs=1) for tp, p99 in
              [(100, 1.0), (90, 2.0), (200, 3.0), (150, 4.0), (300, 9.0)]]  # fmt: skip
    assert [(t.throughput, t.p99_ms) for t in pareto_front(trials)] == [(100, 1.0), (200, 3.0), (300, 9.0)]


# --------------------------------------------------------------------------------------------
# The search against a synthetic landscape (fake server and fake perf_analyzer)
# --------------------------------------------------------------------------------------------
def _landscape(cfg: Any) -> tuple[float, float]:
    """(throughput, p99 ms): two instances hurt; a longer delay batches more but costs latency;
    mbs 32 is best; preferred sizes barely matter. The best within 5 ms is mbs 32, delay 500, x1."""
    mbs = cfg.max_batch_size
    delay = cfg.dynamic_batching.max_queue_delay_microseconds
    inst = cfg.instance_group[0].count
    tp = (
        5000.0
        * (1 + 0.3 * min(delay, 1000) / 1000)
        * {8: 0.7, 16: 0.9, 32: 1.0, 64: 0.95}[mbs]
        / (1.4 if inst == 2 else 1.0)
    )
    tp *= 1.02 if list(cfg.dynamic_batching.preferred_batch_size) == [mbs // 2, mbs] else 1.0
    p99 = 3.0 + delay / 1000 * 2.5 + (2.0 if inst == 2 else 0.0)
    return tp, p99


class _FakeServer:
    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.http_url = "fake:1"
        self.alive = True
        self.loads = 0
        self.served: Any = None

    def load_model(self, name: str) -> None:
        self.loads += 1
        cfg = parse_config(self.config_path.read_text())
        if not cfg.dynamic_batching.preferred_batch_size:  # what Triton 2.51 does
            cfg.dynamic_batching.preferred_batch_size.append(cfg.max_batch_size)
        self.served = cfg

    def log_tail(self, n: int = 5) -> str:
        return ""

    def model_config(self, name: str, timeout: float = 10.0) -> Any:
        from google.protobuf import json_format

        return json_format.MessageToDict(self.served, preserving_proto_field_name=True)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[Any]]:
    cfg_path = tmp_path / "config.pbtxt"
    cfg_path.write_text(BASE)
    server = _FakeServer(cfg_path)
    measured: list[Any] = []

    def fake_run(opts: PerfOptions, cfg: Any, progress: Any = None) -> list[PerfPoint]:
        measured.append(copy.deepcopy(cfg))
        tp, p99 = _landscape(server.served)
        return [PerfPoint(concurrency=16, throughput=tp, p50_ms=p99 / 2, p90_ms=p99, p95_ms=p99, p99_ms=p99)]

    monkeypatch.setattr(tune_mod, "run", fake_run)
    monkeypatch.setattr(tune_mod, "_exec_counts", lambda server, model: None)
    return server, measured


def _tuner(server: Any, budget: float, max_runs: int) -> Any:
    opts = PerfOptions(model="m", url="fake:2", concurrency=[16])
    return tune_mod._Tuner(server, "m", server.config_path, parse_config(BASE), opts, budget, max_runs, lambda m: None)


def test_grid_measures_each_served_config_once(fake: tuple[Any, list[Any]]) -> None:
    server, measured = fake
    t = _tuner(server, 5.0, 1000)
    t.grid(TuneSpace())
    assert len(t.trials) == 120
    assert t.runs == len(measured) == 80  # "none" is served as [mbs]: 40 twins not measured again
    assert server.loads == 120
    best = t.best()
    assert best is not None and (
        best.candidate.max_batch_size,
        best.candidate.max_queue_delay_us,
        best.candidate.instances,
    ) == (32, 500, 1)
    assert all(tr.feasible == (tr.p99_ms <= 5.0) for tr in t.trials.values())


@pytest.mark.parametrize("strategy", ["model", "pairs"])
def test_coordinate_reaches_the_grid_best_in_10_percent_of_the_runs(fake: tuple[Any, list[Any]], strategy: str) -> None:
    server, _ = fake
    grid = _tuner(server, 5.0, 1000)
    grid.grid(TuneSpace())
    grid_best = grid.best()
    server2, measured = fake
    measured.clear()
    t = _tuner(server2, 5.0, 12)
    t.strategy = strategy
    t.coordinate(TuneSpace(), TuneSpace().snap(64, [], 0, 1, 1), confirm=2)
    best = t.best()
    assert best is not None and grid_best is not None
    assert t.runs == 12 and len(measured) == t.runs  # the whole budget, never more
    assert best.throughput >= 0.95 * grid_best.throughput
    assert best.p99_ms <= 5.0  # infeasible candidates are never picked, however fast
    assert any(not tr.feasible and tr.throughput > best.throughput for tr in t.trials.values())


def test_nothing_feasible_gives_no_best(fake: tuple[Any, list[Any]]) -> None:
    server, _ = fake
    t = _tuner(server, 0.5, 6)
    t.coordinate(TuneSpace(), TuneSpace().snap(64, [], 0, 1, 1), confirm=2)
    assert t.best() is None and t.runs <= 6
    # With nothing feasible the search walks towards lower p99 (delay 0, one instance).
    lowest = min((tr for tr in t.trials.values() if tr.runs), key=lambda tr: tr.p99_ms)
    assert lowest.candidate.max_queue_delay_us == 0 and lowest.candidate.instances == 1


# --------------------------------------------------------------------------------------------
# Confirming the pick: pure functions on given measurements
# --------------------------------------------------------------------------------------------
def _measured(mbs: int, *throughputs: float, p99: float = 2.0, budget: float = 5.0) -> Trial:
    t = Trial(Candidate(mbs, "max", 0, 1))
    t.samples = [{"throughput": tp, "p50_ms": p99 / 2, "p99_ms": p99} for tp in throughputs]
    t.runs = len(throughputs)
    t.throughput = statistics.median(throughputs)
    t.p50_ms, t.p99_ms, t.feasible = p99 / 2, p99, p99 <= budget
    return t


def test_confirmation_alternates_and_includes_the_current_config() -> None:
    a, b, c, cur = _measured(8, 1), _measured(16, 1), _measured(32, 1), _measured(64, 1)
    assert [t.candidate.max_batch_size for t in tune_mod.confirmation_schedule([a, b, c], 7)] == [
        8,
        16,
        32,
        32,
        16,
        8,
        8,
    ]
    assert tune_mod.confirmation_schedule([a], 0) == [] and tune_mod.confirmation_schedule([], 3) == []
    assert tune_mod.finalists([a, b, c], cur, 2) == [a, b, cur]
    assert tune_mod.finalists([a, b, c], b, 2) == [a, b]  # already a finalist: not twice
    over = _measured(64, 1, p99=9.0)
    assert tune_mod.finalists([a, b], over, 2) == [a, b]  # the current config is over budget: not a finalist


def test_the_pick_is_a_re_measured_median_never_one_lucky_run() -> None:
    lucky = _measured(8, 3000)  # measured once
    steady = _measured(16, 2100, 2000, 2050)
    fell = _measured(32, 2900, 1000, 1100)  # a lucky first run, then its real speed
    over = _measured(64, 4000, 4100, 3900, p99=9.0)
    best = tune_mod.pick_confirmed([lucky, steady, fell, over])
    assert best is steady and best.throughput == 2050 and best.spread == (2000, 2100)
    assert tune_mod.pick_confirmed([lucky]) is None
    assert "2,050 infer/s (2,000–2,100 over 3 runs)" in steady.describe()


def test_verdict_says_when_the_current_config_is_within_noise() -> None:
    best = _measured(16, 2100, 2000, 2050)
    same = _measured(8, 1990, 2040, 2010)  # its runs overlap the best's
    worse = _measured(8, 1500, 1550, 1520)
    assert tune_mod.within_noise(best, same) and not tune_mod.within_noise(best, worse)
    assert tune_mod.verdict(best, same, 5.0).startswith("the current config is already as good as any found")
    assert tune_mod.verdict(best, best, 5.0) == "the current config is already as good as any found"
    assert "beats the current config by +35%" in tune_mod.verdict(best, worse, 5.0)
    assert "over the 5 ms budget" in tune_mod.verdict(best, _measured(8, 9000, p99=7.0), 5.0)


def test_coordinate_never_picks_an_unconfirmed_single_run(
    fake: tuple[Any, list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """mbs 32 and 64 get a lucky first run and are the two re-measured; mbs 16 (2,200, measured once) then
    ranks above their averages. The pick must be among the re-measured; with runs for every finalist,
    the medians expose the lucky ones and mbs 16 wins on its re-measured median."""
    server, _ = fake
    first = {8: 1000.0, 16: 2200.0, 32: 3000.0, 64: 2900.0}
    later = {8: 1000.0, 16: 2200.0, 32: 1000.0, 64: 1000.0}
    seen: dict[int, int] = {}

    def scripted(opts: PerfOptions, cfg: Any, progress: Any = None) -> list[PerfPoint]:
        mbs = server.served.max_batch_size
        seen[mbs] = seen.get(mbs, 0) + 1
        tp = first[mbs] if seen[mbs] == 1 else later[mbs]
        return [PerfPoint(concurrency=16, throughput=tp, p50_ms=1.0, p90_ms=1.0, p95_ms=1.0, p99_ms=1.0)]

    monkeypatch.setattr(tune_mod, "run", scripted)
    space = TuneSpace(
        max_batch_sizes=(8, 16, 32, 64), preferred=("max",), max_queue_delays_us=(0,), instance_counts=(1,)
    )
    start = Candidate(8, "max", 0, 1)
    t = _tuner(server, 5.0, 6)
    t.coordinate(space, start, confirm=2)
    assert seen == {8: 1, 16: 1, 32: 2, 64: 2}  # the search measured all four; 32 and 64 were re-measured
    best = t.best()
    assert best is not None and best.runs >= 2 and best.candidate.max_batch_size in (32, 64)

    seen.clear()
    t = _tuner(server, 5.0, 4 + 8)
    t.coordinate(space, start, confirm=8)
    best = t.best()
    assert best is not None and best.candidate.max_batch_size == 16 and best.runs == 3 and best.throughput == 2200
    assert [f.candidate.max_batch_size for f in t.finalists] == [32, 64, 16, 8]  # top 3 and the current config
    assert seen == {8: 3, 16: 3, 32: 3, 64: 3}


def test_pareto_plot_draws_the_front_and_labels_every_point() -> None:
    trials = [
        _measured(mbs, tp, p99=p99) for mbs, tp, p99 in [(8, 100, 1.0), (16, 90, 2.0), (32, 200, 3.0), (64, 300, 9.0)]
    ]
    result = tune_mod.TuneResult("m", "grid", 5.0, 16, trials, trials[2], 4, 4, 4, 1, 1.0, finalists=[trials[2]])
    ax = tune_mod.pareto_figure(result).axes[0]
    front = next(line for line in ax.lines if line.get_label() == "feasible Pareto front")
    assert front.get_linestyle() == "-" and list(front.get_xdata()) == [1.0, 3.0]
    assert {t.get_text() for t in ax.texts} >= {t.candidate.short_label() for t in trials}
    assert "32/[32]/0us/x1" in {t.get_text() for t in ax.texts}


# --------------------------------------------------------------------------------------------
# Integration: a real tritonserver
# --------------------------------------------------------------------------------------------
def _merge_patch(spec_text: str, patch_text: str) -> str:
    spec = yaml.safe_load(spec_text)
    for entry in yaml.safe_load(patch_text)["models"]:
        model = next(m for m in spec["models"] if m["name"] == entry["name"])
        model.update(entry)
    return yaml.safe_dump(spec, sort_keys=False)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_tune_reloads_one_server_and_writes_patch_and_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from repoforge.build import build
    from repoforge.servers.triton import TritonServer

    starts: list[Any] = []
    loads: list[str] = []
    real_start, real_load = TritonServer.start, TritonServer.load_model

    def counting_start(self: TritonServer, *a: Any, **k: Any) -> TritonServer:
        starts.append(self.options.model_control)
        return real_start(self, *a, **k)

    def counting_load(self: TritonServer, name: str, *a: Any, **k: Any) -> None:
        loads.append(name)
        real_load(self, name, *a, **k)

    monkeypatch.setattr(TritonServer, "start", counting_start)
    monkeypatch.setattr(TritonServer, "load_model", counting_load)

    # delay 60 ms at concurrency 4 with max_batch_size >= 16 makes every batch wait the full delay, so those
    # candidates are over a 40 ms budget for sure; delay 0 is well within it even on a host at load 15 (a 15 ms
    # budget against a 20 ms delay left delay 0 too little room there).
    space = TuneSpace(
        max_batch_sizes=(16, 32), preferred=("none", "max"), max_queue_delays_us=(0, 60000), instance_counts=(1,)
    )
    out = tmp_path / "tune-out"
    result = tune(TABULAR, "classifier", latency_budget_ms=40.0, space=space, concurrency=4, measurement_interval_ms=500,
                  max_trials=4, max_runs=4, confirm=2, output=out)  # fmt: skip

    assert starts == ["explicit"]  # one server for the whole search
    assert result.server_starts == 1
    assert result.reloads >= 2 and len(loads) == result.reloads and set(loads) == {"classifier"}
    assert result.grid_size == 8 and 2 <= result.runs_used <= 4
    slow = [t for t in result.trials if t.candidate.max_queue_delay_us == 60000 and t.runs]
    assert slow and all(not t.feasible and t.p99_ms > 40.0 for t in slow)
    best = result.best
    assert best is not None and best.feasible and best.p99_ms <= 40.0
    assert best.candidate.max_queue_delay_us == 0
    assert all(t.feasible == (t.p99_ms <= 40.0) for t in result.trials if t.runs and t.error is None)
    assert best.throughput == max(t.throughput for t in result.trials if t.feasible)

    names = {p.name for p in result.files}
    assert names == {"tune.json", "spec-patch.yaml", "config.pbtxt", "pareto.png"}
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "tune.json").read_text())
    assert data["runs_used"] == result.runs_used and data["grid_size"] == 8

    # The patch applies to the spec and builds into exactly the tuned config.
    patch = yaml.safe_load((out / "spec-patch.yaml").read_text())
    assert patch["models"][0]["name"] == "classifier"
    assert patch["models"][0]["dynamic_batching"]["max_queue_delay_us"] == 0
    patched = tmp_path / "spec.yaml"
    patched.write_text(_merge_patch(TABULAR.read_text(), (out / "spec-patch.yaml").read_text()))
    (tmp_path / "models").symlink_to(TABULAR.parent / "models")
    built = build(patched, tmp_path / "repo", device="cpu")
    cfg = parse_config((built.output / "classifier" / "config.pbtxt").read_text())
    assert cfg.max_batch_size == best.candidate.max_batch_size
    assert list(cfg.dynamic_batching.preferred_batch_size) == best.candidate.preferred_batch_sizes
    assert cfg.instance_group[0].count == 1
    assert parse_config((out / "config.pbtxt").read_text()).max_batch_size == best.candidate.max_batch_size


def test_cli_tune_rejects_an_unknown_model_in_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from repoforge.cli import main

    spec = Path(__file__).resolve().parents[2] / "examples" / "tabular" / "spec.yaml"
    res = CliRunner().invoke(
        main, ["tune", str(spec), "-m", "nosuch", "--latency-budget-ms", "5", "-o", str(tmp_path / "t")]
    )
    assert res.exit_code != 0 and "nosuch" in res.output
    assert not (tmp_path / "t").exists()


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_an_interrupted_tune_continues_from_its_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C after two perf runs keeps them in the output's checkpoint; the same call again measures only the
    rest (one server start each time) and deletes the checkpoint once the tune is complete."""
    from repoforge.errors import Interrupted

    perf_runs: list[int] = []
    real_measure = tune_mod.ServerMeasurer.measure

    def counting_measure(self: Any, cand: Candidate) -> Any:
        perf_runs.append(1)
        return real_measure(self, cand)

    monkeypatch.setattr(tune_mod.ServerMeasurer, "measure", counting_measure)

    space = TuneSpace(max_batch_sizes=(16, 32), preferred=("none",), max_queue_delays_us=(0, 500), instance_counts=(1,))
    out = tmp_path / "tune-out"
    kw: dict[str, Any] = dict(latency_budget_ms=50.0, space=space, concurrency=2, measurement_interval_ms=300,
                              max_trials=3, max_runs=5, confirm=2, output=out)  # fmt: skip
    lines: list[str] = []

    def stop_after_two_runs(msg: str) -> None:
        lines.append(msg)
        if msg.startswith("[2/"):
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="run the same command again to continue"):
        tune(TABULAR, "classifier", progress=stop_after_two_runs, **kw)
    saved = json.loads((out / tune_mod.CHECKPOINT).read_text())
    assert sum(e["op"] == "measure" for e in saved["entries"]) == 2
    assert json.loads((out / "tune.json").read_text())["runs_used"] == 2  # what was measured is reported too

    again: list[str] = []
    result = tune(TABULAR, "classifier", progress=again.append, **kw)
    assert any("resuming from" in m and "2 perf runs" in m for m in again)
    assert result.resumed_runs == 2 and result.runs_used == 5
    assert len(perf_runs) == 2 + 3  # only the runs left were measured on the rerun
    said = [m for m in lines if m.startswith("[")]
    assert [m for m in again if m.startswith("[")][:2] == said  # the first two are the interrupted run's, replayed
    assert not (out / tune_mod.CHECKPOINT).exists()
    assert json.loads((out / "tune.json").read_text())["resumed_runs"] == 2
