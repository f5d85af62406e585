"""Start a real TorchServe (0.12, the Java frontend + Python workers) on private ports and folders.

How it is run, and why (see the TorchServe gotchas this avoids):

* ``python -m ts.model_server --start --foreground --ncs`` under a ``ManagedProcess``: the launcher
  stays alive while Java runs, so a dead server is noticed at once, and Java and its workers share
  the launcher's process group, so nothing survives ``stop()`` (or a crashed test) even though a
  SIGTERM to the launcher alone would orphan Java. Workers run with the same Python (``--python``
  is the launcher's interpreter), so ``repoforge`` is importable in them.
* A private ``TMPDIR``/``TEMP`` (short, under /tmp: worker Unix sockets live there) holds the pid
  file, the Java tmpdir (worker sockets, extracted archives): two servers never collide, and
  ``torchserve --stop`` with the same ``TMPDIR`` stops exactly this one.
* Its own ``config.properties`` in the work folder: free 127.0.0.1 ports for inference,
  management, metrics and both gRPC ports (TorchServe binds 7070/7071 otherwise), the model and
  workflow stores, ``load_models``, Prometheus metrics and ``--ncs`` (no snapshot restores).
* Logs go to ``<workdir>/logs`` (``LOG_LOCATION``) with a quiet log4j2 config (the default logs
  every request at DEBUG, twice); the CWD is the work folder, where TorchServe writes
  ``key_file.json`` when token authorization is on (the default; ``disable_token_auth=True``
  turns it off, for local tests only).
* Ready means ``GET /models/<m>`` on the management API shows the model's workers ``READY`` (not
  ``/ping``, which says Healthy while a model crash-loops). A model whose worker dies while loading
  fails the start at once, with the log tails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .ports import free_ports
from .process import ManagedProcess, ServerContext, ServerStartError, pid_alive, read_log_tail
from .torchserve_client import TorchServeAPIError, TorchServeClient

__all__ = ["TorchServeAPIError", "TorchServeNotFoundError", "TorchServePorts", "TorchServeServer", "find_java"]

INSTALL_HINT = "pip install 'repoforge[torchserve]' (torchserve, torch-model-archiver, PyYAML) and a Java 11+ runtime"

QUIET_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by repoforge: TorchServe's default config logs every request at DEBUG, twice. -->
<Configuration>
  <Appenders>
    <File name="ts_log" fileName="${env:LOG_LOCATION:-logs}/ts_log.log">
      <PatternLayout pattern="%d{ISO8601} [%-5p] %t %c - %m%n"/>
    </File>
    <File name="model_log" fileName="${env:LOG_LOCATION:-logs}/model_log.log">
      <PatternLayout pattern="%d{ISO8601} [%-5p] %t %c - %m%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Logger name="io.netty" level="error"/>
    <Logger name="org.apache" level="off"/>
    <Logger name="ACCESS_LOG" level="off"/>
    <Logger name="MODEL_METRICS" level="off"/>
    <Logger name="TS_METRICS" level="off"/>
    <Logger name="MODEL_LOG" level="info" additivity="false"><AppenderRef ref="model_log"/></Logger>
    <Logger name="org.pytorch.serve" level="info" additivity="false"><AppenderRef ref="ts_log"/></Logger>
    <Root level="warn"><AppenderRef ref="ts_log"/></Root>
  </Loggers>
</Configuration>
"""

# model_log.log: "Failed to load model <name>, exception <message>" (the handler's initialize or import failed).
_LOAD_FAILED = re.compile(r"Failed to load model (?P<model>\S+), exception (?P<reason>.*)")
# ts_log.log: the worker thread `W-<port>-<model>_<version>` gives up on a worker and schedules a retry.
_RETRY = re.compile(r"W-\d+-(?P<model>\S+)_[^_\s]+ \S+ - (?:Auto recovery failed again|Retry worker:)")


class TorchServeNotFoundError(FileNotFoundError):
    """TorchServe or Java is missing; the message says what to install."""


