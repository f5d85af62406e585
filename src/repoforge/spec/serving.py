"""`serving:`: many models on one server. The gateway (`repoforge gateway`) loads a model on its first request,
keeps at most `max_loaded` models (and at most `memory_budget` bytes of server memory) loaded, unloads the least
recently used idle one to make room, and never unloads `always_loaded` models. `build` records the section in
`repoforge.lock.json` (memory as bytes), which is where the gateway reads it."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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

    @model_validator(mode="after")
    def _fits(self) -> ServingSpec:
        if self.max_loaded is not None and len(self.always_loaded) > self.max_loaded:
            raise ValueError(f"always_loaded has {len(self.always_loaded)} models but max_loaded is "
                             f"{self.max_loaded}: raise max_loaded or load fewer models always")  # fmt: skip
        return self
