"""Function nodes of the TorchServe workflows repoforge builds (they run inside TorchServe: the code lives in
`repoforge.runtime.torchserve.workflow`, shipped in every .war); re-exported here."""

from repoforge.runtime.torchserve.workflow import request_node, response_node

__all__ = ["request_node", "response_node"]
