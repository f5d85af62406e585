"""`repoforge image`, the images `deploy k8s` and `serve --print-command` name, and `deploy:`'s env, secrets and
redis: a build that declares nothing beyond the stock image needs no image; one that declares packages gets a
complete context (every COPY source exists) FROM the stock image of its server; secrets stay references."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from deploy_helpers import SECRET_VALUE, _declare, _ts_spec, _without_installed_repoforge

from repoforge.build import build
from repoforge.cli import main
from repoforge.deploy.command import KUBERNETES_VERSION, deploy_k8s
from repoforge.deploy.image import ngc_image, write_image
from repoforge.deploy.kserve import deploy_kserve
from repoforge.errors import BuildError, SpecError
from repoforge.output import MANIFEST
from repoforge.servers.triton_install import NGC_IMAGE

ROOT = Path(__file__).resolve().parents[2]
TABULAR = ROOT / "examples" / "tabular" / "spec.yaml"


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("image")
    gpu = build(TABULAR, root / "gpu", device="gpu").output  # native onnxruntime backend: nothing beyond the image
    declared = build(TABULAR, root / "declared", device="gpu").output
    ts = build(_ts_spec(root), root / "ts", target="torchserve", device="cpu").output
    return {
        "gpu": _without_installed_repoforge(gpu),
        "declared": _declare(_without_installed_repoforge(declared), {"classifier": ["redis", "onnxruntime"], "x": []}),
        "ts": _declare(_without_installed_repoforge(ts), {"classifier": ["onnxruntime"]}),
    }


def test_ngc_image_follows_the_triton_version() -> None:
    assert ngc_image("2.51.0") == NGC_IMAGE == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert ngc_image("2.53.0") == "nvcr.io/nvidia/tritonserver:24.12-py3"
    assert ngc_image("2.54") == "nvcr.io/nvidia/tritonserver:25.01-py3"
    with pytest.raises(BuildError):
        ngc_image("1.9")


def test_a_build_that_declares_nothing_needs_no_image(builds: dict[str, Path], tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["image", str(builds["gpu"]), "-o", str(tmp_path / "img")])
    assert r.exit_code == 0, r.output
    assert "needs nothing beyond the stock image nvcr.io/nvidia/tritonserver:24.10-py3" in r.output
    assert not (tmp_path / "img").exists()
    r = CliRunner().invoke(main, ["image", str(builds["gpu"]), "-o", str(tmp_path / "img"), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["needed"] is False
    out = deploy_k8s(builds["gpu"], tmp_path / "k8s").output
    dep = next(yaml.safe_load_all((out / "deployment.yaml").read_text()))
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == NGC_IMAGE
    assert "the stock image: the build declares nothing beyond it" in (out / "README.md").read_text()


def _dockerfile_sources(context: Path) -> list[str]:
    """Every source path of the Dockerfile's COPY/ADD lines."""
    sources = []
    for line in (context / "Dockerfile").read_text().splitlines():
        words = shlex.split(line) if line and not line.startswith("#") else []
        if words and words[0] in ("COPY", "ADD"):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


