"""What a TorchServe build checks and says (`BuildRules`): `build_torchserve`'s plan, and `TorchServeTarget.rules`."""

from __future__ import annotations

from repoforge.plan_base import BuildRules
from repoforge.spec.deploy import TORCHSERVE_METRICS, DeployRules

TORCHSERVE_RULES = BuildRules(
    cpu_kind_word="deviceType cpu", user_handler=True, python_entry_file=False, own_serving=True,
    plugin_kinds=frozenset({"features"}), rollout=False, drift=False, optimize=False, ignored_fields=(),
    gpu_only_optimization_warning=False, server_config_rules=False,
    deploy=DeployRules(
        server="TorchServe", autoscale_metrics=TORCHSERVE_METRICS, gateway=False, tracing=False,
        model_repository_storage=False, model_control=False,
    ),
)  # fmt: skip
