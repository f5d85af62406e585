"""The TorchServe target: everything repoforge does differently for TorchServe (`target.TorchServeTarget`).

`serve` starts TorchServe for serve and perf, `validate` checks a build in it; the archives themselves are
built by `repoforge.torchserve`.
"""
