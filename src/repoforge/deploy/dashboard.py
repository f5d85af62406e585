"""The Grafana dashboard: one timeseries panel per `Panel` of the catalog, every query as written in promql.py."""

from __future__ import annotations

import json
from typing import Any

from repoforge.deploy.promql import Catalog


def dashboard(name: str, catalog: Catalog) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    for i, p in enumerate(catalog.panels):
        panels.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": p.title,
                "description": p.description,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": [
                    {"refId": chr(ord("A") + j), "expr": q.expr, "legendFormat": q.legend or "__auto"}
                    for j, q in enumerate(p.queries)
                ],
            }
        )
    return {
        "uid": f"repoforge-{name}"[:40],
        "title": f"{name} (repoforge)",
        "tags": ["repoforge"],
        "schemaVersion": 39,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]
        },
        "panels": panels,
    }


def dashboard_json(name: str, catalog: Catalog) -> str:
    return json.dumps(dashboard(name, catalog), indent=2, ensure_ascii=False) + "\n"


def queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every query in a dashboard JSON (for the tests and for checking by hand)."""
    return [(p["title"], t["expr"]) for p in dash.get("panels", []) for t in p.get("targets", [])]
