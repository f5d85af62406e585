"""A child process that repoforge owns from start to reap.

Servers (tritonserver, redis-server, torchserve) are started as real processes. ``ManagedProcess``
makes sure that:

* stdout and stderr go to one log file, so a server that fails to start can show the tail of its log;
* the child gets its own session (``start_new_session=True``), so the whole tree it spawns (e.g. the
  Triton python-backend stubs) can be killed as one process group, and Ctrl-C in a terminal reaches
  only repoforge, which then stops the server in order;
* ``stop()`` is idempotent and always reaps, so no zombie or orphaned server survives a test;
* a watchdog process stops the server's group when repoforge itself dies without stopping it (kill -9, OOM):
  it notices its parent is gone. PR_SET_PDEATHSIG cannot do this: Linux sends it when the *thread* that
  started the child exits, which would kill servers started from a worker thread.
"""

from __future__ import annotations

import atexit
import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from repoforge.errors import ServerStartError

__all__ = ["ManagedProcess", "ServerStartError", "group_pids", "pid_alive", "read_log_tail"]

#: Running children, stopped at interpreter exit: a crashed script or test run must not leave a
#: server behind (and on hosts whose PID 1 does not reap orphans, it would stay as a zombie).
_RUNNING: set[ManagedProcess] = set()

#: Run as `python -c WATCHDOG PGID PARENT`: polls until the server's group is gone (normal stop) or its parent
#: (repoforge) is, then stops the group: SIGTERM, up to 10 s, SIGKILL. Only the standard library: it starts fast.
WATCHDOG = """
import os, signal, sys, time
pgid, parent = int(sys.argv[1]), int(sys.argv[2])
def gone():  # no live member left (zombies do not count: a PID 1 that does not reap keeps them)
    if not os.path.isdir("/proc"):
        try:
            os.killpg(pgid, 0)
            return False
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    st = fh.read()
            except OSError:
                continue
            f = st[st.rfind(")") + 2:].split()
            if len(f) > 2 and int(f[2]) == pgid and f[0] not in "ZX":
                return False
    return True
while not gone():
    if os.getppid() != parent:
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGCONT, 0.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                break
            deadline = time.monotonic() + wait
            while not gone() and time.monotonic() < deadline:
                time.sleep(0.1)
            if gone():
                break
        break
    time.sleep(0.5)
"""

#: Errors that a readiness probe may raise while a server is still coming up.
_PROBE_ERRORS: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException)


def read_log_tail(path: Path, n_lines: int = 40, max_bytes: int = 256 * 1024) -> str:
    """Return the last ``n_lines`` lines of a text file (reads at most ``max_bytes`` from its end)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except FileNotFoundError:
        return ""
    lines = data.decode("utf-8", errors="replace").splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]  # the first line is probably cut
    return "\n".join(lines[-n_lines:]) if n_lines > 0 else ""


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists and is not a zombie (``os.kill(pid, 0)`` + /proc)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _proc_state(pid) not in ("Z", "X", None)


def _proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) is in parentheses and may contain spaces: split after the last ')'.
    return raw[raw.rfind(")") + 2 :].split()


def _proc_state(pid: int) -> str | None:
    stat = _proc_stat(pid)
    if stat is None:
        # No /proc (not Linux): os.kill succeeded, so assume it is running.
        return "R" if not Path("/proc/self/stat").exists() else None
    return stat[0]


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) pids whose process group is ``pgid``. Linux only (reads /proc); [] elsewhere."""
    found: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        # stat[0]=state, stat[1]=ppid, stat[2]=pgrp
        if stat is not None and len(stat) > 2 and int(stat[2]) == pgid and stat[0] not in ("Z", "X"):
            found.append(int(entry.name))
    return sorted(found)


