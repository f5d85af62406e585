"""`repoforge serve`: every port checked before a server starts (all taken ones named at once, with their
flags), `--ports auto`, and `--print-command` lines that work for the build they are printed for."""

from __future__ import annotations

import re
import shlex
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from repoforge.build import build
from repoforge.cli import main
from repoforge.errors import ServeError
from repoforge.scaffold import init
from repoforge.serve import Endpoints, check_ports, plan_ports, serve
from repoforge.servers.triton import NGC_IMAGE


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serve-project")
    init(root / "proj")
    return root / "proj" / "spec.yaml"


@pytest.fixture(scope="module")
def cpu_repo(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(project, tmp_path_factory.mktemp("cpu") / "repo", device="cpu").output


@contextmanager
def held_ports(n: int) -> Iterator[list[int]]:
    """`n` ports something really listens on, for as long as the block runs."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
            s.listen()
        yield [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def test_every_taken_port_is_named_with_its_flag_before_anything_starts(cpu_repo: Path) -> None:
    with held_ports(2) as (http, metrics), socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        grpc = probe.getsockname()[1]
        probe.close()
        res = CliRunner().invoke(
            main,
            [
                "serve",
                str(cpu_repo),
                "--http-port",
                str(http),
                "--grpc-port",
                str(grpc),
                "--metrics-port",
                str(metrics),
            ],
        )
    assert res.exit_code == 1, res.output
    assert f"ports taken on 127.0.0.1: {http} (--http-port), {metrics} (--metrics-port)." in res.output
    assert "--ports auto" in res.output and str(grpc) not in res.output
    assert "(the log is empty)" not in res.output  # nothing ran, so there is no log to speak of


def test_torchserve_ports_name_the_flag_that_moves_each() -> None:
    ports = plan_ports(True, http_port=9000, grpc_port=9100)
    assert [(p.port, p.flag) for p in ports] == [
        (9000, "--http-port"),
        (9001, "--http-port + 1"),
        (8082, "--metrics-port"),
        (9100, "--grpc-port"),
        (9101, "--grpc-port + 1"),
    ]
    with held_ports(1) as (busy,):
        with pytest.raises(ServeError, match=rf"ports taken on 127.0.0.1: .*{busy} \(--http-port \+ 1\)"):
            check_ports(plan_ports(True, http_port=busy - 1, grpc_port=0, metrics_port=0))
    with pytest.raises(ServeError, match=r"port 9001 is asked for twice: management \(--http-port \+ 1\) and metrics"):
        check_ports(plan_ports(True, http_port=9000, metrics_port=9001))


def test_auto_ports_pick_free_ones_except_those_given() -> None:
    assert [p.port for p in plan_ports(False)] == [8000, 8001, 8002]
    assert [p.port for p in plan_ports(False, auto=True, metrics_port=9002)] == [None, None, 9002]
    assert [p.port for p in plan_ports(True, auto=True)] == [None] * 5
    assert [p.port for p in plan_ports(False, http_port=0)] == [None, 8001, 8002]  # 0: any free port


@pytest.mark.integration
def test_serve_with_auto_ports_answers_on_the_ports_it_prints(cpu_repo: Path) -> None:
    """A real tritonserver: with --ports auto (the CLI passes auto_ports) the ready lines carry the ports
    picked, and the health check printed there answers while it serves."""
    stop = threading.Event()
    seen: list[tuple[Endpoints, int]] = []

    def ready(ep: Endpoints) -> None:
        try:
            url = re.search(r"\(curl (\S+)\)", dict(ep.rows)["HTTP"])
            with urllib.request.urlopen(url.group(1) if url else "http://invalid", timeout=10) as resp:
                seen.append((ep, resp.status))
        finally:
            stop.set()

    errors: list[BaseException] = []

    def run() -> None:
        try:
            serve(cpu_repo, on_ready=ready, stop_event=stop, auto_ports=True)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=240)
    assert not worker.is_alive() and not errors, errors
    ep, status = seen[0]
    assert status == 200 and ep.models == ["classifier"]
    printed = " ".join(v for _, v in ep.rows)
    assert {"HTTP", "gRPC", "metrics"} == {label for label, _ in ep.rows}
    assert not any(f":{p}" in printed for p in (8000, 8001, 8002))  # free ones, not the defaults


@pytest.mark.integration
def test_serve_in_explicit_model_control_starts_the_models_asked_for_and_can_unload(cpu_repo: Path) -> None:
    """issue 23.5: `serve --model-control explicit --load M`: Triton takes load/unload requests (what blue-green
    rollout needs); without it Triton refuses them ("not allowed if polling is enabled")."""
    stop = threading.Event()
    seen: list[tuple[Endpoints, int, bool]] = []

    def ready(ep: Endpoints) -> None:
        try:
            http = dict(ep.rows)["HTTP"].split()[0]
            req = urllib.request.Request(f"{http}/v2/repository/models/classifier/unload", data=b"{}", method="POST")
            with urllib.request.urlopen(req, timeout=30) as resp:
                status = resp.status
            try:
                with urllib.request.urlopen(f"{http}/v2/models/classifier/ready", timeout=10) as resp:
                    still = resp.status == 200
            except urllib.error.HTTPError:
                still = False
            seen.append((ep, status, still))
        finally:
            stop.set()

    errors: list[BaseException] = []

    def run() -> None:
        try:
            serve(cpu_repo, on_ready=ready, stop_event=stop, auto_ports=True, model_control="explicit",
                  load_models=["classifier"])  # fmt: skip
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=240)
    assert not worker.is_alive() and not errors, errors
    ep, status, still = seen[0]
    assert ep.models == ["classifier"] and status == 200 and not still
    assert any("explicit" in line for line in ep.lines()), ep.lines()


def test_load_needs_explicit_model_control_and_a_model_the_build_has(cpu_repo: Path) -> None:
    res = CliRunner().invoke(main, ["serve", str(cpu_repo), "--load", "classifier"])
    assert res.exit_code == 2 and "--model-control explicit" in res.output, res.output
    res = CliRunner().invoke(main, ["serve", str(cpu_repo), "--model-control", "explicit", "--load", "nope"])
    assert res.exit_code == 2 and "'nope'" in res.output and "classifier" in res.output, res.output


def test_print_command_on_a_cpu_build_of_onnx_is_the_plain_ngc_line_without_gpus(cpu_repo: Path) -> None:
    """Every build serves ONNX with Triton's onnxruntime backend (issue 21), so a --device cpu build of a plain ONNX
    model runs on the stock NGC image as it is, and on a host without GPUs (no `--gpus all`)."""
    res = CliRunner().invoke(main, ["serve", str(cpu_repo), "--print-command"])
    assert res.exit_code == 0, res.output
    assert res.output.count("\n") == 1
    run = shlex.split(res.output)
    assert run[:2] == ["docker", "run"] and NGC_IMAGE in run and "--gpus" not in run
    assert f"{cpu_repo.resolve()}:/models" in run and "--model-repository=/models" in run


def test_print_command_on_a_cpu_build_builds_its_image_then_runs_it(project: Path, tmp_path: Path) -> None:
    """A --device cpu build's Python models (here repoforge's runner, asked for with `backend: python`) need what the
    build declares (python_requirements) beyond the NGC image: the lines write that image's context with `repoforge
    image`, build it and run it. A build whose models still import an installed repoforge cannot run on any stock
    image: the command says so instead."""
    from repoforge.deploy.image import imports_installed_repoforge

    runner_spec = project.parent / "runner.spec.yaml"
    runner_spec.write_text(project.read_text().replace("format: onnx ", "format: onnx\n    backend: python "))
    assert "backend: python" in runner_spec.read_text()
    cpu_repo = build(runner_spec, tmp_path / "runner-repo", device="cpu").output
    res = CliRunner().invoke(main, ["serve", str(cpu_repo), "--print-command"])
    if imports_installed_repoforge(cpu_repo):
        assert res.exit_code != 0 and "imports the installed repoforge package" in res.output
        return
    assert res.exit_code == 0, res.output
    lines = [shlex.split(ln) for ln in res.output.splitlines() if ln and not ln.startswith("#")]
    image, docker_build, run = lines
    context = tmp_path / "ctx"
    made = CliRunner().invoke(main, [*image[1:-1], str(context)])  # the printed `repoforge image` line
    assert made.exit_code == 0, made.output
    tag = docker_build[docker_build.index("-t") + 1]
    assert docker_build[-1] == image[-1]
    dockerfile = (context / "Dockerfile").read_text().splitlines()
    assert f"FROM {NGC_IMAGE}" in dockerfile
    for line in dockerfile:  # every COPY source exists in the context
        if line.startswith("COPY "):
            assert all((context / source).exists() for source in line.split()[1:-1]), line
    assert run[:2] == ["docker", "run"] and tag in run and NGC_IMAGE not in run
    assert f"{cpu_repo.resolve()}:/models" in run and "--model-repository=/models" in run


def test_print_command_on_a_gpu_build_stays_the_plain_ngc_line(project: Path, tmp_path: Path) -> None:
    repo = build(project, tmp_path / "gpu", device="gpu").output
    res = CliRunner().invoke(main, ["serve", str(repo), "--print-command"])
    assert res.exit_code == 0, res.output
    assert res.output.count("\n") == 1 and shlex.split(res.output)[:2] == ["docker", "run"]
    assert NGC_IMAGE in shlex.split(res.output)


def test_print_command_refuses_a_torchserve_folder_repoforge_did_not_build(tmp_path: Path) -> None:
    """A TorchServe build's docker lines come from its lock (what its image needs, its workflows): a model store
    without one is a usage error. tests/unit/test_deploy_image.py checks the lines of a real build."""
    (tmp_path / "model-store").mkdir()
    (tmp_path / "config.properties").write_text("inference_address=http://127.0.0.1:8080\n")
    res = CliRunner().invoke(main, ["serve", str(tmp_path), "--print-command"])
    assert res.exit_code == 2 and "repoforge.lock.json" in res.output and "repoforge build" in res.output
