#!/usr/bin/env python3
"""Run repoforge's corpora at two revisions and show every difference in what users see.

A refactor must not change what a user sees: for the golden spec, every bad spec, every lint-corpus
repository, the import corpus, every example and a set of wrong command lines, this records the exit code,
stdout, stderr and every file written, at two revisions, and diffs them. Byte-identical means no output.

    .venv/bin/python scripts/compare_corpora.py                      # main vs. this checkout (uncommitted too)
    .venv/bin/python scripts/compare_corpora.py --before HEAD~3 --after HEAD
    .venv/bin/python scripts/compare_corpora.py --record main -o /tmp/main.json     # record one revision
    .venv/bin/python scripts/compare_corpora.py --before-record /tmp/main.json      # compare with a recording
    .venv/bin/python scripts/compare_corpora.py --only bad_specs,lint                # some corpora only

A revision is checked out in a temporary git worktree (removed afterwards) and run with this checkout's
Python environment, with its own `src/` first on PYTHONPATH; `WORKTREE` names this checkout as it is on disk.
Every command runs in-process through click's CliRunner (one Python per revision), in the revision's root,
with paths written relative to it; the temporary folders are replaced by placeholders before comparing.
Exit 0: identical; 1: differences (printed as unified diffs); 2: bad arguments.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ("golden", "bad_specs", "lint", "import", "examples", "usage")
WORKTREE = "WORKTREE"
OUT = ".corpora-out"  # every file the cases write, inside the revision's root; removed afterwards
CPU_SPEC = "_corpora.full.cpu.spec.yaml"  # written beside tests/golden/full.spec.yaml for the run, then removed

# --- the runner, executed inside the revision's root with its src/ first on sys.path ------------------------


Case = tuple[str, str, list[str], "Path | None"]  # corpus, case name, argv, folder whose files are recorded


def _cases(out: Path, only: set[str]) -> list[Case]:
    """Every case of the selected corpora, in a stable order."""
    makers = {"golden": _golden, "bad_specs": _bad_specs, "lint": _lint, "import": _import,
              "examples": _examples, "usage": _usage}  # fmt: skip
    return [case for corpus in CORPORA if corpus in only for case in makers[corpus](out)]


def _golden(out: Path) -> list[Case]:
    import yaml

    golden, cases = Path("tests/golden"), []
    data = yaml.safe_load((golden / "full.spec.yaml").read_text(encoding="utf-8"))
    data["models"] = [m for m in data["models"] if m["format"] != "tensorrt"]  # the cpu variant, as in conftest.py
    cpu_spec = golden / CPU_SPEC  # beside the original, so its paths and hash are the same at every revision
    cpu_spec.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    for device, spec in (("gpu", str(golden / "full.spec.yaml")), ("cpu", str(cpu_spec))):
        o, oj = out / "golden" / device, out / "golden" / f"{device}-json"
        cases.append(("golden", device, ["build", spec, "-o", str(o), "--device", device], o))
        cases.append(("golden", f"{device} --json", ["build", spec, "-o", str(oj), "--device", device, "--json"], None))
    return cases


def _bad_specs(out: Path) -> list[Case]:
    cases: list[Case] = []
    for path in sorted(Path("tests/bad_specs").glob("*.yaml")):
        header = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("# ") or ":" not in line:
                break
            key, _, value = line[2:].partition(":")
            header[key.strip()] = value.strip()
        o = out / "bad_specs" / path.stem
        argv = ["build", str(path), "-o", str(o), "--device", header.get("device", "cpu")]
        cases.append(("bad_specs", path.stem, [*argv, "--target", header.get("target", "triton")], o))
    return cases


def _lint(out: Path) -> list[Case]:
    cases: list[Case] = []
    for kind in ("valid", "invalid"):
        for repo in sorted(p for p in Path("tests/lint_corpus", kind).iterdir() if p.is_dir()):
            cases.append(("lint", f"{kind}/{repo.name}", ["lint", str(repo)], None))
            cases.append(("lint", f"{kind}/{repo.name} --json", ["lint", str(repo), "--json"], None))
    return cases


def _import(out: Path) -> list[Case]:
    cases: list[Case] = []
    repos = [Path("tests/data/import_handwritten")]
    repos += sorted(p for p in Path("tests/lint_corpus/valid").iterdir() if p.is_dir())
    for repo in repos:
        o, oj = out / "import" / repo.name, out / "import-json" / repo.name
        cases.append(("import", repo.name, ["import", str(repo), "-o", str(o / "spec.yaml")], o))
        cases.append(
            ("import", f"{repo.name} --json", ["import", str(repo), "-o", str(oj / "spec.yaml"), "--json"], None)
        )
    return cases


def _examples(out: Path) -> list[Case]:
    """Every example built for both devices (examples whose models make_models.py generates: their error)."""
    cases: list[Case] = []
    for spec in sorted(Path("examples").glob("*/spec.yaml")):
        name = spec.parent.name
        target = "torchserve" if "torchserve" in name else "triton"
        for device in ("cpu", "gpu"):
            o = out / "examples" / f"{name}-{target}-{device}"
            argv = ["build", str(spec), "-o", str(o), "--target", target, "--device", device]
            cases.append(("examples", f"{name} {target} {device}", argv, o))
    return cases


def _usage(out: Path) -> list[Case]:
    return [("usage", " ".join(argv), argv, None) for argv in _usage_cases(out)]


def _usage_cases(out: Path) -> list[list[str]]:
    """--help of every command, and wrong command lines that must be usage errors before any work."""
    import click

    from repoforge.cli import main

    helps: list[list[str]] = [["--help"]]

    def walk(group: click.Group, prefix: list[str]) -> None:
        ctx = click.Context(group)
        for name in sorted(group.list_commands(ctx)):
            cmd = group.get_command(ctx, name)
            helps.append([*prefix, name, "--help"])
            if isinstance(cmd, click.Group):
                walk(cmd, [*prefix, name])

    walk(main, [])
    o, nowhere = str(out / "usage-out"), str(out / "no" / "such" / "thing")
    wrong = [
        [],
        ["nosuchcommand"],
        ["build"],
        ["build", "tests/golden/full.spec.yaml"],
        ["build", "tests/golden/full.spec.yaml", "-o", o, "--device", "tpu"],
        ["build", nowhere, "-o", o],
        ["validate", nowhere],
        ["validate", "tests/golden", "--timeout", "0"],
        ["lint", nowhere],
        ["import", nowhere, "-o", o],
        ["serve", nowhere, "--http-port", "70000"],
        ["serve", nowhere, "--ports", "some"],
        ["perf", "127.0.0.1:1", "-m", "m", "--concurrency", "1-8", "-o", o],
        ["perf", "127.0.0.1:1", "-m", "m", "--request-rate", "fast", "-o", o],
        ["perf", "127.0.0.1:1", "-m", "m", "--baseline", nowhere, "-o", o],
        ["perf", "127.0.0.1:1", "-m", "m", "--update-baseline", "-o", o],
        ["perf", "tests/golden/full.spec.yaml", "-m", "m", "-o", o],
        ["perf", nowhere, "-m", "m", "-o", o],
        ["perf", "127.0.0.1:1", "-m", "m", "--shape", "X", "-o", o],
        ["tune", "tests", "-m", "m", "--latency-budget-ms", "5"],
        ["tune", "tests/golden/full.spec.yaml", "-m", "m"],
        ["batch", "grpc://127.0.0.1:1", "-m", "m", "--input", nowhere, "-o", o],
        ["batch", "nowhere", "-m", "m", "--input", "tests/golden/full.spec.yaml", "-o", o],
        [
            "batch",
            "grpc://127.0.0.1:1",
            "-m",
            "m",
            "--input",
            "tests/golden/full.spec.yaml",
            "-o",
            o,
            "--concurrency",
            "0",
        ],
        ["batch", "grpc://127.0.0.1:1", "-m", "m", "--input", "tests/golden/full.spec.yaml", "-o", o, "--map", "x"],
        [
            "batch",
            "grpc://127.0.0.1:1",
            "-m",
            "m",
            "--input",
            "tests/golden/full.spec.yaml",
            "-o",
            o,
            "--ray-actors",
            "0",
        ],
        ["rollout", "127.0.0.1:1", "--router", "r", "--candidate", "c", "--steps", "5,50,25,100"],
        ["rollout", "127.0.0.1:1", "--router", "r", "--candidate", "c", "--steps", "5,50"],
        ["rollout", "127.0.0.1:1", "--router", "r", "--candidate", "c", "--steps", "x"],
        ["rollout", "127.0.0.1:1", "--router", "r", "--candidate", "c", "--interval", "soon"],
        ["rollout", "127.0.0.1:1", "--router", "r", "--candidate", "c", "--threshold", "0"],
        ["rollout", "127.0.0.1:1", "--router", "r", "--candidate", "c", "--max-error-rate", "2"],
        ["rollout", "127.0.0.1:1", "--router", "r", "--candidate", "c", "--metrics-url", "nowhere"],
        ["rollout", "127.0.0.1:1", "--candidate", "c"],
        ["rollout", "127.0.0.1:1", "--router", "r"],
        ["rollout", "no-port", "--router", "r", "--candidate", "c"],
        ["deploy", "k8s", nowhere, "-o", o],
        ["deploy", "k8s", "tests", "-o", o, "--set", "novalue"],
        ["drift", "profile", nowhere, "-m", "m", "-o", o],
        ["drift", "report", nowhere, nowhere, "-o", o],
        ["drift", "profile", nowhere, "-m", "m", "-o", o, "--bins", "1"],
        ["optimize", nowhere, "-o", o],
        ["optimize", "tests/golden/full.spec.yaml", "-o", o, "--device", "tpu"],
        ["init", "examples/tabular"],
    ]
    return helps + wrong


def _files(folder: Path) -> dict[str, str]:
    """Every file under folder: text as is (small text files), else size and sha256."""
    files: dict[str, str] = {}
    if not folder.exists():
        return files
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            try:
                text = data.decode("utf-8")
                files[p.relative_to(folder).as_posix()] = text if len(data) < 64_000 else _digest(data)
            except UnicodeDecodeError:
                files[p.relative_to(folder).as_posix()] = _digest(data)
    return files


def _digest(data: bytes) -> str:
    return f"<{len(data)} bytes sha256 {hashlib.sha256(data).hexdigest()}>"


def run_corpora(out: Path, only: set[str]) -> dict[str, Any]:
    """Every case of the selected corpora, run in this process; paths normalised."""
    from click.testing import CliRunner

    from repoforge.cli import main

    root, tmp = str(Path.cwd().resolve()), str(out.resolve())

    def norm(text: str) -> str:
        return text.replace(tmp, "<OUT>").replace(root, "<ROOT>")

    results: dict[str, Any] = {}
    try:
        for corpus, name, argv, folder in _cases(out, only):
            res = CliRunner().invoke(main, argv, catch_exceptions=True, color=False)
            crash = None
            if res.exception is not None and not isinstance(res.exception, SystemExit):
                crash = f"{type(res.exception).__name__}: {res.exception}"
            results[f"{corpus} | {norm(name)}"] = {
                "argv": [norm(a) for a in argv],
                "exit_code": res.exit_code,
                "stdout": norm(res.stdout),
                "stderr": norm(res.stderr),
                "crash": norm(crash) if crash else None,
                "files": {k: norm(v) for k, v in _files(folder).items()} if folder else None,
            }
    finally:
        (Path("tests/golden") / CPU_SPEC).unlink(missing_ok=True)
    return results


# --- the driver -------------------------------------------------------------------------------------------


def record(rev: str, only: set[str], python: str) -> dict[str, Any]:
    """Run the corpora at rev (a git revision, or WORKTREE) and return its results."""
    with tempfile.TemporaryDirectory(prefix="corpora-") as tmp:
        tree = ROOT if rev == WORKTREE else Path(tmp) / "tree"
        if rev != WORKTREE:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), rev], check=True)
        out = tree / OUT  # inside the tree: paths written relative to it are the same at every revision
        try:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            result = Path(tmp) / "result.json"
            env = {
                **os.environ,
                "PYTHONPATH": str(tree / "src"),
                "NO_COLOR": "1",
                "COLUMNS": "100",
                "PYTHONDONTWRITEBYTECODE": "1",
            }
            code = (
                "import json, sys; sys.path.insert(0, sys.argv[1]); import compare_corpora as c; "
                "from pathlib import Path; "
                "json.dump(c.run_corpora(Path(sys.argv[2]), set(sys.argv[4].split(','))), open(sys.argv[3], 'w'))"
            )
            subprocess.run(
                [python, "-c", code, str(Path(__file__).resolve().parent), str(out), str(result), ",".join(only)],
                cwd=tree, env=env, check=True, timeout=3600,
            )  # fmt: skip
            return {"revision": rev, "commit": _commit(rev), "results": json.loads(result.read_text())}
        finally:
            shutil.rmtree(out, ignore_errors=True)
            if rev != WORKTREE:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


def _commit(rev: str) -> str:
    if rev == WORKTREE:
        return "worktree"
    return subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", rev], capture_output=True, text=True, check=True
    ).stdout.strip()


def compare(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Unified diffs of every case whose exit code, output or files differ."""
    lines: list[str] = []
    a, b = before["results"], after["results"]
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            lines.append(f"=== {key}: only {'after' if key in b else 'before'}")
            continue
        if a[key] == b[key]:
            continue
        lines.append(f"=== {key}")
        for field in ("exit_code", "crash", "stdout", "stderr"):
            if a[key][field] != b[key][field]:
                lines += _diff(field, a[key][field], b[key][field])
        fa, fb = a[key]["files"] or {}, b[key]["files"] or {}
        for f in sorted(set(fa) | set(fb)):
            if fa.get(f) != fb.get(f):
                lines += _diff(f"file {f}", fa.get(f, "<missing>"), fb.get(f, "<missing>"))
    return lines


