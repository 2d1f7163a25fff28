"""The embedded default: every service in one process, each on its own port with its own
SQLite file, sharing an in-process cache and bus (still through each service's outbox and
inbox), seeded with a demo shop. `python -m services.suite run`."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from services import demo
from services.kit.auth import KeyRing
from services.kit.bus import InProcessBus
from services.kit.cache import LocalCache
from services.kit.config import ConfigError, Settings
from services.kit.server import RunningService, create_server, wait_for_signal
from services.kit.telemetry import setup_logging, setup_tracing
from services.membership import server as membership
from services.points import server as points

SERVICES = [membership, points]
log = logging.getLogger("loyalty.suite")


def start(settings: Settings, *, host: str) -> tuple[list[RunningService], InProcessBus]:
    cache, bus = LocalCache(), InProcessBus(dead_letter_dir=settings.data_dir / "dead-letters")
    keyring = KeyRing(settings.admin_key, settings.auth_secret)
    running = []
    for module in SERVICES:
        app = module.build_app(settings, cache=cache, keyring=keyring, bus=bus)
        running.append(create_server(app, bus=bus, keyring=keyring, host=host, port=settings.port(module.NAME),
                                     threads=settings.threads, access_log=settings.access_log, auto_migrate=True))
    return running, bus


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.suite")
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--no-seed", action="store_true", help="do not create the demo shop")
    args = parser.parse_args()
    try:
        settings = Settings.from_env(embedded=True)
    except ConfigError as exc:
        sys.exit(f"suite: {exc}")
    setup_logging(os.environ.get("LOYALTY_LOG_LEVEL", "WARNING").upper())
    setup_tracing("suite", settings.trace_exporter)
    host = os.environ.get("LOYALTY_HOST", "127.0.0.1")
    try:
        running, bus = start(settings, host=host)
    except OSError as exc:
        sys.exit(f"suite: {exc}")
    keys = demo.seed(settings, running[0].port) if not args.no_seed else None
    demo.print_banner(settings, running, keys)
    wait_for_signal()
    print("\nstopping: finishing in-flight calls…", flush=True)
    for service in running:
        service.stop(settings.grace_seconds)
    bus.close()
    print("stopped.", flush=True)


if __name__ == "__main__":
    main()
