"""Golden config.pbtxt files for a spec that uses (nearly) every field, plus the repository writer's promises:
byte-reproducible output, a complete lock file, the right files per device, and safe replacement.

Regenerate the goldens after an intended change, then read the diff before committing it:

    REPOFORGE_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_golden.py
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from importlib import resources
from pathlib import Path

import pytest
import yaml
from deploy_helpers import _ts_spec

from repoforge.backends import runtime_files
from repoforge.build import build
from repoforge.errors import BuildError, SpecError
from repoforge.output import MANIFEST
from repoforge.triton.config import parse_config

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
SPEC = GOLDEN / "full.spec.yaml"
UPDATE = os.environ.get("REPOFORGE_UPDATE_GOLDEN") == "1"
DEVICES = ("gpu", "cpu")
RUNTIME = "repoforge_runtime"
ONNX_MODELS = {"classifier": [1], "ranker": [1, 2], "scorer": [1, 2]}


@pytest.fixture(scope="module")
def specs(golden_cpu_spec: Path) -> dict[str, Path]:
    return {"gpu": SPEC, "cpu": golden_cpu_spec}


@pytest.fixture(scope="module")
def built(specs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("golden")
    return {d: build(specs[d], root / d, device=d).output for d in DEVICES}


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root (relative POSIX path → bytes)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def dirs(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir())


# --- goldens --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_configs_match_goldens(built: dict[str, Path], device: str):
    repo = built[device]
    golden_dir = GOLDEN / device
    configs = {p.parent.name: p.read_text(encoding="utf-8") for p in sorted(repo.glob("*/config.pbtxt"))}
    if UPDATE:
        golden_dir.mkdir(exist_ok=True)
        for stale in golden_dir.glob("*.pbtxt"):
            if stale.stem not in configs:
                stale.unlink()
        for name, text in configs.items():
            (golden_dir / f"{name}.pbtxt").write_text(text, encoding="utf-8")
    goldens = {p.stem: p.read_text(encoding="utf-8") for p in sorted(golden_dir.glob("*.pbtxt"))}
    assert sorted(configs) == sorted(goldens), "models built differ from the golden files"
    for name, text in configs.items():
        assert text == goldens[name], f"{device}/{name}/config.pbtxt differs from tests/golden/{device}/{name}.pbtxt"


def test_golden_model_sets():
    gpu = {p.stem for p in (GOLDEN / "gpu").glob("*.pbtxt")}
    cpu = {p.stem for p in (GOLDEN / "cpu").glob("*.pbtxt")}
    assert gpu - cpu == {"engine"}  # the tensorrt model is gpu-only
    assert cpu <= gpu
    assert len(gpu) == 10


@pytest.mark.parametrize("device", DEVICES)
def test_goldens_parse_with_tritons_schema(device: str):
    for path in sorted((GOLDEN / device).glob("*.pbtxt")):
        cfg = parse_config(path.read_text(encoding="utf-8"))
        assert cfg.name == path.stem


def test_serving_choice_per_device():
    """Every build serves ONNX and TorchScript with Triton's native backends (issue 21): the same backend on both
    devices, so the stock NGC image serves a CPU build too; TensorRT keeps its platform (GPU builds only)."""

    def cfg(device: str, name: str):
        return parse_config((GOLDEN / device / f"{name}.pbtxt").read_text(encoding="utf-8"))

    assert cfg("gpu", "engine").platform == "tensorrt_plan"
    assert cfg("gpu", "pipeline").platform == "ensemble"
    for device in DEVICES:
        for name in ("classifier", "ranker", "scorer", "scripted"):
            c = cfg(device, name)
            assert c.backend == ("pytorch" if name == "scripted" else "onnxruntime") and not c.platform
            assert "repoforge_runner" not in c.parameters and "intra_op_threads" not in c.parameters
            if device == "cpu":
                assert all(g.kind != g.KIND_GPU and not g.gpus for g in c.instance_group)
        # the spec's intra_op_threads is written under the backend's own name; `auto` (the default) is left out
        assert cfg(device, "classifier").parameters["intra_op_thread_count"].string_value == "2"
        assert "intra_op_thread_count" not in cfg(device, "scorer").parameters


def test_cpu_and_gpu_builds_differ_only_in_what_the_device_decides(golden_cpu_spec: Path, tmp_path: Path):
    """`build --device cpu` and `--device gpu` of one spec: the same files, and configs that are equal once instance
    kinds and the GPU-only fields (gpus lists, CUDA and GPU-accelerator optimization settings) are set aside."""
    cpu = build(golden_cpu_spec, tmp_path / "cpu", device="cpu").output
    gpu = build(golden_cpu_spec, tmp_path / "gpu", device="gpu").output
    models = sorted(p.parent.name for p in cpu.glob("*/config.pbtxt"))
    assert models == sorted(p.parent.name for p in gpu.glob("*/config.pbtxt"))

    def device_free(repo: Path, name: str):
        c = parse_config((repo / name / "config.pbtxt").read_text(encoding="utf-8"))
        for g in c.instance_group:
            g.ClearField("kind")
            g.ClearField("gpus")
        o = c.optimization
        for f in ("cuda", "input_pinned_memory", "output_pinned_memory", "gather_kernel_buffer_threshold"):
            o.ClearField(f)
        o.execution_accelerators.ClearField("gpu_execution_accelerator")
        return c

    changed = []
    for name in models:
        assert device_free(cpu, name) == device_free(gpu, name), name
        files = {p.relative_to(cpu / name).as_posix() for p in (cpu / name).rglob("*") if p.is_file()}
        assert files == {p.relative_to(gpu / name).as_posix() for p in (gpu / name).rglob("*") if p.is_file()}
        for f in files - {"config.pbtxt"}:
            assert (cpu / name / f).read_bytes() == (gpu / name / f).read_bytes(), f"{name}/{f}"
        if (cpu / name / "config.pbtxt").read_bytes() != (gpu / name / "config.pbtxt").read_bytes():
            changed.append(name)
    assert "classifier" in changed  # the spec does have GPU-only settings: the comparison is not vacuous


def test_torchserve_cpu_and_gpu_builds_differ_only_in_device_type(tmp_path: Path):
    """The same for `--target torchserve`: every archive member is the same bytes except model-config.yaml's
    deviceType, and the build's own record of the device (README, lock)."""
    spec = _ts_spec(tmp_path)
    cpu = build(spec, tmp_path / "cpu", target="torchserve", device="cpu").output
    gpu = build(spec, tmp_path / "gpu", target="torchserve", device="gpu").output
    files = sorted(p.relative_to(cpu).as_posix() for p in cpu.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(gpu).as_posix() for p in gpu.rglob("*") if p.is_file())
    differing = []
    for f in files:
        if f.endswith((".mar", ".war")):
            with zipfile.ZipFile(cpu / f) as a, zipfile.ZipFile(gpu / f) as b:
                assert a.namelist() == b.namelist(), f
                for n in a.namelist():
                    one, two = a.read(n), b.read(n)
                    if n == "model-config.yaml":
                        assert yaml.safe_load(one).pop("deviceType") == "cpu"
                        assert yaml.safe_load(two).pop("deviceType") == "gpu"
                        one, two = one.replace(b"deviceType: cpu", b""), two.replace(b"deviceType: gpu", b"")
                    assert one == two, f"{f}:{n}"
        elif (cpu / f).read_bytes() != (gpu / f).read_bytes():
            differing.append(f)
    assert differing == ["README.md", MANIFEST], differing  # "built for cpu", and the lock's device and hashes
    assert json.loads((cpu / MANIFEST).read_text())["device"] == "cpu"


