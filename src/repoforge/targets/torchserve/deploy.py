"""TorchServe in KServe: the ServingRuntime's container, its config.properties ConfigMap and the workflows'
registration (deploy/kserve.py writes the rest; its Kubernetes shape is deploy/servers.py's `torchserve_shape`)."""

from __future__ import annotations

from typing import Any

from repoforge.deploy.build_info import BuildInfo
from repoforge.deploy.k8s import KSERVE_MOUNT, KServeRuntime, dump
from repoforge.deploy.servers import TORCHSERVE_PORTS, install_notes, torchserve_config, torchserve_config_objects
from repoforge.spec.deploy import DeploySpec


def kserve_runtime(info: BuildInfo, d: DeploySpec, name: str, image: str) -> KServeRuntime:
    # KServe fronts the pod (ingress, mesh): its inference port takes requests without TorchServe's token, and the
    # management API stays on the pod's loopback, where only the workflow registration uses it.
    config = torchserve_config(
        d, info, image=image, root=KSERVE_MOUNT, local=("management",), extra=("disable_token_authorization=true",)
    )
    ts = torchserve_config_objects(info, d, name, config)
    container: dict[str, Any] = {
        "name": "kserve-container",
        "image": image,
        "command": ["torchserve"],
        "args": ["--start", "--foreground", "--ncs", f"--ts-config={ts.mount.mount_path}/config.properties"],
        "ports": [{"containerPort": 8080, "name": "http1", "protocol": "TCP"}],
        "volumeMounts": [dump(ts.mount)],
        "readinessProbe": {"httpGet": {"path": "/ping", "port": 8080}, "periodSeconds": d.probes.period_s},
    }
    if ts.post_start:
        container["lifecycle"] = {"postStart": {"exec": {"command": ts.post_start}}}
    notes = [
        "Requests: TorchServe's own inference API on the InferenceService's URL (`POST <url>/predictions/<model>`"
        + (", `POST <url>/wfpredict/<workflow>`" if ts.workflows else "")
        + "). Token authorization is off here, because KServe's ingress is the door; the management API listens on "
        "the pod's loopback only.",
        *install_notes(info, image),
    ]
    if ts.workflows:
        notes.append(
            f"Workflows {', '.join(ts.workflows)} are registered by the container's postStart hook "
            "(`register_workflows.py` in the ConfigMap): the pod is not ready until they are."
        )
    return KServeRuntime(
        model_format="pytorch",
        protocols=None,
        container=container,
        metrics_port=dict(TORCHSERVE_PORTS)["metrics"],
        volumes=[dump(ts.volume)],
        objects=[dump(ts.config_map)],
        notes=notes,
    )
