# Shipped by repoforge into each TorchServe archive (.mar) as its handler. The logic lives in
# `repoforge_runtime/` (repoforge's runtime, shipped at the root of the same archive; TorchServe puts the
# archive's folder on sys.path), so the stock TorchServe image runs it without repoforge installed.
# Options come from the archive's model-config.yaml (`handler:` section).
from repoforge_runtime.torchserve.handler import RepoforgeHandler


class ModelHandler(RepoforgeHandler):
    """repoforge's batch-aware JSON handler (see repoforge_runtime.torchserve.handler)."""
