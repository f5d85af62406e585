"""Code that runs inside TorchServe's workers: the handler of every .mar repoforge builds, the function nodes of its
workflows, and the eager (state_dict) loader. Imports `ts` and torch only where TorchServe provides them."""
