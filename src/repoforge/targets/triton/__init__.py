"""The NVIDIA Triton target: everything repoforge does differently for Triton (`target.TritonTarget`).

`serve` starts tritonserver for serve/perf/batch/rollout, `validate` checks a repository in it, and the build
itself, the config codec and the load rules live in `repoforge.triton` and `repoforge.lint`.
"""
