"""Every name Triton and repoforge agree on, once: spec formats ↔ Triton platforms/backends ↔ default model
files ↔ repoforge's Python runners (served only where a spec asks with `backend: python`), the backends' own
thread parameters, and the spec's words for Triton's enums (both directions).

The plan, the config codec, the importer and the lint rules all read these tables; a new format or enum value
is added here only.
"""

from __future__ import annotations

from dataclasses import dataclass

from tritonclient.grpc import model_config_pb2 as mc

CONFIG = "config.pbtxt"
ENSEMBLE = "ensemble"
PY_FILE = "model.py"

#: backend -> the platforms it pairs with (Triton's GetBackendType / GetBackendTypeFromPlatform).
BACKEND_PLATFORMS: dict[str, tuple[str, ...]] = {
    "tensorrt": ("tensorrt_plan",),
    "tensorflow": ("tensorflow_graphdef", "tensorflow_savedmodel"),
    "onnxruntime": ("onnxruntime_onnx",),
    "pytorch": ("pytorch_libtorch",),
}
PLATFORM_BACKEND = {p: b for b, ps in BACKEND_PLATFORMS.items() for p in ps}
KNOWN_PLATFORMS = frozenset([*PLATFORM_BACKEND, ENSEMBLE])
#: Triton's default model file per backend (and per platform where the backend has several).
DEFAULT_FILES = {
    "tensorflow_graphdef": "model.graphdef",
    "tensorflow_savedmodel": "model.savedmodel",
    "tensorrt": "model.plan",
    "onnxruntime": "model.onnx",
    "openvino": "model.xml",
    "pytorch": "model.pt",
    "python": PY_FILE,
}
#: Backends published by the Triton project; anything else is reported as unknown.
STANDARD_BACKENDS = frozenset(
    ["python", "onnxruntime", "tensorrt", "pytorch", "tensorflow", "openvino", "fil", "dali", "identity",
     "repeat", "square", "vllm", "tensorrtllm", "armnn_tflite", "pytorch_aoti"]
)  # fmt: skip


@dataclass(frozen=True)
class FormatNames:
    """How one spec format is served: by Triton's native backend on every device, or by repoforge's Python runner
    where the spec asks for it (`backend: python`)."""

    backend: str  # Triton's native backend (its Python-based twin serves it on repoforge's bundled server)
    platform: str  # Triton's platform name for it ("" where the backend has none, e.g. python)
    model_file: str  # the file in each version folder
    runner: str | None  # repoforge's Python-backend runner for `backend: python` (None: no runner)


FORMATS: dict[str, FormatNames] = {
    "onnx": FormatNames("onnxruntime", "onnxruntime_onnx", DEFAULT_FILES["onnxruntime"], "onnxruntime"),
    "tensorrt": FormatNames("tensorrt", "tensorrt_plan", DEFAULT_FILES["tensorrt"], None),
    "torchscript": FormatNames("pytorch", "pytorch_libtorch", DEFAULT_FILES["pytorch"], "torchscript"),
    "python": FormatNames("python", "", PY_FILE, None),
}
#: spec format -> the model file a build writes
MODEL_FILENAMES = {f: n.model_file for f, n in FORMATS.items()}
#: Triton backend -> the spec format it serves natively (the importer's reverse of FORMATS)
NATIVE_FORMAT = {n.backend: f for f, n in FORMATS.items() if n.platform}
#: repoforge runner -> the spec format it serves
RUNNER_FORMAT = {n.runner: f for f, n in FORMATS.items() if n.runner}

#: spec `parameters` key of repoforge's intra-op thread setting (`auto` or a count; repoforge.runtime.threads)
INTRA_OP_THREADS = "intra_op_threads"
#: backend -> its own config parameter for the intra-op thread count (onnxruntime_backend and pytorch_backend
#: READMEs). A build writes the spec's `intra_op_threads` under this name, so the NGC image's native backend and
#: repoforge's Python-based twin read the same value; repoforge's Python runner (backend python) keeps the spec's.
THREAD_PARAMETERS = {
    "onnxruntime": "intra_op_thread_count",
    "pytorch": "INTRA_OP_THREAD_COUNT",
    "python": INTRA_OP_THREADS,
}


def thread_parameter(cfg: mc.ModelConfig) -> str | None:
    """The parameter that sets a served model's intra-op threads (None: its backend has none we know)."""
    backend = cfg.backend or PLATFORM_BACKEND.get(cfg.platform, "")
    return THREAD_PARAMETERS.get(backend)


def _both(forward: dict[str, int]) -> tuple[dict[str, int], dict[int, str]]:
    return forward, {v: k for k, v in forward.items()}


#: spec words <-> Triton enums, forward (build) and reverse (import) from one table each
INSTANCE_KIND, INSTANCE_KIND_NAME = _both({
    "cpu": mc.ModelInstanceGroup.KIND_CPU, "gpu": mc.ModelInstanceGroup.KIND_GPU,
    "auto": mc.ModelInstanceGroup.KIND_AUTO, "model": mc.ModelInstanceGroup.KIND_MODEL,
})  # fmt: skip
SEQUENCE_CONTROL, SEQUENCE_CONTROL_NAME = _both({
    "start": mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_START,
    "end": mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_END,
    "ready": mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_READY,
    "correlation_id": mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_CORRID,
})  # fmt: skip
OPTIMIZATION_PRIORITY, OPTIMIZATION_PRIORITY_NAME = _both({
    "default": mc.ModelOptimizationPolicy.PRIORITY_DEFAULT,
    "max": mc.ModelOptimizationPolicy.PRIORITY_MAX,
    "min": mc.ModelOptimizationPolicy.PRIORITY_MIN,
})  # fmt: skip


def _spec_words() -> dict[str, str]:
    """Triton enum name -> the word a spec writes for it, so one rule's message reads right in both dialects."""
    words = {mc.ModelInstanceGroup.Kind.Name(v): k for k, v in INSTANCE_KIND.items()}
    words |= {mc.ModelSequenceBatching.Control.Kind.Name(v): k for k, v in SEQUENCE_CONTROL.items()}
    words |= {"DELAY": "delay", "REJECT": "reject", "FORMAT_NCHW": "nchw", "FORMAT_NHWC": "nhwc"}
    words |= {n: n.removeprefix("TYPE_") for n in mc.DataType.keys() if n not in ("TYPE_INVALID", "TYPE_STRING")}
    return words | {"TYPE_STRING": "BYTES"}


#: Triton enum name -> spec word (KIND_CPU -> cpu, TYPE_STRING -> BYTES, DELAY -> delay)
SPEC_WORDS = _spec_words()
