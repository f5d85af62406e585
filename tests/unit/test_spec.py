"""Unit tests of spec loading: defaults, dtype spellings, versions and version policies, batching switches,
and the file:line:col locations that every message carries."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from repoforge.build import build
from repoforge.errors import SpecError
from repoforge.plan import make_plan
from repoforge.spec import effective, load_spec
from repoforge.spec.dtypes import TRITON_DTYPES, normalize_dtype
from repoforge.spec.models import DynamicBatching, VersionPolicy
from repoforge.spec.yamlsource import format_path, load_yaml
from repoforge.triton.config import build_config, to_text

ROOT = Path(__file__).resolve().parents[2]
CLASSIFIER = ROOT / "examples" / "tabular" / "models" / "classifier.onnx"  # FP32 [-1, 8] -> FP32 [-1, 3]
PREPROCESS = ROOT / "examples" / "ensemble" / "preprocess.py"


def write_spec(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def spec_error(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch, device: str = "cpu") -> SpecError:
    """Build `text` as tmp_path/spec.yaml (messages then name `spec.yaml`) and return the SpecError."""
    monkeypatch.chdir(tmp_path)
    path = write_spec(tmp_path, text)
    with pytest.raises(SpecError) as info:
        build(path, tmp_path / "out", device=device)
    assert not (tmp_path / "out").exists()
    return info.value


# --- defaults -------------------------------------------------------------------------------------------------

DEFAULTS_SPEC = f"""
version: 1
defaults:
  max_batch_size: 8
  instance_groups: [{{kind: cpu, count: 3}}]
  dynamic_batching: {{max_queue_delay_us: 250}}
  response_cache: true
models:
  - name: own
    format: onnx
    path: {CLASSIFIER}
    max_batch_size: 4
    instance_groups: [{{kind: cpu, count: 1}}]
  - name: inherits
    format: onnx
    path: {CLASSIFIER}
