"""The suite's command line over the registry: `python -m services migrate` applies every
service's migrations to the databases the environment names (what `make migrate` runs)."""

from __future__ import annotations

import argparse
import logging
import sys

from services import registry
from services.kit import migrations
from services.kit.config import ConfigError, Settings
from services.kit.telemetry import setup_logging

log = logging.getLogger("loyalty.migrate")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services")
    parser.add_argument("command", choices=["migrate"])
    parser.add_argument("--service", action="append", choices=[s.name for s in registry.SERVICES],
                        help="only this service (repeatable); default: every service in the registry")
    args = parser.parse_args(argv)
    for entry in registry.SERVICES:
        if args.service and entry.name not in args.service:
            continue
        try:
            settings = Settings.from_env(embedded=False, service=entry.name)
        except ConfigError as exc:
            sys.exit(f"{entry.name}: {exc}")
        setup_logging(settings.log_level)
        migrations.upgrade(entry.name, settings.db_url(entry.name))
        log.info("migrations applied", extra={"service": entry.name})


if __name__ == "__main__":
    main()
