"""The embedded default: every service in one process, each on its own port with its own
SQLite file, sharing an in-process cache and bus (still through each service's outbox and
inbox), seeded with a demo shop. `python -m services.suite run`."""

from __future__ import annotations

import argparse
import logging
import sys

from services import demo, registry
from services.kit import client
from services.kit.auth import KeyRing
from services.kit.bus import InProcessBus
from services.kit.cache import LocalCache
from services.kit.config import ConfigError, Settings
from services.kit.server import RunningService, create_server, server_options, wait_for_signal
from services.kit.telemetry import setup_logging, setup_tracing

log = logging.getLogger("loyalty.suite")


def start(settings: Settings, *, host: str) -> tuple[list[RunningService], InProcessBus]:
    cache, bus = LocalCache(), InProcessBus(dead_letter_dir=settings.data_dir / "dead-letters")
    keyring = KeyRing(settings.admin_key, settings.auth_secret)
    running = []
    for entry in registry.SERVICES:
        app = entry.server().build_app(settings, cache=cache, keyring=keyring, bus=bus)
        options = server_options(settings) | {"auto_migrate": True}
        running.append(create_server(app, bus=bus, keyring=keyring, host=host, port=settings.port(entry.name),
                                     **options))
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
    setup_logging(settings.log_level)
    setup_tracing("suite", settings.trace_exporter)
    try:
        running, bus = start(settings, host=settings.host)
    except OSError as exc:
        sys.exit(f"suite: {exc}")
    try:
        keys = None
        if not args.no_seed:
            keys = demo.seed(settings, demo.membership_port(running), demo.port_of(running, "rewards"))
        demo.print_banner(settings, running, keys)
        wait_for_signal()
    except KeyboardInterrupt:  # Ctrl-C before the banner (while seeding): stop as cleanly
        pass
    print("\nstopping: finishing in-flight calls…", flush=True)
    for service in running:
        service.stop(settings.grace_seconds)
    client.close_channels()
    bus.close()
    print("stopped.", flush=True)


if __name__ == "__main__":
    main()
