"""The kit's Prepared statements (the busy paths' statements): on PostgreSQL they are PREPAREd once
per connection and run straight on the driver's cursor, and must answer exactly as SQLAlchemy
would (types converted the same way, its errors, its events); on SQLite they run through it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, NoResultFound
from sqlalchemy.pool import NullPool

from services.kit.storage import Database, Prepared, insert_many
from services.kit.tables import kit_tables
from tests.support.services import Backend

metadata = MetaData()
kit = kit_tables(metadata)
things = Table(
    "things", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("name", String(20), nullable=False, unique=True),
    Column("blob", LargeBinary, nullable=True),
    Column("at", DateTime, nullable=True),
    Column("flag", Boolean, nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("note", String(20), nullable=False, default="from python"),
)

ADD = Prepared(insert(things).returning(things.c.id))
ACTIVE_NAMED = Prepared(select(things).where(things.c.status == 1, things.c.name == bindparam("b_name")))
ALL_ACTIVE = Prepared(select(things.c.name).where(things.c.status == 1).order_by(things.c.id))
RENAME = Prepared(update(things).where(things.c.name == bindparam("b_old")).values(name=bindparam("b_new")))
AT = datetime(2026, 11, 26, 8, 30, 15, 123456)


@pytest.fixture
def db(backend: Backend) -> Iterator[Database]:
    database = Database(backend.database_url("prepared"), service="prepared", kit=kit, pool_size=1)
    metadata.create_all(database.engine)
    try:
        yield database
    finally:
        database.dispose()


def row(name: str, status: int = 1) -> dict:
    return {"name": name, "blob": b"\x00\x01secret", "at": AT, "flag": True, "status": status, "note": "given"}


def test_it_answers_as_sqlalchemy_does(db: Database) -> None:
    ids = db.transact(lambda uow: [ADD(uow.conn, row(n, status)).scalar_one()
                                   for n, status in [("a", 1), ("b", 1), ("c", 2)]])
    assert len(set(ids)) == 3

    def both(conn) -> tuple:  # noqa: ANN001
        return ACTIVE_NAMED(conn, {"b_name": "a"}).all(), conn.execute(ACTIVE_NAMED.statement, {"b_name": "a"}).all()

    ours, theirs = db.transact(lambda uow: both(uow.conn))
    assert [tuple(r) for r in ours] == [tuple(r) for r in theirs] and len(ours) == 1
    found = ours[0]
    assert (found.id, found.name, found.blob, found.at, found.flag, found.status) == (ids[0], "a", b"\x00\x01secret",
                                                                                     AT, True, 1)
    assert type(found.blob) is bytes and found._mapping["name"] == "a"
    assert db.read(lambda conn: ALL_ACTIVE(conn).scalars().all()) == ["a", "b"]  # the literal status = 1 applies
    assert db.read(lambda conn: ACTIVE_NAMED(conn, {"b_name": "c"}).first()) is None  # status 2
    with pytest.raises(NoResultFound):
        db.read(lambda conn: ACTIVE_NAMED(conn, {"b_name": "nobody"}).one())
    assert db.transact(lambda uow: RENAME(uow.conn, {"b_old": "b", "b_new": "bb"}).rowcount) == 1
    assert db.transact(lambda uow: RENAME(uow.conn, {"b_old": "b", "b_new": "bbb"}).rowcount) == 0


def test_python_side_defaults_still_apply(db: Database) -> None:
    given = {k: v for k, v in row("d").items() if k != "note"}
    new_id = db.transact(lambda uow: ADD(uow.conn, given).scalar_one())
    assert db.read(lambda conn: conn.execute(select(things.c.note).where(things.c.id == new_id)).scalar()) == \
        "from python"


def test_errors_are_sqlalchemys_and_roll_the_transaction_back(db: Database) -> None:
    db.transact(lambda uow: ADD(uow.conn, row("e")).scalar_one())

    def twice(uow) -> None:  # noqa: ANN001
        ADD(uow.conn, row("f")).scalar_one()
        ADD(uow.conn, row("e")).scalar_one()  # taken

    with pytest.raises(IntegrityError):
        db.transact(twice)
    assert db.read(lambda conn: conn.execute(select(func.count()).select_from(things)).scalar()) == 1  # no "f"
    assert db.transact(lambda uow: ADD(uow.conn, row("g")).scalar_one()) > 0  # the connection serves on


def test_listeners_see_each_statement_as_written(db: Database) -> None:
    seen: list[str] = []

    def listener(_conn, _cursor, statement, *_args) -> None:  # noqa: ANN001
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", listener)
    try:
        db.read(lambda conn: ALL_ACTIVE(conn).all())
    finally:
        event.remove(db.engine, "before_cursor_execute", listener)
    assert any(s.startswith("SELECT things.name") for s in seen), seen


def test_on_postgresql_each_connection_prepares_it_once(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL's prepared statements")

    def run_three_times(conn) -> list:  # noqa: ANN001
        for name in ("x", "y", "z"):
            ACTIVE_NAMED(conn, {"b_name": name}).all()
        return conn.execute(text("SELECT statement FROM pg_prepared_statements")).scalars().all()

    prepared = db.read(run_three_times)
    assert len([s for s in prepared if "FROM things" in s and "things.status" in s]) == 1, prepared


def test_on_postgresql_a_lost_connection_is_dropped_and_the_next_call_reconnects(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("a PostgreSQL server connection")
    db.transact(lambda uow: ADD(uow.conn, row("h")).scalar_one())
    pid = db.read(lambda conn: conn.execute(text("SELECT pg_backend_pid()")).scalar())
    other = create_engine(db.url, poolclass=NullPool)
    with other.begin() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    other.dispose()
    with db.engine.connect() as conn, pytest.raises(DBAPIError) as lost:
        ALL_ACTIVE(conn).all()
    assert lost.value.connection_invalidated
    # _with_retries takes a fresh connection, on which the statement is prepared again.
    assert db.read(lambda conn: ALL_ACTIVE(conn).scalars().all()) == ["h"]


def test_on_postgresql_a_lost_connection_retires_the_older_pooled_ones(backend: Backend) -> None:
    if not backend.database_url("prepared").startswith("postgresql"):
        pytest.skip("a PostgreSQL server connection")
    db = Database(backend.database_url("prepared"), service="prepared", kit=kit, pool_size=2)
    try:
        metadata.create_all(db.engine)
        with db.engine.connect() as first, db.engine.connect() as second:  # two pooled connections
            pids = {c.execute(text("SELECT pg_backend_pid()")).scalar() for c in (first, second)}
        other = create_engine(db.url, poolclass=NullPool)
        with other.begin() as conn:  # the server restarted, as far as those connections can tell
            for pid in pids:
                conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        other.dispose()
        with db.engine.connect() as conn, pytest.raises(DBAPIError) as lost:
            ALL_ACTIVE(conn).all()
        assert lost.value.connection_invalidated
        # The other one, older than the loss, is not handed out again to fail in its turn.
        with db.engine.connect() as conn:
            assert ALL_ACTIVE(conn).all() == []
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() not in pids
    finally:
        db.dispose()


def test_many_rows_go_in_with_one_statement_in_their_order(db: Database) -> None:
    names = [f"m{i}" for i in range(5)]
    rows = [{**row(n), "blob": None, "at": None} for n in names]  # columns of nulls only, too
    statements: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda _c, _cur, statement, *_a: statements.append(statement))

    ids = db.transact(lambda uow: insert_many(uow.conn, things, rows, returning=things.c.id))

    if not db.is_sqlite:  # there an executemany (row by row, for the ids' order)
        assert len([s for s in statements if s.lstrip().upper().startswith("INSERT")]) == 1
    stored = db.read(lambda conn: conn.execute(select(things.c.id, things.c.name, things.c.blob, things.c.at)
                                               .order_by(things.c.id)).all())
    assert [(r.id, r.name) for r in stored] == list(zip(ids, names, strict=True))  # each id is its row's
    assert all(r.blob is None and r.at is None for r in stored)
    new = db.transact(lambda uow: insert_many(uow.conn, things, [row("m1"), row("m9"), row("m3")], ignoring=("name",),
                                              returning=things.c.name))
    assert new == ["m9"]  # the taken names are left out
    assert db.read(lambda conn: conn.execute(select(things.c.at).where(things.c.name == "m9")).scalar()) == AT
    with pytest.raises(ValueError, match="note"):  # a Python-side default would be one value for all rows
        db.transact(lambda uow: insert_many(uow.conn, things, [{k: v for k, v in row("n1").items() if k != "note"}]))
    if not db.is_sqlite:  # a text longer than its column is refused, never cut short (SQLite keeps it whole)
        with pytest.raises(DBAPIError, match="too long"):
            db.transact(lambda uow: insert_many(uow.conn, things, [row("n2"), row("x" * 21)]))
