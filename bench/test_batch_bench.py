"""Batch benchmark: rows/s of `repoforge batch` (local engine, then Ray) against in-process onnxruntime at the
same batch, on the small MLP (per-request overhead dominates) and the compute-bound MLP.

One tritonserver serves both models (max_batch_size 256, repoforge's default config otherwise). Each round runs,
per model: in-process onnxruntime (`sess.run` back to back at the batch size, ORT's default thread pool; the mean of
a run before and one after the engines), the local engine over DATA into a fresh OUT, and the Ray engine (local
Ray, 2 CPUs, started once) the same way.
Engine rows/s are whole-job figures (DATA read, requests, Parquet shards and manifest written), server start
excluded. Ratios are taken within each round; cells are medians with the range over rounds.

    .venv/bin/pytest bench/test_batch_bench.py --benchmark-enable -s     # about 5 minutes on 2 cores
    .venv/bin/python bench/test_batch_bench.py [--rounds 3]

Both print the table and rewrite the "batch" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _serving_helpers as h

ROWS = {"small": 100_000, "compute": 12_000}
BATCH = 256
CONCURRENCY = 4
GOAL = {"compute": 0.8}


def _data(kind: str, path: Path) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    width = h.input_width(kind)
    x = np.random.default_rng(0).standard_normal((ROWS[kind], width), dtype=np.float32)
    pq.write_table(pa.table({"x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), width)}), path)
    return path


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _run(url: str, kind: str, data: Path, out: Path, engine: str) -> dict[str, float]:
    from repoforge.batch import batch

    shutil.rmtree(out, ignore_errors=True)
    cpu0 = _self_cpu()
    with h.CpuSampler() as cpu:
        result = batch(url, kind, data=data, output=out, engine=engine, batch_size=BATCH, concurrency=CONCURRENCY,
                       rows_per_shard=10_000, show_progress=False)  # type: ignore[arg-type]  # fmt: skip
    assert result.complete and result.rows_errored == 0
    usage = cpu.result()
    usage["driver"] = (_self_cpu() - cpu0) / max(result.seconds, 1e-9)
    steady = result.stats.get("ray_steady_rows_per_s")
    return {"rows_per_s": result.rows_per_s, "steady": steady or result.rows_per_s,
            "first_s": result.stats.get("ray_first_batch_s") or 0.0, **usage}  # fmt: skip


def bench(rounds: int = 3) -> str:
    import ray

    from repoforge.build import build
    from repoforge.servers.triton import TritonServer

    load0 = h.load_average()
    results: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with h.workdir("repoforge-batch-bench-") as tmp:
        models = h.make_models(tmp / "models")
        spec = tmp / "spec.yaml"
        spec.write_text("version: 1\nmodels:\n" + "".join(
            f"  - {{name: {k}, format: onnx, path: {p}, max_batch_size: {BATCH}}}\n" for k, p in models.items()))  # fmt: skip
        repo = build(spec, tmp / "repo", device="cpu").output
        data = {k: _data(k, tmp / f"{k}.parquet") for k in models}
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            with TritonServer(repo) as server:
                url = f"grpc://{server.grpc_url}"
                for k in models:  # warm both engines (Ray's actors, Triton's first batches)
                    _run(url, k, data[k], tmp / "warm", "local")
                    _run(url, k, data[k], tmp / "warm", "ray")
                for rnd in range(rounds):
                    for k in models:
                        # onnxruntime before and after the engines, so host load that drifts meanwhile is shared
                        ort0 = h.ort_rows_per_s(models[k], BATCH, threads=0, seconds=2.0)["rows_per_s"]
                        local = _run(url, k, data[k], tmp / "out", "local")
                        on_ray = _run(url, k, data[k], tmp / "out", "ray")
                        ort = (ort0 + h.ort_rows_per_s(models[k], BATCH, threads=0, seconds=2.0)["rows_per_s"]) / 2
                        r = results[k]
                        r["ort"].append(ort)
                        r["local"].append(local["rows_per_s"])
                        r["ray"].append(on_ray["rows_per_s"])
                        r["local/ort"].append(local["rows_per_s"] / ort)
                        r["ray/local"].append(on_ray["rows_per_s"] / local["rows_per_s"])
                        r["ray_steady"].append(on_ray["steady"])
                        r["ray_first_s"].append(on_ray["first_s"])
                        r["ray_steady/local"].append(on_ray["steady"] / local["rows_per_s"])
                        for part in ("driver", "server", "stub", "busy"):
                            r[f"cpu_{part}"].append(local.get(part, 0.0))
                        print(f"round {rnd + 1} {k}: ort {ort:,.0f}, local {local['rows_per_s']:,.0f}, "
                              f"ray {on_ray['rows_per_s']:,.0f} rows/s", flush=True)  # fmt: skip
        finally:
            ray.shutdown()
    return _markdown(results, rounds, load0)


def _markdown(results: dict[str, dict[str, list[float]]], rounds: int, load0: str) -> str:
    def cell(k: str, key: str, fmt: str = "{:,.0f}") -> str:
        v = results[k][key]
        return f"**{fmt.format(h.med(v))}** ({h.rng(v, fmt)})"

    t = h.Table(["", *(f"{k} ({ROWS[k]:,} rows)" for k in results)])
    t.add("in-process onnxruntime rows/s (batch 256)", *(cell(k, "ort") for k in results))
    t.add("local engine rows/s", *(cell(k, "local") for k in results))
    t.add("Ray engine rows/s", *(cell(k, "ray") for k in results))
    t.add("local ÷ onnxruntime", *(cell(k, "local/ort", "{:.2f}") for k in results))
    t.add("Ray ÷ local (whole job)", *(cell(k, "ray/local", "{:.2f}") for k in results))
    t.add("Ray: seconds to its first scored batch", *(cell(k, "ray_first_s", "{:.1f}") for k in results))
    t.add("Ray rows/s after its first batch", *(cell(k, "ray_steady") for k in results))
    t.add("Ray after its first batch ÷ local", *(cell(k, "ray_steady/local", "{:.2f}") for k in results))
    met = []
    for k, goal in GOAL.items():
        if k in results:
            met.append(
                f"{k}: local ÷ onnxruntime ≥ {goal} {'met' if h.med(results[k]['local/ort']) >= goal else 'not met'}"
            )
    cpu = h.Table(["local engine, cores used (median)", *results])
    cpu.add(
        "client (this process: reading, arrays, gRPC, Parquet)",
        *(f"{h.med(results[k]['cpu_driver']):.2f}" for k in results),
    )
    cpu.add("tritonserver", *(f"{h.med(results[k]['cpu_server']):.2f}" for k in results))
    cpu.add("python backend stub (onnxruntime runs here)", *(f"{h.med(results[k]['cpu_stub']):.2f}" for k in results))
    cpu.add("host busy fraction", *(f"{h.med(results[k]['cpu_busy']):.2f}" for k in results))
    return "\n".join([
        "## Batch: local engine and Ray engine vs in-process onnxruntime",
        "",
        f"Machine: {h.machine_text(load_at_start=load0)}; ray {h._version('ray')}, pyarrow {h._version('pyarrow')}.",
        f"`repoforge batch` gRPC, batch {BATCH}, concurrency {CONCURRENCY}, shards of 10,000 rows; Ray: local, 2 CPUs, "
        f"2 actors. onnxruntime: mean of a 2 s run before and after the engines. {rounds} rounds after a warm-up run of each. Cells: median (min–max over rounds); ratios per round.",
        "",
        t.markdown(),
        "",
        "Goal: " + "; ".join(met) + ".",
        "",
        "### Where the local engine's time goes",
        "",
        cpu.markdown(),
        "",
        "On 2 vCPUs the client and the server share the cores: for the small MLP the model's compute per row is tiny, "
        "so each batch costs mostly fixed work — turning Arrow rows into arrays, gRPC (de)serialisation on both "
        "sides, Triton's queue and the Python backend stub's shared-memory hop — which in-process onnxruntime never "
        "pays. For the compute-bound MLP those costs are small beside the GEMMs, so the ratio says how much of the "
        "cores the model gets. The Ray engine pays a fixed cost first (its actors start and import the client, "
        "the first blocks are read: the seconds to its first batch above), then moves each block through Ray's "
        "object store twice (reader → actor → driver), on the same 2 cores as Ray's own processes and the server.",
    ])  # fmt: skip


def test_batch_bench(long_bench: None) -> None:
    text = bench(rounds=3)
    print(text)
    h.update_results("batch", text)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    text = bench(a.rounds)
    print(text)
    h.update_results("batch", text)


if __name__ == "__main__":
    main()
