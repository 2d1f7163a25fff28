"""A scratch database for unit tests of SQL: SQLite in memory, or a database of its own on the
test PostgreSQL (LOYALTY_TEST_PG_URL, set by scripts/test-backends.sh; skipped without it),
dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence

import pytest
from sqlalchemy import Engine, MetaData, Table, create_engine, text
from sqlalchemy.pool import StaticPool


def scratch_pg_url(prefix: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database (for a fixture: yields it, then drops it)."""
    url = os.environ.get("LOYALTY_TEST_PG_URL")
    if not url:
        pytest.skip("PostgreSQL: set LOYALTY_TEST_PG_URL (scripts/test-backends.sh does)")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def scratch_engine(backend: str, metadata: MetaData, tables: Sequence[Table] | None, prefix: str) -> Iterator[Engine]:
    """For a module-scoped fixture parametrized with "sqlite" / "postgres": yields an engine on a
    scratch database holding the given tables."""
    if backend == "sqlite":
        engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
        metadata.create_all(engine, tables=tables)
        yield engine
        engine.dispose()
        return
    for url in scratch_pg_url(prefix):
        engine = create_engine(url)
        try:
            metadata.create_all(engine, tables=tables)
            yield engine
        finally:
            engine.dispose()
