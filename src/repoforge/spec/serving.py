"""`serving:`: many models on one server. The gateway (`repoforge gateway`) loads a model on its first request,
keeps at most `max_loaded` models (and at most `memory_budget` bytes of server memory) loaded, unloads the least
recently used idle one to make room, and never unloads `always_loaded` models. `build` records the section in
`repoforge.lock.json` (memory as bytes), which is where the gateway reads it."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from repoforge.spec.scheduling import QueuePolicy, RateLimiter

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3, "ti": 1024**4, "tib": 1024**4,
}  # fmt: skip
_SIZE = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[a-zA-Z]*)\s*$")


def parse_bytes(value: Any) -> int:
    """`6GiB`, `512MiB`, `1.5GB`, `800Mi` (Kubernetes style) or a plain number of bytes, as bytes."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 6GiB or 512MiB, not {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"a size must be at least 1 byte, not {value}")
        return value
    match = _SIZE.match(str(value))
    unit = match["unit"].lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"expected a size like 6GiB, 512MiB, 2GB or a number of bytes, not {value!r}")
    size = int(float(match["n"]) * _UNITS[unit])
    if size < 1:
        raise ValueError(f"a size must be at least 1 byte, not {value!r}")
    return size


_RATE = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*/\s*(?P<per>s|sec|second|m|min|minute|h|hour)\s*$")
_PER = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_rate(value: Any) -> float:
    """`50/s`, `3000/min`, `10/hour` or a number (per second), as requests per second."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        rate = float(value)
    else:
        match = _RATE.match(str(value))
        if match is None:
            raise ValueError(f"expected a rate like 50/s, 3000/min or a number per second, not {value!r}")
        rate = float(match["n"]) / _PER[match["per"]]
    if rate <= 0:
        raise ValueError(f"a rate must be above 0, not {value!r}")
    return rate


class TenantSpec(BaseModel):
    """One client of the gateway: its API key comes from the environment (never from the spec), and clients send it
    as `Authorization: Bearer <key>`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(description="The tenant's name (in metrics and logs).")
    api_key_env: str = Field(description="Environment variable holding the tenant's API key when the gateway starts.")
    rate: float | None = Field(default=None, description="Sustained requests, e.g. 50/s or 3000/min; unset: no limit.")
    burst: int | None = Field(default=None, ge=1, description="Requests allowed at once above the rate; unset: 1 s "
                              "of the rate (at least 1).")  # fmt: skip
    max_concurrency: int | None = Field(default=None, ge=1, description="Requests in flight at once; unset: no limit.")
    priority: int = Field(default=1, ge=1, description="1 is the highest: the Triton priority level its requests "
                          "carry (`serving.priority_levels`).")  # fmt: skip

    @field_validator("rate", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> Any:
        return None if value is None else parse_rate(value)

    @field_validator("api_key_env")
    @classmethod
    def _env(cls, value: str) -> str:
        if not _ENV.match(value):
            raise ValueError(f"{value!r} is not an environment variable name (letters, digits, _)")
        return value


class ServerResource(BaseModel):
    """How many of a rate-limiter resource the server has: `--rate-limit-resource=<name>:<count>[:<device>]`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, description="The resource's name, as instance groups' rate_limiter names it.")
    count: int = Field(ge=1, description="Units available (per device, or in all for a global resource).")
    device: int | None = Field(default=None, ge=0, description="Only on this GPU; unset: every device.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if ":" in value or "," in value or not value.strip():
            raise ValueError(f"{value!r}: a resource name has no ':' or ',' (Triton's flag separates with them)")
        return value


class ServingSpec(BaseModel):
    """`serving:` — how many of the repository's models the gateway keeps loaded in one server at a time."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    max_loaded: int | None = Field(
        default=None, ge=1, description="Most models loaded at once; the least recently used idle one is unloaded."
    )
    memory_budget: int | None = Field(
        default=None,
        description="Most server memory (RSS of tritonserver and its backend processes), e.g. 6GiB or 512MiB; "
        "idle models are unloaded, least recently used first, before a load would pass it.",
    )
    always_loaded: list[str] = Field(
        default_factory=list, description="Models loaded at start and never unloaded (they count toward the limits)."
    )
    model_bytes_estimate: int | None = Field(
        default=None,
        description="Memory assumed for a model never loaded yet (e.g. 128MiB); unset: the mean measured growth "
        "of the models loaded so far, and 256MiB before the first.",
    )

    tenants: list[TenantSpec] = Field(
        default_factory=list,
        description="Clients identified by API key: rate, burst and concurrency limits (401 for an unknown key, 429 "
        "with Retry-After over a limit); unset: the gateway asks for no key.",
    )

    priority_levels: int | None = Field(
        default=None,
        ge=1,
        description="Triton priority levels written into every dynamically batched model when tenants exist; "
        "unset: the largest tenant priority.",
    )
    default_priority_level: int | None = Field(
        default=None, ge=1, description="Level of a request that names none; unset: the lowest (priority_levels)."
    )
    priority_queue_policy: dict[int, QueuePolicy] = Field(
        default_factory=dict,
        description="Queue policy per priority level (level -> policy), e.g. a short timeout for level 2, so one "
        "tenant's backlog is rejected instead of waiting behind another's.",
    )
    rate_limiter: RateLimiter | None = Field(
        default=None,
        description="Triton rate-limiter resources and priority given to every instance group that declares none "
        "(models compete for `rate_limit_resources`); `serve` then passes --rate-limit execution_count.",
    )
    rate_limit_resources: list[ServerResource] = Field(
        default_factory=list,
        description="How many of each rate-limiter resource the server has (--rate-limit-resource); unset: "
        "Triton's default, the most any one instance needs.",
    )

    @field_validator("tenants")
    @classmethod
    def _tenants(cls, value: list[TenantSpec]) -> list[TenantSpec]:
        for what in ("name", "api_key_env"):
            seen = [getattr(t, what) for t in value]
            repeated = sorted({n for n in seen if seen.count(n) > 1})
            if repeated:
                raise ValueError(f"tenants repeat {what} {', '.join(repeated)}")
        return value

    @field_validator("memory_budget", "model_bytes_estimate", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return None if value is None else parse_bytes(value)

    @field_validator("always_loaded")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        repeated = sorted({n for n in value if value.count(n) > 1})
        if repeated:
            raise ValueError(f"always_loaded names {', '.join(repeated)} more than once")
        return value

    @field_validator("rate_limit_resources")
    @classmethod
    def _resources(cls, value: list[ServerResource]) -> list[ServerResource]:
        seen = [(r.name, r.device) for r in value]
        repeated = sorted({n for n, d in seen if seen.count((n, d)) > 1})
        if repeated:
            raise ValueError(f"rate_limit_resources name {', '.join(repeated)} twice for the same device")
        return value

    @model_validator(mode="after")
    def _fits(self) -> ServingSpec:
        if self.max_loaded is not None and len(self.always_loaded) > self.max_loaded:
            raise ValueError(f"always_loaded has {len(self.always_loaded)} models but max_loaded is "
                             f"{self.max_loaded}: raise max_loaded or load fewer models always")  # fmt: skip
        return self
