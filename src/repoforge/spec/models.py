"""The spec (v1) as pydantic models: the contract users write in `spec.yaml`.

Every model forbids unknown keys, so a typo is an error with a suggestion instead of a silently
ignored setting. Cross-field rules that need the merged defaults or other models (batch sizes
against max_batch_size, ensemble edges) live in `repoforge.plan`, which has the whole picture.
Every field has a description: `repoforge schema` hands them to editors as hover help.
"""

from __future__ import annotations

from typing import Any, Literal

from packaging.requirements import InvalidRequirement, Requirement
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from repoforge.spec.deploy import DeploySpec
from repoforge.spec.dtypes import normalize_dtype
from repoforge.spec.gateway import AsyncSpec, GatewaySpec
from repoforge.spec.plugins import PluginSpec
from repoforge.spec.rollout import RolloutSpec
from repoforge.spec.scheduling import QueuePolicy, RateLimiter
from repoforge.spec.serving import ServingSpec

Format = Literal["onnx", "tensorrt", "torchscript", "pytorch", "python", "ensemble"]
ParamValue = str | int | float | bool


class StrictModel(BaseModel):
    """Base of every spec model: an unknown key is an error, so a typo is never silently ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TensorSpec(StrictModel):
    """A model input or output. `dims` leave out the batch dimension when max_batch_size > 0."""

    name: str = Field(min_length=1, description="Tensor name, as the model file and the requests name it.")
    dtype: str = Field(description="Triton dtype (FP32, INT64, BYTES, ...) or its numpy name (float32).")
    dims: list[int] = Field(description="Shape without the batch axis when max_batch_size > 0; -1 is a variable size.")
    reshape: list[int] | None = Field(
        default=None, description="Triton `reshape`: the shape the model itself sees, when it differs from `dims`."
    )
    format: Literal["nchw", "nhwc"] | None = Field(
        default=None, description="Inputs only: an image input's layout (Triton FORMAT_NCHW / FORMAT_NHWC; 3 dims)."
    )
    optional: bool = Field(
        default=False, description="Inputs only: requests may leave this input out (Triton `optional`)."
    )
    is_shape_tensor: bool = Field(
        default=False, description="Triton `is_shape_tensor`: the tensor carries a shape (TensorRT shape tensors)."
    )
    allow_ragged_batch: bool = Field(
        default=False, description="Inputs only: requests of different shapes are batched together (ragged batching)."
    )
    label_filename: str | None = Field(
        default=None, description="Outputs only: labels file (relative to the spec) for classification results."
    )

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


class InstanceGroup(StrictModel):
    """Triton `instance_group`: how many copies of the model run, and where (TorchServe: workers). `kind` left out
    follows the build's device (`repoforge.plan` resolves it): KIND_GPU for --device gpu."""

    kind: Literal["cpu", "gpu", "auto", "model"] | None = Field(
        default=None, description="Triton KIND_CPU/GPU/AUTO/MODEL; unset: the build's device (python models: cpu)."
    )
    count: int = Field(default=1, ge=1, description="Instances (on GPU: per listed GPU); TorchServe workers sum them.")
    gpus: list[int] | None = Field(default=None, description="GPU ids for kind gpu; unset: every visible GPU.")
    name: str | None = Field(default=None, description="Group name; unset: Triton names it after the model.")
    rate_limiter: RateLimiter | None = Field(
        default=None, description="Resources and priority for Triton's rate limiter."
    )
    passive: bool = Field(default=False, description="Instances are loaded but never scheduled (Triton `passive`).")
    host_policy: str | None = Field(
        default=None, description="Name of a host policy (server --host-policy) to run under."
    )

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(g < 0 for g in v):
            raise ValueError("GPU ids must be >= 0")
        return v


