"""`perf --models` (issue 25): the distribution, the model patterns and the arguments refused before anything
starts (exit 2); the load itself runs against a real gateway in tests/integration/test_multiplex.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from repoforge.cli import main
from repoforge.perf.mix import MixArgumentError, expand_models, parse_distribution, perf_models, weights


@pytest.mark.parametrize(
    ("text", "expected"), [("zipf", ("zipf", 1.1)), ("zipf:1.3", ("zipf", 1.3)), ("Uniform", ("uniform", 0.0))]
)
def test_distributions(text: str, expected: tuple[str, float]) -> None:
    assert parse_distribution(text) == expected


@pytest.mark.parametrize("text", ["zipf:0", "zipf:x", "pareto", "uniform:2", "zipf:-1"])
def test_bad_distributions(text: str) -> None:
    with pytest.raises(MixArgumentError, match="--distribution"):
        parse_distribution(text)


def test_zipf_weights_fall_with_rank() -> None:
    w = weights("zipf", 1.0, 4)
    assert np.isclose(w.sum(), 1.0) and np.allclose(w / w[0], [1, 1 / 2, 1 / 3, 1 / 4])
    assert np.allclose(weights("uniform", 0.0, 5), 0.2)


def test_models_and_patterns_expand_in_the_order_given() -> None:
    known = ["m002", "m000", "m001", "m010", "other"]
    assert expand_models(["m01*", "m00*"], known) == ["m010", "m000", "m001", "m002"]
    assert expand_models(["other", "m000", "m00*"], known) == ["other", "m000", "m001", "m002"]  # no repeats
    with pytest.raises(MixArgumentError, match="'nope' matches no served model; served: m000"):
        expand_models(["nope"], known)


def test_arguments_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(MixArgumentError, match="--request"):
        perf_models("127.0.0.1:9", ["m*"])  # a running gateway needs the body to send
    with pytest.raises(MixArgumentError, match="--duration"):
        perf_models(str(tmp_path), ["m*"], duration_s=0)
    with pytest.raises(MixArgumentError, match="--api-key-env"):
        perf_models(str(tmp_path), ["m*"], api_key_env="REPOFORGE_TEST_UNSET_VARIABLE")
    (tmp_path / "spec.yaml").write_text("version: 1\n")
    with pytest.raises(MixArgumentError, match="give a build folder"):
        perf_models(str(tmp_path / "spec.yaml"), ["m*"])


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["perf", "repo"], "give one of -m MODEL"),
        (["perf", "repo", "-m", "a", "--models", "a,b"], "give one of -m MODEL"),
        (["perf", "repo", "--models", "a,b", "--baseline", "b.json"], "--baseline measures one model"),
        (["perf", "repo", "--models", "a", "--distribution", "pareto"], "--distribution"),
    ],
)
def test_cli_usage_errors_exit_2(tmp_path: Path, args: list[str], says: str) -> None:
    (tmp_path / "repo").mkdir()
    result = CliRunner().invoke(main, [a if a != "repo" else str(tmp_path / "repo") for a in args])
    assert result.exit_code == 2, result.output
    assert says in result.output
