"""A throw-away redis-server for feature caches in demos and tests.

It runs in the foreground (not daemonized) so ManagedProcess owns and reaps it, with persistence
off and its files in a temp dir. Readiness is checked with a raw ``PING`` so redis-py is not needed.
``pause()``/``resume()`` (SIGSTOP/SIGCONT: clients hang and time out) and ``restart()`` (connections
are refused for a moment, same port afterwards) simulate outages.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import weakref
from pathlib import Path

from .ports import free_port, port_is_free
from .process import ManagedProcess, ServerContext, ServerStartError

__all__ = ["RedisNotFoundError", "RedisServer", "find_redis_server", "redis_ping"]


class RedisNotFoundError(FileNotFoundError):
    """redis-server is not installed; the message says how to install it."""


def find_redis_server(binary: str | os.PathLike[str] | None = None) -> Path:
    """``binary`` if given, else ``redis-server`` on PATH (or /usr/bin, /usr/sbin, /usr/local/bin)."""
    if binary is not None:
        path = Path(binary)
        if path.is_file() and os.access(path, os.X_OK):
            return path.absolute()
        raise RedisNotFoundError(f"redis-server not found or not executable: {path}")
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/bin", "/usr/sbin", "/usr/local/bin"])
    found = shutil.which("redis-server", path=search)
    if found is None:
        raise RedisNotFoundError(
            "redis-server not found on PATH. Install it with `apt-get install redis-server` "
            "(Debian/Ubuntu; scripts/install.sh does this) or `brew install redis`."
        )
    return Path(found)


def redis_ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if a Redis server at host:port answers ``PING`` with ``+PONG``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            data = b""
            while not data.endswith(b"\r\n"):
                chunk = sock.recv(64)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(ServerContext):
    """``with RedisServer() as r: redis.Redis.from_url(r.url)``; stopped (and its files removed) on exit."""

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        binary: str | os.PathLike[str] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.port: int | None = port
        self.binary = find_redis_server(binary)
        self.extra_args = list(extra_args or [])
        self._workdir_opt = Path(workdir) if workdir is not None else None
        self._workdir: Path | None = None
        self._own_workdir = False
        self._process: ManagedProcess | None = None
        self._paused = False

    @property
    def workdir(self) -> Path:
        """Directory with the log (and redis' --dir); a temp dir unless ``workdir`` was given."""
        if self._workdir is None:
            if self._workdir_opt is not None:
                self._workdir = self._workdir_opt.absolute()
                self._workdir.mkdir(parents=True, exist_ok=True)
            else:
                self._workdir = Path(tempfile.mkdtemp(prefix="repoforge-redis-"))
                self._own_workdir = True
                # Also removed at interpreter exit if stop() is never called.
                weakref.finalize(self, shutil.rmtree, str(self._workdir), ignore_errors=True)
        return self._workdir

    @property
    def log_path(self) -> Path:
        return self.workdir / "redis.log"

    def command(self) -> list[str]:
        """The redis-server argv (chooses a free port on first call if none was given)."""
        if self.port is None:
            self.port = free_port(self.host)
        return [
            str(self.binary),
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.log_path),
            *self.extra_args,
        ]  # fmt: skip

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        if self.port is None:
            raise RuntimeError("RedisServer has no port yet; call start() first")
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.alive

    @property
    def paused(self) -> bool:
        return self._paused

    def ping(self, timeout: float = 1.0) -> bool:
        """True if the server answers PING now (False while paused or stopped)."""
        return self.port is not None and redis_ping(self.host, self.port, timeout)

    def _answers(self) -> bool:
        # Our process must be alive: never trust a reply from whatever else may hold the port.
        return self.alive and redis_ping(self.host, self.port or 0, 0.5)

    def start(self, timeout: float = 30.0) -> RedisServer:
        """Start redis-server and wait for +PONG; ServerStartError with the log tail if it fails."""
        if self.alive:
            raise RuntimeError(f"redis-server already running (pid {self.pid})")
        attempts = 3 if self._requested_port is None else 1
        if self._requested_port is not None and not port_is_free(self._requested_port, self.host):
            # Checked up front: otherwise another server on that port could answer our PING.
            raise ServerStartError(f"port {self._requested_port} on {self.host} is already in use")
        for attempt in range(attempts):
            if attempt:
                self.port = free_port(self.host)
            proc = ManagedProcess(self.command(), log_path=self.log_path, cwd=self.workdir, name="redis-server")
            self._process = proc
            proc.start()
            try:
                proc.wait_until(self._answers, timeout, "PING -> +PONG")
            except ServerStartError:
                proc.stop(timeout=5)
                if attempt + 1 < attempts and "Address already in use" in proc.log_tail(10):
                    continue
                raise proc.start_error(f"redis-server did not answer PING on {self.host}:{self.port}") from None
            self._paused = False
            return self
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the server (SIGTERM, then SIGKILL); idempotent. Removes its temp dir."""
        proc = self._process
        if proc is None:
            return None
        rc = proc.stop(timeout=timeout)  # sends SIGCONT too, so a paused server stops as well
        self._paused = False
        if self._own_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            self._own_workdir = False
        return rc

    def pause(self) -> None:
        """SIGSTOP: the port stays open but nothing answers (clients time out)."""
        if not self.alive:
            raise RuntimeError("redis-server is not running")
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after pause()."""
        if self._process is not None and self._paused:
            self._process.send_signal(signal.SIGCONT)
        self._paused = False

    def restart(self, timeout: float = 30.0) -> RedisServer:
        """Stop and start again on the same port (the data is lost: persistence is off)."""
        port = self.port
        workdir = self._workdir if not self._own_workdir else None
        self.stop()
        self.port = port
        self._requested_port = port  # keep the same port; do not retry with another
        if workdir is not None:
            self._workdir_opt = workdir
        return self.start(timeout)

    def log_tail(self, n_lines: int = 40) -> str:
        return self._process.log_tail(n_lines) if self._process is not None else ""

    def __repr__(self) -> str:
        return f"<RedisServer {self.host}:{self.port} pid={self.pid} alive={self.alive}>"
