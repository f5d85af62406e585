"""Route models the router runs inside its own stub instead of through BLS.

Why: a BLS call to a small model costs more than the model (bench/RESULTS.md, "router"): the request goes from the
router's stub to the server over shared memory, through the core's scheduler, to the route model's stub and back,
about 0.3-0.4 ms where onnxruntime computes one row of the small MLP in 30 µs. A route that is an ONNX model of the
same repository, served by repoforge's onnxruntime runner, is the same `OnnxRunner` on the same file: the router
loads it itself and calls it directly. Everything else (Python models, native backends, GPU instances, version
policies, models of other repositories) stays on BLS.

The in-process copy follows Triton's: every `CHECK_S` it asks the server whether the route is ready (an unloaded route
goes back to BLS, which fails as it did before) and whether the route's files changed (a reloaded model is rebuilt in
the background, BLS serves meanwhile). Rows served in process count in the router's route metrics as before, but not
in the route model's own Triton statistics (nv_inference_*): the rollout reads the router's series only.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import numpy as np

from .. import pbtxt
from ..metrics import _LOCK as STUB_LOCK
from ..names import MODEL_FILE_PARAMETER
from ..onnx_runner import OnnxRunner
from ..triton_model import ModelArgs, log_info, pb_utils
from ._common import call_model

#: How often (seconds) a route run in process re-checks that Triton's copy is ready and its files unchanged.
CHECK_S = 0.5
#: Where tritonserver looks for backends when its command line names no --backend-directory.
DEFAULT_BACKENDS = "/opt/tritonserver/backends"
#: The backend name repoforge's onnxruntime runner is served under (a Python-based backend folder with model.py).
ONNX_BACKEND = "onnxruntime"


def server_backend_dir(pid: int) -> str | None:
    """The --backend-directory of the tritonserver process `pid` (the stub's parent), None when unreadable."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return None
    if not argv or "tritonserver" not in os.path.basename(argv[0]):
        return None
    for i, a in enumerate(argv):
        if a.startswith("--backend-directory="):
            return a.split("=", 1)[1]
        if a == "--backend-directory" and i + 1 < len(argv):
            return argv[i + 1]
    return DEFAULT_BACKENDS


def onnx_runner_serves(backend_dir: str | None) -> bool:
    """True when the server's `onnxruntime` backend is repoforge's runner (model.py), not Triton's native one."""
    if backend_dir is None:
        return False
    folder = os.path.join(backend_dir, ONNX_BACKEND)
    return os.path.isfile(os.path.join(folder, "model.py")) and not os.path.isfile(
        os.path.join(folder, f"libtriton_{ONNX_BACKEND}.so")
    )


def _version_dirs(model_dir: str, file: str) -> list[int]:
    try:
        names = os.listdir(model_dir)
    except OSError:
        return []
    return sorted(int(n) for n in names if n.isdigit() and os.path.isfile(os.path.join(model_dir, n, file)))


class LocalModel:
    """One route model's OnnxRunner in this stub, kept in step with the server's copy of it."""

    def __init__(self, model_dir: str, name: str, version: int, router: ModelArgs) -> None:
        self.model_dir, self.name, self.version = model_dir, name, version
        self.router = router
        self._lock = threading.Lock()
        self._ready = False
        self._next_check = 0.0
        self._rebuilding = False
        self.runner, self.identity = self._build()
        self._tried = self.identity

    # -- eligibility --
    @classmethod
    def find(cls, repository: str, name: str, version: int, router: ModelArgs) -> tuple[LocalModel | None, str]:
        """The route `name` run in process, or None and why not. `repository`: the router's own model folder."""
        if not onnx_runner_serves(server_backend_dir(os.getppid())):
            return None, "the server's onnxruntime backend is not repoforge's runner"
        model_dir = os.path.join(os.path.dirname(os.path.abspath(repository)), name)
        why = _not_local(model_dir, router)
        if why:
            return None, why
        try:
            return cls(model_dir, name, version, router), ""
        except Exception as exc:  # noqa: BLE001 - anything that fails here leaves the route on BLS
            return None, f"{type(exc).__name__}: {exc}"

    # -- the runner --
    def _config(self) -> pbtxt.Message:
        with open(os.path.join(self.model_dir, "config.pbtxt")) as fh:
            return pbtxt.parse(fh.read())

    def _identity(self) -> tuple[Any, ...]:
        """What changes when the route's files do: its config, the version served and that version's model file."""
        cfg_path = os.path.join(self.model_dir, "config.pbtxt")
        st = os.stat(cfg_path)
        file = pbtxt.string_map(self._config()).get(MODEL_FILE_PARAMETER, "model.onnx")
        version = self.version if self.version > 0 else max(_version_dirs(self.model_dir, file), default=0)
        mst = os.stat(os.path.join(self.model_dir, str(version), file))
        return (st.st_mtime_ns, st.st_size, version, mst.st_mtime_ns, mst.st_size)

    def _build(self) -> tuple[Any, tuple[Any, ...]]:
        identity = self._identity()
        cfg = self._config()
        why = _not_local(self.model_dir, self.router, cfg)
        if why:
            raise ValueError(why)
        runner = OnnxRunner()
        runner.initialize(
            {
                "model_name": self.name,
                "model_version": str(identity[2]),
                "model_repository": self.model_dir,
                # the copies in this server's router stubs share the cores like the router's own instances
                "model_config": json.dumps(_triton_json(cfg, self.router.instances)),
            }
        )
        return runner, identity

    def _rebuild(self) -> None:
        try:
            runner, identity = self._build()
            with self._lock:
                self.runner, self.identity = runner, identity
                self._next_check = 0.0  # confirm readiness of the new version before serving it
        except Exception as exc:  # noqa: BLE001 - stays on BLS until the files change again
            log_info(f"{self.router.name}: route {self.name} stays on BLS: {type(exc).__name__}: {exc}")
        finally:
            self._rebuilding = False

    # -- serving --
    def current(self) -> Any:
        """The runner the next call may use, None for BLS: Triton has the route ready and its files are the ones
        loaded here. Checked every CHECK_S (one small request to the server, a few stats); cheap in between."""
        now = time.monotonic()
        if now >= self._next_check:
            self._check(now)
        return self.runner if self._ready else None

    def _check(self, now: float) -> None:
        with self._lock:
            if now < self._next_check:
                return
            self._next_check = now + CHECK_S
            try:
                identity: tuple[Any, ...] | None = self._identity()
            except (OSError, ValueError):
                identity = None
            if identity != self.identity:
                self._ready = False
                self.runner = None
                if identity is not None and identity != self._tried and not self._rebuilding:
                    self._tried, self._rebuilding = identity, True
                    threading.Thread(target=self._rebuild, name=f"reload-{self.name}", daemon=True).start()
                return
            served = str(identity[2]) if identity else ""
            try:
                with STUB_LOCK:  # the stub's requests to the server are serialized (see ..metrics)
                    ready = bool(pb_utils().is_model_ready(self.name, served))
            except Exception:  # noqa: BLE001 - a stub without the call: trust the files alone
                ready = True
            self._ready = ready and self.runner is not None

    def run(self, runner: Any, feed: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """`runner`'s answer for `feed`, the outputs the router asked for (RuntimeError like a BLS call's)."""
        got = runner._compute(dict(feed))
        missing = [n for n in outputs if n not in got]
        if missing:
            raise RuntimeError(f"{self.name} returned no output '{missing[0]}'")
        return {n: got[n] for n in outputs}


def _not_local(model_dir: str, router: ModelArgs, cfg: pbtxt.Message | None = None) -> str:
    """Why the route in `model_dir` cannot run in the router's stub ('' when it can)."""
    if cfg is None:
        try:
            with open(os.path.join(model_dir, "config.pbtxt")) as fh:
                cfg = pbtxt.parse(fh.read())
        except (OSError, ValueError) as exc:
            return f"no readable config.pbtxt in this repository ({type(exc).__name__})"
    if pbtxt.one(cfg, "backend") != ONNX_BACKEND or pbtxt.one(cfg, "platform"):
        return "not an ONNX model served by repoforge's onnxruntime runner"
    kinds = {str(pbtxt.one(g, "kind", "KIND_AUTO")) for g in cfg.get("instance_group", [])}
    if kinds - {"KIND_CPU"}:
        return f"instance kinds {sorted(kinds)} (only KIND_CPU runs in process)"
    for field in ("version_policy", "sequence_batching", "optimization", "default_model_filename"):
        if field in cfg:
            return f"its config sets {field}"
    mbs = int(pbtxt.one(cfg, "max_batch_size", 0))
    if (mbs > 0) != (router.max_batch_size > 0) or mbs < router.max_batch_size:
        return f"max_batch_size {mbs} does not take the router's batches of up to {router.max_batch_size}"
    return ""


def _triton_json(cfg: pbtxt.Message, instances: int) -> dict[str, Any]:
    """The parts of Triton's JSON model config that ModelArgs.parse reads."""

    def tensor(t: pbtxt.Message) -> dict[str, Any]:
        return {"name": pbtxt.one(t, "name"), "data_type": pbtxt.one(t, "data_type"), "dims": t.get("dims", [])}

    return {
        "max_batch_size": int(pbtxt.one(cfg, "max_batch_size", 0)),
        "input": [tensor(t) for t in cfg.get("input", [])],
        "output": [tensor(t) for t in cfg.get("output", [])],
        "parameters": {k: {"string_value": v} for k, v in pbtxt.string_map(cfg).items()},
        "instance_group": [{"count": max(1, instances), "kind": "KIND_CPU"}],
    }


def call(
    local: LocalModel | None,
    model: str,
    version: int,
    feed: dict[str, np.ndarray],
    outputs: list[str],
    timeout_us: int | None = None,
) -> dict[str, np.ndarray]:
    """One call of `model` by a plugin (router route or shadow, result-cache miss, features' model): in this stub
    where `local` runs it and Triton has it ready, else through BLS."""
    runner = local.current() if local is not None else None
    if local is not None and runner is not None:
        return local.run(runner, feed, outputs)
    return call_model(model, version, feed, outputs, timeout_us=timeout_us)
