"""The evidence of an optimize run: optimize-report.json, optimize-report.md, a latency-vs-accuracy plot and
reproduce.sh, which re-runs the gate and the timing without the cache."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from repoforge import __version__, lazy
from repoforge.optimize.pipeline import ModelResult

REPORT_JSON = "optimize-report.json"
REPORT_MD = "optimize-report.md"
PLOT = "optimize-latency-accuracy.png"
REPRODUCE = "reproduce.sh"


def model_report(r: ModelResult, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "selected": r.selected,
        "selection": r.why,
        "batch_sizes": r.batch_sizes,
        "export": r.export,
        "variants": [v.as_dict(r.batch_sizes) for v in r.variants],
        "tensorrt": None if r.tensorrt is None else {k: r.tensorrt[k] for k in ("profiles", "int8", "status")},
        "host": r.host,
        **extra,
    }


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "–" if x is None else format(x, spec)


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# optimize report: {report['spec']}",
        "",
        f"repoforge {report['repoforge_version']}, device {report['device']}; tools: "
        + ", ".join(f"{k} {v}" for k, v in sorted(report["tools"].items())),
        "",
    ]
    for name, m in report["models"].items():
        h = m["host"]
        lines += [
            f"## {name}: selected **{m['selected']}**",
            "",
            f"{m['selection']}. Timed in process, {m['rounds']} alternating rounds, {m['threads']} thread(s), on "
            f"{h['cpu'] or 'this CPU'} ({h['cpus']} CPUs, {'VNNI' if h['vnni'] else 'no VNNI'}; load {h['loadavg_1m']}).",
            "",
        ]
        sizes = [str(b) for b in m["batch_sizes"]]
        head = (
            "| variant | accepted | top1 | agreement | max abs err | "
            + " | ".join(f"ms @ {b} (range)" for b in sizes)
            + f" | rows/s @ {sizes[-1]} | size | reason |"
        )
        lines += [head, "|" + "---|" * (8 + len(sizes))]
        for v in m["variants"]:
            lat = " | ".join(
                f"{v['latency_ms'][b]:.3f} ({v['latency_range_ms'][b][0]:.3f}–{v['latency_range_ms'][b][1]:.3f})"
                if b in v["latency_ms"]
                else "–"
                for b in sizes
            )
            tput = f"{v['throughput']:,.0f}" if v["throughput"] else "–"
            lines.append(
                f"| {v['name']} | {'yes' if v['accepted'] else 'no'} | {_fmt(v['top1'])} | {_fmt(v['agreement'])} | "
                f"{_fmt(v['max_abs_err'], '.2g')} | {lat} | {tput} | {v['size_bytes']:,} | {v['reason'] or v.get('note', '')} |"
            )
        served = [v for v in m["variants"] if v.get("served_latency_ms")]
        if served:
            bs = list(served[0]["served_latency_ms"])
            ref = next((v for v in served if v["name"] == "fp32"), served[0])
            lines += ["", "Served by tritonserver (perf_analyzer p50, concurrency 1, each variant a version, alternating "
                      "rounds; median and range):", "",
                      "| variant | " + " | ".join(f"ms @ {b} (range) | ÷ fp32" for b in bs) + " |",
                      "|---|" + "---|---|" * len(bs)]  # fmt: skip
            for v in served:
                cells = " | ".join(
                    f"{v['served_latency_ms'][b]:.3f} ({v['served_latency_range_ms'][b][0]:.3f}–"
                    f"{v['served_latency_range_ms'][b][1]:.3f}) | {v['served_latency_ms'][b] / ref['served_latency_ms'][b]:.2f}"
                    for b in bs
                )
                lines.append(f"| {v['name']} | {cells} |")
            if m.get("served_selected"):
                lines += [
                    "",
                    f"On served figures the same rule picks **{m['served_selected']}** ({m['served_selection']}).",
                ]
        if m.get("tensorrt"):
            lines += ["", f"TensorRT: {m['tensorrt']['status']} (profiles {m['tensorrt']['profiles']})."]
        if m.get("export"):
            e = m["export"]
            lines += [
                "",
                f"Exported from {e['from']} (opset {e['opset']}): max abs err vs torch {e['max_abs_err']:.2g}.",
            ]
        lines.append("")
    return "\n".join(lines)


def plot(report: dict[str, Any], dest: Path) -> str | None:
    """Latency (largest batch) against top-1 (or agreement) per variant, one panel per model; None when
    matplotlib is missing (the report says so)."""
    try:
        plt = lazy.pyplot()
    except ImportError:
        return "no plot: matplotlib is not installed (pip install 'repoforge[triton]')"
    models = report["models"]
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, (name, m) in zip(axes[0], models.items(), strict=True):
        b = str(m["batch_sizes"][-1])
        for i, v in enumerate(m["variants"]):
            if b not in v["latency_ms"]:
                continue
            acc = v["top1"] if v["top1"] is not None else v["agreement"]
            x, (lo, hi) = v["latency_ms"][b], v["latency_range_ms"][b]
            color = "tab:green" if v["name"] == m["selected"] else ("tab:blue" if v["accepted"] else "tab:red")
            ax.errorbar(x, acc, xerr=[[x - lo], [hi - x]], fmt="o" if v["accepted"] else "x", color=color,
                        markersize=8, capsize=3)  # fmt: skip
            # labels stagger vertically: variants often share an accuracy exactly
            ax.annotate(v["name"], (x, acc), textcoords="offset points", xytext=(6, 6 + 11 * (i % 4)), fontsize=8,
                        color=color, arrowprops={"arrowstyle": "-", "color": "0.7", "lw": 0.5})  # fmt: skip
        ax.set_xlabel(f"latency at batch {b} (ms, in process; bars: range over rounds)")
        ax.set_ylabel(
            "top-1 accuracy" if any(v["top1"] is not None for v in m["variants"]) else "top-1 agreement with fp32"
        )
        ax.set_title(f"{name}: selected {m['selected']} (green; x = rejected by the gate)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(dest, dpi=100)
    plt.close(fig)
    return None


def reproduce_script(spec: Path, models: list[str], device: str, tools: dict[str, str]) -> str:
    names = " ".join(f"-m {shlex.quote(m)}" for m in models)
    pins = " ".join(
        f"{k}=={v}" for k, v in sorted(tools.items()) if k not in ("python", "repoforge") and v != "not installed"
    )
    return f"""#!/usr/bin/env bash
