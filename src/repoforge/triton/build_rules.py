"""What a Triton build checks and says (`BuildRules`): the plan's default, and `TritonTarget.rules`."""

from __future__ import annotations

from repoforge.plan_base import BuildRules
from repoforge.spec.deploy import DeployRules

TRITON_RULES = BuildRules(
    cpu_kind_word="KIND_CPU", user_handler=False, python_entry_file=True, own_serving=False,
    plugin_kinds=None, rollout=True, drift=True, optimize=True, ignored_fields=("model_file", "handler"),
    gpu_only_optimization_warning=True, server_config_rules=True, explicit_model_control=True, gateway=True,
    deploy=DeployRules(server="tritonserver"),
)  # fmt: skip
