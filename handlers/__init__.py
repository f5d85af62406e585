"""Files repoforge ships *into* TorchServe archives (.mar/.war). They stay thin: the logic lives in
`repoforge.torchserve.handler` / `repoforge.torchserve.workflow`, imported from the Python environment
TorchServe runs its workers with (repoforge must be installed there)."""
