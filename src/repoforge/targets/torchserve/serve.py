"""TorchServe served for each command: `serve` (token auth on, its endpoints with curl lines that carry the key),
its docker lines (`serve --print-command`) and the measuring run of `perf`."""

from __future__ import annotations

import contextlib
import json
import shlex
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from repoforge.deploy.build_info import read_lock
from repoforge.deploy.image_plan import legacy_error, plan_image
from repoforge.deploy.servers import torchserve_config
from repoforge.errors import ServeError
from repoforge.output import MANIFEST
from repoforge.perf.analyzer import PerfError
from repoforge.servers.ports import free_ports
from repoforge.servers.torchserve import TorchServeServer
from repoforge.servers.torchserve_client import TorchServeClient
from repoforge.spec.deploy import DeploySpec, dns_name
from repoforge.targets.torchserve import build_info
from repoforge.targets.torchserve.validate import archived_config, random_request
from repoforge.targets.types import Endpoints, PerfEndpoints, Progress, TargetArgumentError


def make_torchserve(
    output: str | Path, *, host: str = "127.0.0.1", ports: list[int | None] | None = None
) -> TorchServeServer:
    """A TorchServeServer for a `build --target torchserve` output on `ports` (inference, management, metrics,
    gRPC inference, gRPC management; None entries become free ports); token auth stays on."""
    if host != "127.0.0.1":
        raise ServeError("TorchServe is served on 127.0.0.1 only by repoforge; put a proxy in front to expose it")
    chosen: list[int] | None = None
    if ports is not None and any(p is not None for p in ports):  # all None: the server picks (and retries a race)
        fresh = iter(free_ports(sum(p is None for p in ports)))
        chosen = [p if p is not None else next(fresh) for p in ports]
    return TorchServeServer(output, workflows="all", ports=chosen)


def torchserve_endpoints(ts: TorchServeServer) -> Endpoints:
    """A running TorchServe's endpoints, with a health check that passes token auth: the key it wrote this start."""
    p = ts.ports
    notes = ["token auth off"]
    if ts.keys():
        expiry = ts.key_expiry("inference")
        notes = [f"token auth on: keys in {ts.key_file}"]
        if expiry:
            notes.append(
                f"the keys expire {expiry}; a new inference key: "
                f"{ts.curl_command('management', '/token?type=inference', key='API')}"
            )
    rows = [
        ("inference", f"{ts.inference_url}   ({ts.curl_command('inference', '/ping')})"),
        ("management", f"{ts.management_url}   ({ts.curl_command('management', '/models')})"),
        ("gRPC", f"127.0.0.1:{p.grpc_inference} (management 127.0.0.1:{p.grpc_management})"),
        ("metrics", f"{ts.metrics_url}/metrics"),
    ]
    if ts.workflows:
        rows.append(("workflows", ", ".join(f"POST /wfpredict/{w.removesuffix('.war')}" for w in ts.workflows)))
    return Endpoints("TorchServe", rows, ts.list_models(), notes)


def perf_data(request: Path) -> str:
    """perf_analyzer's input-data file for TorchServe: it posts the file named here as the body."""
    return json.dumps({"data": [{"TORCHSERVE_INPUT": [str(request)]}]})


def torchserve_batching(archived: dict[str, Any]) -> dict[str, Any] | None:
    """A .mar's model-config.yaml batching (batchSize, maxBatchDelay ms) as the report explains it."""
    size, delay = int(archived.get("batchSize") or 1), float(archived.get("maxBatchDelay") or 0)
    if size <= 1 or delay <= 0:
        return None
    return {
        "delay_ms": delay,
        "full_batch": size,
        "source": f"maxBatchDelay {delay:g} ms, batchSize {size} in the archive's model-config.yaml",
    }


@contextlib.contextmanager
def serve_for_perf(output: Path, models: list[str], say: Progress) -> Iterator[PerfEndpoints]:
    """A TorchServe build: perf_analyzer's torchserve mode posts a JSON file, so one request per model is
    made from the archived inputs (random data). Token auth is off for this local measuring run only."""
    mars = {p.stem: p for p in (output / "model-store").glob("*.mar")}
    missing = [m for m in models if m not in mars]
    if missing:
        raise PerfError(f"model '{missing[0]}' is not in {output}/model-store; it has {', '.join(sorted(mars))}")
    with tempfile.TemporaryDirectory(prefix="repoforge-perf-ts-") as tmp:
        data: dict[str, Path] = {}
        requests: dict[str, str] = {}
        batching: dict[str, dict[str, Any] | None] = {}
        for m in models:
            archived = archived_config(mars[m])
            body = Path(tmp) / f"{m}.request.json"
            requests[m] = json.dumps(random_request(archived.get("handler", {})))
            body.write_text(requests[m])
            data[m] = Path(tmp) / f"{m}.perf-data.json"
            data[m].write_text(perf_data(body))
            batching[m] = torchserve_batching(archived)
        say(f"starting TorchServe on {output} (127.0.0.1, token auth off for the measurement)")
        with TorchServeServer(output, models=[f"{m}.mar" for m in models], disable_token_auth=True) as server:
            url = server.inference_url.removeprefix("http://")
            say(f"TorchServe ready at {server.inference_url}")
            yield PerfEndpoints(
                url,
                url,
                {m: None for m in models},
                "torchserve",
                data,
                requests,
                f"{server.metrics_url}/metrics",
                batching,
                http_only="perf_analyzer measures TorchServe over HTTP only; use --protocol http",
                request_data=perf_data,
            )


