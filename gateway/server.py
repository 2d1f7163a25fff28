"""Running the gateway: `python -m gateway serve` (production: uvicorn, LOYALTY_GATEWAY_WORKERS
processes on one port), or in a thread of the embedded suite (`make run`) and the tests."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from gateway.app import DemoStorefront, create_app
from services.kit.config import GatewaySettings


def app_from_env() -> FastAPI:
    """uvicorn's factory in production (each worker process builds its own app)."""
    return create_app(GatewaySettings.from_env(embedded=False))


def serve(settings: GatewaySettings) -> None:
    uvicorn.run("gateway.server:app_from_env", factory=True, host=settings.host, port=settings.port,
                workers=settings.workers, loop="uvloop", http="httptools", access_log=settings.access_log,
                log_level=settings.log_level.lower(), proxy_headers=True, timeout_graceful_shutdown=10)


@dataclass
class RunningGateway:
    server: uvicorn.Server
    thread: threading.Thread
    port: int
    app: FastAPI

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def start_in_thread(settings: GatewaySettings, *, demo: DemoStorefront | None = None,
                    port: int | None = None) -> RunningGateway:
    """Starts the gateway in a daemon thread with its own event loop; port 0 picks a free one.
    Returns once it accepts connections."""
    app = create_app(settings, demo=demo)
    # IPPROTO_TCP named, or asyncio leaves Nagle's algorithm on for the accepted connections (it
    # sets TCP_NODELAY only on sockets whose proto is TCP): every keep-alive answer then waits
    # ~40 ms for the client's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port if port is None else port))
    config = uvicorn.Config(app, loop="asyncio", http="httptools", access_log=False, log_level="warning",
                            lifespan="on", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), name="gateway",
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.02)
    return RunningGateway(server, thread, sock.getsockname()[1], app)
