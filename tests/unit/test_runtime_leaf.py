"""The runtime is self-contained: copied under another name (as every build ships it, `repoforge_runtime`) it
imports and computes in a Python where repoforge and the build-time packages cannot be imported at all."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import repoforge.runtime

RUNTIME = Path(repoforge.runtime.__file__).parent
BUILD_TIME = ("repoforge", "pydantic", "click", "jinja2", "onnx", "tritonclient", "yaml")


def test_no_absolute_import_of_repoforge_or_build_time_packages() -> None:
    bad = []
    for path in sorted(RUNTIME.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            bad += [f"{path.relative_to(RUNTIME)}:{node.lineno} {n}" for n in names if n.split(".")[0] in BUILD_TIME]
    assert not bad


CHILD = """
import importlib, importlib.abc, json, sys
BLOCKED = {blocked!r}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not available in a stock server")
        return None

sys.meta_path.insert(0, Block())
sys.path.insert(0, {root!r})
import numpy as np
import repoforge_runtime as rt
for mod in ["names", "dtypes", "config", "hashing", "online", "pipeline", "drift", "batch", "threads", "triton_model",
            "metrics", "errors", "onnx_runner", "torchscript_runner", "vector_index", "plugins", "plugins.router",
            "plugins.result_cache", "plugins.features", "plugins.semantic_cache", "torchserve.workflow",
            "torchserve.eager"]:
    importlib.import_module("repoforge_runtime." + mod)
for runner in rt.RUNNERS:
    rt.triton_python_model(runner)
from repoforge_runtime.pipeline import FeaturePipeline
pipe = FeaturePipeline.from_config(json.loads({features!r}))
x = pipe.transform({{"age": np.array([30.0, 50.0]), "city": np.array([b"paris", b"rome"], dtype=object)}})
print(json.dumps({{"shape": list(x.shape), "repoforge": "repoforge" in sys.modules}}))
"""


def test_a_copy_under_another_name_runs_without_repoforge(tmp_path: Path) -> None:
    shutil.copytree(RUNTIME, tmp_path / "repoforge_runtime", ignore=shutil.ignore_patterns("__pycache__"))
    features = json.dumps(
        {
            "kind": "features",
            "columns": [{"name": "age"}, {"name": "city", "dtype": "string"}],
            "features": [
                {"op": "standardize", "column": "age", "mean": 40, "std": 10},
                {"op": "hash", "column": "city", "buckets": 4, "output": "one_hot"},
            ],
        }
    )
    code = CHILD.format(blocked=BUILD_TIME, root=str(tmp_path), features=features)
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"shape": [2, 5], "repoforge": False}
