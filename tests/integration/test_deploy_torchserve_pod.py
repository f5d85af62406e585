"""What a TorchServe pod of `deploy k8s` runs to register the build's workflows (TorchServe loads only models at
start): the `register_workflows.py` of the generated ConfigMap, run as the postStart hook runs it (in the folder
TorchServe started in, with its key_file.json), registers the build's .war in a real TorchServe with token
authorization on, and the workflow then answers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from deploy_helpers import _ts_spec

from repoforge.build import build
from repoforge.deploy.command import deploy_k8s
from repoforge.servers.torchserve import TorchServeServer

pytestmark = pytest.mark.integration


def test_the_pods_hook_registers_the_workflows(tmp_path: Path) -> None:
    b = build(_ts_spec(tmp_path), tmp_path / "build", target="torchserve", device="cpu").output
    out = deploy_k8s(b, tmp_path / "k8s").output
    cm = next(yaml.safe_load_all((out / "server-config.yaml").read_text()))
    script = cm["data"]["register_workflows.py"]
    ts = TorchServeServer(b, workflows=None, workdir=tmp_path / "work")  # models only, as the pod starts
    with ts:
        assert "pipeline" not in str(ts.keys()) and ts.keys()  # token auth on: the hook must use the key
        config = tmp_path / "config.properties"  # the pod's config, with this server's management port
        config.write_text(
            cm["data"]["config.properties"].replace(
                "management_address=http://0.0.0.0:8081", f"management_address=http://0.0.0.0:{ts.ports.management}"
            )
        )
        hook = tmp_path / "register_workflows.py"
        hook.write_text(script.replace("/etc/torchserve/config.properties", str(config)))
        # bounded by the hook's own deadline (the pod's startup timeout less 30 s: 570 s), not a tighter one of the
        # test's: registering starts the workflow's model workers (each imports torch), 27 s of an 81 s run at load 10
        r = subprocess.run([sys.executable, str(hook)], cwd=ts.workdir, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr + ts.log_tail(30)
        assert "registered pipeline.war" in r.stdout
        answer = ts.wfpredict("pipeline", {"input": [[0.1] * 8]})
        assert "probabilities" in answer, answer
        again = subprocess.run([sys.executable, str(hook)], cwd=ts.workdir, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stdout + again.stderr  # a restarted hook: already registered is fine
