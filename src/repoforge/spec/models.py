"""The spec (v1) as pydantic models: the contract users write in `spec.yaml`.

Every model forbids unknown keys, so a typo is an error with a suggestion instead of a silently
ignored setting. Cross-field rules that need the merged defaults or other models (batch sizes
against max_batch_size, ensemble edges) live in `repoforge.plan`, which has the whole picture.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from repoforge.spec.dtypes import normalize_dtype
from repoforge.spec.plugins import PluginSpec

Format = Literal["onnx", "tensorrt", "torchscript", "pytorch", "python", "ensemble"]
ParamValue = str | int | float | bool


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TensorSpec(StrictModel):
    """A model input or output. `dims` leave out the batch dimension when max_batch_size > 0."""

    name: str = Field(min_length=1)
    dtype: str
    dims: list[int]
    reshape: list[int] | None = None    # the shape the model itself sees (dims are what clients send and get)
    format: Literal["nchw", "nhwc"] | None = None  # an image input's layout (Triton's FORMAT_NCHW / FORMAT_NHWC)
    optional: bool = False
    is_shape_tensor: bool = False
    allow_ragged_batch: bool = False
    label_filename: str | None = None

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, v: Any) -> str:
        return normalize_dtype(v)

    @field_validator("format", mode="before")
    @classmethod
    def _format(cls, v: Any) -> Any:
        return v.lower().removeprefix("format_") if isinstance(v, str) else v

    @field_validator("dims")
    @classmethod
    def _dims(cls, v: list[int]) -> list[int]:
        for d in v:
            if d < -1:
                raise ValueError(f"dimension {d} is invalid; use a size >= 0 or -1 for a variable size")
        return v


class RateLimiterResource(StrictModel):
    name: str
    count: int = Field(ge=1)
    global_: bool = Field(default=False, alias="global")


class RateLimiter(StrictModel):
    """Triton's rate limiter: instances run only when their resources are free."""

    resources: list[RateLimiterResource] = []
    priority: int = Field(default=0, ge=0)


class InstanceGroup(StrictModel):
    """`kind` left out follows the build's device (`repoforge.plan` resolves it): KIND_GPU for --device gpu."""

    kind: Literal["cpu", "gpu", "auto", "model"] | None = None
    count: int = Field(default=1, ge=1)
    gpus: list[int] | None = None
    name: str | None = None
    rate_limiter: RateLimiter | None = None
    passive: bool = False
    host_policy: str | None = None

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(g < 0 for g in v):
            raise ValueError("GPU ids must be >= 0")
        return v


class QueuePolicy(StrictModel):
    timeout_us: int = Field(default=0, ge=0)
    timeout_action: Literal["reject", "delay"] = "reject"
    allow_timeout_override: bool = False
    max_queue_size: int = Field(default=0, ge=0)


class DynamicBatching(StrictModel):
    """`dynamic_batching: true|false|{...}`. Delay 0 still batches whatever queued while busy."""

    enabled: bool = True
    preferred_batch_sizes: list[int] = []
    max_queue_delay_us: int = Field(default=0, ge=0)
    preserve_ordering: bool = False
    priority_levels: int = Field(default=0, ge=0)
    default_priority_level: int = Field(default=0, ge=0)
    queue_policy: QueuePolicy | None = None
    priority_queue_policy: dict[int, QueuePolicy] = {}

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, v: Any) -> Any:
        if isinstance(v, bool):
            return {"enabled": v}
        return v

    @field_validator("preferred_batch_sizes")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v):
            raise ValueError("preferred batch sizes must be >= 1")
        return v


class SequenceControl(StrictModel):
    """A control input that Triton fills for sequence models (start/end/ready flags, correlation id)."""

    name: str
    kind: Literal["start", "end", "ready", "correlation_id"]
    dtype: str = "INT32"

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, v: Any) -> str:
        return normalize_dtype(v)