class ServerContext:
    """`with server:` starts it (unless already running) and always stops it, even when the body raises."""

    @property
    def alive(self) -> bool:
        raise NotImplementedError

    def start(self) -> ServerContext:
        raise NotImplementedError

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        if not self.alive:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class ManagedProcess:
    """One child process with its own session and a log file; a context manager that stops it."""

    def __init__(
        self,
        command: Sequence[str | os.PathLike[str]],
        *,
        log_path: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        name: str | None = None,
    ) -> None:
        self.command: list[str] = [os.fspath(c) for c in command]
        if not self.command:
            raise ValueError("empty command")
        self.log_path = Path(log_path)
        self.env = dict(env) if env is not None else None
        self.cwd = Path(cwd) if cwd is not None else None
        self.name = name or Path(self.command[0]).name
        self._proc: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> ManagedProcess:
        """Launch the command (not through a shell). Raises ServerStartError if it cannot be executed."""
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError(f"{self.name} is already running (pid {self._proc.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            try:
                self._proc = subprocess.Popen(
                    self.command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                    close_fds=True,
                )
                _RUNNING.add(self)
                self._watchdog = _start_watchdog(self._proc.pid)
            except OSError as exc:
                raise ServerStartError(
                    f"could not execute {self.name}: {exc}",
                    command=self.command,
                    log_tail=self.log_tail(),
                    log_path=self.log_path,
                ) from exc
        return self

    @property
    def pid(self) -> int | None:
        """Pid of the child (also its process group id), or None before start()."""
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        """Exit code once the child has exited (negative: killed by that signal), else None."""
        return self._proc.poll() if self._proc is not None else None

    @property
    def alive(self) -> bool:
        """True while the child is running (it may be paused with SIGSTOP)."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, n_lines: int = 40) -> str:
        """The last ``n_lines`` of the combined stdout/stderr log."""
        return read_log_tail(self.log_path, n_lines)

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the child only (not its group); no-op if it has exited."""
        if self.alive:
            assert self._proc is not None
            try:
                self._proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the child, wait up to ``timeout`` s, then SIGKILL its whole process group.

        Idempotent; always reaps the child and kills anything left in its process group (e.g. helper
        processes the server failed to stop). Returns the exit code, or None if never started.
        """
        proc = self._proc
        if proc is None:
            return None
        _RUNNING.discard(self)
        self._stop_watchdog()
        pgid = proc.pid  # start_new_session=True: the child leads its own group
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                # A paused (SIGSTOP) process only acts on SIGTERM once continued.
                proc.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _killpg(pgid, signal.SIGKILL)
                proc.wait()
        # Leader is gone: clean up stragglers of its group. The pgid number cannot be reused while
        # any member is alive, so this cannot hit an unrelated process group.
        if group_pids(pgid) or not Path("/proc").is_dir():
            _killpg(pgid, signal.SIGKILL)
            deadline = time.monotonic() + 5.0
            while group_pids(pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
        return proc.returncode

    def _stop_watchdog(self) -> None:
        dog, self._watchdog = self._watchdog, None
        if dog is not None and dog.poll() is None:
            dog.kill()
            dog.wait(timeout=10)

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``predicate`` every 0.1 s until it is true.

        Raises ServerStartError (with the log tail) if the process exits first or ``timeout`` seconds
        pass. Connection errors raised by the predicate count as "not yet".
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                if predicate():
                    return
            except _PROBE_ERRORS:
                pass
            rc = self.returncode
            if self._proc is None or rc is not None:
                raise self.start_error(f"{self.name} exited while waiting for {what}")
            if time.monotonic() >= deadline:
                raise self.start_error(f"{self.name} did not become ready ({what}) within {timeout:g} s")
            time.sleep(0.1)

    def start_error(self, reason: str, **kwargs: object) -> ServerStartError:
        """A ServerStartError for this process, filled with its command, exit code and log tail."""
        return ServerStartError(
            reason,
            command=self.command,
            returncode=self.returncode,
            log_tail=self.log_tail(),
            log_path=self.log_path,
            **kwargs,  # type: ignore[arg-type]
        )

    # -- context manager ---------------------------------------------------------------------
    def __enter__(self) -> ManagedProcess:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "not started" if self._proc is None else ("running" if self.alive else f"exited {self.returncode}")
        return f"<ManagedProcess {self.name} pid={self.pid} {state}>"


def _start_watchdog(pgid: int) -> subprocess.Popen[bytes] | None:
    """The watchdog of group `pgid` (None where it cannot start: the server then only lacks kill -9 cleanup)."""
    try:
        return subprocess.Popen(
            [sys.executable, "-c", WATCHDOG, str(pgid), str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # not in the server's group, and Ctrl-C does not reach it
            close_fds=True,
        )
    except OSError:
        return None


@atexit.register
def _stop_all_at_exit() -> None:
    for proc in list(_RUNNING):
        try:
            proc.stop(timeout=10)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
