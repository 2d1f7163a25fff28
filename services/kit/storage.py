"""SQLAlchemy 2 on a SQLite file or PostgreSQL, chosen by URL, with short explicit
transactions. A unit of work commits the change, its outbox rows and its idempotency record
together, and runs after-commit actions (cache invalidation, relay wake-up) only once it held.
Hot statements (Prepared) run as server-side prepared statements on PostgreSQL, straight on the
driver's cursor.

A database that cannot be reached is retried briefly, then answered with `Unavailable`; while it
stays away, calls fail at once (one trial every half second, and the health watcher's probe)
instead of each waiting out its own retries."""

from __future__ import annotations

import logging
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from operator import itemgetter
from typing import Any, TypeVar

import psycopg2
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.message import Message
from loyalty.common.v1 import envelope_pb2
from opentelemetry import propagate
from sqlalchemy import (
    ARRAY,
    Column,
    ColumnElement,
    Connection,
    String,
    Table,
    any_,
    bindparam,
    cast,
    column,
    create_engine,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, MultipleResultsFound, NoResultFound, OperationalError

from services.kit import reasons
from services.kit.errors import Unavailable
from services.kit.tables import KitTables
from services.kit.telemetry import Outage
from services.kit.timeutil import to_timestamp, utcnow

log = logging.getLogger("loyalty.storage")
T = TypeVar("T")

_RETRYABLE_PG_CODES = {"40001", "40P01"}  # serialization failure, deadlock detected
# admin shutdown, crash shutdown, cannot connect now (starting up or shutting down); class 08 is
# "connection exception".
_UNREACHABLE_PG_CODES = {"57P01", "57P02", "57P03"}
_TRIAL_SECONDS = 0.5  # while the database is away, how often a call may try it again


def is_connection_error(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached (a lost or refused connection, a server
    shutting down or starting up), as opposed to a bug or a bad statement."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig
    code = getattr(exc, "pgcode", None)
    if code:
        return code in _UNREACHABLE_PG_CODES or code.startswith("08")
    # Without a SQLSTATE, psycopg2 reports a refused, dropped or closed connection this way.
    return isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError)


_PARAMETER = re.compile(r"%\((\w+)\)s")
_MAX_PREPARED = 64  # per connection: beyond it (a statement whose text varies), statements run unprepared


class Rows:
    """What a Prepared statement answers on PostgreSQL: the part of SQLAlchemy's Result the
    services use (rows with attribute access, first/one/all/scalar…, rowcount)."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int):
        self._rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def all(self) -> list[Any]:
        return list(self._rows)

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one_or_none(self) -> Any:
        if len(self._rows) > 1:
            raise MultipleResultsFound("Multiple rows were found when one or none was required")
        return self.first()

    def one(self) -> Any:
        if not self._rows:
            raise NoResultFound("No row was found when one was required")
        return self.one_or_none()

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar_one_or_none(self) -> Any:
        row = self.one_or_none()
        return None if row is None else row[0]

    def scalars(self) -> Rows:
        """The first column's values, as the rows of a Rows."""
        return Rows([row[0] for row in self._rows], self.rowcount)


class _Row(tuple):
    """A result row: a tuple whose columns are also attributes (and `_mapping`), like SQLAlchemy's."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    @property
    def _mapping(self) -> dict[str, Any]:
        return dict(zip(self._fields, self, strict=True))


_ROW_CLASSES: dict[tuple[str, ...], type[_Row]] = {}


def _row_class(names: tuple[str, ...]) -> type[_Row]:
    cls = _ROW_CLASSES.get(names)
    if cls is None:
        attributes: dict[str, Any] = {"__slots__": (), "_fields": names}
        for i, name in enumerate(names):
            attributes[name] = property(itemgetter(i))
        cls = _ROW_CLASSES[names] = type("Row", (_Row,), attributes)
    return cls


class _Form:
    """A Prepared statement compiled for one dialect and one set of parameter names."""

    __slots__ = ("sql", "static", "binds", "results")

    def __init__(self, sql: str, static: dict[str, Any], binds: list[tuple[str, Callable[[Any], Any]]],
                 results: list[tuple[int, Callable[[Any], Any]]] | None):
        self.sql, self.static, self.binds, self.results = sql, static, binds, results


class Prepared:
    """A statement of a busy path, built once. On PostgreSQL each connection PREPAREs it once and
    it runs straight on the driver's cursor: SQLAlchemy's work per call (compiled-cache lookup,
    execution context, result set-up) cost about as much client CPU as the round trip itself.
    Types convert as SQLAlchemy converts them (its bind and result processors). A statement whose
    parameters need SQLAlchemy (Python-side defaults, many rows) and every statement on SQLite
    run through SQLAlchemy as usual. Call it: `stmt(conn, params)`."""

    def __init__(self, statement: Any):
        self.statement = statement
        self._forms: dict[tuple[str, ...], _Form | None] = {}

    def __call__(self, conn: Connection, params: dict[str, Any] | list[dict[str, Any]] | None = None) -> Any:
        if conn.dialect.name != "postgresql" or isinstance(params, list):
            return conn.execute(self.statement, params)
        params = params or {}
        names = tuple(params)
        form = self._forms.get(names, _UNSET)
        if form is _UNSET:
            form = self._forms[names] = self._compile(conn, names)
        if form is None:
            return conn.execute(self.statement, params)
        values = {**form.static, **params}
        for name, process in form.binds:
            values[name] = process(values[name])
        fairy = conn.connection
        cursor = None
        try:
            cursor = fairy.dbapi_connection.cursor()
            if conn.dispatch.before_cursor_execute:  # listeners (instrumentation, tests) see it as written
                conn.dispatch.before_cursor_execute(conn, cursor, form.sql, values, None, False)
            cursor.execute(_prepared_text(fairy.info, cursor, form.sql), values)
            rows: list[Any] = []
            if cursor.description is not None:
                rows = cursor.fetchall()
                cls = _row_class(tuple(column.name for column in cursor.description))
                if form.results:
                    rows = [cls(_processed(row, form.results)) for row in rows]
                else:
                    rows = [cls(row) for row in rows]
            return Rows(rows, cursor.rowcount)
        except psycopg2.Error as exc:
            # SQLAlchemy's own handling, as for any statement: the error wrapped (IntegrityError…),
            # handle_error listeners, and on a lost connection this one invalidated and every
            # pooled connection older than it retired (they point at the same gone server).
            conn._handle_dbapi_exception(exc, form.sql, values, cursor, None)
            raise  # not reached: the call above raises
        finally:
            if cursor is not None and not cursor.closed:
                cursor.close()

    def _compile(self, conn: Connection, names: tuple[str, ...]) -> _Form | None:
        dialect = conn.dialect
        compiled: Any = self.statement.compile(dialect=dialect, column_keys=list(names))
        if compiled.insert_prefetch or compiled.update_prefetch:
            return None  # Python-side column defaults: SQLAlchemy computes them per call
        if compiled.post_compile_params or compiled.literal_execute_params:
            return None  # an expanding IN or a literal rendered per call: its text varies
        static: dict[str, Any] = {}
        binds: list[tuple[str, Callable[[Any], Any]]] = []
        for name, bind in compiled.binds.items():
            if name not in names:
                if bind.callable is not None or (bind.required and bind.value is None):
                    return None
                static[name] = bind.value
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                binds.append((name, process))
        if not set(_PARAMETER.findall(compiled.string)) <= set(static) | set(names):
            return None  # a parameter named otherwise in the text (escaped): leave it to SQLAlchemy
        results = []
        for i, exported in enumerate(self.statement.exported_columns):
            process = exported.type.dialect_impl(dialect).result_processor(dialect, None)
            if process is not None:
                results.append((i, process))
        return _Form(compiled.string, static, binds, results or None)


_UNSET: Any = object()


def _processed(row: tuple[Any, ...], results: list[tuple[int, Callable[[Any], Any]]]) -> list[Any]:
    values = list(row)
    for i, process in results:
        values[i] = process(values[i])
    return values


def _prepared_text(info: dict[str, Any], cursor: Any, statement: str) -> str:
    """The EXECUTE that runs `statement` on this connection, PREPAREd the first time (psycopg2
    has no prepared statements of its own): PostgreSQL then does not parse it again."""
    prepared: dict[str, str] = info.setdefault("loyalty_prepared", {})
    execute = prepared.get(statement)
    if execute is None:
        if len(prepared) >= _MAX_PREPARED:
            return statement
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in names:
                names.append(match.group(1))
            return f"${names.index(match.group(1)) + 1}"

        name = f"loyalty_{len(prepared)}"
        cursor.execute(f"PREPARE {name} AS " + _PARAMETER.sub(number, statement).replace("%%", "%"))
        execute = prepared[statement] = f"EXECUTE {name}" + (
            "(" + ", ".join(f"%({n})s" for n in names) + ")" if names else "")
    return execute


class UnitOfWork:
    """One database transaction: its connection, the events it emits, what to do after commit."""

    def __init__(self, conn: Connection, db: Database):
        self.conn = conn
        self.db = db
        self._after_commit: list[Callable[[], None]] = []
        self.emitted = 0
        self.fenced: set[str] = set()  # cache keys this transaction fenced (cache.invalidate_on_commit)

    def emit(self, shop_id: str, payload: Message) -> str:
        """Writes an event to the outbox in this transaction; returns its id."""
        return self.emit_many(shop_id, [payload])[0]

    def emit_many(self, shop_id: str, payloads: list[Message]) -> list[str]:
        """Writes events to the outbox in this transaction with one statement."""
        if not payloads:
            return []
        now = utcnow()
        occurred_at = to_timestamp(now)
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        rows = []
        for payload in payloads:
            event_id = str(uuid.uuid4())
            envelope = envelope_pb2.EventEnvelope(
                id=event_id,
                type=payload.DESCRIPTOR.full_name,
                shop_id=shop_id,
                occurred_at=occurred_at,
                traceparent=carrier.get("traceparent", ""),
                tracestate=carrier.get("tracestate", ""),
                producer=self.db.service,
            )
            packed = AnyProto()
            packed.Pack(payload)
            envelope.payload.CopyFrom(packed)
            rows.append(
                {
                    "event_id": event_id,
                    "shop_id": shop_id,
                    "event_type": envelope.type,
                    "envelope": envelope.SerializeToString(),
                    "created_at": now,
                }
            )
        if len(rows) == 1:  # the busy case (one event per call): a plain INSERT plans cheaper than unnest
            self.db.outbox_insert(self.conn, rows[0])
        else:
            insert_many(self.conn, self.db.kit.outbox, rows)
        self.emitted += len(rows)
        return [row["event_id"] for row in rows]

    def after_commit(self, action: Callable[[], None]) -> None:
        """Runs `action` once the transaction committed: best effort, for what a job or a TTL
        would otherwise catch up on (it must not be the only way to a correct state)."""
        self._after_commit.append(action)


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of at most `size` items (a statement or an event per batch)."""
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def one_of(column: Column[Any], name: str, dialect: str) -> ColumnElement[bool]:
    """`column` IN the list bound as `name`, for a statement built once per dialect: on
    PostgreSQL `= ANY(array)`, one parameter (an expanding IN is compiled again on every call,
    which costs more Python than the query); elsewhere an expanding IN."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


DIALECTS = ("postgresql", "sqlite")


def arrays_as_rows(table: Table, names: Iterable[str], *, name: str = "given") -> Any:
    """unnest(CAST(:a_<column> AS <type>[]), …) WITH ORDINALITY AS <name>(<column>, …, ordinality):
    rows bound as one array per column (PostgreSQL, see as_arrays). A statement over many rows
    then has one text for any number of them: compiled once, it runs prepared."""
    names = list(names)
    types = [ARRAY(_unbounded(table.c[n].type)) for n in names]
    arrays = [cast(bindparam(f"a_{n}", type_=t), t) for n, t in zip(names, types, strict=True)]
    return func.unnest(*arrays).table_valued(*(column(n, table.c[n].type) for n in names),
                                             with_ordinality="ordinality").render_derived(name=name)


def _unbounded(type_: Any) -> Any:
    """The type without its length: an explicit cast to VARCHAR(n) cuts a longer text short,
    while writing it into the VARCHAR(n) column refuses it, as a plain INSERT would."""
    return String() if isinstance(type_, String) else type_


def as_arrays(rows: list[dict[str, Any]], names: Iterable[str]) -> dict[str, list[Any]]:
    """The rows' values as arrays_as_rows binds them."""
    return {f"a_{n}": [row[n] for row in rows] for n in names}


def insert_many(conn: Connection, table: Table, rows: list[dict[str, Any]], *, ignoring: tuple[str, ...] = (),
                returning: Column[Any] | None = None) -> list[Any]:
    """Inserts the rows (all with the same columns, including those with a Python-side default)
    with one statement; answers `returning` of each row inserted, a serial key the insert draws in
    the rows' order. `ignoring`: a row whose key is taken is left out (ON CONFLICT DO NOTHING).
    PostgreSQL: INSERT … SELECT FROM arrays_as_rows, built once per table and column set and
    prepared (a VALUES list of many rows is compiled again for every length of batch); elsewhere
    one executemany."""
    if not rows:
        return []
    names = tuple(rows[0])
    missing = [c.name for c in table.columns if c.default is not None and c.name not in names]
    if missing:  # one INSERT … SELECT would give every row the same value: the caller gives them
        raise ValueError(f"insert_many into {table.name}: give {', '.join(missing)} (a Python-side default)")
    if conn.dialect.name != "postgresql":
        statement: Any = insert_ignoring(conn, table, list(ignoring)) if ignoring else insert(table)
        if returning is None:
            conn.execute(statement, rows)
            return []
        return list(conn.execute(statement.returning(returning, sort_by_parameter_order=True), rows).scalars())
    key = (id(table), names, ignoring, returning.name if returning is not None else None)
    prepared = _INSERT_MANY.get(key)
    if prepared is None:
        given = arrays_as_rows(table, names)
        statement = (insert_ignoring(conn, table, list(ignoring)) if ignoring else insert(table)).from_select(
            list(names), select(*(given.c[n] for n in names)).order_by(given.c.ordinality))
        prepared = _INSERT_MANY[key] = Prepared(statement.returning(returning) if returning is not None
                                                else statement)
    answered = prepared(conn, as_arrays(rows, names))
    if returning is None:
        return []
    # A serial key is drawn row by row in the SELECT's order: ascending is the rows' order.
    values = list(answered.scalars())
    drawn = returning is table.autoincrement_column and returning.name not in names
    return sorted(values) if drawn else values


_INSERT_MANY: dict[tuple[Any, ...], Prepared] = {}


def dialect_insert(conn: Connection, table: Table) -> Any:
    """INSERT with ON CONFLICT, in the connection's dialect (SQLite and PostgreSQL alike)."""
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table)


