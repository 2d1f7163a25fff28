"""Server bootstrap shared by every service: create_server() for tests and embedding, serve()
for a process, run_workers() for several processes on one port (SO_REUSEPORT)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.kit import migrations
from services.kit.auth import KeyRing
from services.kit.bus import Bus
from services.kit.events import EventConsumer, OutboxRelay
from services.kit.interceptors import ServiceInterceptor
from services.kit.storage import Database

log = logging.getLogger("loyalty.server")


class Worker(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class ServiceApp:
    """One service as the kit runs it: its database, servicer, and event plumbing."""

    name: str
    full_name: str  # e.g. loyalty.membership.v1.MembershipService
    db: Database
    servicer: object
    add_to_server: Callable[[object, grpc.Server], None]
    admin_methods: frozenset[str] = frozenset()
    consumers: list[EventConsumer] = field(default_factory=list)
    # Threads of the service's own (schedulers, sweepers): start() once serving, stop() first.
    background: list[Worker] = field(default_factory=list)


@dataclass
class RunningService:
    app: ServiceApp
    server: grpc.Server
    port: int
    health: health.HealthServicer
    relay: OutboxRelay

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self.health.set("", status)
        self.health.set(self.app.full_name, status)

    def stop(self, grace: float) -> None:
        """Graceful: stop taking calls, let in-flight ones finish, then flush the outbox."""
        self.set_serving(False)
        self.server.stop(grace).wait()
        for worker in self.app.background:
            worker.stop()
        for consumer in self.app.consumers:
            consumer.stop()
        self.relay.stop()
        self.app.db.dispose()


def create_server(
    app: ServiceApp,
    *,
    bus: Bus,
    keyring: KeyRing,
    host: str = "127.0.0.1",
    port: int = 0,
    threads: int = 16,
    reuse_port: bool = False,
    access_log: bool = True,
    auto_migrate: bool = True,
) -> RunningService:
    """Builds and starts the server (port 0 picks a free one). Health answers NOT_SERVING until
    the database has every migration; then the relay and consumers start and it answers SERVING."""
    interceptor = ServiceInterceptor(
        service=app.name, keyring=keyring, admin_methods=app.admin_methods, access_log=access_log
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"{app.name}-rpc"),
        interceptors=[interceptor],
        options=[("grpc.so_reuseport", 1 if reuse_port else 0), ("grpc.max_receive_message_length", 16 << 20)],
    )
    app.add_to_server(app.servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((app.full_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"{app.name}: cannot listen on {host}:{port} (in use?)")
    relay = OutboxRelay(app.db, bus)
    app.db.on_events_committed = relay.wake
    running = RunningService(app=app, server=server, port=bound, health=health_servicer, relay=relay)
    running.set_serving(False)
    server.start()
    _await_schema(app, auto_migrate)
    relay.start()
    for consumer in app.consumers:
        consumer.start()
    for worker in app.background:
        worker.start()
    running.set_serving(True)
    return running


def _await_schema(app: ServiceApp, auto_migrate: bool) -> None:
    if auto_migrate:
        migrations.upgrade(app.name, app.db.url)
        return
    waited = 0.0
    while not migrations.is_current(app.name, app.db.engine):
        if waited % 30 == 0:
            log.warning("%s: database schema is behind; waiting for `migrate` to run", app.name)
        time.sleep(1)
        waited += 1


def wait_for_signal() -> None:
    """Blocks until SIGTERM or SIGINT (Ctrl-C)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(3600):
        pass


def run_workers(count: int, target: Callable[[], None]) -> None:
    """Runs `target` in `count` forked processes sharing the port through SO_REUSEPORT. Forks
    before any gRPC object exists (gRPC does not survive a fork)."""
    if count <= 1:
        target()
        return
    children: list[int] = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            try:
                target()
            finally:
                os._exit(0)
        children.append(pid)

    def forward(signum, _frame):  # noqa: ANN001
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        status = status or os.waitstatus_to_exitcode(code)
    sys.exit(status)
