"""Optional inputs are left out of warmup requests unless the user maps them (issue 23, item 3: a router's
ROUTE_WEIGHTS filled with random data is not a weights vector)."""

from __future__ import annotations

from pathlib import Path

from repoforge.build import build
from repoforge.triton.config import parse_config

SPEC = """\
version: 1
models:
  - name: m
    format: python
    path: m.py
    max_batch_size: 4
    inputs:
      - {{name: X, dtype: FP32, dims: [3]}}
      - {{name: W, dtype: FP32, dims: [2], optional: true}}
    outputs: [{{name: Y, dtype: FP32, dims: [3]}}]
    warmup: {{batch_sizes: [1]{shapes}}}
"""


def _warmup_inputs(tmp_path: Path, shapes: str) -> set[str]:
    (tmp_path / "m.py").write_text("")
    (tmp_path / "spec.yaml").write_text(SPEC.format(shapes=shapes))
    out = build(tmp_path / "spec.yaml", tmp_path / "repo", device="cpu").output
    cfg = parse_config((out / "m" / "config.pbtxt").read_text())
    return set(cfg.model_warmup[0].inputs)


def test_warmup_leaves_an_optional_input_out(tmp_path: Path) -> None:
    assert _warmup_inputs(tmp_path, "") == {"X"}


def test_warmup_sends_an_optional_input_the_user_maps(tmp_path: Path) -> None:
    assert _warmup_inputs(tmp_path, ", shapes: {W: [2]}") == {"X", "W"}
