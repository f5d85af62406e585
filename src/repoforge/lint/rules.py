"""Single-model checks: Triton 2.51's load-time rules for one config.pbtxt and its folder.

The rules follow Triton core (``model_config_utils.cc``: ValidateModelConfig, ValidateIOShape,
ValidateBatchIO, ValidateInstanceGroup, ValidateEnsembleSchedulingConfig, AutoCompleteBackendFields;
``model_repository_manager.cc``: version selection and the folder-name rule; ``model.cc``: label
files) and what the real server was seen to refuse. Each is an *error* only where Triton refuses to
load the model; things Triton accepts but that are almost certainly mistakes are *warnings*.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from repoforge.graph import find_cycle
from repoforge.runtime.names import USER_MODEL_FILE
from repoforge.triton.names import (
    BACKEND_PLATFORMS,
    DEFAULT_FILES,
    ENSEMBLE,
    KNOWN_PLATFORMS,
    PY_FILE,
    STANDARD_BACKENDS,
)
from repoforge.triton.onnx_io import OnnxReadError, read_signature

from .findings import Finding, Severity
from .locate import Key, Positions, format_path, lookup
from .locate import Path as FieldPath

# --------------------------------------------------------------------------------------------
# Names Triton knows (constants.h)
# --------------------------------------------------------------------------------------------
# ENSEMBLE, PY_FILE, BACKEND_PLATFORMS, PLATFORM_BACKEND, KNOWN_PLATFORMS, DEFAULT_FILES, STANDARD_BACKENDS:
# repoforge.triton.names, imported above
#: Sub-folders of a model folder that are not versions (kWarmupDataFolder, kInitialStateFolder).
NON_VERSION_DIRS = frozenset(["warmup", "initial_state"])
CORRID_TYPES = (mc.TYPE_UINT64, mc.TYPE_INT64, mc.TYPE_UINT32, mc.TYPE_INT32, mc.TYPE_STRING)

_CTL = mc.ModelSequenceBatching.Control
_IG = mc.ModelInstanceGroup
_STOLL = re.compile(r"^[ \t\n\v\f\r]*[+-]?\d+")


def dtype_name(value: int) -> str:
    try:
        return mc.DataType.Name(value)
    except ValueError:
        return str(value)


def dims_str(dims: object) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# Collecting findings
# --------------------------------------------------------------------------------------------
@dataclass
class Sink:
    """Findings of one model, with the positions of its config text.

    The same rules also check the config a spec builds (repoforge.plan): there ``words`` renders Triton's enum
    names as the spec writes them (KIND_CPU -> cpu), ``paths`` keeps each finding's config path for the spec-path
    map, and ``ignored_settings`` marks the warnings about settings Triton ignores, which a spec refuses (one that
    writes a setting wants it to work).
    """

    model: str
    file: str
    positions: Positions | None = None
    findings: list[Finding] = field(default_factory=list)
    words: Mapping[str, str] | None = None
    paths: list[FieldPath] = field(default_factory=list)
    ignored_settings: set[int] = field(default_factory=set)

    def add(self, severity: Severity, path: FieldPath, message: str, *, file: str | None = None) -> None:
        line, column = lookup(self.positions, path) if file is None else (None, None)
        self.findings.append(Finding(severity, self.model, format_path(path), message, file or self.file, line, column))
        self.paths.append(path)

    def error(self, path: FieldPath, message: str, *, file: str | None = None) -> None:
        self.add("error", path, message, file=file)

    def warning(self, path: FieldPath, message: str, *, file: str | None = None) -> None:
        self.add("warning", path, message, file=file)

    def ignored(self, path: FieldPath, message: str) -> None:
        """A setting Triton loads but ignores (or half-applies): a warning on a repository, an error in a spec."""
        self.ignored_settings.add(len(self.findings))
        self.warning(path, message)

    def word(self, name: str) -> str:
        """A Triton enum name (DELAY, KIND_GPU, TYPE_FP32) as this dialect writes it."""
        return self.words.get(name, name) if self.words else name

    def kind(self, name: str) -> str:
        """An instance group kind with its field: `kind KIND_GPU` in a config, `kind: gpu` in a spec."""
        return f"kind: {self.word(name)}" if self.words else f"kind {name}"

    def written(self, path: FieldPath) -> bool:
        """Whether the config text writes `path` itself. Protobuf 3 keeps no presence for scalars (an unset
        `count` reads as 0), so only the text tells "count: 0" from no count; without the text: False."""
        return bool(self.positions) and path in self.positions  # type: ignore[operator]

    @property
    def has_errors(self) -> bool:
        return any(f.severity == "error" for f in self.findings)


# --------------------------------------------------------------------------------------------
# Folder layout: versions, and what auto-complete sees
# --------------------------------------------------------------------------------------------
@dataclass
class Layout:
    """What Triton reads from a model folder."""

    subdirs: list[str]  # every sub-folder, sorted byte-wise like std::set<std::string>
    versions: dict[int, str]  # version -> folder name (numeric folders Triton accepts)
    ignored: list[tuple[str, str]]  # (folder, why) folders Triton skips

    @classmethod
    def read(cls, model_dir: Path | None) -> Layout:
        if model_dir is None or not model_dir.is_dir():
            return cls([], {}, [])
        subdirs = sorted((p.name for p in model_dir.iterdir() if p.is_dir()), key=lambda s: s.encode())
        versions: dict[int, str] = {}
        ignored: list[tuple[str, str]] = []
        for name in subdirs:
            if name in NON_VERSION_DIRS:
                continue
            if len(name) > 1 and name.startswith("0"):
                ignored.append((name, "has a leading zero"))
                continue
            m = _STOLL.match(name)
            if not m:
                ignored.append((name, "is not a number"))
                continue
            if m.end() != len(name) or name != name.strip():
                ignored.append((name, f"is read as version {int(m.group())} but that folder is named differently"))
                continue
            versions[int(m.group())] = name
        return cls(subdirs, versions, ignored)

    def first_dir_contents(self, model_dir: Path) -> set[str] | None:
        """Contents of the first sub-folder (the one auto-complete inspects), or None."""
        if not self.subdirs:
            return None
        try:
            return {p.name for p in (model_dir / self.subdirs[0]).iterdir()}
        except OSError:
            return set()


def versions_to_load(cfg: mc.ModelConfig, layout: Layout) -> tuple[list[int], list[int]]:
    """(versions Triton loads, specific versions asked for but absent) - VersionsToLoad()."""
    present = sorted(layout.versions, reverse=True)
    policy = cfg.version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "specific":
        wanted = list(policy.specific.versions)
        return sorted({v for v in wanted if v in layout.versions}), [v for v in wanted if v not in layout.versions]
    if which == "all":
        return sorted(present), []
    n = policy.latest.num_versions if which == "latest" else 1
    return sorted(present[: max(n, 0)]), []


# --------------------------------------------------------------------------------------------
# Auto-complete (AutoCompleteBackendFields): what platform/backend/file Triton settles on
# --------------------------------------------------------------------------------------------
@dataclass
class _FirstVersion:
    """The first version folder auto-complete looks into: its entry names, or None without one."""

    content: set[str] | None
    path: Path | None

    def has(self, name: str) -> bool:
        return self.content is not None and name in self.content

    def is_dir(self, name: str) -> bool:
        return self.path is not None and (self.path / name).is_dir()


def autocomplete(cfg: mc.ModelConfig, folder: str, model_dir: Path | None, layout: Layout) -> str | None:
    """Fill name/platform/backend/default_model_filename in ``cfg`` as Triton would.

    Returns an error message when Triton cannot determine a backend at all (the custom-backend
    fallback needs a folder named ``<name>.<backend>``), else None.
    """
    if not cfg.name:
        cfg.name = folder
    content = layout.first_dir_contents(model_dir) if model_dir is not None else None
    has_version = content is not None
    first = (model_dir / layout.subdirs[0]) if (has_version and model_dir is not None) else None
    version = _FirstVersion(content, first)
    if _settle_tensorflow(cfg, version):
        return None
    # For the rest, the version folder is looked at only when neither platform nor file name is given.
    guess = not cfg.platform and not cfg.default_model_filename
    for settle in (_settle_tensorrt, _settle_onnxruntime, _settle_openvino, _settle_pytorch, _settle_python):
        if settle(cfg, version, guess):
            return None
    return _settle_custom_backend(cfg, folder, version, layout)


def _settle_tensorflow(cfg: mc.ModelConfig, version: _FirstVersion) -> bool:
    """TensorFlow: the platform is required; guessed from the file only when nothing else is given."""
    if not cfg.platform and cfg.backend in ("", "tensorflow"):
        if cfg.default_model_filename == "model.savedmodel":
            cfg.platform = "tensorflow_savedmodel"
        elif cfg.default_model_filename == "model.graphdef":
            cfg.platform = "tensorflow_graphdef"
        elif not cfg.default_model_filename and version.content is not None:
            if version.has("model.savedmodel") and version.is_dir("model.savedmodel"):
                cfg.platform = "tensorflow_savedmodel"
            if version.has("model.graphdef") and not version.is_dir("model.graphdef"):
                cfg.platform = "tensorflow_graphdef"
    if cfg.platform in ("tensorflow_savedmodel", "tensorflow_graphdef"):
        cfg.backend = cfg.backend or "tensorflow"
        cfg.default_model_filename = cfg.default_model_filename or DEFAULT_FILES[cfg.platform]
        return True
    return False


def _settle_tensorrt(cfg: mc.ModelConfig, version: _FirstVersion, guess: bool) -> bool:
    """TensorRT, from the platform, the file name or (guessing) a model.plan file."""
    if not cfg.backend and (
        cfg.platform == "tensorrt_plan"
        or cfg.default_model_filename == "model.plan"
        or (guess and version.has("model.plan") and not version.is_dir("model.plan"))
    ):
        cfg.backend = "tensorrt"
    if cfg.backend == "tensorrt":
        cfg.platform = cfg.platform or "tensorrt_plan"
        cfg.default_model_filename = cfg.default_model_filename or "model.plan"
        return True
    return False


def _settle_onnxruntime(cfg: mc.ModelConfig, version: _FirstVersion, guess: bool) -> bool:
    """ONNX Runtime (model.onnx may be a folder)."""
    if not cfg.backend and (
        cfg.platform == "onnxruntime_onnx"
        or cfg.default_model_filename == "model.onnx"
        or (guess and version.has("model.onnx"))
    ):
        cfg.backend = "onnxruntime"
    if cfg.backend == "onnxruntime":
        cfg.platform = cfg.platform or "onnxruntime_onnx"
        cfg.default_model_filename = cfg.default_model_filename or "model.onnx"
        return True
    return False


def _settle_openvino(cfg: mc.ModelConfig, version: _FirstVersion, guess: bool) -> bool:
    """OpenVINO, which has no platform: from the file name or a model.xml."""
    if not cfg.backend and (cfg.default_model_filename == "model.xml" or (guess and version.has("model.xml"))):
        cfg.backend = "openvino"
    if cfg.backend == "openvino":
        cfg.default_model_filename = cfg.default_model_filename or "model.xml"
        return True
    return False


def _settle_pytorch(cfg: mc.ModelConfig, version: _FirstVersion, guess: bool) -> bool:
    """PyTorch (libtorch), from the platform, the file name or a model.pt file."""
    if not cfg.backend:
        if cfg.platform == "pytorch_libtorch" or cfg.default_model_filename == "model.pt":
            cfg.backend = "pytorch"
        elif guess and version.has("model.pt") and not version.is_dir("model.pt"):
            cfg.backend = "pytorch"
            cfg.platform = "pytorch_libtorch"
    if cfg.backend == "pytorch":
        cfg.platform = cfg.platform or "pytorch_libtorch"
        cfg.default_model_filename = cfg.default_model_filename or "model.pt"
        return True
    return False


def _settle_python(cfg: mc.ModelConfig, version: _FirstVersion, guess: bool) -> bool:
    """Python, which has no platform: from the file name or a model.py."""
    if not cfg.backend and (cfg.default_model_filename == PY_FILE or (guess and version.has(PY_FILE))):
        cfg.backend = "python"
    if cfg.backend == "python":
        cfg.default_model_filename = cfg.default_model_filename or PY_FILE
        return True
    return False


def _settle_custom_backend(cfg: mc.ModelConfig, folder: str, version: _FirstVersion, layout: Layout) -> str | None:
    """Custom backend, only when nothing at all is given: the folder must be "<name>.<backend>"."""
    if not cfg.backend and not cfg.platform and not cfg.default_model_filename:
        if "." not in folder:
            content = version.content
            found = ", ".join(sorted(content)) if content else "nothing"
            where = (
                f"version folder '{layout.subdirs[0]}' holds {found}"
                if content is not None
                else "there is no version folder"
            )
            return (
                f"Triton cannot tell which backend serves this model: the config sets neither backend nor platform, "
                f"{where}, and the folder is not named '<model>.<backend>'. Set backend: \"python\" (or "
                f'"onnxruntime", ...) or add the model file (model.py, model.onnx, model.plan, model.pt) to the '
                f"version folder"
            )
        backend = folder.split(".", 1)[1]
        cfg.backend = backend
        cfg.default_model_filename = f"model.{backend}"
    return None


# --------------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------------
@dataclass
class ConfigContext:
    """Facts a check may use besides the config itself."""

    folder: str
    model_dir: Path | None = None
    known_backends: frozenset[str] | None = None
    #: GPUs on the target server: None = unknown (GPU problems are warnings), 0 = CPU-only.
    gpu_count: int | None = None


def _element_count(dims: list[int]) -> int:
    """GetElementCount: -1 with any wildcard, 0 for no dims."""
    count = 0
    for i, d in enumerate(dims):
        if d == -1:
            return -1
        count = d if i == 0 else count * d
    return count


def _chunks(dims: list[int]) -> list[int]:
    out, cur = [], 1
    for d in dims:
        if d == -1:
            out.append(cur)
            cur = 1
        else:
            cur *= d
    out.append(cur)
    return out


_AUTO_COMPLETE = re.compile(r"^\s*def\s+auto_complete_config\s*\(", re.MULTILINE)


def fills_own_config(cfg: mc.ModelConfig, model_dir: Path | None, layout: Layout) -> bool:
    """Whether a python model's file (in a version Triton loads) defines `auto_complete_config`: Triton calls it at
    load time, and it may add inputs and outputs or fill the data_type and dims the config leaves out."""
    if cfg.backend != "python" or model_dir is None:
        return False
    filename = cfg.default_model_filename or PY_FILE
    for v in versions_to_load(cfg, layout)[0]:
        path = model_dir / layout.versions[v] / filename
        user = path.parent / USER_MODEL_FILE  # a repoforge build's user model, behind its error-counting model.py
        try:
            if _AUTO_COMPLETE.search(
                (user if filename == PY_FILE and user.is_file() else path).read_text(encoding="utf-8", errors="replace")
            ):
                return True
        except OSError:
            continue
    return False


def check_io(sink: Sink, cfg: mc.ModelConfig, *, auto_completed: bool = False) -> None:
    """ValidateModelInput / ValidateModelOutput / ValidateIOShape, plus duplicate names (warning).

    With ``auto_completed`` (a python model whose auto_complete_config runs at load), a missing data_type or
    dims is the model's to fill: a warning, since only the server can tell whether it does."""
    mbs = cfg.max_batch_size
    trt = cfg.platform == "tensorrt_plan"
    for kind, tensors in (("input", cfg.input), ("output", cfg.output)):
        seen: dict[str, int] = {}
        for i, io in enumerate(tensors):
            base: FieldPath = (kind, i)
            label = f"model {kind} '{io.name}'" if io.name else f"model {kind} #{i}"
            if not io.name:
                sink.error((*base,), f"{label} has no name; every {kind} must specify 'name'")
                continue
            if io.name in seen:
                sink.ignored(
                    (*base, "name"),
                    f"{kind} '{io.name}' is declared twice; Triton keeps only one of them - rename or remove the "
                    f"duplicate",
                )
            seen.setdefault(io.name, i)
            missing = [
                f for f, unset in (("data_type", io.data_type == mc.TYPE_INVALID), ("dims", len(io.dims) == 0)) if unset
            ]
            if missing and auto_completed:
                sink.warning(
                    (*base, missing[0]),
                    f"{label} leaves {' and '.join(missing)} to the model: its auto_complete_config must fill "
                    f"{'them' if len(missing) > 1 else 'it'} at load time (Triton refuses the model otherwise; "
                    f"`repoforge validate` proves it)",
                )
                missing = []
            if "data_type" in missing:
                sink.error((*base, "data_type"), f"{label} must specify 'data_type' (e.g. data_type: TYPE_FP32)")
            if "dims" in missing:
                sink.error(
                    (*base, "dims"),
                    f"{label} must specify 'dims' (the shape without the batch dimension; use [ 1 ] for a scalar "
                    f"per batch item, -1 for a variable-size dimension)",
                )
            if io.HasField("reshape") and len(io.reshape.shape) == 0 and mbs == 0:
                sink.error(
                    (*base, "reshape"),
                    f"{label} cannot have an empty reshape in a non-batching model (max_batch_size 0): scalar "
                    f"tensors are not supported; remove the reshape or give it a shape",
                )
            bad_dims = [d for d in io.dims if d < 1 and d != -1]
            if bad_dims:
                sink.error(
                    (*base, "dims"),
                    f"{label} dims {dims_str(io.dims)}: every dimension must be an integer >= 1, or -1 for a "
                    f"variable-size dimension (0 and values below -1 are refused)",
                )
            if io.HasField("reshape"):
                shape = list(io.reshape.shape)
                bad_shape = [d for d in shape if d < 1 and d != -1]
                if bad_shape:
                    sink.error(
                        (*base, "reshape"),
                        f"{label} reshape {dims_str(shape)}: reshape dimensions must be integers >= 1, or -1 for a "
                        f"variable-size dimension",
                    )
                elif not bad_dims and len(io.dims):
                    _check_reshape(sink, base, label, list(io.dims), shape)
            if (
                kind == "input"
                and io.format in (mc.ModelInput.FORMAT_NHWC, mc.ModelInput.FORMAT_NCHW)
                and len(io.dims) != 3
            ):
                sink.error(
                    (*base, "format"),
                    f"format {sink.word(mc.ModelInput.Format.Name(io.format))} needs exactly 3 dims (channels, height, "
                    f"width in some order), got {dims_str(io.dims)}; fix the dims or drop the format",
                )
            if io.is_shape_tensor and not trt:
                sink.error(
                    (*base, "is_shape_tensor"),
                    f"{label} sets is_shape_tensor, but shape tensors are only supported for the TensorRT platform "
                    f"(tensorrt_plan); remove it",
                )
            if io.is_non_linear_format_io:
                if not trt:
                    sink.error(
                        (*base, "is_non_linear_format_io"),
                        f"{label} sets is_non_linear_format_io, which is only supported for the TensorRT platform; "
                        f"remove it",
                    )
                elif len(io.dims) != 3:
                    sink.error((*base, "is_non_linear_format_io"), f"non-linear format {label} requires 3 dims")


