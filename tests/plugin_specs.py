"""The python models the plugin tests put plugins in front of (one place: the plugin tests on our Triton and
on the stock server build the same three models)."""

from __future__ import annotations

import shutil
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "plugins"

_IO = """\
    inputs: [{name: KEY, dtype: BYTES, dims: [1]}, {name: X, dtype: FP32, dims: [4]}]
    outputs: [{name: Y, dtype: FP32, dims: [4]}]
"""


def scale_model(name: str, factor: int, path: str = "scale.py") -> str:
    """Spec lines of a python model that multiplies X by `factor`, taking KEY (BYTES) and X (FP32 [4]). Put
    into a spec template as a `str.format` argument, so its braces are single."""
    return f"  - name: {name}\n    format: python\n    path: {path}\n    parameters: {{factor: {factor}}}\n" + _IO


#: model_a (factor 1), model_b (factor 2) and a model that always fails.
SCALE_MODELS = (
    scale_model("model_a", 1)
    + scale_model("model_b", 2)
    + "  - name: broken\n    format: python\n    path: broken.py\n"
    + _IO
)


def copy_scale_models(root: Path) -> None:
    """The model files SCALE_MODELS names, next to the spec."""
    for f in ("scale.py", "broken.py"):
        shutil.copy(DATA / f, root / f)