"""


def test_defaults_merge_override_and_inherit(tmp_path: Path):
    loaded = load_spec(write_spec(tmp_path, DEFAULTS_SPEC))
    own, inherits = (effective(loaded, m) for m in loaded.spec.models)

    assert own.max_batch_size == 4
    assert [(g.kind, g.count) for g in own.instance_groups] == [("cpu", 1)]
    assert inherits.max_batch_size == 8
    assert [(g.kind, g.count) for g in inherits.instance_groups] == [("cpu", 3)]
    # fields the model does not set come from defaults for both models
    for m in (own, inherits):
        assert m.dynamic_batching.max_queue_delay_us == 250
        assert m.response_cache is True
    # the raw model is untouched: merging happens on a copy
    assert loaded.spec.models[1].max_batch_size is None

    plan = make_plan(loaded, "cpu")
    assert plan.model("own").max_batch_size == 4
    assert plan.model("inherits").max_batch_size == 8
    text = to_text(build_config(plan.model("inherits"), "cpu"))
    assert "max_batch_size: 8" in text and "count: 3" in text and "max_queue_delay_microseconds: 250" in text


def test_origin_points_at_defaults_for_inherited_fields(tmp_path: Path):
    loaded = load_spec(write_spec(tmp_path, DEFAULTS_SPEC))
    assert loaded.origin(0, "max_batch_size") == ("models", 0, "max_batch_size")
    assert loaded.origin(1, "max_batch_size") == ("defaults", "max_batch_size")
    assert loaded.origin(0, "dynamic_batching") == ("defaults", "dynamic_batching")
    assert loaded.origin(1, "instance_groups") == ("defaults", "instance_groups")
    # neither the model nor defaults set it: the model itself
    assert loaded.origin(1, "warmup") == ("models", 1)
    # and the origin resolves to the line where it was written
    src = loaded.source
    assert (
        src.locate(loaded.origin(1, "max_batch_size")).line,
        src.locate(loaded.origin(1, "max_batch_size")).column,
    ) == (3, 19)
    assert src.locate(loaded.origin(0, "max_batch_size")).line == 11
    assert src.locate(loaded.origin(1, "warmup")).line == 13


def test_error_in_an_inherited_field_points_at_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    err = spec_error(
        tmp_path,
        f"""
        version: 1
        defaults:
          warmup: {{batch_sizes: [1, 16]}}
        models:
          - name: small
            format: onnx
            path: {CLASSIFIER}
            max_batch_size: 4
        """,
        monkeypatch,
    )
    assert str(err) == "spec.yaml:3:29 defaults.warmup.batch_sizes[1]: warmup batch size 16 exceeds max_batch_size 4"


def test_defaults_for_step_models_do_not_break_an_ensemble(tmp_path: Path):
    path = write_spec(
        tmp_path,
        f"""
        version: 1
        defaults:
          max_batch_size: 8
          instance_groups: [{{kind: cpu, count: 2}}]
          dynamic_batching: {{max_queue_delay_us: 100}}
          warmup: {{batch_sizes: [1]}}
        models:
          - name: preprocess
            format: python
            path: {PREPROCESS}
            inputs: [{{name: RAW, dtype: FP32, dims: [8]}}]
            outputs: [{{name: FEATURES, dtype: FP32, dims: [8]}}]
          - name: pipeline
            format: ensemble
            steps:
              - model: preprocess
                inputs: {{RAW: RAW}}
                outputs: {{FEATURES: F}}
        """,
    )
    build(path, tmp_path / "out", device="cpu")
    assert (tmp_path / "out" / "pipeline" / "1").is_dir()


def test_default_dynamic_batching_skips_models_that_cannot_use_it(tmp_path: Path):
    path = write_spec(
        tmp_path,
        f"""
        version: 1
        defaults:
          dynamic_batching: {{max_queue_delay_us: 100}}
        models:
          - name: seq
            format: python
            path: {PREPROCESS}
            max_batch_size: 4
            inputs: [{{name: RAW, dtype: FP32, dims: [8]}}]
            outputs: [{{name: FEATURES, dtype: FP32, dims: [8]}}]
            sequence_batching: {{control_inputs: [{{name: START, kind: start}}]}}
          - name: unbatched
            format: python
            path: {PREPROCESS}
            inputs: [{{name: RAW, dtype: FP32, dims: [8]}}]
            outputs: [{{name: FEATURES, dtype: FP32, dims: [8]}}]
          - name: batched
            format: onnx
            path: {CLASSIFIER}
        """,
    )
    plan = make_plan(load_spec(path), "cpu")
    assert [(m.name, m.dynamic_batching) for m in plan.models] == [
        ("seq", False),
        ("unbatched", False),
        ("batched", True),
    ]


# --- instance group kinds follow the device -------------------------------------------------------------------

KINDS_SPEC = f"""
version: 1
defaults:
  instance_groups: [{{kind: cpu, count: 1}}]
models:
  - name: counted
    format: onnx
    path: {CLASSIFIER}
    instance_groups: [{{count: 2}}, {{count: 1, gpus: [1]}}]
  - name: explicit
    format: onnx
    path: {CLASSIFIER}
    instance_groups: [{{kind: cpu, count: 1}}]
  - name: inherits
    format: onnx
    path: {CLASSIFIER}
  - name: pre
    format: python
    path: {PREPROCESS}
    inputs: [{{name: RAW, dtype: FP32, dims: [8]}}]
    outputs: [{{name: FEATURES, dtype: FP32, dims: [8]}}]
    instance_groups: [{{count: 2}}]
