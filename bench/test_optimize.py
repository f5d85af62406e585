"""`optimize:` on two models, measured side by side: INT8 ÷ FP32 latency in process and served, with the top-1 drop.

- digits: an MLP (64→256→256→10) trained here with torch on scikit-learn's bundled digits data set (no download,
  seeded), given to repoforge as an eager state_dict + class file, so the export runs too; held-out split for the
  gate, a separate split for calibration.
- compute: the compute-bound MLP of the serving bench (1024→4096→4096→16, random weights), random inputs, no
  labels: its gate is top-1 agreement with fp32.

In process: repoforge's own timing (alternating rounds, median and range, 1 thread). Served: every accepted
variant shipped as a version (`ship: all`) in one real tritonserver, requests of the same batch sent to each
version in alternating rounds, median client latency per round. The CPU's INT8 instruction set is recorded.
Run: `.venv/bin/pytest bench/test_optimize.py -s --benchmark-enable` (a few minutes on 2 cores).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _serving_helpers import Table, load_average, machine_text, update_results, workdir

NET = """
import torch


class DigitsNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(64, 256)
        self.fc2 = torch.nn.Linear(256, 256)
        self.fc3 = torch.nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))
"""

ROUNDS = 7
SERVED_ROUNDS = 5
SERVED_REQUESTS = 40


def _digits_project(root: Path) -> Path:
    import importlib.util

    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    train, calib, test = order[:1100], order[1100:1350], order[1350:]
    (root / "net.py").write_text(NET)
    spec_ = importlib.util.spec_from_file_location("digits_net", root / "net.py")
    assert spec_ is not None and spec_.loader is not None
    mod = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(mod)
    torch.manual_seed(0)
    net = mod.DigitsNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    for _epoch in range(40):
        perm = torch.randperm(len(xt), generator=torch.Generator().manual_seed(_epoch))
        for s in range(0, len(xt), 64):
            idx = perm[s : s + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()
    torch.save(net.eval().state_dict(), root / "digits.pt")
    np.savez(root / "calib.npz", INPUT__0=x[calib])
    np.savez(root / "val.npz", INPUT__0=x[test], labels=y[test])
    spec = root / "spec.yaml"
    spec.write_text(
        "version: 1\nmodels:\n  - name: digits\n    format: pytorch\n    path: digits.pt\n    model_file: net.py\n"
        "    max_batch_size: 64\n    dynamic_batching: {preferred_batch_sizes: [16]}\n"
        "    inputs: [{name: INPUT__0, dtype: FP32, dims: [64]}]\n"
        "    outputs: [{name: OUTPUT__0, dtype: FP32, dims: [10]}]\n"
        "    optimize:\n      variants: [fp32, ort_optimized, int8_dynamic, int8_static, fp16, openvino]\n"
        "      calibration: calib.npz\n      calibration_method: minmax\n"
        "      validation: {data: val.npz, labels: labels, max_top1_drop: 0.01}\n"
        f"      rounds: {ROUNDS}\n      ship: all\n"
    )
    return spec


def _compute_project(root: Path) -> Path:
    from repoforge import modelgen

    modelgen.save(modelgen.mlp(modelgen.COMPUTE_MLP, seed=0, input_name="x", output_name="y"), root / "compute.onnx")
    rng = np.random.default_rng(0)
    np.savez(root / "calib.npz", x=rng.standard_normal((256, 1024)).astype(np.float32))
    np.savez(root / "val.npz", x=rng.standard_normal((512, 1024)).astype(np.float32))
    spec = root / "spec.yaml"
    spec.write_text(
        "version: 1\nmodels:\n  - name: compute\n    format: onnx\n    path: compute.onnx\n    max_batch_size: 32\n"
        "    dynamic_batching: {preferred_batch_sizes: [8]}\n"
        "    optimize:\n      variants: [fp32, int8_dynamic, int8_static]\n      calibration: calib.npz\n"
        "      validation: {data: val.npz, max_top1_drop: 0.01}\n"
        f"      rounds: {ROUNDS}\n      ship: all\n"
    )
    return spec


def _served(http_url: str, model: str, versions: dict[str, str], inputs: dict[str, np.ndarray], batch: int) -> dict[str, list[float]]:  # fmt: skip
    """Per version: the median client latency (ms) of SERVED_REQUESTS requests of `batch` rows, per round."""
    import tritonclient.http as http

    client = http.InferenceServerClient(http_url, connection_timeout=30, network_timeout=30)
    reqs = []
    for name, arr in inputs.items():
        a = np.ascontiguousarray(np.resize(arr, (batch, *arr.shape[1:])).astype(np.float32))
        inp = http.InferInput(name, list(a.shape), "FP32")
        inp.set_data_from_numpy(a)
        reqs.append(inp)
    out: dict[str, list[float]] = {v: [] for v in versions}
    order = list(versions)
    for v in order:  # warm up
        for _ in range(5):
            client.infer(model, reqs, model_version=v)
    for r in range(SERVED_ROUNDS):
        for v in order[r % len(order) :] + order[: r % len(order)]:
            calls = []
            for _ in range(SERVED_REQUESTS):
                t0 = time.perf_counter()
                client.infer(model, reqs, model_version=v)
                calls.append((time.perf_counter() - t0) * 1000)
            out[v].append(statistics.median(calls))
    client.close()
    return out


def _ratio(a: tuple[float, float, float], b: tuple[float, float, float]) -> str:
    return f"{a[0] / b[0]:.2f} ({a[1] / b[2]:.2f}–{a[2] / b[1]:.2f})"


def test_int8_vs_fp32_in_process_and_served(long_bench: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from repoforge.build import build
    from repoforge.optimize.timing import host
    from repoforge.servers.triton import TritonServer
    from repoforge.triton.reader import read_repository

    monkeypatch.setenv("REPOFORGE_CACHE_DIR", str(tmp_path / "cache"))  # measure now: no cached variants or timings
    load_start = load_average()
    sections: list[str] = []
    summary: dict[str, Any] = {}
    with workdir("rf-bench-opt-") as tmp:
        for kind, make in (("digits", _digits_project), ("compute", _compute_project)):
            root = tmp / kind
            root.mkdir()
            spec = make(root)
            lines: list[str] = []
            result = build(spec, tmp / f"repo-{kind}", device="cpu", progress=lines.append)
            repo = result.output
            report = json.loads((repo / kind / "optimize-report.json").read_text())
            lock = json.loads((repo / "repoforge.lock.json").read_text())["optimize"][kind]
            by = {v["name"]: v for v in report["variants"]}
            sizes = [str(b) for b in report["batch_sizes"]]
            table = Table(["variant", "accepted", "top1" if kind == "digits" else "agreement", "top1 drop",
                           *[f"ms @ {b} (range)" for b in sizes], "size", "reason"])  # fmt: skip
            for v in report["variants"]:
                acc = v["top1"] if v["top1"] is not None else v["agreement"]
                table.add(v["name"], "yes" if v["accepted"] else "no", f"{acc:.4f}",
                          "–" if v["top1_drop"] is None else f"{v['top1_drop']:+.4f}",
                          *[f"{v['latency_ms'][b]:.3f} ({v['latency_range_ms'][b][0]:.3f}–{v['latency_range_ms'][b][1]:.3f})"
                            if b in v["latency_ms"] else "–" for b in sizes],
                          f"{v['size_bytes']:,}", v["reason"] or "")  # fmt: skip
            ratios = {}
            for q in ("int8_dynamic", "int8_static"):
                if q in by and by[q]["latency_ms"]:
                    ratios[q] = {
                        b: _ratio(
                            (by[q]["latency_ms"][b], *by[q]["latency_range_ms"][b]),
                            (by["fp32"]["latency_ms"][b], *by["fp32"]["latency_range_ms"][b]),
                        )
                        for b in sizes
                    }
            # served: every accepted variant is a version of one model in one server
            versions = {n: name for n, name in lock["versions"].items()}
            model = next(m for m in read_repository(repo) if m.name == kind)
            val = np.load(root / "val.npz")
            inputs = {k: val[k] for k in val.files if k != "labels"}
            served: dict[str, dict[str, list[float]]] = {}
            with TritonServer([repo]) as server:
                for b in (1, int(sizes[-1])):
                    served[str(b)] = _served(server.http_url, model.name, versions, inputs, b)
            name_of = versions
            int8 = [(v, n) for v, n in name_of.items() if n.startswith("int8")]
            vf = next(v for v, n in name_of.items() if n == "fp32")
            served_rows = Table(["batch", *[f"{name_of[v]} ms (range)" for v in versions],
                                 *[f"{n} ÷ fp32 served" for _v, n in int8]])  # fmt: skip
            for b, per in served.items():
                cells = [f"{statistics.median(x):.3f} ({min(x):.3f}–{max(x):.3f})" for x in per.values()]
                f = per[vf]
                ratios_served = [
                    f"{statistics.median(per[v]) / statistics.median(f):.2f} "
                    f"({min(per[v]) / max(f):.2f}–{max(per[v]) / min(f):.2f})"
                    for v, _n in int8
                ]
                served_rows.add(b, *cells, *ratios_served)
            sections.append(
                f"### {kind}: selected {report['selected']} ({report['selection']})\n\n"
                + table.markdown()
                + "\n\nINT8 ÷ FP32 latency in process (median of round medians; range from the rounds' extremes): "
                + "; ".join(f"{q}: " + ", ".join(f"batch {b} {r}" for b, r in rs.items()) for q, rs in ratios.items())
                + "\n\nServed (one tritonserver, each variant a version, HTTP, client latency, "
                + f"{SERVED_ROUNDS} alternating rounds of {SERVED_REQUESTS} requests):\n\n"
                + served_rows.markdown()
                + (
                    f"\n\nExport: {report['export']['from']} → ONNX opset {report['export']['opset']}, max abs err vs torch "
                    f"{report['export']['max_abs_err']:.2g}."
                    if report.get("export")
                    else ""
                )  # fmt: skip
            )
            summary[kind] = {"ratios": ratios, "served": served, "top1": {n: v["top1"] for n, v in by.items()}}
            big = sizes[-1]
            verdicts = []
            for q in ("int8_dynamic", "int8_static"):
                if q not in by or not by[q]["latency_ms"]:
                    continue
                r_ = by[q]["latency_ms"][big] / by["fp32"]["latency_ms"][big]
                drop = by[q]["top1_drop"] if by[q]["top1_drop"] is not None else 1 - by[q]["agreement"]
                what = "top-1 drop" if by[q]["top1_drop"] is not None else "rows whose top-1 differs from fp32's"
                met = r_ <= 0.6 and drop <= 0.01
                verdicts.append(
                    f"{q} at batch {big}: {r_:.2f}× fp32, {what} {drop:.4f}: goal {'met' if met else 'not met'}"
                )
            sections[-1] += "\n\nGoal (≤ 0.6× at ≤ 1 %): " + "; ".join(verdicts) + "."
            print(table.text())
            print(served_rows.text())
    isa = host()
    text = (
        "## Optimize: INT8 ÷ FP32 in process and served (`bench/test_optimize.py`)\n\n"
        f"{machine_text(load_at_start=load_start)}. CPU INT8 instruction set: "
        f"{', '.join(isa['isa']) or 'none found'} ({'VNNI' if isa['vnni'] else 'no VNNI'}). In process: 1 intra-op "
        f"thread, {ROUNDS} alternating rounds. Goal: INT8 ≤ 0.6× FP32 latency at ≤ 1 % absolute top-1 drop.\n\n"
        + "\n\n".join(sections)
    )
    update_results("optimize", text)
    assert summary["digits"]["top1"]["fp32"] > 0.9  # the model the gate judges is a real classifier