def _check_reshape(sink: Sink, base: FieldPath, label: str, dims: list[int], shape: list[int]) -> None:
    dims_n, shape_n = _element_count(dims), _element_count(shape)
    what = f"{label} dims {dims_str(dims)} and reshape {dims_str(shape)}"
    if dims_n != shape_n and (shape_n != 0 or dims_n != 1):
        sink.error(
            (*base, "reshape"),
            f"{what} hold a different number of elements; a reshape must keep the element count (an empty reshape "
            f"needs dims with exactly one element)",
        )
        return
    if dims_n == -1:
        a, b = _chunks(dims), _chunks(shape)
        if len(a) != len(b):
            sink.error(
                (*base, "reshape"),
                f"{what} have a different number of variable-size (-1) dimensions; both need the same number of -1s",
            )
        elif a != b:
            sink.error(
                (*base, "reshape"),
                f"{what} do not agree: the fixed dimensions between the -1s must hold the same number of elements "
                f"(dims groups {a} vs reshape groups {b})",
            )


def check_batch_io(sink: Sink, cfg: mc.ModelConfig) -> None:
    """ValidateBatchIO: one source per batch input/output, known names, INT32/FP32 batch inputs."""
    inputs = {io.name for io in cfg.input}
    outputs = {io.name for io in cfg.output}
    io_known = bool(inputs or outputs)  # else the backend auto-completes them from the model
    for i, bi in enumerate(cfg.batch_input):
        base: FieldPath = ("batch_input", i)
        kind = mc.BatchInput.Kind.Name(bi.kind)
        if len(bi.source_input) != 1:
            sink.error(
                (*base, "source_input"),
                f"batch input kind {kind} expects exactly 1 source_input, got {len(bi.source_input)}",
            )
        if bi.data_type not in (mc.TYPE_INT32, mc.TYPE_FP32):
            sink.error(
                (*base, "data_type"),
                f"batch input data_type is {dtype_name(bi.data_type)}; it must be TYPE_INT32 or TYPE_FP32",
            )
        for src in bi.source_input:
            if io_known and src not in inputs:
                sink.error(
                    (*base, "source_input"),
                    f"source input '{src}' is not an input of this model (inputs: {_names(inputs)})",
                )
        if not bi.target_name:
            sink.warning((*base, "target_name"), "batch input has no target_name; the backend receives nothing")
        for tgt in bi.target_name:
            if tgt in inputs:
                sink.warning(
                    (*base, "target_name"),
                    f"batch input target_name '{tgt}' is also a regular input; the backend cannot tell them apart",
                )
    for i, bo in enumerate(cfg.batch_output):
        base = ("batch_output", i)
        if len(bo.source_input) != 1:
            sink.error(
                (*base, "source_input"),
                f"batch output kind {mc.BatchOutput.Kind.Name(bo.kind)} expects exactly 1 source_input, got "
                f"{len(bo.source_input)}",
            )
        for src in bo.source_input:
            if io_known and src not in inputs:
                sink.error(
                    (*base, "source_input"),
                    f"batch output source_input '{src}' is not an input of the model (inputs: {_names(inputs)})",
                )
        seen: set[str] = set()
        for tgt in bo.target_name:
            if io_known and tgt not in outputs:
                sink.error(
                    (*base, "target_name"),
                    f"batch output target_name '{tgt}' is not an output of the model (outputs: {_names(outputs)})",
                )
            if tgt in seen:
                sink.error((*base, "target_name"), f"batch output target_name '{tgt}' can only be listed once")
            seen.add(tgt)


