"""Record the tune grid of the small MLP, every served config measured ``--passes`` times (each pass in its own
shuffled order, with timestamps), for the noise simulations of tests/unit/test_tune_noise.py.

    .venv/bin/python bench/record_tune_grid.py --passes 2 --interval-ms 1000 --out tests/unit/data/tune_grid_small_mlp.json

One tritonserver (explicit model control), one reload per measured candidate; candidates Triton serves as the same
config (e.g. preferred none and [mbs]) are measured once per pass and recorded as twins.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _serving_helpers as h
from test_tune import SPEC  # the tune bench's own spec: the recorded grid is of the model it tunes

from repoforge.perf.analyzer import PerfError, PerfOptions
from repoforge.perf.tune import ServerMeasurer, TuneSpace


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--interval-ms", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    from repoforge.build import build
    from repoforge.servers.triton import TritonServer
    from repoforge.triton.config import parse_config

    load_start = h.load_average()
    space = TuneSpace()
    rows: dict[str, dict] = {}
    t0 = time.monotonic()
    with h.workdir("repoforge-record-grid-") as wd:
        model = h.make_models(wd / "models", ["small"])["small"]
        spec = wd / "spec.yaml"
        spec.write_text(SPEC.format(path=model))
        built = build(spec, wd / "repo", device="cpu")
        cfg_path = built.output / "mlp" / "config.pbtxt"
        base = parse_config(cfg_path.read_text())
        opts = PerfOptions(model="mlp", url="", concurrency=[a.concurrency], measurement_interval_ms=a.interval_ms,
                           stability_percentage=50.0, max_trials=5)  # fmt: skip
        with TritonServer(built.output, model_control="explicit", load_models=["mlp"]) as server:
            opts.url = server.grpc_url
            m = ServerMeasurer(server, "mlp", cfg_path, base, opts)
            for pas in range(a.passes):
                order = space.candidates()
                random.Random(pas).shuffle(order)
                seen: set[str] = set()
                for i, cand in enumerate(order):
                    row = rows.setdefault(cand.label(), {"candidate": cand.to_dict(), "samples": []})
                    try:
                        key = m.load(cand)
                    except Exception as exc:  # noqa: BLE001
                        row["error"] = str(exc)[:200]
                        continue
                    row["served_key"] = key
                    if key in seen:
                        continue
                    seen.add(key)
                    try:
                        s = m.measure(cand)
                    except PerfError as exc:
                        row.setdefault("failures", []).append(str(exc)[:200])
                        continue
                    s["t_s"] = round(time.monotonic() - t0, 1)
                    s["pass"] = pas
                    row["samples"].append(s)
                    _write(a, load_start, t0, rows)
                    print(f"[pass {pas} {i + 1}/{len(order)}] {cand.label()}: {s['throughput']:,.0f}/s p99 "
                          f"{s['p99_ms']:.2f}", flush=True)  # fmt: skip
    _write(a, load_start, t0, rows)
    print(f"wrote {a.out} in {time.monotonic() - t0:.0f} s")


def _write(a: argparse.Namespace, load_start: str, t0: float, rows: dict[str, dict]) -> None:
    """After every measurement, so an interrupted recording keeps what it measured."""
    out = {"machine": h.machine_text(None, load_start), "interval_ms": a.interval_ms, "concurrency": a.concurrency,
           "passes": a.passes, "elapsed_s": round(time.monotonic() - t0), "rows": list(rows.values())}  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(a.out.name + ".tmp")
    tmp.write_text(json.dumps(out, indent=0) + "\n")
    tmp.replace(a.out)


if __name__ == "__main__":
    main()