class TorchServePorts(tuple[int, int, int, int, int]):
    """(inference, management, metrics, grpc_inference, grpc_management)."""

    __slots__ = ()
    _fields = ("inference", "management", "metrics", "grpc_inference", "grpc_management")

    def __new__(
        cls, inference: int, management: int, metrics: int, grpc_inference: int, grpc_management: int
    ) -> TorchServePorts:
        return super().__new__(cls, (inference, management, metrics, grpc_inference, grpc_management))

    inference = property(lambda self: self[0])
    management = property(lambda self: self[1])
    metrics = property(lambda self: self[2])
    grpc_inference = property(lambda self: self[3])
    grpc_management = property(lambda self: self[4])


def find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java")
    if not java or not os.access(java, os.X_OK):
        raise TorchServeNotFoundError(
            f"TorchServe needs Java (11 or newer) and none was found{' in JAVA_HOME' if java_home else ' on PATH'}; "
            "install e.g. openjdk-17-jre-headless"
        )
    return java


def _check_installed() -> None:
    for module in ("ts", "yaml"):
        if importlib.util.find_spec(module) is None:
            raise TorchServeNotFoundError(f"Python module '{module}' is missing: {INSTALL_HINT}")
    find_java()


def _read_properties(path: Path) -> dict[str, str]:
    props: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            props[k.strip()] = v.strip()
    return props


