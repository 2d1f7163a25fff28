"""`python -m gateway serve`: the HTTP gateway in production shape (the settings come from the
environment; README's configuration section lists them)."""

from __future__ import annotations

import argparse
import sys

from gateway.server import serve
from services.kit.config import ConfigError, GatewaySettings
from services.kit.telemetry import setup_logging, setup_tracing


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway")
    parser.add_argument("command", choices=["serve"])
    parser.parse_args(argv)
    try:
        settings = GatewaySettings.from_env(embedded=False)
    except ConfigError as exc:
        sys.exit(f"gateway: {exc}")
    setup_logging(settings.log_level)
    setup_tracing("gateway", settings.trace_exporter)
    serve(settings)


if __name__ == "__main__":
    main()
