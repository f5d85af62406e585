"""The TorchServe target: the same spec.yaml → `.mar` model archives (+ `.war` workflows for ensembles)
and a config.properties that real TorchServe serves.

`build_torchserve` needs only repoforge's own dependencies (torch for checking eager state_dicts);
`repoforge.torchserve.handler` runs inside TorchServe's workers and imports `ts`.
"""

from typing import Any

__all__ = ["TorchServeBuildResult", "build_torchserve"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from repoforge.torchserve import builder

        return getattr(builder, name)
    raise AttributeError(name)
