"""`repoforge import`: a Triton model repository → spec.yaml → `repoforge build` → the same repository.

Round trips (pure unit tests, no server):

- every example and tests/golden/full.spec.yaml: build → import → build again gives byte-identical configs
  (a repoforge-built repository carries nothing the spec cannot say);
- tests/data/import_handwritten (written by hand: an ensemble, sequence batching, two versions with different
  files, a python model shipped as a folder, and fields only raw_config can keep): import → build gives configs
  equal to the originals after `normalize_config`, and the same model files;
- every repository in tests/lint_corpus/valid: import never crashes, and each rebuilt config equals its original
  after normalization, except the cases in CORPUS_DIFFERENT, whose differences must be reported.

"Equal after normalization" means the two protobufs compare equal once `repoforge.importer.normalize_config`
has made canonical what is purely representational (Triton's auto-complete of name/platform/backend/
default_model_filename, the default version policy, Triton's default instance group, names and default counts,
a sequence batcher's default strategy, warmup sample names, switched-off settings); its docstring lists each rule.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from tritonclient.grpc import model_config_pb2 as mc

from repoforge.backends import model_file
from repoforge.build import build
from repoforge.errors import BuildError, SpecError
from repoforge.importer import (
    ImportFailed,
    ImportResult,
    config_differences,
    import_repository,
    normalize_config,
)
from repoforge.spec import load_spec
from repoforge.triton.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
GOLDEN = ROOT / "tests" / "golden"
HANDWRITTEN = ROOT / "tests" / "data" / "import_handwritten"
# Corpus repositories only a server can import (no config.pbtxt: Triton auto-completes it); tests/integration/test_nvidia_cases.py
# imports them with --server bundled.
NEEDS_SERVER = {"python_auto_complete_no_config"}
CORPUS = sorted(
    p for p in (ROOT / "tests" / "lint_corpus" / "valid").iterdir() if p.is_dir() and p.name not in NEEDS_SERVER
)

# Corpus repositories whose rebuilt config differs from the original even after normalization, and why.
CORPUS_DIFFERENT = {
    # repoforge derives an ensemble's tensor dims from its steps: a non-batching ensemble over a batching step
    # gets the step's dims [4], not the original [-1, 4]
    "ensemble_non_batching_over_batching": {"pipe": ["input[0].dims: [-1, 4] → [4]", "output[0].dims: [-1, 4] → [4]"]},
    # label files are shipped into the model folder: '../labels.txt' becomes 'labels.txt'
    "warn_label_file_outside_model_folder": {"m": ["output[0].label_filename: '../labels.txt' → 'labels.txt'"]},
}


def configs(repo: Path) -> dict[str, mc.ModelConfig]:
    return {p.parent.name: parse_config(p.read_text(encoding="utf-8")) for p in sorted(repo.glob("*/config.pbtxt"))}


def texts(repo: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text(encoding="utf-8") for p in sorted(repo.glob("*/config.pbtxt"))}


def normalized_differences(original: Path, rebuilt: Path, device: str) -> dict[str, list[str]]:
    """model → differences between the original and rebuilt configs after normalization."""
    out = {}
    rebuilt_configs = configs(rebuilt)
    for name, cfg in configs(original).items():
        assert name in rebuilt_configs, f"{name} was not rebuilt"
        diff = config_differences(
            normalize_config(cfg, device, folder=name, model_dir=original / name),
            normalize_config(rebuilt_configs[name], device, folder=name, model_dir=rebuilt / name),
        )
        if diff:
            out[name] = diff
    return out


def round_trip(repo: Path, tmp: Path, **kwargs: object) -> tuple[ImportResult, Path]:
    result = import_repository(repo, tmp / "imported" / "spec.yaml", **kwargs)  # type: ignore[arg-type]
    rebuilt = build(result.spec_path, tmp / "rebuilt", device=result.device).output
    return result, rebuilt


# --- repositories repoforge built: byte-identical configs ----------------------------------------------------


@pytest.mark.parametrize("device", ["cpu", "gpu"])
@pytest.mark.parametrize("example", ["tabular", "ensemble", "versions", "plugins"])
def test_examples_round_trip(example: str, device: str, tmp_path: Path) -> None:
    original = build(EXAMPLES / example / "spec.yaml", tmp_path / "original", device=device).output
    result, rebuilt = round_trip(original, tmp_path)
    assert result.device == device  # read from repoforge.lock.json
    assert result.builds and not result.skipped and not result.differences and not result.kept_raw
    assert texts(rebuilt) == texts(original)
    assert normalized_differences(original, rebuilt, device) == {}


@pytest.mark.parametrize("device", ["gpu", "cpu"])
def test_golden_spec_round_trip(device: str, tmp_path: Path, golden_cpu_spec: Path) -> None:
    spec = GOLDEN / "full.spec.yaml" if device == "gpu" else golden_cpu_spec
    original = build(spec, tmp_path / "original", device=device).output
    result, rebuilt = round_trip(original, tmp_path)
    assert result.warnings == [] and result.kept_raw == {}
    assert texts(rebuilt) == texts(original)
    imported = load_spec(result.spec_path).spec
    by_name = {m.name: m for m in imported.models}
    # what the repository says, expressed in the spec's own terms
    assert by_name["ranker"].dynamic_batching is not None and not by_name["ranker"].dynamic_batching.enabled
    assert by_name["ranker"].versions == {1: None, 2: None} and by_name["ranker"].path  # one file for both versions
    assert set(by_name["scorer"].versions or {}) == {1, 2} and by_name["scorer"].path is None  # a file per version
    assert by_name["classifier"].format == "onnx" and by_name["scripted"].format == "torchscript"
    params = by_name["classifier"].parameters or {}
    assert (
        "repoforge_runner" not in params and "repoforge_model_file" not in params
    )  # the runner's own, re-added by the build
    assert params["intra_op_threads"] == "2"
    assert by_name["pipeline"].steps and by_name["pipeline"].steps[1].version == 1
    if device == "gpu":
        assert by_name["engine"].format == "tensorrt"


def test_runner_models_import_as_their_original_format(tmp_path: Path) -> None:
    """A model repoforge's runner serves (spec `backend: python`) imports as its format, still asking for the runner;
    a natively served one (every build's default since issue 21) imports with no backend."""
    data = yaml.safe_load((EXAMPLES / "ensemble" / "spec.yaml").read_text(encoding="utf-8"))
    for m in data["models"]:
        if m["name"] == "classifier":
            m["backend"] = "python"
        if m.get("path"):
            m["path"] = str((EXAMPLES / "ensemble" / m["path"]).resolve())
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    original = build(spec, tmp_path / "original", device="cpu").output
    assert configs(original)["classifier"].backend == "python"  # served by repoforge's onnxruntime runner
    result = import_repository(original, tmp_path / "imported.yaml")
    models = {m.name: m for m in load_spec(result.spec_path).spec.models}
    model = models["classifier"]
    assert model.format == "onnx" and model.backend == "python" and model.path == "original/classifier/1/model.onnx"
    assert model.parameters is None
    native = build(EXAMPLES / "ensemble" / "spec.yaml", tmp_path / "native", device="cpu").output
    assert configs(native)["classifier"].backend == "onnxruntime"
    result = import_repository(native, tmp_path / "native.yaml")
    model = {m.name: m for m in load_spec(result.spec_path).spec.models}["classifier"]
    assert model.format == "onnx" and model.backend is None and result.device == "cpu"


# --- a repository written by hand ------------------------------------------------------------------------------


def test_handwritten_repository_round_trips(tmp_path: Path) -> None:
    result, rebuilt = round_trip(HANDWRITTEN, tmp_path)
    assert result.device == "cpu"
    assert result.models == ["pipeline", "prep", "scorer", "tracker"]
    assert result.builds and result.differences == {} and result.skipped == {}
    assert normalized_differences(HANDWRITTEN, rebuilt, "cpu") == {}
    # what the spec cannot express survives in raw_config, and is reported
    assert result.kept_raw == {
        "scorer": ["optimization.cuda.graph_spec", "model_operations"],
        "tracker": ["sequence_batching.state"],
    }
    scorer = configs(rebuilt)["scorer"]
    assert list(scorer.model_operations.op_library_filename) == ["libscorer_ops.so"]
    assert scorer.optimization.cuda.graphs and scorer.optimization.cuda.graph_spec[0].batch_size == 8
    assert configs(rebuilt)["tracker"].sequence_batching.state[0].use_same_buffer_for_input_output
    # the files: two versions with different code, a python folder with its helper, the label file. Issue 21: a
    # user's model.py is served as repoforge_user_model.py behind the build's error-counting model.py.
    for rel, built_as in (
        ("scorer/1/model.py", "scorer/1/repoforge_user_model.py"),
        ("scorer/2/model.py", "scorer/2/repoforge_user_model.py"),
        ("prep/1/model.py", "prep/1/repoforge_user_model.py"),
        ("prep/1/helpers.py", "prep/1/helpers.py"),
        ("prep/labels.txt", "prep/labels.txt"),
        ("tracker/1/model.py", "tracker/1/repoforge_user_model.py"),
    ):
        assert (rebuilt / built_as).read_bytes() == (HANDWRITTEN / rel).read_bytes(), rel
    scorer = "scorer/{}/repoforge_user_model.py"
    assert (rebuilt / scorer.format(1)).read_bytes() != (rebuilt / scorer.format(2)).read_bytes()
    assert [p.name for p in (rebuilt / "pipeline" / "1").iterdir()] == []
    assert result.warnings == ["README.md: a file at the repository root is not carried over"]


def test_handwritten_spec_reads_like_a_spec(tmp_path: Path) -> None:
    result = import_repository(HANDWRITTEN, tmp_path / "spec.yaml")
    text = result.spec_path.read_text(encoding="utf-8")
    assert text.startswith("# Imported by `repoforge import`")
    assert str(HANDWRITTEN) in text.splitlines()[1] and "--device cpu" in text
    assert "#   scorer: optimization.cuda.graph_spec, model_operations" in text
    models = {m.name: m for m in load_spec(result.spec_path).spec.models}
    assert models["scorer"].dynamic_batching is not None and models["scorer"].dynamic_batching.enabled is False
    assert models["scorer"].versions is not None and set(models["scorer"].versions) == {1, 2}
    assert models["scorer"].warmup is not None and models["scorer"].warmup.batch_sizes == [1, 8]
    assert models["prep"].path and Path(models["prep"].path).name == "1"  # model.py + helpers.py: the folder
    assert models["prep"].instance_groups and models["prep"].instance_groups[0].rate_limiter is not None
    sb = models["tracker"].sequence_batching
    assert sb is not None and sb.strategy == "oldest" and [c.dtype for c in sb.control_inputs] == ["FP32", "BYTES"]
    assert models["tracker"].model_transaction_policy and models["tracker"].model_transaction_policy.decoupled
    assert models["pipeline"].format == "ensemble" and models["pipeline"].steps
    assert "raw_config: |" in text and 'op_library_filename: "libscorer_ops.so"' in text


# --- the lint corpus -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_lint_corpus_round_trips(case: Path, tmp_path: Path) -> None:
    result, rebuilt = round_trip(case, tmp_path)
    assert result.builds and not result.skipped
    differences = normalized_differences(case, rebuilt, result.device)
    assert differences == CORPUS_DIFFERENT.get(case.name, {})
    assert result.differences == differences  # every difference is reported ...
    for model, diffs in differences.items():  # ... in the warnings too
        assert all(f"{model}: does not round-trip: {d}" in result.warnings for d in diffs)


def test_corpus_cases_kept_in_raw_config(tmp_path: Path) -> None:
    """Configs Triton loads but repoforge's spec rejects (or cannot say) come back through raw_config."""
    expected = {
        "warn_dynamic_batching_without_batching": {"m": ["dynamic_batching"]},
        "warn_specific_version_partly_absent": {"m": ["version_policy"]},
        "warn_warmup_batch_zero": {"m": ["model_warmup"]},
        "warn_duplicate_input_names": {"m": ["input"]},
        "warn_platform_backend_python_mismatch": {"m": ["platform"]},
        "ensemble_diamond": {"pipe": ["output"]},  # 'L' feeds a step and is an output: the spec derives only 'Y'
    }
    for case, kept in expected.items():
        result = import_repository(CORPUS[0].parent / case, tmp_path / case / "spec.yaml")
        assert result.kept_raw == kept, case


def test_version_zero_becomes_version_one(tmp_path: Path) -> None:
    result, rebuilt = round_trip(CORPUS[0].parent / "version_zero", tmp_path)
    assert "m: version folder 0 becomes version 1: spec versions start at 1" in result.warnings
    assert sorted(p.name for p in (rebuilt / "m").iterdir() if p.is_dir()) == ["1"]


# --- files, safety ---------------------------------------------------------------------------------------------


def test_copy_models_makes_the_spec_independent_of_the_repository(tmp_path: Path) -> None:
    original = build(GOLDEN / "full.spec.yaml", tmp_path / "original", device="gpu").output
    result = import_repository(original, tmp_path / "project" / "spec.yaml", copy_models=True)
    models = load_spec(result.spec_path).spec.models
    assert all(m.path is None or m.path.startswith("models/") for m in models)
    moved = shutil.move(str(original), str(tmp_path / "elsewhere"))
    rebuilt = build(result.spec_path, tmp_path / "rebuilt", device="gpu").output
    assert texts(rebuilt) == texts(Path(moved))
    assert (tmp_path / "project" / "models" / "scorer" / "2" / "model.onnx").is_file()
    with pytest.raises(BuildError, match="already exists"):
        import_repository(Path(moved), result.spec_path, copy_models=True)
    import_repository(Path(moved), result.spec_path, copy_models=True, force=True)
    assert sorted(p.name for p in (tmp_path / "project").iterdir()) == ["models", "spec.yaml"]  # no temp leftovers


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "spec.yaml"
    out.write_text("mine\n")
    with pytest.raises(BuildError, match="already exists; pass --force"):
        import_repository(HANDWRITTEN, out)
    assert out.read_text() == "mine\n"
    import_repository(HANDWRITTEN, out, force=True)
    assert out.read_text().startswith("# Imported by")
    assert [p.name for p in tmp_path.iterdir()] == ["spec.yaml"]
    with pytest.raises(BuildError, match="is a directory"):
        import_repository(HANDWRITTEN, tmp_path)


def test_copies_never_land_in_the_imported_repository(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(HANDWRITTEN, repo)
    with pytest.raises(BuildError, match="would write into the repository"):
        import_repository(repo, repo / "spec.yaml", copy_models=True)
    shutil.copytree(HANDWRITTEN, tmp_path / "project" / "models")  # the repository is where the copies would go
    with pytest.raises(BuildError, match="would write into the repository"):
        import_repository(tmp_path / "project" / "models", tmp_path / "project" / "spec.yaml", copy_models=True)
    assert not (tmp_path / "project" / "spec.yaml").exists()


def test_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(ImportFailed, match="is not a directory"):
        import_repository(tmp_path / "missing", tmp_path / "spec.yaml")
    (tmp_path / "repo" / "m").mkdir(parents=True)
    with pytest.raises(ImportFailed, match="no config.pbtxt"):
        import_repository(tmp_path / "repo", tmp_path / "spec.yaml")
    assert not (tmp_path / "spec.yaml").exists()


def test_models_without_a_spec_format_are_reported(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(HANDWRITTEN, repo)
    (repo / "tf" / "1" / "model.savedmodel").mkdir(parents=True)
    (repo / "tf" / "config.pbtxt").write_text('platform: "tensorflow_savedmodel"\nmax_batch_size: 0\n')
    result = import_repository(repo, tmp_path / "spec.yaml")
    assert "tf" in result.skipped and "tf" not in result.models
    assert any(w.startswith("tf: not imported: backend 'tensorflow'") for w in result.warnings)
    assert result.builds


# --- the raw_config escape hatch -------------------------------------------------------------------------------


def _spec_with_raw(tmp_path: Path, raw: str) -> Path:
    shutil.copy(GOLDEN / "models" / "echo.py", tmp_path / "echo.py")
    indented = "".join(f"      {line}\n" for line in raw.splitlines())
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "version: 1\nmodels:\n  - name: m\n    format: python\n    path: echo.py\n    max_batch_size: 4\n"
        "    inputs: [{name: X, dtype: FP32, dims: [4]}]\n    outputs: [{name: Y, dtype: FP32, dims: [4]}]\n"
        "    parameters: {a: '1'}\n    raw_config: |\n" + indented
    )
    return spec


def test_raw_config_is_merged_last(tmp_path: Path) -> None:
    spec = _spec_with_raw(
        tmp_path,
        'max_batch_size: 2\nparameters { key: "a" value { string_value: "2" } }\n'
        'output { name: "EXTRA" data_type: TYPE_INT32 dims: 1 }\n'
        'model_operations { op_library_filename: "x.so" }',
    )
    cfg = configs(build(spec, tmp_path / "repo", device="cpu").output)["m"]
    assert cfg.max_batch_size == 2  # scalars override
    assert cfg.parameters["a"].string_value == "2"  # map keys override
    assert [o.name for o in cfg.output] == ["Y", "EXTRA"]  # repeated fields append
    assert list(cfg.model_operations.op_library_filename) == ["x.so"]
    assert cfg.dynamic_batching == mc.ModelDynamicBatching()  # the rest is generated as usual


def test_raw_config_that_does_not_parse_is_a_spec_error(tmp_path: Path) -> None:
    spec = _spec_with_raw(tmp_path, 'model_operations { op_library_filename: "x.so" }\nbogus_field: 3')
    with pytest.raises(SpecError) as exc:
        build(spec, tmp_path / "repo", device="cpu")
    message = str(exc.value)
    assert "models[0].raw_config: raw_config line 2, column 1" in message and "bogus_field" in message
    assert not (tmp_path / "repo").exists()


def test_copy_models_of_python_folders_and_labels(tmp_path: Path) -> None:
    result = import_repository(HANDWRITTEN, tmp_path / "project" / "spec.yaml", copy_models=True)
    models = {m.name: m for m in load_spec(result.spec_path).spec.models}
    assert models["prep"].path == "models/prep/model"
    assert models["prep"].outputs and models["prep"].outputs[0].label_filename == "models/prep/labels.txt"
    assert models["scorer"].versions == {1: "models/scorer/1/model.py", 2: "models/scorer/2/model.py"}
    rebuilt = build(result.spec_path, tmp_path / "rebuilt", device="cpu").output
    assert normalized_differences(HANDWRITTEN, rebuilt, "cpu") == {}
    assert (rebuilt / "prep/1/helpers.py").read_bytes() == (HANDWRITTEN / "prep/1/helpers.py").read_bytes()


def test_python_folder_keeps_its_custom_file_name(tmp_path: Path) -> None:
    """A folder is shipped as it is, so default_model_filename stays valid: it is kept in raw_config."""
    repo = tmp_path / "repo"
    shutil.copytree(CORPUS[0].parent / "custom_model_filename", repo)
    (repo / "m" / "1" / "model.py").write_text("# not the model Triton runs\n")
    result, rebuilt = round_trip(repo, tmp_path)
    assert result.kept_raw == {"m": ["default_model_filename"]} and result.differences == {}
    assert configs(rebuilt)["m"].default_model_filename == "custom.py"
    # issue 21: the file Triton loads is served as repoforge_user_model.py behind the build's error-counting file
    assert (rebuilt / "m/1/repoforge_user_model.py").read_bytes() == (repo / "m/1/custom.py").read_bytes()
    assert (rebuilt / "m/1/custom.py").read_bytes() == model_file("user").read_bytes()
    assert (rebuilt / "m/1/model.py").read_bytes() == (repo / "m/1/model.py").read_bytes()


def test_a_python_file_keeps_its_own_name(tmp_path: Path) -> None:
    """NVIDIA's examples name a model file mymodel.py with default_model_filename: the built repository has the
    same default_model_filename and the file under that name, not model.py."""
    repo = tmp_path / "repo"
    shutil.copytree(CORPUS[0].parent / "custom_model_filename", repo)
    (repo / "m" / "1" / "custom.py").rename(repo / "m" / "1" / "mymodel.py")
    cfg = (repo / "m" / "config.pbtxt").read_text().replace("custom.py", "mymodel.py")
    (repo / "m" / "config.pbtxt").write_text(cfg)
    result, rebuilt = round_trip(repo, tmp_path)
    assert result.differences == {} and not [w for w in result.warnings if "default_model_filename" in w]
    assert configs(rebuilt)["m"].default_model_filename == "mymodel.py"
    assert sorted(p.name for p in (rebuilt / "m" / "1").iterdir()) == [
        "mymodel.py", "repoforge_runtime", "repoforge_user_model.py",
    ]  # fmt: skip
    assert (rebuilt / "m/1/repoforge_user_model.py").read_bytes() == (repo / "m/1/mymodel.py").read_bytes()
    assert (rebuilt / "m/1/mymodel.py").read_bytes() == model_file("user").read_bytes()


def test_a_python_folder_without_model_py_keeps_its_file_name_and_helpers(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(CORPUS[0].parent / "custom_model_filename", repo)
    (repo / "m" / "1" / "helpers.py").write_text("X = 1\n")
    result, rebuilt = round_trip(repo, tmp_path)
    assert result.differences == {} and result.kept_raw == {"m": ["default_model_filename"]}
    assert sorted(p.name for p in (rebuilt / "m" / "1").iterdir()) == [
        "custom.py", "helpers.py", "repoforge_runtime", "repoforge_user_model.py",
    ]  # fmt: skip


def test_a_folder_without_config_says_how_to_import_it(tmp_path: Path) -> None:
    case = ROOT / "tests" / "lint_corpus" / "valid" / "python_auto_complete_no_config"
    with pytest.raises(ImportFailed, match="import with --server bundled to read the effective config"):
        import_repository(case, tmp_path / "spec.yaml")
    assert not (tmp_path / "spec.yaml").exists()
    with pytest.raises(ImportFailed, match="--server /nope/tritonserver"):
        import_repository(case, tmp_path / "spec.yaml", server="/nope/tritonserver")


def test_import_survives_every_broken_repository(tmp_path: Path) -> None:
    """tests/lint_corpus/invalid (repositories Triton refuses): import imports what it can and reports the rest,
    or says why nothing can be imported; it never crashes or writes a spec that does not load."""
    for case in sorted(p for p in (ROOT / "tests" / "lint_corpus" / "invalid").iterdir() if p.is_dir()):
        out = tmp_path / case.name / "spec.yaml"
        try:
            result = import_repository(case, out)
        except ImportFailed as exc:
            assert "no model" in str(exc), case.name
            assert not out.exists(), case.name
            continue
        assert load_spec(out).spec.models and result.models, case.name


@pytest.mark.parametrize("copy", [False, True])
def test_a_plugins_drift_profile_imports_as_the_copy_in_the_model_folder(tmp_path: Path, copy: bool) -> None:
    import numpy as np

    from repoforge.drift.profile import make_profile, write_profile

    src = tmp_path / "src"
    src.mkdir()
    np.savez(src / "ref.npz", age=np.random.default_rng(0).normal(40, 10, 500))
    write_profile(make_profile(src / "ref.npz", "feats"), src / "ref.json")
    (src / "spec.yaml").write_text(
        "version: 1\nmodels:\n  - name: feats\n    format: python\n    max_batch_size: 8\n    plugin:\n"
        "      kind: features\n      columns: [{name: age, dtype: FP32}]\n"
        "      features: [{op: standardize, column: age, mean: 40, std: 10}]\n"
        "      drift: {reference: ref.json, window: 1000}\n"
    )
    repo = build(src / "spec.yaml", tmp_path / "repo", device="cpu").output
    shutil.rmtree(src)  # the original spec and its profile are gone: only the build remains
    out = tmp_path / "imported" / "spec.yaml"
    result = import_repository(repo, out, copy_models=copy)
    plugin = load_spec(result.spec_path).spec.models[0].plugin
    assert plugin is not None and plugin.drift is not None
    want = "models/feats/drift_reference.json" if copy else "../repo/feats/drift_reference.json"
    assert plugin.drift.reference == want
    build(out, tmp_path / "rebuilt", device="cpu")  # the imported spec builds again
