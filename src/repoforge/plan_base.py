"""The plan's data types and the spec rules that `plan` and `plugin_plan` share (a leaf below both, so neither
imports the other's private names)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from repoforge.contract import Device
from repoforge.errors import Problem, SpecError
from repoforge.spec.deploy import DeployRules
from repoforge.spec.load import LoadedSpec
from repoforge.spec.models import ModelSpec, TensorSpec
from repoforge.spec.yamlsource import PathKey
from repoforge.triton.names import MODEL_FILENAMES


@dataclass
class ServingChoice:
    """How a model is served: natively by a Triton backend (on every device), or by a repoforge Python runner."""

    platform: str = ""  # e.g. onnxruntime_onnx, tensorrt_plan, pytorch_libtorch, ensemble
    backend: str = ""  # e.g. python
    runner: str | None = (
        None  # repoforge's Python runner (spec `backend: python`, plugins): "onnxruntime", "router", ...
    )


@dataclass
class ModelPlan:
    """Everything needed to write one model's folder and config."""

    name: str
    index: int  # position in spec.models, for error locations
    format: str
    spec: ModelSpec  # with defaults merged in
    max_batch_size: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    versions: dict[int, Path | None]  # version → source file or folder (None: empty folder, e.g. ensembles)
    serving: ServingChoice
    dynamic_batching: bool
    instance_kind_default: Device
    extra_files: dict[str, Path] = field(default_factory=dict)  # name in the model folder → source (e.g. labels)

    @property
    def model_filename(self) -> str | None:
        return MODEL_FILENAMES.get(self.format)


@dataclass
class RepositoryPlan:
    name: str
    device: Device
    spec_path: Path
    spec_sha256: str
    models: list[ModelPlan]
    warnings: list[str] = field(default_factory=list)
    deploy: dict[str, Any] = field(default_factory=dict)  # the spec's `deploy:` as written (repoforge.spec.deploy)
    rollout: dict[str, Any] | None = None  # the spec's `rollout:` as written (deploy k8s emits Flagger/Argo from it)
    serving: dict[str, Any] | None = None  # the spec's `serving:` (sizes in bytes); the gateway reads it from the lock
    gateway: dict[str, Any] | None = (
        None  # the spec's `gateway:` and `async:` as written; gateway/worker/deploy read them
    )

    def model(self, name: str) -> ModelPlan:
        return next(m for m in self.models if m.name == name)

    @property
    def uses_response_cache(self) -> bool:
        return any(m.spec.response_cache for m in self.models)


@dataclass(frozen=True)
class BuildRules:
    """What the plan checks and says differently for one target. Each target states its own (Triton's in
    `repoforge.triton.build_rules`, TorchServe's in `repoforge.torchserve.build_rules`, both reached through
    `Target.rules`); the plan asks these and never the target's name."""

    cpu_kind_word: str  # how a CPU instance group is called in this target's config ("KIND_CPU")
    user_handler: bool  # a `handler:` of the user's serves the model: it needs no model file and owns its I/O
    python_entry_file: bool  # a python model's folder must hold the file the server loads (model.py)
    own_serving: bool  # the target's builder decides how each format is served (the plan does not choose)
    plugin_kinds: frozenset[str] | None  # the plugins it runs (None: every one)
    rollout: bool  # `rollout:` can drive its router plugin
    drift: bool  # the plugins measure `drift:`
    optimize: bool  # `optimize:` applies
    ignored_fields: tuple[str, ...]  # other targets' settings it ignores (each worth a warning)
    gpu_only_optimization_warning: bool  # GPU-only `optimization` settings of a --device cpu build are left out
    server_config_rules: bool  # Triton's load rules run on the configs the plan builds (repoforge.triton.spec_rules)
    deploy: DeployRules  # what its server can run in a deployment (`deploy:`)
    explicit_model_control: bool = False  # `serving:` can load/unload its models on demand (the gateway)
    gateway: bool = False  # `repoforge gateway` fronts it (Triton's gRPC): `gateway:` and `async:` apply


class Checker:
    """Collects problems so the user sees all of them at once."""

    def __init__(self, loaded: LoadedSpec, rules: BuildRules) -> None:
        self.loaded = loaded
        self.rules = rules
        self.problems: list[Problem] = []

    def add(self, path: PathKey, message: str, *, key: bool = False) -> None:
        self.problems.append(self.loaded.problem(path, message, key=key))

    def raise_if_any(self) -> None:
        if self.problems:
            raise SpecError(self.problems)