def shipped_runtime(folder: Path) -> bool:
    """`folder` holds exactly the runtime's files, byte for byte."""
    files = {rel: src.read_bytes() for rel, src in runtime_files()}
    return tree(folder) == files and "__init__.py" in files and "plugins/router.py" in files


# --- repository layout ----------------------------------------------------------------------------------------


def test_cpu_repository_ships_only_the_model_files(built: dict[str, Path]):
    """Native backends read the model file itself: no model.py beside it (the bundled server's Python-based
    onnxruntime/pytorch backends come from repoforge's private backend folder, not from the repository)."""
    repo = built["cpu"]
    for name, versions in ONNX_MODELS.items():
        for v in versions:
            assert sorted(p.name for p in (repo / name / str(v)).iterdir()) == ["model.onnx"]
    assert sorted(p.name for p in (repo / "scripted" / "1").iterdir()) == ["model.pt"]
    # ONNX files are copied as they are
    assert (repo / "classifier" / "1" / "model.onnx").read_bytes() == (
        GOLDEN / "../../examples/tabular/models/classifier.onnx"
    ).read_bytes()
    assert (repo / "scorer" / "2" / "model.onnx").read_bytes() == (
        GOLDEN / "../../examples/versions/models/scorer_v2.onnx"
    ).read_bytes()
    assert not (repo / "engine").exists()


