"""The README's commands that run inside the clone leave nothing for `git status` to show."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _outputs_inside_clone() -> list[str]:
    """Output folders of README commands that build a shipped example (those are run from the clone's root),
    plus the demo's own output folder."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    outs = re.findall(r"repoforge build examples/\S+ .*?-o (\S+)", text)
    return sorted(set(outs)) + ["demo-out"]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_readme_example_outputs_are_ignored() -> None:
    outs = _outputs_inside_clone()
    assert "ts-out" in outs
    for out in outs:
        res = subprocess.run(["git", "check-ignore", "-q", f"{out}/"], cwd=ROOT, timeout=30, check=False)
        assert res.returncode == 0, f"{out}/ (built by a README command inside the clone) is not in .gitignore"
