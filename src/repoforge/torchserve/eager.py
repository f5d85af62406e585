"""Load an eager PyTorch model (the loader runs inside TorchServe too: `repoforge.runtime.torchserve.eager`)."""

from repoforge.runtime.torchserve.eager import EagerLoadError, load_eager, model_class, module_classes, split_model_file

__all__ = ["EagerLoadError", "load_eager", "model_class", "module_classes", "split_model_file"]
