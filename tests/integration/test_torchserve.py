"""The TorchServe target end to end: spec → .mar/.war archives → one real TorchServe → answers that
match in-process torch/onnxruntime (and Triton for the same spec), batching, per-request errors,
and build-time errors that name the model.

Needs the `torchserve` extra (torch, torchserve, torch-model-archiver, torch-workflow-archiver) and
Java; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("ts")
pytest.importorskip("model_archiver")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("TorchServe needs Java", allow_module_level=True)

from repoforge.build import build  # noqa: E402
from repoforge.errors import BuildError, SpecError  # noqa: E402
from repoforge.output import MANIFEST, sha256_file  # noqa: E402
from repoforge.servers.process import ServerStartError, group_pids  # noqa: E402
from repoforge.servers.torchserve import TorchServeAPIError, TorchServeServer  # noqa: E402
from repoforge.servers.triton import TritonServer  # noqa: E402
from repoforge.torchserve.eager import load_eager  # noqa: E402

# torch 2.13 deprecates TorchScript; the reference computations here still load it in-process.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
RNG = np.random.default_rng(7)

RAISING_HANDLER = """
from ts.torch_handler.base_handler import BaseHandler


class Raiser(BaseHandler):
    def initialize(self, context):
        self.initialized = True

    def handle(self, data, context):
        raise ValueError("boom from the test handler")
"""


# --------------------------------------------------------------------------------------------
# Fixtures: the example (models generated into a temp copy), built once; one TorchServe
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of examples/torchserve (+ the tabular classifier it reuses by relative path) with its
    models generated, so the tests never write into the source tree."""
    root = tmp_path_factory.mktemp("examples")
    shutil.copytree(
        EXAMPLES / "torchserve", root / "torchserve", ignore=shutil.ignore_patterns("models", "__pycache__")
    )
    shutil.copytree(EXAMPLES / "tabular", root / "tabular")
    subprocess.run(
        [sys.executable, str(root / "torchserve" / "make_models.py"), str(root / "torchserve")],
        check=True,
        capture_output=True,
    )
    return root


