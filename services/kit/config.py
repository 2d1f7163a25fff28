"""Configuration from environment variables; every variable is documented in README.md."""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORTS = {"membership": 50051, "points": 50052, "rewards": 50053, "segments": 50054, "gateway": 8080}


class ConfigError(Exception):
    """The environment does not describe a runnable service."""


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def _bool(name: str, default: bool) -> bool:
    raw = _env(name)
    if not raw:
        return default
    return raw.lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    host: str
    redis_url: str
    admin_key: str
    auth_secret: bytes
    pii_key: bytes
    log_level: str
    access_log: bool
    trace_exporter: str
    workers: int
    threads: int
    auto_migrate: bool
    grace_seconds: float
    cache_ttl_seconds: float

    def db_url(self, service: str) -> str:
        url = _env(f"LOYALTY_{service.upper()}_DB_URL")
        if url:
            return url
        return f"sqlite:///{self.data_dir / (service + '.db')}"

    def port(self, service: str) -> int:
        raw = _env(f"LOYALTY_{service.upper()}_PORT")
        return int(raw) if raw else DEFAULT_PORTS[service]

    @classmethod
    def from_env(cls, *, embedded: bool) -> Settings:
        """Reads the environment. Embedded mode creates missing secrets in the data folder;
        production refuses to start without them."""
        data_dir = Path(_env("LOYALTY_DATA_DIR", "data")).resolve()
        admin_key = _env("LOYALTY_ADMIN_KEY")
        auth_secret = _env("LOYALTY_AUTH_SECRET")
        pii_key = _env("LOYALTY_PII_KEY")
        if embedded and not (admin_key and auth_secret and pii_key):
            stored = _local_secrets(data_dir)
            admin_key = admin_key or stored["admin_key"]
            auth_secret = auth_secret or stored["auth_secret"]
            pii_key = pii_key or stored["pii_key"]
        missing = [
            name
            for name, value in (
                ("LOYALTY_ADMIN_KEY", admin_key),
                ("LOYALTY_AUTH_SECRET", auth_secret),
                ("LOYALTY_PII_KEY", pii_key),
            )
            if not value
        ]
        if missing:
            raise ConfigError(f"missing required environment variables: {', '.join(missing)}")
        try:
            pii = base64.b64decode(pii_key, validate=True)
        except ValueError as exc:
            raise ConfigError("LOYALTY_PII_KEY must be base64 of 32 random bytes") from exc
        if len(pii) != 32:
            raise ConfigError("LOYALTY_PII_KEY must be base64 of 32 random bytes")
        return cls(
            data_dir=data_dir,
            host=_env("LOYALTY_HOST", "0.0.0.0"),
            redis_url=_env("LOYALTY_REDIS_URL"),
            admin_key=admin_key,
            auth_secret=auth_secret.encode(),
            pii_key=pii,
            log_level=_env("LOYALTY_LOG_LEVEL", "INFO").upper(),
            access_log=_bool("LOYALTY_ACCESS_LOG", True),
            trace_exporter=_env("LOYALTY_TRACE_EXPORTER").lower(),
            workers=int(_env("LOYALTY_WORKERS", "1")),
            threads=int(_env("LOYALTY_THREADS", "16")),
            auto_migrate=_bool("LOYALTY_AUTO_MIGRATE", embedded),
            grace_seconds=float(_env("LOYALTY_GRACE_SECONDS", "10")),
            cache_ttl_seconds=float(_env("LOYALTY_CACHE_TTL_SECONDS", "60")),
        )


def _local_secrets(data_dir: Path) -> dict[str, str]:
    """Secrets of the embedded default, created once and kept in the data folder (mode 0600)."""
    path = data_dir / "secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    data_dir.mkdir(parents=True, exist_ok=True)
    values = {
        "admin_key": "admin_" + secrets.token_urlsafe(24),
        "auth_secret": secrets.token_urlsafe(32),
        "pii_key": base64.b64encode(secrets.token_bytes(32)).decode(),
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(values, f, indent=2)
    return values
