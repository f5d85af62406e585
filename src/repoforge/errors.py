"""Errors that carry enough context for a user to fix their input without reading a traceback."""

from __future__ import annotations

import shlex
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Location:
    """A place in a source file (1-based line and column), so messages read `spec.yaml:14:7`."""

    file: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        if self.line is None:
            return self.file
        if self.column is None:
            return f"{self.file}:{self.line}"
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Problem:
    """One mistake in an input: where, which field, and what was expected."""

    location: Location
    field: str
    message: str

    def __str__(self) -> str:
        prefix = f"{self.location} {self.field}:" if self.field else f"{self.location}:"
        return f"{prefix} {self.message}"


class RepoforgeError(Exception):
    """Base class: the CLI prints these as one clean message and exits with `exit_code`."""

    exit_code: int = 1


@dataclass
class SpecError(RepoforgeError):
    """The spec is wrong. Holds every problem found, so users fix them in one pass."""

    problems: list[Problem] = field(default_factory=list)
    exit_code: int = 2

    def __post_init__(self) -> None:
        self.problems.sort(key=lambda p: (p.location.file, p.location.line or 0, p.location.column or 0))
        super().__init__(str(self))

    def __str__(self) -> str:
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in the spec:" if n > 1 else ""
        body = "\n".join(str(p) for p in self.problems)
        return f"{head}\n{body}" if head else body


class BuildError(RepoforgeError):
    """The spec is valid but the output cannot be written (e.g. it exists and --force was not given)."""

    exit_code = 2


class ArgumentError(RepoforgeError):
    """A wrong argument, found before any expensive work; `param` names it as the user typed it ('--concurrency',
    'TARGET'). The CLI turns every one into click's usage error (exit 2), in one place."""

    exit_code = 2

    def __init__(self, param: str, message: str) -> None:
        self.param = param
        super().__init__(message)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, re-raised by a command after it kept what it had (the points measured so far, say); the message
    says what and where. The CLI prints it and exits 130, as for any Ctrl-C."""


class ServeError(RepoforgeError):
    """A server could not be started, or a model did not load or answer."""

    exit_code = 1


class ServerStartError(RuntimeError):
    """A server did not become ready (raised by servers/process.py; here, beside the other errors, so the CLI
    catches it without importing the servers).

    The message always carries the command line, the exit code (if the process exited) and the tail
    of the server's log: that is what a user needs to fix the problem without hunting for files.
    """

    def __init__(
        self,
        reason: str,
        *,
        command: Sequence[str] = (),
        returncode: int | None = None,
        log_tail: str = "",
        log_path: Path | None = None,
        details: Sequence[str] = (),
        failed_models: Mapping[str, str] | None = None,
    ) -> None:
        self.reason = reason
        self.command = list(command)
        self.returncode = returncode
        self.log_tail = log_tail
        self.log_path = log_path
        self.details = list(details)
        #: Triton only: model name -> reason, parsed from the log.
        self.failed_models: dict[str, str] = dict(failed_models or {})
        super().__init__(self._format())

    def _format(self) -> str:
        lines = [self.reason]
        lines.extend(self.details)
        if self.command:
            lines.append(f"command: {shlex.join(self.command)}")
        if self.returncode is not None:
            lines.append(f"exit code: {self.returncode}{_signal_name(self.returncode)}")
        if self.log_path is not None:
            lines.append(f"log file: {self.log_path}")
        tail = self.log_tail.rstrip("\n")
        if tail:
            lines.append("--- last lines of the log ---")
            lines.append(tail)
            lines.append("--- end of log ---")
        elif self.log_path is not None and self.log_path.exists():
            lines.append(
                "(the log is empty)"
            )  # only where a server ran and wrote nothing, not for a start refused before one ran
        return "\n".join(lines)


def _signal_name(returncode: int) -> str:
    if returncode >= 0:
        return ""
    try:
        return f" (killed by {signal.Signals(-returncode).name})"
    except ValueError:
        return ""


def relpath_for_messages(path: Path) -> str:
    """Paths in messages are relative to the working directory when possible: shorter and clickable."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
