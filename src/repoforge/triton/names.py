"""Every name Triton and repoforge agree on, once: spec formats ↔ Triton platforms/backends ↔ default model
files ↔ repoforge's CPU runners, and the spec's words for Triton's enums (both directions).

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
    """How one spec format is served: natively on a GPU host, or by repoforge's runner on CPU."""

    backend: str  # Triton's native backend
    platform: str  # Triton's platform name for it ("" where the backend has none, e.g. python)
    model_file: str  # the file in each version folder
    cpu_runner: str | None  # repoforge's Python-backend runner on CPU builds (None: no CPU path)


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
RUNNER_FORMAT = {n.cpu_runner: f for f, n in FORMATS.items() if n.cpu_runner}


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