def insert_ignoring(conn: Connection, table: Table, keys: list[str] | None = None) -> Any:
    """INSERT … ON CONFLICT (keys) DO NOTHING, to add .values() (and .returning()) to: a row kept
    once however often an event or a retry brings it (its rowcount says whether it was new)."""
    return dialect_insert(conn, table).on_conflict_do_nothing(index_elements=keys)


def upsert(conn: Connection, table: Table, values: dict[str, Any], *, keys: tuple[str, ...]) -> None:
    """Inserts `values`, or updates the row with the same `keys` to them (one statement, on
    SQLite and PostgreSQL alike): for projections kept from events."""
    statement = dialect_insert(conn, table).values(values)
    changes = {name: statement.excluded[name] for name in values if name not in keys}
    conn.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=changes)
                 if changes else statement.on_conflict_do_nothing(index_elements=list(keys)))


def add_returning(conn: Connection, table: Table, values: dict[str, Any], *, keys: tuple[str, ...], add: str,
                  set_: tuple[str, ...] = ()) -> Any:
    """Inserts `values`, or adds `values[add]` to the existing row's `add` column (and sets the
    columns named in `set_`), in one statement; returns the column's new value. For a counter
    that is only ever raised (a balance credited), where reading it first would cost a round trip."""
    signature = (conn.dialect.name, table.name, keys, add, set_)
    statement = _ADD_RETURNING.get(signature)
    if statement is None:  # built once per shape: the values travel as parameters
        inserting = dialect_insert(conn, table)
        changes = {add: table.c[add] + inserting.excluded[add], **{name: inserting.excluded[name] for name in set_}}
        statement = _ADD_RETURNING[signature] = Prepared(inserting.on_conflict_do_update(
            index_elements=list(keys), set_=changes).returning(table.c[add]))
    return statement(conn, values).scalar_one()


