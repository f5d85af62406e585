"""The perf example's generated model and the README's perf claims (issue 23, item 21)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from repoforge.build import build
from repoforge.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]


def test_a_missing_generated_model_points_to_make_models(tmp_path: Path) -> None:
    example = tmp_path / "perf"
    shutil.copytree(ROOT / "examples" / "perf", example, ignore=shutil.ignore_patterns("models"))
    with pytest.raises(SpecError) as err:
        build(example / "spec.yaml", tmp_path / "out", device="cpu")
    text = str(err.value)
    assert "models/mlp.onnx' not found" in text
    assert f"python {example / 'make_models.py'}" in text, text
    assert not (tmp_path / "out").exists()


def test_the_readme_torchserve_batching_figures_say_what_was_measured_when_and_where() -> None:
    readme = (ROOT / "README.md").read_text()
    para = readme[readme.index("`tinynet` above") :].split("\n\n")[0]
    assert "up to concurrency 7" not in para  # c=7 measured 123/s, not 17/s
    assert re.search(r"20\d\d-\d\d-\d\d", para), para  # the date of the measurement
    assert "bench/" in para and "vCPU" in para, para  # the bench that measures it, and the machine
