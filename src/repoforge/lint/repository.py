"""`lint_repository`: every model folder of a Triton model repository, and the checks that need
more than one model (ensemble steps against the models they call)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from repoforge.torchserve.layout import looks_like_torchserve_output
from repoforge.triton.reader import model_folders

from .findings import Finding, LintReport
from .locate import Key, positions
from .locate import Path as FieldPath
from .rules import (
    ENSEMBLE,
    ConfigContext,
    Layout,
    Sink,
    autocomplete,
    dims_str,
    dtype_name,
    lint_model,
)

CONFIG = "config.pbtxt"


@dataclass
class ModelEntry:
    """One model folder after the single-model checks."""

    name: str
    path: Path
    sink: Sink
    raw: mc.ModelConfig | None = None  # None: no config, or it does not parse
    config: mc.ModelConfig | None = None  # auto-completed
    versions: list[int] = field(default_factory=list)  # the versions Triton loads (its version policy applied)
    present: list[int] = field(default_factory=list)  # every version folder Triton accepts

    @property
    def ok(self) -> bool:
        return self.config is not None and not self.sink.has_errors


def _frozen(backends: Iterable[str] | None) -> frozenset[str] | None:
    return frozenset(backends) if backends is not None else None


def lint_config(
    cfg: mc.ModelConfig,
    model_dir: Path | None = None,
    *,
    folder: str | None = None,
    known_backends: Iterable[str] | None = None,
    gpu_count: int | None = None,
    file: str | None = None,
    text: str | None = None,
) -> LintReport:
    """Check one config. With ``model_dir`` the folder is checked too (versions, model file, labels).

    ``folder`` defaults to the model_dir's name, else to ``cfg.name``. ``text`` (the pbtxt the config
    was parsed from) lets findings carry line numbers. Ensemble steps are checked only for their own
    data flow; the cross-model checks need `lint_repository`.
    """
    name = folder or (model_dir.name if model_dir is not None else cfg.name) or "model"
    file = file or (str(model_dir / CONFIG) if model_dir is not None else f"{name}/{CONFIG}")
    pos = positions(text, mc.ModelConfig.DESCRIPTOR) if text is not None else None
    sink = Sink(name, file, pos)
    ctx = ConfigContext(name, model_dir, _frozen(known_backends), gpu_count)
    lint_model(cfg, sink, ctx)
    report = LintReport(str(model_dir or file), sink.findings, [name])
    report.sort()
    return report


def lint_repository(
    path: str | os.PathLike[str],
    *,
    known_backends: Iterable[str] | None = None,
    gpu_count: int | None = None,
) -> LintReport:
    """Static checks of a Triton model repository, without starting a server.

    ``known_backends`` (e.g. `known_backends_of(binary)`) turns "backend not installed" into an
    error; without it unknown backends are warnings. ``gpu_count`` is the number of GPUs of the
    target server: 0 makes KIND_GPU groups errors; None (unknown) makes them warnings.
    """
    root = Path(path)
    report = LintReport(str(root))
    if not root.is_dir():
        report.findings.append(
            Finding("error", "", "", f"{root} is not a directory; point lint at a model repository", str(root))
        )
        return report
    other = _other_build(root)
    if other is not None:
        report.findings.append(Finding("error", "", "", other, str(root)))
        return report
    backends = _frozen(known_backends)
    entries: dict[str, ModelEntry] = {}
    for model_dir in model_folders(root):
        entries[model_dir.name] = _lint_folder(model_dir, backends, gpu_count)
    report.models = list(entries)
    if not entries:
        report.findings.append(
            Finding("warning", "", "", "the repository has no model folders; Triton would serve nothing", str(root))
        )
    for entry in entries.values():
        if entry.config is not None and entry.config.platform == ENSEMBLE:
            check_ensemble_steps(entry, entries)
    for entry in entries.values():
        report.extend(entry.sink.findings)
    report.sort()
    return report


def _other_build(root: Path) -> str | None:
    """What to say when `root` is a build of another target (a TorchServe model store is no Triton repository)."""
    if not looks_like_torchserve_output(root):
        return None
    return (
        f"{root} is a TorchServe build, not a Triton model repository, so lint "
        f"does not apply to it. Check it with `repoforge validate {root}` (starts the server and sends requests), "
        f"or build the spec for Triton (`repoforge build SPEC -o OUT --target triton`) and lint OUT"
    )


def _lint_folder(model_dir: Path, backends: frozenset[str] | None, gpu_count: int | None) -> ModelEntry:
    name = model_dir.name
    cfg_path = model_dir / CONFIG
    sink = Sink(name, str(cfg_path))
    entry = ModelEntry(name, model_dir, sink, present=sorted(Layout.read(model_dir).versions))
    ctx = ConfigContext(name, model_dir, backends, gpu_count)
    if name.startswith("."):
        sink.error(
            (),
            f"hidden folder '{name}' in the repository: Triton treats every sub-folder as a model (this one as "
            f"backend '{name.lstrip('.').split('.')[-1]}') and fails to load it - move it out of the repository",
            file=str(model_dir),
        )
        return entry
    if not cfg_path.is_file():
        cfg = mc.ModelConfig()
        probe = mc.ModelConfig()
        problem = autocomplete(probe, name, model_dir, Layout.read(model_dir))
        if problem:
            sink.error((), f"no {CONFIG}, and {problem}", file=str(model_dir))
            return entry
        sink.warning(
            (),
            f"no {CONFIG}: Triton auto-completes the configuration from the model (backend '{probe.backend}'); "
            f"inputs and outputs are not checked - write a config.pbtxt to pin them",
            file=str(model_dir),
        )
        entry.raw = cfg
        entry.config, entry.versions = lint_model(cfg, sink, ctx)
        return entry
    try:
        text = cfg_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        sink.error((), f"cannot read {CONFIG}: {exc}")
        return entry
    try:
        raw = text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as exc:
        _parse_error(sink, exc)
        return entry
    sink.positions = positions(text, mc.ModelConfig.DESCRIPTOR)
    entry.raw = raw
    entry.config, entry.versions = lint_model(raw, sink, ctx)
    return entry


def _parse_error(sink: Sink, exc: text_format.ParseError) -> None:
    line, column = exc.GetLine(), exc.GetColumn()
    message = str(exc)
    prefix = f"{line}:{column} : " if line is not None else ""
    if prefix and message.startswith(prefix):
        message = message[len(prefix) :]
    sink.findings.append(
        Finding(
            "error", sink.model, "",
            f"{CONFIG}:{line}:{column}: does not parse as a Triton ModelConfig: {message} - fix the syntax or the "
            f"field name (see model_config.proto)" if line is not None else
            f"does not parse as a Triton ModelConfig: {message}",
            sink.file, line, column,
        )
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Ensembles against their steps (ValidateEnsembleConfig)
# --------------------------------------------------------------------------------------------
@dataclass
class _Node:
    model: str
    batching: bool
    dtype: int
    dims: list[int]

    @property
    def full(self) -> list[int]:
        return ([-1] if self.batching else []) + self.dims


def _dims_match(a: list[int], b: list[int]) -> bool:
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b, strict=True))


def check_ensemble_steps(entry: ModelEntry, entries: dict[str, ModelEntry]) -> None:
    """ValidateEnsembleConfig: each step calls a loadable model whose tensors agree with the ensemble's."""
    cfg = entry.config
    assert cfg is not None
    sink = entry.sink
    steps = cfg.ensemble_scheduling.step
    if not steps:
        return
    tensors = _ensemble_tensors(entry, cfg)
    decoupled: dict[str, bool] = {}
    usable = True
    for i, st in enumerate(steps):
        base: FieldPath = ("ensemble_scheduling", "step", i)
        target = _step_target(entry, entries, base, i, st)
        if target is None or target.config is None:
            usable = False
            continue
        step_cfg = target.config
        _check_step_version(sink, base, st, target)
        if step_cfg.max_batch_size != 0 and step_cfg.max_batch_size < cfg.max_batch_size:
            sink.error(
                ("max_batch_size",),
                f"ensemble max_batch_size {cfg.max_batch_size} exceeds step {i} ({st.model_name}) max_batch_size "
                f"{step_cfg.max_batch_size}; lower the ensemble's max_batch_size or raise the step's",
            )
        if not step_cfg.input and not step_cfg.output:
            continue  # the backend auto-completes its inputs and outputs from the model: unknown here
        _check_step_maps(sink, base, i, st, step_cfg, tensors)
        decoupled[str(i)] = bool(step_cfg.model_transaction_policy.decoupled)
    if usable:
        _check_decoupled(entry, cfg, decoupled)


