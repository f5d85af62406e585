"""`repoforge rollout` against a real tritonserver under a bounded load loop: canary promotion and rollback on
errors, p99, shadow agreement and missing traffic; blue-green with load, switch, unload and rollback; and no
request of the load loop lost or failed while weights change."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from tritonclient import http

from repoforge.build import build
from repoforge.metrics import scrape
from repoforge.rollout.command import RolloutArgumentError, rollout
from repoforge.servers.triton import TritonServer
from repoforge.spec.rollout import RolloutSpec

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data" / "rollout"

MODELS = {
    "primary": {},
    "healthy": {},
    "flaky": {"fail_every": 20},
    "slow": {"sleep_ms": 150},
    "disagree": {"factor": 2},
    "blue": {},
    "green": {},
}
ROUTERS = {
    "r_healthy": ("primary", "healthy", True),
    "r_flaky": ("primary", "flaky", False),
    "r_slow": ("primary", "slow", False),
    "r_disagree": ("primary", "disagree", True),
    "r_idle": ("primary", "healthy", False),
    "r_bg": ("blue", "green", True),
}


def _spec() -> str:
    lines = ["version: 1", "defaults:", "  max_batch_size: 64", "models:"]
    for name, params in MODELS.items():
        ps = ", ".join(f"{k}: {v}" for k, v in params.items())
        lines += [
            f"  - name: {name}",
            "    format: python",
            "    path: candidate.py",
            f"    parameters: {{{ps}}}",
            "    inputs: [{name: X, dtype: FP32, dims: [4]}]",
            "    outputs: [{name: Y, dtype: FP32, dims: [4]}]",
        ]
    for name, (primary, candidate, shadow) in ROUTERS.items():
        lines += [
            f"  - name: {name}",
            "    format: python",
            "    instance_groups: [{kind: cpu, count: 2}]",
            "    plugin:",
            "      kind: router",
            f"      routes: [{{model: {primary}, weight: 1}}, {{model: {candidate}, weight: 0}}]",
        ]
        if shadow:
            lines.append(f"      shadow: {{model: {candidate}, timeout_ms: 5000}}")
    # what `rollout REPO` uses where the command line says nothing (the build folder test)
    lines.append("rollout: {router: r_idle, candidate: healthy, interval: 200ms, threshold: 1, steps: [100]}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("rollout")
    shutil.copy(DATA / "candidate.py", root / "candidate.py")
    (root / "spec.yaml").write_text(_spec())
    repo = build(root / "spec.yaml", root / "repo", device="cpu").output
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REPOFORGE_STATE_DIR", str(root / "state"))
        with TritonServer(repo, model_control="explicit", load_models=["*"]) as s:
            yield s


@dataclass
class Load:
    """A bounded load loop on one router: a few threads, each request with a timeout; counts every request."""

    url: str
    router: str
    threads: int = 3
    rows: int = 4
    sent: int = 0
    ok: int = 0
    errors: list[str] = field(default_factory=list)
    routes: list[np.ndarray] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for _ in range(self.threads):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in self._workers), "a load thread did not stop"

    def _run(self) -> None:
        client = http.InferenceServerClient(self.url, network_timeout=20, connection_timeout=5)
        x = np.ones((self.rows, 4), dtype=np.float32)
        inp = http.InferInput("X", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        try:
            while not self._stop.is_set():
                with self._lock:
                    self.sent += 1
                try:
                    res = client.infer(self.router, [inp])
                    route = res.as_numpy("ROUTE")
                    with self._lock:
                        self.ok += 1
                        self.routes.append(route.reshape(-1))
                except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
                    with self._lock:
                        self.errors.append(str(exc)[:200])
        finally:
            client.close()


def _policy(**kw: object) -> RolloutSpec:
    base: dict[str, object] = {"steps": [10, 50, 100], "interval": "1.5s", "threshold": 2, "min_requests": 20}
    return RolloutSpec.model_validate({**base, **kw})


def _run(server: TritonServer, router: str, candidate: str, log: Path | None = None, **kw: object):
    return rollout(
        server.http_url,
        router=router,
        candidate=candidate,
        policy=_policy(**kw),
        metrics_url=server.metrics_url.split("://")[-1].removesuffix("/metrics"),
        log=log,
        progress=print,
    )


def _cli(target: str, router: str, candidate: str) -> list[str]:
    return [sys.executable, "-m", "repoforge", "rollout", target, "--router", router, "--candidate", candidate]


def _rows(server: TritonServer, router: str, route: str, name: str = "repoforge_router_rows_total") -> float:
    return scrape(server.metrics_url, "repoforge_").get(f'{name}{{model="{router}",route="{route}"}}', 0.0)


# --------------------------------------------------------------------------------------------
def test_healthy_candidate_is_promoted_through_every_step_and_every_instance_follows(
    server: TritonServer, tmp_path: Path
) -> None:
    log = tmp_path / "rollout.jsonl"
    with Load(server.http_url, "r_healthy") as load:
        result = _run(server, "r_healthy", "healthy", log=log)
        time.sleep(1.0)  # requests after promotion: every instance of the router routes them to the candidate
        settled = len(load.routes)
        time.sleep(1.0)
    assert result.outcome == "promoted" and result.exit_code == 0, result.reason
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    checks = [r for r in lines if "phase" in r]
    assert [c["phase"] for c in checks] == ["shadow", "step", "step", "step"]
    assert [c["weight_percent"] for c in checks] == [0, 10, 50, 100]
    assert all(c["verdict"] == "pass" for c in checks)
    assert checks[0]["agreement"] == 1.0 and checks[0]["shadow_rows"] >= 20
    # during the steps the router mirrors the candidate's own rows onto itself: no agreement is claimed there
    assert [c["agreement"] for c in checks[1:]] == [None, None, None], checks  # issue 23.6
    assert lines[-1]["outcome"] == "promoted"
    assert load.errors == [] and load.ok == load.sent > 0
    after = np.concatenate(load.routes[settled:])
    assert after.size > 0 and set(after.tolist()) == {1}  # route 1 = the candidate, on both instances


def test_candidate_failing_5_percent_is_rolled_back_at_the_first_step(server: TritonServer) -> None:
    before = scrape(server.metrics_url, "nv_inference_request_failure")
    with Load(server.http_url, "r_flaky") as load:
        result = _run(server, "r_flaky", "flaky")
    assert result.outcome == "rolled back" and result.exit_code == 1
    assert "at 10%" in result.reason and "error rate" in result.reason and "--max-error-rate 1.00%" in result.reason
    assert [c["weight_percent"] for c in result.checks] == [10, 10]
    assert result.weights["flaky"] == 0.0
    failed_rows = sum(1 for e in load.errors if "failing on purpose" in e)
    assert failed_rows > 0 and len(load.errors) == failed_rows  # only the candidate's own failures reach clients
    assert load.ok + len(load.errors) == load.sent
    # Triton's own per-model failure counter does not see a Python model's error responses (2.51): the router's does
    after = scrape(server.metrics_url, "nv_inference_request_failure")
    key = next(k for k in after if 'model="flaky"' in k)
    assert after[key] == before.get(key, 0.0)
    assert _rows(server, "r_flaky", "flaky", "repoforge_router_errors_total") > 0


def test_slow_candidate_is_rolled_back_on_p99_and_no_request_is_lost(server: TritonServer) -> None:
    with Load(server.http_url, "r_slow") as load:
        result = _run(server, "r_slow", "slow", max_p99_ms=100)
        rolled_back_at = load.sent
        time.sleep(1.0)  # keep the loop running through and past the rollback
    assert result.outcome == "rolled back", result.reason
    assert "p99" in result.reason and "--max-p99-ms 100" in result.reason and "at 10%" in result.reason
    assert result.switch_ms is not None and result.switch_ms < 1000 * 1.5  # within one interval
    assert load.errors == [] and load.ok == load.sent > rolled_back_at


def test_disagreeing_candidate_is_stopped_on_agreement_before_it_gets_traffic(server: TritonServer) -> None:
    with Load(server.http_url, "r_disagree"):
        result = _run(server, "r_disagree", "disagree")
    assert result.outcome == "rolled back"
    assert "before any traffic" in result.reason and "agreement 0.00% < --min-agreement 99.00%" in result.reason
    assert [c["phase"] for c in result.checks] == ["shadow", "shadow"]
    assert _rows(server, "r_disagree", "disagree") == 0.0


def test_candidate_without_traffic_is_not_promoted(server: TritonServer) -> None:
    result = _run(server, "r_idle", "healthy", interval="0.5s")
    assert result.outcome == "rolled back"
    assert "no data: 0 requests < --min-requests 20" in result.reason
    assert len(result.checks) == 2


def test_blue_green_loads_switches_unloads_and_rolls_back_without_losing_a_request(server: TritonServer) -> None:
    http_api = http.InferenceServerClient(server.http_url, network_timeout=60)
    http_api.unload_model("green")
    assert not server.model_ready("green")
    with Load(server.http_url, "r_bg") as load:
        result = _run(server, "r_bg", "green", strategy="blue-green", shadow_requests=50, keep_blue="3s", interval="1s")
        assert result.outcome == "promoted", result.reason
        assert server.model_ready("green") and not server.model_ready("blue")
        switched = len(load.routes)
        time.sleep(0.5)
        assert set(np.concatenate(load.routes[switched:]).tolist()) == {1}
        back = rollout(
            server.http_url,
            router="r_bg",
            candidate=None,  # `--rollback` alone: back to the router's spec weights (blue 1, green 0)
            policy=_policy(),
            metrics_url=server.metrics_url.split("://")[-1].removesuffix("/metrics"),
            do_rollback=True,
        )
        assert back.weights == {"blue": 1.0, "green": 0.0}
        assert server.model_ready("blue")
        back_at = len(load.routes)
        time.sleep(0.5)
    http_api.close()
    assert set(np.concatenate(load.routes[back_at:]).tolist()) == {0}
    assert load.errors == [] and load.ok == load.sent
    assert [c["phase"] for c in result.checks][0] == "shadow"


def test_bad_input_found_on_the_server_exits_2(server: TritonServer, tmp_path: Path) -> None:
    metrics = server.metrics_url.split("://")[-1].removesuffix("/metrics")
    with pytest.raises(RolloutArgumentError, match="does not route to 'slow'; its routes: primary, healthy"):
        rollout(server.http_url, router="r_idle", candidate="slow", policy=_policy(), metrics_url=metrics)
    with pytest.raises(RolloutArgumentError, match="'primary' is not a repoforge plugin model, not a router"):
        rollout(server.http_url, router="primary", candidate="slow", policy=_policy(), metrics_url=metrics)
    cmd = _cli(server.http_url, "nope", "x")
    cmd += ["--metrics-url", metrics, "--log", str(tmp_path / "log.jsonl")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "model 'nope' is not loaded" in proc.stderr and "r_bg" in proc.stderr
    assert not (tmp_path / "log.jsonl").exists()


def test_cli_rolls_back_an_idle_candidate_with_exit_1_and_one_log_line_per_check(
    server: TritonServer, tmp_path: Path
) -> None:
    log = tmp_path / "r.jsonl"
    metrics = server.metrics_url.split("://")[-1].removesuffix("/metrics")
    cmd = _cli(server.http_url, "r_idle", "healthy")
    cmd += ["--metrics-url", metrics, "--log", str(log), "--interval", "300ms", "--steps", "50,100", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert out["outcome"] == "rolled back" and "no data" in out["reason"]
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) == 3 and rows[-1]["outcome"] == "rolled back"


def test_a_build_folder_is_served_for_the_run_with_its_spec_rollout_section(
    server: TritonServer, tmp_path: Path
) -> None:
    repo = Path(server.options.repositories[0])
    log = tmp_path / "b.jsonl"
    # router, candidate, interval, threshold and steps come from the spec's rollout: section; the CLI adds one
    cmd = [sys.executable, "-m", "repoforge", "rollout", str(repo), "--log", str(log), "--min-requests", "5"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 1, proc.stderr
    assert "explicit model control" in proc.stderr
    assert "healthy at 100%: no data: 0 requests < --min-requests 5" in proc.stdout
    assert len(log.read_text().splitlines()) == 2


def test_the_metrics_port_is_read_from_the_server_not_guessed(server: TritonServer) -> None:
    """issue 23.10: the fixture's ports are free ones (metrics is not HTTP + 2): rollout reads them from the
    tritonserver process; a metrics URL where nothing answers is named by its flag."""
    assert not server.metrics_url.endswith(f":{int(server.http_url.rsplit(':', 1)[1]) + 2}/metrics")
    result = rollout(server.http_url, router="r_idle", candidate="healthy", policy=_policy(interval="300ms",
                     threshold=1, steps=[100]), metrics_url=None)  # fmt: skip
    assert result.outcome == "rolled back" and "no data: 0 requests" in result.reason  # the metrics were read
    with pytest.raises(RolloutArgumentError, match="--metrics-url") as err:
        rollout(server.http_url, router="r_idle", candidate="healthy", policy=_policy(), metrics_url="127.0.0.1:1")
    assert err.value.param == "--metrics-url"


@pytest.fixture(scope="module")
def polling_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """blue, green and their router on a Triton that, like `repoforge serve` by default, cannot unload models."""
    root = tmp_path_factory.mktemp("rollout-none")
    shutil.copy(DATA / "candidate.py", root / "candidate.py")
    spec = _spec().split("  - name: primary")[0]  # version and defaults
    models = "".join(ln + "\n" for ln in _spec().splitlines() if not ln.startswith("rollout:"))  # r_idle's
    keep = [b for b in models.split("  - name: ")[1:] if b.split("\n")[0] in ("blue", "green", "r_bg")]
    (root / "spec.yaml").write_text(spec + "".join(f"  - name: {b}" for b in keep))
    repo = build(root / "spec.yaml", root / "repo", device="cpu").output
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REPOFORGE_STATE_DIR", str(root / "state"))
        with TritonServer(repo) as s:  # model control "none"
            yield s


def test_blue_green_refuses_up_front_a_server_that_cannot_unload(polling_server: TritonServer) -> None:
    """issue 23.5: a usage error before any weight changes, saying how to serve it so it can."""
    with pytest.raises(RolloutArgumentError, match="--model-control explicit") as err:
        _run(polling_server, "r_bg", "green", strategy="blue-green", shadow_requests=0, keep_blue="0s")
    assert err.value.exit_code == 2
    assert _rows(polling_server, "r_bg", "green", "repoforge_router_weight") == 0.0  # nothing was switched


def test_a_switch_whose_blue_did_not_unload_is_not_a_promotion(polling_server: TritonServer) -> None:
    """issue 23.5: the release loop itself (past the up-front check): blue's unload is refused by the server."""
    from repoforge.rollout.command import smoke
    from repoforge.rollout.controller import Rollout
    from repoforge.rollout.server import RouterServer

    metrics = polling_server.metrics_url.split("://")[-1].removesuffix("/metrics")
    router = RouterServer(polling_server.http_url, metrics, "r_bg")
    policy = _policy(strategy="blue-green", shadow_requests=0, keep_blue="0s")
    result = Rollout(router, "green", policy, say=print).run(lambda m: smoke(router, m))
    assert result.outcome != "promoted" and result.exit_code == 1, result
    assert "blue" in result.reason and "not allowed" in result.reason


def test_ctrl_c_mid_release_rolls_the_candidate_back(server: TritonServer, tmp_path: Path) -> None:
    import signal

    metrics = server.metrics_url.split("://")[-1].removesuffix("/metrics")
    weight = 'repoforge_router_weight{model="r_idle",route="healthy"}'
    cmd = _cli(server.http_url, "r_idle", "healthy")
    cmd += ["--metrics-url", metrics, "--log", str(tmp_path / "i.jsonl"), "--interval", "60s", "--steps", "50,100"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while scrape(server.metrics_url, "repoforge_router_weight").get(weight) != 0.5:
            assert time.monotonic() < deadline and proc.poll() is None, "the first step never started"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err  # issue 23.13: Ctrl-C exits 130 in every command (it exited 1)
    assert "interrupted, all traffic back" in out
    assert scrape(server.metrics_url, "repoforge_router_weight")[weight] == 0.0
