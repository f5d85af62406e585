"""Request data made from a model config: the right dtype and shape for every input, BYTES included,
so smoke tests and perf runs never need hand-written shapes."""

from __future__ import annotations

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from repoforge.spec.dtypes import numpy_dtype


def triton_dtype(data_type: int) -> str:
    """`TYPE_STRING` → `BYTES`, `TYPE_FP32` → `FP32` (the names tritonclient's InferInput takes)."""
    name = mc.DataType.Name(data_type).removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def concrete_shape(
    dims: list[int], max_batch_size: int, batch_size: int = 1, fill: int = 1, override: list[int] | None = None
) -> list[int]:
    """Replace variable dims (-1) with `fill` and prepend the batch axis where the model has one."""
    shape = list(override) if override is not None else [d if d >= 0 else fill for d in dims]
    return [batch_size, *shape] if max_batch_size > 0 else shape


def random_array(dtype: str, shape: list[int], rng: np.random.Generator) -> np.ndarray:
    if dtype == "BYTES":
        words = np.array(
            [f"token{i}".encode() for i in rng.integers(0, 1000, size=int(np.prod(shape)))], dtype=np.object_
        )
        return words.reshape(shape)
    if dtype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dtype == "BF16":
        return rng.standard_normal(shape).astype(np.float32)
    np_type = numpy_dtype(dtype)
    if np.issubdtype(np_type, np.integer):
        return rng.integers(0, 10, size=shape).astype(np_type)
    return rng.standard_normal(shape).astype(np_type)


def make_inputs(
    cfg: mc.ModelConfig, *, batch_size: int = 1, seed: int = 0, shapes: dict[str, list[int]] | None = None
) -> dict[str, np.ndarray]:
    """Random inputs for every required input of `cfg` (optional inputs are left out)."""
    rng = np.random.default_rng(seed)
    out = {}
    for t in cfg.input:
        if t.optional:
            continue
        shape = concrete_shape(list(t.dims), cfg.max_batch_size, batch_size, override=(shapes or {}).get(t.name))
        out[t.name] = random_array(triton_dtype(t.data_type), shape, rng)
    return out
