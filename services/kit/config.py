"""Configuration from environment variables; every variable is documented in README.md. This
is the only module that reads the environment: services get typed values from Settings."""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from services import registry

DEFAULT_PORTS = {service.name: service.port for service in registry.SERVICES}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


class ConfigError(Exception):
    """The environment does not describe a runnable service."""


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def _bool(name: str, default: bool) -> bool:
    raw = _env(name).lower()
    if not raw:
        return default
    if raw not in _TRUE | _FALSE:
        raise ConfigError(f"{name} must be one of 1, 0, true, false, yes, no, on, off (got {raw!r})")
    return raw in _TRUE


def _number(name: str, default: str, kind: type[int] | type[float], *, minimum: float = 0) -> int | float:
    raw = _env(name, default)
    try:
        value = kind(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a{'n integer' if kind is int else ' number'} (got {raw!r})") from exc
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum} (got {raw!r})")
    return value


def _share(name: str, default: str) -> float:
    value = float(_number(name, default, float))
    if not 0 < value <= 1:
        raise ConfigError(f"{name} must be more than 0 and at most 1 (got {value})")
    return value


def service_db_url(service: str, data_dir: Path | None = None) -> str:
    """A service's database: LOYALTY_<SERVICE>_DB_URL, else its SQLite file in the data folder
    (for tools that need no secrets, like a bench loader)."""
    url = _env(f"LOYALTY_{service.upper()}_DB_URL")
    if url:
        return url
    folder = data_dir or Path(_env("LOYALTY_DATA_DIR", "data")).resolve()
    return f"sqlite:///{folder / (service + '.db')}"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    host: str
    redis_url: str
    admin_key: str
    auth_secret: bytes
    pii_key: bytes  # empty for a service that needs none (only membership keeps personal data)
    log_level: str
    access_log: bool
    trace_exporter: str
    workers: int
    threads: int
    auto_migrate: bool
    grace_seconds: float
    cache_ttl_seconds: float
    call_timeout_seconds: float = 5.0  # the default deadline of calls to other services
    max_in_flight: int = 0  # calls run at once per process; 0: as many as threads
    max_queued: int = 0  # calls that may wait for a turn; 0: as many as threads
    queue_wait_seconds: float = 0.5  # how long a queued call waits before it is refused
    db_retry_seconds: float = 1.0  # how long a call retries a lost database before UNAVAILABLE
    lag_warning_seconds: float = 60.0  # a consumer group this far behind is logged
    bus_read_count: int = 256  # events a consumer reads at once
    access_log_sample: float = 0.01  # the share of successful fast calls logged (1: every call)
    slow_call_ms: float = 250.0  # a call this slow is always logged
    near_cache_entries: int = 50_000  # values each process keeps in front of Redis (0: none)
    consumer_workers: int = 4  # lanes a consumer spreads a batch larger than a transaction over
    consumer_per_transaction: int = 50  # events a lane applies in one transaction

    def db_url(self, service: str) -> str:
        return service_db_url(service, self.data_dir)

    def port(self, service: str) -> int:
        return int(_number(f"LOYALTY_{service.upper()}_PORT", str(DEFAULT_PORTS[service]), int, minimum=0))

    def address(self, service: str) -> str:
        """Where another service is reached (host:port): LOYALTY_<SERVICE>_ADDR, else this host."""
        return _env(f"LOYALTY_{service.upper()}_ADDR") or f"localhost:{self.port(service)}"

    def scheduled_jobs(self, service: str) -> bool:
        """Whether the service runs its batch jobs itself (LOYALTY_<SERVICE>_JOBS): by default in
        the embedded suite; in production a CronJob runs them as one-shot commands."""
        return _bool(f"LOYALTY_{service.upper()}_JOBS", self.auto_migrate)

    @classmethod
    def from_env(cls, *, embedded: bool, service: str | None = None) -> Settings:
        """Reads the environment for one service (or, without `service`, for the whole suite),
        requiring only the secrets it uses. Embedded mode creates missing secrets in the data
        folder; production refuses to start without them."""
        data_dir = Path(_env("LOYALTY_DATA_DIR", "data")).resolve()
        entries = [registry.entry(service)] if service else list(registry.SERVICES)
        required = {name for entry in entries for name in entry.required_secrets}
        values = {name: _env(name) for name in ("LOYALTY_ADMIN_KEY", "LOYALTY_AUTH_SECRET", "LOYALTY_PII_KEY")}
        if embedded and not all(values.values()):
            stored = _local_secrets(data_dir)
            for name, key in (("LOYALTY_ADMIN_KEY", "admin_key"), ("LOYALTY_AUTH_SECRET", "auth_secret"),
                              ("LOYALTY_PII_KEY", "pii_key")):
                values[name] = values[name] or stored[key]
        missing = sorted(name for name in required if not values[name])
        if missing:
            raise ConfigError(f"missing required environment variables: {', '.join(missing)}")
        pii = _pii_key(values["LOYALTY_PII_KEY"]) if "LOYALTY_PII_KEY" in required else b""
        settings = cls(
            data_dir=data_dir,
            host=_env("LOYALTY_HOST", "127.0.0.1" if embedded else "0.0.0.0"),
            redis_url=_env("LOYALTY_REDIS_URL"),
            admin_key=values["LOYALTY_ADMIN_KEY"],
            auth_secret=values["LOYALTY_AUTH_SECRET"].encode(),
            pii_key=pii,
            log_level=_env("LOYALTY_LOG_LEVEL", "WARNING" if embedded else "INFO").upper(),
            access_log=_bool("LOYALTY_ACCESS_LOG", True),
            trace_exporter=_env("LOYALTY_TRACE_EXPORTER").lower(),
            workers=int(_number("LOYALTY_WORKERS", "1", int, minimum=1)),
            threads=int(_number("LOYALTY_THREADS", "16", int, minimum=1)),
            auto_migrate=_bool("LOYALTY_AUTO_MIGRATE", embedded),
            grace_seconds=float(_number("LOYALTY_GRACE_SECONDS", "10", float)),
            cache_ttl_seconds=float(_number("LOYALTY_CACHE_TTL_SECONDS", "60", float)),
            call_timeout_seconds=float(_number("LOYALTY_CALL_TIMEOUT_SECONDS", "5", float, minimum=0.001)),
            max_in_flight=int(_number("LOYALTY_MAX_IN_FLIGHT", "0", int)),
            max_queued=int(_number("LOYALTY_MAX_QUEUED", "0", int)),
            queue_wait_seconds=float(_number("LOYALTY_QUEUE_WAIT_SECONDS", "0.5", float)),
            db_retry_seconds=float(_number("LOYALTY_DB_RETRY_SECONDS", "1", float)),
            lag_warning_seconds=float(_number("LOYALTY_LAG_WARNING_SECONDS", "60", float, minimum=1)),
            bus_read_count=int(_number("LOYALTY_BUS_READ_COUNT", "256", int, minimum=1)),
            access_log_sample=_share("LOYALTY_ACCESS_LOG_SAMPLE", "0.01"),
            slow_call_ms=float(_number("LOYALTY_SLOW_CALL_MS", "250", float)),
            near_cache_entries=int(_number("LOYALTY_NEAR_CACHE_ENTRIES", "50000", int)),
            consumer_workers=int(_number("LOYALTY_CONSUMER_WORKERS", "4", int, minimum=1)),
            consumer_per_transaction=int(_number("LOYALTY_CONSUMER_PER_TRANSACTION", "50", int, minimum=1)),
        )
        for entry in entries:  # refuse a bad per-service value now, not when the service is built
            settings.port(entry.name)
            settings.scheduled_jobs(entry.name)
        return settings


