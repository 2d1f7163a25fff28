"""Fixtures shared by the suites. Contract tests run through a real gRPC server against both
backends: `sqlite` (SQLite file + in-process cache and bus) and `postgres` (PostgreSQL + Redis,
from LOYALTY_TEST_PG_URL / LOYALTY_TEST_REDIS_URL, which `make test` provides). The helpers
themselves live in tests/support; their names are kept here for the tests that import them."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from loyalty.membership.v1 import membership_service_pb2_grpc as mgrpc

from services import registry
from services.kit.bus import Bus
from services.kit.config import Settings
from tests.support.errors import Failure, failure_of
from tests.support.gateway import Storefront, gateway_settings, start_gateway
from tests.support.services import (
    ADMIN_KEY,
    AUTH_SECRET,
    PII_KEY,
    Authed,
    Backend,
    ServiceUnderTest,
    Shop,
    create_shop,
    start_service,
    stop_service,
    suite_settings,
)

__all__ = [
    "ADMIN_KEY", "AUTH_SECRET", "PII_KEY", "Authed", "Backend", "Failure", "ServiceUnderTest", "Shop",
    "create_shop", "failure_of", "start_service", "stop_service",
]


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    if request.param == "postgres":
        pg, redis_url = os.environ.get("LOYALTY_TEST_PG_URL"), os.environ.get("LOYALTY_TEST_REDIS_URL")
        if not (pg and redis_url):
            pytest.skip("PostgreSQL + Redis backend: run through `make test`, which starts both")
        yield Backend("postgres", redis_url, pg, tmp_path_factory.mktemp("pg"))
    else:
        yield Backend("sqlite", "", "", tmp_path_factory.mktemp("sqlite"))


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return suite_settings(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def bus(backend: Backend) -> Iterator[Bus]:
    """The bus the session's services share, so that points hears membership's events."""
    shared = backend.make_bus()
    yield shared
    shared.close()


@pytest.fixture(scope="session")
def suite(backend: Backend, settings: Settings, bus: Bus) -> Iterator[dict[str, ServiceUnderTest]]:
    """Every service of the registry, started together (as `make run` does), so that a consumer
    never starts behind a long backlog of another's events."""
    services: dict[str, ServiceUnderTest] = {}
    for entry in registry.SERVICES:  # in start order: a caller finds those it calls started
        addresses = {name: service.address for name, service in services.items()}
        services[entry.name] = start_service(entry.server(), backend, settings, bus=bus, addresses=addresses)
    yield services
    for service in services.values():
        stop_service(service, close_bus=False)


@pytest.fixture(scope="session")
def membership(suite: dict[str, ServiceUnderTest]) -> ServiceUnderTest:
    return suite["membership"]


@pytest.fixture(scope="session")
def points(suite: dict[str, ServiceUnderTest]) -> ServiceUnderTest:
    return suite["points"]


@pytest.fixture(scope="session")
def rewards(suite: dict[str, ServiceUnderTest]) -> ServiceUnderTest:
    return suite["rewards"]


@pytest.fixture(scope="session")
def admin(membership: ServiceUnderTest) -> Authed:
    return Authed(mgrpc.MembershipServiceStub(membership.channel), ADMIN_KEY)


@pytest.fixture(scope="session")
def storefront(backend: Backend, suite: dict[str, ServiceUnderTest],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storefront]:
    """The HTTP gateway in front of the session's services (rate limits shared through Redis on
    the production backend, in-process on the embedded one)."""
    running = start_gateway(gateway_settings(backend, suite, tmp_path_factory.mktemp("gateway")))
    yield Storefront(running)
    running.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the session (Playwright's sync API allows one per thread)."""
    from tests.support.browser import chromium

    with chromium() as launched:
        yield launched


@pytest.fixture
def shop(membership: ServiceUnderTest, admin: Authed) -> Shop:
    """A new shop with the default program, reached with its own key."""
    return create_shop(membership, admin)


# Show that both backends ran: a count per backend after the run.
_by_backend: Counter = Counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        backends = [name for name in ("sqlite", "postgres")
                    if f"[{name}" in report.nodeid or f"-{name}]" in report.nodeid or f"-{name}-" in report.nodeid]
        for name in backends or ["other"]:  # "other": unit tests and tests with their own servers
            _by_backend[(name, report.outcome)] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _by_backend:
        return
    for name in ("sqlite", "postgres", "other"):
        passed, failed, skipped = (_by_backend[(name, o)] for o in ("passed", "failed", "skipped"))
        label = "other tests" if name == "other" else f"backend {name}"
        terminalreporter.write_line(f"{label}: {passed} passed, {failed} failed, {skipped} skipped")
