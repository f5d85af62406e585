"""repoforge: one declarative spec → a Triton model repository (or TorchServe archives), proven in a real server."""

__version__ = "0.1.0"
