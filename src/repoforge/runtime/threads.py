"""How many intra-op threads a CPU runner uses.

The default, ``intra_op_threads: auto``, decides when the model loads, from what was measured on a
2-core host (bench/RESULTS.md): a cheap model (the small MLP, ~70 µs per batch of 8) is dominated by
the Python backend's per-execution overhead, and extra threads only fight the server's gRPC threads
for the cores (1 thread was 5–10 % faster at concurrency 16). A compute-bound model (1024-4096-4096,
~5 ms per batch of 8) was 1.25x faster with every core in one instance than with 2 instances of one
thread, and 1.5x faster than 1 thread. So: time one batch on one thread; if it takes longer than the
per-execution overhead, use this instance's share of the cores (the runner then builds its session
again with that many threads). A pool's threads never spin-wait
(``session.intra_op.allow_spinning = 0``): a spinning 2-thread pool kept both cores busy and was
20 % slower on the compute-bound model.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

AUTO = "auto"
#: Rows in the timing batch (dynamic batching forms about this many at concurrency 16 on 2 cores).
PROBE_ROWS = 8
#: A batch slower than this is compute-bound: the Python backend's per-execution overhead
#: (stub round trip and per-response work) is 0.5–1 ms on a busy 2-core host.
COMPUTE_BOUND_S = 1e-3

NUMPY_DTYPES: dict[str, Any] = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "STRING": np.object_, "BYTES": np.object_,
}  # fmt: skip


@dataclass(frozen=True)
class ThreadChoice:
    threads: int  # 0 = the runtime's own default
    reason: str


def parse_setting(value: str) -> int | None:
    """``auto`` → None, else a thread count ≥ 0 (0 = the runtime's default pool). ValueError otherwise."""
    text = str(value).strip().lower()
    if text == AUTO:
        return None
    n = int(text)
    if n < 0:
        raise ValueError(f"intra_op_threads must be 'auto' or an integer >= 0, not {value!r}")
    return n


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def instance_count(model_config: dict[str, Any]) -> int:
    """Instances of this model on this host (Triton's default count is 1)."""
    groups = model_config.get("instance_group") or [{}]
    return max(1, sum(int(g.get("count", 1) or 1) for g in groups))


def choose(setting: str, instances: int, time_one_batch: Callable[[], float], cores: int | None = None) -> ThreadChoice:
    """Resolve ``setting`` (``auto`` or a count). ``time_one_batch`` runs one probe batch on a
    single thread and returns its seconds; it is called only when the choice depends on it."""
    fixed = parse_setting(setting)
    if fixed is not None:
        return ThreadChoice(fixed, "set in the config")
    cores = cores or available_cores()
    share = max(1, cores // max(1, instances))
    if share == 1:
        return ThreadChoice(1, f"auto: {instances} instance(s) on {cores} core(s) leave one core each")
    try:
        seconds = time_one_batch()
    except Exception as exc:  # noqa: BLE001 - a probe that cannot run must not stop the model loading
        return ThreadChoice(1, f"auto: probe batch failed ({type(exc).__name__}: {exc}); 1 thread")
    if seconds < COMPUTE_BOUND_S:
        return ThreadChoice(
            1, f"auto: one batch of {PROBE_ROWS} rows takes {seconds * 1e3:.2f} ms, overhead-bound; 1 thread"
        )
    return ThreadChoice(
        share, f"auto: one batch of {PROBE_ROWS} rows takes {seconds * 1e3:.2f} ms, compute-bound; {share} threads"
    )


def probe_feed(inputs: list[tuple[str, str, list[int]]], max_batch_size: int) -> dict[str, np.ndarray]:
    """Zeros for each (name, Triton dtype, config dims): PROBE_ROWS rows when the model batches,
    variable dims as 1. Zeros are valid indices for embedding lookups too."""
    feed = {}
    for name, dtype, dims in inputs:
        shape = [PROBE_ROWS] if max_batch_size > 0 else []
        shape += [d if d > 0 else 1 for d in dims]
        np_dtype = NUMPY_DTYPES.get(dtype, np.float32)
        feed[name] = np.full(shape, b"", dtype=object) if np_dtype is np.object_ else np.zeros(shape, dtype=np_dtype)
    return feed


def timed(fn: Callable[[], Any], repeats: int = 3) -> float:
    """The fastest of ``repeats`` calls of ``fn``, in seconds, after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