# Re-run the accuracy gate and the timing of this report, with no cache, and compare the verdicts.
# Made with repoforge {__version__}, python {tools.get("python", "?")}; the same tools: pip install {pins}
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${{1:-$here/reproduced}}"
py="${{PYTHON:-{shlex.quote(sys.executable)}}}"   # the interpreter this report was made with; PYTHON=... to change
"$py" -m repoforge optimize {shlex.quote(str(spec))} {names} -o "$out" --device {device} --no-cache --force -q
"$py" - "$here/{REPORT_JSON}" "$out/{REPORT_JSON}" <<'PY'
import json, sys
old, new = (json.load(open(p)) for p in sys.argv[1:3])
same = True
for name, m in old["models"].items():
    n = new["models"][name]
    for a, b in zip(m["variants"], n["variants"]):
        if a["accepted"] != b["accepted"]:
            same = False
            print(f"{{name}} {{a['name']}}: accepted {{a['accepted']}} then, {{b['accepted']}} now ({{b['reason']}})")
    print(f"{{name}}: selected {{m['selected']}} then, {{n['selected']}} now")
sys.exit(0 if same else 1)
PY
"""


def write_report(out: Path, report: dict[str, Any]) -> list[str]:
    """Write the JSON, Markdown and plot into `out` (a temp dir); returns notes (e.g. no plot)."""
    notes = []
    (out / REPORT_JSON).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    (out / REPORT_MD).write_text(markdown(report))
    note = plot(report, out / PLOT)
    if note:
        notes.append(note)
    return notes