class SequenceState(StrictModel):
    """Implicit state kept by Triton between the requests of a sequence."""

    input_name: str
    output_name: str
    dtype: str
    dims: list[int]

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, v: Any) -> str:
        return normalize_dtype(v)


class SequenceBatching(StrictModel):
    strategy: Literal["direct", "oldest"] = "direct"
    max_sequence_idle_us: int | None = Field(default=None, ge=0)
    control_inputs: list[SequenceControl] = []
    states: list[SequenceState] = []
    max_queue_delay_us: int = Field(default=0, ge=0)
    # direct
    minimum_slot_utilization: float | None = Field(default=None, ge=0.0, le=1.0)
    # oldest
    max_candidate_sequences: int | None = Field(default=None, ge=1)
    preferred_batch_sizes: list[int] = []
    preserve_ordering: bool = False
    iterative: bool = False


class Warmup(StrictModel):
    """Requests Triton runs at load time so the first user request is not the slow one."""

    batch_sizes: list[int] = [1]
    data: Literal["random", "zero"] = "random"
    count: int = Field(default=1, ge=1)
    shapes: dict[str, list[int]] = {}

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(b < 1 for b in v):
            raise ValueError("warmup batch sizes must be a non-empty list of sizes >= 1")
        return v


#: Where the build puts a model's `smoke.inputs` file (in its model folder), so validate finds it without the spec.
SMOKE_INPUTS = "smoke_inputs.npz"


class Smoke(StrictModel):
    """What `repoforge validate` sends a model instead of random data (for models that check their values)."""

    inputs: str = Field(description="An .npz file (relative to the spec) with one array per input, batch axis included "
                                    "where the model has one; BYTES as fixed-width bytes arrays (np.savez, no pickles). "
                                    "Built into the model folder as smoke_inputs.npz.")


class Accelerator(StrictModel):
    name: str
    parameters: dict[str, ParamValue] = {}


class ExecutionAccelerators(StrictModel):
    gpu: list[Accelerator] = []
    cpu: list[Accelerator] = []


class PinnedMemory(StrictModel):
    input: bool | None = None
    output: bool | None = None


class Optimization(StrictModel):
    """Triton's `optimization` block: execution accelerators (ONNX→TensorRT/OpenVINO), CUDA graphs, pinned memory."""

    priority: Literal["default", "max", "min"] | None = None
    graph_level: int | None = None
    cuda_graphs: bool | None = None
    cuda_busy_wait_events: bool | None = None
    cuda_output_copy_stream: bool | None = None
    execution_accelerators: ExecutionAccelerators | None = None
    pinned_memory: PinnedMemory | None = None
    gather_kernel_buffer_threshold: int | None = Field(default=None, ge=0)
    eager_batching: bool | None = None


class BatchInputSpec(StrictModel):
    kind: Literal[
        "batch_element_count", "batch_accumulated_element_count",
        "batch_accumulated_element_count_with_zero", "batch_max_element_count_as_shape",
        "batch_item_shape", "batch_item_shape_flatten",
    ]
    target_names: list[str] = Field(min_length=1)
    dtype: str
    source_inputs: list[str] = []

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, v: Any) -> str:
        return normalize_dtype(v)


class BatchOutputSpec(StrictModel):
    kind: Literal["batch_scatter_with_input_shape"] = "batch_scatter_with_input_shape"
    target_names: list[str] = Field(min_length=1)
    source_inputs: list[str] = Field(min_length=1)


class RepositoryAgent(StrictModel):
    """E.g. `{name: checksum, parameters: {MD5:1/model.onnx: <hash>}}`."""

    name: str
    parameters: dict[str, str] = {}