"""


def _kinds(plan, name: str, device: str) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    from tritonclient.grpc import model_config_pb2 as mc

    cfg = build_config(plan.model(name), device)
    return [(mc.ModelInstanceGroup.Kind.Name(g.kind), g.count) for g in cfg.instance_group]


def test_an_instance_group_without_kind_follows_the_device(tmp_path: Path):
    loaded = load_spec(write_spec(tmp_path, KINDS_SPEC))
    gpu = make_plan(loaded, "gpu")
    assert _kinds(gpu, "counted", "gpu") == [("KIND_GPU", 2), ("KIND_GPU", 1)]
    assert _kinds(gpu, "pre", "gpu") == [("KIND_CPU", 2)]  # python models run on the CPU unless they ask for a GPU
    # an explicit kind cpu stays, in the model or in defaults:, and the build says so, naming the model
    assert _kinds(gpu, "explicit", "gpu") == [("KIND_CPU", 1)]
    assert _kinds(gpu, "inherits", "gpu") == [("KIND_CPU", 1)]
    kind_warnings = [w for w in gpu.warnings if "kind cpu" in w]
    assert [w.split(":")[0] for w in kind_warnings] == ["explicit", "inherits"]
    assert "from `defaults:`" in kind_warnings[1] and "--device gpu" in kind_warnings[1]
    cpu = make_plan(loaded, "cpu")
    assert _kinds(cpu, "counted", "cpu") == [("KIND_CPU", 2), ("KIND_CPU", 1)]
    assert not [w for w in cpu.warnings if "kind cpu" in w]


def test_cli_build_prints_the_kind_warning_even_when_quiet(tmp_path: Path):
    from click.testing import CliRunner

    from repoforge.cli import main

    spec = write_spec(tmp_path, KINDS_SPEC)
    res = CliRunner().invoke(main, ["build", str(spec), "-o", str(tmp_path / "out"), "--device", "gpu", "-q"])
    assert res.exit_code == 0, res.output
    assert "warning: explicit: instance group kind cpu stays KIND_CPU" in res.output


# --- dtypes ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "written, expected",
    [
        ("float32", "FP32"),
        ("FP32", "FP32"),
        ("fp32", "FP32"),
        ("TYPE_FP32", "FP32"),
        ("float", "FP32"),
        ("float16", "FP16"),
        ("half", "FP16"),
        ("double", "FP64"),
        ("bfloat16", "BF16"),
        ("string", "BYTES"),
        ("bytes", "BYTES"),
        ("BYTES", "BYTES"),
        ("str", "BYTES"),
        ("int64", "INT64"),
        ("TYPE_INT8", "INT8"),
        ("uint8", "UINT8"),
        ("bool", "BOOL"),
        ("TYPE_BOOL", "BOOL"),
    ],
)
def test_dtype_aliases(written: str, expected: str):
    assert normalize_dtype(written) == expected


def test_type_string_is_bytes():
    assert normalize_dtype("TYPE_STRING") == "BYTES"


def test_dtype_aliases_in_a_spec_reach_the_config(tmp_path: Path):
    path = write_spec(
        tmp_path,
        f"""
        version: 1
        models:
          - name: p
            format: python
            path: {PREPROCESS}
            inputs:
              - {{name: A, dtype: float32, dims: [2]}}
              - {{name: B, dtype: TYPE_INT64, dims: [2]}}
              - {{name: C, dtype: string, dims: [1]}}
            outputs: [{{name: D, dtype: double, dims: [2]}}]
        """,
    )
    loaded = load_spec(path)
    assert [t.dtype for t in loaded.spec.models[0].inputs] == ["FP32", "INT64", "BYTES"]
    text = to_text(build_config(make_plan(loaded, "cpu").model("p"), "cpu"))
    for enum in ("TYPE_FP32", "TYPE_INT64", "TYPE_STRING", "TYPE_FP64"):
        assert f"data_type: {enum}" in text


def test_every_triton_dtype_round_trips():
    for d in TRITON_DTYPES:
        assert normalize_dtype(d) == d
        assert normalize_dtype(d.lower()) == d
        assert normalize_dtype(f"TYPE_{d}") == d or d == "BYTES"


def test_unknown_dtype_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown dtype 'fp128'; expected one of BOOL, .*BYTES"):
        normalize_dtype("fp128")


# --- versions and version_policy ------------------------------------------------------------------------------


def _model_yaml(extra: str) -> str:
    """One ONNX model `m` (lines 1-5) followed by `extra` as more of its fields (from line 6 on)."""
    lines = ["version: 1", "models:", "  - name: m", "    format: onnx", f"    path: {CLASSIFIER}"]
    lines += ["    " + line for line in textwrap.dedent(extra).strip("\n").splitlines()]
    return "\n".join(lines) + "\n"


def test_versions_list_reuses_path(tmp_path: Path):
    loaded = load_spec(write_spec(tmp_path, _model_yaml("versions: [1, 2]")))
    assert loaded.spec.models[0].versions == {1: None, 2: None}
    plan = make_plan(loaded, "cpu").model("m")
    assert plan.versions == {1: CLASSIFIER, 2: CLASSIFIER}


def test_versions_mapping_gives_one_file_per_version(tmp_path: Path):
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.onnx").write_bytes(CLASSIFIER.read_bytes())
    text = f"""
        version: 1
        models:
          - name: m
            format: onnx
            versions:
              1: {CLASSIFIER}
              3: v/a.onnx
        """
    loaded = load_spec(write_spec(tmp_path, text))
    assert loaded.spec.models[0].versions == {1: str(CLASSIFIER), 3: "v/a.onnx"}
    plan = make_plan(loaded, "cpu").model("m")
    assert plan.versions == {1: CLASSIFIER, 3: (tmp_path / "v" / "a.onnx").resolve()}
    result = build(tmp_path / "spec.yaml", tmp_path / "out", device="cpu")
    assert "m/3/model.onnx" in result.files and "m/2/model.onnx" not in result.files


@pytest.mark.parametrize(
    "versions, message",
    [
        ("[1, 1]", "versions are listed twice"),
        ("[]", "versions must not be empty"),
        ("[true]", "versions must be a list of integers or a mapping version -> path"),
        ("[0]", "version numbers must be >= 1 (Triton ignores folder 0)"),
    ],
)
def test_bad_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, versions: str, message: str):
    err = spec_error(tmp_path, _model_yaml(f"versions: {versions}"), monkeypatch)
    assert str(err) == f"spec.yaml:6:15 models[0].versions: {message}"


@pytest.mark.parametrize(
    "written, expected, pbtxt",
    [
        ("latest", VersionPolicy(latest=1), "latest {\n    num_versions: 1\n  }"),
        ("all", VersionPolicy(all=True), "all {\n  }"),
        ("{latest: 2}", VersionPolicy(latest=2), "latest {\n    num_versions: 2\n  }"),
        ("{specific: [1, 3]}", VersionPolicy(specific=[1, 3]), "specific {\n    versions: 1\n    versions: 3\n  }"),
    ],
)
def test_version_policy_forms(tmp_path: Path, written: str, expected: VersionPolicy, pbtxt: str):
    loaded = load_spec(write_spec(tmp_path, _model_yaml(f"versions: [1, 2, 3]\nversion_policy: {written}")))
    assert loaded.spec.models[0].version_policy == expected
    text = to_text(build_config(make_plan(loaded, "cpu").model("m"), "cpu"))
    assert f"version_policy {{\n  {pbtxt}\n}}" in text


@pytest.mark.parametrize(
    "written, message",
    [
        ("newest", "unknown version policy 'newest'; expected latest, all, {latest: N} or {specific: [..]}"),
        ("{latest: 1, all: true}", "set exactly one of latest, all, specific"),
        ("{}", "set exactly one of latest, all, specific"),
        ("{latest: 0}", "Input should be greater than or equal to 1 (got 0)"),
        ("{lates: 1}", "unknown field 'lates' (did you mean 'latest'?)"),
    ],
)
def test_bad_version_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: str, message: str):
    err = spec_error(tmp_path, _model_yaml(f"version_policy: {written}"), monkeypatch)
    assert message in str(err)
    assert all(p.field.startswith("models[0].version_policy") for p in err.problems)
    assert all(p.location.line == 6 for p in err.problems)


def test_specific_version_policy_must_name_existing_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    err = spec_error(tmp_path, _model_yaml("versions: [1, 2]\nversion_policy: {specific: [3]}"), monkeypatch)
    assert "models[0].version_policy" in str(err)


# --- dynamic_batching switches --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "written, enabled",
    [
        ("true", True),
        ("false", False),
        ("{max_queue_delay_us: 5}", True),
        ("{enabled: false, max_queue_delay_us: 5}", False),
    ],
)
def test_dynamic_batching_bool_and_mapping(tmp_path: Path, written: str, enabled: bool):
    loaded = load_spec(write_spec(tmp_path, _model_yaml(f"dynamic_batching: {written}")))
    db = loaded.spec.models[0].dynamic_batching
    assert isinstance(db, DynamicBatching) and db.enabled is enabled
    plan = make_plan(loaded, "cpu").model("m")
    assert plan.dynamic_batching is enabled
    assert ("dynamic_batching {" in to_text(build_config(plan, "cpu"))) is enabled


def test_dynamic_batching_is_on_by_default_for_a_batchable_onnx_model(tmp_path: Path):
    plan = make_plan(load_spec(write_spec(tmp_path, _model_yaml(""))), "cpu").model("m")
    assert plan.max_batch_size == 32 and plan.dynamic_batching is True


def test_dynamic_batching_false_is_fine_without_a_batch_axis(tmp_path: Path):
    plan = make_plan(
        load_spec(
            write_spec(
                tmp_path,
                _model_yaml(
                    "max_batch_size: 0\ndynamic_batching: false\ninputs: [{name: input, dtype: FP32, dims: [-1, 8]}]"
                ),
            )
        ),
        "cpu",
    ).model("m")
    assert plan.max_batch_size == 0 and plan.dynamic_batching is False
    assert plan.inputs[0].dims == [-1, 8]


# --- warmup ---------------------------------------------------------------------------------------------------


def test_warmup_shape_for_an_unknown_input_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    err = spec_error(tmp_path, _model_yaml("warmup: {batch_sizes: [1], shapes: {inptu: [8]}}"), monkeypatch)
    assert "inptu" in str(err)


# --- locations ------------------------------------------------------------------------------------------------

LOCATE_TEXT = """\
version: 1
models:
  - name: a
    format: onnx
    inputs:
      - {name: x, dtype: FP32, dims: [4, 8]}
    dynamic_batching:
      preferred_batch_sizes:
        - 4
        - 8
