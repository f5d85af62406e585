"""The CPU runners' `intra_op_threads: auto` rule (repoforge.runtime.threads)."""

from __future__ import annotations

import numpy as np
import pytest

from repoforge.runtime import threads as t
from repoforge.runtime.triton_model import ModelArgs


def _never() -> float:
    raise AssertionError("the probe must not run")


def test_fixed_settings_are_used_as_written_without_probing() -> None:
    assert t.choose("3", instances=1, time_one_batch=_never, cores=8).threads == 3
    assert t.choose("0", instances=1, time_one_batch=_never, cores=8).threads == 0


@pytest.mark.parametrize("value", ["fast", "-1", "1.5", ""])
def test_bad_settings_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        t.parse_setting(value)


def test_auto_gives_one_thread_when_instances_already_take_every_core() -> None:
    assert t.choose("auto", instances=2, time_one_batch=_never, cores=2).threads == 1


def test_auto_keeps_cheap_models_on_one_thread_and_gives_compute_bound_ones_their_share() -> None:
    assert t.choose("auto", instances=1, time_one_batch=lambda: 0.0002, cores=2).threads == 1
    heavy = t.choose("AUTO", instances=2, time_one_batch=lambda: 0.005, cores=8)
    assert heavy.threads == 4 and "compute-bound" in heavy.reason


def test_a_probe_that_fails_falls_back_to_one_thread() -> None:
    def boom() -> float:
        raise RuntimeError("needs real data")

    choice = t.choose("auto", instances=1, time_one_batch=boom, cores=4)
    assert choice.threads == 1 and "needs real data" in choice.reason


def test_probe_feed_follows_the_config_dims_and_dtypes() -> None:
    args = ModelArgs.parse({
        "model_name": "m", "model_version": "1", "model_repository": "/r",
        "model_config": '{"max_batch_size": 16, "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4, -1]},'
                        ' {"name": "ids", "data_type": "TYPE_INT64", "dims": ["3"]}, {"name": "s", "data_type": "TYPE_STRING", "dims": [1]}],'
                        ' "output": [], "instance_group": [{"count": 2, "kind": "KIND_CPU"}, {"count": 1}]}',
    })  # fmt: skip
    feed = args.probe_feed()
    assert args.instances == 3
    assert feed["x"].shape == (t.PROBE_ROWS, 4, 1) and feed["x"].dtype == np.float32
    assert feed["ids"].shape == (t.PROBE_ROWS, 3) and feed["ids"].dtype == np.int64 and not feed["ids"].any()
    assert feed["s"].dtype == object and feed["s"][0, 0] == b""


def test_timed_returns_the_fastest_call() -> None:
    calls = []
    assert t.timed(lambda: calls.append(1), repeats=3) >= 0 and len(calls) == 4
