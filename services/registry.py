"""The suite's services, in one list. The embedded suite, the test suite, `make migrate`,
the default ports and deploy/ all follow it: adding a service is one line here (plus its
folder, its protos and its deploy manifest, which a test checks against this list)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

# Every service verifies shop keys (the auth secret) and the admin key.
COMMON_SECRETS = ("LOYALTY_ADMIN_KEY", "LOYALTY_AUTH_SECRET")


@dataclass(frozen=True)
class ServiceEntry:
    """One service: its name (also its folder under services/), default port, and the secrets
    it needs beyond the common ones."""

    name: str
    port: int
    secrets: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        return f"services.{self.name}"

    @property
    def required_secrets(self) -> tuple[str, ...]:
        return COMMON_SECRETS + self.secrets

    def server(self) -> ModuleType:
        """The service's wiring module: NAME, FULL_NAME and build_app(settings, cache=, keyring=, bus=)."""
        return importlib.import_module(f"{self.module}.server")


# In start order: a caller starts after the services it calls (rewards calls segments). A consumer
# may start before a producer whose events it hears (segments hears rewards'): the bus keeps them.
SERVICES: tuple[ServiceEntry, ...] = (
    ServiceEntry("membership", 50051, secrets=("LOYALTY_PII_KEY",)),
    ServiceEntry("points", 50052),
    ServiceEntry("segments", 50054),
    ServiceEntry("rewards", 50053),
)


def entry(name: str) -> ServiceEntry:
    for service in SERVICES:
        if service.name == name:
            return service
    raise KeyError(f"no service named {name!r} in services/registry.py")