def _names(names: set[str] | list[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def check_dynamic_batching(sink: Sink, cfg: mc.ModelConfig) -> None:
    db = cfg.dynamic_batching
    base: FieldPath = ("dynamic_batching",)
    mbs = cfg.max_batch_size
    for j, size in enumerate(db.preferred_batch_size):
        path = (*base, "preferred_batch_size", j)
        if size <= 0:
            sink.error(path, f"preferred batch size {size} must be positive")
        elif size > mbs:
            sink.error(path, f"{size} exceeds max_batch_size {mbs}; lower it or raise max_batch_size")
    if mbs == 0:
        sink.ignored(
            base,
            "dynamic batching needs max_batch_size > 0: with max_batch_size 0 the model does not batch and "
            "dynamic_batching has no effect; set max_batch_size > 0 or remove dynamic_batching",
        )
    levels = db.priority_levels
    if levels:
        if db.default_priority_level == 0 or db.default_priority_level > levels:
            sink.error(
                (*base, "default_priority_level") if db.default_priority_level else (*base, "priority_levels"),
                f"default_priority_level must be between 1 and priority_levels ({levels}), got "
                f"{db.default_priority_level}",
            )
        for key in db.priority_queue_policy:
            if key == 0 or key > levels:
                sink.error(
                    (*base, "priority_queue_policy", Key(str(key))), f"priority level {key} is outside 1..{levels}"
                )
    else:
        for name, set_ in (
            ("default_priority_level", bool(db.default_priority_level)),
            ("priority_queue_policy", bool(len(db.priority_queue_policy))),
        ):
            if set_:
                sink.ignored(
                    (*base, name),
                    f"{name} needs priority_levels > 0; Triton ignores it without them - set priority_levels",
                )
    if db.preserve_ordering:
        if levels > 1:
            sink.error(
                (*base, "preserve_ordering"),
                f"Triton allows preserve_ordering with one priority level only (priority_levels is {levels})",
            )
        policies = [((*base, "default_queue_policy"), db.default_queue_policy)]
        policies += [((*base, "priority_queue_policy", Key(str(k))), v) for k, v in db.priority_queue_policy.items()]
        for path, pol in policies:
            if pol.default_timeout_microseconds != 0 and pol.timeout_action == mc.ModelQueuePolicy.DELAY:
                sink.error(
                    (*path, "timeout_action"),
                    f"timeout_action {sink.word('DELAY')} cannot be combined with preserve_ordering; use "
                    f"{sink.word('REJECT')} or drop preserve_ordering",
                )


def check_response_cache(sink: Sink, cfg: mc.ModelConfig) -> None:
    """Triton refuses the response cache on decoupled and on sequence models."""
    if not cfg.response_cache.enable:
        return
    if cfg.model_transaction_policy.decoupled:
        sink.error(
            ("response_cache",),
            "Triton's response cache does not support decoupled (streaming) models; disable response_cache",
        )
    if cfg.HasField("sequence_batching"):
        sink.error(
            ("response_cache",),
            "the response cache does not support models with sequence_batching; disable response_cache",
        )


def check_sequence_batching(sink: Sink, cfg: mc.ModelConfig) -> None:
    """ValidateSequenceBatching: named control inputs, each control kind once and well-formed, the strategy's limits."""
    sb = cfg.sequence_batching
    base: FieldPath = ("sequence_batching",)
    _check_control_names(sink, base, sb)
    _check_control_kinds(sink, base, sb)
    _check_sequence_strategy(sink, base, sb, cfg.max_batch_size)


def _check_control_names(sink: Sink, base: FieldPath, sb: mc.ModelSequenceBatching) -> None:
    """Every control input names its tensor, and no tensor carries two control inputs."""
    for i, ci in enumerate(sb.control_input):
        if not ci.name:
            sink.error((*base, "control_input", i), "every sequence_batching control_input needs a name")
    seen_names: dict[str, int] = {}
    for i, ci in enumerate(sb.control_input):
        if ci.name and ci.name in seen_names:
            sink.error(
                (*base, "control_input", i, "name"),
                f"control input '{ci.name}' is declared twice; give each control its own tensor",
            )
        seen_names.setdefault(ci.name, i)


def _check_control_kinds(sink: Sink, base: FieldPath, sb: mc.ModelSequenceBatching) -> None:
    """Each control kind at most once across all control inputs; the first of each is checked for its values."""
    kinds = [
        _CTL.CONTROL_SEQUENCE_START,
        _CTL.CONTROL_SEQUENCE_END,
        _CTL.CONTROL_SEQUENCE_READY,
        _CTL.CONTROL_SEQUENCE_CORRID,
    ]
    for kind in kinds:
        kname = _CTL.Kind.Name(kind)
        first: int | None = None
        for i, ci in enumerate(sb.control_input):
            for j, c in enumerate(ci.control):
                if c.kind != kind:
                    continue
                path = (*base, "control_input", i, "control", j)
                if first is not None:
                    sink.error(
                        path,
                        f"sequence_batching specifies {sink.word(kname)} twice (control input {first} and {i}); each "
                        f"control kind may appear once",
                    )
                    continue
                first = i
                if kind == _CTL.CONTROL_SEQUENCE_CORRID:
                    _check_corrid_control(sink, path, kname, c)
                else:
                    _check_false_true_control(sink, path, kname, c)


def _check_corrid_control(sink: Sink, path: FieldPath, kname: str, c: mc.ModelSequenceBatching.Control) -> None:
    """A correlation id control has a data type only, one Triton accepts for ids."""
    if len(c.int32_false_true) or len(c.fp32_false_true) or len(c.bool_false_true):
        sink.error(
            path,
            f"{kname} must not set int32_false_true, fp32_false_true or bool_false_true; give it a data_type only",
        )
    if c.data_type not in CORRID_TYPES:
        allowed = [sink.word(mc.DataType.Name(t)) for t in CORRID_TYPES]
        sink.error(
            (*path, "data_type"),
            f"a correlation id ({sink.word(kname)}) must be {', '.join(allowed[:-1])} or "
            f"{allowed[-1]}, got {sink.word(dtype_name(c.data_type))}",
        )


def _check_false_true_control(sink: Sink, path: FieldPath, kname: str, c: mc.ModelSequenceBatching.Control) -> None:
    """A start/end/ready control gives exactly one (false, true) pair, of one type."""
    n_int, n_fp, n_bool = len(c.int32_false_true), len(c.fp32_false_true), len(c.bool_false_true)
    given = [
        n for n, cnt in (("int32_false_true", n_int), ("fp32_false_true", n_fp), ("bool_false_true", n_bool)) if cnt
    ]
    if not given:
        sink.error(
            path,
            f"{kname} must specify one of int32_false_true, fp32_false_true or bool_false_true (e.g. "
            f"int32_false_true: [ 0, 1 ])",
        )
    elif len(given) > 1:
        sink.error(path, f"{kname} specifies more than one of {', '.join(given)}; keep exactly one")
    else:
        count = {"int32_false_true": n_int, "fp32_false_true": n_fp, "bool_false_true": n_bool}[given[0]]
        if count != 2:
            sink.error(
                (*path, given[0]),
                f"{kname} {given[0]} must have exactly 2 entries (false value, true value), got {count}",
            )


def _check_sequence_strategy(sink: Sink, base: FieldPath, sb: mc.ModelSequenceBatching, max_batch_size: int) -> None:
    """The oldest strategy's preferred sizes fit the batch; the direct strategy's slot utilization is a fraction."""
    strategy = sb.WhichOneof("strategy_choice")
    if strategy == "oldest":
        for j, size in enumerate(sb.oldest.preferred_batch_size):
            path = (*base, "oldest", "preferred_batch_size", j)
            if size <= 0:
                sink.error(path, f"preferred batch size {size} must be positive")
            elif size > max_batch_size:
                sink.error(path, f"{size} exceeds max_batch_size {max_batch_size}")
    elif strategy == "direct":
        util = sb.direct.minimum_slot_utilization
        if util < 0.0 or util > 1.0:
            sink.error(
                (*base, "direct", "minimum_slot_utilization"),
                f"sequence_batching direct minimum_slot_utilization {util:g} must be in (0.0, 1.0]",
            )


def check_instance_groups(sink: Sink, cfg: mc.ModelConfig, ctx: ConfigContext) -> None:
    """NormalizeInstanceGroup + ValidateInstanceGroup, with the server's GPU count when known."""
    for i, g in enumerate(cfg.instance_group):
        base: FieldPath = ("instance_group", i)
        gname = f"instance_group[{i}]" + (f" '{g.name}'" if g.name else "")
        if g.count < 0 or (g.count == 0 and sink.written((*base, "count"))):  # unset: Triton's default, no mistake
            sink.warning(
                (*base, "count"),
                f"{gname} count is {g.count}; Triton replaces a count below 1 with its default (1, or 2 on CPU for "
                f"onnxruntime/tensorflow) - set the count you want",
            )
        _check_group_kind(sink, base, gname, g, ctx.gpu_count)
        if g.profile:
            if cfg.platform != "tensorrt_plan":
                sink.error(
                    (*base, "profile"),
                    f"{gname} sets profile, which is only supported for TensorRT models; remove it",
                )
            else:
                for j, prof in enumerate(g.profile):
                    if not re.fullmatch(r"\s*\+?\d+.*", prof):
                        sink.error((*base, "profile", j), f"{gname} profile '{prof}' must be a non-negative integer")


def _check_group_kind(sink: Sink, base: FieldPath, gname: str, g: mc.ModelInstanceGroup, gpu_count: int | None) -> None:
    """Kind against gpus and the server's GPUs (KIND_AUTO resolves to KIND_GPU only when every listed
    GPU exists, else to KIND_CPU, which then may not list gpus)."""
    kind = g.kind
    if kind == _IG.KIND_AUTO:
        if gpu_count is None:
            if g.gpus:
                sink.warning(
                    (*base, "gpus"),
                    f"{gname} is KIND_AUTO with gpus {list(g.gpus)}: on a server without those GPUs it becomes "
                    f"KIND_CPU, which refuses a gpus list - use KIND_GPU, or drop gpus",
                )
            return
        kind = _IG.KIND_GPU if gpu_count and all(0 <= d < gpu_count for d in g.gpus) else _IG.KIND_CPU
        if kind == _IG.KIND_CPU and g.gpus:
            sink.error(
                (*base, "gpus"),
                f"{gname} is KIND_AUTO with gpus {list(g.gpus)}, but the server has {gpu_count or 'no'} GPU(s), so "
                f"it becomes KIND_CPU, which may not list gpus - drop gpus",
            )
            return
    if kind in (_IG.KIND_MODEL, _IG.KIND_CPU) and g.gpus:
        sink.error(
            (*base, "gpus"),
            f"gpus are only valid with {sink.kind('KIND_GPU')} (this group is {sink.kind(_IG.Kind.Name(kind))}); "
            f"remove gpus or set {sink.kind('KIND_GPU')}",
        )
    elif kind == _IG.KIND_GPU:
        if gpu_count is None:
            sink.warning(
                (*base, "kind"),
                f"{gname} is KIND_GPU: a CPU-only server refuses to load this model - use KIND_CPU (or KIND_AUTO) "
                f"to serve it without a GPU",
            )
        elif gpu_count == 0:
            sink.error(
                (*base, "kind"), f"{gname} has kind KIND_GPU but the server has no GPUs; use KIND_CPU (or KIND_AUTO)"
            )
        else:
            bad = [d for d in g.gpus if not 0 <= d < gpu_count]
            if bad:
                sink.error(
                    (*base, "gpus"), f"{gname} lists gpu id(s) {bad}, but the server has GPUs 0..{gpu_count - 1}"
                )


def check_warmup(sink: Sink, cfg: mc.ModelConfig) -> None:
    inputs = {io.name: io for io in cfg.input}
    limit = max(cfg.max_batch_size, 1)
    for i, w in enumerate(cfg.model_warmup):
        base: FieldPath = ("model_warmup", i)
        wname = f"model_warmup[{i}]" + (f" '{w.name}'" if w.name else "")
        if w.batch_size > limit:
            sink.error(
                (*base, "batch_size"),
                f"warmup batch size {w.batch_size} exceeds max_batch_size {cfg.max_batch_size}"
                + ("" if cfg.max_batch_size else " (a model that does not batch is warmed up with batch size 1)"),
            )
        elif w.batch_size < 1:
            sink.warning((*base, "batch_size"), f"{wname} batch_size {w.batch_size} should be >= 1")
        if not cfg.input and not cfg.output:
            continue  # inputs are auto-completed by the backend: unknown here
        for key, value in w.inputs.items():
            path = (*base, "inputs", Key(key))
            io = inputs.get(key)
            if io is None:
                sink.error(path, f"{wname} input '{key}' is not an input of the model (inputs: {_names(list(inputs))})")
                continue
            if value.data_type != io.data_type:
                sink.error(
                    (*path,),
                    f"{wname} input '{key}' data_type is {dtype_name(value.data_type)} but the model input is "
                    f"{dtype_name(io.data_type)}",
                )
            if value.WhichOneof("input_data_type") is None:
                sink.error(path, f"{wname} input '{key}' needs one of zero_data, random_data or input_data_file")
        missing = [n for n, io in inputs.items() if not io.optional and n not in w.inputs]
        if missing:
            sink.error(
                (*base, "inputs"),
                f"{wname} does not provide required input(s) {', '.join(missing)}; warmup requests need every "
                f"non-optional input",
            )


def check_label_files(sink: Sink, cfg: mc.ModelConfig, model_dir: Path | None) -> None:
    if model_dir is None:
        return
    root = model_dir.resolve()
    for i, io in enumerate(cfg.output):
        if not io.label_filename:
            continue
        path = (model_dir / io.label_filename).resolve()
        field_path: FieldPath = ("output", i, "label_filename")
        if not path.is_file():
            sink.error(
                field_path,
                f"output '{io.name}' label_filename '{io.label_filename}' does not exist in the model folder; add the "
                f"file or remove label_filename",
            )
        elif root not in path.parents:
            sink.warning(
                field_path,
                f"output '{io.name}' label_filename '{io.label_filename}' is outside the model folder; Triton 2.51 "
                f"reads it, newer Triton refuses it - move the file into the model folder",
            )


def check_ensemble_config(sink: Sink, cfg: mc.ModelConfig) -> None:
    """ValidateEnsembleSchedulingConfig: the parts that need only this config."""
    is_ensemble = cfg.platform == ENSEMBLE
    has_sched = cfg.HasField("ensemble_scheduling")
    if has_sched and not is_ensemble:
        sink.error(
            ("ensemble_scheduling",),
            f"ensemble_scheduling is set but the platform is '{cfg.platform}'; only platform \"ensemble\" models "
            f"may have ensemble_scheduling",
        )
        return
    if not is_ensemble:
        return
    if not has_sched:
        sink.error(("platform",), 'platform is "ensemble" but there is no ensemble_scheduling; add the steps')
        return
    for fname, what in (
        ("instance_group", "instance_group"),
        ("optimization", "optimization"),
        ("model_warmup", "model_warmup"),
    ):
        present = len(getattr(cfg, fname)) if fname in ("instance_group", "model_warmup") else cfg.HasField(fname)
        if present:
            sink.error((fname,), f"{what} cannot be specified for an ensemble; set it on the step models instead")
    steps = cfg.ensemble_scheduling.step
    if not steps:
        sink.error(("ensemble_scheduling",), "ensemble_scheduling has no step; an ensemble needs at least one")
        return
    check_ensemble_dataflow(sink, cfg)


def check_ensemble_dataflow(sink: Sink, cfg: mc.ModelConfig) -> None:
    """BuildEnsembleGraph + the data-flow part of ValidateEnsembleSchedulingConfig, with clearer messages
    (an explicit cycle check, every problem reported instead of the first)."""
    base: FieldPath = ("ensemble_scheduling", "step")
    steps = cfg.ensemble_scheduling.step
    producers, consumers = _step_tensors(sink, base, steps)
    inputs = [io.name for io in cfg.input]
    outputs = [io.name for io in cfg.output]
    # Step-level cycles (a step needing, transitively, its own output).
    deps = {i: {producers[t] for t in st.input_map.values() if t in producers}
            for i, st in enumerate(cfg.ensemble_scheduling.step)}  # fmt: skip
    cycle = find_cycle(deps)
    if cycle:
        names = " -> ".join(f"{cfg.ensemble_scheduling.step[i].model_name or '?'}" for i in cycle)
        sink.error((*base, cycle[0]), f"the steps form a cycle ({names}); an ensemble must be acyclic")
    ready = _ready_tensors(inputs, steps)
    flow = _Flow(producers, consumers, ready, bool(cycle))
    _check_ensemble_io(sink, inputs, outputs, flow)
    _check_inner_tensors(sink, base, steps, outputs, flow)


@dataclass
class _Flow:
    """Who writes and reads each ensemble tensor, which tensors Triton can compute, and whether steps form a cycle."""

    producers: dict[str, int]  # tensor -> step that writes it
    consumers: dict[str, list[int]]  # tensor -> steps that read it
    ready: set[str]
    cycle: bool

    @property
    def known(self) -> set[str]:
        return set(self.producers) | set(self.consumers)


def _step_tensors(
    sink: Sink, base: FieldPath, steps: Sequence[mc.ModelEnsembling.Step]
) -> tuple[dict[str, int], dict[str, list[int]]]:
    """(producer, consumers) of each tensor, reporting steps without a model or maps and tensors written twice."""
    producers: dict[str, int] = {}
    consumers: dict[str, list[int]] = {}
    for i, st in enumerate(steps):
        if not st.model_name:
            sink.error((*base, i), f"step {i} must specify model_name")
        if not st.input_map:
            sink.error((*base, i), f"step {i} ({st.model_name or '?'}) must specify input_map")
        if not st.output_map:
            sink.error((*base, i), f"step {i} ({st.model_name or '?'}) must specify output_map")
        for key, tensor in st.output_map.items():
            if tensor in producers:
                sink.error(
                    (*base, i, "output_map", Key(key)),
                    f"ensemble tensor '{tensor}' is written more than once (steps {producers[tensor]} and {i}); "
                    f"each tensor can appear in an output_map only once - rename one of them",
                )
            else:
                producers[tensor] = i
        for tensor in st.input_map.values():
            consumers.setdefault(tensor, []).append(i)
    return producers, consumers


def _ready_tensors(inputs: list[str], steps: Sequence[mc.ModelEnsembling.Step]) -> set[str]:
    """Readiness, as Triton computes it: the inputs, then the outputs of every step whose inputs are all ready."""
    ready = set(inputs)
    changed = True
    done: set[int] = set()
    while changed:
        changed = False
        for i, st in enumerate(steps):
            if i in done or not st.input_map:
                continue
            if all(t in ready for t in st.input_map.values()):
                done.add(i)
                new = set(st.output_map.values()) - ready
                if new:
                    ready |= new
                    changed = True
    return ready


def _check_ensemble_io(sink: Sink, inputs: list[str], outputs: list[str], flow: _Flow) -> None:
    """Every ensemble input is read by a step, and every output written by one that can run."""
    known = flow.known
    for j, name in enumerate(inputs):
        if name not in flow.consumers and name not in flow.producers:
            sink.error(
                ("input", j),
                f"ensemble input '{name}' is not used by any step; map it in a step's input_map or remove it",
            )
    for j, name in enumerate(outputs):
        if name not in known:
            sink.error(
                ("output", j),
                f"ensemble output '{name}' is not produced by any step; map a step output to it in an output_map "
                f"or remove it",
            )
        elif name not in flow.ready and not flow.cycle:
            missing = sorted(t for t in known - flow.ready if t not in flow.producers)
            hint = f" (needs {', '.join(repr(t) for t in missing)}, which nothing produces)" if missing else ""
            sink.error(("output", j), f"ensemble output '{name}' is never written{hint}")


def _check_inner_tensors(
    sink: Sink, base: FieldPath, steps: Sequence[mc.ModelEnsembling.Step], outputs: list[str], flow: _Flow
) -> None:
    """Tensors between steps: each one read has a source, and each one written is read (Triton refuses unused ones)."""
    for tensor in sorted(flow.known - set(outputs)):
        if tensor not in flow.ready:
            if tensor not in flow.producers and not flow.cycle:
                i = flow.consumers[tensor][0]
                sink.error(
                    (*base, i, "input_map"),
                    f"ensemble tensor '{tensor}' read by step {i} ({steps[i].model_name}) is "
                    f"neither an ensemble input nor produced by a step",
                )
        elif tensor not in flow.consumers:
            i = flow.producers[tensor]
            sink.error(
                (*base, i, "output_map"),
                f"ensemble tensor '{tensor}' written by step {i} ({steps[i].model_name}) is "
                f"never consumed; Triton refuses unused ensemble tensors - drop that output_map entry or use it",
            )


def check_platform_backend(
    sink: Sink, raw: mc.ModelConfig, cfg: mc.ModelConfig, ctx: ConfigContext, autocomplete_error: str | None
) -> None:
    """Backend/platform after auto-complete (ValidateModelConfig), names that escape, known backends."""
    if autocomplete_error:
        sink.error(("backend",), autocomplete_error)
        return
    for fname in ("backend", "runtime"):
        value = getattr(raw, fname)
        if value and ("/" in value or "\\" in value or ".." in value):
            sink.error(
                (fname,),
                f"{fname} '{value}' contains a path ('/' or '..'), which escapes the backend folder; give a plain "
                f"{'backend name' if fname == 'backend' else 'library file name'}",
            )
    if not cfg.backend:
        if cfg.platform != ENSEMBLE:
            if cfg.platform:
                sink.error(
                    ("platform",),
                    f"unknown platform '{cfg.platform}' and no backend; known platforms are "
                    f"{', '.join(sorted(KNOWN_PLATFORMS))} - or set backend instead",
                )
            else:  # pragma: no cover - autocomplete reports this case
                sink.error(("backend",), "set backend (or platform)")
        return
    if cfg.platform == ENSEMBLE:
        sink.error(
            ("backend",),
            f"an ensemble must have platform \"ensemble\" and an empty backend (got backend '{cfg.backend}'); "
            f"remove the backend",
        )
        return
    expected = BACKEND_PLATFORMS.get(cfg.backend)
    if expected is not None and cfg.platform not in expected:
        sink.error(
            ("platform",),
            f"platform '{cfg.platform}' and backend '{cfg.backend}' do not match (backend '{cfg.backend}' needs "
            f"platform {' or '.join(expected)}); fix one of them or drop platform",
        )
    elif expected is None and raw.platform:
        sink.warning(
            ("platform",),
            f"platform '{raw.platform}' is ignored with backend '{cfg.backend}'; remove the platform line",
        )
    if "/" in cfg.backend or ".." in cfg.backend:
        return
    where: FieldPath = ("backend",) if raw.backend or not raw.platform else ("platform",)
    via = "" if raw.backend or not raw.platform else f" (the backend of platform '{raw.platform}')"
    if ctx.known_backends is not None:
        if cfg.backend not in ctx.known_backends:
            sink.error(
                where,
                f"backend '{cfg.backend}'{via} is not installed on this server (available: "
                f"{_names(list(ctx.known_backends))}); install it or serve the model with one of those",
            )
    elif cfg.backend not in STANDARD_BACKENDS:
        sink.warning(
            where,
            f"backend '{cfg.backend}'{via} is not a standard Triton backend; make sure the server has "
            f"backends/{cfg.backend}/ (pass the server to check)",
        )


def check_versions_and_files(
    sink: Sink, cfg: mc.ModelConfig, ctx: ConfigContext, layout: Layout, *, explicit_filename: bool = False
) -> list[int]:
    """Version folders against version_policy, and the model file of each loaded version."""
    model_dir = ctx.model_dir
    if model_dir is None:
        return []
    folder_file = str(model_dir)
    for name, why in layout.ignored:
        sink.warning(
            (),
            f"folder '{name}' {why}, so Triton ignores it as a version (version folders are plain numbers: 1, 2, ...)",
            file=folder_file,
        )
    if not layout.versions:
        # An ensemble too: Triton 2.51 refuses one without a version folder ("at least one version must be
        # available under the version policy"), which tests/integration/test_lint.py proves on the real server.
        sink.error(
            ("version_policy",) if cfg.HasField("version_policy") else (),
            "no version folder: Triton needs at least one numeric sub-folder (e.g. "
            f"{'an empty 1/ for an ensemble, as NVIDIA examples make with mkdir -p <ensemble>/1' if cfg.platform == ENSEMBLE else '1/ holding the model file'}); "
            "without one it says 'at least one version must be available' and does not load the model",
            file=None if cfg.HasField("version_policy") else folder_file,
        )
        return []
    loaded, absent = versions_to_load(cfg, layout)
    policy_path: FieldPath = ("version_policy",)
    for v in absent:
        if loaded:
            sink.warning(
                (*policy_path, "specific"),
                f"version_policy asks for version {v}, but there is no folder {v}/; Triton skips it and loads "
                f"{', '.join(map(str, loaded))}",
            )
    if not loaded:
        have = ", ".join(str(v) for v in sorted(layout.versions))
        if absent:
            asked = f"version {absent[0]}" if len(absent) == 1 else f"versions {', '.join(map(str, absent))}"
            detail = f"asks for {asked}, but only {have} exist{'s' if len(layout.versions) == 1 else ''}"
        else:
            detail = f"latest num_versions is {cfg.version_policy.latest.num_versions}"
        sink.error(
            policy_path,
            f"no version can be loaded: version_policy {detail}; at least one version must be available - fix the "
            f"policy or add the folder",
        )
        return []
    if cfg.platform == ENSEMBLE or not cfg.backend:
        return loaded
    pairs = BACKEND_PLATFORMS.get(cfg.backend)
    if pairs is not None and cfg.platform not in pairs:
        return loaded  # a platform/backend mismatch is reported already; which file is moot
    filename = cfg.default_model_filename or DEFAULT_FILES.get(cfg.platform) or DEFAULT_FILES.get(cfg.backend)
    if not filename or cfg.backend not in DEFAULT_FILES and cfg.platform not in DEFAULT_FILES:
        return loaded
    if cfg.backend == "python" and cfg.runtime and cfg.runtime != PY_FILE:
        return loaded
    for v in loaded:
        vdir = model_dir / layout.versions[v]
        if not (vdir / filename).exists():
            how = (
                f"default_model_filename is '{filename}'"
                if explicit_filename
                else f"backend '{cfg.backend}' loads '{filename}' by default"
            )
            present = sorted(p.name for p in vdir.iterdir()) if vdir.is_dir() else []
            sink.error(
                ("default_model_filename",) if explicit_filename else ("backend",),
                f"version {v}: {layout.versions[v]}/{filename} is missing ({how}; the folder holds "
                f"{', '.join(present) or 'nothing'}) - add the file or "
                f"{'fix' if explicit_filename else 'set'} default_model_filename",
            )
    return loaded


def lint_model(raw: mc.ModelConfig, sink: Sink, ctx: ConfigContext) -> tuple[mc.ModelConfig, list[int]]:
    """Every single-model check. Returns the auto-completed config and the versions Triton would load."""
    cfg = mc.ModelConfig()
    cfg.CopyFrom(raw)
    if raw.name and raw.name != ctx.folder:
        sink.error(
            ("name",),
            f"name '{raw.name}' does not match its folder '{ctx.folder}'; Triton requires the directory name to "
            f"equal the model name - rename one, or drop the name line",
        )
    layout = Layout.read(ctx.model_dir)
    auto_error = autocomplete(cfg, ctx.folder, ctx.model_dir, layout)
    check_platform_backend(sink, raw, cfg, ctx, auto_error)
    if cfg.max_batch_size < 0:
        sink.error(("max_batch_size",), f"max_batch_size is {cfg.max_batch_size}; it must be >= 0 (0 = no batching)")
    if cfg.HasField("dynamic_batching"):
        check_dynamic_batching(sink, cfg)
    if cfg.HasField("sequence_batching"):
        check_sequence_batching(sink, cfg)
    check_ensemble_config(sink, cfg)
    check_response_cache(sink, cfg)
    check_io(sink, cfg, auto_completed=fills_own_config(cfg, ctx.model_dir, layout))
    check_batch_io(sink, cfg)
    if cfg.platform != ENSEMBLE:
        check_instance_groups(sink, cfg, ctx)
        check_warmup(sink, cfg)
    check_label_files(sink, cfg, ctx.model_dir)
    loaded = check_versions_and_files(sink, cfg, ctx, layout, explicit_filename=bool(raw.default_model_filename))
    if cfg.backend == "onnxruntime" and ctx.model_dir is not None:
        check_onnx_files(sink, cfg, ctx.model_dir, layout, loaded)
    return cfg, loaded


# --------------------------------------------------------------------------------------------
# The model file against the config (onnxruntime backend: ValidateInputs / ValidateOutputs at load)
# --------------------------------------------------------------------------------------------
_SEQUENCE_KINDS = {
    "CONTROL_SEQUENCE_START",
    "CONTROL_SEQUENCE_END",
    "CONTROL_SEQUENCE_READY",
    "CONTROL_SEQUENCE_CORRID",
}


def _onnx_dims_problem(model_shape: tuple[int, ...], dims: list[int], max_batch_size: int) -> str | None:
    """CompareDimsSupported (compare_exact false): with batching the model's first dim must be variable; then the
    ranks match and every fixed model dim equals the config's. A scalar model tensor takes config dims of 1s."""
    shape = list(model_shape)
    if not shape:
        return (
            None if all(d == 1 for d in dims) else f"the model's tensor is a scalar, the config says {dims_str(dims)}"
        )
    if max_batch_size > 0:
        if shape[0] != -1:
            return (
                f"max_batch_size {max_batch_size} needs a variable first dim in the model, which has "
                f"{dims_str(shape)}; set max_batch_size: 0 or export the model with a dynamic batch axis"
            )
        full = [-1, *dims]
        what = f"{dims_str(dims)} (with the batch axis {dims_str(full)})"
    else:
        full = list(dims)
        what = dims_str(dims)
    if len(shape) != len(full) or any(m != -1 and m != c for m, c in zip(shape, full, strict=False)):
        return f"the config says dims {what}, the model has {dims_str(shape)}"
    return None


def check_onnx_files(sink: Sink, cfg: mc.ModelConfig, model_dir: Path, layout: Layout, loaded: list[int]) -> None:
    """Every name, dtype and shape of the config that the ONNX file of a loaded version contradicts, as the
    onnxruntime backend refuses the model at load (Triton stops at the first; lint names them all)."""
    filename = cfg.default_model_filename or "model.onnx"
    reported: set[str] = set()
    for v in loaded:
        path = model_dir / layout.versions[v] / filename
        if not path.is_file():  # a folder (model.onnx/ with external data) is left to the server
            continue
        shown = f"{layout.versions[v]}/{filename}"
        try:
            sig = read_signature(path)
        except OnnxReadError as exc:
            sink.error(("default_model_filename",), f"version {v}: {exc}; Triton cannot load it", file=str(path))
            continue

        def say(field: FieldPath, message: str, *, shown: str = shown) -> None:
            text = f"{message} ({shown}; Triton's onnxruntime backend refuses the model at load)"
            if text not in reported:
                reported.add(text)
                sink.error(field, text)

        model_in = {t.name: t for t in sig.inputs}
        model_out = {t.name: t for t in sig.outputs}
        if cfg.input:  # none: auto-complete fills them from the file
            sb = cfg.sequence_batching
            controls = {c.name for c in sb.control_input for k in c.control if mc.ModelSequenceBatching.Control.Kind.Name(k.kind) in _SEQUENCE_KINDS} if cfg.HasField("sequence_batching") else set()  # fmt: skip
            expected = sum(1 for io in cfg.input if not io.optional) + len(cfg.batch_input) + len(controls)
            expected += len(sb.state) if cfg.HasField("sequence_batching") else 0
            if len(model_in) != expected:
                say(
                    ("input",),
                    f"the config expects {expected} input(s), the model has {len(model_in)}: "
                    f"{', '.join(repr(n) for n in model_in) or 'none'}",
                )
        for kind, tensors, found in (("input", cfg.input, model_in), ("output", cfg.output, model_out)):
            for i, io in enumerate(tensors):
                t = found.get(io.name)
                if t is None:
                    say(
                        (kind, i, "name"),
                        f"{kind} '{io.name}' is not an {kind} of the model; it has "
                        f"{', '.join(repr(n) for n in found) or 'none'}",
                    )
                    continue
                want = f"TYPE_{'STRING' if t.dtype == 'BYTES' else t.dtype}"
                if dtype_name(io.data_type) != want:
                    say(
                        (kind, i, "data_type"),
                        f"{kind} '{io.name}': the config says {dtype_name(io.data_type)}, the model has {want}",
                    )
                dims = list(io.reshape.shape) if io.HasField("reshape") else list(io.dims)
                problem = _onnx_dims_problem(t.shape, dims, cfg.max_batch_size)
                if problem and not (kind == "input" and io.allow_ragged_batch):
                    say((kind, i, "reshape" if io.HasField("reshape") else "dims"), f"{kind} '{io.name}': {problem}")


def defines_auto_complete(source: str) -> bool:
    """Whether a python model's source defines `auto_complete_config` (Triton calls it at load time)."""
    return bool(_AUTO_COMPLETE.search(source))


def check_built_config(sink: Sink, cfg: mc.ModelConfig, ctx: ConfigContext, *, auto_completed: bool = False) -> None:
    """The rules a config built from a spec can break, before any folder exists: repoforge.plan runs these on every
    model it plans (in the spec's words, strictly), so a spec is refused by the same rules lint applies."""
    if cfg.HasField("dynamic_batching"):
        check_dynamic_batching(sink, cfg)
    if cfg.HasField("sequence_batching"):
        check_sequence_batching(sink, cfg)
    check_response_cache(sink, cfg)
    check_io(sink, cfg, auto_completed=auto_completed)
    check_batch_io(sink, cfg)
    if cfg.platform != ENSEMBLE:
        check_instance_groups(sink, cfg, ctx)
        check_warmup(sink, cfg)
