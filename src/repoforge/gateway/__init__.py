"""A streaming and asynchronous front for Triton: SSE and WebSocket streams that cancel on disconnect, a
synchronous `/infer` with a timeout, and a Redis Streams queue with workers that loses nothing.

The gateway holds one gRPC stream to Triton per client request (`tritonclient.grpc.aio`), so a client that goes
away cancels the request inside Triton. `app` is the ASGI app, `queue` the Redis side (submit, read, work),
`command` the `gateway` and `worker` commands as functions.
"""
