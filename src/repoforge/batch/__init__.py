"""`repoforge batch`: score a data set offline through the built repository, resumable exactly once.

`command.batch` is the whole command; `source` reads DATA by row range, `convert` turns columns into inputs and
outputs into columns, `scorer` sends the requests, `store` writes shards and the manifest, and `local` /
`ray_engine` are the two engines that drive them.
"""

from repoforge.batch.command import BatchResult, batch

__all__ = ["BatchResult", "batch"]
