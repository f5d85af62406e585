"""`repoforge tune` exits 1 when no config meets the budget, naming what came closest, and `--apply` writes the
winner into the spec keeping its comments and layout (issue 23.17). The search runs on recorded measurements,
so no server is needed to check what the command line does with its result."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from repoforge.build import build
from repoforge.cli import main
from repoforge.perf import tune as tune_mod
from repoforge.perf.tune_search import Candidate, Recorded, Trial, TuneSearch, TuneSpace
from repoforge.spec.edit import apply_patch
from repoforge.triton.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
TABULAR = ROOT / "examples" / "tabular"
SPACE = TuneSpace(max_batch_sizes=(16, 32), preferred=("max",), max_queue_delays_us=(0, 100), instance_counts=(1, 2))
RECORDED = {Candidate(16, "max", 0, 1): (5000, 3.0), Candidate(32, "max", 0, 1): (6000, 3.5),
            Candidate(32, "max", 100, 1): (6500, 4.5), Candidate(32, "max", 100, 2): (7000, 6.0),
            Candidate(16, "max", 100, 1): (5200, 3.8), Candidate(16, "max", 0, 2): (5100, 4.2),
            Candidate(32, "max", 0, 2): (6100, 4.9), Candidate(16, "max", 100, 2): (5300, 5.5)}  # fmt: skip


def _recorded_tune(spec: Any, model: str, *, latency_budget_ms: float, **_: Any) -> tune_mod.TuneResult:
    """tune() on recorded measurements: the same search and result, measured by a table instead of a server."""
    trials = [Trial(c, throughput=tp, p50_ms=p99 / 2, p99_ms=p99, runs=1,
                    samples=[{"throughput": tp, "p50_ms": p99 / 2, "p99_ms": p99}]) for c, (tp, p99) in RECORDED.items()]  # fmt: skip
    search = TuneSearch(Recorded(trials), latency_budget_ms, 100, lambda _m: None)
    search.grid(SPACE)
    search.start = Candidate(32, "max", 100, 1)
    best = search.best()
    base = parse_config(
        'name: "classifier" max_batch_size: 64 instance_group { count: 1 kind: KIND_CPU } dynamic_batching { }'
    )
    patch = tune_mod.spec_patch(model, base, best, latency_budget_ms, 16) if best else ""
    return tune_mod.TuneResult(model, "grid", latency_budget_ms, 16, list(search.trials.values()), best, search.runs,
                               SPACE.size, search.reloads, 1, 1.0, patch_yaml=patch)  # fmt: skip


@pytest.fixture
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tune_mod, "tune", _recorded_tune)
    shutil.copytree(TABULAR, tmp_path / "tabular")
    return tmp_path / "tabular" / "spec.yaml"


def test_nothing_within_budget_exits_1_naming_the_closest(spec: Path, tmp_path: Path) -> None:
    before = spec.read_text()
    res = CliRunner().invoke(main, ["tune", str(spec), "-m", "classifier", "--latency-budget-ms", "2", "--apply",
                                    "-o", str(tmp_path / "t")])  # fmt: skip
    assert res.exit_code == 1, res.output
    assert ("error: no configuration met the p99 budget of 2 ms at concurrency 16; the closest was "
            "mbs 16 pref [16] delay 0us x1 with p99 3.00 ms (50% over)") in res.output  # fmt: skip
    assert spec.read_text() == before  # --apply writes nothing without a winner


def test_apply_writes_the_winner_into_the_spec_keeping_its_comments(spec: Path, tmp_path: Path) -> None:
    before = spec.read_text()
    res = CliRunner().invoke(main, ["tune", str(spec), "-m", "classifier", "--latency-budget-ms", "5", "--apply",
                                    "-o", str(tmp_path / "t")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert f"applied to {spec}:" in res.output
    after = spec.read_text()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert changed == [
        ("    max_batch_size: 64", "    max_batch_size: 32"),
        ("      preferred_batch_sizes: [16, 32]", "      preferred_batch_sizes: [32]"),
        ("      max_queue_delay_us: 500", "      max_queue_delay_us: 100"),
    ]  # the comments, the flow-style lists and every other line are as they were
    cfg = parse_config(
        (build(spec, tmp_path / "repo", device="cpu").output / "classifier" / "config.pbtxt").read_text()
    )
    assert cfg.max_batch_size == 32 and list(cfg.dynamic_batching.preferred_batch_size) == [32]


def test_apply_patch_names_what_changed_and_refuses_an_unknown_model(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("# mine\nversion: 1\nmodels:\n- name: m  # keep\n  max_batch_size: 8\n  format: onnx\n")
    assert apply_patch(spec, {"models": [{"name": "m", "max_batch_size": 16}]}) == ["models[0].max_batch_size"]
    assert spec.read_text() == "# mine\nversion: 1\nmodels:\n- name: m  # keep\n  max_batch_size: 16\n  format: onnx\n"
    with pytest.raises(Exception, match="no model named 'x'"):
        apply_patch(spec, yaml.safe_load("models: [{name: x, max_batch_size: 4}]"))


def test_start_from_is_checked_before_anything_starts_and_reaches_the_multi_model_climb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--start-from MODEL=DIR: a bad value is a usage error (exit 2) before a build or a server; a good one hands the
    single-model tune's pick in DIR to the multi-model climb as that model's start."""
    from repoforge.perf import tune_multi

    called: list[dict[str, Any]] = []

    def fake_tune_models(spec: Any, goals: Any, **kw: Any) -> Any:
        called.append(kw)
        raise tune_mod.TuneError("stop here")

    monkeypatch.setattr(tune_multi, "tune_models", fake_tune_models)
    single = tmp_path / "ta"
    single.mkdir()
    pick = Candidate(16, "max", 100, 2)
    (single / "tune.json").write_text(json.dumps({"model": "a", "best": {"candidate": pick.to_dict()}}))
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "tune.json").write_text(json.dumps({"model": "a", "best": None}))
    spec = tmp_path / "spec.yaml"
    spec.write_text("version: 1\nmodels: []\n")
    base = ["tune", str(spec), "--latency-budget-ms", "20", "-o", str(tmp_path / "out")]
    for args, why in [
        (["-m", "a", "--start-from", f"a={single}"], "give two or more -m models"),
        (["-m", "a", "-m", "b", "--start-from", "a"], "is not MODEL=DIR"),
        (["-m", "a", "-m", "b", "--start-from", f"c={single}"], "'c' is not one of the -m models (a, b)"),
        (["-m", "a", "-m", "b", "--start-from", f"a={tmp_path / 'missing'}"], "has no tune.json"),
        (["-m", "a", "-m", "b", "--start-from", f"a={tmp_path / 'none'}"], "has no pick"),
        (["-m", "a", "-m", "b", "--start-from", f"a={single}", "--start-from", f"a={single}"], "'a' is given twice"),
    ]:
        res = CliRunner().invoke(main, base + args)
        assert res.exit_code == 2 and why in " ".join(res.output.split()), (args, res.output)
    assert not called  # nothing was built or started
    res = CliRunner().invoke(main, [*base, "-m", "a", "-m", "b", "--start-from", f"a={single / 'tune.json'}"])
    assert res.exit_code == 1 and called and called[0]["start"] == {"a": pick}, res.output
    res = CliRunner().invoke(main, ["tune", "--help"])
    assert "--start-from MODEL=DIR" in res.output and "single-model tune" in res.output


def test_the_summary_says_why_the_pick_is_not_the_races_fastest() -> None:
    a, b = Candidate(16, "max", 0, 1), Candidate(32, "max", 100, 2)
    ta = Trial(a, throughput=5000, p50_ms=2, p99_ms=4.0, feasible=True, runs=3)
    tb = Trial(b, throughput=5100, p50_ms=3, p99_ms=7.5, feasible=True, runs=3)
    r = tune_mod.TuneResult("m", "coordinate", 8.0, 16, [ta, tb], ta, 24, 120, 24, 1, 1.0, finalists=[ta, tb],
                            race={a.label(): 0.0, b.label(): 0.02})  # fmt: skip
    assert f"picked for its p99 headroom: {b.label()} scored higher" in r.summary()
    r.race = {a.label(): 0.0, b.label(): -0.2}
    assert "headroom" not in r.summary()
