"""`repoforge drift`: data drift between a reference profile and current data, offline and while serving.

`data` reads DATA (Parquet, CSV, `.npz`) into named feature columns, `profile` makes and stores the reference
profile (quantile bins, category frequencies), `stats` holds the pure `psi` / `ks` functions, `report` compares
current data with a profile and `online` keeps the serving plugins' sliding windows (`drift:` in a plugin).

The names below are imported on first use, so the serving path (`repoforge.drift.online`, numpy only) does
not load pyarrow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from repoforge.drift.profile import make_profile, read_profile, write_profile
    from repoforge.drift.stats import ks, psi

__all__ = ["ks", "make_profile", "psi", "read_profile", "write_profile"]
_WHERE = {
    "ks": "stats",
    "psi": "stats",
    "make_profile": "profile",
    "read_profile": "profile",
    "write_profile": "profile",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"repoforge.drift.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'repoforge.drift' has no attribute {name!r}")
