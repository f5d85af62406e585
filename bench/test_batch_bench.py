"""Batch benchmark: rows/s of `repoforge batch`'s local engine against in-process onnxruntime at the same batch, on
the small MLP (fixed work per batch dominates) and the compute-bound MLP, measured interleaved so the host's load
cannot decide the ratio (issue 26.4).

One tritonserver serves both models (max_batch_size 256, repoforge's default config otherwise). Each round runs, per
model, A B A B A: in-process onnxruntime (`sess.run` back to back at the batch size, ORT's default thread pool, 2 s),
the local engine with system shared memory, onnxruntime, the local engine over plain gRPC (`--no-shared-memory`),
onnxruntime. Each engine run is divided by the mean of the two onnxruntime runs either side of it. Engine rows/s are
whole-job figures (DATA read, requests, Parquet shards and manifest written), server start excluded. CPU: this
process (the client), and our tritonserver and its Python backend stubs counted by process group, so other jobs'
servers on the host are not; µs per request = cores × seconds ÷ requests.

    .venv/bin/pytest bench/test_batch_bench.py --benchmark-enable -s     # about 4 minutes on 2 cores
    .venv/bin/python bench/test_batch_bench.py [--rounds 5] [--ray]

Both print the table and rewrite the "batch" section of bench/RESULTS.md. `--ray` adds one Ray engine run per round
(after the interleaved runs; not part of any ratio).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _serving_helpers as h

ROWS = {"small": 100_000, "compute": 12_000}
BATCH = 256
CONCURRENCY = 4
ORT_SECONDS = 2.0
GOAL = {"small": 0.6, "compute": 0.8}


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


def _group_cpu(pgid: int) -> dict[str, float]:
    """CPU seconds of every process in process group `pgid` (our tritonserver and its stubs), by name."""
    out: dict[str, float] = defaultdict(float)
    tick = os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                head, rest = f.read().rsplit(")", 1)
        except OSError:
            continue
        fields = rest.split()
        if int(fields[2]) != pgid:
            continue
        comm = head.split("(", 1)[1]
        label = "stub" if comm.startswith("triton_python") else "server" if comm.startswith("tritonserver") else None
        if label:
            out[label] += (int(fields[11]) + int(fields[12])) / tick
    return out


def _host() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), v[3] + v[4]


class _Cpu:
    """Cores used during a block by this process, our server and its stubs, and the host's busy fraction."""

    def __init__(self, pgid: int | None) -> None:
        self.pgid = pgid
        self.result: dict[str, float] = {}

    def __enter__(self) -> _Cpu:
        self._t, self._self, self._host0 = time.monotonic(), _self_cpu(), _host()
        self._group = _group_cpu(self.pgid) if self.pgid else {}
        return self

    def __exit__(self, *exc: object) -> None:
        wall = max(time.monotonic() - self._t, 1e-9)
        (tot0, idle0), (tot1, idle1) = self._host0, _host()
        group = _group_cpu(self.pgid) if self.pgid else {}
        self.result = {"client": (_self_cpu() - self._self) / wall, "busy": 1 - (idle1 - idle0) / max(1, tot1 - tot0),
                       "wall": wall, "load1": os.getloadavg()[0]}  # fmt: skip
        for k in ("server", "stub"):
            self.result[k] = (group.get(k, 0.0) - self._group.get(k, 0.0)) / wall


def _run(url: str, kind: str, data: Path, out: Path, engine: str, shm: bool, pgid: int | None) -> dict[str, float]:
    from repoforge.batch import batch

    shutil.rmtree(out, ignore_errors=True)
    with _Cpu(pgid) as cpu:
        result = batch(url, kind, data=data, output=out, engine=engine, batch_size=BATCH, concurrency=CONCURRENCY,
                       rows_per_shard=10_000, show_progress=False, shared_memory=shm)  # type: ignore[arg-type]  # fmt: skip
    assert result.complete and result.rows_errored == 0
    assert engine != "local" or result.stats["shared_memory"] is shm
    return {"rows_per_s": result.rows_per_s, "requests": float(result.stats.get("requests", 0)), **cpu.result,
            "wall": result.seconds}  # fmt: skip


