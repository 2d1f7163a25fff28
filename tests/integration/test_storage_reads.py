"""The kit's reads: a busy path's lookups run without a transaction around them on PostgreSQL,
and the connection they used goes back to the pool as transactional as before; ordinary reads
stay in one transaction (a streamed read needs one)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, func, insert, select, text

from services.kit.storage import Database
from services.kit.tables import kit_tables
from tests.support.services import Backend

metadata = MetaData()
kit = kit_tables(metadata)
numbers = Table("numbers", metadata, Column("n", Integer, primary_key=True))


@pytest.fixture
def db(backend: Backend) -> Iterator[Database]:
    # One pooled connection: every call below reuses the one the autocommit read had.
    database = Database(backend.database_url("reads"), service="reads", kit=kit, pool_size=1)
    metadata.create_all(database.engine)
    database.transact(lambda uow: uow.conn.execute(insert(numbers), [{"n": n} for n in range(1, 2001)]))
    try:
        yield database
    finally:
        database.dispose()


def test_an_autocommit_read_answers_and_leaves_the_connection_transactional(db: Database) -> None:
    def two_clocks(conn) -> tuple:  # noqa: ANN001
        first = conn.execute(text("SELECT clock_timestamp(), now()" if not db.is_sqlite else
                                  "SELECT 1, 1")).one()
        conn.execute(select(func.count()).select_from(numbers))
        return first, conn.execute(text("SELECT now()" if not db.is_sqlite else "SELECT 1")).scalar()

    (_, started), later = db.read(two_clocks, autocommit=True)
    if not db.is_sqlite:
        assert later > started  # each statement was a transaction of its own: now() moved on
        (_, started), later = db.read(two_clocks)
        assert later == started  # one transaction: now() is its start

    def fails_after_writing(uow) -> None:  # noqa: ANN001
        uow.conn.execute(insert(numbers), {"n": 0})
        raise RuntimeError("undo")

    with pytest.raises(RuntimeError):
        db.transact(fails_after_writing)
    # The pooled connection is transactional again: the failed write was rolled back.
    assert db.read(lambda conn: conn.execute(select(func.count()).where(numbers.c.n == 0)).scalar(),
                   autocommit=True) == 0


def test_a_streamed_read_runs_in_a_read_transaction(db: Database) -> None:
    def stream(conn) -> list[int]:  # noqa: ANN001
        rows = conn.execution_options(stream_results=True, yield_per=100).execute(
            select(numbers.c.n).where(numbers.c.n > 0).order_by(numbers.c.n))
        return [row.n for row in rows]

    assert db.read(stream) == list(range(1, 2001))


def test_prepared_statements_are_planned_for_their_parameters(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("a PostgreSQL setting")
    # Not a generic plan made once (on a table still empty, it would scan the whole table).
    assert db.read(lambda conn: conn.execute(text("SHOW plan_cache_mode")).scalar()) == "force_custom_plan"
