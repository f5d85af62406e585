"""Tenants' priorities and the rate limiter of `serving:` (issue 25) in the built configs: `build` writes Triton's
dynamic-batching priority levels and per-level queue policies when tenants exist, gives instance groups the
serving-wide rate limiter, and the server is started with `--rate-limit execution_count`; a priority the configs
cannot carry is a located error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from repoforge.build import build
from repoforge.errors import SpecError
from repoforge.gateway.tenants import Tenant, priority_of
from repoforge.targets.triton.serve import make_server
from repoforge.triton.config import parse_config
from repoforge.triton.reader import rate_limit_flags, read_repository

ROOT = Path(__file__).resolve().parents[2]
TABULAR = ROOT / "examples" / "tabular"
TENANTS = """serving:
  tenants:
    - {name: gold, api_key_env: GOLD_KEY, priority: 1}
    - {name: bronze, api_key_env: BRONZE_KEY, priority: 3}
"""


def _spec(tmp_path: Path, serving: str, model_extra: str = "") -> Path:
    shutil.copytree(TABULAR, tmp_path / "tabular")
    spec = tmp_path / "tabular" / "spec.yaml"
    text = spec.read_text()
    if "dynamic_batching" in model_extra:  # the model's own batcher replaces the example's
        text = text.replace(
            "    dynamic_batching:\n      preferred_batch_sizes: [16, 32]\n      max_queue_delay_us: 500\n", ""
        )
    if model_extra:
        text = text.replace("    response_cache: false\n", f"    response_cache: false\n{model_extra}")
    spec.write_text(text + serving)
    return spec


def _config(out: Path, name: str = "classifier") -> mc.ModelConfig:
    return parse_config((out / name / "config.pbtxt").read_text())


def test_tenants_become_priority_levels_with_queue_policies(tmp_path: Path) -> None:
    spec = _spec(tmp_path, TENANTS + "  priority_queue_policy:\n    3: {timeout_us: 20000, max_queue_size: 64}\n")
    out = build(spec, tmp_path / "out", device="cpu").output
    db = _config(out).dynamic_batching
    assert db.priority_levels == 3  # the largest tenant priority
    assert db.default_priority_level == 3  # a request naming none waits behind every tenant
    assert list(db.priority_queue_policy) == [3]
    policy = db.priority_queue_policy[3]
    assert policy.default_timeout_microseconds == 20000 and policy.max_queue_size == 64
    assert policy.timeout_action == mc.ModelQueuePolicy.REJECT
    assert list(db.preferred_batch_size) == [16, 32] and db.max_queue_delay_microseconds == 500  # the model's own kept
    text = (out / "classifier" / "config.pbtxt").read_text()
    assert "priority_levels: 3" in text  # written with text_format (what Triton reads)
    lock = json.loads((out / "repoforge.lock.json").read_text())["serving"]
    assert lock["priority_queue_policy"]["3"]["timeout_us"] == 20000
    assert rate_limit_flags(out, read_repository(out)) == []  # no rate limiter declared: Triton's stays off


def test_spec_levels_and_default_level(tmp_path: Path) -> None:
    spec = _spec(tmp_path, TENANTS + "  priority_levels: 5\n  default_priority_level: 4\n")
    db = _config(build(spec, tmp_path / "out", device="cpu").output).dynamic_batching
    assert (db.priority_levels, db.default_priority_level) == (5, 4)


def test_a_models_own_levels_are_kept_when_they_hold_every_tenant(tmp_path: Path) -> None:
    own = "    dynamic_batching: {priority_levels: 4, default_priority_level: 2}\n"
    spec = _spec(tmp_path, TENANTS, model_extra=own)
    db = _config(build(spec, tmp_path / "out", device="cpu").output).dynamic_batching
    assert (db.priority_levels, db.default_priority_level) == (4, 2)


def test_without_tenants_no_priorities(tmp_path: Path) -> None:
    out = build(_spec(tmp_path, "serving: {max_loaded: 2}\n"), tmp_path / "out", device="cpu").output
    assert _config(out).dynamic_batching.priority_levels == 0


@pytest.mark.parametrize(
    ("serving", "model_extra", "field", "message"),
    [
        (TENANTS + "  priority_levels: 2\n", "", "serving.tenants[1].priority", "above serving.priority_levels 2"),
        (TENANTS + "  default_priority_level: 4\n", "", "serving.default_priority_level", "above priority_levels 3"),
        (TENANTS + "  priority_queue_policy: {7: {timeout_us: 10}}\n", "", "serving.priority_queue_policy",
         "outside 1..3"),
        ("serving: {max_loaded: 2, priority_levels: 2}\n", "", "serving.priority_levels", "has no tenants"),
        ("serving:\n  tenants: [{name: a}]\n", "", "serving.tenants[0].api_key_env", "required field is missing"),
        (TENANTS, "    dynamic_batching: {priority_levels: 2, default_priority_level: 1}\n",
         "models[0].dynamic_batching.priority_levels", "tenant 'bronze' sends priority 3"),
        ("serving:\n  rate_limiter: {resources: [{name: cpu, count: 2}]}\n  rate_limit_resources: "
         "[{name: cpu, count: 1}]\n", "", "serving.rate_limit_resources[0].count", "less than one instance needs (2)"),
        ("serving:\n  rate_limiter: {resources: [{name: cpu, count: 1}]}\n  rate_limit_resources: "
         "[{name: gpu, count: 1}]\n", "", "serving.rate_limit_resources[0].name", "they name cpu"),
        ("serving:\n  rate_limit_resources: [{name: 'a:b', count: 1}]\n", "", "serving.rate_limit_resources[0].name",
         "no ':' or ','"),
    ],
)  # fmt: skip
def test_wrong_priorities_and_resources_are_located(
    tmp_path: Path, serving: str, model_extra: str, field: str, message: str
) -> None:
    spec = _spec(tmp_path, serving, model_extra)
    with pytest.raises(SpecError) as err:
        build(spec, tmp_path / "out", device="cpu")
    text = str(err.value)
    assert field in text and message in text and "spec.yaml:" in text, text
    assert not (tmp_path / "out").exists()


def test_preserve_ordering_cannot_take_several_levels(tmp_path: Path) -> None:
    spec = _spec(tmp_path, TENANTS)
    spec.write_text(spec.read_text().replace("      max_queue_delay_us: 500\n",
                                             "      max_queue_delay_us: 500\n      preserve_ordering: true\n"))  # fmt: skip
    with pytest.raises(SpecError, match="preserve_ordering with one priority level only"):
        build(spec, tmp_path / "out", device="cpu")


def test_rate_limiter_goes_to_every_instance_group_and_to_the_server_flags(tmp_path: Path) -> None:
    serving = ("serving:\n  rate_limiter: {resources: [{name: cpu_slots, count: 1}], priority: 2}\n"
               "  rate_limit_resources: [{name: cpu_slots, count: 2}]\n")  # fmt: skip
    out = build(_spec(tmp_path, serving), tmp_path / "out", device="cpu").output
    (group,) = _config(out).instance_group
    assert group.rate_limiter.priority == 2
    assert [(r.name, r.count, getattr(r, "global")) for r in group.rate_limiter.resources] == [("cpu_slots", 1, False)]
    assert "rate_limiter {" in (out / "classifier" / "config.pbtxt").read_text()
    flags = ["--rate-limit=execution_count", "--rate-limit-resource=cpu_slots:2"]
    assert rate_limit_flags(out, read_repository(out)) == flags
    server = make_server(out, model_control="explicit", load_models=[])
    assert server.options.extra_args == flags  # serve, the gateway and deploy's recipe all start it so


def test_a_models_own_rate_limiter_wins(tmp_path: Path) -> None:
    own = "    instance_groups: [{kind: cpu, count: 1, rate_limiter: {resources: [{name: mine, count: 3}]}}]\n"
    spec = _spec(tmp_path, "serving:\n  rate_limiter: {resources: [{name: shared, count: 1}]}\n")
    spec.write_text(spec.read_text().replace("    instance_groups: [{kind: cpu, count: 1}]\n", own))
    out = build(spec, tmp_path / "out", device="cpu").output
    (group,) = _config(out).instance_group
    assert [r.name for r in group.rate_limiter.resources] == ["mine"]
    assert rate_limit_flags(out, read_repository(out)) == ["--rate-limit=execution_count"]


def test_the_gateway_sends_the_tenants_priority() -> None:
    gold = Tenant("gold", "k1", priority=1)
    assert priority_of({"state": {"tenant": gold}}) == 1
    assert priority_of({}) == 0  # no tenants: the model's default level