def test_backend_python_asks_for_repoforges_runner(tmp_path: Path):
    """`backend: python` on an ONNX model keeps repoforge's Python runner (its model.py ships beside the file)."""
    onnx = (GOLDEN / "../../examples/versions/models/scorer_v1.onnx").resolve()
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {"version": 1, "models": [{"name": "s", "format": "onnx", "backend": "python", "path": str(onnx)}]}
        )
    )
    glue = resources.files("repoforge.backends").joinpath("onnxruntime/model.py").read_bytes()
    for device in DEVICES:
        repo = build(spec, tmp_path / device, device=device).output
        c = parse_config((repo / "s" / "config.pbtxt").read_text(encoding="utf-8"))
        assert c.backend == "python" and c.parameters["repoforge_runner"].string_value == "onnxruntime"
        assert (repo / "s" / "1" / "model.py").read_bytes() == glue
        # issue 21: the runtime ships beside the runner's model.py (no installed repoforge needed)
        assert sorted(p.name for p in (repo / "s" / "1").iterdir()) == ["model.onnx", "model.py", RUNTIME]
        assert shipped_runtime(repo / "s" / "1" / RUNTIME)


def test_gpu_repository_uses_the_native_file_names(built: dict[str, Path]):
    repo = built["gpu"]
    for name, versions in ONNX_MODELS.items():
        for v in versions:
            assert [p.name for p in (repo / name / str(v)).iterdir()] == ["model.onnx"]
    assert [p.name for p in (repo / "scripted" / "1").iterdir()] == ["model.pt"]
    assert [p.name for p in (repo / "engine" / "1").iterdir()] == ["model.plan"]
    assert (repo / "engine" / "1" / "model.plan").read_bytes() == (GOLDEN / "models" / "model.plan").read_bytes()
    # issue 21 (errors counted where they happen): a user's Python model is served unchanged as
    # repoforge_user_model.py behind a generated model.py that counts its failed requests, with the runtime beside it
    wrapper = resources.files("repoforge.backends").joinpath("user/model.py").read_bytes()
    assert sorted(p.name for p in (repo / "tracker_direct" / "1").iterdir()) == [
        "model.py", RUNTIME, "repoforge_user_model.py",
    ]  # fmt: skip
    assert (repo / "tracker_direct" / "1" / "model.py").read_bytes() == wrapper
    assert shipped_runtime(repo / "tracker_direct" / "1" / RUNTIME)
    assert (repo / "preprocess" / "1" / "repoforge_user_model.py").read_bytes() == (
        GOLDEN / "../../examples/ensemble/preprocess.py"
    ).read_bytes()


@pytest.mark.parametrize("device", DEVICES)
def test_ensemble_gets_an_empty_version_folder(built: dict[str, Path], device: str):
    pipeline = built[device] / "pipeline"
    assert sorted(p.name for p in pipeline.iterdir()) == ["1", "config.pbtxt"]
    assert (pipeline / "1").is_dir() and not any((pipeline / "1").iterdir())


@pytest.mark.parametrize("device", DEVICES)
def test_lock_file_lists_the_sha256_of_every_file(built: dict[str, Path], specs: dict[str, Path], device: str):
    repo = built[device]
    lock = json.loads((repo / MANIFEST).read_text(encoding="utf-8"))
    files = {k: v for k, v in tree(repo).items() if k != MANIFEST}
    assert sorted(lock["files"]) == sorted(files)
    for rel, data in files.items():
        assert lock["files"][rel] == hashlib.sha256(data).hexdigest(), rel
    assert lock["device"] == device
    assert lock["repository"] == "golden"
    assert lock["models"] == sorted(p.parent.name for p in repo.glob("*/config.pbtxt"))
    assert lock["spec_sha256"] == hashlib.sha256(specs[device].read_bytes()).hexdigest()