def keys_db_url(service: str, db_url: str) -> str:
    """The database of a service's data keys, apart from its data so that backups of the data
    hold no key: LOYALTY_<SERVICE>_KEYS_DB_URL, else `<name>-keys.db` beside a SQLite `<name>.db`.
    A service whose data is in PostgreSQL must name its keys' database."""
    variable = f"LOYALTY_{service.upper()}_KEYS_DB_URL"
    url = _env(variable)
    if url:
        return url
    if db_url.startswith("sqlite:///") and db_url.endswith(".db"):
        return db_url.removesuffix(".db") + "-keys.db"
    raise ConfigError(f"{variable} must name the database of {service}'s data keys (a database of its own, "
                      "not backed up with the data, see README)")


def pii_key_from_env() -> bytes | None:
    """LOYALTY_PII_KEY decoded, or None when it is unset or malformed (for migrations that need it)."""
    try:
        return _pii_key(_env("LOYALTY_PII_KEY"))
    except ConfigError:
        return None


def _pii_key(raw: str) -> bytes:
    try:
        key = base64.b64decode(raw, validate=True)
    except ValueError as exc:
        raise ConfigError("LOYALTY_PII_KEY must be base64 of 32 random bytes") from exc
    if len(key) != 32:
        raise ConfigError("LOYALTY_PII_KEY must be base64 of 32 random bytes")
    return key


