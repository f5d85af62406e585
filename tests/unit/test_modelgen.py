"""repoforge.modelgen and the example projects built with it.

The generators must give valid ONNX that computes what its weights say, and the same bytes every time:
the examples commit their model files (or, for the big perf model, a sha256 manifest) and are expected
to be reproducible from make_models.py.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from onnx import numpy_helper

from repoforge import modelgen

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_NAMES = ["tabular", "ensemble", "versions", "perf"]
# Examples whose model files are too big to commit: only their models.sha256 manifest is committed.
GENERATED_ONLY = {"perf"}
COMMITTED_MODEL_LIMIT = 200 * 1024


def run(model: onnx.ModelProto, **feeds: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def mlp_reference(model: onnx.ModelProto, x: np.ndarray, softmax: bool) -> np.ndarray:
    """The MLP computed in numpy from the model's own initializers."""
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    layers = len(weights) // 2
    h = x.astype(np.float64)
    for i in range(layers):
        h = h @ weights[f"fc{i}.weight"] + weights[f"fc{i}.bias"]
        if i < layers - 1:
            h = np.maximum(h, 0.0)
    if softmax:
        e = np.exp(h - h.max(axis=1, keepdims=True))
        h = e / e.sum(axis=1, keepdims=True)
    return h


def io_signature(values: list[onnx.ValueInfoProto]) -> dict[str, list[int | str]]:
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def read_manifest(path: Path) -> dict[str, str]:
    return {rel: digest for digest, rel in (line.split("  ", 1) for line in path.read_text().splitlines())}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- generators -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sizes", "softmax"),
    [([8, 3], False), ([8, 32, 3], True), (modelgen.SMALL_MLP, False), ([4, 8, 8, 8, 2], True)],
)
def test_mlp_is_valid_and_matches_numpy(sizes: list[int], softmax: bool) -> None:
    model = modelgen.mlp(sizes, seed=3, input_name="x", output_name="y", softmax=softmax)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert io_signature(list(model.graph.input)) == {"x": ["batch", sizes[0]]}
    assert io_signature(list(model.graph.output)) == {"y": ["batch", sizes[-1]]}

    x = np.random.default_rng(0).standard_normal((5, sizes[0])).astype(np.float32)
    (y,) = run(model, x=x)
    assert y.shape == (5, sizes[-1]) and y.dtype == np.float32
    np.testing.assert_allclose(y, mlp_reference(model, x, softmax), rtol=1e-4, atol=1e-5)
    if softmax:
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


def test_mlp_weights_are_scaled_and_seeded() -> None:
    a, b = modelgen.mlp([64, 16, 4], seed=0), modelgen.mlp([64, 16, 4], seed=1)
    w0 = numpy_helper.to_array(a.graph.initializer[0])
    assert w0.shape == (64, 16) and np.abs(w0).max() <= 1 / 8
    assert a.SerializeToString() == modelgen.mlp([64, 16, 4], seed=0).SerializeToString()
    assert not np.array_equal(w0, numpy_helper.to_array(b.graph.initializer[0]))


@pytest.mark.parametrize("sizes", [[], [8], [8, 0, 3]])
def test_mlp_rejects_bad_sizes(sizes: list[int]) -> None:
    with pytest.raises(ValueError):
        modelgen.mlp(sizes)


def test_add_mul() -> None:
    model = modelgen.add_mul(6)
    onnx.checker.check_model(model, full_check=True)
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal((3, 6)).astype(np.float32) for _ in range(2))
    (y,) = run(model, a=a, b=b)
    np.testing.assert_array_equal(y, (a + b) * 2)


def test_save_is_deterministic(tmp_path: Path) -> None:
    model = modelgen.mlp([8, 16, 3], seed=5, softmax=True)
    digest = modelgen.save(model, tmp_path / "a.onnx")
    assert digest == sha256(tmp_path / "a.onnx")

    # Fields that vary between runs or tool versions do not reach the file, and the input is untouched.
    noisy = onnx.ModelProto()
    noisy.CopyFrom(model)
    noisy.producer_version = "1.2.3"
    noisy.doc_string = noisy.graph.doc_string = noisy.graph.node[0].doc_string = "built at 12:00"
    assert modelgen.save(noisy, tmp_path / "sub" / "b.onnx") == digest
    assert noisy.producer_version == "1.2.3"
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "sub" / "b.onnx").read_bytes()

    loaded = onnx.load(str(tmp_path / "a.onnx"))
    x = np.ones((2, 8), dtype=np.float32)
    np.testing.assert_array_equal(run(loaded, input=x)[0], run(model, input=x)[0])


