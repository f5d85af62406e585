"""Ctrl-C in any command (issue 23.13): exit 130 and one line saying what was kept, never click's `Aborted!`.
A real process gets a real SIGINT; the command is a stand-in that waits, so no server is needed."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

PROGRAM = textwrap.dedent(
    """
    import sys, time
    import click
    from repoforge.cli.common import command
    from repoforge.errors import Interrupted

    @command(kept="the files so far are kept in {output}")
    @click.option("-o", "--output")
    @click.option("--knows", is_flag=True)
    def wait(output, knows):
        try:
            print("waiting", flush=True)
            time.sleep(60)
        except KeyboardInterrupt:
            if knows:
                raise Interrupted("3 point(s) are in " + output + "/report.json") from None
            raise

    wait()
    """
)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        ([], "interrupted: the files so far are kept in out\n"),
        (["--knows"], "interrupted: 3 point(s) are in out/report.json\n"),
    ],
)
def test_sigint_exits_130_with_one_line(args: list[str], line: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", PROGRAM, "-o", "out", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "waiting\n"
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [line.strip()] and "Aborted!" not in err
