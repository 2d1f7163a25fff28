"""Server bootstrap shared by every service: create_server() for tests and embedding, serve()
for a process, run_workers() for several processes on one port (SO_REUSEPORT). A health watcher
keeps the gRPC health answer true to whether the database can be reached, and watches consumer
lag."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.exc import DBAPIError

from services.kit import migrations
from services.kit.auth import KeyRing
from services.kit.bus import Bus
from services.kit.config import Settings
from services.kit.events import EventConsumer, OutboxRelay
from services.kit.interceptors import Admission, ServiceInterceptor
from services.kit.storage import Database, is_connection_error
from services.kit.telemetry import Outage

log = logging.getLogger("loyalty.server")


# Threads beyond the admitted and queued calls: health checks and refusals always find one.
_SPARE_THREADS = 2


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
    # Other databases it cannot answer without (membership's key store): health follows them too.
    also_needs: list[Database] = field(default_factory=list)

    @property
    def databases(self) -> list[Database]:
        return [self.db, *self.also_needs]


@dataclass
class RunningService:
    app: ServiceApp
    server: grpc.Server
    port: int
    health: health.HealthServicer
    relay: OutboxRelay
    bus: Bus
    watcher: HealthWatcher | None = None
    serving: bool = False

    def set_serving(self, serving: bool) -> None:
        self.serving = serving
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self.health.set("", status)
        self.health.set(self.app.full_name, status)

    def stop(self, grace: float) -> None:
        """Graceful: stop taking calls, let in-flight ones finish, then flush the outbox."""
        if self.watcher is not None:
            self.watcher.stop()
        for db in self.app.databases:
            db.on_reachability = None
        self.set_serving(False)
        self.server.stop(grace).wait()
        for worker in self.app.background:
            worker.stop()
        for consumer in self.app.consumers:
            consumer.stop()
        self.relay.stop()
        self.app.db.dispose()


def consumer_lag(app: ServiceApp, bus: Bus) -> list[dict[str, Any]]:
    """Events and seconds behind for each of the service's consumer groups."""
    lags = []
    for consumer in app.consumers:
        lag = bus.lag(consumer.stream, consumer.consumer)
        lags.append({"group": consumer.consumer, "stream": consumer.stream, "events_behind": lag.events,
                     "pending": lag.pending, "seconds_behind": round(lag.seconds, 3)})
    return lags


class HealthWatcher(threading.Thread):
    """Probes the databases every `interval` seconds (twice as often while it is away) and keeps
    health NOT_SERVING while one cannot be reached; a call that finds one gone flips health at
    once. Every `lag_interval` it also looks at consumer lag and logs one WARNING when a group
    falls more than `lag_warning_seconds` behind, and one when it has caught up."""

    def __init__(self, running: RunningService, *, interval: float = 1.0, lag_interval: float = 10.0,
                 lag_warning_seconds: float = 60.0):
        super().__init__(name=f"health-{running.app.name}", daemon=True)
        self.running, self.interval = running, interval
        self.lag_interval, self.lag_warning_seconds = lag_interval, lag_warning_seconds
        self._stopped = threading.Event()
        self._probe_failures = Outage(f"health probe of {running.app.name}", log)
        self._behind: set[str] = set()
        self._next_lag = time.monotonic() + lag_interval

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)

    def run(self) -> None:
        while not self._stopped.wait(self.interval if self.running.serving else self.interval / 2):
            reachable = self._probe()
            if reachable != self.running.serving:
                self.running.set_serving(reachable)
            if reachable and time.monotonic() >= self._next_lag:
                self._next_lag = time.monotonic() + self.lag_interval
                self._watch_lag()

    def _probe(self) -> bool:
        try:
            reachable = all(db.probe() for db in self.running.app.databases)
        except Exception as exc:  # a probe that fails in an unforeseen way must not kill the watcher
            self._probe_failures.failed(exc)
            return False
        self._probe_failures.recovered()
        return reachable

    def _watch_lag(self) -> None:
        try:
            lags = consumer_lag(self.running.app, self.running.bus)
        except Exception:  # the bus logs its own outages; lag is looked at again next time
            return
        for lag in lags:
            group = lag["group"]
            if lag["seconds_behind"] > self.lag_warning_seconds and group not in self._behind:
                self._behind.add(group)
                log.warning("consumer group %s is %d events (%.0f s) behind on %s", group, lag["events_behind"],
                            lag["seconds_behind"], lag["stream"], extra={"event": "consumer_lag", **lag})
            elif lag["seconds_behind"] <= self.lag_warning_seconds / 2 and group in self._behind:
                self._behind.discard(group)
                log.warning("consumer group %s caught up on %s", group, lag["stream"],
                            extra={"event": "consumer_caught_up", **lag})


