"""Triton in KServe: the ServingRuntime's container (deploy/kserve.py writes the rest; its Kubernetes shape is
deploy/servers.py's `triton_shape`)."""

from __future__ import annotations

from repoforge.deploy.build_info import BuildInfo
from repoforge.deploy.k8s import KSERVE_MOUNT, KServeRuntime
from repoforge.deploy.servers import triton_args
from repoforge.spec.deploy import DeploySpec

#: KServe routes HTTP to the container's port 8080; gRPC (v2) to 9000 for Triton, as its own Triton runtime does.
TRITON_KSERVE_PORTS = [("http", 8080), ("grpc", 9000), ("metrics", 8002)]


def kserve_runtime(info: BuildInfo, d: DeploySpec, name: str, image: str) -> KServeRuntime:
    args = triton_args(info, d, name, repository=KSERVE_MOUNT, ports=TRITON_KSERVE_PORTS)
    container = {
        "name": "kserve-container",
        "image": image,
        "command": ["tritonserver"],
        "args": args,
        "ports": [{"containerPort": 8080, "name": "http1", "protocol": "TCP"}],
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": 8080}, "periodSeconds": d.probes.period_s},
    }
    return KServeRuntime(
        model_format="triton",
        protocols=["v2", "grpc-v2"],
        container=container,
        metrics_port=8002,
        # Triton's Python backend exchanges tensors through /dev/shm (64 MiB in a pod by default)
        volumes=[{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}],
        objects=[],
        notes=[
            "Requests: KServe's v2 protocol, which is Triton's own HTTP/gRPC API "
            "(`POST <url>/v2/models/<model>/infer`).",
        ],
    )
