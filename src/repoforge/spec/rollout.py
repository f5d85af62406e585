"""The release policy: `repoforge rollout`'s options and the spec's `rollout:` section are this one model.

One model so the live controller (`repoforge.rollout`) and the Kubernetes policy it emits for Flagger and Argo
Rollouts (`repoforge deploy k8s`) judge a release on the same thresholds.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?)(ms|s|m|h)$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_s(text: str) -> float:
    """Seconds in a duration such as 500ms, 30s, 10m, 1h."""
    m = _DURATION.match(text.strip())
    if not m:
        raise ValueError(f"expected a duration such as 30s, 500ms, 10m (got {text!r})")
    return float(m.group(1)) * _UNIT_S[m.group(3)]


def _duration(v: Any) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = f"{v}s"
    if not isinstance(v, str):
        raise ValueError(f"expected a duration such as 30s, 500ms, 10m (got {v!r})")
    duration_s(v)
    return v.strip()


class RolloutSpec(BaseModel):
    """How a candidate model replaces the one a router sends traffic to, and when it is rolled back."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    router: str | None = Field(default=None, description="The router plugin model that splits the traffic.")
    candidate: str | None = Field(default=None, description="The model being released (one of the router's routes).")
    strategy: Literal["canary", "blue-green"] = Field(
        default="canary", description="canary: traffic in steps; blue-green: all at once after a shadow."
    )
    steps: list[float] = Field(
        default=[5, 25, 50, 100], description="canary: the candidate's traffic percent at each step, rising to 100."
    )
    interval: str = Field(default="30s", description="Length of each analysis (one check per interval).")
    threshold: int = Field(default=2, ge=1, description="Failed checks before the candidate is rolled back.")
    max_error_rate: float = Field(
        default=0.01, ge=0, le=1, description="Highest error rate of the candidate's requests, as a fraction."
    )
    max_p99_ms: float | None = Field(
        default=None, gt=0, description="Highest p99 latency of the candidate (as the router sees it), in ms."
    )
    min_agreement: float = Field(
        default=0.99, ge=0, le=1, description="Lowest share of shadow rows where candidate and primary agree."
    )
    min_requests: int = Field(
        default=50, ge=1, description="Fewest candidate requests per interval; fewer is no data: a failed check."
    )
    shadow_requests: int | None = Field(
        default=None, ge=0, description="blue-green: shadow requests before the switch (unset: 100 if shadowed)."
    )
    keep_blue: str = Field(default="10m", description="blue-green: how long blue stays loaded for a rollback.")

    @field_validator("interval", "keep_blue", mode="before")
    @classmethod
    def _durations(cls, v: Any) -> str:
        return _duration(v)

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("steps must not be empty")
        if any(not 0 < s <= 100 for s in v):
            raise ValueError(f"each step is a percent in (0, 100] (got {v})")
        if any(b <= a for a, b in zip(v, v[1:], strict=False)):
            raise ValueError(f"steps must increase (got {v})")
        if v[-1] != 100:
            raise ValueError(f"the last step must be 100 (got {v[-1]:g})")
        return v

    @model_validator(mode="after")
    def _interval_positive(self) -> RolloutSpec:
        if self.interval_s <= 0:
            raise ValueError("interval must be longer than 0")
        return self

    @property
    def interval_s(self) -> float:
        return duration_s(self.interval)

    @property
    def keep_blue_s(self) -> float:
        return duration_s(self.keep_blue)


def parse_steps(text: str) -> list[float]:
    """`--steps 5,25,50,100` → [5, 25, 50, 100]; the checks are RolloutSpec's."""
    try:
        return [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated percents such as 5,25,50,100 (got {text!r})") from None
