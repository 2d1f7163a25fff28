"""The kit's tables migrate like any table: each service's migrations create them from a frozen
definition, and a fresh database's kit tables match kit_tables() exactly (Alembic's
autogenerate sees nothing to do), on both backends. When kit_tables() changes, this fails until
every service has the migration that makes the change."""

from __future__ import annotations

import importlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, MetaData, String, create_engine

from services import registry
from services.kit import migrations
from services.kit.tables import kit_tables
from tests.support.services import Backend

KIT_METADATA = MetaData()
kit_tables(KIT_METADATA)
KIT_TABLE_NAMES = set(KIT_METADATA.tables)


def only_kit_tables(name: str | None, type_: str, parent_names: dict) -> bool:
    """Compares the kit's tables and what belongs to them; the service's own tables are its business."""
    if type_ == "table":
        return name in KIT_TABLE_NAMES
    return type_ == "schema" or parent_names.get("table_name") in KIT_TABLE_NAMES


def kit_diff(backend: Backend, entry: registry.ServiceEntry, expected: MetaData) -> list:
    """What Alembic's autogenerate would change in a freshly migrated database of `entry`."""
    url = backend.database_url(entry.name)
    migrations.upgrade(entry.name, url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"include_name": only_kit_tables, "compare_type": True})
            return compare_metadata(context, expected)
    finally:
        engine.dispose()


@pytest.mark.parametrize("entry", registry.SERVICES, ids=lambda e: e.name)
def test_a_migrated_database_has_exactly_the_kit_tables_of_kit_tables(
    backend: Backend, entry: registry.ServiceEntry
) -> None:
    assert kit_diff(backend, entry, KIT_METADATA) == []


def test_the_comparison_sees_a_kit_table_change(backend: Backend) -> None:
    """The guard works: a column the migrations never added shows up as a difference."""
    changed = MetaData()
    kit_tables(changed).outbox.append_column(Column("partition_key", String(64)))
    diff = kit_diff(backend, registry.SERVICES[0], changed)
    assert [d[0] for d in diff] == ["add_column"]
    assert diff[0][3].name == "partition_key"


def schema_diff(backend: Backend, entry: registry.ServiceEntry) -> list:
    """What Alembic's autogenerate would change in a freshly migrated database of `entry` to make
    it match the service's whole metadata (its tables.py): its own tables and the kit's."""
    metadata = importlib.import_module(f"{entry.module}.tables").metadata
    url = backend.database_url(entry.name)
    migrations.upgrade(entry.name, url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            version = migrations.version_table(entry.name)
            context = MigrationContext.configure(conn, opts={
                "compare_type": True,
                "include_name": lambda name, type_, parents: not (type_ == "table" and name == version)})
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


@pytest.mark.parametrize("entry", registry.SERVICES, ids=lambda e: e.name)
def test_a_migrated_database_is_exactly_what_the_service_declares(
    backend: Backend, entry: registry.ServiceEntry
) -> None:
    """The migrations and tables.py describe the same schema: a table, column or index added to
    one and not the other fails here, not in production."""
    assert schema_diff(backend, entry) == []