def _ort(path: Path) -> dict[str, float]:
    with _Cpu(None) as cpu:
        r = h.ort_rows_per_s(path, BATCH, threads=0, seconds=ORT_SECONDS)
    return {"rows_per_s": r["rows_per_s"], **cpu.result}


def bench(rounds: int = 5, with_ray: bool = False) -> str:
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
        if with_ray:
            import ray

            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            with TritonServer(repo) as server:
                url = f"grpc://{server.grpc_url}"
                pgid = os.getpgid(server.pid) if server.pid else None
                for k in models:  # warm up: Triton's first batches, onnxruntime's first session
                    _run(url, k, data[k], tmp / "warm", "local", True, pgid)
                    _run(url, k, data[k], tmp / "warm", "local", False, pgid)
                    _ort(models[k])
                for rnd in range(rounds):
                    for k in models:
                        r = results[k]
                        o1 = _ort(models[k])
                        shm = _run(url, k, data[k], tmp / "out", "local", True, pgid)
                        o2 = _ort(models[k])
                        plain = _run(url, k, data[k], tmp / "out", "local", False, pgid)
                        o3 = _ort(models[k])
                        for o in (o1, o2, o3):
                            r["ort"].append(o["rows_per_s"])
                            r["ort_cpu"].append(o["client"])
                            r["load1"].append(o["load1"])
                            r["busy"].append(o["busy"])
                        r["shm"].append(shm["rows_per_s"])
                        r["plain"].append(plain["rows_per_s"])
                        r["shm/ort"].append(shm["rows_per_s"] / ((o1["rows_per_s"] + o2["rows_per_s"]) / 2))
                        r["plain/ort"].append(plain["rows_per_s"] / ((o2["rows_per_s"] + o3["rows_per_s"]) / 2))
                        r["shm/plain"].append(shm["rows_per_s"] / plain["rows_per_s"])
                        for name, run in (("shm", shm), ("plain", plain)):
                            r["load1"].append(run["load1"])
                            r["busy"].append(run["busy"])
                            for part in ("client", "server", "stub"):
                                r[f"{name}_{part}"].append(run[part])
                                # CPU µs per request of 256 rows
                                r[f"{name}_{part}_us"].append(run[part] * run["wall"] / run["requests"] * 1e6)
                        for o in (o1, o2, o3):  # onnxruntime: CPU µs per sess.run of 256 rows
                            r["ort_us"].append(o["client"] * BATCH / o["rows_per_s"] * 1e6)
                        # what the ratio would be with the cores saturated: CPU per row, onnxruntime ÷ engine
                        ort_us = h.med(r["ort_us"][-3:])
                        for name in ("shm", "plain"):
                            engine_us = sum(r[f"{name}_{p}_us"][-1] for p in ("client", "server", "stub"))
                            r[f"{name}_cpu_ratio"].append(ort_us / engine_us)
                        line = (f"round {rnd + 1} {k}: ort {o1['rows_per_s']:,.0f} / {o2['rows_per_s']:,.0f} / "
                                f"{o3['rows_per_s']:,.0f}, local shm {shm['rows_per_s']:,.0f} "
                                f"({r['shm/ort'][-1]:.2f}), plain {plain['rows_per_s']:,.0f} ({r['plain/ort'][-1]:.2f}) "
                                f"rows/s, load {os.getloadavg()[0]:.1f}")  # fmt: skip
                        if with_ray:
                            on_ray = _run(url, k, data[k], tmp / "out", "ray", False, pgid)
                            r["ray"].append(on_ray["rows_per_s"])
                            line += f", ray {on_ray['rows_per_s']:,.0f}"
                        print(line, flush=True)
        finally:
            if with_ray:
                ray.shutdown()
    return _markdown(results, rounds, load0)