class TorchServeServer(ServerContext):
    """A TorchServe process: ``with TorchServeServer(build_output, disable_token_auth=True) as ts: ts.predict(...)``.

    ``model_store`` is a folder of .mar files, or a `repoforge build --target torchserve` output
    (its ``model-store/``, ``wf-store/`` and ``config.properties`` are used). ``models``: names
    (``"m"`` or ``"m.mar"`` or ``"name=file.mar"``) to load at start; default: the output's
    ``load_models``, else every .mar in the store. ``workflows``: .war names in the workflow store
    to register once the models are ready (``"all"`` for every one). ``ports``: five ports (see
    ``TorchServePorts``) or None for free ones.
    """

    def __init__(
        self,
        model_store: str | os.PathLike[str],
        models: Sequence[str] | None = None,
        *,
        workflows: Sequence[str] | str | None = None,
        workflow_store: str | os.PathLike[str] | None = None,
        ports: Sequence[int] | None = None,
        disable_token_auth: bool = False,
        enable_model_api: bool = False,
        properties: Mapping[str, str] | None = None,
        log_config: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | os.PathLike[str] | None = None,
    ) -> None:
        root = Path(model_store).absolute()
        self.base_config: dict[str, str] = {}
        if (root / "model-store").is_dir():
            if (root / "config.properties").is_file():
                self.base_config = _read_properties(root / "config.properties")
            self.model_store = root / "model-store"
            default_wf = root / "wf-store"
        else:
            self.model_store = root
            default_wf = root
        if not self.model_store.is_dir():
            raise FileNotFoundError(f"model store {self.model_store} is not a folder")
        self.workflow_store = Path(workflow_store).absolute() if workflow_store is not None else default_wf
        if models is None:
            listed = self.base_config.get("load_models")
            models = listed.split(",") if listed else sorted(p.name for p in self.model_store.glob("*.mar"))
        self.models = [m.strip() for m in models if m.strip()]
        if workflows == "all":
            workflows = sorted(p.name for p in self.workflow_store.glob("*.war"))
        self.workflows = [w if w.endswith(".war") else f"{w}.war" for w in (workflows or [])]
        if ports is not None and len(ports) != 5:
            raise ValueError("ports must be (inference, management, metrics, grpc_inference, grpc_management)")
        self._fixed_ports = TorchServePorts(*ports) if ports is not None else None
        self._ports: TorchServePorts | None = None
        self.disable_token_auth = disable_token_auth
        self.enable_model_api = enable_model_api
        self.properties = dict(properties or {})
        self.log_config = Path(log_config).absolute() if log_config else None
        self.env = dict(env or {})
        self._workdir_arg = Path(workdir).absolute() if workdir is not None else None
        self._workdir: Path | None = None
        self._own_workdir = False
        self._tmpdir: Path | None = None
        self._process: ManagedProcess | None = None
        self._keys: dict[str, str] = {}
        self._started = False  # the last start succeeded: stop() may remove a work folder it created

    # -- paths and ports -----------------------------------------------------------------------
    @property
    def ports(self) -> TorchServePorts:
        if self._ports is None:
            self._ports = self._fixed_ports or TorchServePorts(*free_ports(5))
        return self._ports

    @property
    def inference_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.inference}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.management}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.metrics}"

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            if self._workdir_arg is not None:
                self._workdir = self._workdir_arg
                self._workdir.mkdir(parents=True, exist_ok=True)
            else:
                self._workdir = Path(tempfile.mkdtemp(prefix="repoforge-torchserve-"))
                self._own_workdir = True
        return self._workdir

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def stdout_log(self) -> Path:
        return self.workdir / "torchserve.out"

    @property
    def pid(self) -> int | None:
        """The Java frontend's pid (from TorchServe's pid file), or None."""
        if self._tmpdir is None:
            return None
        try:
            return int((self._tmpdir / ".model_server.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.alive

    # -- configuration -------------------------------------------------------------------------
    def config_properties(self) -> dict[str, str]:
        p = self.ports
        props = {k: v for k, v in self.base_config.items()}
        props.update(
            {
                "inference_address": f"http://127.0.0.1:{p.inference}",
                "management_address": f"http://127.0.0.1:{p.management}",
                "metrics_address": f"http://127.0.0.1:{p.metrics}",
                "grpc_inference_address": "127.0.0.1",
                "grpc_management_address": "127.0.0.1",
                "grpc_inference_port": str(p.grpc_inference),
                "grpc_management_port": str(p.grpc_management),
                "model_store": str(self.model_store),
                "workflow_store": str(self.workflow_store),
                "metrics_mode": props.get("metrics_mode", "prometheus"),
                "default_workers_per_model": props.get("default_workers_per_model", "1"),
                # Here TorchServe runs from repoforge's own environment, which has every package a build declares
                # (python_requirements); the build's `true` is for the stock image. `properties` may set it back.
                "install_py_dep_per_model": "false",
            }
        )
        props.pop("load_models", None)
        if self.models:
            props["load_models"] = ",".join(self.models)
        if self.disable_token_auth:
            props["disable_token_authorization"] = "true"
        if self.enable_model_api:
            props["enable_model_api"] = "true"
        props.update(self.properties)
        return props

    def command(self, config_file: Path, log_config: Path | None) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "ts.model_server",
            "--start",
            "--foreground",
            "--ncs",
            "--model-store",
            str(self.model_store),
            "--ts-config",
            str(config_file),
        ]
        if self.workflow_store.is_dir():
            cmd += ["--workflow-store", str(self.workflow_store)]
        if log_config is not None:
            cmd += ["--log-config", str(log_config)]
        if self.disable_token_auth:
            cmd.append("--disable-token-auth")
        if self.enable_model_api:
            cmd.append("--enable-model-api")
        return cmd

    def _environ(self) -> dict[str, str]:
        assert self._tmpdir is not None
        env = {**os.environ, **self.env}
        env.update(
            {
                "TMPDIR": str(self._tmpdir),
                "TEMP": str(self._tmpdir),
                "LOG_LOCATION": str(self.log_dir),
                "METRICS_LOCATION": str(self.log_dir),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.pop("TS_CONFIG_FILE", None)  # it would override --ts-config
        bindir = str(Path(sys.executable).parent)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        return env

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> TorchServeServer:
        """Start TorchServe and wait until every model's workers are READY and the workflows are registered."""
        if self.alive:
            raise RuntimeError("this TorchServeServer is already running")
        _check_installed()
        for attempt in range(2):
            try:
                self._start_once(timeout)
                return self
            except ServerStartError as exc:
                self.stop()
                in_use = (
                    "address already in use" in (exc.log_tail or "").lower()
                    or "failed to bind" in (exc.log_tail or "").lower()
                )
                if attempt == 0 and in_use and self._fixed_ports is None:
                    self._ports = None  # a port was taken between choosing and binding: try fresh ones
                    continue
                raise
        return self

    def _start_once(self, timeout: float) -> None:
        self._started = False
        self._keys = {}
        wd = self.workdir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._tmpdir = Path(tempfile.mkdtemp(prefix="rf-ts-", dir="/tmp" if os.path.isdir("/tmp") else None))
        config_file = wd / "config.properties"
        config_file.write_text(
            "# Written by repoforge's TorchServeServer for this run.\n"
            + "".join(f"{k}={v}\n" for k, v in self.config_properties().items())
        )
        log_config = self.log_config
        if log_config is None:
            log_config = wd / "log4j2.xml"
            log_config.write_text(QUIET_LOG4J2)
        proc = ManagedProcess(
            self.command(config_file, log_config),
            log_path=self.stdout_log,
            env=self._environ(),
            cwd=wd,
            name="torchserve",
        )
        self._process = proc
        proc.start()
        deadline = time.monotonic() + timeout
        names = [self._model_name(m) for m in self.models]
        self._wait(lambda: self._api_up(), deadline, "the management API")
        for name in names:
            self._wait(
                lambda name=name: self._workers_ready(name), deadline, f"model '{name}' workers READY", model=name
            )
        for war in self.workflows:
            try:
                self.register_workflow(war, timeout=max(1.0, deadline - time.monotonic()))
            except TorchServeAPIError as exc:
                raise self._start_error(f"workflow {war} did not register: {str(exc).splitlines()[0]}") from None
        self._started = True

    @staticmethod
    def _model_name(entry: str) -> str:
        name = entry.split("=", 1)[0] if "=" in entry else entry
        return Path(name).name.removesuffix(".mar").removesuffix(".tar.gz")

    def _wait(self, predicate: Any, deadline: float, what: str, model: str | None = None) -> None:
        proc = self._process
        assert proc is not None
        while True:
            try:
                if predicate():
                    return
            except (OSError, ValueError):
                pass
            if not proc.alive:
                raise self._start_error(f"torchserve exited while waiting for {what}")
            failed = self.failed_models()
            if model is not None and model in failed:
                raise self._start_error(f"model '{model}' failed to load: {failed[model]}", failed_models=failed)
            if time.monotonic() >= deadline:
                raise self._start_error(f"torchserve did not become ready ({what}) in time", failed_models=failed)
            time.sleep(0.2)

    def _start_error(self, reason: str, failed_models: Mapping[str, str] | None = None) -> ServerStartError:
        proc = self._process
        return ServerStartError(
            reason,
            command=proc.command if proc else [],
            returncode=proc.returncode if proc else None,
            log_tail=self.log_tail(),
            log_path=self.log_dir,
            failed_models=failed_models,
        )

    def _api_up(self) -> bool:
        status, _, _ = self.request("GET", "management", "/models", timeout=2.0)
        return status == 200

    def _workers_ready(self, name: str) -> bool:
        status, _, body = self.request("GET", "management", f"/models/{name}", timeout=5.0)
        if status != 200:
            return False
        desc = json.loads(body)
        for version in desc if isinstance(desc, list) else [desc]:
            workers = version.get("workers") or []
            need = max(1, int(version.get("minWorkers", 1) or 1))
            if sum(1 for w in workers if w.get("status") == "READY") < need:
                return False
        return True

    def failed_models(self) -> dict[str, str]:
        """Models whose worker failed to load (TorchServe retries forever with back-off), with the reason."""
        out: dict[str, str] = {}
        for m in _LOAD_FAILED.finditer(read_log_tail(self.log_dir / "model_log.log", 2000)):
            out[m.group("model")] = m.group("reason").strip()
        for m in _RETRY.finditer(read_log_tail(self.log_dir / "ts_log.log", 400)):
            out.setdefault(m.group("model"), "its worker died while loading (see model_log.log)")
        return out

    def stop(self, timeout: float = 60.0) -> int | None:
        """`torchserve --stop` (same TMPDIR, so exactly this server), then reap everything in its process group."""
        proc = self._process
        if proc is None:
            return None
        if proc.alive and self._tmpdir is not None:
            try:
                subprocess.run(
                    [sys.executable, "-m", "ts.model_server", "--stop", "--foreground"],
                    env=self._environ(),
                    cwd=self.workdir,
                    capture_output=True,
                    timeout=timeout,
                )
            except (subprocess.TimeoutExpired, OSError):
                pass
        java = self.pid
        rc = proc.stop(timeout=15.0)
        if java is not None and pid_alive(java):  # never expected: Java outside the group
            try:
                os.kill(java, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._process = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        if self._own_workdir and self._started and self._workdir is not None:  # keep the logs of a failed start
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir, self._own_workdir = None, False
        self._started = False
        return rc

    def log_tail(self, n_lines: int = 40) -> str:
        """The last lines of ts_log.log and model_log.log (handler tracebacks land there) and the stdout log."""
        if self._workdir is None:
            return ""
        parts = []
        for path in (self.log_dir / "ts_log.log", self.log_dir / "model_log.log", self.stdout_log):
            tail = read_log_tail(path, n_lines)
            if tail.strip():
                parts.append(f"== {path.name} ==\n{tail}")
        return "\n".join(parts)

    def cleanup(self) -> None:
        """Stop, and remove the work folder if this object created it."""
        self.stop()
        if self._own_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __repr__(self) -> str:
        return f"<TorchServeServer inference={self.inference_url if self._ports else '?'} alive={self.alive}>"

    # -- HTTP ----------------------------------------------------------------------------------
    @property
    def key_file(self) -> Path:
        """Where TorchServe writes its token-auth keys: key_file.json in the folder it starts in (the work folder)."""
        return self.workdir / "key_file.json"

    def _key_entries(self) -> dict[str, dict[str, str]]:
        if self.disable_token_auth or self._workdir is None:
            return {}
        try:
            data = json.loads(self.key_file.read_text())
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, dict) and "key" in v}

    def keys(self) -> dict[str, str]:
        """Token-auth keys from key_file.json: `inference`, `management` and `API` (empty with disable_token_auth)."""
        if not self._keys:
            self._keys = {k: v["key"] for k, v in self._key_entries().items()}
        return self._keys

    def key_expiry(self, api: str = "inference") -> str | None:
        """When `api`'s key stops working (TorchServe's `token_expiration_min`, 60 min by default), as written
        in the key file; None without token auth (the `API` key, which renews the others, never expires)."""
        return self._key_entries().get(api, {}).get("expiration time")

    def curl_command(self, api: str, path: str, key: str | None = None) -> str:
        """A `curl` line that calls `path` on `api` with the key token auth needs (TorchServe answers 400
        "Token Authorization failed" to a request without it, /ping included); `key` names another key
        of the key file (`API` renews the others)."""
        auth = [item for k, v in self._auth(api, key).items() for item in ("-H", f"{k}: {v}")]
        return shlex.join(["curl", *auth, self._url(api) + path])

    @property
    def client(self) -> TorchServeClient:
        """This server's inference, management and metrics APIs, with the keys it wrote this start."""
        return TorchServeClient(
            self.inference_url, self.management_url, self.metrics_url, keys=self.keys, log_tail=self.log_tail
        )

    def _auth(self, api: str, key_name: str | None = None) -> dict[str, str]:
        return self.client.auth(api, key_name)

    def _url(self, api: str) -> str:
        return self.client.url(api)

    def request(
        self,
        method: str,
        api: str,
        path: str,
        body: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP call to the `inference`, `management` or `metrics` API: (status, headers, body)."""
        return self.client.request(method, api, path, body, headers=headers, timeout=timeout)

    def predict(self, model: str, payload: Any, *, version: str | None = None, timeout: float = 60.0) -> Any:
        """POST /predictions/<model>[/<version>] with a JSON payload; returns the decoded JSON answer.
        Raises TorchServeAPIError (with the body and the log tail) for any non-200 answer."""
        return self.client.predict(model, payload, version=version, timeout=timeout)

    def wfpredict(self, workflow: str, payload: Any, *, timeout: float = 60.0) -> Any:
        """POST /wfpredict/<workflow> with a JSON payload; returns the decoded JSON answer."""
        return self.client.wfpredict(workflow, payload, timeout=timeout)

    def describe(self, model: str) -> Any:
        return self.client.describe(model)

    def list_models(self) -> list[str]:
        return self.client.list_models()

    def register_workflow(self, war: str, timeout: float = 120.0) -> None:
        """POST /workflows?url=<war> (in the workflow store); waits for its models' workers."""
        self.client.register_workflow(war, timeout)

    def metrics(self) -> str:
        """GET /metrics on the metrics API (Prometheus text)."""
        return self.client.metrics()
