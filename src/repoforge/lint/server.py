"""Facts about the target server that turn some warnings into errors: which backends it has and
how many GPUs it sees."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from repoforge.servers.triton import RUN_EXIT_TIMEOUT_S, TritonServer, find_tritonserver, private_backends
from repoforge.triton.client import served_config


def backends_in(backends_dir: str | os.PathLike[str]) -> set[str]:
    """Backend names in a ``--backend-directory``: sub-folders holding ``libtriton_<name>.so`` (C++
    backends) or ``model.py`` (Python-based backends such as vllm)."""
    root = Path(backends_dir)
    found: set[str] = set()
    if not root.is_dir():
        return found
    for sub in root.iterdir():
        if sub.is_dir() and ((sub / f"libtriton_{sub.name}.so").is_file() or (sub / "model.py").is_file()):
            found.add(sub.name)
    return found


def known_backends_of(binary: str | os.PathLike[str] | None = None) -> set[str]:
    """The backends a tritonserver install has (``<root>/backends``, or /opt/tritonserver/backends).

    ``binary`` is the tritonserver executable (or its install root); None locates it like
    ``repoforge serve`` does (the one bundled with PyTriton, then PATH). Raises
    `repoforge.servers.triton.TritonNotFoundError` when there is none. The bundled server counts the
    Python-based onnxruntime and pytorch backends repoforge gives it (`repoforge.servers.triton.private_backends`).
    """
    install = find_tritonserver(binary)
    return backends_in(install.backends_dir) | set(private_backends(install))


def detect_gpu_count() -> int:
    """GPUs visible on this host (``nvidia-smi -L``); 0 when there is no NVIDIA driver."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return 0
    if out.returncode != 0:
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def effective_configs(
    repo: str | os.PathLike[str], names: list[str], server: str | None = None, timeout: float = 120.0
) -> dict[str, mc.ModelConfig | str]:
    """Load ``names`` from ``repo`` in a real tritonserver and read each one's effective config
    (``GET /v2/models/<m>/config``): what Triton auto-completes for a folder without config.pbtxt (a python
    model's ``auto_complete_config``, a backend reading the model file). Only the server knows it.

    ``server`` is a tritonserver binary, or None / "bundled" for the one ``repoforge serve`` uses. Returns
    name → config, or → why the model did not load. The server is stopped before this returns.
    """
    binary = None if server in (None, "bundled") else server
    out: dict[str, mc.ModelConfig | str] = {}
    with TritonServer(
        repo,
        model_control="explicit",
        load_models=names,
        exit_on_error=False,
        strict_readiness=False,
        binary=binary,
        exit_timeout_s=RUN_EXIT_TIMEOUT_S,
    ) as triton:
        failed = triton.failed_models()
        for name in names:
            if name in failed or not triton.model_ready(name):
                out[name] = f"tritonserver did not load it: {failed.get(name, 'not READY')}"
                continue
            try:
                out[name] = served_config(triton.http_url, name, timeout=timeout)
            except (InferenceServerException, OSError) as exc:
                out[name] = f"tritonserver did not give its config: {exc}"
    return out