def _ensemble_tensors(entry: ModelEntry, cfg: mc.ModelConfig) -> dict[str, _Node]:
    """The ensemble's own inputs and outputs, the first nodes every step's tensors must agree with."""
    batching = cfg.max_batch_size > 0
    tensors: dict[str, _Node] = {}
    for io in cfg.input:
        tensors[io.name] = _Node(
            entry.name, batching, io.data_type, list(io.reshape.shape if io.HasField("reshape") else io.dims)
        )
    for io in cfg.output:
        tensors.setdefault(
            io.name,
            _Node(entry.name, batching, io.data_type, list(io.reshape.shape if io.HasField("reshape") else io.dims)),
        )
    return tensors


def _check_step_version(sink: Sink, base: FieldPath, st: mc.ModelEnsembling.Step, target: ModelEntry) -> None:
    """A step's model_version must be one Triton loads: a folder that exists and that the version policy keeps."""
    v = st.model_version
    if v < 0 or v in target.versions:
        return
    if v not in target.present:
        sink.error(
            (*base, "model_version"),
            f"model '{st.model_name}' has no version {v} (versions: {target.present}); use -1 (latest) or an "
            f"existing version",
        )
    else:
        sink.error(
            (*base, "model_version"),
            f"model '{st.model_name}' version {v} is not loaded: its version policy loads {target.versions}; use -1 "
            f"(latest), a loaded version, or change the policy",
        )


