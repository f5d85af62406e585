# Shipped by repoforge into each TorchServe archive (.mar) as its handler. The logic lives in the
# `repoforge` package (repoforge.torchserve.handler), which must be installed in the Python
# environment that TorchServe starts its workers with. Options come from the archive's
# model-config.yaml (`handler:` section).
from repoforge.torchserve.handler import RepoforgeHandler


class ModelHandler(RepoforgeHandler):
    """repoforge's batch-aware JSON handler (see repoforge.torchserve.handler)."""
