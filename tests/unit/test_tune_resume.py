"""An interrupted tune continues from its checkpoint (issue 26.3): the search replays the answers it got before the
interruption, measures only what is left, and picks what an uninterrupted run picks; a checkpoint of another tune
(changed spec, model or setting) is refused with a usage error instead of being mistaken for this one's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from repoforge.cli import main
from repoforge.errors import ArgumentError
from repoforge.perf.tune import CHECKPOINT, tune
from repoforge.perf.tune_search import Candidate, Entry, Journal, Recorded, Sample, Trial, TuneSearch, TuneSpace

ROOT = Path(__file__).resolve().parents[2]
SPACE = TuneSpace(max_batch_sizes=(8, 16, 32, 64), preferred=("none", "half_max"), max_queue_delays_us=(0, 100, 500),
                  instance_counts=(1, 2))  # fmt: skip


def _table() -> list[Trial]:
    """Every grid point, throughput and p99 from an additive landscape (distinct values, so order matters)."""
    out = []
    for i, c in enumerate(SPACE.candidates()):
        tp = 5000 + 400 * c.instances + {8: 300, 16: 200, 32: 100, 64: 0}[c.max_batch_size] - c.max_queue_delay_us + i
        p99 = 3.0 + c.max_queue_delay_us / 100 + (1.5 if c.preferred == "half_max" else 0.0)
        samples = [{"throughput": tp * f, "p50_ms": p99 / 2, "p99_ms": p99} for f in (1.0, 0.97, 1.02)]
        out.append(Trial(c, throughput=tp, p99_ms=p99, runs=1, samples=samples))
    return out


class Stops(Recorded):
    """Recorded measurements, with Ctrl-C arriving during the ``stop_at``-th perf run."""

    def __init__(self, trials: list[Trial], stop_at: int | None = None) -> None:
        super().__init__(trials)
        self.stop_at, self.calls, self.loads = stop_at, 0, 0

    def load(self, cand: Candidate) -> str:
        self.loads += 1
        return super().load(cand)

    def measure(self, cand: Candidate) -> Sample:
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return super().measure(cand)


def _run(measurer: Any, replay: list[Entry] = (), saved: list[list[Entry]] | None = None) -> TuneSearch:  # type: ignore[assignment]
    journal = Journal(measurer, replay, (lambda e: saved.append(list(e))) if saved is not None else None)
    s = TuneSearch(journal, 6.0, 20, lambda _m: None)
    s.coordinate(SPACE, Candidate(64, "none", 500, 1), confirm=8)
    return s


@pytest.mark.parametrize("stop_at", [1, 5, 12, 15, 17])
def test_a_resumed_search_measures_only_what_is_left_and_picks_the_same(stop_at: int) -> None:
    whole = _run(Stops(_table()))
    assert 17 <= whole.runs <= 20
    saved: list[list[Entry]] = []
    with pytest.raises(KeyboardInterrupt):
        _run(Stops(_table(), stop_at=stop_at), saved=saved)
    journal = saved[-1] if saved else []
    assert sum(e["op"] == "measure" for e in journal) == stop_at - 1  # every finished run is in the checkpoint
    json.dumps(journal)  # and the checkpoint is plain JSON

    again = Stops(_table())  # a new server: its next sample of each candidate is the one after the journal's
    by_label = {c.label(): c for c in SPACE.candidates()}
    for e in journal:
        if e["op"] == "measure":
            again.measured[by_label[e["candidate"]]] = again.measured.get(by_label[e["candidate"]], 0) + 1
    resumed = _run(again, replay=json.loads(json.dumps(journal)))
    assert again.calls == whole.runs - (stop_at - 1)  # nothing measured twice
    assert resumed.runs == whole.runs
    assert resumed.best() is not None and resumed.best().candidate == whole.best().candidate  # type: ignore[union-attr]
    assert [t.candidate for t in resumed.trials.values()] == [t.candidate for t in whole.trials.values()]
    assert resumed.measurer.replayed == len(journal)  # type: ignore[attr-defined]


def test_a_journal_that_diverges_stops_replaying_and_measures() -> None:
    other = Candidate(8, "none", 0, 2)
    bogus: list[Entry] = [{"op": "load", "candidate": other.label(), "key": "k"},
                          {"op": "measure", "candidate": other.label(), "sample": {"throughput": 1e9, "p50_ms": 1, "p99_ms": 1}}]  # fmt: skip
    live = Stops(_table())
    s = _run(live, replay=bogus)
    assert s.measurer.replayed == 0 and live.calls == s.runs  # type: ignore[attr-defined]
    assert all(t.throughput < 1e9 for t in s.trials.values())


def test_a_replayed_load_is_served_for_real_before_the_first_live_run() -> None:
    saved: list[list[Entry]] = []
    with pytest.raises(KeyboardInterrupt):
        _run(Stops(_table(), stop_at=3), saved=saved)
    journal = saved[-1] + [{"op": "load", "candidate": "x", "key": "x"}]  # a stale tail is ignored
    # Stop right after a load: the last entry is that load, the server on the rerun has not loaded it.
    cut = next(
        i for i in range(len(journal) - 1, -1, -1) if journal[i]["op"] == "load" and journal[i]["candidate"] != "x"
    )
    live = Stops(_table())
    s = _run(live, replay=journal[: cut + 1])
    assert live.loads >= 1 and s.runs == _run(Stops(_table())).runs


# --- the checkpoint file of `tune(..., output=...)` -----------------------------------------------------------
@pytest.fixture
def spec(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "examples" / "tabular", tmp_path / "tabular")
    return tmp_path / "tabular" / "spec.yaml"


def _checkpoint(out: Path, identity: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    p = out / CHECKPOINT
    p.write_text(json.dumps({"identity": identity, "entries": [{"op": "load", "candidate": "c", "key": "k"}]}))
    return p


def _identity_of(spec: Path, out: Path, **kw: Any) -> dict[str, Any]:
    """The identity tune() writes, read back from a checkpoint it refused (the message names what differs)."""
    _checkpoint(out, {"spec": "0", "model": "classifier", "settings": {}})
    with pytest.raises(ArgumentError) as e:
        tune(spec, "classifier", latency_budget_ms=5.0, output=out, **kw)
    return {"message": str(e.value)}


def test_a_changed_spec_or_setting_refuses_to_resume(spec: Path, tmp_path: Path) -> None:
    out = tmp_path / "t"
    msg = _identity_of(spec, out)["message"]
    assert "different spec" in msg and "--restart" in msg
    assert "--concurrency" in msg and "--latency-budget-ms" in msg  # every setting that differs is named
    assert (out / CHECKPOINT).exists()  # refused, not discarded


def test_cli_refuses_another_tunes_checkpoint_with_a_usage_error(spec: Path, tmp_path: Path) -> None:
    out = tmp_path / "t"
    _checkpoint(out, {"spec": "0", "model": "classifier", "settings": {}})
    res = CliRunner().invoke(main, ["tune", str(spec), "-m", "classifier", "--latency-budget-ms", "5", "-o", str(out)])
    assert res.exit_code == 2, res.output
    assert "--restart" in res.output and CHECKPOINT in res.output


def test_an_unreadable_checkpoint_is_refused_too(spec: Path, tmp_path: Path) -> None:
    out = tmp_path / "t"
    out.mkdir()
    (out / CHECKPOINT).write_text("{not json")
    with pytest.raises(ArgumentError, match="--restart"):
        tune(spec, "classifier", latency_budget_ms=5.0, output=out)


def test_restart_discards_another_tunes_checkpoint_and_a_completed_tune_removes_its_own(tmp_path: Path) -> None:
    from repoforge.perf.tune import Checkpoint

    out = tmp_path / "t"
    p = _checkpoint(out, {"spec": "0", "model": "classifier", "settings": {}})
    identity = {"spec": "1", "model": "classifier", "settings": {"concurrency": 16}}
    with pytest.raises(ArgumentError, match="different spec, --concurrency"):
        Checkpoint(out, dict(identity), restart=False)
    fresh = Checkpoint(out, dict(identity), restart=True)
    assert not p.exists() and fresh.entries == []
    fresh.save([{"op": "load", "candidate": "c", "key": "k"}])
    again = Checkpoint(out, dict(identity), restart=False)  # the same tune: resumes
    assert again.entries == [{"op": "load", "candidate": "c", "key": "k"}]
    again.done()
    assert not p.exists()


def test_the_summary_says_how_each_finalist_did_in_the_race_against_the_pick() -> None:
    from repoforge.perf.tune import TuneResult

    s = _run(Stops(_table()))
    best = s.best()
    assert best is not None and s.scores and best.candidate in s.scores
    race = {c.label(): v - s.scores[best.candidate][0] for c, (v, _n) in s.scores.items()}
    result = TuneResult("m", "coordinate", 6.0, 16, list(s.trials.values()), best, s.runs, SPACE.size, s.reloads, 1,
                        1.0, finalists=list(s.finalists), race=race)  # fmt: skip
    text = result.summary()
    others = [t for t in s.finalists if t is not best]
    assert others and all(f"{t.candidate.label()}: " in text for t in others)
    assert text.count("vs the pick") == len(others)  # the pick itself gets no comparison
