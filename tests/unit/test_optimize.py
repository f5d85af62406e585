"""`optimize:` on real models: real INT8/FP16 quantization, the gate and its reasons, located data errors,
selection, the cache a rebuild reuses, the lock file, export from torch, and the TensorRT script."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tritonclient.grpc import model_config_pb2 as mc

from repoforge.build import build
from repoforge.cli import main
from repoforge.errors import SpecError
from repoforge.optimize import RequiredVariantFailed, optimize, run_optimize
from repoforge.optimize.cache import Cache
from repoforge.optimize.sample import write_project
from repoforge.optimize.timing import Timing, select
from repoforge.spec import load_spec
from repoforge.spec.models import LatencyBudget

VARIANT_FIELDS = {"name", "accepted", "reason", "top1", "agreement", "max_abs_err", "max_rel_err", "latency_ms",
                  "throughput", "size_bytes", "sha256"}  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_project(tmp_path_factory.mktemp("opt"))


def _messages(exc: SpecError) -> list[str]:
    return [str(p) for p in exc.problems]


def test_real_int8_and_fp16_variants_are_gated_timed_and_reported(project: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    run = optimize(project, tmp_path / "out", progress=lines.append)
    report = json.loads((tmp_path / "out" / "optimize-report.json").read_text())
    m = report["models"]["classifier"]
    names = [v["name"] for v in m["variants"]]
    assert names == ["fp32", "ort_optimized", "int8_dynamic", "int8_static", "fp16"]
    for v in m["variants"]:
        assert VARIANT_FIELDS <= set(v), v["name"]
        assert v["accepted"], v["reason"]
        assert set(v["latency_ms"]) == {"1", "16"}  # 1 and max_batch_size: what the config forms
        assert v["throughput"] > 0 and len(v["sha256"]) == 64
    by = {v["name"]: v for v in m["variants"]}
    fp32 = by["fp32"]["size_bytes"]
    assert by["fp16"]["size_bytes"] < 0.7 * fp32 and by["int8_static"]["size_bytes"] < fp32
    assert 0 < by["int8_static"]["max_abs_err"] and 0 < by["fp16"]["max_abs_err"] < 1e-2
    assert by["fp32"]["top1"] > 0.9  # a real classifier: the gate judges something
    assert m["selected"] in names and run.results["classifier"].selected == m["selected"]
    assert {"onnxruntime", "onnx", "onnxconverter-common", "numpy"} <= set(report["tools"])
    assert "vnni" in m["host"]
    for f in ("optimize-report.md", "optimize-latency-accuracy.png", "reproduce.sh"):
        assert (tmp_path / "out" / f).is_file()
    assert "--no-cache" in (tmp_path / "out" / "reproduce.sh").read_text()
    again = subprocess.run(["bash", str(tmp_path / "out" / "reproduce.sh"), str(tmp_path / "again")],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr  # the same verdicts, re-measured without the cache
    assert (tmp_path / "again" / "optimize-report.json").is_file()
    assert (tmp_path / "out" / "models" / "classifier" / f"{m['selected']}.onnx").is_file()
    md = (tmp_path / "out" / "optimize-report.md").read_text()
    assert "| int8_static | yes |" in md and "VNNI" in md


def test_an_over_tight_gate_rejects_with_the_figure_and_threshold(tmp_path: Path) -> None:
    spec = write_project(
        tmp_path / "p",
        variants="[fp32, int8_static, fp16]",
        extra="      select: min_latency\n",
    )
    text = spec.read_text().replace(
        "max_top1_drop: 0.02}", "max_top1_drop: 0.02, tolerance: {max_abs: 1.0e-6, max_rel: 0}}"
    )
    spec.write_text(text)
    run = run_optimize(load_spec(spec), cache=Cache(enabled=False))
    r = run.results["classifier"]
    int8 = r.variant("int8_static")
    assert not int8.accepted
    assert "max_abs_err" in int8.reason and "max_abs 1e-06" in int8.reason and "elements" in int8.reason
    assert r.selected == "fp32"  # a rejected variant is never selected
    assert r.variant("fp32").accepted


def test_top1_drop_reason_names_the_drop_and_its_limit(tmp_path: Path) -> None:
    spec = write_project(tmp_path / "p", variants="[fp32, int8_dynamic]")
    data = dict(np.load(tmp_path / "p" / "val.npz"))
    data["labels"] = (data["labels"] + 1) % 4  # wrong labels: fp32 and int8 both low; drop is what matters
    np.savez(tmp_path / "p" / "val.npz", **data)
    spec.write_text(spec.read_text().replace("max_top1_drop: 0.02", "max_top1_drop: 0"))
    run = run_optimize(load_spec(spec), cache=Cache(enabled=False))
    v = run.results["classifier"].variant("int8_dynamic")
    assert v.gate is not None and v.gate.top1 is not None
    if not v.accepted:  # int8 may or may not move a row; when it does the reason says by how much
        assert "below fp32's" in v.reason and "max_top1_drop 0" in v.reason


def test_unknown_variant_is_a_located_error_and_nothing_is_written(project: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(project.read_text().replace("fp16]", "int4]"))
    for name in ("classifier.onnx", "calib.npz", "val.npz"):
        (tmp_path / name).write_bytes((project.parent / name).read_bytes())
    res = CliRunner().invoke(main, ["optimize", str(spec), "-o", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    assert "spec.yaml:8:" in res.output and "optimize.variants[4]" in res.output and "int8_static" in res.output
    assert not (tmp_path / "out").exists()


def test_calibration_arrays_that_do_not_match_the_inputs_are_located(project: Path, tmp_path: Path) -> None:
    root = tmp_path / "p"
    spec = write_project(root)
    np.savez(root / "calib.npz", inputs=np.zeros((4, 16), np.float32))  # wrong name
    with pytest.raises(SpecError) as err:
        run_optimize(load_spec(spec), cache=Cache(enabled=False))
    msgs = _messages(err.value)
    assert len(msgs) == 2 and all("spec.yaml:9:" in m and "optimize.calibration:" in m for m in msgs)
    assert "no array for input 'input'" in msgs[0] + msgs[1] and "no model input: inputs" in msgs[0] + msgs[1]
    np.savez(root / "calib.npz", input=np.zeros((4, 15), np.float32))  # wrong dims
    with pytest.raises(SpecError) as err:
        run_optimize(load_spec(spec), cache=Cache(enabled=False))
    assert "shape [4, 15]; the input is [batch, 16]" in _messages(err.value)[0]
    np.savez(root / "calib.npz", input=np.zeros((4, 16), np.float64))  # wrong dtype
    with pytest.raises(SpecError) as err:
        run_optimize(load_spec(spec), cache=Cache(enabled=False))
    assert "is float64; the model's input is FP32" in _messages(err.value)[0]


def test_labels_of_the_wrong_length_are_located(tmp_path: Path) -> None:
    spec = write_project(tmp_path / "p")
    data = dict(np.load(tmp_path / "p" / "val.npz"))
    np.savez(tmp_path / "p" / "val.npz", input=data["input"], labels=data["labels"][:-3])
    with pytest.raises(SpecError) as err:
        build(spec, tmp_path / "repo", device="cpu")
    (msg,) = _messages(err.value)
    assert "spec.yaml:10:" in msg and "optimize.validation.labels" in msg and "253 rows" in msg and "256" in msg
    assert not (tmp_path / "repo").exists()


def test_int8_static_without_calibration_and_required_outside_variants(tmp_path: Path) -> None:
    spec = write_project(tmp_path / "p", extra="      required: [tensorrt]\n")
    spec.write_text(spec.read_text().replace("      calibration: calib.npz\n", ""))
    with pytest.raises(SpecError) as err:
        run_optimize(load_spec(spec), cache=Cache(enabled=False))
    text = "\n".join(_messages(err.value))
    assert "int8_static needs `calibration:`" in text and "required variant 'tensorrt' is not in `variants`" in text


def test_selection_ties_within_noise_go_to_the_simpler_variant() -> None:
    t = {
        "fp32": Timing({1: (1.0, 0.9, 1.1), 32: (10.0, 9.5, 10.6)}),
        "int8_static": Timing({1: (0.95, 0.9, 1.0), 32: (9.8, 9.4, 10.1)}),  # faster, but within fp32's range
        "fp16": Timing({1: (2.0, 1.9, 2.1), 32: (20.0, 19.0, 21.0)}),
    }
    chosen, why = select(t, "max_throughput")
    assert chosen == "fp32" and "within noise" in why
    t["int8_static"] = Timing({1: (0.5, 0.45, 0.55), 32: (5.0, 4.8, 5.2)})
    assert select(t, "max_throughput")[0] == "int8_static"
    assert select(t, "min_latency")[0] == "int8_static"
    assert select(t, LatencyBudget(latency_budget_ms=6))[0] == "int8_static"
    chosen, why = select(t, LatencyBudget(latency_budget_ms=0.1))
    assert chosen == "int8_static" and "no variant meets the 0.1 ms budget" in why


def test_build_ships_the_selection_records_it_and_a_rebuild_reuses_the_cache(project: Path, tmp_path: Path) -> None:
    first: list[str] = []
    res = build(project, tmp_path / "repo", device="cpu", progress=first.append)
    lock = json.loads((tmp_path / "repo" / "repoforge.lock.json").read_text())
    entry = lock["optimize"]["classifier"]
    selected = entry["selected"]
    assert entry["versions"] == {"1": selected}
    assert lock["files"]["classifier/1/model.onnx"] == entry["variants"][selected]["sha256"]
    assert "classifier/optimize-report.json" in res.files
    again: list[str] = []
    build(project, tmp_path / "repo", device="cpu", force=True, progress=again.append)
    text = "\n".join(again)
    assert text.count("reused from the cache") >= 5 and "timings of" in text  # nothing re-made, nothing re-timed
    lock2 = json.loads((tmp_path / "repo" / "repoforge.lock.json").read_text())
    assert lock2["optimize"] == lock["optimize"]  # same inputs, same selection
    # a new threshold re-runs the gate, not the quantization
    changed = project.parent / "spec2.yaml"
    changed.write_text(project.read_text().replace("max_top1_drop: 0.02", "max_top1_drop: 0.03"))
    third: list[str] = []
    build(changed, tmp_path / "repo", device="cpu", force=True, progress=third.append)
    text = "\n".join(third)
    assert "int8_static: reused from the cache" in text and "(cached)" not in text


def test_ship_all_makes_each_accepted_variant_a_version_the_selected_last(tmp_path: Path) -> None:
    spec = write_project(tmp_path / "p", variants="[fp32, int8_dynamic, fp16]", extra="      ship: all\n")
    build(spec, tmp_path / "repo", device="cpu")
    lock = json.loads((tmp_path / "repo" / "repoforge.lock.json").read_text())["optimize"]["classifier"]
    versions = lock["versions"]
    assert sorted(versions.values()) == ["fp16", "fp32", "int8_dynamic"]
    assert versions[str(len(versions))] == lock["selected"]
    config = (tmp_path / "repo" / "classifier" / "config.pbtxt").read_text()
    assert "all {" in config


def test_a_required_variant_that_fails_its_gate_fails_the_build(tmp_path: Path) -> None:
    spec = write_project(tmp_path / "p", variants="[fp32, int8_static]", extra="      required: [int8_static]\n")
    spec.write_text(spec.read_text().replace("max_top1_drop: 0.02}", "max_top1_drop: 0.02, tolerance: {max_abs: 0}}"))
    with pytest.raises(RequiredVariantFailed) as err:
        build(spec, tmp_path / "repo", device="cpu")
    assert "required variant int8_static was rejected: max_abs_err" in str(err.value)
    assert not (tmp_path / "repo").exists()
    res = CliRunner().invoke(main, ["optimize", str(spec), "-o", str(tmp_path / "out"), "-q"])
    assert res.exit_code == 1 and "required variant int8_static" in res.output
    assert (tmp_path / "out" / "optimize-report.json").is_file()  # the report says why


def test_gpu_writes_a_trtexec_script_and_tensorrt_plan_config(tmp_path: Path) -> None:
    spec = write_project(tmp_path / "p", variants="[fp32, int8_static, tensorrt]")
    spec.write_text(
        spec.read_text().replace(
            "    max_batch_size: 16\n",
            "    max_batch_size: 16\n    dynamic_batching: {preferred_batch_sizes: [4, 8]}\n",
        )
    )
    res = CliRunner().invoke(main, ["optimize", str(spec), "-o", str(tmp_path / "out"), "--device", "gpu", "-q"])
    assert res.exit_code == 0, res.output
    folder = tmp_path / "out" / "tensorrt" / "classifier"
    script = (folder / "build_plan.sh").read_text()
    assert "--minShapes=input:1x16 --optShapes=input:8x16 --maxShapes=input:16x16" in script
    assert "--fp16" in script and "model_int8_static.onnx" in script and "--int8" in script
    from repoforge.triton.config import parse_config

    cfg = parse_config((folder / "config.pbtxt").read_text())
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 16
    report = json.loads((tmp_path / "out" / "optimize-report.json").read_text())["models"]["classifier"]
    assert report["tensorrt"]["profiles"] == {"min": 1, "opt": 8, "max": 16}
    status = report["tensorrt"]["status"]
    assert "\n" not in status and ("not built here" in status or "built here" in status)


def test_tensorrt_config_is_written_by_the_triton_config_codec(tmp_path: Path) -> None:
    """The tensorrt_plan config is a ModelConfig written by text_format (issue 22: never f-strings)."""
    from repoforge.triton.config import parse_config, to_text

    spec = write_project(tmp_path / "p", variants="[fp32, tensorrt]")
    res = CliRunner().invoke(main, ["optimize", str(spec), "-o", str(tmp_path / "out"), "--device", "gpu", "-q"])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "out" / "tensorrt" / "classifier" / "config.pbtxt").read_text()
    comment, _, body = text.partition("\n")
    assert comment.startswith("# optimization profile built by build_plan.sh: min 1")
    cfg = parse_config(body)
    assert body == to_text(cfg)  # exactly what the codec writes
    assert [(i.name, mc.DataType.Name(i.data_type), list(i.dims)) for i in cfg.input] == [("input", "TYPE_FP32", [16])]
    assert [g.kind for g in cfg.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]


def test_cli_refuses_an_existing_output_and_bad_arguments(project: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("mine")
    res = CliRunner().invoke(main, ["optimize", str(project), "-o", str(tmp_path / "out")])
    assert res.exit_code == 2 and "already exists" in res.output
    res = CliRunner().invoke(main, ["optimize", str(project), "-o", str(tmp_path / "o2"), "--device", "tpu"])
    assert res.exit_code == 2 and "Invalid value" in res.output
    res = CliRunner().invoke(main, ["optimize", str(project), "-o", str(tmp_path / "o3"), "-m", "nope"])
    assert res.exit_code == 2 and "no model named 'nope'" in res.output


def test_openvino_is_gated_and_timed_on_its_own_runtime_but_not_shipped(tmp_path: Path) -> None:
    import importlib.util
    import threading

    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed")
    spec = write_project(tmp_path / "p", variants="[fp32, openvino]", extra="      ship: all\n")
    threads = {t.name for t in threading.enumerate()}
    run = run_optimize(load_spec(spec), cache=Cache(enabled=False))
    r = run.results["classifier"]
    ov = r.variant("openvino")
    assert ov.accepted and ov.gate is not None and ov.gate.tolerance == {"max_abs": 1e-4, "max_rel": 1e-3}
    assert ov.timing is not None and ov.settings["runtime"] == "openvino"
    assert r.selected == "fp32"
    row = next(v for v in run.report["models"]["classifier"]["variants"] if v["name"] == "openvino")
    assert row["shipped_by_build"] is False and "measured only" in row["note"]
    build(spec, tmp_path / "repo", device="cpu")
    lock = json.loads((tmp_path / "repo" / "repoforge.lock.json").read_text())["optimize"]["classifier"]
    assert lock["versions"] == {"1": "fp32"}
    # openvino's telemetry (a web analytics event from a thread that forks) was never loaded
    import sys

    assert "openvino" in sys.modules and "openvino_telemetry" not in sys.modules
    assert {t.name for t in threading.enumerate()} <= threads | {
        t.name for t in threading.enumerate() if "ov" not in t.name.lower()
    }


def test_a_model_whose_outputs_are_nan_ships_nothing(tmp_path: Path) -> None:
    import onnx
    from onnx import helper

    from repoforge.optimize.pipeline import NoVariantPassed

    vi = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, ["batch", 4]) for n in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Log", ["x"], ["y"])], "log", [vi[0]], [vi[1]])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "log.onnx")
    np.savez(tmp_path / "val.npz", x=-np.ones((8, 4), np.float32))
    (tmp_path / "spec.yaml").write_text(
        "version: 1\nmodels:\n  - {name: log, format: onnx, path: log.onnx, max_batch_size: 8,\n"
        "     optimize: {variants: [fp32, fp16], validation: {data: val.npz}, rounds: 2}}\n"
    )
    with pytest.raises(NoVariantPassed, match="no variant passed its gate; fp32: output 'y' has NaN or Inf"):
        build(tmp_path / "spec.yaml", tmp_path / "repo", device="cpu")
    assert not (tmp_path / "repo").exists()


def test_torchserve_target_says_it_ships_the_model_as_written(project: Path, tmp_path: Path) -> None:
    pytest.importorskip("model_archiver")
    res = build(project, tmp_path / "ts", target="torchserve", device="cpu")
    assert any("`optimize:` applies to --target triton" in w for w in res.warnings)


def test_cli_json_prints_the_report(project: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["optimize", str(project), "-o", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["models"]["classifier"]["selected"] and report["tools"]["onnxruntime"]


def test_an_explicit_tensorrt_profile_is_used_and_checked(tmp_path: Path) -> None:
    from repoforge.optimize.data import resolve_targets
    from repoforge.optimize.tensorrt import script

    spec = write_project(tmp_path / "p", extra="      tensorrt_profile: {min: 2, opt: 4, max: 32}\n")
    with pytest.raises(SpecError) as err:
        resolve_targets(load_spec(spec))
    assert "optimize.tensorrt_profile.max: profile max 32 exceeds max_batch_size 16" in str(err.value)
    spec.write_text(spec.read_text().replace("max: 32}", "max: 12}"))
    text = script(resolve_targets(load_spec(spec))[0], int8=False)
    assert "--minShapes=input:2x16 --optShapes=input:4x16 --maxShapes=input:12x16" in text
    spec.write_text(spec.read_text().replace("opt: 4", "opt: 14"))
    with pytest.raises(SpecError, match="min <= opt <= max"):
        load_spec(spec)
