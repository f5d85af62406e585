"""What a batch run needs to know about the served model: its inputs and outputs (from the config the server
serves), the version it pins, a hash of that config for the manifest, and which DATA columns feed which input."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from repoforge.errors import ArgumentError, RepoforgeError
from repoforge.spec.dtypes import normalize_dtype, numpy_dtype
from repoforge.triton.client import InferenceServerException, model_metadata_and_config

BatchArgumentError = ArgumentError  # batch's wrong arguments and inputs: the one ArgumentError (exit 2)


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: Triton's dtype name and its dims without the batch axis (-1: variable)."""

    name: str
    datatype: str
    dims: tuple[int, ...]
    optional: bool = False  # an input the model works without (left out unless --map names it)

    @property
    def np_dtype(self) -> np.dtype[Any]:
        return np.dtype(numpy_dtype(self.datatype))

    @property
    def size(self) -> int:
        """Values per row (dims multiplied), or -1 when a dim is variable."""
        return -1 if any(d < 0 for d in self.dims) else math.prod(self.dims)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    config_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "config_sha256": self.config_sha256}


def _tensors(entries: Sequence[Mapping[str, Any]]) -> tuple[TensorSpec, ...]:
    out = []
    for e in entries:
        dims = tuple(int(d) for d in e.get("dims", []))  # `reshape`, if any, is the server's business
        # normalize_dtype: the config JSON says TYPE_STRING where the tensor's dtype is BYTES
        dtype = normalize_dtype(str(e.get("data_type", "TYPE_FP32")))
        out.append(TensorSpec(str(e["name"]), dtype, dims, bool(e.get("optional", False))))
    return tuple(out)


def model_info(protocol: str, url: str, model: str, version: str | None = None, *, timeout: float = 30.0) -> ModelInfo:
    """The served model's tensors, pinned version (the newest ready one unless `version`) and config hash."""
    try:
        meta, config = model_metadata_and_config(protocol, url, model, timeout)
    except InferenceServerException as exc:
        msg = str(exc.message() or exc).splitlines()[0]
        if "unknown model" in msg.lower() or "not found" in msg.lower():
            raise BatchArgumentError("--model", f"model '{model}' is not served at {url}: {msg}") from None
        raise BatchServerError(f"cannot read model '{model}' from Triton at {url}: {msg}") from None
    except (OSError, TimeoutError) as exc:
        raise BatchServerError(f"cannot reach Triton at {url} ({protocol}): {exc}") from None
    versions = sorted((str(v) for v in meta.get("versions", [])), key=lambda v: (len(v), v))
    if version is not None:
        if versions and version not in versions:
            raise BatchArgumentError(
                "--model-version", f"model '{model}' has no version {version} served; it has {', '.join(versions)}"
            )
        chosen = version
    elif versions:
        chosen = versions[-1]
    else:
        chosen = "1"
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    return ModelInfo(
        name=model,
        version=chosen,
        max_batch_size=int(config.get("max_batch_size", 0)),
        inputs=_tensors(config.get("input", [])),
        outputs=_tensors(config.get("output", [])),
        config_sha256=config_hash,
    )


class BatchServerError(RepoforgeError):
    """The server stopped answering (after the retries) or answered something the run cannot go on with."""

    exit_code = 1


# --------------------------------------------------------------------------------------------
# Columns -> inputs
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Binding:
    """Which DATA columns feed one input: one (a scalar, list or fixed-size-list column) or several scalar
    columns stacked along the input's last axis (`--map a,b,c=INPUT`)."""

    input: TensorSpec
    columns: tuple[str, ...]


def parse_maps(values: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """`--map col=INPUT` (or `a,b,c=INPUT`) options as {INPUT: columns}."""
    out: dict[str, tuple[str, ...]] = {}
    for v in values:
        cols, sep, name = v.rpartition("=")
        columns = tuple(c.strip() for c in cols.split(",") if c.strip())
        if not sep or not name.strip() or not columns:
            raise BatchArgumentError("--map", f"{v!r}: expected COLUMN=INPUT (or COL1,COL2=INPUT)")
        if name.strip() in out:
            raise BatchArgumentError("--map", f"input {name.strip()!r} is mapped twice")
        out[name.strip()] = columns
    return out


def _is_list(t: pa.DataType) -> bool:
    return bool(pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))


def bind(
    info: ModelInfo, schema: pa.Schema, maps: Mapping[str, Sequence[str]], id_column: str | None, id_name: str
) -> list[Binding]:
    """Every model input matched to DATA columns, or a BatchArgumentError naming the first thing that does not fit:
    a mapped column that DATA lacks, a mapping to an input the model lacks, a required input with no column, an
    id column that DATA lacks, or an output named like the id column. Optional inputs are bound only when mapped."""
    names = set(schema.names)
    listed = ", ".join(schema.names)
    inputs = {t.name: t for t in info.inputs}
    for inp, cols in maps.items():
        if inp not in inputs:
            raise BatchArgumentError(
                "--map", f"model '{info.name}' has no input {inp!r}; its inputs are {', '.join(inputs)}"
            )
        for c in cols:
            if c not in names:
                raise BatchArgumentError("--map", f"column {c!r} (for input {inp!r}) is not in DATA; it has {listed}")
    if id_column is not None and id_column not in names:
        raise BatchArgumentError("--id-column", f"column {id_column!r} is not in DATA; it has {listed}")
    for out in info.outputs:
        if out.name == id_name:
            raise BatchArgumentError(
                "--id-column",
                f"the id column {id_name!r} has the name of output {out.name!r}; pick another --id-column",
            )
    bindings: list[Binding] = []
    for t in info.inputs:
        cols = tuple(maps.get(t.name, ()))
        if not cols and t.optional:  # the model works without it; only the user's --map sends it
            continue
        if not cols:
            if t.name not in names:
                raise BatchArgumentError(
                    "--map",
                    f"model input {t.name!r} has no column in DATA (it has {listed}); "
                    f"name one with --map COLUMN={t.name}",
                )
            cols = (t.name,)
        if any(d < 0 for d in t.dims):
            raise BatchArgumentError(
                "--map", f"input {t.name!r} has variable dims {list(t.dims)}; batch supports fixed-size inputs only yet"
            )
        if len(cols) > 1:
            for c in cols:
                if _is_list(schema.field(c).type):
                    raise BatchArgumentError("--map", f"column {c!r} is a list; stacked columns must be scalars")
            if t.size != len(cols):
                raise BatchArgumentError(
                    "--map",
                    f"input {t.name!r} takes {t.size} values per row ({list(t.dims)}), {len(cols)} columns given",
                )
        else:
            typ = schema.field(cols[0]).type
            text = pa.types.is_string(typ) or pa.types.is_large_string(typ)  # JSON text per row, e.g. "[1, 2]"
            if not _is_list(typ) and not text and t.size != 1:
                raise BatchArgumentError(
                    "--map",
                    f"input {t.name!r} takes {t.size} values per row ({list(t.dims)}) but column {cols[0]!r} holds "
                    f"one ({typ}); give a list column or several columns (--map a,b,c={t.name})",
                )
        bindings.append(Binding(t, cols))
    return bindings
