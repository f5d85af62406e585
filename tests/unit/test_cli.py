"""The CLI only parses and prints: exit codes, --json and --help are the contract with users and CI."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from repoforge.cli import main


def test_bad_spec_exits_2_names_the_line_and_writes_nothing(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "version: 1\nmodels:\n  - name: m\n    format: onnx\n    path: missing.onnx\n    max_batch_sise: 4\n"
    )
    out = tmp_path / "repo"
    res = CliRunner().invoke(main, ["build", str(spec), "-o", str(out)])
    assert res.exit_code == 2
    assert (
        "spec.yaml:6:5 models[0].max_batch_sise: unknown field 'max_batch_sise' (did you mean 'max_batch_size'?)"
        in res.output
    )
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


def test_init_build_json_and_refuse_existing_output(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["init", str(tmp_path / "proj")]).exit_code == 0
    spec, out = tmp_path / "proj" / "spec.yaml", tmp_path / "repo"
    res = runner.invoke(main, ["build", str(spec), "-o", str(out), "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["models"] == ["classifier"] and "classifier/config.pbtxt" in data["files"]
    again = runner.invoke(main, ["build", str(spec), "-o", str(out)])
    assert again.exit_code == 2 and "--force" in again.output
    assert runner.invoke(main, ["build", str(spec), "-o", str(out), "--force", "-q"]).exit_code == 0
    assert runner.invoke(main, ["init", str(tmp_path / "proj")]).exit_code == 2  # no silent overwrite


def test_schema_is_json_schema_of_the_spec() -> None:
    res = CliRunner().invoke(main, ["schema"])
    schema = json.loads(res.stdout)
    assert schema["title"] == "repoforge spec v1"
    assert {"version", "models", "defaults"} <= set(schema["properties"])


def test_doctor_json_lists_every_capability() -> None:
    res = CliRunner().invoke(main, ["doctor", "--json"])
    names = {c["name"] for c in json.loads(res.stdout)}
    assert {"tritonserver", "perf_analyzer", "GPU", "redis-server", "torchserve"} <= names


def test_help_teaches_the_flow() -> None:
    res = CliRunner().invoke(main, ["--help"])
    assert "repoforge build" in res.output and "validate" in res.output
    assert "--device" in CliRunner().invoke(main, ["build", "--help"]).output


def test_serve_print_command_gives_the_ngc_docker_line(tmp_path: Path) -> None:
    runner = CliRunner()
    runner.invoke(main, ["init", str(tmp_path / "proj")])
    runner.invoke(
        main, ["build", str(tmp_path / "proj" / "spec.yaml"), "-o", str(tmp_path / "repo"), "--device", "gpu"]
    )
    res = runner.invoke(main, ["serve", str(tmp_path / "repo"), "--print-command"])
    assert res.exit_code == 0, res.output
    assert "docker run" in res.output and "nvcr.io/nvidia/tritonserver" in res.output and "--gpus" in res.output


def test_lint_exit_codes_and_json(tmp_path: Path) -> None:
    corpus = Path(__file__).parents[1] / "lint_corpus"
    bad = CliRunner().invoke(main, ["lint", str(corpus / "invalid" / "backend_escapes")])
    assert bad.exit_code == 1 and "backend_escapes/m/config.pbtxt:10:1: error: model 'm' backend" in bad.output
    good = CliRunner().invoke(
        main, ["lint", str(next(p for p in sorted((corpus / "valid").iterdir()) if p.is_dir())), "--json"]
    )
    assert good.exit_code == 0
    assert json.loads(good.stdout)["ok"] is True


def test_import_then_build_gives_the_repository_back(tmp_path: Path) -> None:
    runner = CliRunner()
    repo = Path(__file__).parents[1] / "data" / "import_handwritten"
    spec = tmp_path / "spec.yaml"
    res = runner.invoke(main, ["import", str(repo), "-o", str(spec), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["kept_raw"] and not data["differences"]
    assert runner.invoke(main, ["import", str(repo), "-o", str(spec)]).exit_code == 2  # no silent overwrite
    built = runner.invoke(main, ["build", str(spec), "-o", str(tmp_path / "again"), "--device", data["device"], "-q"])
    assert built.exit_code == 0, built.output


def test_prometheus_parser_sorts_labels_and_drops_torchserve_trailing_commas() -> None:
    from repoforge.metrics import parse_prometheus

    text = (
        '# HELP x\nrepoforge_cache_requests_total{result="hit",model="m"} 3\n'
        'ts_inference_requests_total{model_name="a",Hostname="vm",} 7.0\nnv_inference_count{model="m"} 2\n'
    )
    assert parse_prometheus(text, "repoforge_") == {'repoforge_cache_requests_total{model="m",result="hit"}': 3.0}
    assert parse_prometheus(text, "ts_") == {'ts_inference_requests_total{Hostname="vm",model_name="a"}': 7.0}