_ADD_RETURNING: dict[tuple[Any, ...], Prepared] = {}


def ignoring_returning(conn: Connection, table: Table, keys: list[str], returning: list[Column[Any]], *,
                       prepared: bool = False) -> Any:
    """insert_ignoring(…).returning(…), built once per dialect and shape, for a busy path: the rows
    it returns are the ones that were new. `prepared`: a Prepared (one row at a time; a many-row
    insert's text varies with its length)."""
    # Plain values only: comparing Column objects would build SQL expressions.
    signature = (conn.dialect.name, id(table), tuple(keys), tuple(c.name for c in returning), prepared)
    statement = _IGNORING_RETURNING.get(signature)
    if statement is None:
        statement = insert_ignoring(conn, table, keys).returning(*returning)
        statement = _IGNORING_RETURNING[signature] = Prepared(statement) if prepared else statement
    return statement


_IGNORING_RETURNING: dict[tuple[Any, ...], Any] = {}


class Database:
    """A service's own database."""

    def __init__(self, url: str, *, service: str, kit: KitTables, pool_size: int = 16, retry_seconds: float = 1.0):
        self.url = url
        self.service = service
        self.kit = kit
        # Built once: its compiled SQL is found without re-keying, and it runs prepared.
        self.outbox_insert = Prepared(insert(kit.outbox))
        self.is_sqlite = url.startswith("sqlite")
        self.on_events_committed: Callable[[], None] | None = None
        # Told True/False when the database comes back or goes away (the health watcher listens).
        self.on_reachability: Callable[[bool], None] | None = None
        self.retry_seconds = retry_seconds  # how long a call retries a lost connection before UNAVAILABLE
        self.outage = Outage(f"database of {service}", log)
        self._trial_at = 0.0  # while away: calls fail at once until this monotonic time
        self.engine = self._make_engine(url, pool_size)
        self._probe_engine: Engine | None = None

    @staticmethod
    def _make_engine(url: str, pool_size: int) -> Engine:
        if url.startswith("sqlite"):
            engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_timeout=30)

            @event.listens_for(engine, "connect")
            def _sqlite_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
                # Autocommit at the driver: we issue BEGIN ourselves (IMMEDIATE for writes, so
                # two writers queue on the lock instead of failing on upgrade).
                dbapi_conn.isolation_level = None
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

            @event.listens_for(engine, "begin")
            def _sqlite_begin(conn: Connection) -> None:
                write = conn.get_execution_options().get("loyalty_write", False)
                conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

            return engine
        engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            # No pre-ping (a `SELECT 1` per checkout): a connection found dead is retried by
            # _with_retries, and SQLAlchemy then drops every pooled connection older than it.
            pool_recycle=1800,
            pool_timeout=30,
            # An unreachable host fails in seconds instead of waiting out TCP's own timeouts.
            connect_args={"connect_timeout": 2, "keepalives_idle": 10, "keepalives_interval": 5,
                          "keepalives_count": 3},
        )

        @event.listens_for(engine, "connect")
        def _plan_per_run(dbapi_conn: Any, _record: object) -> None:
            # Prepared statements are planned for their parameters on every run: a generic plan
            # made while a table was new and empty (a fresh shop, a fresh deployment) scanned the
            # whole table for a key lookup, and kept doing so as it grew; parsing is still saved.
            # A SET rather than a startup option, which a pooler in front may refuse.
            cur = dbapi_conn.cursor()
            cur.execute("SET plan_cache_mode = force_custom_plan")
            cur.close()
            dbapi_conn.commit()

        return engine

    def transact(self, work: Callable[[UnitOfWork], T], *, attempts: int = 4) -> T:
        """Runs `work` in one write transaction, retrying on deadlocks, serialization failures
        and, for up to `retry_seconds`, lost connections (a restarted PostgreSQL)."""

        def run() -> tuple[T, UnitOfWork]:
            with self.engine.connect() as conn:
                conn.execution_options(loyalty_write=True)
                uow = UnitOfWork(conn, self)
                with conn.begin():
                    return work(uow), uow

        result, uow = self._with_retries(run, attempts)
        for action in uow._after_commit:
            try:
                action()
            except Unavailable as exc:
                # A dependency that went away since the commit logs its own outage; after-commit
                # actions are best effort by contract (a job or a TTL catches up), so no traceback.
                log.info("after-commit action skipped: %s", exc.message)
            except Exception:  # an after-commit action must never undo a committed answer
                log.exception("after-commit action failed")
        if uow.emitted and self.on_events_committed is not None:
            self.on_events_committed()
        return result

    def read(self, work: Callable[[Connection], T], *, autocommit: bool = False) -> T:
        """Runs `work` in a read-only transaction. `autocommit`: on PostgreSQL each statement runs
        on its own instead, without the BEGIN and COMMIT round trips, for the lookups of a busy
        path (under READ COMMITTED a transaction's statements see no more alike than that); not
        for a read that streams (a server-side cursor lives in a transaction). SQLite always
        reads in one transaction."""

        def run() -> T:
            with self.engine.connect() as conn:
                if not autocommit or self.is_sqlite:
                    with conn.begin():
                        return work(conn)
                # Straight on the driver's connection: SQLAlchemy's AUTOCOMMIT isolation level
                # would send a SET to reset it each time the connection goes back to the pool.
                raw = conn.connection.dbapi_connection
                raw.autocommit = True
                try:
                    return work(conn)
                finally:
                    if not raw.closed:
                        raw.autocommit = False

        return self._with_retries(run, 1)

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read-only transaction held open while a caller streams from it (one snapshot of the
        data however long the stream lasts): REPEATABLE READ READ ONLY on PostgreSQL, one read
        transaction on SQLite (WAL). No retries: a stream cannot be replayed once it has begun;
        the caller streams with execution_options(stream_results=True, yield_per=N)."""
        self._refuse_while_away()
        with self.engine.connect() as conn:
            if not self.is_sqlite:
                conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            with conn.begin():
                yield conn

    def _with_retries(self, run: Callable[[], T], attempts: int) -> T:
        self._refuse_while_away()
        attempt, first_lost = 0, 0.0
        while True:
            attempt += 1
            try:
                result = run()
            except DBAPIError as exc:
                if is_connection_error(exc):
                    now = time.monotonic()
                    first_lost = first_lost or now
                    if self.outage.down or now - first_lost >= self.retry_seconds:
                        raise self._unreachable(exc) from exc
                    if attempt > 1:  # the first loss is most often a pooled connection of a restarted server
                        time.sleep(min(0.05 * 2 ** (attempt - 2), 0.4))
                    continue
                if attempt >= attempts or not self._retryable(exc):
                    raise
                log.info("retrying transaction after %s", type(exc.orig).__name__)
                time.sleep(0.01 * 2**attempt)
                continue
            self._reachable()
            return result

    def _refuse_while_away(self) -> None:
        """While the database is known to be away, answers at once, except for one trial call
        every half second (so a service without a health watcher still notices its return)."""
        if not self.outage.down:
            return
        now = time.monotonic()
        if now < self._trial_at:
            self.outage.failed("still unreachable")
            raise Unavailable("the database is unreachable; retry shortly", reason=reasons.DATABASE_UNAVAILABLE,
                              metadata={"service": self.service})
        self._trial_at = now + _TRIAL_SECONDS

    def _unreachable(self, exc: BaseException) -> Unavailable:
        self._trial_at = time.monotonic() + _TRIAL_SECONDS
        if self.outage.failed(exc) and self.on_reachability is not None:
            self.on_reachability(False)
        return Unavailable("the database is unreachable; retry shortly", reason=reasons.DATABASE_UNAVAILABLE,
                           metadata={"service": self.service})

    def _reachable(self) -> None:
        if self.outage.recovered() and self.on_reachability is not None:
            self.on_reachability(True)

    def probe(self) -> bool:
        """Whether the database answers `SELECT 1` within a couple of seconds, on a connection of
        its own (a busy pool must not make a healthy database look away)."""
        if self._probe_engine is None:
            if self.is_sqlite:
                self._probe_engine = self.engine
            else:
                self._probe_engine = create_engine(
                    self.url, pool_size=1, max_overflow=0, pool_timeout=2,
                    connect_args={"connect_timeout": 2, "options": "-c statement_timeout=2000",
                                  "keepalives_idle": 2, "keepalives_interval": 1, "keepalives_count": 2})
        try:
            with self._probe_engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except DBAPIError as exc:
            if not is_connection_error(exc) and not isinstance(exc, OperationalError):
                raise
            self._unreachable(exc)
            return False
        self._reachable()
        return True

    def _retryable(self, exc: DBAPIError) -> bool:
        if self.is_sqlite:
            return isinstance(exc, OperationalError) and "locked" in str(exc.orig)
        return getattr(exc.orig, "pgcode", None) in _RETRYABLE_PG_CODES

    def dispose(self) -> None:
        self.engine.dispose()
        if self._probe_engine is not None:
            self._probe_engine.dispose()
