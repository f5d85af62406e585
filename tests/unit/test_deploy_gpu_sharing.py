"""`deploy.gpu` (issue 25): a pod shares a GPU with other tenants' pods as a MIG slice or a time-sliced replica, in
the resource names and node labels NVIDIA's k8s-device-plugin and gpu-feature-discovery use (deploy/k8s.py
`gpu_request` cites them). Goldens for `deploy k8s` (MIG mixed, time-slicing) and `deploy kserve` (MIG), the
Deployments through kubernetes-validate, the InferenceService through KServe's CRD, and the located errors of
`--set` (the build's are in tests/bad_specs/deploy_gpu_*.yaml).

Regenerate the goldens after an intended change, then read the diff:

    REPOFORGE_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_deploy_gpu_sharing.py
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import _declare, _without_installed_repoforge, assert_matches_golden

from repoforge.build import build
from repoforge.deploy.command import KUBERNETES_VERSION, deploy_k8s
from repoforge.deploy.kserve import deploy_kserve
from repoforge.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]
TABULAR = ROOT / "examples" / "tabular" / "spec.yaml"
MIG = "gpu={mig: 1g.10gb}"
SLICED = "gpu={time_slicing: 4, rename_by_default: true}"
SINGLE = "gpu={mig: 3g.40gb, mig_strategy: single, product: A100-SXM4-80GB}"


@pytest.fixture(scope="module")
def gpu_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = build(TABULAR, tmp_path_factory.mktemp("gpu-sharing") / "build", device="gpu").output
    return _declare(_without_installed_repoforge(out), {})  # the stock image serves it: no image warning


def _pod(out: Path) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((out / "deployment.yaml").read_text(encoding="utf-8")) if d]
    kv = pytest.importorskip("kubernetes_validate")
    for doc in docs:
        kv.validate(doc, KUBERNETES_VERSION, strict=True)
    pod: dict[str, Any] = docs[0]["spec"]["template"]["spec"]
    return pod


@pytest.mark.parametrize(("kind", "sets"), [("gpu-mig", MIG), ("gpu-time-slicing", SLICED)])
def test_manifests_match_goldens(gpu_build: Path, tmp_path: Path, kind: str, sets: str) -> None:
    out = deploy_k8s(gpu_build, tmp_path / kind, sets=[sets]).output
    _pod(out)
    assert_matches_golden(out, kind)


def test_mig_mixed_requests_the_profile_as_its_own_resource(gpu_build: Path, tmp_path: Path) -> None:
    pod = _pod(deploy_k8s(gpu_build, tmp_path / "out", sets=[MIG, "resources.gpu=2"]).output)
    res = pod["containers"][0]["resources"]
    assert res["requests"]["nvidia.com/mig-1g.10gb"] == res["limits"]["nvidia.com/mig-1g.10gb"] == "2"
    assert "nvidia.com/gpu" not in res["requests"]  # the device plugin hands out one device type per container
    assert pod["nodeSelector"] == {"nvidia.com/mig.strategy": "mixed"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def test_mig_single_keeps_nvidia_gpu_and_selects_the_profile_by_labels(gpu_build: Path, tmp_path: Path) -> None:
    out = deploy_k8s(gpu_build, tmp_path / "out", sets=[SINGLE]).output
    pod = _pod(out)
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {
        "nvidia.com/mig.strategy": "single",
        "nvidia.com/gpu.slices.gi": "3",
        "nvidia.com/gpu.product": "A100-SXM4-80GB-MIG-3g.40gb",
    }
    assert "MIG slice 3g.40gb" in (out / "README.md").read_text()


def test_time_slicing_asks_for_one_replica_on_time_sliced_nodes(gpu_build: Path, tmp_path: Path) -> None:
    pod = _pod(deploy_k8s(gpu_build, tmp_path / "out", sets=["gpu={time_slicing: 3}"]).output)
    assert pod["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.sharing-strategy": "time-slicing", "nvidia.com/gpu.replicas": "3"}


def test_the_gateway_sidecar_holds_no_gpu(tmp_path: Path) -> None:
    """Only the server's container holds the slice: the gateway beside it (serving:) needs none."""
    shutil.copytree(TABULAR.parent, tmp_path / "tabular")
    spec = tmp_path / "tabular" / "spec.yaml"
    spec.write_text(spec.read_text() + "serving:\n  max_loaded: 1\n")
    built = build(spec, tmp_path / "build", device="gpu").output
    pod = _pod(deploy_k8s(built, tmp_path / "out", sets=[MIG, "gateway={image: 'r/repoforge:1'}"]).output)
    triton, gateway = pod["containers"]
    assert "nvidia.com/mig-1g.10gb" in triton["resources"]["limits"]
    assert not any(k.startswith("nvidia.com/") for k in gateway.get("resources", {}).get("limits", {}))


def test_kserve_requests_the_slice_and_selects_its_nodes(gpu_build: Path, tmp_path: Path) -> None:
    from jsonschema import Draft4Validator

    out = deploy_kserve(gpu_build, tmp_path / "kserve-gpu-mig", sets=[MIG], storage_uri="s3://models/tabular").output
    assert_matches_golden(out, "kserve-gpu-mig")
    (isvc,) = [d for d in yaml.safe_load_all((out / "inferenceservice.yaml").read_text()) if d]
    crd = yaml.safe_load((ROOT / "tests/data/crds/kserve-serving.kserve.io_inferenceservices.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    errors = list(Draft4Validator(version["schema"]["openAPIV3Schema"]).iter_errors(isvc))
    assert errors == []
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["resources"]["limits"]["nvidia.com/mig-1g.10gb"] == "1"
    assert predictor["nodeSelector"] == {"nvidia.com/mig.strategy": "mixed"}


@pytest.mark.parametrize(
    ("sets", "field", "says"),
    [
        (["gpu={mig: 10gb}"], "deploy.gpu.mig", "expected a MIG profile such as 1g.10gb"),
        (["gpu={mig: 1g.10gb, time_slicing: 2}"], "deploy.gpu", "not both"),
        (["gpu={time_slicing: 1}"], "deploy.gpu.time_slicing", "at least 2"),
        (["gpu={time_slicing: 2}", "resources.gpu=0"], "deploy.resources.gpu", "nothing to request"),
        (["gpu={time_slicing: 2}", "resources.gpu=2"], "deploy.resources.gpu", "requests 1 replica"),
        (["gpu={mig: 1g.10gb, product: A100-SXM4-80GB}"], "deploy.gpu.product", "mig_strategy: single"),
        (["gpu={time_slicing: 2, mig_strategy: single}"], "deploy.gpu.mig_strategy", "applies to mig"),
        (["gpu={mig: 1g.10gb, rename_by_default: true}"], "deploy.gpu.rename_by_default", "applies to time_slicing"),
    ],
)  # fmt: skip
def test_bad_sharing_is_a_located_error(gpu_build: Path, tmp_path: Path, sets: list[str], field: str,
                                        says: str) -> None:  # fmt: skip
    with pytest.raises(SpecError) as err:
        deploy_k8s(gpu_build, tmp_path / "out", sets=sets)
    assert f"{field}:" in str(err.value) and says in str(err.value), str(err.value)
    assert not (tmp_path / "out").exists()


def test_sharing_on_a_cpu_build_is_an_error(tmp_path: Path) -> None:
    cpu = build(TABULAR, tmp_path / "cpu", device="cpu").output
    with pytest.raises(SpecError, match=r"deploy\.gpu\.mig: mig shares a GPU, and a --device cpu build runs on none"):
        deploy_k8s(cpu, tmp_path / "out", sets=[MIG])
