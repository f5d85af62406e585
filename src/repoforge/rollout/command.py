"""`repoforge rollout`: release a candidate behind a router on a live Triton, promoting it or rolling it back.

TARGET is a running server's HTTP `host:port` (its metrics port read from the tritonserver process on this machine
unless `metrics_url` is given) or a build folder, served for the run in explicit model control (so blue-green can
load and unload) with every model loaded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repoforge.errors import ArgumentError, RepoforgeError
from repoforge.output import MANIFEST
from repoforge.rollout.controller import Rollout, RolloutResult, rollback
from repoforge.rollout.server import RolloutInputError, RouterServer, ServerError
from repoforge.servers.discover import other_port
from repoforge.spec.rollout import RolloutSpec
from repoforge.targets import target_of
from repoforge.triton.inputs import make_inputs

Say = Callable[[str], None]
_HOSTPORT = re.compile(r"^(?:https?://)?([A-Za-z0-9.\-]+|\[[0-9a-fA-F:]+\]):([0-9]{1,5})/?$")


RolloutArgumentError = ArgumentError  # found before any weight changes: the one ArgumentError (exit 2)


class RolloutFailed(RepoforgeError):
    """The server could not be driven (it refused a control request, or its metrics did not answer)."""

    exit_code = 1


@dataclass(frozen=True)
class Endpoint:
    http_url: str  # host:port
    metrics_url: str  # host:port


def host_port(text: str, param: str) -> tuple[str, int]:
    m = _HOSTPORT.match(text.strip())
    if not m or not 0 < int(m.group(2)) < 65536:
        raise RolloutArgumentError(param, f"expected host:port such as 127.0.0.1:8000 (got {text!r})")
    return m.group(1), int(m.group(2))


def check_target(target: str | Path, metrics_url: str | None) -> None:
    """TARGET is a build folder or host:port; both checked before anything starts."""
    path = Path(target)
    if path.is_dir():
        try:
            why = target_of(path).cannot("rollout", path)
        except Exception as exc:  # noqa: BLE001 - worded as a usage error
            raise RolloutArgumentError("TARGET", str(exc)) from None
        if why:
            raise RolloutArgumentError("TARGET", why)
        if metrics_url is not None:
            raise RolloutArgumentError("--metrics-url", "--metrics-url is for a running server, not a build folder")
        return
    host_port(str(target), "TARGET")
    if metrics_url is not None:
        host_port(metrics_url, "--metrics-url")


@contextmanager
def endpoint(target: str | Path, metrics_url: str | None, say: Say) -> Iterator[Endpoint]:
    path = Path(target)
    if not path.is_dir():
        host, port = host_port(str(target), "TARGET")
        yield Endpoint(f"{host}:{port}", metrics_endpoint(host, port, metrics_url, say))
        return
    with target_of(path).rollout_endpoint(path, say) as served:
        yield Endpoint(served.http_url, served.metrics_url)


def metrics_endpoint(host: str, port: int, metrics_url: str | None, say: Say) -> str:
    """The metrics host:port of the Triton whose HTTP API is host:port: `metrics_url`, else the port the
    tritonserver process on this machine was started with (Triton's HTTP API does not say). A port that does not
    answer, or one that cannot be read, is a usage error naming --metrics-url."""
    given = None
    if metrics_url is not None:
        mhost, mport = host_port(metrics_url, "--metrics-url")
        given = f"{mhost}:{mport}"
    found = other_port(f"{host}:{port}", "metrics", given, "--metrics-url")
    if found.problem == "unreadable":
        raise RolloutArgumentError(
            "--metrics-url",
            f"cannot read the metrics port of the server at {host}:{port} (not a tritonserver on this machine); "
            "pass its metrics host:port with --metrics-url",
        )
    if found.problem == "off":
        raise RolloutArgumentError(
            "--metrics-url",
            f"the tritonserver at {host}:{port} (pid {found.pid}) runs with --allow-metrics=false; rollout judges "
            "the router's metrics: start it with metrics on, and pass --metrics-url if they are elsewhere",
        )
    if given is None:
        say(f"metrics at {found.address} ({found.where})")
    if found.problem == "silent":
        raise RolloutArgumentError(
            "--metrics-url", f"nothing answers at {found.address} (the metrics port, {found.where}); pass the right one "
            "with --metrics-url host:port"
        )  # fmt: skip
    return found.address


def recorded_policy(target: str | Path) -> dict[str, Any] | None:
    """The `rollout:` section a build folder's lock file recorded (None for a server, or a build without one)."""
    lock = Path(target) / MANIFEST
    if not lock.is_file():
        return None
    try:
        recorded = json.loads(lock.read_text()).get("rollout")
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def resolve_policy(target: str | Path, options: dict[str, Any], explicit: set[str]) -> RolloutSpec:
    """The options given on the command line, over a build folder's recorded `rollout:`, over the defaults:
    the spec that `deploy k8s` turns into Flagger/Argo policy then also drives a live rollout of that build."""
    values = dict(options)
    for key, value in (recorded_policy(target) or {}).items():
        if key not in explicit:
            values[key] = value
    return RolloutSpec.model_validate(values)


def _router(ep: Endpoint, router: str, candidate: str | None) -> RouterServer:
    try:
        server = RouterServer(ep.http_url, ep.metrics_url, router)
    except RolloutInputError as exc:
        raise RolloutArgumentError(exc.param, str(exc)) from None
    except ServerError as exc:
        raise RolloutFailed(str(exc)) from None
    if candidate is None:
        return server
    if candidate not in server.route_names:
        raise RolloutArgumentError(
            "--candidate",
            f"router '{router}' does not route to '{candidate}'; its routes: {', '.join(server.route_names)}",
        )
    if not [n for n in server.route_names if n != candidate]:
        raise RolloutArgumentError("--candidate", f"router '{router}' has no route besides '{candidate}'")
    return server


def rollout(
    target: str | Path,
    *,
    router: str,
    candidate: str | None,
    policy: RolloutSpec,
    metrics_url: str | None = None,
    log: str | Path | None = None,
    do_rollback: bool = False,
    progress: Say | None = None,
) -> RolloutResult:
    """Run the release (or, with `do_rollback`, send all traffic back at once: to the router's spec weights, or
    to its routes other than `candidate`)."""
    say = progress or (lambda _m: None)
    check_target(target, metrics_url)
    with endpoint(target, metrics_url, say) as ep:
        server = _router(ep, router, candidate)
        if policy.strategy == "blue-green" and not do_rollback:
            refused = server.unload_refused()
            if refused is not None:
                raise RolloutArgumentError(
                    "TARGET", f"the server at {ep.http_url} cannot unload models ({refused}), and blue-green unloads "
                    "blue after the switch: serve it with `repoforge serve REPO --model-control explicit` "
                    "(tritonserver --model-control-mode=explicit), or release with --strategy canary"
                )  # fmt: skip
        try:
            if do_rollback:
                weights = rollback(server, candidate, say)
                what = f"{candidate} at 0%" if candidate else "the router's spec weights"
                return RolloutResult("rolled back", f"{what} by request", candidate or "", weights)
            if candidate is None:
                raise RolloutArgumentError(
                    "--candidate", "--candidate is needed to release (only --rollback goes without)"
                )
            run = Rollout(server, candidate, policy, say=say, log=Path(log) if log else None)
            return run.run(lambda model: smoke(server, model))
        except ServerError as exc:
            raise RolloutFailed(str(exc)) from None


def smoke(server: RouterServer, model: str) -> None:
    """Like `validate`: one request built from the config the server serves must be answered with every output."""
    cfg = server.model_config(model)
    got = server.infer(model, make_inputs(cfg, batch_size=1, seed=0))
    missing = [o.name for o in cfg.output if o.name not in got]
    if missing:
        raise ServerError(f"{model} answered without {', '.join(missing)}")
