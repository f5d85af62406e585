"""repoforge's Python-based `onnxruntime` backend, for its private copy of the bundled Triton (which has no
libtriton_onnxruntime.so). Triton loads this file for every model whose config says `backend: "onnxruntime"`,
so the repository that the NGC image serves with its native backend is served here unchanged.

It reads the config as the native backend does: the model file is `<model folder>/<version>/<default_model_filename
or model.onnx>`, `intra_op_thread_count` sets ONNX Runtime's intra-op threads (0: ONNX Runtime's default; unset:
repoforge's `auto`, the backend's own choice), inputs, outputs and batching come from the config. The computing is
repoforge's onnxruntime runner, given the same settings in its own words.
"""

from __future__ import annotations

import json
from typing import Any

# repoforge's runtime, copied beside this file (`repoforge_runtime/`) when the private backend folder is made
from repoforge_runtime.onnx_runner import MODEL_FILE_PARAMETER, OnnxRunner, log_info

DEFAULT_MODEL_FILE = "model.onnx"
THREADS = "intra_op_thread_count"  # onnxruntime_backend's parameter (repoforge.triton.names.THREAD_PARAMETERS)
RUNNER_THREADS = "intra_op_threads"  # what the runner reads (repoforge.triton.names.INTRA_OP_THREADS)
#: onnxruntime_backend parameters this backend does not apply (it logs them once at load)
NOT_APPLIED = ("inter_op_thread_count", "execution_mode", "enable_mem_arena", "enable_mem_pattern")


def runner_args(args: dict[str, str]) -> dict[str, str]:
    """Triton's `initialize` args with the native backend's settings translated for the runner."""
    cfg = json.loads(args["model_config"])
    params = cfg.setdefault("parameters", {})
    params[MODEL_FILE_PARAMETER] = {"string_value": cfg.get("default_model_filename") or DEFAULT_MODEL_FILE}
    threads = (params.get(THREADS) or {}).get("string_value", "").strip()
    params[RUNNER_THREADS] = {"string_value": threads or "auto"}
    return {**args, "model_config": json.dumps(cfg)}


class TritonPythonModel(OnnxRunner):
    """ONNX Runtime on the CPU, one `session.run` per batch the dynamic batcher forms."""

    def initialize(self, args: dict[str, Any]) -> None:
        super().initialize(runner_args(args))
        ignored = sorted(set(NOT_APPLIED) & set(self.args.parameters))
        if ignored:
            log_info(f"{self.args.name}: {', '.join(ignored)} not applied by repoforge's Python-based onnxruntime")
