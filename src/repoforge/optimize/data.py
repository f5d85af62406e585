"""The model's tensors as `optimize:` sees them, and the .npz files checked against them before any work.

A calibration or validation file that does not fit the model is a spec mistake: it is reported at the spec line
that names the file, with every problem at once, before a variant is made or anything is written.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from repoforge.errors import Problem, SpecError
from repoforge.spec.dtypes import numpy_dtype
from repoforge.spec.load import LoadedSpec, effective
from repoforge.spec.models import ModelSpec, OptimizeSpec
from repoforge.spec.yamlsource import PathKey
from repoforge.torchserve.eager import split_model_file
from repoforge.triton.onnx_io import OnnxReadError, read_signature

TORCH_FORMATS = ("torchscript", "pytorch")


@dataclass(frozen=True)
class Tensor:
    """A model input or output; `dims` leave out the batch axis (optimize needs a batchable model)."""

    name: str
    dtype: str  # Triton name
    dims: tuple[int, ...]


@dataclass
class ModelTarget:
    """One model with `optimize:`, resolved: its source file, tensors and batch limit."""

    index: int
    name: str
    format: str
    source: Path
    model_file: Path | None  # format pytorch: the class file
    class_name: str | None
    spec: ModelSpec  # defaults merged
    options: OptimizeSpec
    max_batch_size: int
    inputs: list[Tensor]
    outputs: list[Tensor]
    preferred_batch_sizes: list[int]

    def where(self, *rest: str | int) -> PathKey:
        return ("models", self.index, "optimize", *rest)


@dataclass
class Arrays:
    """An .npz file's arrays (by name) and its sha256, which keys the cache."""

    path: Path
    arrays: dict[str, np.ndarray]
    sha256: str

    def inputs(self, tensors: list[Tensor]) -> dict[str, np.ndarray]:
        return {t.name: self.arrays[t.name] for t in tensors}

    def rows(self) -> int:
        return next(iter(self.arrays.values())).shape[0] if self.arrays else 0


