"""Fixtures shared by the suites. Contract tests run through a real gRPC server against both
backends: `sqlite` (SQLite file + in-process cache and bus) and `postgres` (PostgreSQL + Redis,
from LOYALTY_TEST_PG_URL / LOYALTY_TEST_REDIS_URL, which `make test` provides)."""

from __future__ import annotations

import base64
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.membership.v1 import membership_service_pb2_grpc as mgrpc
from sqlalchemy import create_engine, text

from services.kit.auth import KeyRing
from services.kit.bus import Bus, InProcessBus, RedisStreamsBus
from services.kit.cache import Cache, LocalCache, RedisCache
from services.kit.config import Settings
from services.kit.server import RunningService, create_server
from services.membership import server as membership_server
from services.points import server as points_server

ADMIN_KEY = "admin_test_key"
AUTH_SECRET = b"test-auth-secret"
PII_KEY = base64.b64encode(b"k" * 32).decode()


@dataclass
class Backend:
    name: str
    redis_url: str
    pg_url: str
    tmp: Path
    created_dbs: list[str] = field(default_factory=list)

    def database_url(self, service: str) -> str:
        """A fresh database for one service (each service owns its own)."""
        if self.name == "sqlite":
            return f"sqlite:///{self.tmp / (service + '-' + uuid.uuid4().hex[:6] + '.db')}"
        name = f"{service}_{uuid.uuid4().hex[:8]}"
        admin = create_engine(self.pg_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        self.created_dbs.append(name)
        return self.pg_url.rsplit("/", 1)[0] + "/" + name

    def make_cache(self) -> Cache:
        return RedisCache(self.redis_url) if self.name == "postgres" else LocalCache()

    def make_bus(self) -> Bus:
        if self.name == "postgres":
            return RedisStreamsBus(self.redis_url, block_ms=100, claim_idle_ms=500, claim_interval=0.5)
        return InProcessBus()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def backend(request, tmp_path_factory) -> Iterator[Backend]:  # noqa: ANN001
    if request.param == "postgres":
        pg, redis_url = os.environ.get("LOYALTY_TEST_PG_URL"), os.environ.get("LOYALTY_TEST_REDIS_URL")
        if not (pg and redis_url):
            pytest.skip("PostgreSQL + Redis backend: run through `make test`, which starts both")
        yield Backend("postgres", redis_url, pg, tmp_path_factory.mktemp("pg"))
    else:
        yield Backend("sqlite", "", "", tmp_path_factory.mktemp("sqlite"))


@pytest.fixture(scope="session")
def settings(tmp_path_factory) -> Settings:  # noqa: ANN001
    return Settings(
        data_dir=tmp_path_factory.mktemp("data"), host="127.0.0.1", redis_url="", admin_key=ADMIN_KEY,
        auth_secret=AUTH_SECRET, pii_key=base64.b64decode(PII_KEY), log_level="WARNING", access_log=False,
        trace_exporter="", workers=1, threads=8, auto_migrate=True, grace_seconds=2.0, cache_ttl_seconds=60.0)


class Authed:
    """A stub whose calls carry one API key."""

    def __init__(self, stub: object, key: str):
        self._stub, self._metadata = stub, [("authorization", f"Bearer {key}")]

    def __getattr__(self, name: str):  # noqa: ANN204
        return partial(getattr(self._stub, name), metadata=self._metadata, timeout=30)


@dataclass
class ServiceUnderTest:
    backend: Backend
    running: RunningService
    channel: grpc.Channel
    bus: Bus
    cache: Cache

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.running.port}"


def start_service(
    module, backend: Backend, settings: Settings, *, cache: Cache | None = None, bus: Bus | None = None  # noqa: ANN001
) -> ServiceUnderTest:
    """Starts one service on a fresh database. Services that should exchange events share `bus`
    (with Redis, any two buses on the same server do)."""
    cache = cache or backend.make_cache()
    bus = bus or backend.make_bus()
    keyring = KeyRing(ADMIN_KEY, AUTH_SECRET)
    app = module.build_app(settings, cache=cache, keyring=keyring, bus=bus, db_url=backend.database_url(module.NAME))
    running = create_server(app, bus=bus, keyring=keyring, port=0, threads=settings.threads, access_log=False)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    return ServiceUnderTest(backend, running, channel, bus, cache)


def stop_service(service: ServiceUnderTest, *, close_bus: bool = True) -> None:
    service.channel.close()
    service.running.stop(1.0)
    if close_bus:
        service.bus.close()


@pytest.fixture(scope="session")
def bus(backend: Backend) -> Iterator[Bus]:
    """The bus the session's services share, so that points hears membership's events."""
    shared = backend.make_bus()
    yield shared
    shared.close()


@pytest.fixture(scope="session")
def suite(backend: Backend, settings: Settings, bus: Bus) -> Iterator[dict[str, ServiceUnderTest]]:
    """Every service of the suite, started together (as `make run` does), so that a consumer
    never starts behind a long backlog of another's events."""
    services = {module.NAME: start_service(module, backend, settings, bus=bus)
                for module in (membership_server, points_server)}
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
def admin(membership: ServiceUnderTest) -> Authed:
    return Authed(mgrpc.MembershipServiceStub(membership.channel), ADMIN_KEY)


@dataclass
class Shop:
    shop_id: str
    key: str
    api: Authed  # membership, with the shop's own key


def create_shop(membership: ServiceUnderTest, admin: Authed, **program) -> Shop:  # noqa: ANN003
    shop_id = "shop-" + uuid.uuid4().hex[:10]
    response = admin.CreateProgram(mpb.CreateProgramRequest(
        request_id=uuid.uuid4().hex, shop_id=shop_id, name="Test shop", **program))
    return Shop(shop_id, response.api_key, Authed(mgrpc.MembershipServiceStub(membership.channel), response.api_key))


@pytest.fixture
def shop(membership: ServiceUnderTest, admin: Authed) -> Shop:
    """A new shop with the default program, reached with its own key."""
    return create_shop(membership, admin)


@dataclass
class Failure:
    """A failed call as a caller sees it: the code and the google.rpc details."""

    code: grpc.StatusCode
    reason: str
    domain: str
    metadata: dict[str, str]
    fields: dict[str, str]  # BadRequest field violations
    preconditions: list[str]  # PreconditionFailure violation types


def failure_of(error: grpc.RpcError) -> Failure:
    status = rpc_status.from_call(error)
    info, fields, preconditions = error_details_pb2.ErrorInfo(), {}, []
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = {v.field: v.description for v in bad.field_violations}
        elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            preconditions = [v.type for v in failure.violations]
    return Failure(error.code(), info.reason, info.domain, dict(info.metadata), fields, preconditions)


# Show that both backends ran: a count per backend after the run.
_by_backend: Counter = Counter()


def pytest_runtest_logreport(report) -> None:  # noqa: ANN001
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        for name in ("sqlite", "postgres"):
            if f"[{name}" in report.nodeid or f"-{name}]" in report.nodeid or f"-{name}-" in report.nodeid:
                _by_backend[(name, report.outcome)] += 1


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001
    if not _by_backend:
        return
    for name in ("sqlite", "postgres"):
        passed, failed, skipped = (_by_backend[(name, o)] for o in ("passed", "failed", "skipped"))
        terminalreporter.write_line(f"backend {name}: {passed} passed, {failed} failed, {skipped} skipped")