def same_dims(a: list[int], b: list[int]) -> bool:
    """Dims agree when lengths match and every fixed size matches (-1 matches any size)."""
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b, strict=True))


def python_filename(m: ModelSpec) -> str:
    """The file Triton's python backend loads: raw_config's default_model_filename, else model.py."""
    if m.raw_config and "default_model_filename" in m.raw_config:
        try:
            return text_format.Parse(m.raw_config, mc.ModelConfig()).default_model_filename or "model.py"
        except text_format.ParseError:  # reported by check_common
            pass
    return "model.py"


def resolve_file(loaded: LoadedSpec, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else (loaded.base_dir / p).resolve()


def check_batching(ck: Checker, i: int, m: ModelSpec, mbs: int) -> bool:
    """Whether dynamic batching is on. Only the spec's own rules are here; Triton's rules on the batcher's
    fields run on the built config (`repoforge.triton.spec_rules`), which carries dynamic_batching when the model asks for it."""
    db = m.dynamic_batching
    where = ck.loaded.origin(i, "dynamic_batching")
    own = ck.loaded.sets(i, "dynamic_batching") and db is not None and db.enabled
    if m.format == "ensemble":
        if own:
            ck.add(where, "an ensemble is scheduled by its steps; dynamic_batching belongs on the step models")
        return False
    if m.sequence_batching is not None:
        if own:
            ck.add(where, "a model has one scheduler: remove dynamic_batching or sequence_batching")
        return False
    if mbs == 0:  # defaults' dynamic batching simply does not apply to a model without a batch axis
        return own
    enabled = db.enabled if db is not None else True
    if enabled and db is not None and len(set(db.preferred_batch_sizes)) != len(db.preferred_batch_sizes):
        ck.add((*where, "preferred_batch_sizes"), "preferred batch sizes are listed twice")
    return enabled


def check_common(ck: Checker, i: int, m: ModelSpec) -> None:
    """The spec's own rules: what a built config cannot carry (and so the Triton rules on it cannot see)."""
    if m.format != "ensemble" and m.steps is not None:
        ck.add(("models", i, "steps"), f"only format ensemble has steps (this model is {m.format})")
    if m.raw_config is not None:  # pbtxt merged into the generated config: it must parse as ModelConfig fields
        try:
            text_format.Parse(m.raw_config, mc.ModelConfig())
        except text_format.ParseError as exc:
            why = str(exc).split(" : ", 1)[-1]
            ck.add(
                ("models", i, "raw_config"),
                f"raw_config line {exc.GetLine()}, column {exc.GetColumn()}: {why} (expected ModelConfig fields in pbtxt)",
            )
    if m.format == "ensemble":  # a built ensemble config has no instances, warmup or optimization to check
        for name, why in (
            ("instance_groups", "an ensemble has no instances of its own; set instance_groups on the step models"),
            ("warmup", "Triton does not warm up ensembles; warm up the step models"),
            ("optimization", "optimization settings do not apply to an ensemble; set them on the step models"),
        ):
            if ck.loaded.sets(i, name):
                ck.add(("models", i, name), why)
    if m.sequence_batching is not None:
        check_sequence(ck, i, m)
    for j, t in enumerate(m.outputs or []):
        if t.format is not None:  # a config output has no format field
            ck.add(
                ("models", i, "outputs", j, "format"),
                "format (nchw/nhwc) describes an input's layout; remove it from the output",
            )


def check_sequence(ck: Checker, i: int, m: ModelSpec) -> None:
    """Flag dtypes and the strategy's fields: a config has no place for a FP64 start flag or for both strategies."""
    sb = m.sequence_batching
    assert sb is not None
    for j, c in enumerate(sb.control_inputs):
        if c.kind != "correlation_id" and c.dtype not in ("INT32", "FP32", "BOOL"):
            ck.add(
                ("models", i, "sequence_batching", "control_inputs", j, "dtype"),
                f"{c.kind} flags must be INT32, FP32 or BOOL, got {c.dtype}",
            )
    if sb.strategy == "direct" and (sb.max_candidate_sequences is not None or sb.preferred_batch_sizes):
        ck.add(
            ("models", i, "sequence_batching", "strategy"),
            "max_candidate_sequences and preferred_batch_sizes belong to strategy: oldest",
        )
