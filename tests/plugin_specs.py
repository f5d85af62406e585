"""The python models the plugin tests put plugins in front of (one place: the plugin tests on our Triton and
on the stock server build the same three models)."""

from __future__ import annotations

import shutil
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "plugins"

#: Spec lines (inserted as a `str.format` argument, so braces are single) for model_a (factor 1), model_b (factor 2) and a model
#: that always fails, each taking KEY (BYTES) and X (FP32 [4]).
SCALE_MODELS = """\
  - name: model_a
    format: python
    path: scale.py
    parameters: {factor: 1}
    inputs: [{name: KEY, dtype: BYTES, dims: [1]}, {name: X, dtype: FP32, dims: [4]}]
    outputs: [{name: Y, dtype: FP32, dims: [4]}]
  - name: model_b
    format: python
    path: scale.py
    parameters: {factor: 2}
    inputs: [{name: KEY, dtype: BYTES, dims: [1]}, {name: X, dtype: FP32, dims: [4]}]
    outputs: [{name: Y, dtype: FP32, dims: [4]}]
  - name: broken
    format: python
    path: broken.py
    inputs: [{name: KEY, dtype: BYTES, dims: [1]}, {name: X, dtype: FP32, dims: [4]}]
    outputs: [{name: Y, dtype: FP32, dims: [4]}]
"""


def copy_scale_models(root: Path) -> None:
    """The model files SCALE_MODELS names, next to the spec."""
    for f in ("scale.py", "broken.py"):
        shutil.copy(DATA / f, root / f)
