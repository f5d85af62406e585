"""The command table (repoforge/cli/__init__.py, issue 22): `repoforge --help` lists every command from it without
importing one, so each line there must stay the command's own short help, and every entry must resolve."""

from __future__ import annotations

import subprocess
import sys

import click

from repoforge.cli import COMMANDS, main

UNLIMITED = 10_000


def test_every_entry_resolves_to_its_named_command_with_its_own_help_line() -> None:
    for name, (where, line) in COMMANDS.items():
        cmd = main.commands[name]
        assert isinstance(cmd, click.Command), where
        assert cmd.name == name, where
        assert line == cmd.get_short_help_str(UNLIMITED), f"{name}: the table's help line is not the command's"


def test_help_imports_no_command_module() -> None:
    """The point of the table: `repoforge --help` (and a wrong command name) stay as cheap as the group itself."""
    program = (
        "import sys\n"
        "from repoforge.cli import main\n"
        "for argv in (['--help'], ['no-such-command']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('repoforge.cli.') and m != 'repoforge.cli.common'))\n"
    )
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
