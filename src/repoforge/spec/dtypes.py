"""Triton data type names, and the numpy spellings users also write (one table: `repoforge.runtime.dtypes`)."""

from repoforge.runtime.dtypes import TRITON_DTYPES, normalize_dtype, numpy_dtype

__all__ = ["TRITON_DTYPES", "normalize_dtype", "numpy_dtype"]
