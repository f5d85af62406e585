# Shipped by repoforge into a TorchServe workflow archive (.war): the function nodes of an ensemble.
# torch-workflow-archiver copies single files only (no package folder), so the build pastes the node code
# (repoforge's runtime, torchserve/workflow.py) at the marker below and writes the ensemble's wiring:
# the archive needs no repoforge installed. (As a template, request_node/response_node are not defined yet.)
# ruff: noqa: F821
# mypy: ignore-errors
from __future__ import annotations

# REPOFORGE_WORKFLOW_CODE

WIRING: dict = {}  # REPOFORGE_WIRING


def rf_request(data, context):
    return request_node(data, context, WIRING)


def rf_response(data, context):
    return response_node(data, context, WIRING)
