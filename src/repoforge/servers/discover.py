"""Where a running tritonserver's other APIs are, read from the server process itself.

Triton's HTTP API does not say on which ports its gRPC and metrics APIs listen, and `serve --ports auto` (or any
server started with its own flags) puts them anywhere, so "HTTP + 1" and "HTTP + 2" are guesses that fail. On this
machine the process that listens on the HTTP port is found through /proc (its socket's inode among the process'
file descriptors) and its command line gives `--grpc-port` and `--metrics-port` (Triton's defaults, 8001 and
8002, where the flags are absent). A server elsewhere cannot be read: callers then take the URL flags.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: Triton's own defaults for the ports a command line does not set.
TRITON_DEFAULTS = {"grpc": 8001, "metrics": 8002}
_LISTEN = "0A"
_LOCAL = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "[::1]", ""}


@dataclass(frozen=True)
class TritonPorts:
    """The ports of one running tritonserver (None: that API is switched off on its command line)."""

    pid: int
    grpc: int | None
    metrics: int | None


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and parts[3] == _LISTEN and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    return inodes


def _pid_with_socket(inodes: set[str]) -> int | None:
    wanted = {f"socket:[{i}]" for i in inodes}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                try:
                    if os.readlink(fd.path) in wanted:
                        return int(entry.name)
                except OSError:
                    continue
        except OSError:  # another user's process, or gone
            continue
    return None


def _flag(argv: list[str], name: str) -> str | None:
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith(f"{name}="):
            value = arg.split("=", 1)[1]
        elif arg == name and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def _is_local(host: str) -> bool:
    if host in _LOCAL:
        return True
    try:
        return socket.gethostbyname(host).startswith("127.")
    except OSError:
        return False


def triton_ports(http_url: str) -> TritonPorts | None:
    """The gRPC and metrics ports of the tritonserver whose HTTP API is `http_url` (host:port), read from its
    process; None when it is not a tritonserver on this machine (or /proc cannot be read)."""
    host, _, port = http_url.removeprefix("http://").rstrip("/").rpartition(":")
    if not port.isdigit() or not _is_local(host) or not Path("/proc/net/tcp").exists():
        return None
    inodes = _listening_inodes(int(port))
    pid = _pid_with_socket(inodes) if inodes else None
    if pid is None:
        return None
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    if not argv or "tritonserver" not in Path(argv[0]).name:
        return None
    out: dict[str, int | None] = {}
    for api, flag in (("grpc", "--grpc-port"), ("metrics", "--metrics-port")):
        allowed = (_flag(argv, f"--allow-{api}") or "true").lower() not in ("false", "0", "no")
        given = _flag(argv, flag)
        out[api] = (int(given) if given and given.isdigit() else TRITON_DEFAULTS[api]) if allowed else None
    return TritonPorts(pid, out["grpc"], out["metrics"])


def tritonserver_pid(grpc_url: str) -> int | None:
    """The pid of the tritonserver on this machine whose gRPC API is `grpc_url` (host:port), found by its command
    line (`--grpc-port`, default 8001), which any process may read, unlike its sockets: so a gateway in the same pod
    as Triton (`shareProcessNamespace`) finds it too. None when no single local tritonserver matches."""
    host, _, port = grpc_url.rstrip("/").rpartition(":")
    if not port.isdigit() or not _is_local(host.strip("[]")) or not Path("/proc").is_dir():
        return None
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry.name}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not argv or Path(argv[0]).name != "tritonserver":
            continue
        given = _flag(argv, "--grpc-port")
        if (int(given) if given and given.isdigit() else TRITON_DEFAULTS["grpc"]) == int(port):
            found.append(int(entry.name))
    return found[0] if len(found) == 1 else None


def answers(host: str, port: int, timeout: float = 5.0) -> bool:
    """Whether something accepts a TCP connection at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class OtherPort:
    """Where the gRPC or metrics API of the Triton serving HTTP at some host:port is, as `other_port` found it.
    `problem`: None (found, and it answers); "unreadable" (no URL given, and not a tritonserver on this machine);
    "off" (its command line switches that API off); "silent" (nothing answers at `address`)."""

    address: str  # host:port ("" unless found)
    where: str  # how it was found, for messages ("given with --grpc-url", "read from tritonserver pid 12")
    pid: int | None = None  # the tritonserver process read, if one was
    problem: Literal["unreadable", "off", "silent"] | None = None


def other_port(http_url: str, api: Literal["grpc", "metrics"], given: str | None, flag: str) -> OtherPort:
    """The `api` port of the Triton whose HTTP API is `http_url` (host:port): `given` (from `flag`), else the port
    its process on this machine was started with; then whether anything answers there. The one place `perf` and
    `rollout` find a running server's other ports; each words the problems as its own usage errors."""
    host, _, port = http_url.removeprefix("http://").rstrip("/").rpartition(":")
    if given is not None:
        address, where, pid = given.split("://")[-1].rstrip("/"), f"given with {flag}", None
    else:
        found = triton_ports(http_url) if port.isdigit() else None
        if found is None:
            return OtherPort("", "", problem="unreadable")
        number = found.grpc if api == "grpc" else found.metrics
        if number is None:
            return OtherPort("", "", found.pid, problem="off")
        address, where, pid = f"{host}:{number}", f"read from tritonserver pid {found.pid}", found.pid
    ahost, _, aport = address.rpartition(":")
    ok = aport.isdigit() and answers(ahost.strip("[]"), int(aport))
    return OtherPort(address, where, pid, problem=None if ok else "silent")