def _local_secrets(data_dir: Path) -> dict[str, str]:
    """Secrets of the embedded default, created once and kept in the data folder (mode 0600); a
    secret added by a later version is added to an existing file, the others are kept."""
    path = data_dir / "secrets.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    wanted = {
        "admin_key": lambda: "admin_" + secrets.token_urlsafe(24),
        "auth_secret": lambda: secrets.token_urlsafe(32),
        "pii_key": lambda: base64.b64encode(secrets.token_bytes(32)).decode(),
        "gateway_token_key": lambda: secrets.token_urlsafe(32),
    }
    if all(name in stored for name in wanted):
        return stored
    values = {name: stored.get(name) or make() for name, make in wanted.items()}
    data_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(values, f, indent=2)
    os.replace(partial, path)
    return values


@dataclass(frozen=True)
class GatewaySettings:
    """The HTTP gateway's settings (gateway/): where it listens, the services it calls, the
    secrets it signs buyer tokens with and verifies shop keys with, and its rate limits."""

    host: str
    port: int
    workers: int
    auth_secret: bytes  # verifies shop keys, and makes the shop-scoped keys the gateway calls with
    token_key: bytes  # signs buyer tokens (HS256)
    token_ttl_seconds: int
    upstreams: dict[str, str]  # service name -> host:port
    redis_url: str  # rate limits shared by every gateway process; empty: in-process
    shop_rate_per_second: float
    buyer_rate_per_second: float
    call_timeout_seconds: float
    log_level: str
    access_log: bool
    trace_exporter: str
    data_dir: Path
    demo: bool = False  # serve the demo storefront page at / (the embedded default)
    shop_burst: int = 0  # requests a shop may make at once; 0: one second's worth of its rate
    buyer_burst: int = 0  # the same for one buyer

    @classmethod
    def from_env(cls, *, embedded: bool) -> GatewaySettings:
        data_dir = Path(_env("LOYALTY_DATA_DIR", "data")).resolve()
        values = {name: _env(name) for name in ("LOYALTY_AUTH_SECRET", "LOYALTY_GATEWAY_TOKEN_KEY")}
        if embedded and not all(values.values()):
            stored = _local_secrets(data_dir)
            values["LOYALTY_AUTH_SECRET"] = values["LOYALTY_AUTH_SECRET"] or stored["auth_secret"]
            values["LOYALTY_GATEWAY_TOKEN_KEY"] = values["LOYALTY_GATEWAY_TOKEN_KEY"] or stored["gateway_token_key"]
        missing = sorted(name for name, value in values.items() if not value)
        if missing:
            raise ConfigError(f"missing required environment variables: {', '.join(missing)}")
        if len(values["LOYALTY_GATEWAY_TOKEN_KEY"]) < 32:
            raise ConfigError("LOYALTY_GATEWAY_TOKEN_KEY must be at least 32 characters")
        return cls(
            host=_env("LOYALTY_HOST", "127.0.0.1" if embedded else "0.0.0.0"),
            port=int(_number("LOYALTY_GATEWAY_PORT", "8080", int)),
            workers=int(_number("LOYALTY_GATEWAY_WORKERS", "1", int, minimum=1)),
            auth_secret=values["LOYALTY_AUTH_SECRET"].encode(),
            token_key=values["LOYALTY_GATEWAY_TOKEN_KEY"].encode(),
            token_ttl_seconds=int(_number("LOYALTY_BUYER_TOKEN_TTL_SECONDS", "900", int, minimum=30)),
            upstreams={entry.name: _upstream(entry.name) for entry in registry.SERVICES},
            redis_url=_env("LOYALTY_REDIS_URL"),
            shop_rate_per_second=float(_number("LOYALTY_GATEWAY_SHOP_RATE", "1000", float, minimum=0.001)),
            buyer_rate_per_second=float(_number("LOYALTY_GATEWAY_BUYER_RATE", "10", float, minimum=0.001)),
            call_timeout_seconds=float(_number("LOYALTY_CALL_TIMEOUT_SECONDS", "5", float, minimum=0.001)),
            log_level=_env("LOYALTY_LOG_LEVEL", "WARNING" if embedded else "INFO").upper(),
            access_log=_bool("LOYALTY_ACCESS_LOG", True),
            trace_exporter=_env("LOYALTY_TRACE_EXPORTER").lower(),
            data_dir=data_dir,
            demo=embedded,
            shop_burst=int(_number("LOYALTY_GATEWAY_SHOP_BURST", "0", int, minimum=0)),
            buyer_burst=int(_number("LOYALTY_GATEWAY_BUYER_BURST", "0", int, minimum=0)),
        )


def _upstream(service: str) -> str:
    """LOYALTY_<SERVICE>_ADDR, else the service's port on this host (as the services find each other)."""
    port = int(_number(f"LOYALTY_{service.upper()}_PORT", str(DEFAULT_PORTS[service]), int, minimum=0))
    return _env(f"LOYALTY_{service.upper()}_ADDR") or f"127.0.0.1:{port}"
