"""repoforge's Python-based `pytorch` backend, for its private copy of the bundled Triton (which has no
libtriton_pytorch.so). Triton loads this file for every model whose config says `backend: "pytorch"`, so the
repository that the NGC image serves with its native libtorch backend is served here unchanged.

It reads the config as the native backend does: the model file is `<model folder>/<version>/<default_model_filename
or model.pt>`; `INTRA_OP_THREAD_COUNT` > 0 sets torch's intra-op threads (unset: repoforge's `auto`); inputs are
passed to `forward` positionally and outputs taken positionally, ordered by their `<name>__<index>` suffix when
every name has one, else in config order. The computing is repoforge's TorchScript runner.
"""

from __future__ import annotations

import json
import re
from typing import Any

# repoforge's runtime, copied beside this file (`repoforge_runtime/`) when the private backend folder is made
from repoforge_runtime.torchscript_runner import MODEL_FILE_PARAMETER, TorchScriptRunner

DEFAULT_MODEL_FILE = "model.pt"
THREADS = "INTRA_OP_THREAD_COUNT"  # pytorch_backend's parameter (repoforge.triton.names.THREAD_PARAMETERS)
RUNNER_THREADS = "intra_op_threads"  # what the runner reads (repoforge.triton.names.INTRA_OP_THREADS)
_INDEXED = re.compile(r"__(\d+)$")


def _by_index(tensors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The libtorch backend's order: by `__<index>` when every name carries one, else as listed."""
    found = [_INDEXED.search(str(t.get("name", ""))) for t in tensors]
    if not tensors or not all(found):
        return tensors
    return [t for _, t in sorted(zip([int(m.group(1)) for m in found if m], tensors, strict=True), key=lambda p: p[0])]


def runner_args(args: dict[str, str]) -> dict[str, str]:
    """Triton's `initialize` args with the native backend's settings translated for the runner."""
    cfg = json.loads(args["model_config"])
    params = cfg.setdefault("parameters", {})
    params[MODEL_FILE_PARAMETER] = {"string_value": cfg.get("default_model_filename") or DEFAULT_MODEL_FILE}
    threads = (params.get(THREADS) or {}).get("string_value", "").strip()
    params[RUNNER_THREADS] = {"string_value": threads if threads and threads != "0" else "auto"}
    cfg["input"] = _by_index(cfg.get("input", []))
    cfg["output"] = _by_index(cfg.get("output", []))
    return {**args, "model_config": json.dumps(cfg)}


class TritonPythonModel(TorchScriptRunner):
    """A TorchScript module on the CPU, one forward pass per batch the dynamic batcher forms."""

    def initialize(self, args: dict[str, Any]) -> None:
        super().initialize(runner_args(args))
