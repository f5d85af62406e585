"""The one client of Triton's APIs: health, the repository index, load/unload, configs, statistics, the metrics
scrape and inference over HTTP and gRPC.

Why one module: the server wrapper, rollout, the repository reader, batch, validate and perf each spoke Triton's
HTTP API their own way (urllib here, tritonclient there, with different timeouts and error wording). Everything
that talks to a running Triton goes through here; `tritonclient` clients are made only by `http_client` and
`grpc_client`, always with a timeout, so nothing can hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import secrets
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from multiprocessing import shared_memory
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from repoforge import lazy
from repoforge.metrics import scrape

__all__ = [
    "model_names",
    "server_metadata",
    "async_client",
    "InferenceServerException",
    "TritonAPIError",
    "TritonClient",
    "config_message",
    "grpc_client",
    "grpc_live",
    "grpcclient",
    "http_client",
    "httpclient",
    "model_metadata_and_config",
    "repository_index",
    "served_config",
    "SystemSharedMemory",
    "is_local_server",
    "system_shared_memory_regions",
]

DEFAULT_TIMEOUT_S = 60.0


class TritonAPIError(RuntimeError):
    """A Triton HTTP API call (load/unload/index/config/stats) answered with an error status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@contextlib.contextmanager
def http_client(url: str, timeout: float) -> Iterator[httpclient.InferenceServerClient]:
    """A tritonclient HTTP client for `url` (host:port) whose connect and reads give up after `timeout` s; closed on
    exit (which also lets a server shut down promptly after a request the caller gave up on)."""
    client = httpclient.InferenceServerClient(url, network_timeout=timeout, connection_timeout=timeout)
    try:
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def grpc_client(url: str) -> Iterator[grpcclient.InferenceServerClient]:
    """A tritonclient gRPC client for `url` (host:port); every call on it passes its own `client_timeout`."""
    client = grpcclient.InferenceServerClient(url)
    try:
        yield client
    finally:
        client.close()


def async_client(protocol: str, url: str, timeout: float, connections: int) -> tuple[Any, Any]:
    """tritonclient's asyncio client of `protocol` (`grpc` or `http`) for `url`, and the protocol's module (its
    InferInput / InferRequestedOutput). gRPC calls pass their own `client_timeout`; HTTP connects within `timeout`
    and keeps at most `connections` open."""
    if protocol == "grpc":
        grpc_aio = lazy.triton_grpc_aio()

        return grpcclient, grpc_aio.InferenceServerClient(url)
    http_aio = lazy.triton_http_aio()

    return httpclient, http_aio.InferenceServerClient(url, conn_limit=max(connections, 1), conn_timeout=timeout)


def is_local_server(url: str) -> bool:
    """Whether host:port names this machine (loopback, or one of this host's own addresses): only then can the
    server map a region of this host's shared memory. A name that does not resolve is not local."""
    host = url.rsplit(":", 1)[0].strip("[]")
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        pass
    try:
        theirs = {a[4][0] for a in socket.getaddrinfo(host, None)}
        ours = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        return False
    return any(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in theirs) or bool(theirs & ours)


