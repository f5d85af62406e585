"""`deploy` and `rollout`: a build into Kubernetes, and a candidate released on a live server."""

from __future__ import annotations

from pathlib import Path

import click

from repoforge.cli.common import Group, command, force_option, json_option, later, quiet_option


@click.group(cls=Group)
def deploy() -> None:
    """Deploy a build: Kubernetes manifests (k8s: autoscaling, alerts, a dashboard) or KServe (kserve)."""


@deploy.command(
    "k8s",
    kept="nothing was written to {output} (it is renamed into place only when complete)",
    run="repoforge.cli.run.release:deploy_k8s",
)
@click.argument("build_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "-o", "--output", required=True, type=click.Path(path_type=Path), help="Folder to write the manifests to."
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    callback=later("repoforge.cli.run.release:check_set"),
    metavar="KEY=VALUE",
    help="Override a deploy: field for this environment, e.g. --set replicas.max=12 (value read as YAML; repeatable).",
)
@force_option()
@json_option("Print the files written as JSON.")
@quiet_option()
def deploy_k8s(**_: object) -> None:
    """Write Kubernetes manifests for BUILD_DIR (a Triton or TorchServe build) into OUTPUT.

    Deployment, Services, PodDisruptionBudget, ServiceMonitor, KEDA ScaledObject, PrometheusRule and
    alerts.rules.yml, a Grafana dashboard (JSON and ConfigMap), kustomization.yaml and a README, from the
    spec's deploy: section recorded in the build. A bad value exits 2 naming the field; nothing is written.
    """


@deploy.command(
    "kserve",
    kept="nothing was written to {output} (it is renamed into place only when complete)",
    run="repoforge.cli.run.release:deploy_kserve",
)
@click.argument("build_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "-o", "--output", required=True, type=click.Path(path_type=Path), help="Folder to write the manifests to."
)
@click.option(
    "--storage-uri",
    callback=later("repoforge.cli.run.release:check_storage_uri"),
    default=None,
    metavar="URI",
    help="Where KServe downloads the build from (s3://, gs://, pvc://claim/path, https://, ...); default: "
    "deploy.model_repository (pvc://<name>-models unless set).",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    callback=later("repoforge.cli.run.release:check_set"),
    metavar="KEY=VALUE",
    help="Override a deploy: field for this environment, e.g. --set replicas.max=12 (repeatable).",
)
@force_option()
@json_option("Print the files written as JSON.")
@quiet_option()
def deploy_kserve(**_: object) -> None:
    """Write a KServe ServingRuntime and InferenceService for BUILD_DIR into OUTPUT.

    The runtime runs the build's server (Triton, or TorchServe for a .mar build) on the image `deploy k8s`
    would use; the InferenceService gets the storage URI, resources, min/max replicas, env and secrets from the
    spec's deploy: section. kubectl apply -k OUTPUT.
    """


@command(
    "image",
    kept="nothing was written to {output} (it is renamed into place only when complete)",
    run="repoforge.cli.run.release:image",
)
@click.argument("build_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "-o", "--output", required=True, type=click.Path(path_type=Path), help="Folder to write the build context to."
)
@force_option()
@json_option("Print what was written (or that nothing was needed) as JSON.")
@quiet_option()
def image(**_: object) -> None:
    """Write a Dockerfile and its complete context for BUILD_DIR's server image into OUTPUT.

    \b
    FROM the stock image the build targets (the NGC Triton release of its Triton version, or TorchServe's),
    plus exactly the Python packages the build declares per model (python_requirements in
    repoforge.lock.json). The model repository stays outside the image (mounted, or a storage URI). A build
    that declares nothing needs no image: it says so, writes nothing and exits 0.
      repoforge image repo -o image && docker build -t REGISTRY/NAME:TAG image && docker push REGISTRY/NAME:TAG
      repoforge deploy k8s repo -o k8s --set image=REGISTRY/NAME:TAG
    """


@command("rollout", run="repoforge.cli.run.release:rollout")
@click.argument("target")
@click.option("--router", default=None, help="The router plugin model that splits the traffic.")
@click.option("--candidate", default=None, help="The model being released: one of the router's routes.")
@click.option("--strategy", type=click.Choice(["canary", "blue-green"]), default="canary", show_default=True)
@click.option("--steps", default="5,25,50,100", show_default=True, help="canary: candidate percent per step, to 100.")
@click.option("--interval", default="30s", show_default=True, help="Length of each check (e.g. 500ms, 30s, 2m).")
@click.option(
    "--threshold", type=click.IntRange(min=1), default=2, show_default=True, help="Failed checks before rollback."
)
@click.option(
    "--max-error-rate",
    type=click.FloatRange(0, 1),
    default=0.01,
    show_default=True,
    help="Highest candidate error rate.",
)
@click.option(
    "--max-p99-ms",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Highest candidate p99 in ms, of each call as the router sees it; unset: not checked.",
)
@click.option(
    "--min-agreement",
    type=click.FloatRange(0, 1),
    default=0.99,
    show_default=True,
    help="Lowest shadow agreement with the primary (checked before any traffic where the router shadows it).",
)
@click.option(
    "--min-requests",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Fewest candidate requests (rows) per check; fewer is no data: a failed check.",
)
@click.option(
    "--shadow-requests", type=click.IntRange(min=0), default=None, help="blue-green: shadow rows before the switch."
)
@click.option("--keep-blue", default="10m", show_default=True, help="blue-green: how long blue stays loaded.")
@click.option(
    "--metrics-url",
    default=None,
    help="host:port of the server's metrics (default: read from the tritonserver process on this machine).",
)
@click.option(
    "--log",
    "log",
    type=click.Path(path_type=Path),
    default=Path("rollout.jsonl"),
    show_default=True,
    help="JSON Lines file; one line per check and one for the outcome are appended.",
)
@click.option(
    "--rollback",
    "do_rollback",
    is_flag=True,
    help="Send all traffic back now (to the router's spec weights; with --candidate: away from it), and exit.",
)
@json_option("Print the result (every check) as JSON on stdout.")
@quiet_option()
def rollout(**_: object) -> None:
    """Release CANDIDATE behind ROUTER on a live Triton, judged every --interval on the candidate's error rate,
    p99 and (before any traffic, where the router shadows it) agreement with the primary; rolled back after
    --threshold failed checks. Fewer than --min-requests in a check is no data: a failed check, never a pass.
    TARGET is a running server's HTTP host:port, or a build folder served for the run (its spec's `rollout:`
    section, when it has one, gives every option not on the command line).

    \b
    Exit 0: promoted; 1: rolled back (the reason names the metric and threshold), or a blue-green switch whose
    blue could not be unloaded ("incomplete"); 130: Ctrl-C, after rolling the candidate back; 2: bad input, e.g. blue-green on a server that cannot unload
    (serve it with --model-control explicit), or a metrics port that does not answer (--metrics-url).
    Every check prints one line and is appended to --log (JSON Lines).
      repoforge rollout 127.0.0.1:8000 --router router --candidate model_v2 --max-p99-ms 50
      repoforge rollout 127.0.0.1:8000 --router router --candidate green --strategy blue-green --keep-blue 10m
      repoforge rollout 127.0.0.1:8000 --router router --rollback     # back to the router's spec weights
    """