def server_options(settings: Settings) -> dict[str, Any]:
    """create_server()'s limits and switches as the settings give them."""
    return {"threads": settings.threads, "max_in_flight": settings.max_in_flight or None,
            "max_queued": settings.max_queued or None, "queue_wait": settings.queue_wait_seconds,
            "access_log": settings.access_log, "access_log_sample": settings.access_log_sample,
            "slow_call_ms": settings.slow_call_ms, "auto_migrate": settings.auto_migrate,
            "lag_warning_seconds": settings.lag_warning_seconds}


def create_server(
    app: ServiceApp,
    *,
    bus: Bus,
    keyring: KeyRing,
    host: str = "127.0.0.1",
    port: int = 0,
    threads: int = 16,
    max_in_flight: int | None = None,
    max_queued: int | None = None,
    queue_wait: float = 0.5,
    reuse_port: bool = False,
    access_log: bool = True,
    access_log_sample: float = 0.01,
    slow_call_ms: float = 250.0,
    auto_migrate: bool = True,
    health_interval: float = 1.0,
    lag_warning_seconds: float = 60.0,
) -> RunningService:
    """Builds and starts the server (port 0 picks a free one). Health answers NOT_SERVING until
    the database has every migration; then the relay and consumers start and it answers SERVING
    for as long as the database can be reached.

    At most `max_in_flight` calls (default `threads`) run at once and `max_queued` (default
    `threads`) wait up to `queue_wait` seconds for a turn; beyond that a call is refused at once
    with UNAVAILABLE (reason OVERLOADED, with a RetryInfo). A few more threads than that are kept
    so that health checks answer even when every admitted call is stuck. The health watcher probes
    the database every `health_interval` seconds and logs consumer groups more than
    `lag_warning_seconds` behind."""
    in_flight = max_in_flight or threads
    queued = threads if max_queued is None else max_queued
    admission = Admission(service=app.name, limit=in_flight, queue=queued, wait=queue_wait)
    interceptor = ServiceInterceptor(
        service=app.name, keyring=keyring, admin_methods=app.admin_methods, access_log=access_log, admission=admission,
        access_log_sample=access_log_sample, slow_call_ms=slow_call_ms)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=in_flight + queued + _SPARE_THREADS,
                                   thread_name_prefix=f"{app.name}-rpc"),
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
    running = RunningService(app=app, server=server, port=bound, health=health_servicer, relay=relay, bus=bus)
    running.set_serving(False)
    server.start()
    _await_schema(app, auto_migrate)
    relay.start()
    for consumer in app.consumers:
        consumer.start()
    for worker in app.background:
        worker.start()
    running.set_serving(True)
    # A call that finds the database gone turns health NOT_SERVING at once; the watcher's probe
    # turns it back.
    for db in app.databases:
        db.on_reachability = lambda reachable: None if reachable else running.set_serving(False)
    running.watcher = HealthWatcher(running, interval=health_interval, lag_warning_seconds=lag_warning_seconds)
    running.watcher.start()
    return running


def freeze_startup_objects() -> None:
    """Once a serving process has started: what exists now (modules, the app, its statements and
    channels) lives as long as the process, so the garbage collector leaves it out of every later
    collection. A full collection walked all of it while holding the interpreter: 0.2 s in which
    no thread of the process ran, a few times a minute at a sale's rate."""
    gc.collect()
    gc.freeze()


def _await_schema(app: ServiceApp, auto_migrate: bool) -> None:
    if auto_migrate:
        migrations.upgrade(app.name, app.db.url)
        return
    waited = 0
    while True:
        try:
            if migrations.is_current(app.name, app.db.engine):
                app.db.outage.recovered()
                return
        except DBAPIError as exc:
            if not is_connection_error(exc):
                raise
            app.db.outage.failed(exc)
        else:
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

    def forward(signum: int, _frame: object) -> None:
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