class VersionPolicy(StrictModel):
    """`latest`, `all`, `{latest: N}` or `{specific: [1, 3]}`."""

    latest: int | None = Field(default=None, ge=1)
    all: bool | None = None
    specific: list[int] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_str(cls, v: Any) -> Any:
        if v == "latest":
            return {"latest": 1}
        if v == "all":
            return {"all": True}
        if isinstance(v, str):
            raise ValueError(f"unknown version policy '{v}'; expected latest, all, {{latest: N}} or {{specific: [..]}}")
        return v

    @model_validator(mode="after")
    def _one(self) -> "VersionPolicy":
        chosen = [k for k in ("latest", "all", "specific") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError("set exactly one of latest, all, specific")
        return self


class TransactionPolicy(StrictModel):
    decoupled: bool = False


class EnsembleStep(StrictModel):
    """One step: `inputs`/`outputs` map the step model's tensor names to ensemble tensor names."""

    model: str
    version: int = -1
    inputs: dict[str, str] = {}
    outputs: dict[str, str] = {}


# Fields that `defaults:` may set for every model (and each model may override).
DEFAULTABLE = (
    "max_batch_size", "instance_groups", "dynamic_batching", "response_cache", "warmup",
    "parameters", "optimization", "version_policy", "model_repository_agents",
)


class Defaults(StrictModel):
    max_batch_size: int | None = Field(default=None, ge=0)
    instance_groups: list[InstanceGroup] | None = None
    dynamic_batching: DynamicBatching | None = None
    response_cache: bool | None = None
    warmup: Warmup | None = None
    parameters: dict[str, ParamValue] | None = None
    optimization: Optimization | None = None
    version_policy: VersionPolicy | None = None
    model_repository_agents: list[RepositoryAgent] | None = None


class ModelSpec(StrictModel):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    format: Format
    path: str | None = None
    backend: str | None = None
    max_batch_size: int | None = Field(default=None, ge=0)
    inputs: list[TensorSpec] | None = None
    outputs: list[TensorSpec] | None = None
    dynamic_batching: DynamicBatching | None = None
    sequence_batching: SequenceBatching | None = None
    instance_groups: list[InstanceGroup] | None = None
    versions: dict[int, str | None] | None = None
    version_policy: VersionPolicy | None = None
    response_cache: bool | None = None
    warmup: Warmup | None = None
    parameters: dict[str, ParamValue] | None = None
    optimization: Optimization | None = None
    batch_inputs: list[BatchInputSpec] = []
    batch_outputs: list[BatchOutputSpec] = []
    model_repository_agents: list[RepositoryAgent] | None = None
    model_transaction_policy: TransactionPolicy | None = None
    metric_tags: dict[str, str] = {}
    steps: list[EnsembleStep] | None = None
    smoke: Smoke | None = Field(default=None, description="Smoke inputs for `repoforge validate` (default: random data "
                                                         "made from the config).")
    # TorchServe target: the file defining the nn.Module class of an eager `pytorch` state_dict model,
    # and the user's own TorchServe handler file (replacing repoforge's); both relative to the spec.
    model_file: str | None = None
    handler: str | None = None
    # repoforge's own Python backends (features, result_cache, semantic_cache, router), configured instead of `path`.
    plugin: PluginSpec | None = None
    # Escape hatch: pbtxt of extra ModelConfig fields the spec cannot express, merged into the generated
    # config last (protobuf MergeFrom: scalars and map keys override, repeated fields append).
    raw_config: str | None = None

    @field_validator("versions", mode="before")
    @classmethod
    def _versions(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
                raise ValueError("versions must be a list of integers or a mapping version -> path")
            if len(set(v)) != len(v):
                raise ValueError("versions are listed twice")
            return {x: None for x in v}
        return v

    @field_validator("versions")
    @classmethod
    def _versions_positive(cls, v: dict[int, str | None] | None) -> dict[int, str | None] | None:
        if v is not None:
            if not v:
                raise ValueError("versions must not be empty")
            if any(k < 1 for k in v):
                raise ValueError("version numbers must be >= 1 (Triton ignores folder 0)")
        return v


class Spec(StrictModel):
    version: Literal[1]
    repository: str | None = None
    defaults: Defaults = Defaults()
    models: list[ModelSpec] = Field(min_length=1)
