"""What `repoforge lint` reports: one `Finding` per problem, collected in a `LintReport`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from repoforge.errors import Location

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One problem in one model's configuration or folder.

    ``file`` is the config.pbtxt (or the model folder when the problem is about the layout);
    ``line``/``column`` are 1-based and None when the problem has no single place in the text
    (a missing field, a missing file).
    """

    severity: Severity
    model: str
    field: str
    message: str
    file: str
    line: int | None = None
    column: int | None = None

    @property
    def location(self) -> str:
        """`file:line:column`, written as spec problems write theirs (repoforge.errors.Location)."""
        return str(Location(self.file, self.line, self.column))

    def __str__(self) -> str:
        where = f" {self.field}" if self.field else ""
        return f"{self.location}: {self.severity}: model '{self.model}'{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LintReport:
    """All findings for a repository (or one config), in a stable order."""

    path: str
    findings: list[Finding] = field(default_factory=list)
    #: Model folders that were looked at (sorted).
    models: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    @property
    def exit_code(self) -> int:
        """What the CLI exits with: 1 on errors, 0 with warnings only."""
        return 0 if self.ok else 1

    def for_model(self, model: str) -> list[Finding]:
        return [f for f in self.findings if f.model == model]

    def models_with_errors(self) -> set[str]:
        return {f.model for f in self.errors}

    def extend(self, findings: Iterable[Finding]) -> None:
        self.findings.extend(findings)

    def sort(self) -> None:
        order = {"error": 0, "warning": 1}
        self.findings.sort(
            key=lambda f: (f.model, f.file, f.line or 0, f.column or 0, order[f.severity], f.field, f.message)
        )

    def format(self) -> str:
        """Human-readable text: one line per finding, then a summary line."""
        lines = [str(f) for f in self.findings]
        n_err, n_warn = len(self.errors), len(self.warnings)
        summary = f"{len(self.models)} model(s) checked: {n_err} error(s), {n_warn} warning(s)"
        lines.append(summary if self.findings else f"{summary}; the repository looks loadable")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "models": list(self.models),
            "findings": [f.to_dict() for f in self.findings],
        }