@pytest.fixture(scope="module")
def built(example: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("ts") / "repo"
    return build(example / "torchserve" / "spec.yaml", out, target="torchserve", device="cpu")


FEATURES_SPEC = """\
version: 1
models:
  - name: feats
    format: python
    max_batch_size: 8
    plugin:
      kind: features
      columns: [{name: city, dtype: BYTES, fill: unknown}, {name: age, dtype: FP32, fill: 35}]
      features:
        - {op: standardize, column: age, mean: 40, std: 12}
        - {op: vocabulary, column: city, values: [paris, london], oov_buckets: 1}
        - {op: hash, column: city, buckets: 4, output: one_hot}
"""


@pytest.fixture(scope="module")
def extra_models(example: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Archives the server also serves: a model whose own handler raises, and the classifier of
    examples/ensemble (the session's Triton serves the same spec, so the two targets can be compared)."""
    d = tmp_path_factory.mktemp("extra")
    (d / "raising_handler.py").write_text(RAISING_HANDLER)
    (d / "spec.yaml").write_text(
        textwrap.dedent("""
        version: 1
        models:
          - name: raiser
            format: python
            handler: raising_handler.py
    """)
    )
    raiser = build(d / "spec.yaml", d / "out", target="torchserve", device="cpu")
    same = build(EXAMPLES / "ensemble" / "spec.yaml", d / "same-spec", target="torchserve", device="cpu")
    (d / "feats.yaml").write_text(FEATURES_SPEC)
    feats = build(d / "feats.yaml", d / "feats", target="torchserve", device="cpu")
    return {
        "raiser": raiser.archives["raiser"],
        "same_spec": same.archives["classifier"],
        "feats": feats.archives["feats"],
    }


@pytest.fixture(scope="module")
def server(
    built, extra_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TorchServeServer]:
    """One real TorchServe for the module, stopped even if a test fails."""
    store = built.model_store
    shutil.copyfile(extra_models["raiser"], store / "raiser.mar")
    shutil.copyfile(extra_models["same_spec"], store / "same_spec.mar")
    shutil.copyfile(extra_models["feats"], store / "feats.mar")
    models = ["classifier.mar", "scaler.mar", "tinynet.mar", "raiser.mar", "same_spec=same_spec.mar", "feats.mar"]
    ts = TorchServeServer(
        built.output, models, workflows="all", disable_token_auth=True, workdir=tmp_path_factory.mktemp("ts-work")
    )
    with ts:
        yield ts
    assert not ts.alive


def _post(server: TorchServeServer, model: str, body: object) -> tuple[int, dict[str, str], object]:
    status, headers, payload = server.request("POST", "inference", f"/predictions/{model}", body)
    return status, headers, json.loads(payload)


# --------------------------------------------------------------------------------------------
# Build (no server)
# --------------------------------------------------------------------------------------------
def test_build_writes_archives_config_and_lock(built) -> None:
    out = built.output
    assert sorted(p.name for p in (out / "model-store").glob("*.mar")) == [
        "classifier.mar",
        "scaler.mar",
        "tinynet.mar",
    ]
    assert (out / "wf-store" / "pipeline.war").is_file()
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["target"] == "torchserve" and manifest["workflows"] == ["pipeline"]
    for rel, digest in manifest["files"].items():
        assert sha256_file(out / rel) == digest, rel
    assert set(manifest["files"]) == {
        p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != MANIFEST
    }
    props = (out / "config.properties").read_text()
    assert "inference_address=http://127.0.0.1:8080" in props and "metrics_mode=prometheus" in props
    # issue 21: the ONNX archive carries requirements.txt (onnxruntime), so TorchServe installs it per model
    assert "install_py_dep_per_model=true" in props and "load_models=classifier.mar,scaler.mar,tinynet.mar" in props
    assert manifest["python_requirements"] == {"classifier": ["onnxruntime>=1.17"]}
    assert "disable_token_authorization" not in props  # token auth stays on in generated configs


def test_the_same_spec_builds_byte_identical_archives(built, example: Path, tmp_path: Path) -> None:
    """Archives carry no build time: entries sorted, one fixed timestamp, `createdOn` fixed too."""
    import zipfile

    again = build(example / "torchserve" / "spec.yaml", tmp_path / "again", target="torchserve", device="cpu")
    first = json.loads((built.output / MANIFEST).read_text())["files"]
    second = json.loads((again.output / MANIFEST).read_text())["files"]
    assert first == second
    with zipfile.ZipFile(built.archives["tinynet"]) as z:
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert [i.filename for i in z.infolist()] == sorted(i.filename for i in z.infolist())
        assert json.loads(z.read("MAR-INF/MANIFEST.json"))["createdOn"] == "01/01/1980 00:00:00"


def test_model_config_maps_batching_workers_and_handler_settings(built) -> None:
    import zipfile

    with zipfile.ZipFile(built.archives["tinynet"]) as z:
        cfg = yaml.safe_load(z.read("model-config.yaml"))
        manifest = json.loads(z.read("MAR-INF/MANIFEST.json"))
    assert (cfg["batchSize"], cfg["maxBatchDelay"], cfg["minWorkers"], cfg["maxWorkers"]) == (8, 50, 1, 1)
    assert cfg["deviceType"] == "cpu" and cfg["responseTimeout"] == 120
    assert cfg["handler"]["format"] == "torchscript" and cfg["handler"]["inputs"][0]["name"] == "x"
    assert manifest["model"]["handler"] == "repoforge_handler.py"
    with zipfile.ZipFile(built.archives["scaler"]) as z:
        cfg = yaml.safe_load(z.read("model-config.yaml"))
        assert "scaler.py" in z.namelist()
    assert (cfg["batchSize"], cfg["maxBatchDelay"]) == (
        32,
        1,
    )  # dynamic batching on by default, as on Triton; 0 ms would become 100
    assert cfg["handler"]["cache_entries"] > 0 and cfg["handler"]["model_file"] == "scaler.py"
    assert cfg["handler"]["workflows"]["pipeline"]["inputs"] == {"RAW": ["rf_request", "RAW"]}


def _write_spec(d: Path, models: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "spec.yaml").write_text("version: 1\nmodels:\n" + textwrap.indent(textwrap.dedent(models), "  "))
    return d / "spec.yaml"


def test_missing_weights_file_is_a_spec_error_naming_the_model(example: Path, tmp_path: Path) -> None:
    spec = _write_spec(
        tmp_path,
        f"""
        - name: eager_net
          format: pytorch
          path: missing.pth
          model_file: {example / "torchserve" / "scaler.py"}
          inputs: [{{name: RAW, dtype: FP32, dims: [8]}}]
          outputs: [{{name: FEATURES, dtype: FP32, dims: [8]}}]
    """,
    )
    with pytest.raises(SpecError) as err:
        build(spec, tmp_path / "out", target="torchserve", device="cpu")
    assert "eager_net" in str(err.value) and "missing.pth" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_state_dict_that_does_not_match_its_class_fails_the_build(example: Path, tmp_path: Path) -> None:
    (tmp_path / "wrong.py").write_text(
        textwrap.dedent("""
        import torch
        class Wrong(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.scale = torch.nn.Parameter(torch.ones(4))
            def forward(self, x):
                return x * self.scale
    """)
    )
    spec = _write_spec(
        tmp_path,
        f"""
        - name: mismatched
          format: pytorch
          path: {example / "torchserve" / "models" / "scaler.pth"}
          model_file: wrong.py
          inputs: [{{name: RAW, dtype: FP32, dims: [8]}}]
          outputs: [{{name: FEATURES, dtype: FP32, dims: [8]}}]
    """,
    )
    with pytest.raises(SpecError) as err:
        build(spec, tmp_path / "out", target="torchserve", device="cpu")
    text = str(err.value)
    assert "mismatched" in text and "does not match class Wrong" in text and "shift" in text
    assert not (tmp_path / "out").exists()


def test_pytorch_format_needs_model_file_and_is_refused_by_triton(example: Path, tmp_path: Path) -> None:
    spec = _write_spec(
        tmp_path,
        f"""
        - name: no_class
          format: pytorch
          path: {example / "torchserve" / "models" / "scaler.pth"}
          inputs: [{{name: RAW, dtype: FP32, dims: [8]}}]
          outputs: [{{name: FEATURES, dtype: FP32, dims: [8]}}]
    """,
    )
    with pytest.raises(SpecError, match="model_file"):
        build(spec, tmp_path / "ts", target="torchserve", device="cpu")
    with pytest.raises(SpecError, match="served by TorchServe; use --target torchserve or export TorchScript"):
        build(spec, tmp_path / "triton", target="triton", device="cpu")


def test_settings_torchserve_cannot_honour_are_warned_not_dropped(example: Path, tmp_path: Path) -> None:
    onnx = example / "tabular" / "models" / "classifier.onnx"
    spec = _write_spec(
        tmp_path,
        f"""
        - name: c
          format: onnx
          path: {onnx}
          max_batch_size: 16
          dynamic_batching: {{preferred_batch_sizes: [4, 8], max_queue_delay_us: 1500}}
          warmup: {{batch_sizes: [1]}}
          optimization: {{graph_level: 1}}
          version_policy: all
          metric_tags: {{team: a}}
          response_cache: true
          instance_groups: [{{kind: cpu, count: 2}}]
    """,
    )
    messages: list[str] = []
    result = build(spec, tmp_path / "out", target="torchserve", device="cpu", progress=messages.append)
    text = "\n".join(result.warnings)
    for word in (
        "warmup",
        "optimization",
        "version_policy",
        "metric_tags",
        "preferred_batch_sizes",
        "response_cache",
        "maxBatchDelay 2 ms",
    ):
        assert word in text, word
    assert all(f"warning: {w}" in messages for w in result.warnings)
    import zipfile

    with zipfile.ZipFile(result.archives["c"]) as z:
        cfg = yaml.safe_load(z.read("model-config.yaml"))
    assert (cfg["batchSize"], cfg["maxBatchDelay"], cfg["minWorkers"], cfg["maxWorkers"]) == (16, 2, 2, 2)


def test_smoke_inputs_on_torchserve_are_warned(example: Path, tmp_path: Path) -> None:
    """validate reads smoke.inputs on Triton only: a TorchServe build says so instead of dropping it silently."""
    import numpy as np

    np.savez(tmp_path / "smoke.npz", input=np.zeros((1, 8), np.float32))
    spec = _write_spec(
        tmp_path,
        f"""
        - name: c
          format: onnx
          path: {example / "tabular" / "models" / "classifier.onnx"}
          max_batch_size: 16
          smoke: {{inputs: smoke.npz}}
    """,
    )
    result = build(spec, tmp_path / "out", target="torchserve", device="cpu")
    assert any("smoke.inputs" in w and "random inputs" in w for w in result.warnings), result.warnings


def test_force_semantics(example: Path, tmp_path: Path) -> None:
    spec = example / "tabular" / "spec.yaml"
    out = tmp_path / "out"
    build(spec, out, target="torchserve", device="cpu")
    with pytest.raises(BuildError, match="--force"):
        build(spec, out, target="torchserve", device="cpu")
    (out / "stale.txt").write_text("old")
    build(spec, out, target="torchserve", device="cpu", force=True)
    assert not (out / "stale.txt").exists() and (out / "model-store" / "classifier.mar").is_file()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(BuildError, match="not written by repoforge"):
        build(spec, foreign, target="torchserve", device="cpu", force=True)
    assert not list(tmp_path.glob(".*tmp-*"))


# --------------------------------------------------------------------------------------------
# A real TorchServe
# --------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_torchscript_model_matches_torch_in_process(server: TorchServeServer, example: Path) -> None:
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    got = np.array(server.predict("tinynet", {"x": x.tolist()})["scores"], dtype=np.float32)
    module = torch.jit.load(str(example / "torchserve" / "models" / "tinynet.pt"))
    expected = module(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    one = server.predict("tinynet", {"x": x[0].tolist()})["scores"]  # one row without the batch axis
    np.testing.assert_allclose(one, expected[0], rtol=1e-5, atol=1e-6)


@pytest.mark.integration
def test_eager_state_dict_model_matches_and_caches(server: TorchServeServer, example: Path) -> None:
    x = RNG.standard_normal((2, 8)).astype(np.float32)
    status, headers, body = _post(server, "scaler", {"data": x.tolist()})
    assert status == 200, body
    model = load_eager(example / "torchserve" / "scaler.py", example / "torchserve" / "models" / "scaler.pth")
    expected = model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(np.array(body["FEATURES"]), expected, rtol=1e-6, atol=1e-6)
    assert headers["x-repoforge-cache"] == "miss"
    status, headers, again = _post(server, "scaler", {"RAW": x.tolist()})
    assert status == 200 and again == body and headers["x-repoforge-cache"] == "hit"


@pytest.mark.integration
def test_onnx_model_matches_onnxruntime(server: TorchServeServer, example: Path) -> None:
    x = RNG.standard_normal((5, 8)).astype(np.float32)
    got = np.array(server.predict("classifier", {"input": x.tolist()})["probabilities"], dtype=np.float32)
    sess = ort.InferenceSession(
        str(example / "tabular" / "models" / "classifier.onnx"), providers=["CPUExecutionProvider"]
    )
    np.testing.assert_allclose(got, sess.run(["probabilities"], {"input": x})[0], rtol=1e-5, atol=1e-6)


@pytest.mark.integration
def test_ensemble_workflow_equals_its_steps(server: TorchServeServer) -> None:
    raw = RNG.standard_normal((4, 8)).astype(np.float32)
    got = server.wfpredict("pipeline", {"RAW": raw.tolist()})["PROBS"]
    features = server.predict("scaler", {"RAW": raw.tolist()})["FEATURES"]
    expected = server.predict("classifier", {"input": features})["probabilities"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert {"pipeline__scaler", "pipeline__classifier"} <= set(server.list_models())
    # TorchServe workflows answer 200 whatever their nodes say: the error travels in the body.
    bad = server.wfpredict("pipeline", {"RAW": [[1.0, 2.0, 3.0]]})
    assert bad["code"] == 400 and "expected [rows] + [8]" in bad["message"]
    assert "missing input(s) RAW" in server.wfpredict("pipeline", {"nope": 1})["message"]


@pytest.mark.integration
def test_concurrent_requests_are_batched_and_bad_ones_fail_alone(server: TorchServeServer, example: Path) -> None:
    """24 concurrent requests to tinynet (batchSize 8, maxBatchDelay 50 ms): the handler sees batches
    of several requests, answers each correctly, and a malformed request in a batch gets 400 alone."""
    module = torch.jit.load(str(example / "torchserve" / "models" / "tinynet.pt"))
    xs = RNG.standard_normal((24, 1, 4)).astype(np.float32)
    bad = {5, 17}
    bodies = [{"x": [[1.0, 2.0, 3.0]]} if i in bad else {"x": xs[i].tolist()} for i in range(24)]
    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda b: _post(server, "tinynet", b), bodies))
    sizes = []
    for i, (status, headers, body) in enumerate(answers):
        if i in bad:
            assert status == 400 and "expected [rows] + [4]" in body["message"], body
            continue
        assert status == 200, body
        sizes.append(int(headers["x-repoforge-batch-size"]))
        np.testing.assert_allclose(
            body["scores"], module(torch.from_numpy(xs[i])).detach().numpy(), rtol=1e-5, atol=1e-6
        )
    assert max(sizes) > 1, sizes


@pytest.mark.integration
def test_request_errors_are_400_with_a_reason(server: TorchServeServer) -> None:
    for body, words in (
        ({"y": [[1, 2, 3, 4]]}, "unknown input"),
        ({"x": [[1, 2], [3]]}, "rectangular"),
        ({"x": [[0.0] * 4] * 9}, "1 to 8"),
    ):
        status, _, answer = _post(server, "tinynet", body)
        assert status == 400 and words in answer["message"], answer
    status, _, payload = server.request(
        "POST", "inference", "/predictions/tinynet", b"not json", headers={"Content-Type": "text/plain"}
    )
    assert status == 400 and b"not JSON" in payload


@pytest.mark.integration
def test_a_raising_handler_surfaces_the_error_and_the_log_tail(server: TorchServeServer) -> None:
    with pytest.raises(TorchServeAPIError) as err:
        server.predict("raiser", {"data": [1]})
    assert err.value.status == 503 and "Prediction failed" in str(err.value)
    deadline = time.monotonic() + 10
    while "boom from the test handler" not in err.value.log_tail and time.monotonic() < deadline:
        time.sleep(0.2)  # the worker's traceback reaches model_log.log a moment after the response
        err.value.log_tail = server.log_tail(80)
    assert "boom from the test handler" in err.value.log_tail


@pytest.mark.integration
def test_same_spec_on_triton_and_torchserve_gives_equal_answers(
    server: TorchServeServer, triton: TritonServer, built_examples: dict[str, Path]
) -> None:
    """examples/ensemble built for both targets: its classifier answers the same on TorchServe and
    on the session's real Triton (and both equal in-process onnxruntime)."""
    from repoforge.targets.triton.validate import infer
    from repoforge.triton.reader import read_repository

    x = RNG.standard_normal((6, 8)).astype(np.float32)
    ts_answer = np.array(server.predict("same_spec", {"input": x.tolist()})["probabilities"], dtype=np.float32)
    model = next(m for m in read_repository(built_examples["ensemble"]) if m.name == "classifier")
    triton_answer = infer(triton.http_url, model, {"input": x})["probabilities"]
    sess = ort.InferenceSession(
        str(EXAMPLES / "ensemble" / "models" / "classifier.onnx"), providers=["CPUExecutionProvider"]
    )
    np.testing.assert_allclose(ts_answer, sess.run(["probabilities"], {"input": x})[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ts_answer, triton_answer, rtol=1e-5, atol=1e-6)


def test_cli_validate_smoke_infers_a_torchserve_build(example: Path, tmp_path: Path) -> None:
    """`repoforge validate` on a TorchServe build starts real TorchServe (token auth on) and checks every model."""
    out = build(example / "torchserve" / "spec.yaml", tmp_path / "ts", target="torchserve", device="cpu").output
    res = subprocess.run(
        [sys.executable, "-m", "repoforge.cli", "validate", str(out), "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert {m["name"] for m in report["models"]} == {"classifier", "scaler", "tinynet", "pipeline"}
    assert next(m for m in report["models"] if m["name"] == "classifier")["max_abs_err"] == 0.0
    # The ensemble's workflow is called too (POST /wfpredict/pipeline), and equals its steps called one by one.
    workflow = next(m for m in report["models"] if m["name"] == "pipeline")
    assert workflow["ok"] and workflow["version"] == "workflow" and workflow["max_abs_err"] == 0.0, workflow
    assert "equals its steps called one by one" in workflow["message"]


@pytest.mark.integration
def test_metrics_are_prometheus_text(server: TorchServeServer) -> None:
    text = server.metrics()
    assert "# TYPE" in text and "ts_inference_requests_total" in text


@pytest.mark.integration
def test_a_model_that_cannot_load_fails_the_start_naming_it(tmp_path: Path) -> None:
    (tmp_path / "broken_handler.py").write_text(
        textwrap.dedent("""
        from ts.torch_handler.base_handler import BaseHandler
        class Broken(BaseHandler):
            def initialize(self, context):
                raise RuntimeError("weights are corrupt")
    """)
    )
    spec = _write_spec(
        tmp_path,
        """
        - name: broken
          format: python
          handler: broken_handler.py
    """,
    )
    out = build(spec, tmp_path / "out", target="torchserve", device="cpu").output
    ts = TorchServeServer(out, disable_token_auth=True, workdir=tmp_path / "work")
    started = time.monotonic()
    with pytest.raises(ServerStartError) as err:
        ts.start(timeout=60)
    assert time.monotonic() - started < 30  # fails fast instead of waiting out TorchServe's retries
    assert err.value.failed_models == {"broken": "weights are corrupt"}
    assert "model 'broken' failed to load: weights are corrupt" in str(err.value) and "model_log.log" in str(err.value)
    assert not ts.alive


@pytest.mark.integration
def test_stop_leaves_no_process_behind(built, tmp_path: Path) -> None:
    """A second server (token auth on, fixed tiny model set) next to the module's: both run at once
    (private TMPDIR, ports, gRPC ports); stopping it leaves nothing of it running."""
    ts = TorchServeServer(built.output, ["tinynet.mar"], workdir=tmp_path / "work")
    with ts:
        keys = ts.keys()
        assert {"inference", "management"} <= set(keys)
        status, _, _ = ts.request(
            "POST",
            "inference",
            "/predictions/tinynet",
            {"x": [[0, 0, 0, 0]]},
            headers={"Authorization": "Bearer wrong"},
        )
        assert status in (400, 401)
        assert "scores" in ts.predict("tinynet", {"x": [[0, 0, 0, 0]]})
        pgid = ts._process.pid  # type: ignore[union-attr]
        java = ts.pid
    assert java is not None and not group_pids(pgid)
    assert not Path(f"/proc/{java}").exists() or "Z" in Path(f"/proc/{java}/stat").read_text().split()[2]


@pytest.mark.integration
def test_cli_serve_runs_torchserve_with_token_auth_until_sigint(example: Path, tmp_path: Path) -> None:
    import signal

    out = build(example / "torchserve" / "spec.yaml", tmp_path / "ts", target="torchserve", device="cpu").output
    proc = subprocess.Popen(
        [sys.executable, "-m", "repoforge.cli", "serve", str(out), "--ports", "auto"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "token auth on" in line:
                break
        text = "".join(lines)
        assert "TorchServe is ready" in text and "tinynet" in text, text
        # The printed checks carry this start's keys (token auth on): run them exactly as printed.
        ping = _printed_command(text, "/ping")
        assert "Authorization: Bearer " in " ".join(ping) and not any(":8080" in a for a in ping), ping
        assert json.loads(_run_printed(ping))["status"] == "Healthy"
        assert "tinynet" in {
            m["modelName"] for m in json.loads(_run_printed(_printed_command(text, "/models")))["models"]
        }
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=90)[0]
        assert proc.returncode == 0 and "stopped" in rest, rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _printed_command(text: str, path: str) -> list[str]:
    """The `(curl ...)` command `serve` printed for `path`, as argv."""
    import re
    import shlex

    found = re.search(r"\((curl [^()]*" + re.escape(path) + r")\)", text)
    assert found is not None, text
    return shlex.split(found.group(1))


def _run_printed(argv: list[str]) -> str:
    """Run a printed curl line as is (plus -sS and a time bound); its output."""
    res = subprocess.run([argv[0], "-sS", "--max-time", "10", *argv[1:]], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.mark.integration
def test_features_plugin_on_torchserve_is_the_same_library_as_on_triton(
    server: TorchServeServer, tmp_path: Path
) -> None:
    """The handler runs repoforge.features, the pipeline the Triton plugin runs: answers equal it in-process."""
    from repoforge.features.pipeline import FeaturePipeline
    from repoforge.spec import load_spec

    (tmp_path / "feats.yaml").write_text(FEATURES_SPEC)
    plugin = load_spec(tmp_path / "feats.yaml").spec.models[0].plugin
    city, age = [["paris"], ["berlin"], ["london"]], [[30.0], [50.0], [float("nan")]]
    got = np.array(
        server.predict("feats", {"city": city, "age": [[30.0], [50.0], [35.0]]})["FEATURES"], dtype=np.float32
    )
    expected = FeaturePipeline(plugin).transform(
        {"city": np.array(city, dtype=object), "age": np.array(age, dtype=np.float32)}
    )
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_no_queue_delay_is_written_as_1_ms_because_torchserve_turns_0_into_100(tmp_path: Path) -> None:
    (tmp_path / "feats.yaml").write_text(FEATURES_SPEC)  # dynamic batching on by default, max_queue_delay_us 0
    res = build(tmp_path / "feats.yaml", tmp_path / "out", target="torchserve", device="cpu")
    import zipfile

    with zipfile.ZipFile(res.archives["feats"]) as z:
        cfg = yaml.safe_load(z.read("model-config.yaml"))
    assert cfg["batchSize"] == 8 and cfg["maxBatchDelay"] == 1


@pytest.mark.integration
def test_cli_perf_measures_a_torchserve_build_with_perf_analyzer(tmp_path: Path) -> None:
    (tmp_path / "feats.yaml").write_text(FEATURES_SPEC)
    out = build(tmp_path / "feats.yaml", tmp_path / "ts", target="torchserve", device="cpu").output
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "repoforge.cli",
            "perf",
            str(out),
            "-m",
            "feats",
            "--concurrency",
            "1,2",
            "--measurement-interval",
            "500",
            "--stability-percentage",
            "60",
            "-o",
            str(tmp_path / "report"),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["settings"]["service_kind"] == "torchserve"
    assert [p["concurrency"] for p in report["points"]] == [1, 2] and all(p["throughput"] > 0 for p in report["points"])


@pytest.mark.integration
def test_deploy_k8s_queries_return_data_from_this_torchserve(server: TorchServeServer, built, tmp_path: Path) -> None:
    """Every query `repoforge deploy k8s` writes for a TorchServe build (ScaledObject, alerts, dashboard), on both
    metrics it may scale on, returns data from a real Prometheus scraping this server's ts_* counters."""
    import re

    from repoforge.deploy.command import deploy_k8s
    from repoforge.deploy.dashboard import queries
    from repoforge.servers.prometheus import PrometheusServer

    every: list[tuple[str, str]] = []
    for metric in ("queue_time_per_request_us", "request_rate"):
        out = deploy_k8s(
            built.output, tmp_path / metric, sets=["autoscale.window=5s", f"autoscale.metric={metric}"]
        ).output
        every.append((metric, yaml.safe_load((out / "scaledobject.yaml").read_text())["spec"]["triggers"][0]["metadata"]["query"]))  # fmt: skip
        for rule in yaml.safe_load((out / "alerts.rules.yml").read_text())["groups"][0]["rules"]:
            m = re.fullmatch(r"\((.*)\) [<>] [-0-9.e+]+", rule["expr"]) or re.fullmatch(r"absent\((.*)\)", rule["expr"])
            assert m, rule["expr"]
            every.append((rule["alert"], m[1]))
        every += queries(json.loads((out / "dashboard.json").read_text()))
    name = yaml.safe_load((tmp_path / "request_rate" / "scaledobject.yaml").read_text())["metadata"]["name"]
    labels = {"job": f"{name}-metrics", "namespace": "default", "pod": f"{name}-0"}
    with PrometheusServer([(f"127.0.0.1:{server.ports.metrics}", labels)]) as prom:
        x = RNG.standard_normal((2, 8)).astype(np.float32)
        deadline = time.monotonic() + 30
        while True:
            server.predict("classifier", {"input": x.tolist()})
            empty = [(w, q) for w, q in every if not prom.query(q)]
            if not empty or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert not empty, "queries that returned no data:\n" + "\n".join(f"{w}: {q}" for w, q in empty)