def _step_target(
    entry: ModelEntry, entries: dict[str, ModelEntry], base: FieldPath, i: int, st: mc.ModelEnsembling.Step
) -> ModelEntry | None:
    """The model step `i` calls, or None (reported, except an empty name) when Triton could not load the ensemble."""
    sink = entry.sink
    target = entries.get(st.model_name)
    if not st.model_name:
        return None
    if target is None:
        sink.error(
            (*base, "model_name"),
            f"step {i} calls model '{st.model_name}', which is not in the repository (models: "
            f"{', '.join(sorted(entries)) or 'none'}); add it or fix model_name",
        )
        return None
    if target.name == entry.name or _calls(target, entry.name, entries, set()):
        sink.error((*base, "model_name"), f"step {i} calls '{st.model_name}', which calls this ensemble back")
        return None
    if not target.ok or target.config is None:
        sink.error(
            (*base, "model_name"),
            f"step {i} calls model '{st.model_name}', which Triton cannot load (see its errors), so the ensemble "
            f"cannot load either",
        )
        return None
    return target


def _check_step_maps(
    sink: Sink,
    base: FieldPath,
    i: int,
    st: mc.ModelEnsembling.Step,
    step_cfg: mc.ModelConfig,
    tensors: dict[str, _Node],
) -> None:
    """Step `i`'s input_map and output_map name the model's tensors, and agree with the ensemble tensors they carry."""
    step_batching = step_cfg.max_batch_size > 0
    model_inputs = {io.name: io for io in step_cfg.input}
    model_outputs = {io.name: io for io in step_cfg.output}
    for key in st.input_map:
        if key not in model_inputs:
            sink.error(
                (*base, "input_map", Key(key)),
                f"step {i}: model '{st.model_name}' has no input '{key}' (inputs: "
                f"{', '.join(model_inputs) or 'none'}); fix the input_map key",
            )
    for name, io in model_inputs.items():
        if name not in st.input_map and not io.optional:
            sink.error(
                (*base, "input_map"),
                f"step {i} ({st.model_name}) does not map its required input '{name}': it is not mapped to any "
                f"ensemble tensor - map it, or mark the input optional",
            )
    for key, tensor in st.input_map.items():
        io = model_inputs.get(key)
        if io is not None:
            _consistent(
                sink,
                (*base, "input_map", Key(key)),
                tensors,
                tensor,
                _Node(st.model_name, step_batching, io.data_type, list(io.dims)),
            )
    for key, tensor in st.output_map.items():
        out = model_outputs.get(key)
        if out is None:
            sink.error(
                (*base, "output_map", Key(key)),
                f"step {i}: model '{st.model_name}' has no output '{key}' (outputs: "
                f"{', '.join(model_outputs) or 'none'}); fix the output_map key",
            )
            continue
        _consistent(
            sink,
            (*base, "output_map", Key(key)),
            tensors,
            tensor,
            _Node(st.model_name, step_batching, out.data_type, list(out.dims)),
        )


