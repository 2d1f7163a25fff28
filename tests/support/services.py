"""The services under test: backends (SQLite, or PostgreSQL + Redis), a service started on a
fresh database behind a real gRPC server, API keys, and shops."""

from __future__ import annotations

import base64
import inspect
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.membership.v1 import membership_service_pb2_grpc as mgrpc
from sqlalchemy import create_engine, text

from services.kit.auth import KeyRing
from services.kit.bus import Bus, InProcessBus
from services.kit.cache import Cache, LocalCache, RedisCache
from services.kit.config import Settings
from services.kit.redis_bus import RedisStreamsBus
from services.kit.server import RunningService, create_server

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


def suite_settings(data_dir: Path) -> Settings:
    """Settings of the services under test: the test keys, few threads, quiet logs."""
    return Settings(
        data_dir=data_dir, host="127.0.0.1", redis_url="", admin_key=ADMIN_KEY,
        auth_secret=AUTH_SECRET, pii_key=base64.b64decode(PII_KEY), log_level="WARNING", access_log=False,
        trace_exporter="", workers=1, threads=8, auto_migrate=True, grace_seconds=2.0, cache_ttl_seconds=60.0)



class Authed:
    """A stub whose calls carry one API key."""

    def __init__(self, stub: object, key: str):
        self._stub, self._metadata = stub, [("authorization", f"Bearer {key}")]

    def __getattr__(self, name: str) -> Any:
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
    module: ModuleType, backend: Backend, settings: Settings, *, cache: Cache | None = None, bus: Bus | None = None,
    addresses: dict[str, str] | None = None,
) -> ServiceUnderTest:
    """Starts one service (its wiring module) on a fresh database. Services that should exchange
    events share `bus` (with Redis, any two buses on the same server do); a service that calls
    others finds them at `addresses` (name -> host:port)."""
    cache = cache or backend.make_cache()
    bus = bus or backend.make_bus()
    keyring = KeyRing(ADMIN_KEY, AUTH_SECRET)
    databases = {"db_url": backend.database_url(module.NAME)}
    if "keys_db_url" in inspect.signature(module.build_app).parameters:  # its data keys live apart (membership)
        databases["keys_db_url"] = backend.database_url(f"{module.NAME}_keys")
    if "addresses" in inspect.signature(module.build_app).parameters:  # it calls other services (rewards)
        databases["addresses"] = dict(addresses or {})
    app = module.build_app(settings, cache=cache, keyring=keyring, bus=bus, **databases)
    running = create_server(app, bus=bus, keyring=keyring, port=0, threads=settings.threads, access_log=False)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    return ServiceUnderTest(backend, running, channel, bus, cache)


def stop_service(service: ServiceUnderTest, *, close_bus: bool = True) -> None:
    service.channel.close()
    service.running.stop(1.0)
    if close_bus:
        service.bus.close()


@dataclass
class Shop:
    shop_id: str
    key: str
    api: Authed  # membership, with the shop's own key


def create_shop(membership: ServiceUnderTest, admin: Authed, **program: Any) -> Shop:
    shop_id = "shop-" + uuid.uuid4().hex[:10]
    response = admin.CreateProgram(mpb.CreateProgramRequest(
        request_id=uuid.uuid4().hex, shop_id=shop_id, name="Test shop", **program))
    return Shop(shop_id, response.api_key, Authed(mgrpc.MembershipServiceStub(membership.channel), response.api_key))
