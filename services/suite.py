"""The embedded default: every service in one process, each on its own port with its own
SQLite file, sharing an in-process cache and bus (still through each service's outbox and
inbox), seeded with a demo shop. `python -m services.suite run`."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace

from gateway.app import DemoStorefront
from gateway.server import RunningGateway, start_in_thread
from services import demo, registry
from services.kit import client
from services.kit.auth import KeyRing
from services.kit.bus import InProcessBus
from services.kit.cache import LocalCache
from services.kit.config import ConfigError, GatewaySettings, Settings
from services.kit.server import RunningService, create_server, freeze_startup_objects, server_options, wait_for_signal
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


def start_gateway(settings: GatewaySettings, running: list[RunningService], *, seeded: bool) -> RunningGateway:
    """The HTTP gateway in a thread of this process, calling the services just started (and, with
    the demo seeded, serving the demo storefront page at /)."""
    upstreams = {service.app.name: f"127.0.0.1:{service.port}" for service in running}
    shop = DemoStorefront(demo.SHOP_ID, demo.MEMBER_BUYER_ID, demo.GUEST_BUYER_ID) if seeded else None
    try:
        return start_in_thread(replace(settings, upstreams=upstreams), demo=shop)
    except OSError as exc:
        sys.exit(f"suite: gateway on port {settings.port}: {exc}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.suite")
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--no-seed", action="store_true", help="do not create the demo shop")
    args = parser.parse_args()
    try:
        settings = Settings.from_env(embedded=True)
        gateway_settings = GatewaySettings.from_env(embedded=True)
    except ConfigError as exc:
        sys.exit(f"suite: {exc}")
    setup_logging(settings.log_level)
    setup_tracing("suite", settings.trace_exporter)
    try:
        running, bus = start(settings, host=settings.host)
    except OSError as exc:
        sys.exit(f"suite: {exc}")
    gateway = None
    try:
        keys = None
        if not args.no_seed:
            origins = (f"http://127.0.0.1:{gateway_settings.port}", f"http://localhost:{gateway_settings.port}")
            keys = demo.seed(settings, demo.membership_port(running), demo.port_of(running, "rewards"), origins,
                             segments_port=demo.port_of(running, "segments"))
        gateway = start_gateway(gateway_settings, running, seeded=keys is not None)
        demo.print_banner(settings, running, keys, gateway_url=gateway.url)
        freeze_startup_objects()
        wait_for_signal()
    except KeyboardInterrupt:  # Ctrl-C before the banner (while seeding): stop as cleanly
        pass
    print("\nstopping: finishing in-flight calls…", flush=True)
    if gateway is not None:
        gateway.stop()
    for service in running:
        service.stop(settings.grace_seconds)
    client.close_channels()
    bus.close()
    print("stopped.", flush=True)


if __name__ == "__main__":
    main()
