"""Safe releases on a live Triton: canary steps or blue-green behind the router plugin, with automated rollback."""
