"""GPU settings on models that run on CPU are warnings naming the models (issue 23, item 19): `resources.gpu=1` on
a --device cpu build, and `gpu_utilization` on a --device gpu build whose models all have KIND_CPU instances (what
`init`'s starter spec gives)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from repoforge.build import build
from repoforge.cli import main
from repoforge.deploy.command import deploy_k8s

ROOT = Path(__file__).resolve().parents[2]
TABULAR = ROOT / "examples" / "tabular" / "spec.yaml"


def test_a_gpu_for_a_cpu_build_is_a_warning_naming_its_models(tmp_path: Path) -> None:
    cpu = build(TABULAR, tmp_path / "cpu-build", device="cpu").output
    result = deploy_k8s(cpu, tmp_path / "k8s", sets=["resources.gpu=1"])
    assert any("resources.gpu" in w and "classifier" in w and "--device cpu" in w for w in result.warnings), (
        result.warnings
    )
    assert deploy_k8s(cpu, tmp_path / "k8s-plain").warnings == []
    res = CliRunner().invoke(
        main, ["deploy", "k8s", str(cpu), "-o", str(tmp_path / "k8s-cli"), "--set", "resources.gpu=1", "-q"]
    )
    assert res.exit_code == 0, res.output
    assert "warning:" in res.output and "classifier" in res.output


def test_gpu_utilization_on_a_gpu_build_of_cpu_models_is_a_warning_naming_them(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["init", str(tmp_path / "proj")]).exit_code == 0
    spec = tmp_path / "proj" / "spec.yaml"
    spec.write_text(spec.read_text() + "deploy:\n  autoscale: {metric: gpu_utilization}\n")
    built = build(spec, tmp_path / "gpu-build", device="gpu")
    assert any("gpu_utilization" in w and "classifier" in w and "KIND_CPU" in w for w in built.warnings), built.warnings
    result = deploy_k8s(built.output, tmp_path / "k8s")
    assert any("gpu_utilization" in w and "classifier" in w for w in result.warnings), result.warnings
