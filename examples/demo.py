"""The README's first command: build the tabular example, serve it in a real Triton, infer, and measure.

Run through `bash scripts/demo.sh` (which installs everything first) or directly with the venv's python.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from repoforge.build import build
from repoforge.perf.command import perf
from repoforge.targets.triton.serve import make_server
from repoforge.targets.triton.validate import check_models, infer
from repoforge.triton.reader import read_repository

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-out"


def main() -> int:
    print("1/4 build   examples/tabular/spec.yaml → demo-out/repo")
    result = build(
        ROOT / "examples/tabular/spec.yaml", OUT / "repo", force=True, progress=lambda m: print(f"      {m}")
    )
    models = read_repository(result.output)
    print("2/4 serve   starting tritonserver (CPU; the onnxruntime backend, Python-based on this machine)")
    with make_server(result.output) as server:
        print(f"      ready: http://{server.http_url}  grpc {server.grpc_url}  metrics {server.metrics_url}")
        print("3/4 infer   one smoke request per model, compared with in-process onnxruntime")
        checks = check_models(models, server.http_url, server.model_states(), lambda m: print(f"      {m}"))
        if not all(c.ok for c in checks):
            return 1
        classifier = next(m for m in models if m.name == "classifier")
        rows = np.array([[0.5, -1.2, 3.3, 0.0, 1.1, -0.4, 2.2, 0.9], [1.0] * 8], dtype=np.float32)
        probs = infer(server.http_url, classifier, {"input": rows})["probabilities"]
        for r, p in zip(rows, probs, strict=True):
            print(
                f"      input {np.array2string(r, precision=2)} → probabilities {np.array2string(p, precision=4)} (class {int(p.argmax())})"
            )
        print("4/4 perf    perf_analyzer over gRPC, concurrency 1 and 8 (random inputs, response cache off)")
        measured = perf(
            server.http_url,
            "classifier",
            grpc_url=server.grpc_url,
            concurrency=[1, 8],
            measurement_interval_ms=1500,
            output=OUT / "perf-report",
            progress=lambda m: print(f"      {m}"),
        )
        best = max(measured.report.points, key=lambda p: p.throughput)
        print(f"      best: {best.throughput:,.0f} infer/s at concurrency {best.load:g}")
        print(f"      report: {OUT / 'perf-report' / 'report.md'} (+ report.json and plots)")
    print(f"done: repository in {result.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
