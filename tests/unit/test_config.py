"""Settings: each service requires only the secrets it uses, and a bad value is refused at start
with a message naming the variable."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from services import registry
from services.kit.config import DEFAULT_PORTS, ConfigError, Settings

PII = base64.b64encode(b"p" * 32).decode()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A production environment with the common secrets and nothing else of ours."""
    for name in list(os.environ):
        if name.startswith("LOYALTY_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LOYALTY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LOYALTY_ADMIN_KEY", "admin")
    monkeypatch.setenv("LOYALTY_AUTH_SECRET", "secret")
    return monkeypatch


def test_points_starts_without_the_pii_key(env: pytest.MonkeyPatch) -> None:
    settings = Settings.from_env(embedded=False, service="points")
    assert settings.pii_key == b""
    assert settings.admin_key == "admin"


def test_membership_refuses_to_start_without_the_pii_key(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="^missing required environment variables: LOYALTY_PII_KEY$"):
        Settings.from_env(embedded=False, service="membership")


def test_membership_refuses_a_pii_key_that_is_not_32_bytes(env: pytest.MonkeyPatch) -> None:
    env.setenv("LOYALTY_PII_KEY", base64.b64encode(b"short").decode())
    with pytest.raises(ConfigError, match="LOYALTY_PII_KEY must be base64 of 32 random bytes"):
        Settings.from_env(embedded=False, service="membership")
    env.setenv("LOYALTY_PII_KEY", PII)
    assert Settings.from_env(embedded=False, service="membership").pii_key == b"p" * 32


def test_every_service_refuses_to_start_without_the_common_secrets(env: pytest.MonkeyPatch) -> None:
    env.delenv("LOYALTY_AUTH_SECRET")
    env.delenv("LOYALTY_ADMIN_KEY")
    for entry in registry.SERVICES:
        with pytest.raises(ConfigError, match="LOYALTY_ADMIN_KEY, LOYALTY_AUTH_SECRET"):
            Settings.from_env(embedded=False, service=entry.name)


def test_the_whole_suite_needs_every_services_secrets(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="LOYALTY_PII_KEY"):
        Settings.from_env(embedded=False)


def test_the_embedded_suite_creates_its_secrets_once(env: pytest.MonkeyPatch) -> None:
    env.delenv("LOYALTY_ADMIN_KEY")
    first = Settings.from_env(embedded=True)
    again = Settings.from_env(embedded=True)
    assert len(first.pii_key) == 32
    assert (first.admin_key, first.pii_key) == (again.admin_key, again.pii_key)


def test_scheduled_jobs_follow_the_typed_setting(env: pytest.MonkeyPatch) -> None:
    assert Settings.from_env(embedded=False, service="points").scheduled_jobs("points") is False
    assert Settings.from_env(embedded=True, service="points").scheduled_jobs("points") is True
    env.setenv("LOYALTY_POINTS_JOBS", "on")
    assert Settings.from_env(embedded=False, service="points").scheduled_jobs("points") is True
    env.setenv("LOYALTY_POINTS_JOBS", "sometimes")
    with pytest.raises(ConfigError, match="LOYALTY_POINTS_JOBS must be one of 1, 0, true, false"):
        Settings.from_env(embedded=False, service="points")


@pytest.mark.parametrize(("name", "value", "message"), [
    ("LOYALTY_WORKERS", "two", "LOYALTY_WORKERS must be an integer"),
    ("LOYALTY_WORKERS", "0", "LOYALTY_WORKERS must be at least 1"),
    ("LOYALTY_GRACE_SECONDS", "soon", "LOYALTY_GRACE_SECONDS must be a number"),
    ("LOYALTY_POINTS_PORT", "http", "LOYALTY_POINTS_PORT must be an integer"),
    ("LOYALTY_ACCESS_LOG", "maybe", "LOYALTY_ACCESS_LOG must be one of"),
    ("LOYALTY_CALL_TIMEOUT_SECONDS", "0", "LOYALTY_CALL_TIMEOUT_SECONDS must be at least"),
])
def test_malformed_values_are_refused_with_the_variable_named(
    env: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    env.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(embedded=False, service="points")


def test_ports_and_addresses_come_from_the_registry_unless_set(env: pytest.MonkeyPatch) -> None:
    settings = Settings.from_env(embedded=False, service="points")
    for entry in registry.SERVICES:
        assert DEFAULT_PORTS[entry.name] == entry.port
        assert settings.port(entry.name) == entry.port
        assert settings.address(entry.name) == f"localhost:{entry.port}"
    env.setenv("LOYALTY_MEMBERSHIP_ADDR", "membership.loyalty.svc:50051")
    assert settings.address("membership") == "membership.loyalty.svc:50051"


def test_no_service_reads_the_environment_outside_the_kits_config() -> None:
    services = Path(__file__).resolve().parents[2] / "services"
    readers = [str(path.relative_to(services)) for path in services.rglob("*.py")
               if path.name != "config.py" and any(word in path.read_text() for word in ("os.environ", "getenv"))]
    assert readers == []
