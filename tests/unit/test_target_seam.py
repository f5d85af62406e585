"""Commands never ask which target they have: outside `src/repoforge/targets/`, no code compares a target's (or
perf_analyzer service kind's) name. What differs per target is asked of the target object (`targets/types.py`),
so a new target is a new package, not a branch in every command (issue 22)."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "repoforge"
TARGETS = SRC / "targets"

_NAME = r"""["'](?:triton|torchserve)["']"""
#: A comparison with a target's name, either way round, or membership in a literal list of them; and any
#: comparison of a `target`/`.target`/`service_kind` value, whatever it is compared with (a bare `== target` on the
#: right is left alone: lint and plan call a step's model its target).
ASKS_TARGET = re.compile(
    rf"[=!]=\s*{_NAME}"
    rf"|{_NAME}\s*[=!]="
    rf"|\bin\s*[(\[{{]\s*{_NAME}"
    r"|\b(?:target|target_name|service_kind)\s*[=!]=(?!=)"
    r"|[=!]=\s*(?:(?:\w+\.)+target|(?:\w+\.)*service_kind)\b"
)


def comparisons(root: Path = SRC) -> list[str]:
    """`path:line: text` of every comparison with a target name outside targets/ (comments left out)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if TARGETS in path.parents:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if ASKS_TARGET.search(code):
                found.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    return found


def test_no_command_compares_target_names() -> None:
    assert comparisons() == [], "ask the target object (repoforge.targets) instead of comparing its name"


def test_the_check_sees_what_it_forbids(tmp_path: Path) -> None:
    """The pattern catches each way of asking, and leaves passing a name alone."""
    asks = [
        'if info.target == "torchserve":',
        "x = 'a' if self.target != 'triton' else 'b'",
        'if "triton" == kind:',
        'if ep.service_kind == "triton":',
        'if target in ("triton", "torchserve"):',
        "if a.target == b.target:",
    ]
    fine = [
        'get_target("triton")',
        'make_plan(loaded, device, target="torchserve")',
        'TARGETS = {"triton": TritonTarget()}',
        "target = get_target(name)",
    ]
    (tmp_path / "asks.py").write_text("\n".join(asks) + "\n")
    (tmp_path / "fine.py").write_text("\n".join(fine) + "\n")
    hits = comparisons(tmp_path)
    assert len(hits) == len(asks) and all("asks.py" in h for h in hits), hits
