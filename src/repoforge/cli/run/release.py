"""What `deploy` and `rollout` run: the implementations, imported only when a command runs (declared, with their options
and help, in repoforge/cli/release.py, which `--help` and usage errors import alone)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from click.core import ParameterSource
from pydantic import ValidationError

from repoforge.cli.common import progress
from repoforge.deploy import command as k8s
from repoforge.deploy import image as server_image
from repoforge.deploy import kserve
from repoforge.rollout.command import check_target, resolve_policy
from repoforge.rollout.command import rollout as do_rollout
from repoforge.spec.rollout import parse_steps


def check_set(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """A malformed --set is a usage error (exit 2) before any work."""
    for v in values:
        try:
            k8s.parse_set(v)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return values


def deploy_k8s(build_dir: Path, output: Path, sets: tuple[str, ...], force: bool, as_json: bool, quiet: bool) -> None:
    """`repoforge deploy k8s` once its arguments are parsed."""
    result = k8s.deploy_k8s(build_dir, output, sets=sets, force=force, progress=progress(quiet or as_json))
    if quiet and not as_json:  # without -q the progress lines carried them
        for w in result.warnings:
            click.echo(f"  warning: {w}", err=True)
    if as_json:
        click.echo(k8s.as_json(result))
    else:
        click.echo(f"wrote {len(result.files)} files for the {result.target} build into {result.output}")
        click.echo(f"next: kubectl apply -k {output}")


def check_storage_uri(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A storage URI KServe cannot read is a usage error (exit 2) before any work."""
    if value is None:
        return None
    try:
        return kserve.check_storage_uri(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def deploy_kserve(
    build_dir: Path,
    output: Path,
    storage_uri: str | None,
    sets: tuple[str, ...],
    force: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """`repoforge deploy kserve` once its arguments are parsed."""
    result = kserve.deploy_kserve(
        build_dir,
        output,
        storage_uri=storage_uri,
        sets=sets,
        force=force,
        progress=progress(quiet or as_json),
    )
    if as_json:
        click.echo(kserve.as_json(result))
    else:
        click.echo(f"wrote {len(result.files)} files for the {result.target} build into {result.output}")
        click.echo(f"storage URI: {result.storage_uri} (upload the build there); next: kubectl apply -k {output}")


def image(build_dir: Path, output: Path, force: bool, as_json: bool, quiet: bool) -> None:
    """`repoforge image` once its arguments are parsed."""
    result = server_image.write_image(build_dir, output, force=force, progress=progress(quiet or as_json))
    if as_json:
        click.echo(server_image.as_json(result))
    elif result.output is None:
        click.echo(result.plan.stock_message())
    else:
        click.echo(f"wrote the {result.plan.target} image context ({len(result.files)} files) into {result.output}")
        click.echo(f"FROM {result.plan.base} + {', '.join(result.plan.requirements)}; next:")
        for line in result.plan.commands(str(output)):
            click.echo(f"  {line}")


def rollout(
    target: str,
    router: str | None,
    candidate: str | None,
    strategy: str,
    steps: str,
    interval: str,
    threshold: int,
    max_error_rate: float,
    max_p99_ms: float | None,
    min_agreement: float,
    min_requests: int,
    shadow_requests: int | None,
    keep_blue: str,
    metrics_url: str | None,
    log: Path,
    do_rollback: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """`repoforge rollout` once its arguments are parsed."""
    ctx = click.get_current_context()
    options = {
        "router": router, "candidate": candidate, "strategy": strategy, "steps": steps, "interval": interval,
        "threshold": threshold, "max_error_rate": max_error_rate, "max_p99_ms": max_p99_ms,
        "min_agreement": min_agreement, "min_requests": min_requests, "shadow_requests": shadow_requests,
        "keep_blue": keep_blue,
    }  # fmt: skip
    explicit = {k for k in options if ctx.get_parameter_source(k) not in (ParameterSource.DEFAULT, None)}
    try:
        check_target(target, metrics_url)
        policy = resolve_policy(target, {**options, "steps": parse_steps(steps)}, explicit)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise click.BadParameter(
            str(err["msg"]).removeprefix("Value error, "), param_hint=f"'--{str(err['loc'][0]).replace('_', '-')}'"
        ) from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--steps'") from None
    if policy.router is None:
        raise click.UsageError("Missing option '--router' (or a `rollout:` section in the build's spec).")
    if policy.candidate is None and not do_rollback:
        raise click.UsageError("Missing option '--candidate' (only --rollback goes without one).")
    say = progress(quiet or as_json)
    result = do_rollout(
        target, router=policy.router, candidate=policy.candidate, policy=policy, metrics_url=metrics_url, log=log,
        do_rollback=do_rollback, progress=(lambda m: click.echo(m, err=True)) if say else None,
    )  # fmt: skip
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(f"{result.outcome}: {result.reason}")
    sys.exit(0 if do_rollback else result.exit_code)
