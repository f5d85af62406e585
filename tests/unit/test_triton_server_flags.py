"""The exit timeout a command gives the tritonserver it starts for its own run."""

from __future__ import annotations

from pathlib import Path

from repoforge.servers.triton import RUN_EXIT_TIMEOUT_S, TritonServer


def test_exit_timeout_goes_on_the_command_line_only_when_set(tmp_path: Path) -> None:
    run = TritonServer(tmp_path, exit_timeout_s=RUN_EXIT_TIMEOUT_S)
    assert f"--exit-timeout-secs={RUN_EXIT_TIMEOUT_S}" in run._flags([str(tmp_path)])
    assert TritonServer.from_options(run.options).options.exit_timeout_s == RUN_EXIT_TIMEOUT_S  # copied along
    assert not any(f.startswith("--exit-timeout-secs") for f in TritonServer(tmp_path)._flags([str(tmp_path)]))
