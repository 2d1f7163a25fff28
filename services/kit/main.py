"""The command line of one service in production: `serve` (N workers on one port) and
`migrate` (apply its migrations, for a Kubernetes Job or compose one-shot)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from services.kit import migrations
from services.kit.auth import KeyRing
from services.kit.bus import make_bus
from services.kit.cache import make_cache
from services.kit.config import ConfigError, Settings
from services.kit.server import ServiceApp, create_server, run_workers, wait_for_signal
from services.kit.telemetry import setup_logging, setup_tracing

log = logging.getLogger("loyalty.main")
AppBuilder = Callable[..., ServiceApp]


def service_main(name: str, build_app: AppBuilder, argv: list[str] | None = None, *,
                 commands: dict[str, Callable[[Settings], str]] | None = None) -> None:
    """`serve`, `migrate`, and the service's own one-shot `commands` (for CronJobs)."""
    commands = commands or {}
    parser = argparse.ArgumentParser(prog=f"python -m services.{name}")
    parser.add_argument("command", choices=["serve", "migrate", *commands])
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(embedded=False)
    except ConfigError as exc:
        sys.exit(f"{name}: {exc}")
    setup_logging(settings.log_level)
    if args.command == "migrate":
        migrations.upgrade(name, settings.db_url(name))
        log.info("migrations applied", extra={"service": name})
        return
    if args.command in commands:
        log.warning(commands[args.command](settings), extra={"service": name, "command": args.command})
        return
    if settings.workers > 1 and not settings.redis_url:
        sys.exit(f"{name}: LOYALTY_WORKERS > 1 needs LOYALTY_REDIS_URL (caches and the bus must be shared)")

    def serve() -> None:
        # Everything gRPC is created here, after the fork.
        setup_tracing(name, settings.trace_exporter)
        cache = make_cache(settings.redis_url)
        bus = make_bus(settings.redis_url)
        keyring = KeyRing(settings.admin_key, settings.auth_secret)
        app = build_app(settings, cache=cache, keyring=keyring, bus=bus)
        running = create_server(app, bus=bus, keyring=keyring,
                                host=settings.host, port=settings.port(name), threads=settings.threads,
                                reuse_port=settings.workers > 1, access_log=settings.access_log,
                                auto_migrate=settings.auto_migrate)
        log.info("serving", extra={"service": name, "port": running.port})
        wait_for_signal()
        log.info("shutting down", extra={"service": name})
        running.stop(settings.grace_seconds)
        bus.close()

    run_workers(settings.workers, serve)