@pytest.mark.parametrize("device", DEVICES)
def test_same_spec_twice_gives_byte_identical_trees(tmp_path: Path, device: str, specs: dict[str, Path]):
    spec = specs[device]
    a = build(spec, tmp_path / "a", device=device).output
    b = build(spec, tmp_path / "nested" / "b", device=device).output
    ta, tb = tree(a), tree(b)
    assert sorted(ta) == sorted(tb)
    for rel in ta:
        assert ta[rel] == tb[rel], rel
    assert ta[MANIFEST] == tb[MANIFEST]
    assert dirs(a) == dirs(b)  # the empty ensemble version folder too


# --- replacing an existing output -----------------------------------------------------------------------------


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".out."))


def test_existing_output_is_refused_without_force_and_left_untouched(tmp_path: Path):
    out = tmp_path / "out"
    build(SPEC, out, device="gpu")
    (out / "classifier" / "config.pbtxt").write_text("edited by hand\n")  # any change must survive the refusal
    before = tree(out)
    with pytest.raises(BuildError, match="already exists; pass --force"):
        build(SPEC, out, device="gpu")
    assert tree(out) == before
    assert leftovers(tmp_path) == []


def test_existing_output_is_replaced_with_force(tmp_path: Path):
    out = tmp_path / "out"
    fresh = tree(build(SPEC, tmp_path / "fresh", device="gpu").output)
    build(SPEC, out, device="gpu")
    (out / "stale.txt").write_text("from an older build\n")
    (out / "classifier" / "config.pbtxt").write_text("edited by hand\n")
    build(SPEC, out, device="gpu", force=True)
    assert tree(out) == fresh
    assert not (out / "stale.txt").exists()
    assert leftovers(tmp_path) == []


def test_force_replaces_a_repository_of_another_device(tmp_path: Path, golden_cpu_spec: Path):
    out = tmp_path / "out"
    build(golden_cpu_spec, out, device="cpu")
    build(SPEC, out, device="gpu", force=True)
    assert json.loads((out / MANIFEST).read_text())["device"] == "gpu"
    assert (out / "engine" / "1" / "model.plan").exists()
    assert not (out / "classifier" / "1" / "model.py").exists()


@pytest.mark.parametrize("force", [False, True])
def test_foreign_non_empty_directory_is_refused_even_with_force(tmp_path: Path, force: bool):
    out = tmp_path / "home"
    out.mkdir()
    (out / "notes.txt").write_text("precious\n")
    (out / "photos").mkdir()
    (out / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    before = tree(out)
    with pytest.raises(BuildError, match="not written by repoforge" if force else "already exists"):
        build(SPEC, out, device="gpu", force=force)
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_existing_file_is_refused_even_with_force(tmp_path: Path):
    out = tmp_path / "out"
    out.write_text("a file\n")
    with pytest.raises(BuildError, match="not a directory"):
        build(SPEC, out, device="gpu", force=True)
    assert out.read_text() == "a file\n"


def test_empty_existing_directory_is_used_without_force(tmp_path: Path):
    """An empty folder holds nothing to lose, so it needs no --force (issue 23.12 changed this from a refusal)."""
    out = tmp_path / "out"
    out.mkdir()
    build(SPEC, out, device="gpu")
    assert (out / MANIFEST).exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    build(SPEC, empty, device="gpu", force=True)  # --force is still fine
    assert (empty / MANIFEST).exists()


def test_a_refused_spec_leaves_an_existing_output_untouched(tmp_path: Path):
    out = tmp_path / "out"
    build(SPEC, out, device="gpu")
    before = tree(out)
    with pytest.raises(SpecError):  # tensorrt on cpu: the whole build is refused before anything is written
        build(SPEC, out, device="cpu", force=True)
    assert tree(out) == before
    assert leftovers(tmp_path) == []


# --- label files ----------------------------------------------------------------------------------------------


def test_label_file_is_shipped_or_refused(tmp_path: Path):
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "models": [
                    {
                        "name": "classifier",
                        "format": "onnx",
                        "path": str((GOLDEN / "../../examples/tabular/models/classifier.onnx").resolve()),
                        "outputs": [
                            {"name": "probabilities", "dtype": "FP32", "dims": [3], "label_filename": "labels.txt"}
                        ],
                    }
                ],
            }
        )
    )
    try:
        build(spec, tmp_path / "out", device="gpu")
    except SpecError as exc:
        assert "label_filename" in str(exc)
        return
    assert (tmp_path / "out" / "classifier" / "labels.txt").read_text() == "cat\ndog\nbird\n"
