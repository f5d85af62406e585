"""Free TCP ports for servers started by repoforge.

Ports are found by binding to port 0 and letting the kernel choose. The sockets of one call are held
open until all ports are chosen, so the ports of a single call are always distinct. There is an
unavoidable window between closing the sockets and the server binding them; callers that pick
ports automatically should retry once with fresh ports if a server reports "address in use".
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

__all__ = ["free_port", "free_ports", "port_is_free", "ports_in_use"]


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """Return ``n`` distinct TCP ports that are free on ``host`` right now."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    sockets: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    """Return one TCP port that is free on ``host`` right now."""
    return free_ports(1, host)[0]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on ``host:port``. Uses SO_REUSEADDR, as servers do, so sockets left in
    TIME_WAIT by a previous server on the same port do not count as "in use"."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def ports_in_use(ports: Iterable[int], host: str = "127.0.0.1") -> list[int]:
    """The ports of ``ports`` that something listens on, each checked, so a caller can name all of them at once
    instead of failing on the first."""
    return [p for p in ports if not port_is_free(p, host)]