def _diff(what: str, x: Any, y: Any) -> list[str]:
    xs, ys = str(x).splitlines(), str(y).splitlines()
    return [f"--- {what}"] + list(difflib.unified_diff(xs, ys, "before", "after", lineterm="", n=1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default="main", help="git revision (default: main)")
    ap.add_argument("--after", default=WORKTREE, help="git revision, or WORKTREE (default): this checkout as on disk")
    ap.add_argument("--before-record", type=Path, help="a --record file to use instead of running --before")
    ap.add_argument("--record", metavar="REV", help="only run REV and write its results to -o")
    ap.add_argument("-o", "--output", type=Path, help="with --record: the JSON file to write")
    ap.add_argument("--only", default=",".join(CORPORA), help=f"comma-separated subset of {','.join(CORPORA)}")
    ap.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"), help="the Python to run with")
    args = ap.parse_args()
    only = set(args.only.split(","))
    if not only <= set(CORPORA):
        ap.error(f"--only: unknown corpus {sorted(only - set(CORPORA))}; choose from {', '.join(CORPORA)}")
    if args.record:
        if not args.output:
            ap.error("--record needs -o FILE")
        data = record(args.record, only, args.python)
        args.output.write_text(json.dumps(data, indent=1, sort_keys=True))
        print(f"recorded {len(data['results'])} cases of {args.record} ({data['commit']}) into {args.output}")
        return 0
    before = (
        json.loads(args.before_record.read_text()) if args.before_record else record(args.before, only, args.python)
    )
    if args.before_record:
        before["results"] = {k: v for k, v in before["results"].items() if k.split(" | ")[0] in only}
    after = record(args.after, only, args.python)
    diff = compare(before, after)
    if diff:
        print("\n".join(diff))
    n = len(before["results"])
    changed = sum(1 for line in diff if line.startswith("=== "))
    print(f"{n} cases; {changed} differ between {before['revision']} ({before['commit'][:10]}) and "
          f"{after['revision']} ({after['commit'][:10]})")  # fmt: skip
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
