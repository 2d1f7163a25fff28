"""The command line of one service in production: `serve` (N workers on one port), `migrate`
(apply its migrations, for a Kubernetes Job or compose one-shot) and `status` (health, database
and consumer lag as JSON, for an operator or a monitoring check)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.exc import DBAPIError

from services.kit import migrations
from services.kit.auth import KeyRing
from services.kit.bus import make_bus
from services.kit.cache import make_cache
from services.kit.config import ConfigError, Settings
from services.kit.server import (
    ServiceApp,
    consumer_lag,
    create_server,
    freeze_startup_objects,
    run_workers,
    server_options,
    wait_for_signal,
)
from services.kit.telemetry import setup_logging, setup_tracing

log = logging.getLogger("loyalty.main")
AppBuilder = Callable[..., ServiceApp]


def service_main(name: str, build_app: AppBuilder, argv: list[str] | None = None, *,
                 commands: dict[str, Callable[[Settings], str]] | None = None) -> None:
    """`serve`, `migrate`, `status`, and the service's own one-shot `commands` (for CronJobs)."""
    commands = commands or {}
    parser = argparse.ArgumentParser(prog=f"python -m services.{name}")
    parser.add_argument("command", choices=["serve", "migrate", "status", *commands])
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(embedded=False, service=name)
    except ConfigError as exc:
        sys.exit(f"{name}: {exc}")
    setup_logging(settings.log_level)
    if args.command == "migrate":
        migrations.upgrade(name, settings.db_url(name))
        log.info("migrations applied", extra={"service": name})
        return
    if args.command == "status":
        report = service_status(name, build_app, settings)
        print(json.dumps(report, indent=2))
        sys.exit(0 if report["health"] == "SERVING" and report["database"] == "reachable" else 1)
    if args.command in commands:
        log.warning(commands[args.command](settings), extra={"service": name, "command": args.command})
        return
    if settings.workers > 1 and not settings.redis_url:
        sys.exit(f"{name}: LOYALTY_WORKERS > 1 needs LOYALTY_REDIS_URL (caches and the bus must be shared)")

    def serve() -> None:
        # Everything gRPC is created here, after the fork.
        setup_tracing(name, settings.trace_exporter)
        cache = make_cache(settings.redis_url, near_entries=settings.near_cache_entries)
        bus = make_bus(settings.redis_url, read_count=settings.bus_read_count)
        keyring = KeyRing(settings.admin_key, settings.auth_secret)
        app = build_app(settings, cache=cache, keyring=keyring, bus=bus)
        running = create_server(app, bus=bus, keyring=keyring, host=settings.host, port=settings.port(name),
                                reuse_port=settings.workers > 1, **server_options(settings))
        freeze_startup_objects()
        log.info("serving", extra={"service": name, "port": running.port})
        wait_for_signal()
        log.info("shutting down", extra={"service": name})
        running.stop(settings.grace_seconds)
        bus.close()

    run_workers(settings.workers, serve)


def service_status(name: str, build_app: AppBuilder, settings: Settings) -> dict[str, Any]:
    """The running service's health answer, whether its database answers, and each consumer
    group's lag (events and seconds behind) on the shared bus."""
    cache, bus = make_cache(settings.redis_url), make_bus(settings.redis_url)
    try:
        app = build_app(settings, cache=cache, keyring=KeyRing(settings.admin_key, settings.auth_secret), bus=bus)
    except DBAPIError:  # a database it opens while it is built (membership's key store) is away
        bus.close()
        return {"service": name, "health": _health(settings, name), "database": "unreachable"}
    try:
        report: dict[str, Any] = {"service": name, "health": _health(settings, name)}
        report["database"] = "reachable" if all(db.probe() for db in app.databases) else "unreachable"
        if report["database"] == "reachable":
            report["schema"] = "current" if migrations.is_current(name, app.db.engine) else "behind"
        if settings.redis_url:  # embedded consumers are fed inside the serving process: never behind
            try:
                report["consumers"] = consumer_lag(app, bus)
            except redis.RedisError as exc:
                report["consumers"] = f"unknown: redis unreachable ({exc})"
        return report
    finally:
        for db in app.databases:
            db.dispose()
        bus.close()


def _health(settings: Settings, name: str) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    with grpc.insecure_channel(f"{host}:{settings.port(name)}") as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError:
            return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
