# Shipped by repoforge into a TorchServe workflow archive (.war): the function nodes of an ensemble.
# The logic lives in repoforge.torchserve.workflow; the line below is the ensemble's wiring, written
# at build time.
from repoforge.torchserve import workflow as _wf

WIRING: dict = {}  # REPOFORGE_WIRING


def rf_request(data, context):
    return _wf.request_node(data, context, WIRING)


def rf_response(data, context):
    return _wf.response_node(data, context, WIRING)