def _markdown(results: dict[str, dict[str, list[float]]], rounds: int, load0: str) -> str:
    def cell(k: str, key: str, fmt: str = "{:,.0f}") -> str:
        v = results[k][key]
        return f"**{fmt.format(h.med(v))}** ({h.rng(v, fmt)})" if v else "-"

    ks = list(results)
    t = h.Table(["", *(f"{k} ({ROWS[k]:,} rows)" for k in ks)])
    t.add("in-process onnxruntime rows/s (batch 256, default pool)", *(cell(k, "ort") for k in ks))
    t.add("local engine, system shared memory, rows/s", *(cell(k, "shm") for k in ks))
    t.add("local engine, plain gRPC, rows/s", *(cell(k, "plain") for k in ks))
    t.add("**local (shared memory) ÷ onnxruntime**", *(cell(k, "shm/ort", "{:.2f}") for k in ks))
    t.add("local (plain gRPC) ÷ onnxruntime", *(cell(k, "plain/ort", "{:.2f}") for k in ks))
    t.add("shared memory ÷ plain gRPC", *(cell(k, "shm/plain", "{:.2f}") for k in ks))
    t.add("CPU per row, onnxruntime ÷ local (shared memory): the ratio with the cores saturated",
          *(cell(k, "shm_cpu_ratio", "{:.2f}") for k in ks))  # fmt: skip
    t.add("CPU per row, onnxruntime ÷ local (plain gRPC)", *(cell(k, "plain_cpu_ratio", "{:.2f}") for k in ks))
    if any(results[k]["ray"] for k in ks):
        t.add("Ray engine rows/s (plain gRPC; not interleaved)", *(cell(k, "ray") for k in ks))
    t.add("host load (1 min) during the runs", *(cell(k, "load1", "{:.1f}") for k in ks))
    t.add("host busy fraction during the runs", *(cell(k, "busy", "{:.2f}") for k in ks))
    met = [f"{k}: local ÷ onnxruntime ≥ {g} {'met' if h.med(results[k]['shm/ort']) >= g else 'not met'}"
           for k, g in GOAL.items() if k in results]  # fmt: skip
    cpu = h.Table(["cores used (median) and CPU µs per 256-row batch", *ks])
    for name, label in (("shm", "shared memory"), ("plain", "plain gRPC")):
        for part, what in (("client", "client (this process: Arrow → arrays, requests, Parquet)"),
                           ("server", "tritonserver"), ("stub", "Python backend stub (onnxruntime runs here)")):  # fmt: skip
            t_key, us_key = f"{name}_{part}", f"{name}_{part}_us"
            cpu.add(f"{label}: {what}", *(f"{h.med(results[k][t_key]):.2f}, {h.med(results[k][us_key]):,.0f} µs"
                                          for k in ks))  # fmt: skip
    cpu.add("in-process onnxruntime (whole process)",
            *(f"{h.med(results[k]['ort_cpu']):.2f}, {h.med(results[k]['ort_us']):,.0f} µs" for k in ks))  # fmt: skip
    return "\n".join([
        "## Batch: local engine vs in-process onnxruntime, interleaved",
        "",
        f"Machine: {h.machine_text(load_at_start=load0)}; pyarrow {h._version('pyarrow')}.",
        f"`repoforge batch` local engine over gRPC, batch {BATCH}, concurrency {CONCURRENCY}, shards of 10,000 rows. "
        f"{rounds} rounds after a warm-up; each round per model runs A B A B A: onnxruntime ({ORT_SECONDS:.0f} s of "
        "back-to-back `sess.run`), local engine with system shared memory, onnxruntime, local engine over plain gRPC, "
        "onnxruntime; each engine run is divided by the mean of the onnxruntime runs either side of it. Cells: median "
        "(min–max over rounds).",
        "",
        t.markdown(),
        "",
        "Goal (issue 26.4): " + "; ".join(met) + ".",
        "",
        "### Where the local engine's time goes",
        "",
        cpu.markdown(),
        "",
        "Our tritonserver and its stubs are counted by process group, so other jobs' servers on the host are not.",
    ])  # fmt: skip


def test_batch_bench(long_bench: None) -> None:
    text = bench(rounds=5)
    print(text)
    h.update_results("batch", text)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--ray", action="store_true", help="also one Ray engine run per round (not interleaved)")
    a = p.parse_args(argv)
    text = bench(a.rounds, a.ray)
    print(text)
    h.update_results("batch", text)


if __name__ == "__main__":
    main()