@pytest.mark.parametrize(
    ("kind", "base", "python"),
    [("declared", NGC_IMAGE, "python3"), ("ts", "pytorch/torchserve:0.12.0-cpu", "python")],
)
def test_image_context_is_complete(builds: dict[str, Path], tmp_path: Path, kind: str, base: str, python: str) -> None:
    out = tmp_path / "img"
    r = CliRunner().invoke(main, ["image", str(builds[kind]), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "docker build -t" in r.output and "--set image=" in r.output
    dockerfile = (out / "Dockerfile").read_text()
    assert f"\nFROM {base}\n" in dockerfile
    sources = _dockerfile_sources(out)
    assert sources and all((out / s).exists() for s in sources), sources
    assert f"RUN {python} -m pip install --no-cache-dir -r /opt/repoforge/requirements.txt" in dockerfile
    reqs = [ln for ln in (out / "requirements.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert reqs == (["onnxruntime", "redis"] if kind == "declared" else ["onnxruntime"])
    # nothing of the build is copied in: the pods mount the repository
    assert not any((out / m).exists() for m in ("classifier", "model-store", MANIFEST))
    # atomic, refused without --force, replaced with it
    r = CliRunner().invoke(main, ["image", str(builds[kind]), "-o", str(out)])
    assert r.exit_code == 2 and "--force" in r.output
    r = CliRunner().invoke(main, ["image", str(builds[kind]), "-o", str(out), "--force", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["requirements"] == reqs
    assert [p.name for p in tmp_path.iterdir()] == ["img"]


def test_image_usage_errors_exit_2_before_work(builds: dict[str, Path], tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["image", str(builds["declared"])])
    assert r.exit_code == 2 and "--output" in r.output
    r = CliRunner().invoke(main, ["image", str(tmp_path / "nope"), "-o", str(tmp_path / "img")])
    assert r.exit_code == 2 and "repoforge build" in r.output
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(BuildError):
        write_image(builds["declared"], tmp_path / "mine", force=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_a_build_importing_installed_repoforge_is_refused(builds: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    legacy = tmp_path / "legacy"
    shutil.copytree(builds["declared"], legacy)
    (legacy / "classifier" / "1" / "model.py").write_text("from repoforge.runtime import triton_python_model\n")
    r = CliRunner().invoke(main, ["image", str(legacy), "-o", str(tmp_path / "img")])
    assert r.exit_code == 2 and "imports the installed repoforge package (classifier/1/model.py)" in r.output
    assert not (tmp_path / "img").exists()
    r = CliRunner().invoke(main, ["serve", str(legacy), "--print-command"])
    assert r.exit_code != 0 and "classifier/1/model.py" in r.output


def test_deploy_names_the_image_to_push_and_set_image_overrides(builds: dict[str, Path], tmp_path: Path) -> None:
    out = deploy_k8s(builds["declared"], tmp_path / "a").output
    image = next(yaml.safe_load_all((out / "deployment.yaml").read_text()))["spec"]["template"]["spec"]["containers"][0]["image"]  # fmt: skip
    assert image.startswith("tabular-tritonserver:")
    readme = (out / "README.md").read_text()
    assert f"repoforge image {builds['declared'].name} -o image" in readme and "docker push" in readme
    out = deploy_k8s(builds["declared"], tmp_path / "b", sets=["image=registry.example/team/tab:1"]).output
    dep = next(yaml.safe_load_all((out / "deployment.yaml").read_text()))
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/team/tab:1"


def test_print_command_builds_the_image_context_then_runs_it(builds: dict[str, Path]) -> None:
    r = CliRunner().invoke(main, ["serve", str(builds["declared"]), "--print-command"])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if ln and not ln.startswith("#")]
    image_line, build_line, run_line = (shlex.split(ln) for ln in lines)
    assert image_line[:2] == ["repoforge", "image"] and image_line[-2] == "-o"
    assert build_line[:3] == ["docker", "build", "-t"] and build_line[-1] == image_line[-1]
    tag = build_line[3]
    assert run_line[:2] == ["docker", "run"] and tag in run_line and NGC_IMAGE not in run_line


def _env(out: Path) -> dict[str, dict[str, Any]]:
    dep = next(yaml.safe_load_all((out / "deployment.yaml").read_text()))
    return {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_env_secrets_and_a_deployed_redis(builds: dict[str, Path], tmp_path: Path) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    sets = [
        "env={LOG_LEVEL: debug}",
        "secrets={API_TOKEN: {secret: model-secrets, key: token}}",
        "redis={deploy: true, memory: 512Mi}",
        "namespace=serving",
    ]
    out = deploy_k8s(builds["declared"], tmp_path / "k", sets=sets).output
    env = _env(out)
    assert env["LOG_LEVEL"] == {"name": "LOG_LEVEL", "value": "debug"}
    assert env["API_TOKEN"] == {
        "name": "API_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "model-secrets", "key": "token"}},
    }
    assert env["REPOFORGE_REDIS_URL"]["value"] == "redis://tabular-redis.serving.svc:6379/0"
    docs = list(yaml.safe_load_all((out / "redis.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "PodDisruptionBudget"]
    assert all(d["metadata"]["name"] == "tabular-redis" and d["metadata"]["namespace"] == "serving" for d in docs)
    for d in docs:
        kv.validate(d, KUBERNETES_VERSION, strict=True)
    args = docs[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--maxmemory") + 1] == str(int(512 * 1024 * 1024 * 0.9))
    assert docs[1]["spec"]["selector"] == docs[0]["spec"]["selector"]["matchLabels"]
    assert "redis.yaml" in yaml.safe_load((out / "kustomization.yaml").read_text())["resources"]
    readme = (out / "README.md").read_text()
    assert "`API_TOKEN` ← Secret `model-secrets` key `token`" in readme and "REPOFORGE_REDIS_URL" in readme
    for f in out.iterdir():  # no Secret object and no value: only the reference
        text = f.read_text()
        assert "kind: Secret" not in text and SECRET_VALUE not in text
    # an external Redis
    out = deploy_k8s(builds["declared"], tmp_path / "e", sets=["redis={url: 'redis://cache.infra:6379/2'}"]).output
    assert _env(out)["REPOFORGE_REDIS_URL"]["value"] == "redis://cache.infra:6379/2"
    assert not (out / "redis.yaml").exists()


def test_secret_values_never_reach_a_file(builds: dict[str, Path], tmp_path: Path) -> None:
    """A user who keeps the Redis URL (with its password) in a Secret: the spec names the Secret, the value is
    only in the cluster. Every file written (build, manifests, lock) is searched for it."""
    spec = _ts_spec(
        tmp_path,
        "  secrets:\n    REPOFORGE_REDIS_URL: {secret: redis-auth, key: url}\n    DB_PASSWORD: {secret: db, key: pw}\n",
    )
    b = build(spec, tmp_path / "b", target="torchserve", device="cpu").output
    out = deploy_k8s(b, tmp_path / "k").output
    env = _env(out)
    assert env["REPOFORGE_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "redis-auth", "key": "url"}
    assert "value" not in env["DB_PASSWORD"]
    for f in [*b.rglob("*"), *out.rglob("*")]:
        if f.is_file():
            assert SECRET_VALUE.encode() not in f.read_bytes() and b"kind: Secret\n" not in f.read_bytes()


@pytest.mark.parametrize(
    ("deploy", "expect"),
    [
        ("  env: {1BAD: x}\n", "spec.yaml:17:8 deploy.env: '1BAD' is not an environment variable name"),
        ("  secrets: {TOKEN: {secret: Bad_Name, key: k}}\n", "deploy.secrets.TOKEN.secret: expected a Secret name"),
        ("  secrets: {TOKEN: {secret: s}}\n", "deploy.secrets.TOKEN.key: required field is missing"),
        ("  redis: {url: 'redis://r:6379', deploy: true}\n", "deploy.redis: set exactly one of url"),
        ("  redis: {url: 'http://r:6379'}\n", "deploy.redis.url: expected a redis://host:port/db URL"),
        ("  env: {A: x}\n  secrets: {A: {secret: s, key: k}}\n", "deploy.env.A: A is also set in secrets"),
        ("  env: {REPOFORGE_REDIS_URL: 'redis://x'}\n  redis: {deploy: true}\n", "deploy.env.REPOFORGE_REDIS_URL: REPOFORGE_REDIS_URL comes from redis:"),
        ("  env: {POD_NAME: x}\n", "deploy.env.POD_NAME: POD_NAME is set by the pod itself"),
    ],
)  # fmt: skip
def test_bad_env_secrets_redis_are_located(tmp_path: Path, deploy: str, expect: str) -> None:
    with pytest.raises(SpecError) as info:
        build(_ts_spec(tmp_path, deploy), tmp_path / "out", target="torchserve", device="cpu")
    text = str(info.value)
    assert "spec.yaml:1" in text and expect in text, text
    assert not (tmp_path / "out").exists()


def test_torchserve_pod_registers_its_workflows(builds: dict[str, Path], tmp_path: Path) -> None:
    """TorchServe loads only models at start (load_models): the pod's postStart hook registers the build's
    workflows with the management key, from a script in the server's ConfigMap."""
    out = deploy_k8s(builds["ts"], tmp_path / "k").output
    c = next(yaml.safe_load_all((out / "deployment.yaml").read_text()))["spec"]["template"]["spec"]["containers"][0]
    assert c["lifecycle"]["postStart"]["exec"]["command"] == ["python", "/etc/torchserve/register_workflows.py"]
    assert c["image"].startswith("ts-flow-torchserve:")  # declares onnxruntime: the image `repoforge image` writes
    cm = next(yaml.safe_load_all((out / "server-config.yaml").read_text()))
    script = cm["data"]["register_workflows.py"]
    compile(script, "register_workflows.py", "exec")
    assert 'WORKFLOWS = ["pipeline.war"]' in script
    props = cm["data"]["config.properties"]
    assert "model_store=/models/model-store" in props and "workflow_store=/models/wf-store" in props
    assert "management_address=http://0.0.0.0:8081" in props
    assert "register_workflows.py" in (out / "README.md").read_text()


def test_plugins_using_redis_are_told_to_get_a_cluster_url(tmp_path: Path) -> None:
    """The plugins example names redis://127.0.0.1:6379/0, the pod itself in a cluster: deploy warns and the
    README says so until deploy.redis (or REPOFORGE_REDIS_URL in secrets) gives the plugins a URL."""
    b = build(ROOT / "examples" / "plugins" / "spec.yaml", tmp_path / "b", device="cpu").output
    said: list[str] = []
    out = deploy_k8s(b, tmp_path / "k", progress=said.append).output
    assert any("plugins use Redis at the spec's URL" in m and "127.0.0.1" in m for m in said), said
    assert "**Redis is not set**" in (out / "README.md").read_text()
    said.clear()
    out = deploy_k8s(b, tmp_path / "k2", sets=["redis={deploy: true}"], progress=said.append).output
    assert not any("Redis" in m for m in said) and "**Redis is not set**" not in (out / "README.md").read_text()
    assert _env(out)["REPOFORGE_REDIS_URL"]["value"].startswith("redis://")


def _pod_properties(out: Path) -> dict[str, str]:
    """The config.properties the TorchServe pod runs (deploy k8s's or deploy kserve's ConfigMap), as key → value."""
    docs = [d for f in sorted(out.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    cm = next(d for d in docs if d.get("kind") == "ConfigMap" and "config.properties" in d.get("data", {}))
    lines = cm["data"]["config.properties"].splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def test_torchserve_pod_never_pip_installs_what_its_image_has(builds: dict[str, Path], tmp_path: Path) -> None:
    """The build's config.properties turns install_py_dep_per_model on (a TorchServe started from the stock image
    installs each .mar's requirements.txt at registration). The image `repoforge image` writes has those packages
    installed, so a pod on it (or on the pushed deploy.image) turns it off and installs nothing at start; only a
    pod on the stock image keeps it on."""
    build_props = (builds["ts"] / "config.properties").read_text()
    assert "install_py_dep_per_model=true" in build_props  # the .mar declares onnxruntime
    img = tmp_path / "img"
    assert CliRunner().invoke(main, ["image", str(builds["ts"]), "-o", str(img)]).exit_code == 0
    assert "onnxruntime" in (img / "requirements.txt").read_text().splitlines()  # what the pod would install
    assert "-r /opt/repoforge/requirements.txt" in (img / "Dockerfile").read_text()

    out = deploy_k8s(builds["ts"], tmp_path / "k").output
    assert _pod_properties(out)["install_py_dep_per_model"] == "false"
    assert "installs nothing at start" in (out / "README.md").read_text()
    out = deploy_k8s(builds["ts"], tmp_path / "pushed", sets=["image=registry.example/ts-flow:1"]).output
    assert _pod_properties(out)["install_py_dep_per_model"] == "false"
    out = deploy_kserve(builds["ts"], tmp_path / "ks").output
    assert _pod_properties(out)["install_py_dep_per_model"] == "false"
    # the stock image lacks onnxruntime: TorchServe installs it per model, as the build's own config says
    out = deploy_k8s(builds["ts"], tmp_path / "stock", sets=["image=pytorch/torchserve:0.12.0-cpu"]).output
    assert _pod_properties(out)["install_py_dep_per_model"] == "true"
    out = deploy_kserve(builds["ts"], tmp_path / "ks-stock", sets=["image=pytorch/torchserve:0.12.0-cpu"]).output
    assert _pod_properties(out)["install_py_dep_per_model"] == "true"


def test_print_command_on_a_torchserve_build_runs_it_as_a_pod_does(builds: dict[str, Path], tmp_path: Path) -> None:
    """`serve --print-command` on a TorchServe build: the image `repoforge image` writes (the build declares
    onnxruntime), the build's config.properties made for a container (0.0.0.0, the stores under /models, nothing
    pip-installed at start on that image), `docker run` with the build and that config mounted, then the workflow
    registered with the key TorchServe writes in the container."""
    r = CliRunner().invoke(main, ["serve", str(builds["ts"]), "--print-command", "--http-port", "9080"])
    assert r.exit_code == 0, r.output
    text = r.output
    syntax = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True, timeout=30)
    assert syntax.returncode == 0, syntax.stderr  # one shell script, as printed
    config = text.split("<<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    props = dict(ln.split("=", 1) for ln in config.splitlines() if "=" in ln and not ln.startswith("#"))
    assert props["inference_address"] == "http://0.0.0.0:8080" and props["management_address"] == "http://0.0.0.0:8081"
    assert props["model_store"] == "/models/model-store" and props["workflow_store"] == "/models/wf-store"
    assert props["install_py_dep_per_model"] == "false" and "pip-installs" not in config
    commands = [shlex.split(ln) for ln in text.replace(config, "").splitlines() if ln and not ln.startswith("#")]
    image, docker_build, cat, _eof, run, register = commands
    assert image[:2] == ["repoforge", "image"] and docker_build[:3] == ["docker", "build", "-t"]
    tag = docker_build[3]
    assert tag.startswith("ts-flow-torchserve:") and docker_build[-1] == image[-1]
    config_file = cat[2]
    assert run[:2] == ["docker", "run"] and tag in run and "--gpus" not in run
    assert f"{builds['ts'].resolve()}:/models" in run and f"{config_file}:/etc/torchserve/config.properties:ro" in run
    assert "9080:8080" in run and "9081:8081" in run
    assert run[run.index(tag) + 1 :] == ["torchserve", "--start", "--foreground", "--ncs", "--ts-config=/etc/torchserve/config.properties"]  # fmt: skip
    assert register[:3] == ["curl", "-X", "POST"] and register[-1] == "http://127.0.0.1:9081/workflows?url=pipeline.war"
    assert "docker exec ts-flow-torchserve python -c" in text and "['management']['key']" in text
    r = CliRunner().invoke(main, ["serve", str(builds["ts"]), "--print-command", "--cache-size", "1000"])
    assert r.exit_code == 2 and "--cache-size" in r.output


def test_print_command_on_a_torchserve_build_that_declares_nothing_runs_the_stock_image(
    builds: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    bare = _declare(shutil.copytree(builds["ts"], tmp_path / "bare"), {})
    r = CliRunner().invoke(main, ["serve", str(bare), "--print-command"])
    assert r.exit_code == 0, r.output
    assert "repoforge image" not in r.output and "docker build" not in r.output
    run = next(shlex.split(ln) for ln in r.output.splitlines() if ln.startswith("docker run"))
    assert "pytorch/torchserve:0.12.0-cpu" in run
