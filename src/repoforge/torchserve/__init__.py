"""The TorchServe build: the same spec.yaml → `.mar` model archives (+ `.war` workflows for ensembles)
and a config.properties that real TorchServe serves (`builder.build_torchserve`).

`build_torchserve` needs only repoforge's own dependencies (torch for checking eager state_dicts);
`repoforge.torchserve.handler` runs inside TorchServe's workers and imports `ts`. Nothing is imported here, so
`layout` (what a TorchServe build looks like) stays light for lint and import.
"""
