"""The spec: YAML with line numbers → pydantic models (v1 contract)."""

from repoforge.spec.load import LoadedSpec, effective, load_spec
from repoforge.spec.models import ModelSpec, Spec, TensorSpec

__all__ = ["LoadedSpec", "ModelSpec", "Spec", "TensorSpec", "effective", "load_spec"]
