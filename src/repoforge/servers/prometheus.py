"""A throw-away Prometheus (Debian's `prometheus` package) that scrapes given targets, for checking the queries
`repoforge deploy k8s` writes against the metrics a real server exports.

It listens on 127.0.0.1 on a free port, keeps its TSDB in a temp dir (removed on stop) and scrapes every
`scrape_interval`. Static targets carry the labels the Prometheus Operator would give a ServiceMonitor's
targets (`job`, `namespace`, `pod`), so the generated selectors match unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from .ports import free_port
from .process import ManagedProcess, ServerContext, ServerStartError

__all__ = ["PrometheusNotFoundError", "PrometheusServer", "find_prometheus"]


class PrometheusNotFoundError(FileNotFoundError):
    """prometheus is not installed; the message says how."""


def find_prometheus(name: str = "prometheus") -> Path:
    """`prometheus` (or `promtool`) on PATH or in /usr/bin."""
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/bin", "/usr/local/bin"]))
    if found is None:
        raise PrometheusNotFoundError(f"{name} not found; install it with `apt-get install prometheus`")
    return Path(found)


class PrometheusServer(ServerContext):
    """`with PrometheusServer([(host:port, labels)]) as p: p.query("up")`; stopped, data removed, on exit."""

    def __init__(
        self,
        targets: list[tuple[str, dict[str, str]]],
        *,
        scrape_interval: str = "1s",
        rule_files: list[Path] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.binary = find_prometheus()
        self.targets = targets
        self.scrape_interval = scrape_interval
        self.rule_files = list(rule_files or [])
        self.host = host
        self.port: int | None = None
        self._workdir: Path | None = None
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.alive

    def _config(self, workdir: Path) -> Path:
        cfg = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": labels.get("job", f"target{i}"),
                    "static_configs": [{"targets": [address], "labels": {k: v for k, v in labels.items() if k != "job"}}],
                }
                for i, (address, labels) in enumerate(self.targets)
            ],
        }  # fmt: skip
        path = workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        self._workdir = Path(tempfile.mkdtemp(prefix="repoforge-prometheus-"))
        self.port = free_port(self.host)
        argv = [
            str(self.binary),
            f"--config.file={self._config(self._workdir)}",
            f"--storage.tsdb.path={self._workdir / 'data'}",
            f"--web.listen-address={self.host}:{self.port}",
            "--storage.tsdb.retention.time=1h",
        ]
        proc = ManagedProcess(argv, log_path=self._workdir / "prometheus.log", cwd=self._workdir, name="prometheus")
        self._process = proc
        proc.start()
        try:
            proc.wait_until(self._ready, timeout, f"GET {self.url}/-/ready == 200")
        except ServerStartError:
            proc.stop(timeout=10)
            raise
        return self

    def _ready(self) -> bool:
        if not self.alive:
            return False
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
            return bool(resp.status == 200)

    def stop(self, timeout: float = 15.0) -> int | None:
        proc = self._process
        rc = proc.stop(timeout=timeout) if proc is not None else None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        return rc

    def log_tail(self, n_lines: int = 40) -> str:
        return self._process.log_tail(n_lines) if self._process is not None else ""

    def _get(self, path: str, params: dict[str, str], timeout: float = 10.0) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 400/422: a bad or failing query, with Prometheus' reason in the body
            raise RuntimeError(
                f"{path} {params}: HTTP {exc.code}: {exc.read().decode(errors='replace')[:500]}"
            ) from None
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """An instant query's result vector (`[{metric: {...}, value: [t, "v"]}, ...]`); RuntimeError on a bad query."""
        data = self._get("/api/v1/query", {"query": expr}, timeout)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else [{"value": data["result"]}]
        return result

    def targets_up(self) -> bool:
        """Every scrape target has been scraped and is up."""
        active = self._get("/api/v1/targets", {"state": "active"})["activeTargets"]
        return bool(active) and all(t.get("health") == "up" for t in active)

    def rules(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self._get("/api/v1/rules", {})["groups"]
        return groups