class DynamicBatching(StrictModel):
    """`dynamic_batching: true|false|{...}`. Delay 0 still batches whatever queued while busy."""

    enabled: bool = Field(default=True, description="false turns dynamic batching off (`dynamic_batching: false`).")
    preferred_batch_sizes: list[int] = Field(
        default=[], description="Batch sizes the batcher aims for; empty: as large as max_batch_size allows."
    )
    max_queue_delay_us: int = Field(
        default=0, ge=0, description="µs a request may wait for a fuller batch; 0: no wait (TorchServe: 1 ms)."
    )
    preserve_ordering: bool = Field(default=False, description="Responses return in the order requests arrived.")
    priority_levels: int = Field(default=0, ge=0, description="Number of request priority levels; 0: no priorities.")
    default_priority_level: int = Field(default=0, ge=0, description="Priority of requests that set none.")
    queue_policy: QueuePolicy | None = Field(default=None, description="Default queue policy; unset: Triton's.")
    priority_queue_policy: dict[int, QueuePolicy] = Field(
        default={}, description="Queue policy per priority level (level → policy)."
    )

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

    name: str = Field(description="Name of the model input Triton fills.")
    kind: Literal["start", "end", "ready", "correlation_id"] = Field(
        description="What Triton puts there: sequence start/end/ready flag, or the correlation id."
    )
    dtype: str = Field(default="INT32", description="Input dtype: flags as INT32, FP32 or BOOL 0/1; the id's dtype.")

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, v: Any) -> str:
        return normalize_dtype(v)


class SequenceState(StrictModel):
    """Implicit state kept by Triton between the requests of a sequence."""

    input_name: str = Field(description="Model input that receives the state.")
    output_name: str = Field(description="Model output that gives the next state.")
    dtype: str = Field(description="State dtype (Triton or numpy name).")
    dims: list[int] = Field(description="State shape.")

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, v: Any) -> str:
        return normalize_dtype(v)


class SequenceBatching(StrictModel):
    """Triton `sequence_batching`: requests of one sequence (correlation id) go to the same instance."""

    strategy: Literal["direct", "oldest"] = Field(
        default="direct", description="direct: a batch slot per sequence; oldest: batch the oldest sequences."
    )
    max_sequence_idle_us: int | None = Field(
        default=None, ge=0, description="µs before an idle sequence is ended; unset: Triton's default (1 s)."
    )
    control_inputs: list[SequenceControl] = Field(default=[], description="Inputs Triton fills with sequence controls.")
    states: list[SequenceState] = Field(default=[], description="Implicit state Triton keeps between requests.")
    max_queue_delay_us: int = Field(default=0, ge=0, description="µs a request may wait to form a batch; 0: none.")
    # direct
    minimum_slot_utilization: float | None = Field(
        default=None, ge=0.0, le=1.0, description="direct only: fraction of slots that must be ready to run a batch."
    )
    # oldest
    max_candidate_sequences: int | None = Field(
        default=None, ge=1, description="oldest only: sequences batched at once; unset: 1."
    )
    preferred_batch_sizes: list[int] = Field(default=[], description="oldest only: batch sizes to aim for.")
    preserve_ordering: bool = Field(default=False, description="oldest only: responses keep the request order.")
    iterative: bool = Field(default=False, description="Triton `iterative_sequence` (iterative scheduling).")


class Warmup(StrictModel):
    """Requests Triton runs at load time so the first user request is not the slow one."""

    batch_sizes: list[int] = Field(
        default=[1], description="One warmup request per size (size 1 when max_batch_size is 0)."
    )
    data: Literal["random", "zero"] = Field(default="random", description="Input contents: random or zero data.")
    count: int = Field(default=1, ge=1, description="Times each warmup request runs.")
    shapes: dict[str, list[int]] = Field(
        default={},
        description="Input name → concrete dims; unset inputs use their dims with -1 as 1. An optional input is "
        "sent only when named here.",
    )

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

    inputs: str = Field(
        description="An .npz file (relative to the spec) with one array per input, batch axis included "
        "where the model has one; BYTES as fixed-width bytes arrays (np.savez, no pickles). "
        "Built into the model folder as smoke_inputs.npz."
    )


