"""`repoforge drift`: offline data drift between a reference profile and current data.

`data` reads DATA (Parquet, CSV, `.npz`) into named feature columns, `profile` makes and stores the reference
profile (quantile bins, category frequencies), `stats` holds the pure `psi` / `ks` functions (the serving
plugins will reuse them on a sliding window) and `report` compares current data with a profile.
"""

from repoforge.drift.profile import make_profile, read_profile, write_profile
from repoforge.drift.stats import ks, psi

__all__ = ["ks", "make_profile", "psi", "read_profile", "write_profile"]
