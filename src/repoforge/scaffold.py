"""`repoforge init`: a starter spec and a small ONNX model, so a new user has something that builds."""

from __future__ import annotations

from pathlib import Path

from repoforge.errors import BuildError
from repoforge.modelgen import mlp, save

STARTER_SPEC = """\
# repoforge spec (v1). Build it:   repoforge build spec.yaml -o model_repository
#                      Prove it:   repoforge validate model_repository
#                      Serve it:   repoforge serve model_repository
# Every field: `repoforge schema`. Paths are relative to this file.
version: 1
repository: starter
defaults:
  instance_groups: [{kind: cpu, count: 1}]
models:
  - name: classifier
    format: onnx                    # inputs/outputs are read from the ONNX file
    path: models/classifier.onnx
    max_batch_size: 64
    dynamic_batching:
      max_queue_delay_us: 0         # batch whatever queued while the model was busy; no added latency
    warmup: {batch_sizes: [1, 8], data: random}
"""


def init(directory: str | Path = ".", *, force: bool = False) -> list[Path]:
    """Write `spec.yaml` and `models/classifier.onnx` into `directory`; refuses to overwrite without force."""
    root = Path(directory)
    spec = root / "spec.yaml"
    model = root / "models" / "classifier.onnx"
    for p in (spec, model):
        if p.exists() and not force:
            raise BuildError(f"{p} already exists; pass --force to overwrite it")
    root.mkdir(parents=True, exist_ok=True)
    save(mlp([8, 32, 3], seed=7, input_name="input", output_name="probabilities", softmax=True), model)
    spec.write_text(STARTER_SPEC)
    return [spec, model]
