"""The floor of an RPC: a grpcio server with the services' thread pool and options, serving only
the standard health Check, with no interceptor. `python -m bench.noop PORT` (LOYALTY_WORKERS
processes on the port through SO_REUSEPORT, LOYALTY_THREADS threads each, as `serve` runs)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def serve(port: int, threads: int, reuse_port: bool) -> None:
    """Serves until SIGTERM or SIGINT."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="noop-rpc"),
        options=[("grpc.so_reuseport", 1 if reuse_port else 0), ("grpc.max_receive_message_length", 16 << 20)],
    )
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        sys.exit(f"noop: cannot listen on 127.0.0.1:{port}")
    server.start()
    stop.wait()
    server.stop(1).wait()


def main() -> None:
    port = int(sys.argv[1])
    workers = int(os.environ.get("LOYALTY_WORKERS", "1"))
    threads = int(os.environ.get("LOYALTY_THREADS", "16"))
    if workers <= 1:
        serve(port, threads, reuse_port=False)
        return
    # Fork before any gRPC object exists, as the services' `serve` does.
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            try:
                serve(port, threads, reuse_port=True)
            finally:
                os._exit(0)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        os.waitpid(child, 0)


if __name__ == "__main__":
    main()
