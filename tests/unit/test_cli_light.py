"""Each command's `--help` and usage errors answer before any heavy import (cli/common.py: `Command.run`): a
command's module declares it (arguments, options, help), and its implementation in repoforge/cli/run/ with what
it imports (targets, uvicorn, redis, tritonclient, numpy, ...) is imported only when the command runs."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import click
import pytest

from repoforge.cli import COMMANDS, main
from repoforge.cli.common import Command, load

#: Third-party packages none of which `--help` or a usage error may import (each costs 10 ms to seconds).
HEAVY = (
    "numpy", "pydantic", "yaml", "jinja2", "onnx", "onnxruntime", "tritonclient", "grpc", "google.protobuf",
    "uvicorn", "starlette", "sse_starlette", "redis", "aiohttp", "httpx", "pyarrow", "torch", "ray", "cloudcoil",
    "matplotlib", "psutil",
)  # fmt: skip
#: The only modules of repoforge a command's declaration may import, besides repoforge.cli's own (not cli.run).
LIGHT = {
    "repoforge", "repoforge.cli", "repoforge.errors", "repoforge.contract", "repoforge.runtime", "repoforge.runtime.names",
    "repoforge.runtime.lazy",
}  # fmt: skip

PROGRAM = """
import json, sys
from repoforge.cli import main
HEAVY, LIGHT = json.loads(sys.argv[1]), set(json.loads(sys.argv[2]))

def heavy():
    return sorted(m for m in sys.modules
                  if any(m == h or m.startswith(h + ".") for h in HEAVY)
                  or (m.startswith("repoforge.") and m not in LIGHT
                      and not (m.startswith("repoforge.cli.") and not m.startswith("repoforge.cli.run"))))

found = []
for argv in json.loads(sys.argv[3]):
    try:
        main(argv, prog_name="repoforge")
        code = 0
    except SystemExit as exc:
        code = exc.code
    found.append({"argv": argv, "code": code, "heavy": heavy()})
print(json.dumps(found))
"""


def _paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command's words (`deploy k8s` for a group's command), listed from the table without running one."""
    out: list[tuple[str, ...]] = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        out.append((*prefix, name))
        if isinstance(cmd, click.Group):
            out += _paths(cmd, (*prefix, name))
    return out


@pytest.mark.parametrize("top", sorted(COMMANDS))
def test_help_and_a_usage_error_import_nothing_heavy(top: str) -> None:
    """In a fresh interpreter per command: `--help` exits 0 and an unknown option exits 2, and neither imports a
    heavy package nor the command's implementation (nor its subcommands')."""
    paths = [p for p in _paths(main) if p[0] == top]
    argvs = [[*p, "--help"] for p in paths] + [[*p, "--no-such-option"] for p in paths]
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, json.dumps(HEAVY), json.dumps(sorted(LIGHT)), json.dumps(argvs)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    for step in json.loads(out.stdout.strip().splitlines()[-1]):
        want = 0 if step["argv"][-1] == "--help" else 2
        assert step["code"] == want, step
        assert step["heavy"] == [], step


def _commands(group: click.Group) -> list[click.Command]:
    ctx = click.Context(group)
    found: list[click.Command] = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None
        found += _commands(cmd) if isinstance(cmd, click.Group) else [cmd]
    return found


def test_every_command_runs_an_implementation_that_takes_its_declared_parameters() -> None:
    """The declaration holds the options (and only `**_` for parameters); the implementation's signature is the one
    list of them: every option is one of its parameters, and each of its parameters without a default is an option."""
    for cmd in _commands(main):
        assert isinstance(cmd, Command) and cmd.run is not None, f"{cmd.name}: no implementation in repoforge.cli.run"
        assert cmd.run.startswith("repoforge.cli.run."), cmd.run
        assert cmd.callback is not None
        assert [p.kind for p in inspect.signature(cmd.callback).parameters.values()] == [inspect.Parameter.VAR_KEYWORD]
        declared = {p.name for p in cmd.params}
        params = inspect.signature(load(cmd.run)).parameters
        required = {
            n for n, p in params.items() if p.default is inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD
        }
        takes_rest = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        assert takes_rest or declared <= set(params), f"{cmd.name}: {cmd.run} lacks {sorted(declared - set(params))}"
        assert required <= declared, f"{cmd.name}: {cmd.run} needs {sorted(required - declared)}, not options"
