"""`repoforge lint` of a generated 100-model repository (target: well under 2 s). Run with
`.venv/bin/pytest bench/test_lint_speed.py --benchmark-enable`."""

from __future__ import annotations

from pathlib import Path

import pytest

from repoforge.lint import lint_repository

N_MODELS = 100
MODEL_PY = "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n"


def _python_model(i: int) -> str:
    return (
        f'name: "m{i:03d}"\nbackend: "python"\nmax_batch_size: 64\n'
        'input [\n  { name: "IN" data_type: TYPE_FP32 dims: [ -1, 8 ] },\n'
        '  { name: "MASK" data_type: TYPE_BOOL dims: [ 8 ] optional: true }\n]\n'
        'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1, 8 ] } ]\n'
        "instance_group [ { kind: KIND_CPU count: 2 } ]\n"
        "dynamic_batching {\n  preferred_batch_size: [ 16, 32 ]\n  max_queue_delay_microseconds: 100\n"
        "  priority_levels: 2\n  default_priority_level: 1\n}\n"
        'model_warmup [ { name: "w" batch_size: 8 inputs { key: "IN" value { data_type: TYPE_FP32 dims: [ 4, 8 ] '
        "zero_data: true } } } ]\n"
        'parameters { key: "note" value { string_value: "generated" } }\n'
    )


def _ensemble(i: int, steps: list[str]) -> str:
    body = []
    for j, step in enumerate(steps):
        src = "A" if j == 0 else f"t{j - 1}"
        dst = "Y" if j == len(steps) - 1 else f"t{j}"
        body.append(
            f'    {{ model_name: "{step}" model_version: -1\n'
            f'      input_map {{ key: "IN" value: "{src}" }}\n      output_map {{ key: "OUT" value: "{dst}" }} }}'
        )
    return (
        f'name: "e{i:03d}"\nplatform: "ensemble"\nmax_batch_size: 64\n'
        'input [ { name: "A" data_type: TYPE_FP32 dims: [ -1, 8 ] } ]\n'
        'output [ { name: "Y" data_type: TYPE_FP32 dims: [ -1, 8 ] } ]\n'
        "ensemble_scheduling {\n  step [\n" + ",\n".join(body) + "\n  ]\n}\n"
    )


@pytest.fixture(scope="module")
def big_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 python models (2 versions each) and 20 ensembles of 4 steps over them."""
    repo = tmp_path_factory.mktemp("lint100")
    n_python = 80
    for i in range(n_python):
        d = repo / f"m{i:03d}"
        for v in (1, 2):
            (d / str(v)).mkdir(parents=True)
            (d / str(v) / "model.py").write_text(MODEL_PY)
        (d / "config.pbtxt").write_text(_python_model(i) + "version_policy { all { } }\n")
    for i in range(N_MODELS - n_python):
        d = repo / f"e{i:03d}"
        (d / "1").mkdir(parents=True)
        steps = [f"m{(4 * i + j) % n_python:03d}" for j in range(4)]
        (d / "config.pbtxt").write_text(_ensemble(i, steps))
    return repo


def test_lint_100_models(benchmark, big_repo: Path) -> None:  # type: ignore[no-untyped-def]
    report = benchmark.pedantic(lambda: lint_repository(big_repo, known_backends={"python"}, gpu_count=0),
                                rounds=5, iterations=1)  # fmt: skip
    assert len(report.models) == N_MODELS
    assert report.ok and not report.findings, report.format()
