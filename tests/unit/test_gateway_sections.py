"""Top-level `gateway:` and `async:` in spec.yaml: validated with located errors, recorded by the build, read by
`repoforge gateway`/`worker` as the defaults of their flags and by `deploy k8s` for what deploy.gateway leaves unset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from repoforge.build import build
from repoforge.deploy.command import deploy_k8s
from repoforge.errors import SpecError
from repoforge.gateway.command import QueueOptions, recorded_sections
from repoforge.gateway.errors import GatewayArgumentError
from repoforge.output import MANIFEST
from repoforge.spec.load import load_spec

ROOT = Path(__file__).resolve().parents[2]
TABULAR = ROOT / "examples" / "tabular"
SECTIONS = """
gateway:
  port: 9123
  timeout_s: 5
async:
  queue: "shop:async"
  request_timeout_s: 20
  max_deliveries: 5
  result_ttl_s: 600
  workers: {concurrency: 8, max_replicas: 3}
"""


def _spec(tmp_path: Path, extra: str) -> Path:
    text = (TABULAR / "spec.yaml").read_text().replace("path: models/", f"path: {TABULAR}/models/")
    path = tmp_path / "spec.yaml"
    path.write_text(text + extra)
    return path


def test_the_sections_load_and_a_wrong_value_is_located(tmp_path: Path) -> None:
    loaded = load_spec(_spec(tmp_path, SECTIONS))
    assert loaded.spec.gateway is not None and loaded.spec.gateway.port == 9123
    assert loaded.spec.async_ is not None and loaded.spec.async_.workers.concurrency == 8
    bad = _spec(tmp_path, "gateway:\n  port: 0\nasync:\n  max_deliveries: zero\n  workers: {concurency: 2}\n")
    with pytest.raises(SpecError) as err:
        load_spec(bad)
    text = str(err.value)
    lines = bad.read_text().splitlines()
    port_line = lines.index("  port: 0") + 1
    assert f"spec.yaml:{port_line}" in text and "gateway.port" in text and "greater than or equal to 1" in text
    assert "async.max_deliveries" in text and "valid integer" in text and "(got 'zero')" in text
    assert "unknown field 'concurency' (did you mean 'concurrency'?)" in text


def test_deploy_gateway_may_repeat_a_value_but_not_contradict_it(tmp_path: Path) -> None:
    same = SECTIONS + "deploy:\n  gateway: {image: 'r/repoforge:1', port: 9123, workers: {max_replicas: 3}}\n"
    load_spec(_spec(tmp_path, same))
    other = SECTIONS + "deploy:\n  gateway: {image: 'r/repoforge:1', async: {request_timeout_s: 30}}\n"
    spec = _spec(tmp_path, other)
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    line = (
        spec.read_text().splitlines().index("  gateway: {image: 'r/repoforge:1', async: {request_timeout_s: 30}}") + 1
    )
    assert f"spec.yaml:{line}" in str(err.value)
    assert "deploy.gateway.async.request_timeout_s" in str(err.value) and "20" in str(err.value)


@pytest.fixture(scope="module")
def sectioned_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sections")
    return build(_spec(root, SECTIONS), root / "build", device="cpu").output


def test_the_build_records_them_and_the_gateway_and_worker_take_their_defaults_from_it(sectioned_build: Path) -> None:
    recorded = json.loads((sectioned_build / MANIFEST).read_text())["gateway"]
    assert recorded == {"gateway": {"port": 9123, "timeout_s": 5.0},
                        "async": {"queue": "shop:async", "request_timeout_s": 20.0, "max_deliveries": 5,
                                  "result_ttl_s": 600, "workers": {"concurrency": 8, "max_replicas": 3}}}  # fmt: skip
    sections = recorded_sections(str(sectioned_build))
    q = QueueOptions("redis://127.0.0.1:1/0").settings("--request-timeout", sections)
    assert q is not None
    assert (q.prefix, q.timeout_s, q.max_deliveries, q.result_ttl_s, q.visibility_timeout_s) == (
        "shop:async", 20.0, 5, 600, 50.0)  # fmt: skip
    flags = QueueOptions("redis://127.0.0.1:1/0", queue="mine", max_deliveries=2).settings(
        "--request-timeout", sections
    )
    assert flags is not None and (flags.prefix, flags.max_deliveries, flags.timeout_s) == ("mine", 2, 20.0)
    assert recorded_sections("127.0.0.1:8001") == {}


def test_a_build_with_async_refuses_a_gateway_without_redis(sectioned_build: Path) -> None:
    from repoforge.gateway.command import gateway

    with pytest.raises(GatewayArgumentError, match="async: section.*--redis"):
        gateway(str(sectioned_build), say=lambda _m: None)


def _docs(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(path.read_text()) if d}


def test_deploy_k8s_fills_deploy_gateway_from_the_sections(sectioned_build: Path, tmp_path: Path) -> None:
    out = deploy_k8s(sectioned_build, tmp_path / "out",
                     sets=["redis={deploy: true}", "gateway={image: 'r/repoforge:1'}"]).output  # fmt: skip
    docs = _docs(out / "gateway.yaml")
    gw = docs[("Deployment", "tabular-gateway")]["spec"]["template"]["spec"]["containers"][0]
    args = gw["args"]
    assert args[args.index("--port") + 1] == "9123" and args[args.index("--timeout") + 1] == "5"
    assert args[args.index("--queue") + 1] == "shop:async" and args[args.index("--request-timeout") + 1] == "20"
    worker = docs[("Deployment", "tabular-worker")]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert worker[worker.index("--concurrency") + 1] == "8"
    assert docs[("ScaledObject", "tabular-worker")]["spec"]["maxReplicaCount"] == 3
    # the Redis it deploys keeps the queue: no eviction (the gateway would refuse a Redis that evicts)
    redis_args = _docs(out / "redis.yaml")[("Deployment", "tabular-redis")]["spec"]["template"]["spec"]["containers"][0]
    assert redis_args["args"][redis_args["args"].index("--maxmemory-policy") + 1] == "noeviction"
    # a --set wins over the sections
    out2 = deploy_k8s(sectioned_build, tmp_path / "out2",
                      sets=["redis={deploy: true}", "gateway={image: 'r/repoforge:1', port: 7000}"]).output  # fmt: skip
    args2 = _docs(out2 / "gateway.yaml")[("Deployment", "tabular-gateway")]["spec"]["template"]["spec"]["containers"][
        0
    ]["args"]
    assert args2[args2.index("--port") + 1] == "7000"
