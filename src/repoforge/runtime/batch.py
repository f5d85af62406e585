"""Merging requests into one batch and splitting one model call's outputs back into per-request rows: shared by
the Triton runners, the plugins (result cache misses, router) and the TorchServe handler (no server imports here)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np

R = TypeVar("R")


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


def merge_feeds(feeds: list[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], list[int]] | None:
    """Every request's rows in one feed, and each request's row count; None when they cannot share a batch
    (fewer than two, different inputs, or item shapes or dtypes that differ)."""
    if len(feeds) < 2 or not feeds[0]:
        return None
    first = feeds[0]
    for f in feeds:
        if f.keys() != first.keys():
            return None
        for k, v in f.items():
            if v.ndim == 0 or v.shape[1:] != first[k].shape[1:] or v.dtype != first[k].dtype:
                return None
    sizes = [next(iter(f.values())).shape[0] for f in feeds]
    return {n: np.concatenate([f[n] for f in feeds], axis=0) for n in first}, sizes


def run_merged(
    feeds: list[dict[str, np.ndarray]],
    merged: Callable[[dict[str, np.ndarray], list[int]], list[R]],
    alone: Callable[[dict[str, np.ndarray]], R],
    failed: Callable[[BaseException], R],
    on_merge_error: Callable[[BaseException], None] | None = None,
    merge: bool = True,
) -> list[R]:
    """Merge the requests into one batch, else run each alone: the one batch-merge rule of every runner, plugin
    and the TorchServe handler.

    `merged(feed, sizes)` answers every request from one call over their concatenated rows (one model call is
    what makes batching pay off). When they cannot be merged, or that call raises (a bad request, outputs that
    do not split per row), each request runs alone through `alone(feed)`, and one whose own call raises is
    answered `failed(exc)`: one bad request cannot fail the others. `merge=False` (a model without a batch
    axis) runs each alone."""
    both = merge_feeds(feeds) if merge else None
    if both is not None:
        try:
            return merged(*both)
        except Exception as exc:  # noqa: BLE001 - retried one by one below, so each request gets its own answer
            if on_merge_error is not None:
                on_merge_error(exc)
    out: list[R] = []
    for f in feeds:
        try:
            out.append(alone(f))
        except Exception as exc:  # noqa: BLE001 - this request's own error
            out.append(failed(exc))
    return out
