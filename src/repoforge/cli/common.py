"""What every command shares: the error translation (one place), Ctrl-C, progress lines and the common options."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from gettext import gettext
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from repoforge.errors import ArgumentError, Interrupted, RepoforgeError, ServerStartError

F = TypeVar("F", bound=Callable[..., Any])
Progress = Callable[[str], None]

INTERRUPTED = 130  # the shell's code for a process ended by SIGINT


def fail(exc: BaseException, code: int) -> NoReturn:
    """One red `error: ...` line on stderr, then exit `code`."""
    click.secho(f"error: {exc}", fg="red", err=True)
    sys.exit(code)


def progress(quiet: bool) -> Progress | None:
    """Progress lines on stderr (stdout stays clean for --json), or none."""
    return None if quiet else (lambda msg: click.echo(f"  {msg}", err=True))


def load(ref: str) -> Any:
    """The object named by "module:attr", its module imported now. The one place the command line imports late:
    a command's module from the table (LazyCommands), a command's implementation when it runs (`Command.run`) and
    an option callback that needs a heavy package (`later`), so `--help` and usage errors import none of them."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def later(ref: str) -> Callable[..., Any]:
    """A callable standing for the one at "module:attr", loaded on its first call: an option callback that needs a
    heavy package (it runs only when its option is parsed, never for --help)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return load(ref)(*args, **kwargs)

    return call


class Command(click.Command):
    """A repoforge command: known errors become one clean line (a wrong argument: click's usage error, exit 2),
    and Ctrl-C exits 130 with one line saying what was kept, instead of a traceback or click's `Aborted!`.

    `kept` is that line's text after "interrupted: ", formatted with the command's parameters (e.g. {output});
    a command that knows more (points measured so far) raises `Interrupted` with its own words.

    `run` ("module:attr", in repoforge.cli.run) is the command's implementation, imported only when the command
    runs: the decorated function is its light declaration (arguments, options, help, and the checks that need no
    heavy package), whose module imports little, so `--help` and usage errors answer before any heavy import.
    The declaration takes only `**_`: the implementation's signature is the one typed list of the command's
    parameters (tests/unit/test_cli_light.py checks it against the options).
    """

    def __init__(self, *args: Any, kept: str = "nothing was written", run: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kept = kept
        self.run = run

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)  # the declaration: its checks, if any
            return result if self.run is None else ctx.invoke(load(self.run), **ctx.params)
        except ArgumentError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param_hint=f"'{exc.param}'") from None
        except Interrupted as exc:
            _interrupted(ctx, str(exc))
        except KeyboardInterrupt:
            _interrupted(ctx, self.kept.format(**ctx.params))
        except (RepoforgeError, ServerStartError) as exc:
            fail(exc, getattr(exc, "exit_code", 1))


def _interrupted(ctx: click.Context, kept: str) -> NoReturn:
    click.echo(file=sys.stderr)  # past the ^C the terminal printed
    click.secho(f"interrupted: {kept}", fg="yellow", err=True)
    ctx.exit(INTERRUPTED)


class Group(click.Group):
    """A command group whose commands are `Command`s."""

    command_class = Command


class LazyCommands(MutableMapping[str, click.Command]):
    """A group's commands, each imported from its "module:attr" the first time it is looked up: the one place
    the command line imports a command's module, so `repoforge --help` and each command load only their own."""

    def __init__(self, table: Mapping[str, tuple[str, str]]) -> None:
        self.table = table  # name → ("module:attr", the one-line help `--help` lists before it is imported)
        self.loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self.loaded:
            if name not in self.table:
                raise KeyError(name)
            self.loaded[name] = load(self.table[name][0])
        return self.loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self.loaded[name] = command

    def __delitem__(self, name: str) -> None:
        raise TypeError(f"the command {name!r} is in the table in repoforge/cli/__init__.py")

    def __iter__(self) -> Iterator[str]:
        return iter({**self.table, **self.loaded})

    def __len__(self) -> int:
        return len({**self.table, **self.loaded})


class LazyGroup(Group):
    """A group over `LazyCommands`: its help lists the commands not imported yet from their table lines
    (tests/unit/test_cli_table.py checks that each line is its command's own short help)."""

    commands: LazyCommands

    def __init__(self, name: str | None = None, *, table: Mapping[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(name, LazyCommands(table), **kwargs)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's own listing (Group.format_commands), without importing a command to read its help."""
        table, loaded = self.commands.table, self.commands.loaded
        rows = [(name, loaded[name] if name in loaded else click.Command(name, help=table[name][1]))
                for name in self.list_commands(ctx)]  # fmt: skip
        rows = [(name, cmd) for name, cmd in rows if not cmd.hidden]
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section(gettext("Commands")):
                formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in rows])


def command(
    name: str | None = None, *, kept: str = "nothing was written", run: str | None = None, **kwargs: Any
) -> Callable[[F], Command]:
    """`click.command` making a `Command` (errors and Ctrl-C handled once; `run`: its implementation, loaded late)."""
    return click.command(name, cls=Command, kept=kept, run=run, **kwargs)


# --- options several commands share (each takes its help text, which differs by what the command prints) ---


def json_option(help: str) -> Callable[[F], F]:
    return click.option("--json", "as_json", is_flag=True, help=help)


def quiet_option(help: str = "No progress output.") -> Callable[[F], F]:
    return click.option("-q", "--quiet", is_flag=True, help=help)


def force_option(help: str = "Replace OUTPUT if it exists (only if repoforge wrote it).") -> Callable[[F], F]:
    return click.option("--force", is_flag=True, help=help)


def tritonserver_option() -> Callable[[F], F]:
    return click.option(
        "--tritonserver",
        type=click.Path(path_type=Path),
        default=None,
        help="tritonserver binary (default: the one nvidia-pytriton bundles).",
    )


def server_option(help: str) -> Callable[[F], F]:
    """--server TRITONSERVER: a tritonserver binary (or 'bundled') whose facts the command uses."""
    return click.option("--server", "server", default=None, metavar="TRITONSERVER", help=help)
