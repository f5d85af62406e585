"""A sequence as Triton's sequence batcher runs it, for checking a sequence model outside the server.

Triton fills a sequence model's control inputs itself (the client sends only a correlation id and the START/END
flags): per request, CONTROL_SEQUENCE_START is true on the first request of the sequence, CONTROL_SEQUENCE_END on
the last, CONTROL_SEQUENCE_READY on every request that carries data, and CONTROL_SEQUENCE_CORRID holds the
correlation id, in the dtype the config gives. Each is one value per batch row (`[batch, 1]` for a batching model,
`[1]` otherwise), written with the config's false/true pair (int32_false_true, fp32_false_true, bool_false_true).
Implicit state (`sequence_batching.state`) starts at zeros and takes the model's state output after each request.
An in-process reference (onnxruntime) given these tensors computes what the served model should answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from repoforge.spec.dtypes import numpy_dtype
from repoforge.triton.inputs import triton_dtype

Control = mc.ModelSequenceBatching.Control
#: Requests `validate` sends per sequence: START, one step in between, END.
STEPS = 3


@dataclass(frozen=True)
class Step:
    """One request of a sequence: its position and the flags the client sends with it."""

    index: int
    count: int
    correlation_id: int | str

    @property
    def start(self) -> bool:
        return self.index == 0

    @property
    def end(self) -> bool:
        return self.index == self.count - 1

    def client_flags(self) -> dict[str, object]:
        """What tritonclient's infer() takes for this request."""
        return {"sequence_id": self.correlation_id, "sequence_start": self.start, "sequence_end": self.end}


def is_sequence(cfg: mc.ModelConfig) -> bool:
    return cfg.HasField("sequence_batching")


def string_ids(cfg: mc.ModelConfig) -> bool:
    """Whether the model takes string correlation ids (a CORRID control of TYPE_STRING)."""
    return any(
        c.kind == Control.CONTROL_SEQUENCE_CORRID and c.data_type == mc.TYPE_STRING
        for ci in cfg.sequence_batching.control_input
        for c in ci.control
    )


def steps(cfg: mc.ModelConfig, correlation_id: int, count: int = STEPS) -> list[Step]:
    """The requests of one sequence under `correlation_id` (as a string where the model takes string ids)."""
    cid: int | str = f"repoforge-validate-{correlation_id}" if string_ids(cfg) else correlation_id
    return [Step(i, count, cid) for i in range(count)]


def _flag(c: mc.ModelSequenceBatching.Control, value: bool, shape: list[int]) -> np.ndarray:
    if c.fp32_false_true:
        return np.full(shape, c.fp32_false_true[int(value)], dtype=np.float32)
    if c.bool_false_true:
        return np.full(shape, c.bool_false_true[int(value)], dtype=np.bool_)
    pair = list(c.int32_false_true) or [0, 1]
    return np.full(shape, pair[int(value)], dtype=np.int32)


def control_tensors(cfg: mc.ModelConfig, step: Step, batch_size: int = 1) -> dict[str, np.ndarray]:
    """The control inputs Triton's sequence batcher gives the model for `step` (see the module docstring)."""
    shape = [batch_size, 1] if cfg.max_batch_size > 0 else [1]
    out: dict[str, np.ndarray] = {}
    for ci in cfg.sequence_batching.control_input:
        for c in ci.control:
            if c.kind == Control.CONTROL_SEQUENCE_START:
                out[ci.name] = _flag(c, step.start, shape)
            elif c.kind == Control.CONTROL_SEQUENCE_END:
                out[ci.name] = _flag(c, step.end, shape)
            elif c.kind == Control.CONTROL_SEQUENCE_READY:
                out[ci.name] = _flag(c, True, shape)
            elif c.kind == Control.CONTROL_SEQUENCE_CORRID:
                dtype = triton_dtype(c.data_type)
                if dtype == "BYTES":
                    out[ci.name] = np.full(shape, str(step.correlation_id).encode(), dtype=np.object_)
                else:
                    out[ci.name] = np.full(shape, step.correlation_id, dtype=numpy_dtype(dtype))
    return out


def initial_states(cfg: mc.ModelConfig, batch_size: int = 1) -> dict[str, np.ndarray] | None:
    """Each implicit state input at the start of a sequence (zeros, or the config's zero_data initial state); None
    when a state starts from a data file, which the reference does not read."""
    out: dict[str, np.ndarray] = {}
    for s in cfg.sequence_batching.state:
        if any(init.HasField("data_file") for init in s.initial_state):
            return None
        dims = [d if d >= 0 else 1 for d in s.dims]
        shape = [batch_size, *dims] if cfg.max_batch_size > 0 else dims
        out[s.input_name] = np.zeros(shape, dtype=numpy_dtype(triton_dtype(s.data_type)))
    return out


def state_outputs(cfg: mc.ModelConfig) -> dict[str, str]:
    """Implicit state: model output name → the input it feeds on the next request."""
    return {s.output_name: s.input_name for s in cfg.sequence_batching.state}