class SystemSharedMemory:
    """One POSIX shared-memory region (/dev/shm) that a Triton on this host reads inputs from and writes outputs
    to, so tensors skip (de)serialisation through gRPC/HTTP on both sides.

    Why the standard library's `SharedMemory` and not `tritonclient.utils.shared_memory`: that module imports
    `pkg_resources`, which setuptools no longer ships, and both do the same shm_open + mmap. It also hands the
    region to Python's resource tracker, so a client killed with -9 still leaves no segment behind. The region is
    registered under its own name; Triton opens it by key (`/` + name)."""

    def __init__(self, size: int, prefix: str = "repoforge") -> None:
        self.name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
        self.key = "/" + self.name
        self.size = size
        self._shm: shared_memory.SharedMemory | None = shared_memory.SharedMemory(self.name, create=True, size=size)

    def _buf(self) -> memoryview:
        if self._shm is None:
            raise ValueError(f"shared memory region {self.name} is destroyed")
        buf = self._shm.buf
        assert buf is not None
        return buf

    def write(self, offset: int, array: np.ndarray) -> int:
        """Copy `array` (C order) into the region at `offset`; its byte size."""
        if offset + array.nbytes > self.size:
            raise ValueError(f"{array.nbytes} bytes at {offset} do not fit region {self.name} of {self.size}")
        view: np.ndarray = np.ndarray(array.shape, array.dtype, buffer=self._buf(), offset=offset)
        view[...] = array
        return int(array.nbytes)

    def read(self, offset: int, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        """A copy of the array at `offset` (a copy: the region is reused by the next request)."""
        view: np.ndarray = np.ndarray(shape, dtype, buffer=self._buf(), offset=offset)
        return view.copy()

    async def register(self, client: Any, protocol: str, timeout: float) -> None:
        """Register the whole region with the server behind `client` (tritonclient's asyncio client of
        `protocol`); raises the client's error when the server cannot map it (another host, another /dev/shm)."""
        kw: dict[str, Any] = {"client_timeout": timeout} if protocol == "grpc" else {}
        await asyncio.wait_for(client.register_system_shared_memory(self.name, self.key, self.size, **kw), timeout)

    async def unregister(self, client: Any, protocol: str, timeout: float) -> None:
        """Best effort within `timeout`: a server that is gone has nothing registered to forget. A refusal is asked
        again every 50 ms until the time is up: Triton refuses to forget a region that requests still use, such as
        those a Ctrl-C just cancelled on the client but the server has not finished."""
        kw: dict[str, Any] = {"client_timeout": timeout} if protocol == "grpc" else {}
        deadline = time.monotonic() + timeout
        while True:
            try:
                await asyncio.wait_for(client.unregister_system_shared_memory(self.name, **kw), timeout)
                return
            except InferenceServerException as exc:  # e.g. "..., it is currently in use."
                if "not been registered" in str(exc.message() or "") or time.monotonic() + 0.05 >= deadline:
                    return
            except Exception:  # noqa: BLE001 - the server is gone or slower than the deadline
                return
            await asyncio.sleep(0.05)

    def destroy(self) -> None:
        """Unmap and unlink the region (idempotent)."""
        shm, self._shm = self._shm, None
        if shm is not None:
            shm.close()
            with contextlib.suppress(FileNotFoundError):
                shm.unlink()


def system_shared_memory_regions(url: str, timeout: float = 5.0) -> list[str]:
    """Names of the system shared-memory regions registered with the Triton at `url` (host:port, gRPC)."""
    with grpc_client(url) as client:
        status = client.get_system_shared_memory_status(as_json=True, client_timeout=timeout)
    return sorted(str(r.get("name", "")) for r in (status.get("regions") or {}).values())


def grpc_live(url: str, timeout: float = 3.0) -> bool:
    """Whether a Triton gRPC endpoint answers "live" at `url` (host:port); anything but an answer is False."""
    try:
        with grpc_client(url) as client:
            return bool(client.is_server_live(client_timeout=timeout))
    except Exception:  # noqa: BLE001 - anything but an answer means "not Triton's gRPC port"
        return False


def config_message(config: dict[str, Any]) -> mc.ModelConfig:
    """A served config (JSON, as `/v2/models/<m>/config` answers) as Triton's ModelConfig message."""
    return json_format.ParseDict(config, mc.ModelConfig(), ignore_unknown_fields=True)


def served_config(url: str, name: str, *, timeout: float = 10.0) -> mc.ModelConfig:
    """The config a running Triton at `url` (host:port, HTTP) serves for `name` (`/v2/models/<m>/config`): with what
    auto-complete filled in, which the file on disk lacks. Raises the client's error (TimeoutError, the server's
    InferenceServerException, OSError) for the caller to word."""
    with http_client(url, timeout) as client:
        served = client.get_model_config(name)
    return config_message(served)


def model_metadata_and_config(
    protocol: str, url: str, model: str, timeout: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's metadata and served config as JSON, over either protocol (`grpc` or `http`)."""
    if protocol == "grpc":
        with grpc_client(url) as gclient:
            meta = gclient.get_model_metadata(model, as_json=True, client_timeout=timeout)
            return meta, gclient.get_model_config(model, as_json=True, client_timeout=timeout)["config"]
    with http_client(url, timeout) as hclient:
        return hclient.get_model_metadata(model), hclient.get_model_config(model)


def server_metadata(protocol: str, url: str, timeout: float) -> dict[str, Any]:
    """`GET /v2` (or gRPC ServerMetadata): the server's name, version and extensions."""
    if protocol == "http":
        with http_client(url, timeout) as hclient:
            meta: dict[str, Any] = hclient.get_server_metadata()
            return meta
    with grpc_client(url) as gclient:
        gmeta: dict[str, Any] = gclient.get_server_metadata(as_json=True, client_timeout=timeout)
        return gmeta


def model_names(protocol: str, url: str, timeout: float) -> list[str]:
    """Names in the server's repository index over either protocol, sorted, each once."""
    if protocol == "http":
        with http_client(url, timeout) as hclient:
            index = hclient.get_model_repository_index()
    else:
        with grpc_client(url) as gclient:
            index = gclient.get_model_repository_index(as_json=True, client_timeout=timeout).get("models", [])
    return sorted(dict.fromkeys(n for n in (str(m.get("name", "")) for m in index) if n))


def _state_rows(rows: Any) -> list[dict[str, str]]:
    return [
        {
            "name": str(r.get("name", "")),
            "version": str(r.get("version", "")),
            "state": str(r.get("state", "")),
            "reason": str(r.get("reason", "")),
        }
        for r in rows or []
    ]


def repository_index(url: str, timeout: float) -> list[dict[str, str]]:
    """`POST /v2/repository/index` through tritonclient: one `{name, version, state, reason}` per model version.
    Raises the client's error for the caller to word."""
    with http_client(url, timeout) as client:
        return _state_rows(client.get_model_repository_index())


class TritonClient:
    """Triton's HTTP control API at `http_url` (host:port, no scheme) and, when given, its metrics endpoint."""

    def __init__(self, http_url: str, metrics_url: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.http_url = http_url
        self.metrics_url = metrics_url  # full URL (http://host:port/metrics)
        self.timeout = timeout

    # -- raw ---------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> tuple[int, bytes]:
        """One HTTP call: (status, body). An error status is returned, not raised; an unreachable server raises
        OSError (TimeoutError included)."""
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        req = urllib.request.Request(f"http://{self.http_url}{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout if timeout is None else timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def api(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        """One call whose answer must be 200: its JSON (None when empty); TritonAPIError with the server's message."""
        status, payload = self.request(method, path, body, timeout)
        if status != 200:
            raise TritonAPIError(f"{method} {path} -> HTTP {status}: {error_message(payload)}", status)
        return json.loads(payload) if payload else None

    # -- health ------------------------------------------------------------------------------------
    def _ok(self, path: str, timeout: float) -> bool:
        try:
            return self.request("GET", path, timeout=timeout)[0] == 200
        except OSError:
            return False

    def is_live(self) -> bool:
        """GET /v2/health/live == 200 (False if unreachable)."""
        return self._ok("/v2/health/live", 2.0)

    def is_ready(self) -> bool:
        """GET /v2/health/ready == 200 (False if unreachable)."""
        return self._ok("/v2/health/ready", 2.0)

    def model_ready(self, name: str, version: str | int | None = None, timeout: float = 5.0) -> bool:
        """GET /v2/models/<name>[/versions/<v>]/ready == 200 (False if unreachable)."""
        path = f"/v2/models/{name}" + (f"/versions/{version}" if version is not None else "") + "/ready"
        return self._ok(path, timeout)

    # -- repository --------------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """GET /v2: server name, version (e.g. "2.51.0") and extensions."""
        result: dict[str, Any] = self.api("GET", "/v2")
        return result

    def model_states(self, timeout: float | None = None) -> list[dict[str, str]]:
        """POST /v2/repository/index: one ``{name, version, state, reason}`` per model (version)."""
        return _state_rows(self.api("POST", "/v2/repository/index", {}, timeout))

    def model_config(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        """GET /v2/models/<name>/config: the config the server serves (auto-completed), as JSON."""
        result: dict[str, Any] = self.api("GET", f"/v2/models/{name}/config", timeout=timeout)
        return result

    def model_stats(self, name: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """GET /v2/models/<name>/stats: one entry per loaded version (inference and execution counts, times)."""
        result: list[dict[str, Any]] = (self.api("GET", f"/v2/models/{name}/stats", timeout=timeout) or {}).get(
            "model_stats", []
        )
        return result

    def load_model(self, name: str, timeout: float = 120.0) -> None:
        """POST /v2/repository/models/<name>/load (explicit mode); TritonAPIError with the reason on failure."""
        self.api("POST", f"/v2/repository/models/{name}/load", {}, timeout=timeout)

    def unload_model(self, name: str, unload_dependents: bool = False, timeout: float = 120.0) -> None:
        """POST /v2/repository/models/<name>/unload (explicit mode)."""
        body = {"parameters": {"unload_dependents": True}} if unload_dependents else {}
        self.api("POST", f"/v2/repository/models/{name}/unload", body, timeout=timeout)

    # -- inference and metrics -----------------------------------------------------------------------
    def infer(self, model: str, inputs: dict[str, np.ndarray], timeout: float | None = None) -> dict[str, np.ndarray]:
        """One HTTP inference with binary tensors: every output the response carries. Raises the client's
        InferenceServerException, OSError or TimeoutError for the caller to word."""
        t = self.timeout if timeout is None else timeout
        with http_client(self.http_url, t) as client:
            req = []
            for name, arr in inputs.items():
                tensor = httpclient.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
                tensor.set_data_from_numpy(arr)
                req.append(tensor)
            result = client.infer(model, req)
            resp = result.get_response()
            return {o["name"]: result.as_numpy(o["name"]) for o in resp.get("outputs", [])}

    def scrape(self, prefix: str = "", timeout: float | None = None) -> dict[str, float]:
        """The metrics endpoint's samples whose names start with `prefix` (`repoforge.metrics.scrape`)."""
        if self.metrics_url is None:
            raise ValueError("this client was made without a metrics URL")
        return scrape(self.metrics_url, prefix, self.timeout if timeout is None else timeout)


def error_message(payload: bytes) -> str:
    """The `error` of a Triton JSON error body, else the body as text."""
    try:
        message = json.loads(payload).get("error", payload.decode(errors="replace"))
    except (ValueError, AttributeError):
        message = payload.decode(errors="replace")
    return str(message)
