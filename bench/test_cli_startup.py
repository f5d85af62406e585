"""CLI responsiveness: wall time of `repoforge <cmd> --help` and of a usage error (an unknown option, exit 2), for
every command, before and after the declaration/implementation split (cli/common.py: `Command.run`).

BEFORE is a revision checked out into a temporary git worktree (default: the parent of the commit that added
src/repoforge/cli/run/); AFTER is this checkout. Each is run as `python -c "from repoforge.cli import main;
main()"` with PYTHONPATH at its src/ (same interpreter, same site-packages), alternating B A B A per round; the
figure is the median of the rounds and its range. Host load (os.getloadavg) before and after. Rewrites the
`cli_startup` section of bench/RESULTS.md.

    .venv/bin/python bench/test_cli_startup.py [--rounds 5] [--before REV]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _serving_helpers as h

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = "import sys; from repoforge.cli import main; main(sys.argv[1:], prog_name='repoforge')"


def _default_before() -> str:
    added = subprocess.run(["git", "-C", str(ROOT), "log", "--diff-filter=A", "--format=%H", "--",
                            "src/repoforge/cli/run/__init__.py"], capture_output=True, text=True, check=True,
                           timeout=60).stdout.split()  # fmt: skip
    return f"{added[-1][:10]}^"


def _time(src: Path, argv: list[str], want: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PROGRAM, *argv], env=env, capture_output=True, timeout=60)
    took = time.perf_counter() - t0
    assert proc.returncode == want, (src, argv, proc.returncode, proc.stderr[-500:])
    return took


def _commands() -> list[str]:
    from repoforge.cli import COMMANDS

    return sorted(COMMANDS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--before", default=None, help="revision to compare with (default: before cli/run/)")
    args = ap.parse_args()
    before_rev = args.before or _default_before()
    cases = [("(none)", ["--help"], 0)]
    for cmd in _commands():
        cases += [(cmd, [cmd, "--help"], 0), (cmd, [cmd, "--no-such-option"], 2)]
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cli-bench-") as tmp:
        wt = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(wt), before_rev],
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        try:
            sides = {"before": wt / "src", "after": ROOT / "src"}
            times: dict[tuple[str, str, str], list[float]] = {}
            for r in range(args.rounds):
                order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
                for name, argv, want in cases:
                    for side in order:
                        times.setdefault((name, argv[-1], side), []).append(_time(sides[side], argv, want))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(wt)], timeout=120,
                           capture_output=True)  # fmt: skip
    load1 = os.getloadavg()

    def cell(xs: list[float]) -> str:
        return f"{statistics.median(xs) * 1000:.0f} ({min(xs) * 1000:.0f}-{max(xs) * 1000:.0f})"

    rows = []
    for name, argv, _want in cases:
        b, a = times[(name, argv[-1], "before")], times[(name, argv[-1], "after")]
        what = "`--help`" if argv[-1] == "--help" else "usage error (exit 2)"
        rows.append(f"| {name} | {what} | {cell(b)} | {cell(a)} | {statistics.median(b) / statistics.median(a):.1f}x |")
    after_all = [statistics.median(times[(n, v[-1], "after")]) for n, v, _ in cases]
    md = "\n".join([
        "## CLI responsiveness: `--help` and usage errors before any heavy import (`bench/test_cli_startup.py`)",
        "",
        f"Wall ms of `python -c 'from repoforge.cli import main; main()' ARGS` (a process each; console-script "
        f"wrapper not included), median of {args.rounds} rounds (range), before ({before_rev}: each command's module "
        f"imported its implementation) and after (declarations in cli/*.py, implementations in cli/run/*.py), "
        f"alternating per round. Host: 2 shared cores; load {load0[0]:.2f} at start, {load1[0]:.2f} at the end. "
        f"Slowest after: {max(after_all) * 1000:.0f} ms.",
        "",
        "| command | what | before ms | after ms | speed-up |",
        "|---|---|---|---|---|",
        *rows,
    ])  # fmt: skip
    h.update_results("cli_startup", md)
    print(md)


if __name__ == "__main__":
    main()
