"""Where membership's data keys live: a database apart from its data, never the data's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.kit.config import ConfigError, keys_db_url
from services.membership.key_store import KeyStore
from services.membership.pii import PiiKeys


def test_beside_a_sqlite_file_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOYALTY_MEMBERSHIP_KEYS_DB_URL", raising=False)
    assert keys_db_url("membership", "sqlite:////data/membership.db") == "sqlite:////data/membership-keys.db"


def test_named_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOYALTY_MEMBERSHIP_KEYS_DB_URL", "postgresql+psycopg2://keys-host/membership_keys")
    assert keys_db_url("membership", "postgresql+psycopg2://db/membership") == (
        "postgresql+psycopg2://keys-host/membership_keys")


def test_postgresql_data_needs_the_key_store_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOYALTY_MEMBERSHIP_KEYS_DB_URL", raising=False)
    with pytest.raises(ConfigError, match="LOYALTY_MEMBERSHIP_KEYS_DB_URL"):
        keys_db_url("membership", "postgresql+psycopg2://db/membership")


def test_the_key_store_starts_in_a_fresh_data_folder(tmp_path: Path) -> None:
    store = KeyStore(f"sqlite:///{tmp_path / 'new' / 'membership-keys.db'}", PiiKeys(b"k" * 32))
    try:
        assert store.key("shop", "k_none") is None
    finally:
        store.stop()
