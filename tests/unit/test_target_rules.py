"""Each target owns its build rules (`Target.rules`): Triton's load rules run on Triton builds only, so a TorchServe
build is not refused for a Triton setting TorchServe never reads, and it checks its own wiring itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from repoforge.errors import SpecError
from repoforge.plan import make_plan
from repoforge.spec import load_spec
from repoforge.targets import get_target
from repoforge.torchserve.builder import build_torchserve

BAD = Path(__file__).resolve().parents[1] / "bad_specs"


def test_each_target_states_its_own_rules() -> None:
    triton, torchserve = get_target("triton").rules, get_target("torchserve").rules
    assert triton.server_config_rules and not torchserve.server_config_rules
    assert triton.deploy.gateway and not torchserve.deploy.gateway


@pytest.mark.parametrize("case", ["ensemble_step_version.yaml", "preferred_batch_size_too_big.yaml"])
def test_triton_load_rules_refuse_for_triton_only(case: str) -> None:
    loaded = load_spec(BAD / case)
    with pytest.raises(SpecError):
        make_plan(loaded, "cpu", get_target("triton").rules)
    make_plan(loaded, "cpu", get_target("torchserve").rules)  # a Triton rule, not TorchServe's


def test_torchserve_refuses_an_unmapped_step_input_itself(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"step 0 \(add_mul\) does not map its required input 'b'"):
        build_torchserve(load_spec(BAD / "ensemble_unmapped_input.yaml"), tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()
