"""Stable hashing of whole columns (the implementation runs inside servers: `repoforge.runtime.hashing`)."""

from repoforge.runtime.hashing import (
    PY_LOOP_MAX_ROWS,
    as_bytes,
    combine,
    fmix64,
    fnv1a64,
    stable_hash,
    to_unit,
    utf8_length,
)

__all__ = ["PY_LOOP_MAX_ROWS", "as_bytes", "combine", "fmix64", "fnv1a64", "stable_hash", "to_unit", "utf8_length"]
