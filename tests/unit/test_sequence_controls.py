"""The control tensors `validate` gives a sequence model's reference, as Triton's sequence batcher fills them
(issue 23, item 7; the served comparison is in tests/integration/test_nvidia_cases.py)."""

from __future__ import annotations

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from repoforge.triton.sequence import control_tensors, initial_states, state_outputs, steps

Kind = mc.ModelSequenceBatching.Control


def _config(max_batch_size: int, corrid: int = mc.TYPE_UINT64) -> mc.ModelConfig:
    cfg = mc.ModelConfig(name="s", max_batch_size=max_batch_size)
    sb = cfg.sequence_batching
    sb.control_input.add(name="START").control.add(kind=Kind.CONTROL_SEQUENCE_START, fp32_false_true=[0.0, 1.0])
    sb.control_input.add(name="END").control.add(kind=Kind.CONTROL_SEQUENCE_END, int32_false_true=[0, 1])
    sb.control_input.add(name="READY").control.add(kind=Kind.CONTROL_SEQUENCE_READY, bool_false_true=[False, True])
    sb.control_input.add(name="CORRID").control.add(kind=Kind.CONTROL_SEQUENCE_CORRID, data_type=corrid)
    sb.state.add(input_name="S_IN", output_name="S_OUT", data_type=mc.TYPE_FP32, dims=[2])
    return cfg


def test_start_end_ready_and_the_correlation_id_per_request() -> None:
    cfg = _config(4)
    first, middle, last = steps(cfg, 77)
    assert [s.client_flags() for s in (first, last)] == [
        {"sequence_id": 77, "sequence_start": True, "sequence_end": False},
        {"sequence_id": 77, "sequence_start": False, "sequence_end": True},
    ]
    got = control_tensors(cfg, first)
    assert got["START"].dtype == np.float32 and got["START"].tolist() == [[1.0]]
    assert got["END"].dtype == np.int32 and got["END"].tolist() == [[0]]
    assert got["READY"].dtype == np.bool_ and got["READY"].tolist() == [[True]]
    assert got["CORRID"].dtype == np.uint64 and got["CORRID"].tolist() == [[77]]
    assert control_tensors(cfg, middle)["START"].tolist() == [[0.0]]
    assert control_tensors(cfg, last)["END"].tolist() == [[1]]
    states = initial_states(cfg)
    assert states is not None and states["S_IN"].shape == (1, 2) and not states["S_IN"].any()
    assert state_outputs(cfg) == {"S_OUT": "S_IN"}


def test_a_model_without_a_batch_axis_and_string_ids() -> None:
    cfg = _config(0, mc.TYPE_STRING)
    step = steps(cfg, 5)[0]
    assert step.correlation_id == "repoforge-validate-5"
    got = control_tensors(cfg, step)
    assert got["START"].shape == (1,) and got["CORRID"].tolist() == [b"repoforge-validate-5"]
