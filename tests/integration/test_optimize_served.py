"""The variants `optimize:` shipped, served by the session's real Triton, answer like the original within the gate
each passed: the same top-1 on the validation rows (within max_top1_drop) and, where the variant has one, the
element-wise tolerance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from repoforge.optimize.data import Tensor
from repoforge.optimize.gate import judge
from repoforge.servers.triton import TritonServer
from repoforge.targets.triton.validate import infer
from repoforge.triton.reader import read_repository

pytestmark = pytest.mark.integration


def test_served_variants_answer_like_the_original_within_their_gate(
    triton: TritonServer, built_examples: dict[str, Path]
) -> None:
    repo = built_examples["optimize"]
    report = json.loads((repo / "opt_classifier" / "optimize-report.json").read_text())  # shipped with the model
    project = Path(report["spec"]).parent
    lock = json.loads((repo / "repoforge.lock.json").read_text())["optimize"]["opt_classifier"]
    versions = lock["versions"]
    assert versions[str(len(versions))] == lock["selected"] and "int8_static" in versions.values()
    model = next(m for m in read_repository(repo) if m.name == "opt_classifier")
    val = np.load(project / "val.npz")
    x, labels = val["input"], val["labels"]
    # the original: fp32 in process, on the validation rows
    fp32_file = repo / "opt_classifier" / next(v for v, n in versions.items() if n == "fp32") / "model.onnx"
    ref = ort.InferenceSession(str(fp32_file), providers=["CPUExecutionProvider"]).run(["logits"], {"input": x})[0]
    from repoforge.optimize.data import resolve_targets
    from repoforge.spec import load_spec

    target = resolve_targets(load_spec(project / "spec.yaml"))[0]
    assert target.inputs == [Tensor("input", "FP32", (16,))]
    for version, name in versions.items():
        got = np.concatenate(
            [infer(triton.http_url, model, {"input": x[s : s + 16]}, version)["logits"] for s in range(0, len(x), 16)]
        )
        verdict = judge(name, target, {"logits": got}, {"logits": ref}, labels)
        assert verdict.accepted, (name, verdict.reason)
        row = next(v for v in report["variants"] if v["name"] == name)
        assert verdict.top1 == pytest.approx(row["top1"], abs=1e-9)  # served = measured in process
    # unversioned requests get the selected variant (the highest version)
    latest = infer(triton.http_url, model, {"input": x[:4]})["logits"]
    pinned = infer(triton.http_url, model, {"input": x[:4]}, str(len(versions)))["logits"]
    np.testing.assert_array_equal(latest, pinned)


def test_optimize_served_times_each_accepted_variant_through_tritonserver(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from repoforge.cli import main
    from repoforge.optimize.sample import write_project

    spec = write_project(tmp_path / "p", variants="[fp32, int8_dynamic]", extra="      batch_sizes: [4]\n")
    res = CliRunner().invoke(main, ["optimize", str(spec), "-o", str(tmp_path / "out"), "--served", "-q"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "out" / "optimize-report.json").read_text())["models"]["classifier"]
    for v in report["variants"]:
        assert set(v["served_latency_ms"]) == {"4"} and v["served_latency_ms"]["4"] > 0
        lo, hi = v["served_latency_range_ms"]["4"]
        assert lo <= v["served_latency_ms"]["4"] <= hi
    assert report["served_selected"] in ("fp32", "int8_dynamic") and report["served_selection"]
    assert "Served by tritonserver" in (tmp_path / "out" / "optimize-report.md").read_text()
