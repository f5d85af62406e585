"""`repoforge perf` / `tune` arguments: wrong ones fail in parsing (click's usage error, exit 2) before a
server starts or perf_analyzer runs, and every option an error hint names exists on the command."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from repoforge.cli import main
from repoforge.perf import analyzer
from repoforge.perf import command as command_mod
from repoforge.perf.analyzer import PerfOptions

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "repoforge" / "perf"
SPEC = ROOT / "examples" / "tabular" / "spec.yaml"


@pytest.fixture
def no_measuring(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record any call that would start a server or measure: none may happen for a wrong argument."""
    calls: list[Any] = []

    def target(*a: Any, **k: Any) -> Any:
        calls.append(("serve", a))
        raise AssertionError("a server was about to start")

    def measure(*a: Any, **k: Any) -> Any:
        calls.append(("measure", a))
        raise AssertionError("perf_analyzer was about to run")

    monkeypatch.setattr(command_mod, "_target", target)
    monkeypatch.setattr(command_mod, "run", measure)
    return calls


@pytest.mark.parametrize("args, param, expected", [
    (["repo", "--baseline", "nope.json"], "--baseline", "does not exist; record it first with --update-baseline"),
    (["repo", "--concurrency", "1-8"], "--concurrency", "use START:END[:STEP]"),
    (["repo", "--request-rate", "fast"], "--request-rate", "request rate"),
    ([str(SPEC)], "TARGET", "is a file, but perf measures a built repository folder or a server URL; build it first"),
    (["no/such/folder"], "TARGET", "neither a repository folder nor a server's host:port"),
])  # fmt: skip
def test_wrong_perf_arguments_are_usage_errors_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_measuring: list[Any], args: list[str], param: str, expected: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "repo").mkdir()
    res = CliRunner().invoke(main, ["perf", *args, "-m", "classifier", "-o", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    assert isinstance(res.exception, SystemExit) and "Traceback" not in res.output
    assert f"Invalid value for '{param}'" in res.output and expected in " ".join(res.output.split())
    assert no_measuring == [] and not (tmp_path / "out").exists()


def test_perf_function_checks_arguments_before_serving(tmp_path: Path, no_measuring: list[Any]) -> None:
    """The Python API fails the same way (a PerfError with exit code 2), before anything starts."""
    with pytest.raises(command_mod.PerfArgumentError, match="baseline .* does not exist") as info:
        command_mod.perf(tmp_path, "m", baseline=tmp_path / "missing.json")
    assert info.value.exit_code == 2 and info.value.param == "--baseline"
    command_mod.check_arguments(tmp_path, baseline=tmp_path / "missing.json", update=True)  # will be written: fine
    command_mod.check_arguments("127.0.0.1:8000")
    command_mod.check_arguments("http://localhost:8000/")
    assert no_measuring == []


def test_tune_refuses_a_folder_where_the_spec_belongs(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["tune", str(tmp_path), "-m", "m", "--latency-budget-ms", "5"])
    assert res.exit_code == 2 and "is a directory" in res.output


# --------------------------------------------------------------------------------------------
# Hints name only options that exist
# --------------------------------------------------------------------------------------------
_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _hint_options(path: Path) -> dict[str, str]:
    """``--option`` named in prose strings (messages, notes) of a module: string literals and f-string
    parts with a space in them, docstrings left out (they describe perf_analyzer's own argv too)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}  # fmt: skip
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and " " in node.value
        ):
            for opt in _OPTION.findall(node.value):
                found.setdefault(opt, node.value.strip()[:120])
    return found


def _options(name: str) -> set[str]:
    cmd = main.commands[name]
    return {o for p in cmd.params if isinstance(p, click.Option) for o in p.opts}


def test_every_option_a_perf_hint_names_exists_on_perf() -> None:
    perf_options = _options("perf")
    named: dict[str, str] = {}
    for module in ("analyzer.py", "command.py", "baseline.py", "report.py"):
        named.update(_hint_options(SRC / module))
    assert "--stability-percentage" in named and "--update-baseline" in named  # the collector finds hints
    missing = {opt: text for opt, text in named.items() if opt not in perf_options}
    assert not missing, f"hints name options `repoforge perf` does not have: {missing}"


def test_every_option_a_tune_hint_names_exists_on_tune() -> None:
    """tune's own messages, and perf_analyzer's unstable-measurement hint (which a tune run can show)."""
    tune_options = _options("tune")
    named = _hint_options(SRC / "tune.py")
    unstable = analyzer._explain(PerfOptions("m", "h:1"), 16, 2, "Failed to obtain stable measurement.\n")
    named.update({opt: str(unstable) for opt in _OPTION.findall(str(unstable))})
    assert "--max-trials" in named
    missing = {opt: text for opt, text in named.items() if opt not in tune_options}
    assert not missing, f"hints name options `repoforge tune` does not have: {missing}"


@pytest.mark.parametrize("fast", [True, False])
def test_the_gate_prints_its_verdict_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    """Only the printing is under test here: the measurement is a given report (the gate's judgement on
    real runs is in test_perf.py)."""
    from repoforge.perf import Baseline, MachineInfo, PerfPoint, PerfReport, compare

    def report(tput: float) -> PerfReport:
        pt = PerfPoint(concurrency=1, throughput=tput, p50_ms=1, p90_ms=1, p95_ms=1, p99_ms=1)
        return PerfReport("m", {"grpc": "h:1"}, [pt], MachineInfo(2, "test"))

    base = Baseline.from_report(report(1000))
    (tmp_path / "b.json").write_text("{}")
    gate = compare(report(1000 if fast else 100), base)
    monkeypatch.setattr(command_mod, "perf", lambda *a, **k: command_mod.PerfResult(report(1), [], gate))
    res = CliRunner().invoke(main, ["perf", str(tmp_path), "-m", "m", "--baseline", str(tmp_path / "b.json")])
    assert res.exit_code == (0 if fast else 1), res.output
    verdict = "perf gate passed" if fast else "perf gate FAILED"
    assert res.output.count(verdict) == 1, res.output
    assert "throughput (infer/s)" in res.output  # the table is still there