class Accelerator(StrictModel):
    """One execution accelerator, e.g. `{name: tensorrt, parameters: {precision_mode: FP16}}`."""

    name: str = Field(description="Accelerator name as the backend knows it (tensorrt, openvino, ...).")
    parameters: dict[str, ParamValue] = Field(default={}, description="Its parameters, written as strings.")


class ExecutionAccelerators(StrictModel):
    """Triton `execution_accelerators`, tried in order."""

    gpu: list[Accelerator] = Field(default=[], description="Accelerators for GPU instances (e.g. tensorrt).")
    cpu: list[Accelerator] = Field(default=[], description="Accelerators for CPU instances (e.g. openvino).")


class PinnedMemory(StrictModel):
    """Whether Triton stages inputs/outputs through pinned (page-locked) host memory."""

    input: bool | None = Field(default=None, description="Pinned memory for inputs; unset: Triton's default (on).")
    output: bool | None = Field(default=None, description="Pinned memory for outputs; unset: Triton's default (on).")


class Optimization(StrictModel):
    """Triton's `optimization` block: execution accelerators (ONNX→TensorRT/OpenVINO), CUDA graphs, pinned memory."""

    priority: Literal["default", "max", "min"] | None = Field(
        default=None, description="Model priority (PRIORITY_DEFAULT/MAX/MIN); unset: left out."
    )
    graph_level: int | None = Field(
        default=None, description="Backend graph optimization level: -1 off, 0 framework default, 1+ higher."
    )
    cuda_graphs: bool | None = Field(default=None, description="Use CUDA graphs (TensorRT backend); unset: left out.")
    cuda_busy_wait_events: bool | None = Field(
        default=None, description="Busy-wait on CUDA events instead of blocking; unset: left out."
    )
    cuda_output_copy_stream: bool | None = Field(
        default=None, description="Copy outputs on a separate CUDA stream; unset: left out."
    )
    execution_accelerators: ExecutionAccelerators | None = Field(
        default=None, description="Accelerators such as ONNX Runtime's TensorRT or OpenVINO providers."
    )
    pinned_memory: PinnedMemory | None = Field(default=None, description="Pinned host memory for inputs and outputs.")
    gather_kernel_buffer_threshold: int | None = Field(
        default=None, ge=0, description="Gather inputs of at least this many buffers with a CUDA kernel; unset: off."
    )
    eager_batching: bool | None = Field(
        default=None, description="Triton's optimization `eager_batching` flag; unset: left out (Triton's default)."
    )

    def gpu_only(self) -> list[str]:
        """The settings that only mean something with a GPU (CUDA, GPU accelerators, host<->GPU copies): a
        --device cpu build leaves them out, which is all its optimization block differs in from a GPU build's."""
        names = [f for f in GPU_ONLY_OPTIMIZATION if getattr(self, f) is not None]
        if self.execution_accelerators is not None and self.execution_accelerators.gpu:
            names.append("execution_accelerators.gpu")
        return names


#: `optimization` fields a --device cpu build leaves out (Optimization.gpu_only)
GPU_ONLY_OPTIMIZATION = (
    "cuda_graphs", "cuda_busy_wait_events", "cuda_output_copy_stream", "pinned_memory", "gather_kernel_buffer_threshold"
)  # fmt: skip


class BatchInputSpec(StrictModel):
    """Triton `batch_input`: an extra input Triton computes from the batch (for ragged batching)."""

    kind: Literal[
        "batch_element_count",
        "batch_accumulated_element_count",
        "batch_accumulated_element_count_with_zero",
        "batch_max_element_count_as_shape",
        "batch_item_shape",
        "batch_item_shape_flatten",
    ] = Field(description="What Triton computes, e.g. batch_element_count (Triton BatchInput.Kind, lower case).")
    target_names: list[str] = Field(min_length=1, description="Model inputs that receive the computed value.")
    dtype: str = Field(description="Dtype of the computed input.")
    source_inputs: list[str] = Field(default=[], description="Request inputs it is computed from.")

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, v: Any) -> str:
        return normalize_dtype(v)


