"""Start a real Triton Inference Server (CPU) from the tritonserver bundled in ``nvidia-pytriton``.

Why this module exists: the pytriton wheel ships tritonserver 2.51, the python backend and one
python-backend stub per Python version, but not in a layout tritonserver can use directly. The stub
must sit next to ``libtriton_python.so``, and site-packages must not be modified, so
``prepare_backend_dir`` builds a small backend directory in the user's cache. ``server_env`` supplies
what the stub needs to find the running venv (its ``python3`` first on PATH; PYTHONPATH is ignored)
and its libraries (the running Python's LIBDIR and ``nvidia_pytriton.libs`` on LD_LIBRARY_PATH).

An explicit binary (e.g. ``/opt/tritonserver/bin/tritonserver`` in the NGC image) is supported too;
it uses its own ``backends/`` directory.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from repoforge.runtime.names import STATE_DIR_ENV
from repoforge.triton.client import TritonAPIError, TritonClient

from .ports import free_ports, port_is_free
from .process import ManagedProcess, ServerContext, ServerStartError, read_log_tail
from .triton_install import (  # re-exported: the public names of the Triton wing's server side
    INSTALL_HINT,
    NGC_IMAGE,
    TritonInstall,
    TritonNotFoundError,
    cache_root,
    find_tritonserver,
    prepare_backend_dir,
    private_backends,
    server_env,
)
from .triton_log import address_in_use, error_lines, harmless_log_line, parse_failed_models, useful_tail

__all__ = [
    "INSTALL_HINT",
    "NGC_IMAGE",
    "TritonAPIError",
    "TritonInstall",
    "TritonNotFoundError",
    "TritonOptions",
    "TritonServer",
    "cache_root",
    "find_tritonserver",
    "harmless_log_line",
    "parse_failed_models",
    "prepare_backend_dir",
    "private_backends",
    "server_env",
]

#: NGC image that matches the bundled Triton 2.51.
ModelControl = Literal["none", "explicit", "poll"]

#: The exit timeout of a server a command starts for its own run (perf, batch, tune, validate, lint, optimize): when
#: the run ends nothing it sent is still wanted, and Triton 2.51 sometimes counts a decoupled model's cancelled
#: streams as in flight, so its default 30 s made every such run wait 30 s after its last result.
RUN_EXIT_TIMEOUT_S = 3


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------
@dataclass
class TritonOptions:
    """Everything that goes on the tritonserver command line (ports None = pick free ones)."""

    repositories: list[Path]
    host: str = "127.0.0.1"
    http_port: int | None = None
    grpc_port: int | None = None
    metrics_port: int | None = None
    model_control: ModelControl = "none"
    load_models: list[str] | None = None
    cache_size_bytes: int | None = None
    exit_on_error: bool = True
    strict_readiness: bool = True
    log_verbose: int = 0
    exit_timeout_s: int | None = None  # --exit-timeout-secs; None: Triton's own 30 s
    extra_args: list[str] = field(default_factory=list)
    binary: Path | None = None
    workdir: Path | None = None

    def __post_init__(self) -> None:
        if self.model_control not in ("none", "explicit", "poll"):
            raise ValueError(f"model_control must be none, explicit or poll, not {self.model_control!r}")
        if self.load_models and self.model_control != "explicit":
            raise ValueError("load_models needs model_control='explicit'")


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


class TritonServer(ServerContext):
    """A tritonserver process: ``with TritonServer(repo) as s: ... s.http_url ...``.

    ``start()`` returns once ``/v2/health/ready`` is 200. With ``exit_on_error=False`` it returns as
    soon as the server is live and serving even if models failed (see ``failed_models()``).
    """

    def __init__(
        self,
        repositories: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        host: str = "127.0.0.1",
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        model_control: ModelControl = "none",
        load_models: Sequence[str] | None = None,
        cache_size_bytes: int | None = None,
        exit_on_error: bool = True,
        strict_readiness: bool = True,
        log_verbose: int = 0,
        exit_timeout_s: int | None = None,
        extra_args: Sequence[str] = (),
        binary: str | os.PathLike[str] | None = None,
        workdir: str | os.PathLike[str] | None = None,
    ) -> None:
        repos = [repositories] if isinstance(repositories, (str, os.PathLike)) else list(repositories)
        if not repos:
            raise ValueError("at least one model repository is needed")
        self.options = TritonOptions(
            repositories=[Path(r).absolute() for r in repos],
            host=host,
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            model_control=model_control,
            load_models=list(load_models) if load_models is not None else None,
            cache_size_bytes=cache_size_bytes,
            exit_on_error=exit_on_error,
            strict_readiness=strict_readiness,
            log_verbose=log_verbose,
            exit_timeout_s=exit_timeout_s,
            extra_args=list(extra_args),
            binary=Path(binary) if binary is not None else None,
            workdir=Path(workdir) if workdir is not None else None,
        )
        self._ports: tuple[int, int, int] | None = None
        self._install: TritonInstall | None = None
        self._backend_dir: Path | None = None
        self._workdir: Path | None = None
        self._own_workdir = False
        self._process: ManagedProcess | None = None

    @classmethod
    def from_options(cls, options: TritonOptions) -> TritonServer:
        """Build a server from a TritonOptions (copied)."""
        o = replace(options)
        return cls(
            o.repositories, host=o.host, http_port=o.http_port, grpc_port=o.grpc_port,
            metrics_port=o.metrics_port, model_control=o.model_control, load_models=o.load_models,
            cache_size_bytes=o.cache_size_bytes, exit_on_error=o.exit_on_error,
            strict_readiness=o.strict_readiness, log_verbose=o.log_verbose, exit_timeout_s=o.exit_timeout_s,
            extra_args=o.extra_args,
            binary=o.binary, workdir=o.workdir,
        )  # fmt: skip

    # -- resolution --------------------------------------------------------------------------
    @property
    def install(self) -> TritonInstall:
        """The tritonserver used (located on first access)."""
        if self._install is None:
            self._install = find_tritonserver(self.options.binary)
        return self._install

    @property
    def ports(self) -> tuple[int, int, int]:
        """(http, grpc, metrics); free ports are chosen on first access for those left as None."""
        if self._ports is None:
            self._ports = self._choose_ports()
        return self._ports

    def _choose_ports(self) -> tuple[int, int, int]:
        o = self.options
        wanted = [o.http_port, o.grpc_port, o.metrics_port]
        fresh = iter(free_ports(sum(p is None for p in wanted), o.host if o.host != "0.0.0.0" else "127.0.0.1"))
        http, grpc, metrics = (p if p is not None else next(fresh) for p in wanted)
        return http, grpc, metrics

    @property
    def http_port(self) -> int:
        return self.ports[0]

    @property
    def grpc_port(self) -> int:
        return self.ports[1]

    @property
    def metrics_port(self) -> int:
        return self.ports[2]

    @property
    def http_url(self) -> str:
        """``host:port`` as tritonclient.http expects (no scheme)."""
        return f"{_client_host(self.options.host)}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` as tritonclient.grpc expects."""
        return f"{_client_host(self.options.host)}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """Full URL of the Prometheus metrics endpoint."""
        return f"http://{_client_host(self.options.host)}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path | None:
        return self._process.log_path if self._process is not None else None

    @property
    def workdir(self) -> Path:
        """Working directory with the log file (a temp dir unless ``workdir`` was given)."""
        if self._workdir is None:
            if self.options.workdir is not None:
                self._workdir = self.options.workdir.absolute()
                self._workdir.mkdir(parents=True, exist_ok=True)
            else:
                self._workdir = Path(tempfile.mkdtemp(prefix="repoforge-triton-"))
                self._own_workdir = True
        return self._workdir

    def _flags(self, repo_args: list[str]) -> list[str]:
        o = self.options
        args = [f"--model-repository={r}" for r in repo_args]
        args.append(f"--model-control-mode={o.model_control}")
        for name in o.load_models or ():
            args.append(f"--load-model={name}")
        if o.cache_size_bytes is not None:
            args.append(f"--cache-config=local,size={int(o.cache_size_bytes)}")
        args.append(f"--exit-on-error={'true' if o.exit_on_error else 'false'}")
        args.append(f"--strict-readiness={'true' if o.strict_readiness else 'false'}")
        if o.log_verbose:
            args.append(f"--log-verbose={int(o.log_verbose)}")
        if o.exit_timeout_s is not None:
            args.append(f"--exit-timeout-secs={int(o.exit_timeout_s)}")
        return args

    def command(self) -> list[str]:
        """The full tritonserver argv (resolves the install, backend dir and free ports)."""
        o = self.options
        if self._backend_dir is None:
            self._backend_dir = prepare_backend_dir(self.install)
        http, grpc, metrics = self.ports
        argv = [str(self.install.binary), *self._flags([str(r) for r in o.repositories])]
        argv.append(f"--backend-directory={self._backend_dir}")
        if self.install.caches_dir is not None:
            argv.append(f"--cache-directory={self.install.caches_dir}")
        argv += [
            f"--http-address={o.host}", f"--http-port={http}",
            f"--grpc-address={o.host}", f"--grpc-port={grpc}",
            f"--metrics-address={o.host}", f"--metrics-port={metrics}",
            "--allow-gpu-metrics=false",
        ]  # fmt: skip
        argv += o.extra_args
        return argv

    def docker_command(
        self, repo_dir: str | os.PathLike[str] | None = None, image: str = NGC_IMAGE, *, gpus: bool = True
    ) -> str:
        """The equivalent ``docker run`` line for the NGC image, or one built FROM it; ports default to 8000-8002.
        ``gpus=False`` (a --device cpu build) leaves out ``--gpus all``, which fails where Docker has no GPU runtime."""
        o = self.options
        repos = [Path(repo_dir).absolute()] if repo_dir is not None else o.repositories
        http, grpc, metrics = o.http_port or 8000, o.grpc_port or 8001, o.metrics_port or 8002
        mounts: list[str] = []
        inside: list[str] = []
        for i, repo in enumerate(repos):
            target = "/models" if len(repos) == 1 else f"/models{i}"
            mounts += ["-v", f"{repo}:{target}"]
            inside.append(target)
        argv = ["docker", "run", *(["--gpus", "all"] if gpus else []), "--rm",
                "-p", f"{http}:8000", "-p", f"{grpc}:8001", "-p", f"{metrics}:8002",
                *mounts, image, "tritonserver", *self._flags(inside), *o.extra_args]  # fmt: skip
        return shlex.join(argv)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> TritonServer:
        """Launch tritonserver and wait until it is ready; ServerStartError (with log tail and failed models) if not."""
        if self._process is not None and self._process.alive:
            raise RuntimeError(f"tritonserver already running (pid {self._process.pid})")
        o = self.options
        for repo in o.repositories:
            if not repo.is_dir():
                raise ServerStartError(f"model repository does not exist: {repo}")
        auto_ports = None in (o.http_port, o.grpc_port, o.metrics_port)
        for kind, port in zip(("http", "grpc", "metrics"), (o.http_port, o.grpc_port, o.metrics_port), strict=True):
            if port is not None and not port_is_free(port, o.host):
                # Checked up front: otherwise the readiness probe could be answered by whatever holds it.
                raise ServerStartError(f"{kind} port {port} on {o.host} is already in use")
        attempts = 3 if auto_ports else 1
        for attempt in range(attempts):
            if attempt:
                self._ports = self._choose_ports()
            try:
                self._start_once(timeout)
                return self
            except ServerStartError as exc:
                if attempt + 1 < attempts and address_in_use(exc.log_tail):
                    continue
                raise
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> None:
        argv = self.command()
        log_path = self.workdir / "tritonserver.log"
        with contextlib.suppress(FileNotFoundError):
            log_path.unlink()
        env = server_env(self.install)
        # State the models' instances share (the router's weights) lives in this server's own work folder.
        env.setdefault(STATE_DIR_ENV, str(self.workdir / "state"))
        proc = ManagedProcess(argv, log_path=log_path, env=env, cwd=self.workdir, name="tritonserver")
        self._process = proc
        proc.start()

        def up() -> bool:
            if not proc.alive:  # never trust a reply that might come from another server
                return False
            if self.is_ready():
                return True
            if not self.options.exit_on_error:
                # Startup is over once the HTTP service is up, even if some models failed.
                return self.is_live() and "Started HTTPService" in read_log_tail(log_path, 400)
            return False

        try:
            proc.wait_until(up, timeout, f"GET http://{self.http_url}/v2/health/ready == 200")
        except ServerStartError as exc:
            # Stop first (and wait), so the log is complete and no stub survives.
            proc.stop(timeout=60)
            raise self._start_error(exc.reason) from None

    def _start_error(self, reason: str) -> ServerStartError:
        proc = self._process
        assert proc is not None
        full_log = read_log_tail(proc.log_path, 5000)
        failed = parse_failed_models(full_log)
        details: list[str] = []
        if failed:
            details.append("models that failed to load:")
            details += [f"  {name}: {why}" for name, why in failed.items()]
        else:
            errors = error_lines(full_log)
            if errors:
                details.append("error lines in the log:")
                details += ["  " + ln for ln in errors[-10:]]
        return ServerStartError(
            f"tritonserver failed to start: {reason}" + (f" (failed models: {', '.join(failed)})" if failed else ""),
            command=proc.command,
            returncode=proc.returncode,
            log_tail=useful_tail(full_log, 40),
            log_path=proc.log_path,
            details=details,
            failed_models=failed,
        )

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` s (python stubs take ~1.3 s each to unload), then kill the group."""
        proc = self._process
        if proc is None:
            return None
        rc = proc.stop(timeout=timeout)
        if self._own_workdir and self._workdir is not None and rc is not None and rc in (0, -signal.SIGTERM):
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            self._own_workdir = False
        return rc

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.alive

    def log_tail(self, n_lines: int = 40) -> str:
        """Last lines of the server log ('' before start)."""
        return self._process.log_tail(n_lines) if self._process is not None else ""

    def failed_models(self) -> dict[str, str]:
        """Models that failed to load according to the log, ``{name: reason}``."""
        if self._process is None:
            return {}
        return parse_failed_models(read_log_tail(self._process.log_path, 5000))

    def __repr__(self) -> str:
        return f"<TritonServer http={self.http_url if self._ports else '?'} pid={self.pid} alive={self.alive}>"

    # -- HTTP API (repoforge.triton.client) -----------------------------------------------------------
    @property
    def client(self) -> TritonClient:
        """This server's HTTP control API and metrics endpoint."""
        return TritonClient(self.http_url, self.metrics_url)

    def is_live(self) -> bool:
        """GET /v2/health/live == 200 (False if unreachable)."""
        return self.client.is_live()

    def is_ready(self) -> bool:
        """GET /v2/health/ready == 200 (False if unreachable)."""
        return self.client.is_ready()

    def model_ready(self, name: str, version: str | int | None = None) -> bool:
        """GET /v2/models/<name>[/versions/<v>]/ready == 200."""
        return self.client.model_ready(name, version)

    def metadata(self) -> dict[str, Any]:
        """GET /v2: server name, version (e.g. "2.51.0") and extensions."""
        return self.client.metadata()

    def model_states(self) -> list[dict[str, str]]:
        """POST /v2/repository/index: one ``{name, version, state, reason}`` per model (version)."""
        return self.client.model_states()

    def model_config(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        """GET /v2/models/<name>/config: the config the server serves (auto-completed), as JSON."""
        return self.client.model_config(name, timeout)

    def model_stats(self, name: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """GET /v2/models/<name>/stats: one entry per loaded version (inference and execution counts, times)."""
        return self.client.model_stats(name, timeout)

    def load_model(self, name: str, timeout: float = 120.0) -> None:
        """POST /v2/repository/models/<name>/load (explicit mode); TritonAPIError with the reason on failure."""
        self.client.load_model(name, timeout)

    def unload_model(self, name: str, unload_dependents: bool = False, timeout: float = 120.0) -> None:
        """POST /v2/repository/models/<name>/unload (explicit mode)."""
        self.client.unload_model(name, unload_dependents, timeout)