def test_save_all_writes_manifest(tmp_path: Path) -> None:
    digests = modelgen.save_all({"m/b.onnx": modelgen.add_mul(), "m/a.onnx": modelgen.mlp([2, 2])}, tmp_path)
    assert list(digests) == ["m/b.onnx", "m/a.onnx"]
    assert read_manifest(tmp_path / modelgen.MANIFEST) == digests
    assert all(sha256(tmp_path / rel) == d for rel, d in digests.items())


# --- examples ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_models_regenerate_byte_for_byte(name: str, tmp_path: Path) -> None:
    source = EXAMPLES / name
    committed = read_manifest(source / modelgen.MANIFEST)
    copy = tmp_path / name
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("models", modelgen.MANIFEST, "__pycache__"))

    # Run from elsewhere: the script must write next to its own spec, not into the working directory.
    subprocess.run([sys.executable, str(copy / "make_models.py")], cwd=tmp_path, check=True, capture_output=True)

    assert (copy / modelgen.MANIFEST).read_text() == (source / modelgen.MANIFEST).read_text()
    generated = {str(p.relative_to(copy)) for p in (copy / "models").rglob("*") if p.is_file()}
    assert generated == set(committed)
    for rel, digest in committed.items():
        assert sha256(copy / rel) == digest, rel
        if name in GENERATED_ONLY:
            continue
        assert (source / rel).read_bytes() == (copy / rel).read_bytes(), rel
        assert (source / rel).stat().st_size < COMMITTED_MODEL_LIMIT, rel


def onnx_paths(entry: dict) -> list[str]:
    versions = entry.get("versions")
    return list(versions.values()) if isinstance(versions, dict) else [entry["path"]]


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_spec_matches_its_models(name: str) -> None:
    """Every file a spec names exists (or is in the manifest), and declared tensors match the models."""
    root = EXAMPLES / name
    spec = yaml.safe_load((root / "spec.yaml").read_text())
    assert spec["version"] == 1
    manifest = read_manifest(root / modelgen.MANIFEST)
    models = {m["name"]: m for m in spec["models"]}
    signatures: dict[str, tuple[set[str], set[str]]] = {}
    for model_name, entry in models.items():
        if entry["format"] == "onnx":
            for rel in onnx_paths(entry):
                assert rel in manifest, rel
            path = root / onnx_paths(entry)[0]
            if name in GENERATED_ONLY and not path.exists():
                continue
            graph = onnx.load(str(path)).graph
            for key, values in (("inputs", graph.input), ("outputs", graph.output)):
                actual = {n: dims[1:] for n, dims in io_signature(list(values)).items()}
                declared = {t["name"]: t["dims"] for t in entry.get(key, [])}
                assert declared.items() <= actual.items(), (model_name, key)
            signatures[model_name] = ({v.name for v in graph.input}, {v.name for v in graph.output})
        elif entry["format"] == "python":
            assert (root / entry["path"]).is_file()
            signatures[model_name] = ({t["name"] for t in entry["inputs"]}, {t["name"] for t in entry["outputs"]})
    for entry in models.values():
        for step in entry.get("steps", []):
            inputs, outputs = signatures[step["model"]]
            assert set(step["inputs"]) == inputs and set(step["outputs"]) == outputs, step


class _Tensor:
    def __init__(self, name: str, data: np.ndarray) -> None:
        self.name, self.data = name, data

    def as_numpy(self) -> np.ndarray:
        return self.data


def test_ensemble_preprocess_normalises_each_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """preprocess.py run against a stand-in for Triton's triton_python_backend_utils."""
    pb_utils = types.ModuleType("triton_python_backend_utils")
    pb_utils.Tensor = _Tensor
    pb_utils.InferenceResponse = lambda output_tensors: output_tensors
    pb_utils.get_input_tensor_by_name = lambda request, name: request[name]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb_utils)
    spec = importlib.util.spec_from_file_location("preprocess", EXAMPLES / "ensemble" / "preprocess.py")
    assert spec and spec.loader
    preprocess = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(preprocess)

    model = preprocess.TritonPythonModel()
    model.initialize({})
    rng = np.random.default_rng(2)
    raws = [rng.uniform(0, 100, (n, 8)).astype(np.float32) for n in (1, 3, 2)]
    responses = model.execute([{"RAW": _Tensor("RAW", raw)} for raw in raws])
    assert len(responses) == len(raws)
    for raw, (out,) in zip(raws, responses, strict=True):
        assert out.name == "FEATURES" and out.data.dtype == np.float32 and out.data.flags.c_contiguous
        np.testing.assert_allclose(out.data, (raw - preprocess.MEAN) / preprocess.STD, rtol=1e-5, atol=1e-5)