def _resolve(loaded: LoadedSpec, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else (loaded.base_dir / p).resolve()


def resolve_targets(loaded: LoadedSpec, names: list[str] | None = None) -> list[ModelTarget]:
    """Every model with `optimize:` (or the ones named), checked: file, tensors, variants and both .npz files.
    Raises SpecError listing every problem."""
    problems: list[Problem] = []
    targets: list[ModelTarget] = []
    known = {m.name for m in loaded.spec.models}
    for name in names or []:
        if name not in known:
            raise SpecError(
                [loaded.problem(("models",), f"no model named '{name}' (models: {', '.join(sorted(known))})")]
            )
    for i, raw in enumerate(loaded.spec.models):
        if raw.optimize is None or (names and raw.name not in names):
            continue
        t = _target(loaded, i, effective(loaded, raw), problems)
        if t is not None:
            targets.append(t)
    if names:
        missing = [n for n in names if not any(t.name == n for t in targets)]
        for n in missing:
            i = next(j for j, m in enumerate(loaded.spec.models) if m.name == n)
            if loaded.spec.models[i].optimize is None:
                problems.append(loaded.problem(("models", i), f"model '{n}' has no `optimize:` section"))
    if not targets and not problems:
        problems.append(loaded.problem(("models",), "no model has an `optimize:` section"))
    if problems:
        raise SpecError(problems)
    return targets


def _target(loaded: LoadedSpec, i: int, m: ModelSpec, problems: list[Problem]) -> ModelTarget | None:  # noqa: C901 - one check per field, in order
    opt = m.optimize
    assert opt is not None
    at = ("models", i)

    def add(path: PathKey, message: str) -> None:
        problems.append(loaded.problem(path, message))

    start = len(problems)
    if m.format not in ("onnx", *TORCH_FORMATS):
        add((*at, "format"), f"optimize works on onnx, torchscript and pytorch models, not format {m.format}")
        return None
    if m.versions is not None:
        add((*at, "versions"), "optimize makes the versions itself (ship: all); give one model file in `path:`")
    if not m.path:
        add(at, f"format {m.format} needs `path:` (the model file, relative to the spec)")
        return None
    source = _resolve(loaded, m.path)
    if not source.is_file():
        add((*at, "path"), f"model file '{m.path}' not found (looked for {source})")
        return None
    for v in opt.required:
        if v not in opt.variants and v != "fp32":
            add((*at, "optimize", "required"), f"required variant '{v}' is not in `variants`")
    if "int8_static" in opt.variants and not opt.calibration:
        add((*at, "optimize", "variants"), "int8_static needs `calibration:` (an .npz with arrays by input name)")
    model_file: Path | None = None
    class_name: str | None = None
    if m.format == "pytorch":
        if not m.model_file:
            add(at, "format pytorch needs `model_file:` (the .py file defining the nn.Module class) to export it")
        else:
            rel, class_name = split_model_file(m.model_file)
            model_file = _resolve(loaded, rel)
            if not model_file.is_file():
                add((*at, "model_file"), f"class file '{rel}' not found (looked for {model_file})")
    if m.format == "onnx":
        try:
            sig = read_signature(source)
        except OnnxReadError as exc:
            add((*at, "path"), str(exc))
            return None
        if not sig.batchable():
            add((*at, "path"), "optimize needs a dynamic first (batch) axis on every input and output of the model")
            return None
        inputs = [Tensor(t.name, t.dtype, t.shape[1:]) for t in sig.inputs]
        outputs = [Tensor(t.name, t.dtype, t.shape[1:]) for t in sig.outputs]
    else:
        if not m.inputs or not m.outputs:
            add(at, f"optimize of a {m.format} model needs `inputs:` and `outputs:`: the names and dims of the export")
            return None
        inputs = [Tensor(t.name, t.dtype, tuple(t.dims)) for t in m.inputs]
        outputs = [Tensor(t.name, t.dtype, tuple(t.dims)) for t in m.outputs]
    mbs = m.max_batch_size if m.max_batch_size is not None else 32
    if mbs < 1:
        add((*at, "max_batch_size"), "optimize times the batch sizes the config forms; it needs max_batch_size >= 1")
    if opt.validation.output is not None and opt.validation.output not in {t.name for t in outputs}:
        add(
            (*at, "optimize", "validation", "output"),
            f"'{opt.validation.output}' is no output of the model (outputs: {', '.join(t.name for t in outputs)})",
        )
    for b in opt.batch_sizes or []:
        if b > mbs:
            add((*at, "optimize", "batch_sizes"), f"batch size {b} exceeds max_batch_size {mbs}")
    if opt.tensorrt_profile is not None and opt.tensorrt_profile.max > mbs:
        add(
            (*at, "optimize", "tensorrt_profile", "max"),
            f"profile max {opt.tensorrt_profile.max} exceeds max_batch_size {mbs}",
        )
    preferred = list(m.dynamic_batching.preferred_batch_sizes) if m.dynamic_batching else []
    if len(problems) > start:
        return None
    return ModelTarget(
        index=i, name=m.name, format=m.format, source=source, model_file=model_file, class_name=class_name, spec=m,
        options=opt, max_batch_size=mbs, inputs=inputs, outputs=outputs, preferred_batch_sizes=preferred,
    )  # fmt: skip


def batch_sizes(t: ModelTarget) -> list[int]:
    """The batch sizes the config forms: 1 (a lone request), the preferred sizes, and max_batch_size."""
    if t.options.batch_sizes:
        return sorted(set(t.options.batch_sizes))
    return sorted({1, *[b for b in t.preferred_batch_sizes if b <= t.max_batch_size], t.max_batch_size})


def _fits(dims: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    return len(dims) == len(shape) and all(d in (-1, s) for d, s in zip(dims, shape, strict=True))


def load_arrays(
    loaded: LoadedSpec, t: ModelTarget, rel: str, where: PathKey, *, labels: str | None = None
) -> tuple[Arrays | None, list[Problem]]:
    """Read an .npz and check it against the model's inputs (names, dtype, dims, one row count) and, where named,
    the labels array (integers, one per row)."""
    path = _resolve(loaded, rel)
    problems: list[Problem] = []

    def add(message: str) -> None:
        problems.append(loaded.problem(where, message))

    if not path.is_file():
        add(f"file '{rel}' not found (looked for {path})")
        return None, problems
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        add(f"'{rel}' is not a readable .npz of arrays (np.savez, no pickles): {exc}")
        return None, problems
    names = {x.name for x in t.inputs}
    extra = sorted(set(arrays) - names - ({labels} if labels else set()))
    if extra:
        add(f"'{rel}' has arrays that are no model input: {', '.join(extra)} (inputs: {', '.join(sorted(names))})")
    rows: dict[str, int] = {}
    for x in t.inputs:
        a = arrays.get(x.name)
        if a is None:
            add(f"'{rel}' has no array for input '{x.name}' (arrays: {', '.join(sorted(arrays)) or 'none'})")
            continue
        want: np.dtype[Any] = np.dtype(numpy_dtype(x.dtype))
        if a.dtype != want:
            add(f"'{rel}' array '{x.name}' is {a.dtype}; the model's input is {x.dtype} ({want})")
        if a.ndim < 1 or not _fits(x.dims, tuple(a.shape[1:])):
            add(
                f"'{rel}' array '{x.name}' has shape {list(a.shape)}; the input is [batch, {', '.join(map(str, x.dims))}]"
            )
        elif a.shape[0] < 1:
            add(f"'{rel}' array '{x.name}' has no rows")
        else:
            rows[x.name] = a.shape[0]
    if len(set(rows.values())) > 1:
        add(f"'{rel}' arrays have different row counts: {', '.join(f'{k} {v}' for k, v in sorted(rows.items()))}")
    if labels is not None:
        lab = arrays.get(labels)
        if lab is None:
            problems.append(
                loaded.problem(
                    (*where[:-1], "labels"),
                    f"'{rel}' has no labels array '{labels}' (arrays: {', '.join(sorted(arrays))})",
                )
            )
        elif lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer):
            problems.append(
                loaded.problem(
                    (*where[:-1], "labels"),
                    f"labels '{labels}' must be one integer class per row, got {lab.dtype} {list(lab.shape)}",
                )
            )
        elif rows and lab.shape[0] != next(iter(rows.values())):
            problems.append(
                loaded.problem(
                    (*where[:-1], "labels"),
                    f"labels '{labels}' has {lab.shape[0]} rows; the inputs in '{rel}' have {next(iter(rows.values()))}",
                )
            )
    if problems:
        return None, problems
    return Arrays(path, arrays, hashlib.sha256(path.read_bytes()).hexdigest()), []


def load_data(loaded: LoadedSpec, targets: list[ModelTarget]) -> dict[str, tuple[Arrays, Arrays | None]]:
    """Validation (and calibration) arrays of every target, or SpecError with every problem in them."""
    problems: list[Problem] = []
    out: dict[str, tuple[Arrays, Arrays | None]] = {}
    for t in targets:
        v = t.options.validation
        val, p1 = load_arrays(loaded, t, v.data, t.where("validation", "data"), labels=v.labels)
        cal: Arrays | None = None
        p2: list[Problem] = []
        if t.options.calibration and "int8_static" in t.options.variants:
            cal, p2 = load_arrays(loaded, t, t.options.calibration, t.where("calibration"))
        problems += p1 + p2
        if val is not None and not p2:
            out[t.name] = (val, cal)
    if problems:
        raise SpecError(problems)
    return out
