"""`repoforge deploy kserve`: a ServingRuntime and an InferenceService for a Triton and a TorchServe build, checked
against KServe's own CRDs (vendored in tests/data/crds with their source and commit; `Draft4Validator` on each
version's openAPIV3Schema), goldens, the storage URI, usage errors, and no Secret value in any file.

Regenerate the goldens after an intended change, then read the diff:

    REPOFORGE_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_deploy_kserve.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from deploy_helpers import SECRET_VALUE, _declare, _ts_spec, _without_installed_repoforge, assert_matches_golden

from repoforge.build import build
from repoforge.cli import main
from repoforge.deploy.command import KUBERNETES_VERSION
from repoforge.deploy.kserve import deploy_kserve
from repoforge.errors import BuildError, SpecError

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "tests" / "data" / "crds"
TABULAR = ROOT / "examples" / "tabular" / "spec.yaml"
SETS = (
    "namespace=serving",
    "replicas={min: 2, max: 6}",
    "resources={gpu: 1, cpu: '4', memory: 16Gi}",
    "env={LOG_LEVEL: info}",
    "secrets={API_TOKEN: {secret: model-secrets, key: token}}",
    "redis={deploy: true}",
)


def _validators() -> dict[tuple[str, str], Any]:
    """(apiVersion, kind) → a Draft4Validator of that CRD version's schema."""
    from jsonschema import Draft4Validator

    out = {}
    for f in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(f.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            out[(f"{group}/{v['name']}", kind)] = Draft4Validator(v["schema"]["openAPIV3Schema"])
    return out


VALIDATORS = _validators()


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("kserve")
    triton = build(TABULAR, root / "tabular", device="gpu").output
    _declare(_without_installed_repoforge(triton), {})
    ts = build(_ts_spec(root), root / "ts-build", target="torchserve", device="cpu").output
    _declare(_without_installed_repoforge(ts), {"classifier": ["onnxruntime"]})
    return {
        "kserve-triton": deploy_kserve(triton, root / "kt", sets=SETS, storage_uri="s3://models/tabular").output,
        "kserve-torchserve": deploy_kserve(ts, root / "kts").output,
    }


@pytest.mark.parametrize("kind", ["kserve-triton", "kserve-torchserve"])
def test_manifests_match_goldens(outputs: dict[str, Path], kind: str) -> None:
    assert_matches_golden(outputs[kind], kind)


def _docs(root: Path) -> list[dict[str, Any]]:
    return [
        d
        for f in sorted(root.glob("*.yaml"))
        if f.name != "kustomization.yaml"
        for d in yaml.safe_load_all(f.read_text())
        if d
    ]


@pytest.mark.parametrize("kind", ["kserve-triton", "kserve-torchserve"])
def test_output_validates_against_kserves_crds(outputs: dict[str, Path], kind: str) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    seen = set()
    for doc in _docs(outputs[kind]):
        key = (doc["apiVersion"], doc["kind"])
        if key in VALIDATORS:
            errors = sorted(VALIDATORS[key].iter_errors(doc), key=str)
            assert not errors, f"{doc['kind']}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
            seen.add(doc["kind"])
        else:  # the core objects (ConfigMap, Redis) as `deploy k8s` checks them
            kv.validate(doc, KUBERNETES_VERSION, strict=True)
    assert seen == {"ServingRuntime", "InferenceService"}
    k = yaml.safe_load((outputs[kind] / "kustomization.yaml").read_text())
    assert sorted(k["resources"]) == sorted(
        p.name for p in outputs[kind].glob("*.yaml") if p.name != "kustomization.yaml"
    )


def test_the_validator_catches_a_wrong_field() -> None:
    """Why validating is a check: a wrong type or a missing required field fails against the CRD."""
    v = VALIDATORS[("serving.kserve.io/v1beta1", "InferenceService")]
    bad = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "x"},
           "spec": {"predictor": {"minReplicas": "two", "model": {"modelFormat": {"name": "triton"}}}}}  # fmt: skip
    assert any("minReplicas" in str(list(e.path)) for e in v.iter_errors(bad))
    runtime = VALIDATORS[("serving.kserve.io/v1alpha1", "ServingRuntime")]
    assert list(runtime.iter_errors({"apiVersion": "serving.kserve.io/v1alpha1", "kind": "ServingRuntime", "spec": {}}))


