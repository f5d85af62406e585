"""`serving:` resolved into the models' configs: tenants' priorities become Triton's dynamic-batching priority
levels (with the spec's per-level queue policies), and `serving.rate_limiter` the rate limiter of every instance
group that declares none. Here, before Triton's rules run on the built configs, so a priority the configs cannot
carry is an error at the spec line that asks for it, not at a config line the user never wrote.

Why in the build and not in the gateway: Triton reads priorities and rate-limiter resources only from a model's
config (and the server's flags), so the gateway can only send each tenant's requests with its level; the build
must have written the levels for the level to mean anything."""

from __future__ import annotations

from repoforge.plan_base import Checker, ModelPlan
from repoforge.spec.models import DynamicBatching, InstanceGroup
from repoforge.spec.serving import ServingSpec

PRIORITY_FIELDS = ("priority_levels", "default_priority_level", "priority_queue_policy")


def priority_levels(serving: ServingSpec) -> int:
    """The levels every dynamically batched model gets: the spec's, else the largest tenant priority (0: none)."""
    return serving.priority_levels or max((t.priority for t in serving.tenants), default=0)


def apply_serving(ck: Checker, plans: dict[str, ModelPlan]) -> None:
    """Check `serving:`'s priorities and rate limiter, then write them into the plans' (effective) model specs."""
    serving = ck.loaded.spec.serving
    if serving is None or not ck.rules.explicit_model_control:
        return  # the target cannot serve `serving:` at all: _check_serving says so
    _priorities(ck, serving, plans)
    _rate_limiter(ck, serving, plans)


def _priorities(ck: Checker, serving: ServingSpec, plans: dict[str, ModelPlan]) -> None:
    if not serving.tenants:
        for name in PRIORITY_FIELDS:
            if getattr(serving, name):
                ck.add(("serving", name), f"serving.{name} sets tenants' priorities, but serving has no tenants: "
                       "add serving.tenants (each with its priority) or remove it")  # fmt: skip
        return
    levels = priority_levels(serving)
    default = serving.default_priority_level or levels
    for j, t in enumerate(serving.tenants):
        if t.priority > levels:
            ck.add(("serving", "tenants", j, "priority"), f"tenant {t.name!r} has priority {t.priority}, above "
                   f"serving.priority_levels {levels}: raise priority_levels or lower the priority")  # fmt: skip
    if default > levels:
        ck.add(("serving", "default_priority_level"), f"default_priority_level {default} is above priority_levels "
               f"{levels} (1 is the highest, {levels} the lowest)")  # fmt: skip
    for level in serving.priority_queue_policy:
        if not 1 <= level <= levels:
            ck.add(("serving", "priority_queue_policy", level), f"priority level {level} is outside 1..{levels} "
                   "(serving.priority_levels)")  # fmt: skip
    top = max(serving.tenants, key=lambda t: t.priority)
    for p in plans.values():
        if not p.dynamic_batching or p.format == "ensemble":
            continue  # Triton orders by priority in the dynamic batcher only; others take the request as it comes
        db = p.spec.dynamic_batching or DynamicBatching()
        where = ck.loaded.origin(p.index, "dynamic_batching")
        if db.priority_levels:  # the model chose its own levels: they must hold every tenant's
            if db.priority_levels < top.priority:
                ck.add((*where, "priority_levels"), f"{p.name} has {db.priority_levels} priority levels but tenant "
                       f"{top.name!r} sends priority {top.priority}: Triton would queue its requests at the model's "
                       f"default level; raise them or leave priority_levels to serving:")  # fmt: skip
            continue
        if db.preserve_ordering and levels > 1:
            ck.add((*where, "preserve_ordering"), f"{p.name}: Triton allows preserve_ordering with one priority level "
                   f"only, and serving's tenants need {levels}: turn preserve_ordering off")  # fmt: skip
            continue
        policies = {**serving.priority_queue_policy, **db.priority_queue_policy}  # the model's own win
        update = {"priority_levels": levels, "default_priority_level": default, "priority_queue_policy": policies}
        p.spec = p.spec.model_copy(update={"dynamic_batching": db.model_copy(update=update)})


def _rate_limiter(ck: Checker, serving: ServingSpec, plans: dict[str, ModelPlan]) -> None:
    running = [p for p in plans.values() if p.format != "ensemble"]
    if serving.rate_limiter is not None:
        for p in running:
            groups = p.spec.instance_groups or [InstanceGroup(kind=p.instance_kind_default)]
            if p.spec.instance_groups and all(g.rate_limiter is not None for g in groups):
                continue
            mine = [g if g.rate_limiter is not None else g.model_copy(update={"rate_limiter": serving.rate_limiter})
                    for g in groups]  # fmt: skip
            p.spec = p.spec.model_copy(update={"instance_groups": mine})
    needed: dict[str, int] = {}  # resource -> the most one instance needs of it
    for p in running:
        for g in p.spec.instance_groups or []:
            for r in g.rate_limiter.resources if g.rate_limiter is not None else []:
                needed[r.name] = max(needed.get(r.name, 0), r.count)
    for j, have in enumerate(serving.rate_limit_resources):
        if have.name not in needed:
            ck.add(("serving", "rate_limit_resources", j, "name"), f"no instance group's rate_limiter needs "
                   f"resource {have.name!r}; they name {', '.join(sorted(needed)) or 'none'}")  # fmt: skip
        elif have.count < needed[have.name]:
            ck.add(("serving", "rate_limit_resources", j, "count"), f"{have.count} of {have.name!r} is less than one "
                   f"instance needs ({needed[have.name]}): Triton could never run it")  # fmt: skip
