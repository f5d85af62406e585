"""The bundled server's Python-based onnxruntime and pytorch backends read a config as the native backends do and
hand the runners the same settings in their own words (no server here: the translation alone)."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import ModuleType

from repoforge.runtime.onnx_runner import OnnxRunner
from repoforge.servers.triton_install import python_based_backend


def _load(name: str) -> ModuleType:
    # The backend imports the runtime copy shipped beside it (repoforge_runtime); in this process that is
    # repoforge.runtime itself, under the shipped name.
    import repoforge.runtime.torchscript_runner  # noqa: F401 - registers the submodule for the alias below

    for mod in [m for m in list(sys.modules) if m == "repoforge.runtime" or m.startswith("repoforge.runtime.")]:
        sys.modules.setdefault("repoforge_runtime" + mod.removeprefix("repoforge.runtime"), sys.modules[mod])
    spec = importlib.util.spec_from_file_location(f"python_based_{name}", python_based_backend(name))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(config: dict) -> dict[str, str]:
    return {"model_name": "m", "model_version": "1", "model_repository": "/r/m", "model_config": json.dumps(config)}


def _params(args: dict[str, str]) -> dict[str, str]:
    return {k: v["string_value"] for k, v in json.loads(args["model_config"])["parameters"].items()}


def test_onnxruntime_backend_reads_the_native_parameters() -> None:
    ort = _load("onnxruntime")
    assert issubclass(ort.TritonPythonModel, OnnxRunner)  # the runtime's runner does the computing
    params = _params(ort.runner_args(_args({"parameters": {"intra_op_thread_count": {"string_value": "2"}}})))
    assert params["repoforge_model_file"] == "model.onnx" and params["intra_op_threads"] == "2"
    params = _params(ort.runner_args(_args({"default_model_filename": "int8.onnx"})))
    assert params["repoforge_model_file"] == "int8.onnx" and params["intra_op_threads"] == "auto"  # unset: auto
    zero = {"parameters": {"intra_op_thread_count": {"string_value": "0"}}}
    assert _params(ort.runner_args(_args(zero)))["intra_op_threads"] == "0"  # ORT's own default, as natively


def test_pytorch_backend_orders_tensors_by_their_index_and_reads_its_thread_count() -> None:
    pt = _load("pytorch")
    config = {
        "input": [{"name": "b__1"}, {"name": "a__0"}],
        "output": [{"name": "y"}, {"name": "x"}],  # no indices: config order
        "parameters": {"INTRA_OP_THREAD_COUNT": {"string_value": "0"}},  # libtorch applies counts > 0 only
    }
    out = json.loads(pt.runner_args(_args(config))["model_config"])
    assert [t["name"] for t in out["input"]] == ["a__0", "b__1"]
    assert [t["name"] for t in out["output"]] == ["y", "x"]
    assert out["parameters"]["intra_op_threads"]["string_value"] == "auto"
    assert out["parameters"]["repoforge_model_file"]["string_value"] == "model.pt"
    config["parameters"] = {"INTRA_OP_THREAD_COUNT": {"string_value": "3"}}
    assert _params(pt.runner_args(_args(config)))["intra_op_threads"] == "3"