def _by_kind(root: Path) -> dict[str, dict[str, Any]]:
    return {d["kind"] + ("/redis" if d["metadata"]["name"].endswith("-redis") else ""): d for d in _docs(root)}


def test_triton_runtime_and_inference_service(outputs: dict[str, Path]) -> None:
    docs = _by_kind(outputs["kserve-triton"])
    rt, isvc = docs["ServingRuntime"], docs["InferenceService"]
    c = rt["spec"]["containers"][0]
    assert c["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"  # declares nothing: the stock image
    assert "--model-repository=/mnt/models" in c["args"] and "--http-port=8080" in c["args"]
    assert rt["spec"]["supportedModelFormats"][0]["name"] == isvc["spec"]["predictor"]["model"]["modelFormat"]["name"]
    p = isvc["spec"]["predictor"]
    assert (p["minReplicas"], p["maxReplicas"]) == (2, 6)
    m = p["model"]
    assert m["runtime"] == rt["metadata"]["name"] and m["storageUri"] == "s3://models/tabular"
    assert m["resources"]["limits"]["nvidia.com/gpu"] == "1" and m["resources"]["requests"]["cpu"] == "4"
    env = {e["name"]: e for e in m["env"]}
    assert env["API_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "model-secrets", "key": "token"}
    assert env["REPOFORGE_REDIS_URL"]["value"] == "redis://tabular-redis.serving.svc:6379/0"
    assert "Deployment/redis" in docs and "Service/redis" in docs and "PodDisruptionBudget/redis" in docs
    for f in outputs["kserve-triton"].iterdir():
        assert SECRET_VALUE not in f.read_text() and "kind: Secret\n" not in f.read_text()


def test_torchserve_runtime_loads_the_mars_and_registers_workflows(outputs: dict[str, Path]) -> None:
    docs = _by_kind(outputs["kserve-torchserve"])
    rt, isvc, cm = docs["ServingRuntime"], docs["InferenceService"], docs["ConfigMap"]
    c = rt["spec"]["containers"][0]
    assert c["image"].startswith("ts-flow-torchserve:")  # onnxruntime declared: the image `repoforge image` writes
    assert c["lifecycle"]["postStart"]["exec"]["command"][-1].endswith("register_workflows.py")
    props = cm["data"]["config.properties"]
    assert "model_store=/mnt/models/model-store" in props and "workflow_store=/mnt/models/wf-store" in props
    assert "management_address=http://127.0.0.1:8081" in props and "inference_address=http://0.0.0.0:8080" in props
    assert "load_models=classifier.mar" in props
    assert (
        isvc["spec"]["predictor"]["model"]["storageUri"] == "pvc://ts-flow-models"
    )  # default: deploy.model_repository


def test_usage_errors_and_refusals(outputs: dict[str, Path], tmp_path: Path) -> None:
    build_dir = outputs["kserve-triton"].parent / "tabular"
    r = CliRunner().invoke(main, ["deploy", "kserve", str(build_dir), "-o", str(tmp_path / "o"), "--storage-uri", "ftp://x"])  # fmt: skip
    assert r.exit_code == 2 and "--storage-uri" in r.output and not (tmp_path / "o").exists()
    r = CliRunner().invoke(main, ["deploy", "kserve", str(tmp_path / "nope"), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "repoforge build" in r.output
    with pytest.raises(SpecError):
        deploy_kserve(build_dir, tmp_path / "o", sets=["replicas={min: 5, max: 2}"])
    assert not (tmp_path / "o").exists()
    r = CliRunner().invoke(main, ["deploy", "kserve", str(build_dir), "-o", str(tmp_path / "o"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["storage_uri"] == "pvc://tabular-models"
    r = CliRunner().invoke(main, ["deploy", "kserve", str(build_dir), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--force" in r.output
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(BuildError):
        deploy_kserve(build_dir, tmp_path / "mine", force=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