def _calls(entry: ModelEntry, target: str, entries: dict[str, ModelEntry], seen: set[str]) -> bool:
    """True if ``entry`` (an ensemble) calls ``target``, directly or through nested ensembles."""
    if entry.name in seen or entry.config is None or entry.config.platform != ENSEMBLE:
        return False
    seen.add(entry.name)
    for st in entry.config.ensemble_scheduling.step:
        if st.model_name == target:
            return True
        nxt = entries.get(st.model_name)
        if nxt is not None and _calls(nxt, target, entries, seen):
            return True
    return False


def _consistent(sink: Sink, path: FieldPath, tensors: dict[str, _Node], tensor: str, node: _Node) -> None:
    """ValidateTensorConsistency: same data type; dims equal up to -1, with or without the batch dim."""
    known = tensors.get(tensor)
    if known is None:
        tensors[tensor] = node
        return
    if known.dtype != node.dtype:
        sink.error(
            path,
            f"ensemble tensor '{tensor}' has inconsistent data type: {dtype_name(known.dtype)} from model "
            f"'{known.model}' but {dtype_name(node.dtype)} from model '{node.model}'; make them agree",
        )
    elif not _dims_match(known.dims, node.dims) and not _dims_match(known.full, node.full):
        sink.error(
            path,
            f"ensemble tensor '{tensor}' has inconsistent shape: {dims_str(known.full)} from model '{known.model}' "
            f"but {dims_str(node.full)} from model '{node.model}' (batch dimension included); make them agree "
            f"(-1 matches any size)",
        )


def _check_decoupled(entry: ModelEntry, cfg: mc.ModelConfig, decoupled: dict[str, bool]) -> None:
    """A step may not take inputs that come from different decoupled steps (Triton's decouple labels)."""
    steps = cfg.ensemble_scheduling.step
    label: dict[str, int] = {io.name: 0 for io in cfg.input}
    next_label = 0
    done: set[int] = set()
    progress = True
    while progress:
        progress = False
        for i, st in enumerate(steps):
            if i in done or not st.input_map or not all(t in label for t in st.input_map.values()):
                continue
            done.add(i)
            progress = True
            labels = {label[t] for t in st.input_map.values()}
            if len(labels) > 1:
                entry.sink.error(
                    ("ensemble_scheduling", "step", i),
                    f"step {i} ({st.model_name}) receives inputs that originate from different decoupled models; "
                    f"Triton cannot match their responses - feed it from one decoupled branch only",
                )
            out_label = next(iter(labels)) if labels else 0
            if decoupled.get(str(i)):
                next_label += 1
                out_label = next_label
            for t in st.output_map.values():
                label.setdefault(t, out_label)
    out_labels = {label[o.name] for o in cfg.output if o.name in label}
    if len(out_labels) > 1:
        entry.sink.error(
            ("output",),
            "the ensemble outputs originate from different decoupled models; Triton refuses this - produce all "
            "outputs from the same decoupled branch",
        )
