"""Stable hashing of whole columns at once (no per-row Python).

`stable_hash` is FNV-1a 64 over each value's UTF-8 bytes, finished with MurmurHash3's fmix64 so
that the low bits (used by `% buckets`) and the top bits (used for route shares) are both well mixed.
It is the same on every machine, process and Python version (unlike `hash()`); integers hash as their
decimal text, so the id 42 and the string "42" land in the same bucket.

For batches the loop runs over byte positions (the longest value's length), never over rows; a
few rows (online requests) hash in plain Python, which is faster there.
"""

from __future__ import annotations

import numpy as np

__all__ = ["as_bytes", "combine", "fmix64", "fnv1a64", "stable_hash", "to_unit", "utf8_length"]

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
_C1 = np.uint64(0xFF51AFD7ED558CCD)
_C2 = np.uint64(0xC4CEB9FE1A85EC53)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def as_bytes(values: np.ndarray) -> np.ndarray:
    """A 1-D fixed-width bytes array (numpy `S`) of the values' UTF-8 text.

    Accepts Triton's object arrays of bytes, numpy str arrays (TorchServe/JSON), and integer arrays
    (decimal text). Trailing NUL bytes are not part of a value (numpy `S` semantics).
    """
    v = np.asarray(values).reshape(-1)
    if v.dtype.kind == "S":
        return v
    if v.dtype.kind == "U":
        return np.char.encode(v, "utf-8")
    if v.dtype.kind in "iub":
        return v.astype(np.int64 if v.dtype.kind != "u" else np.uint64).astype("S")
    if v.dtype.kind == "f":
        raise TypeError("float columns have no stable text form; cast ids to integers or strings")
    try:  # object array: bytes (Triton) or ASCII str convert in C
        return v.astype("S") if v.size else np.zeros(0, dtype="S1")
    except (UnicodeEncodeError, TypeError, ValueError):
        return np.array([x.encode("utf-8") if isinstance(x, str) else bytes(x) for x in v.tolist()], dtype="S")


def _matrix(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows × width uint8 matrix, byte lengths) of a fixed-width bytes array."""
    width = max(b.dtype.itemsize, 1)
    b = np.ascontiguousarray(b.astype(f"S{width}"))
    mat = b.view(np.uint8).reshape(len(b), width)
    lengths = np.char.str_len(b) if len(b) else np.zeros(0, dtype=np.int64)
    return mat, lengths


#: Below this many rows a plain Python loop per value beats numpy's loop over byte positions
#: (numpy pays ~2 µs per position whatever the row count; Python ~70 ns per byte per row).
PY_LOOP_MAX_ROWS = 16
_MASK64 = 0xFFFFFFFFFFFFFFFF


def fnv1a64(values: np.ndarray) -> np.ndarray:
    """FNV-1a 64 of each value's bytes, as uint64."""
    b = as_bytes(values)
    if len(b) <= PY_LOOP_MAX_ROWS:
        return np.array([_fnv1a64_py(x) for x in b.tolist()], dtype=np.uint64)
    mat, lengths = _matrix(b)
    # Padding bytes are 0 and get multiplier 1, so `(h ^ 0) * 1` leaves h as it was: no mask per position.
    cols = np.ascontiguousarray(mat.T, dtype=np.uint64)
    mult = np.where(np.arange(mat.shape[1])[:, None] < lengths[None, :], FNV_PRIME, np.uint64(1))
    h = np.full(len(mat), FNV_OFFSET, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(int(lengths.max(initial=0))):
            np.bitwise_xor(h, cols[j], out=h)
            np.multiply(h, mult[j], out=h)
    return h


def _fnv1a64_py(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for c in data:
        h = ((h ^ c) * 0x100000001B3) & _MASK64
    return h


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer (a bijection that mixes every input bit into every output bit)."""
    h = np.asarray(h, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(33))
        h = h * _C1
        h = h ^ (h >> np.uint64(33))
        h = h * _C2
        h = h ^ (h >> np.uint64(33))
    return h


def _fmix64_py(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK64
    return h ^ (h >> 33)


def stable_hash(values: np.ndarray) -> np.ndarray:
    """fmix64(FNV-1a 64(UTF-8 text)) per value, uint64."""
    b = as_bytes(values)
    if len(b) <= PY_LOOP_MAX_ROWS:  # online requests: plain ints, no numpy call (or errstate) per step
        return np.array([_fmix64_py(_fnv1a64_py(x)) for x in b.tolist()], dtype=np.uint64)
    return fmix64(fnv1a64(b))


def combine(hashes: list[np.ndarray]) -> np.ndarray:
    """Order-dependent combination of per-column hashes (for feature crosses): h = fmix64(h * golden ^ next)."""
    if len(hashes[0]) <= PY_LOOP_MAX_ROWS:
        out = []
        for row in zip(*(x.tolist() for x in hashes), strict=True):
            v = 0
            for x in row:
                v = _fmix64_py(((v * 0x9E3779B97F4A7C15) & _MASK64) ^ x)
            out.append(v)
        return np.array(out, dtype=np.uint64)
    h = np.zeros(len(hashes[0]), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for x in hashes:
            h = fmix64((h * _GOLDEN) ^ x)
    return h


def to_unit(h: np.ndarray) -> np.ndarray:
    """Map uint64 hashes to floats uniform in [0, 1) (top 53 bits)."""
    return (np.asarray(h, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def utf8_length(values: np.ndarray) -> np.ndarray:
    """Number of characters (not bytes) in each value's UTF-8 text."""
    b = as_bytes(values)
    if len(b) <= PY_LOOP_MAX_ROWS:  # bytes that do not continue a character (0b10xxxxxx), as below
        return np.array([sum(1 for c in x if c & 0xC0 != 0x80) for x in b.tolist()], dtype=np.int64)
    mat, lengths = _matrix(b)
    inside = np.arange(mat.shape[1])[None, :] < lengths[:, None]
    return (((mat & 0xC0) != 0x80) & inside).sum(axis=1)