class BatchOutputSpec(StrictModel):
    """Triton `batch_output`: how a batched output is split back into the requests."""

    kind: Literal["batch_scatter_with_input_shape"] = Field(
        default="batch_scatter_with_input_shape", description="Scatter the output by the shape of `source_inputs`."
    )
    target_names: list[str] = Field(min_length=1, description="Model outputs it applies to.")
    source_inputs: list[str] = Field(min_length=1, description="Input whose per-request shape splits the output.")


class RepositoryAgent(StrictModel):
    """E.g. `{name: checksum, parameters: {MD5:1/model.onnx: <hash>}}`."""

    name: str = Field(description="Repository agent name, e.g. checksum.")
    parameters: dict[str, str] = Field(default={}, description="Agent parameters (string → string).")


class VersionPolicy(StrictModel):
    """`latest`, `all`, `{latest: N}` or `{specific: [1, 3]}`."""

    latest: int | None = Field(default=None, ge=1, description="Serve the N highest versions (`latest` means 1).")
    all: bool | None = Field(default=None, description="Serve every version in the repository (`all`).")
    specific: list[int] | None = Field(default=None, description="Serve exactly these versions; each must be built.")

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
    def _one(self) -> VersionPolicy:
        chosen = [k for k in ("latest", "all", "specific") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError("set exactly one of latest, all, specific")
        return self


class TransactionPolicy(StrictModel):
    """Triton `model_transaction_policy`."""

    decoupled: bool = Field(
        default=False, description="Decoupled (streaming): any number of responses per request; no response cache."
    )


class EnsembleStep(StrictModel):
    """One step: `inputs`/`outputs` map the step model's tensor names to ensemble tensor names."""

    model: str = Field(description="Name of the model this step runs (a model of this spec).")
    version: int = Field(default=-1, description="Version of that model to run; -1: the latest served.")
    inputs: dict[str, str] = Field(default={}, description="Step model input → ensemble tensor it reads.")
    outputs: dict[str, str] = Field(default={}, description="Step model output → ensemble tensor it writes.")


#: Variants `optimize:` can make, simplest first: ties in speed (within noise) go to the earlier one.
VARIANTS = ("fp32", "ort_optimized", "fp16", "int8_dynamic", "int8_static", "openvino", "tensorrt")
Variant = Literal["fp32", "ort_optimized", "fp16", "int8_dynamic", "int8_static", "openvino", "tensorrt"]


class Tolerance(StrictModel):
    """Element-wise gate against fp32's outputs: an element fails when |variant - fp32| > max_abs + max_rel * |fp32|."""

    max_abs: float | None = Field(
        default=None, ge=0, description="Absolute error allowed per element; unset: the variant's precision default."
    )
    max_rel: float | None = Field(
        default=None,
        ge=0,
        description="Error allowed per element relative to |fp32|; unset: the variant's precision default.",
    )


class Validation(StrictModel):
    """The data every variant is judged on against fp32 (the original model)."""

    data: str = Field(
        description="An .npz file (relative to the spec): one array per model input, batch axis first, and "
        "optionally the labels array."
    )
    labels: str | None = Field(
        default=None,
        description="Name of the label array in `data` (integer class per row); top-1 accuracy then counts. "
        "Unset: top-1 agreement with fp32.",
    )
    output: str | None = Field(
        default=None, description="The output whose argmax is the top-1 class; unset: the model's first output."
    )
    max_top1_drop: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Largest absolute top-1 accuracy drop against fp32 on the labels (without labels: largest "
        "fraction of rows whose top-1 differs from fp32's).",
    )
    tolerance: Tolerance | None = Field(
        default=None,
        description="Element-wise gate; unset: by precision (fp32 graph rewrites 1e-5 abs / 1e-4 rel, fp16 1e-2 / "
        "1e-2, int8: none, top-1 is their gate).",
    )


class LatencyBudget(StrictModel):
    """`select: {latency_budget_ms: 5}`: the highest throughput at a batch size whose latency fits the budget."""

    latency_budget_ms: float = Field(gt=0, description="Most milliseconds one batch may take in process.")


class TensorRTProfile(StrictModel):
    """A TensorRT optimization profile over the batch axis: the engine accepts min..max and is tuned for opt."""

    min: int = Field(ge=1, description="Smallest batch the engine accepts.")
    opt: int = Field(ge=1, description="Batch the engine's kernels are tuned for.")
    max: int = Field(ge=1, description="Largest batch the engine accepts (at most max_batch_size).")

    @model_validator(mode="after")
    def _ordered(self) -> TensorRTProfile:
        if not self.min <= self.opt <= self.max:
            raise ValueError(f"a profile needs min <= opt <= max, got {self.min}/{self.opt}/{self.max}")
        return self


class OptimizeSpec(StrictModel):
    """`optimize:` export (pytorch/torchscript → ONNX), make variants, gate each on accuracy, time them side by
    side, and ship the selection (`repoforge optimize` reports; `repoforge build` uses it)."""

    variants: list[Variant] = Field(
        default=["fp32", "ort_optimized", "int8_dynamic", "int8_static", "fp16"],
        min_length=1,
        description="Variants to make and compare (fp32 is always made, as the reference). openvino: where it is "
        "installed; tensorrt: --device gpu.",
    )
    calibration: str | None = Field(
        default=None,
        description="int8_static: an .npz (relative to the spec) with arrays by input name for calibration.",
    )
    calibration_method: Literal["minmax", "entropy", "percentile", "distribution"] = Field(
        default="minmax", description="int8_static: how activation ranges are chosen (onnxruntime CalibrationMethod)."
    )
    per_channel: bool = Field(default=True, description="int8_static: per-channel weight scales (more accurate).")
    validation: Validation = Field(description="The data and thresholds of the accuracy gate.")
    select: Literal["max_throughput", "min_latency"] | LatencyBudget = Field(
        default="max_throughput",
        description="max_throughput (largest batch) | min_latency (batch 1) | {latency_budget_ms: N}; ties within "
        "noise go to the simpler variant.",
    )
    ship: Literal["selected", "all"] = Field(
        default="selected",
        description="selected: one version, the selected variant; all: every accepted variant as its own version.",
    )
    required: list[Variant] = Field(
        default=[], description="Variants that must pass their gate; a failure fails `repoforge build`."
    )
    batch_sizes: list[int] | None = Field(
        default=None,
        description="Batch sizes to time; unset: those the config forms (1, the preferred sizes, max_batch_size).",
    )
    rounds: int = Field(default=5, ge=2, le=50, description="Alternating timing rounds per batch size (median, range).")
    threads: int = Field(default=1, ge=1, description="onnxruntime intra-op threads for the in-process timing.")
    opset: int = Field(default=17, ge=9, description="ONNX opset for the export of pytorch/torchscript models.")
    tensorrt_profile: TensorRTProfile | None = Field(
        default=None,
        description="tensorrt: the batch profile; unset: min 1, opt the largest preferred batch size (else "
        "max_batch_size), max max_batch_size.",
    )

    @field_validator("variants", "required")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a variant is listed twice")
        return v

    @field_validator("batch_sizes")
    @classmethod
    def _sizes(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(b < 1 for b in v)):
            raise ValueError("batch sizes must be a non-empty list of sizes >= 1")
        return v


# Fields that `defaults:` may set for every model (and each model may override).
DEFAULTABLE = (
    "max_batch_size",
    "instance_groups",
    "dynamic_batching",
    "response_cache",
    "warmup",
    "parameters",
    "optimization",
    "version_policy",
    "model_repository_agents",
)


class Defaults(StrictModel):
    """`defaults:` set for every model that does not set the field itself (and where the field applies)."""

    max_batch_size: int | None = Field(default=None, ge=0, description="Default max_batch_size of every model.")
    instance_groups: list[InstanceGroup] | None = Field(default=None, description="Default instance groups.")
    dynamic_batching: DynamicBatching | None = Field(
        default=None, description="Default dynamic batching (not for sequence models or ensembles)."
    )
    response_cache: bool | None = Field(default=None, description="Default for Triton's response cache.")
    warmup: Warmup | None = Field(default=None, description="Default warmup (not for ensembles).")
    parameters: dict[str, ParamValue] | None = Field(
        default=None, description="Default config parameters (replaced, not merged, by a model's own)."
    )
    optimization: Optimization | None = Field(default=None, description="Default Triton optimization block.")
    version_policy: VersionPolicy | None = Field(default=None, description="Default version policy.")
    model_repository_agents: list[RepositoryAgent] | None = Field(
        default=None, description="Default repository agents (e.g. checksum)."
    )


class ModelSpec(StrictModel):
    """One model of the repository: a Triton model folder with its config.pbtxt, or a TorchServe .mar."""

    name: str = Field(
        min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$", description="Model name: its folder and the name requests use."
    )
    format: Format = Field(description="onnx | tensorrt | torchscript | pytorch (TorchServe only) | python | ensemble.")
    path: str | None = Field(
        default=None, description="Model file (python: your model.py), relative to the spec; reused by each version."
    )
    backend: str | None = Field(
        default=None,
        description="Triton backend; unset: the format's native one (onnxruntime, pytorch) on every device. "
        "python on onnx/torchscript: repoforge's Python runner instead.",
    )
    max_batch_size: int | None = Field(
        default=None,
        ge=0,
        description="Largest batch (0: no batch axis); unset: 32 for batchable ONNX, ensembles: steps' min, else 0.",
    )
    inputs: list[TensorSpec] | None = Field(
        default=None, description="Inputs; unset: read from the ONNX file, or derived (ensembles, plugins)."
    )
    outputs: list[TensorSpec] | None = Field(
        default=None, description="Outputs; unset: read from the ONNX file, or derived (ensembles, plugins)."
    )
    dynamic_batching: DynamicBatching | None = Field(
        default=None, description="true | false | {...}; unset: on, with no queue delay, when max_batch_size > 0."
    )
    sequence_batching: SequenceBatching | None = Field(
        default=None, description="Sequence batcher for stateful models (replaces dynamic batching)."
    )
    instance_groups: list[InstanceGroup] | None = Field(
        default=None, description="Instances; unset: one, on GPU for --device gpu (python: CPU), else CPU."
    )
    versions: dict[int, str | None] | None = Field(
        default=None, description="[1, 2] (each from `path`) or {1: v1.onnx, ...}; unset: version 1 from `path`."
    )
    version_policy: VersionPolicy | None = Field(
        default=None, description="latest | all | {latest: N} | {specific: [..]}; unset: Triton serves the latest."
    )
    response_cache: bool | None = Field(
        default=None, description="Triton's response cache for this model; `repoforge serve` enables the cache."
    )
    warmup: Warmup | None = Field(default=None, description="Requests Triton runs at load time (model_warmup).")
    parameters: dict[str, ParamValue] | None = Field(
        default=None,
        description="Config `parameters`, as strings; intra_op_threads (auto or a count) is written under the backend's own name.",
    )
    optimization: Optimization | None = Field(
        default=None,
        description="Triton `optimization`; --device cpu leaves out its GPU-only settings, repoforge's Python runner all of it.",
    )
    batch_inputs: list[BatchInputSpec] = Field(default=[], description="Triton `batch_input` entries.")
    batch_outputs: list[BatchOutputSpec] = Field(default=[], description="Triton `batch_output` entries.")
    model_repository_agents: list[RepositoryAgent] | None = Field(
        default=None, description="Triton repository agents run when the model loads (e.g. checksum)."
    )
    model_transaction_policy: TransactionPolicy | None = Field(
        default=None, description="Triton `model_transaction_policy` ({decoupled: true} for streaming)."
    )
    metric_tags: dict[str, str] = Field(
        default={}, description="Triton `metric_tags`: labels added to the model's metrics."
    )
    steps: list[EnsembleStep] | None = Field(
        default=None, description="format ensemble: the steps; the ensemble's inputs/outputs derive from them."
    )
    smoke: Smoke | None = Field(
        default=None, description="Smoke inputs for `repoforge validate` (default: random data made from the config)."
    )
    # TorchServe target: the file defining the nn.Module class of an eager `pytorch` state_dict model,
    # and the user's own TorchServe handler file (replacing repoforge's); both relative to the spec.
    model_file: str | None = Field(
        default=None, description="TorchServe, format pytorch: the .py file defining the nn.Module class."
    )
    handler: str | None = Field(
        default=None, description="TorchServe: your own handler file, used instead of repoforge's."
    )
    # What the user's own code imports beyond the stock server image (repoforge's own code declares its needs itself).
    requirements: list[str] = Field(
        default=[],
        description="Your model.py (format python) or TorchServe handler/model_file: pip requirements it imports "
        "beyond the stock server image, e.g. [scikit-learn>=1.4]; recorded in repoforge.lock.json "
        "(python_requirements) for `repoforge image`, `build --pack-env` and the .mar's requirements.txt.",
    )
    # repoforge's own Python backends (features, result_cache, semantic_cache, router), configured instead of `path`.
    plugin: PluginSpec | None = Field(
        default=None, description="format python: one of repoforge's plugins (features, caches, router), not `path`."
    )
    optimize: OptimizeSpec | None = Field(
        default=None,
        description="Export, quantize and compile the model, gate each variant on accuracy, ship the fastest that passes.",
    )
    # Escape hatch: pbtxt of extra ModelConfig fields the spec cannot express, merged into the generated
    # config last (protobuf MergeFrom: scalars and map keys override, repeated fields append).
    raw_config: str | None = Field(
        default=None, description="pbtxt of extra ModelConfig fields, merged last (scalars override, lists append)."
    )

    @field_validator("requirements")
    @classmethod
    def _requirements(cls, v: list[str]) -> list[str]:
        """Each one a PEP 508 requirement, so pip, the image and --pack-env read it the same way."""
        for r in v:
            try:
                Requirement(r)
            except InvalidRequirement as exc:
                raise ValueError(f"{r!r} is not a pip requirement ({exc})") from None
        return v

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
    """A repoforge spec (`spec.yaml`): the models of one Triton model repository or TorchServe model store."""

    version: Literal[1] = Field(description="Spec format version; always 1.")
    repository: str | None = Field(default=None, description="Repository name; unset: the spec's folder name.")
    defaults: Defaults = Field(
        default=Defaults(), description="Settings applied to every model that does not set them."
    )
    models: list[ModelSpec] = Field(min_length=1, description="The models to build (at least one).")
    deploy: DeploySpec = Field(
        default=DeploySpec(), description="Kubernetes deployment of the build (`repoforge deploy k8s`); all optional."
    )
    rollout: RolloutSpec | None = Field(
        default=None,
        description="Release policy of a candidate behind a router (`repoforge rollout`, Flagger/Argo in deploy k8s).",
    )
    serving: ServingSpec | None = Field(
        default=None,
        description="Many models on one server: the gateway loads on demand and unloads the least recently used "
        "(`repoforge gateway`); unset: every model is loaded at start.",
    )
    gateway: GatewaySpec | None = Field(
        default=None,
        description="How `repoforge gateway` serves this build (port, /infer timeout, body limit); `deploy.gateway` "
        "takes what it leaves unset from here.",
    )
    async_: AsyncSpec | None = Field(
        default=None,
        alias="async",
        description="The asynchronous queue: per-request timeout, retries, result TTL, worker concurrency and "
        "replicas (`repoforge gateway --redis`, `repoforge worker`, deploy.gateway's workers).",
    )
