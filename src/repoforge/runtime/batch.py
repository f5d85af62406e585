"""Splitting one model call's outputs back into per-request rows: shared by the Triton runners,
the result cache's misses and the TorchServe handler (no server imports here)."""

from __future__ import annotations

import numpy as np


def split_rows(outputs: dict[str, np.ndarray], sizes: list[int]) -> list[dict[str, np.ndarray]]:
    """Request i gets rows sum(sizes[:i]) to sum(sizes[:i+1]) of every output (views, no copies).

    Raises ValueError when an output does not have one row per input row (a model that reduces over
    the batch): callers then run the requests one by one instead of handing out wrong rows."""
    total = sum(sizes)
    for k, v in outputs.items():
        if v.ndim == 0 or v.shape[0] != total:
            raise ValueError(f"output {k} has {v.shape[0] if v.ndim else 0} rows for a batch of {total}")
    parts = []
    start = 0
    for n in sizes:
        parts.append({k: v[start : start + n] for k, v in outputs.items()})
        start += n
    return parts
