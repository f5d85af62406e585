"""`repoforge build` of a 100-model spec (Foundation target: a few seconds). Run with
`.venv/bin/pytest bench/test_build_speed.py --benchmark-enable`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from repoforge.build import build

ROOT = Path(__file__).resolve().parent.parent
N_MODELS = 100


@pytest.fixture
def big_spec(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "examples/tabular/models/classifier.onnx", tmp_path / "classifier.onnx")
    models = "".join(
        f"  - name: m{i:03d}\n    format: onnx\n    path: classifier.onnx\n    max_batch_size: 64\n"
        f"    dynamic_batching: {{preferred_batch_sizes: [16, 32], max_queue_delay_us: {100 * (i % 5)}}}\n"
        f"    warmup: {{batch_sizes: [1, 8]}}\n"
        for i in range(N_MODELS)
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"version: 1\ndefaults:\n  instance_groups: [{{kind: cpu, count: 1}}]\nmodels:\n{models}")
    return spec


def test_build_100_models(benchmark, big_spec: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "repo"
    result = benchmark.pedantic(lambda: build(big_spec, out, device="cpu", force=True), rounds=3, iterations=1)
    assert len(result.model_names) == N_MODELS
