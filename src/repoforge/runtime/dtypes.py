"""Triton data type names, and the numpy spellings users also write."""

from __future__ import annotations

import numpy as np

TRITON_DTYPES: tuple[str, ...] = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BF16",
    "BYTES",
)

_ALIASES: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "half": "FP16",
    "float32": "FP32",
    "float": "FP32",
    "float64": "FP64",
    "double": "FP64",
    "bfloat16": "BF16",
    "bytes": "BYTES",
    "string": "BYTES",
    "str": "BYTES",
    "object": "BYTES",
}

_NUMPY: dict[str, type] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}


def normalize_dtype(value: str) -> str:
    """`float32`, `fp32`, `TYPE_FP32` → `FP32`; raises ValueError listing the valid names."""
    text = str(value).strip()
    upper = text.upper().removeprefix("TYPE_")
    if upper in TRITON_DTYPES:
        return upper
    if upper == "STRING":  # Triton's protobuf name for BYTES (TYPE_STRING)
        return "BYTES"
    alias = _ALIASES.get(text.lower())
    if alias:
        return alias
    raise ValueError(
        f"unknown dtype '{value}'; expected one of {', '.join(TRITON_DTYPES)} (or numpy names such as float32)"
    )


def numpy_dtype(dtype: str) -> type:
    """numpy type for a Triton dtype (BF16 has none in numpy; callers send it as FP32)."""
    if dtype == "BF16":
        raise ValueError("BF16 has no numpy type")
    return _NUMPY[dtype]