#: Where the container reads its config.properties (as in a pod) and finds the build folder.
DOCKER_CONFIG = "/etc/torchserve/config.properties"
DOCKER_BUILD = "/models"


def docker_recipe(output: Path, *, http_port: int | None, grpc_port: int | None, metrics_port: int | None) -> str:
    """Shell lines that serve a TorchServe build in Docker, the way a pod runs it: the image (`repoforge image` and a
    docker build of its context when the build declares packages beyond the stock image, else the stock image),
    the build's config.properties made for a container (0.0.0.0 addresses, the stores under /models, and
    install_py_dep_per_model off on repoforge's image, which has the packages) written beside the build, then
    `docker run`. TorchServe loads only models at start, so the workflows are registered after it, with the
    management key TorchServe writes in the container."""
    build = output.resolve()
    if not (build / MANIFEST).is_file():
        raise TargetArgumentError(
            "REPOSITORY", f"{build} has no {MANIFEST}: --print-command reads a folder written by `repoforge build`"
        )
    info = build_info.describe_build(read_lock(build))
    plan = plan_image(info)
    if plan.legacy:
        raise legacy_error(plan)
    image = plan.tag if plan.needed else plan.base
    config = torchserve_config(DeploySpec(), info, image=image, root=DOCKER_BUILD)
    config_file = build.parent / f"{build.name}-docker.properties"
    http, grpc, metrics = http_port or 8080, grpc_port or 7070, metrics_port or 8082
    name = f"{dns_name(info.repository)}-torchserve"
    lines: list[str] = []
    if plan.needed:
        context = build.parent / f"{build.name}-image"
        lines += [
            f"# the build's handlers need {', '.join(plan.requirements)} beyond {plan.base}: build that image first",
            f"repoforge image {shlex.quote(str(build))} -o {shlex.quote(str(context))}",
            f"docker build -t {plan.tag} {shlex.quote(str(context))}",
        ]
    lines += [
        "# the build's config.properties for a container: 0.0.0.0 addresses, the stores under /models",
        f"cat > {shlex.quote(str(config_file))} <<'EOF'",
        *config.splitlines(),
        "EOF",
    ]
    argv = ["docker", "run", *(["--gpus", "all"] if info.device == "gpu" else []), "--rm", "--name", name,
            "-p", f"{http}:8080", "-p", f"{http + 1}:8081", "-p", f"{metrics}:8082",
            "-p", f"{grpc}:7070", "-p", f"{grpc + 1}:7071",
            "-v", f"{build}:{DOCKER_BUILD}", "-v", f"{config_file}:{DOCKER_CONFIG}:ro",
            image, "torchserve", "--start", "--foreground", "--ncs", f"--ts-config={DOCKER_CONFIG}"]  # fmt: skip
    lines.append(shlex.join(argv))
    workflows = [f"{w}.war" for w in info.versions.get("workflows") or []]
    if workflows:
        # TorchServe writes its keys to key_file.json in the folder it started in (the image's working directory)
        code = "import json; print(json.load(open('key_file.json'))['management']['key'])"
        key = f'docker exec {name} python -c "{code}"'
        lines.append(
            "# once it is up, register the workflows (TorchServe loads only models at start), from another shell:"
        )
        lines += [
            f'curl -X POST -H "Authorization: Bearer $({key})" "http://127.0.0.1:{http + 1}/workflows?url={w}"'
            for w in workflows
        ]
    return "\n".join(lines)


def answers_ping(http_url: str, timeout: float = 2.0) -> bool:
    """Whether TorchServe's inference API answers at `http_url` (host:port): /ping says its status, or, with token
    auth on (where /ping wants a key too), refuses in TorchServe's own words."""
    client = TorchServeClient(f"http://{http_url}", "", "")
    try:
        status, _headers, body = client.request("GET", "inference", "/ping", timeout=timeout)
        said = dict(json.loads(body or b"{}"))
    except (OSError, ValueError, TypeError):
        return False
    return (status == 200 and "status" in said) or said.get("type") == "InvalidKeyException"
