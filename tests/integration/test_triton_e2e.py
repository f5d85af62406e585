"""The foundation end to end: spec → repository → real Triton → answers that match onnxruntime."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as http

from repoforge.build import build
from repoforge.servers.ports import free_ports
from repoforge.servers.triton import TritonServer
from repoforge.targets.triton.validate import infer
from repoforge.triton.reader import read_repository
from repoforge.validate import validate

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "repoforge.cli"]


def test_every_example_model_is_ready_and_matches_onnxruntime(
    triton: TritonServer, built_examples: dict[str, Path]
) -> None:
    for repo in built_examples.values():
        report = validate(repo, url=triton.http_url, grpc_url=triton.grpc_url)
        assert report.ok, report.to_dict()
    names = {(c.name, c.version) for c in validate(built_examples["versions"], url=triton.http_url).checks}
    assert names == {("scorer", "1"), ("scorer", "2"), ("ranker", "2")}  # ranker: version_policy latest 1


def test_ensemble_equals_its_steps_computed_in_process(triton: TritonServer, built_examples: dict[str, Path]) -> None:
    repo = built_examples["ensemble"]
    models = {m.name: m for m in read_repository(repo)}
    raw = np.random.default_rng(3).standard_normal((5, 8)).astype(np.float32)
    got = infer(triton.http_url, models["pipeline"], {"RAW": raw})["PROBS"]
    features = infer(triton.http_url, models["preprocess"], {"RAW": raw})["FEATURES"]
    sess = ort.InferenceSession(str(repo / "classifier" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = sess.run(["probabilities"], {"input": features})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)


def test_two_versions_serve_different_weights(triton: TritonServer, built_examples: dict[str, Path]) -> None:
    scorer = next(m for m in read_repository(built_examples["versions"]) if m.name == "scorer")
    x = np.ones((2, 4), dtype=np.float32)
    v1 = infer(triton.http_url, scorer, {"input": x}, "1")["score"]
    v2 = infer(triton.http_url, scorer, {"input": x}, "2")["score"]
    assert not np.allclose(v1, v2)


def test_concurrent_requests_are_batched_into_one_onnxruntime_call(
    triton: TritonServer, built_examples: dict[str, Path]
) -> None:
    """The CPU runner answers every request of a dynamic batch correctly (split back per request)."""
    client = http.InferenceServerClient(triton.http_url, concurrency=16)
    sess = ort.InferenceSession(
        str(built_examples["ensemble"] / "classifier" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((1 + i % 3, 8)).astype(np.float32) for i in range(48)]
    pending = []
    for x in xs:
        t = http.InferInput("input", list(x.shape), "FP32")
        t.set_data_from_numpy(x)
        pending.append(client.async_infer("classifier", [t]))
    for x, p in zip(xs, pending, strict=True):
        np.testing.assert_allclose(
            p.get_result().as_numpy("probabilities"), sess.run(None, {"input": x})[0], rtol=1e-5, atol=1e-6
        )
    stats = client.get_inference_statistics("classifier")["model_stats"][0]
    client.close()
    assert stats["inference_count"] >= sum(x.shape[0] for x in xs)


def test_cli_build_then_validate_tabular(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    b = subprocess.run(
        [*CLI, "build", str(ROOT / "examples/tabular/spec.yaml"), "-o", str(repo), "--json", "--device", "cpu"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert b.returncode == 0, b.stderr
    assert json.loads(b.stdout)["models"] == ["classifier"]
    v = subprocess.run(
        [*CLI, "validate", str(repo), "--json"], capture_output=True, text=True, check=False, timeout=240
    )
    assert v.returncode == 0, v.stderr
    report = json.loads(v.stdout)
    assert report["ok"] and report["models"][0]["max_abs_err"] is not None


def test_validate_names_the_model_that_fails_to_load(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    (tmp_path / "broken.py").write_text(
        "class TritonPythonModel:\n    def initialize(self, args):\n        raise RuntimeError('weights are corrupt')\n"
    )
    spec.write_text(
        "version: 1\nmodels:\n  - name: broken\n    format: python\n    path: broken.py\n"
        "    inputs: [{name: X, dtype: FP32, dims: [2]}]\n    outputs: [{name: Y, dtype: FP32, dims: [2]}]\n"
    )
    repo = build(spec, tmp_path / "repo").output
    v = subprocess.run([*CLI, "validate", str(repo)], capture_output=True, text=True, check=False, timeout=240)
    assert v.returncode == 1
    assert "broken" in v.stderr and "weights are corrupt" in v.stderr


def test_cli_serve_answers_then_stops_on_sigint(tmp_path: Path, built_examples: dict[str, Path]) -> None:
    http_port, grpc_port, metrics_port = free_ports(3)
    proc = subprocess.Popen(
        [
            *CLI,
            "serve",
            str(built_examples["versions"]),
            "--http-port",
            str(http_port),
            "--grpc-port",
            str(grpc_port),
            "--metrics-port",
            str(metrics_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "metrics" in line:
                break
        assert any("ready" in line for line in lines), "".join(lines)
        client = http.InferenceServerClient(f"127.0.0.1:{http_port}")
        assert client.is_model_ready("scorer")
        client.close()
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=90)[0]
        assert proc.returncode == 0, rest
        assert "stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_streaming_sequence_and_bytes_models(triton: TritonServer, built_examples: dict[str, Path]) -> None:
    from repoforge.targets.triton.validate import _infer_decoupled

    models = {m.name: m for m in read_repository(built_examples["kinds"])}
    text = np.array([[b"hello"], [b"triton!"]], dtype=np.object_)
    assert infer(triton.http_url, models["text_length"], {"TEXT": text})["LENGTH"].ravel().tolist() == [5, 7]
    stream = _infer_decoupled(triton.grpc_url, models["stream3"], {"IN": np.array([10.0], dtype=np.float32)}, "", {})
    assert [r["OUT"].item() for r in stream] == [10.0, 11.0, 12.0]
    client = http.InferenceServerClient(triton.http_url)
    totals = []
    for i, x in enumerate([1.0, 2.0, 3.5]):
        t = http.InferInput("X", [1, 1], "FP32")
        t.set_data_from_numpy(np.array([[x]], dtype=np.float32))
        res = client.infer("accumulate", [t], sequence_id=42, sequence_start=i == 0, sequence_end=i == 2)
        totals.append(res.as_numpy("TOTAL").item())
    client.close()
    assert totals == [1.0, 3.0, 6.5]


def test_cli_perf_against_a_running_server_writes_a_report(triton: TritonServer, tmp_path: Path) -> None:
    out = tmp_path / "report"
    res = subprocess.run(
        [
            *CLI,
            "perf",
            triton.http_url,
            "-m",
            "classifier",
            "--grpc-url",
            triton.grpc_url,
            "--concurrency",
            "1,2",
            "--measurement-interval",
            "500",
            "--stability-percentage",
            "60",
            "-o",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert [p["concurrency"] for p in report["points"]] == [1, 2]
    assert all(p["throughput"] > 0 for p in report["points"])
    assert {"report.json", "report.md", "throughput.png"} <= {p.name for p in out.iterdir()}


def test_cli_perf_unknown_model_is_one_line_and_writes_nothing(triton: TritonServer, tmp_path: Path) -> None:
    out = tmp_path / "report"
    res = subprocess.run(
        [*CLI, "perf", triton.http_url, "-m", "nosuch", "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert res.returncode == 1
    assert res.stderr.strip().count("\n") == 0 and "nosuch" in res.stderr
    assert not out.exists()


def test_torchscript_runs_in_the_cpu_runner_and_matches_torch(
    triton: TritonServer, built_examples: dict[str, Path]
) -> None:
    import torch

    repo = built_examples["torchscript"]
    model = next(m for m in read_repository(repo) if m.name == "tiny_ts")
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    got = infer(triton.http_url, model, {"INPUT__0": x})["OUTPUT__0"]
    expected = torch.jit.load(str(repo / "tiny_ts" / "1" / "model.pt"))(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_cpu_runners_log_how_many_threads_auto_chose(triton: TritonServer) -> None:
    """`intra_op_threads: auto` is decided at load; the choice and its reason go to Triton's log."""
    assert triton.log_path is not None
    log = triton.log_path.read_text(errors="replace")
    assert "tiny_ts v1: torch intra-op threads 1 (auto:" in log
    chosen = [line for line in log.splitlines() if "onnxruntime intra_op_threads" in line]
    assert chosen and all("(auto:" in line for line in chosen), chosen[:3]
