"""Real server processes for repoforge: tritonserver, redis-server (and later torchserve).

Everything here starts genuine servers as child processes that repoforge owns: each gets its own
process group and log file, is stopped and reaped reliably, and a failed start raises
``ServerStartError`` carrying the command, exit code and the tail of the server's log.
"""

from .ports import free_port, free_ports, port_is_free
from .process import ManagedProcess, ServerContext, ServerStartError, group_pids, pid_alive
from .redis import RedisNotFoundError, RedisServer, find_redis_server, redis_ping
from .torchserve import TorchServeAPIError, TorchServeNotFoundError, TorchServeServer
from .triton import (
    NGC_IMAGE,
    TritonAPIError,
    TritonInstall,
    TritonNotFoundError,
    TritonOptions,
    TritonServer,
    find_tritonserver,
    harmless_log_line,
    parse_failed_models,
    prepare_backend_dir,
    server_env,
)

__all__ = [
    "NGC_IMAGE",
    "ManagedProcess",
    "RedisNotFoundError",
    "RedisServer",
    "ServerContext",
    "ServerStartError",
    "TorchServeAPIError",
    "TorchServeNotFoundError",
    "TorchServeServer",
    "TritonAPIError",
    "TritonInstall",
    "TritonNotFoundError",
    "TritonOptions",
    "TritonServer",
    "find_redis_server",
    "find_tritonserver",
    "free_port",
    "free_ports",
    "group_pids",
    "harmless_log_line",
    "parse_failed_models",
    "pid_alive",
    "port_is_free",
    "prepare_backend_dir",
    "redis_ping",
    "server_env",
]
