"""`import repoforge` exposes every command as a function, imported on first use (issue 22, item 6)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import repoforge

COMMANDS = ["build", "validate", "serve", "perf", "lint", "import_repository", "optimize", "deploy", "batch", "rollout"]


def test_all_lists_every_command_and_each_imports() -> None:
    assert set(COMMANDS) <= set(repoforge.__all__)
    for name in COMMANDS:
        assert callable(getattr(repoforge, name)), name
        exec(f"from repoforge import {name}", {})  # the import form users write


def test_import_is_lazy() -> None:
    code = "import sys, repoforge; print(sorted(m for m in sys.modules if m.startswith('repoforge.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_the_names_still_work_as_modules_in_either_order() -> None:
    code = (
        "import repoforge.batch.local as local, repoforge.build as b, repoforge\n"
        "from repoforge.perf.command import perf\n"
        "assert local.__name__ == 'repoforge.batch.local' and b.build is repoforge.build.build\n"
        "assert callable(repoforge.build) and callable(repoforge.perf) and repoforge.perf.command.perf is perf\n"
    )
    subprocess.run([sys.executable, "-c", code], timeout=60, check=True)


def test_build_lint_and_import_through_the_face(tmp_path: Path) -> None:
    from repoforge.scaffold import init

    init(tmp_path / "proj")
    built = repoforge.build(tmp_path / "proj" / "spec.yaml", tmp_path / "repo", device="cpu")
    assert built.model_names == ["classifier"]
    assert repoforge.lint(tmp_path / "repo").ok
    imported = repoforge.import_repository(tmp_path / "repo", tmp_path / "again.yaml")
    assert list(imported.models) == ["classifier"]