"""


def test_locate_values_and_keys():
    src = load_yaml(LOCATE_TEXT, "spec.yaml")

    def at(path, key=False):
        loc = src.locate(path, key=key)
        return loc.line, loc.column

    assert at(()) == (1, 1)
    assert at(("version",)) == (1, 10)
    assert at(("version",), key=True) == (1, 1)
    assert at(("models",)) == (3, 3)
    assert at(("models", 0)) == (3, 5)
    assert at(("models", 0, "name")) == (3, 11)
    assert at(("models", 0, "name"), key=True) == (3, 5)
    assert at(("models", 0, "format")) == (4, 13)
    assert at(("models", 0, "inputs", 0)) == (6, 9)
    assert at(("models", 0, "inputs", 0, "dtype")) == (6, 26)
    assert at(("models", 0, "inputs", 0, "dtype"), key=True) == (6, 19)
    assert at(("models", 0, "inputs", 0, "dims", 1)) == (6, 42)
    assert at(("models", 0, "dynamic_batching", "preferred_batch_sizes", 1)) == (10, 11)
    # a path that is not in the file falls back to its nearest ancestor
    assert at(("models", 0, "warmup", "batch_sizes")) == (3, 5)
    assert at(("models", 0, "inputs", 0, "reshape")) == (6, 9)
    assert at(("models", 5)) == (3, 3)
    # a key that is absent: the value of its parent mapping
    assert at(("models", 0, "nope"), key=True) == (3, 5)
    assert str(src.locate(("models", 0, "format"))) == "spec.yaml:4:13"


def test_format_path():
    assert format_path(()) == ""
    assert format_path(("models", 0, "inputs", 2, "dims")) == "models[0].inputs[2].dims"
    assert (
        format_path(("defaults", "dynamic_batching", "priority_queue_policy", 3))
        == "defaults.dynamic_batching.priority_queue_policy[3]"
    )


def test_locations_survive_comments_blank_lines_and_flow_style(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    err = spec_error(
        tmp_path,
        f"""
        # a comment

        version: 1   # trailing comment
        models:

          - {{name: m, format: onnx, path: "{CLASSIFIER}", max_batch_size: 4, warmup: {{batch_sizes: [2, 9]}}}}
        """,
        monkeypatch,
    )
    line = (tmp_path / "spec.yaml").read_text().splitlines()[5]
    col = line.index("9]") + 1
    assert (
        str(err) == f"spec.yaml:6:{col} models[0].warmup.batch_sizes[1]: warmup batch size 9 exceeds max_batch_size 4"
    )


# --- several problems at once ---------------------------------------------------------------------------------


def test_all_validation_problems_are_reported_sorted_by_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # pydantic reports the unknown top-level key last; the user sees the problems in file order
    err = spec_error(
        tmp_path,
        f"""
        version: 1
        repositry: r
        models:
          - name: b
            format: onnx
            path: {CLASSIFIER}
            instance_groups: [{{kind: cpu, count: 0}}]
          - name: a
            format: onnxx
            path: {CLASSIFIER}
            inputs: [{{name: x, dtype: float99, dims: [1]}}]
        """,
        monkeypatch,
    )
    lines = str(err).splitlines()
    assert lines[0] == "4 problems in the spec:"
    assert [p.location.line for p in err.problems] == [2, 7, 9, 11]
    assert lines[1] == "spec.yaml:2:1 repositry: unknown field 'repositry' (did you mean 'repository'?)"
    assert (
        lines[2]
        == "spec.yaml:7:42 models[0].instance_groups[0].count: Input should be greater than or equal to 1 (got 0)"
    )
    assert lines[3].startswith("spec.yaml:9:13 models[1].format: Input should be 'onnx', 'tensorrt', 'torchscript'")
    assert lines[3].endswith("or 'ensemble' (got 'onnxx')")
    assert lines[4].startswith(
        "spec.yaml:11:31 models[1].inputs[0].dtype: unknown dtype 'float99'; expected one of BOOL"
    )


def test_plan_problems_across_models_are_reported_together_sorted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    err = spec_error(
        tmp_path,
        f"""
        version: 1
        models:
          - name: late
            format: onnx
            path: {CLASSIFIER}
            max_batch_size: 4
            warmup: {{batch_sizes: [8]}}
          - name: early
            format: onnx
            path: {CLASSIFIER}
            max_batch_size: 4
            dynamic_batching: {{preferred_batch_sizes: [16]}}
            inputs: [{{name: input, dtype: INT32, dims: [8]}}]
        """,
        monkeypatch,
    )
    assert len(err.problems) == 3
    assert [p.location.line for p in err.problems] == sorted(p.location.line for p in err.problems)
    assert [p.field for p in err.problems] == [
        "models[0].warmup.batch_sizes[0]",
        "models[1].dynamic_batching.preferred_batch_sizes[0]",
        "models[1].inputs[0].dtype",
    ]
    assert str(err).startswith("3 problems in the spec:\n")


def test_one_problem_has_no_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    err = spec_error(tmp_path, _model_yaml("max_batch_size: -1"), monkeypatch)
    assert str(err) == "spec.yaml:6:21 models[0].max_batch_size: Input should be greater than or equal to 0 (got -1)"


def test_spec_outside_the_working_directory_is_named_by_its_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    spec = write_spec(tmp_path, _model_yaml("max_batch_size: -1"), name="other.yaml")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    (problem,) = info.value.problems
    assert Path(problem.location.file).resolve() == spec.resolve()
    assert str(info.value).startswith(f"{problem.location.file}:6:21 ")


def test_missing_spec_file(tmp_path: Path):
    with pytest.raises(SpecError, match="file not found"):
        load_spec(tmp_path / "nope.yaml")
