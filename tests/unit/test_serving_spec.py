"""`serving:` (issue 25): the build records it in the lock file for `repoforge gateway`; a wrong section is a
located error and nothing is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from repoforge.build import build
from repoforge.errors import SpecError
from repoforge.gateway.command import ServingOptions, serving_settings
from repoforge.gateway.errors import GatewayArgumentError
from repoforge.spec.serving import parse_bytes

ROOT = Path(__file__).resolve().parents[2]
TABULAR = ROOT / "examples" / "tabular"


def _spec(tmp_path: Path, serving: str) -> Path:
    shutil.copytree(TABULAR, tmp_path / "tabular")
    spec = tmp_path / "tabular" / "spec.yaml"
    spec.write_text(spec.read_text() + serving)
    return spec


@pytest.mark.parametrize(
    ("text", "expected"),
    [("6GiB", 6 * 1024**3), ("512MiB", 512 * 1024**2), ("2GB", 2 * 1000**3), ("800Mi", 800 * 1024**2),
     ("1.5GiB", int(1.5 * 1024**3)), (4096, 4096), ("4096", 4096)],
)  # fmt: skip
def test_sizes(text: object, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["6 parsecs", "GiB", "-1GiB", 0, True, "0"])
def test_bad_sizes(text: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_bytes(text)


def test_build_records_serving_in_the_lock(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "serving: {max_loaded: 2, memory_budget: 6GiB, always_loaded: [classifier]}\n")
    out = build(spec, tmp_path / "out", device="cpu").output
    serving = json.loads((out / "repoforge.lock.json").read_text())["serving"]
    assert serving == {"max_loaded": 2, "memory_budget": 6 * 1024**3, "always_loaded": ["classifier"],
                       "model_bytes_estimate": None, "tenants": [], "priority_levels": None,
                       "default_priority_level": None, "priority_queue_policy": {}, "rate_limiter": None,
                       "rate_limit_resources": []}  # fmt: skip
    settings = serving_settings(str(out), ServingOptions())
    assert settings is not None and settings.max_loaded == 2 and settings.memory_budget == 6 * 1024**3
    assert settings.load_concurrency == 1  # under a budget every load is measured alone
    again = serving_settings(str(out), ServingOptions(max_loaded=5, memory_budget="1GiB"))
    assert again is not None and again.max_loaded == 5 and again.memory_budget == 1024**3
    with pytest.raises(GatewayArgumentError, match="--memory-budget"):
        serving_settings(str(out), ServingOptions(memory_budget="lots"))


def test_without_serving_the_gateway_does_not_multiplex(tmp_path: Path) -> None:
    out = build(TABULAR / "spec.yaml", tmp_path / "out", device="cpu").output
    assert "serving" not in json.loads((out / "repoforge.lock.json").read_text())
    assert serving_settings(str(out), ServingOptions()) is None
    assert serving_settings(str(out), ServingOptions(max_loaded=3)) is not None


@pytest.mark.parametrize(
    ("serving", "field", "message"),
    [
        ("serving: {always_loaded: [classifer]}\n", "serving.always_loaded[0]", "not a model of this spec"),
        ("serving: {memory_budget: 6 parsecs}\n", "serving.memory_budget", "expected a size like 6GiB"),
        ("serving: {max_loaded: 0}\n", "serving.max_loaded", "greater than or equal to 1"),
        ("serving: {max_loaded: 1, always_loaded: [a, b]}\n", "serving", "always_loaded has 2 models but max_loaded is 1"),
        ("serving: {max_loded: 3}\n", "serving.max_loded", ""),
    ],
)  # fmt: skip
def test_wrong_serving_is_located_and_writes_nothing(tmp_path: Path, serving: str, field: str, message: str) -> None:
    spec = _spec(tmp_path, serving)
    line = len(spec.read_text().splitlines())
    with pytest.raises(SpecError) as err:
        build(spec, tmp_path / "out", device="cpu")
    text = str(err.value)
    assert f"spec.yaml:{line}" in text and field in text and message in text, text
    assert not (tmp_path / "out").exists()


def test_serving_needs_the_triton_target(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "serving: {max_loaded: 2}\n")
    with pytest.raises(SpecError, match="target triton"):
        build(spec, tmp_path / "out", target="torchserve", device="cpu")


@pytest.mark.parametrize(
    ("tenants", "field", "message"),
    [
        ("[{name: a, api_key_env: A_KEY, rate: fast}]", "serving.tenants[0].rate", "expected a rate like 50/s"),
        ("[{name: a, api_key_env: 'bad name'}]", "serving.tenants[0].api_key_env", "not an environment variable"),
        ("[{name: a}]", "serving.tenants[0].api_key_env", ""),
        ("[{name: a, api_key_env: K}, {name: a, api_key_env: L}]", "serving.tenants", "repeat name a"),
        ("[{name: a, api_key_env: K, priority: 0}]", "serving.tenants[0].priority", ""),
    ],
)  # fmt: skip
def test_wrong_tenants_are_located(tmp_path: Path, tenants: str, field: str, message: str) -> None:
    spec = _spec(tmp_path, f"serving:\n  tenants: {tenants}\n")
    with pytest.raises(SpecError) as err:
        build(spec, tmp_path / "out", device="cpu")
    text = str(err.value)
    assert field in text and message in text and "spec.yaml:" in text, text


def test_tenant_keys_come_from_the_environment(tmp_path: Path) -> None:
    from repoforge.gateway.tenants import tenants_from

    spec = _spec(tmp_path, "serving:\n  tenants: [{name: a, api_key_env: A_KEY, rate: 3000/min}]\n")
    out = build(spec, tmp_path / "out", device="cpu").output
    settings = serving_settings(str(out), ServingOptions())
    assert settings is not None and settings.tenants[0]["rate"] == 50.0
    with pytest.raises(GatewayArgumentError, match="A_KEY is not set"):
        tenants_from(settings.tenants, environ={})
    (tenant,) = tenants_from(settings.tenants, environ={"A_KEY": "secret"})
    assert tenant.key == "secret" and tenant.burst == 50
    assert [tenant.take() == 0 for _ in range(51)].count(True) == 50  # the burst, then the rate
