"""Idempotent mutations (AIP-155): the response to a request_id is stored in the same
transaction as the change, so a retry returns the first response and changes nothing."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import Row, Select, Table, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from services.kit import reasons
from services.kit.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.kit.storage import Database, Prepared, UnitOfWork
from services.kit.timeutil import utcnow
from services.kit.validation import require_shop

R = TypeVar("R", bound=Message)
MAX_REQUEST_ID = 128
ERASED = "erased"  # the fingerprint of a record whose answer was erased


class _Duplicate(Exception):
    """A concurrent twin committed this request_id first; answer with its response instead."""


def run_idempotent(
    db: Database,
    *,
    shop_id: str,
    method: str,
    request: Message,
    response_type: type[R],
    work: Callable[[UnitOfWork], R],
    subject: Callable[[R], str] | None = None,
) -> R:
    """Runs `work` once per (shop, method, request.request_id). An empty request_id runs it
    without a record (for RPCs whose natural key already makes them idempotent). `subject` names
    whom a response is about, so that erase_responses() can forget it.

    The record is written once, with the response, at the end of the transaction, by one
    statement that finds the key taken when a first call committed before: then this one's work
    is rolled back and the first answer read instead (a refusal, too, looks for a first answer)."""
    request_id: str = request.request_id  # type: ignore[attr-defined]
    if len(request_id) > MAX_REQUEST_ID:
        raise InvalidArgument([("request_id", f"at most {MAX_REQUEST_ID} characters")])
    if not request_id:
        return db.transact(work)
    fingerprint = hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
    query, record = _statements(db.kit.idempotency, db.is_sqlite)
    key = {"shop_id": shop_id, "method": method, "request_id": request_id}

    def stored(row: Row) -> R:
        if row.fingerprint == ERASED:
            raise FailedPrecondition(
                "the answer to this request was erased with the member's personal data; use a new request_id",
                reason=reasons.REQUEST_ANSWER_ERASED, subject=f"request/{request_id}")
        if row.fingerprint != fingerprint:
            raise InvalidArgument(
                [("request_id", "already used for a different request; use a new request_id")],
                reason=reasons.REQUEST_ID_REUSED,
            )
        return response_type.FromString(row.response)

    def attempt(uow: UnitOfWork) -> R:
        response = work(uow)
        written = record(uow.conn, {
            **key, "fingerprint": fingerprint, "response": response.SerializeToString(),
            "subject": subject(response) if subject else "", "created_at": utcnow()}).first()
        if written is None:
            raise _Duplicate
        return response

    try:
        return db.transact(attempt)
    except _Duplicate:
        pass
    except (FailedPrecondition, AlreadyExists, NotFound, IntegrityError):
        # A retry may be refused by the first call's own effect (its spend took the points): the
        # first answer is then the answer.
        row = db.read(lambda conn: conn.execute(query, key).first())
        if row is None:
            raise
        return stored(row)
    return db.read(lambda conn: stored(conn.execute(query, key).one()))


@functools.cache
def _statements(table: Table, sqlite: bool) -> tuple[Select, Prepared]:
    """The record's lookup and its insert-unless-taken, built once (their compiled SQL is cached too)."""
    query = select(table.c.fingerprint, table.c.response).where(
        table.c.shop_id == bindparam("shop_id"), table.c.method == bindparam("method"),
        table.c.request_id == bindparam("request_id"))
    record = Prepared((sqlite_insert if sqlite else pg_insert)(table).on_conflict_do_nothing().returning(
        table.c.request_id))
    return query, record


def erase_responses(uow: UnitOfWork, shop_id: str, subject: str) -> None:
    """Forgets the stored responses about `subject` (personal data of a member who left); a retry
    of those requests is then refused rather than answered with what was erased."""
    table = uow.db.kit.idempotency
    uow.conn.execute(update(table).where(table.c.shop_id == shop_id, table.c.subject == subject)
                     .values(response=b"", fingerprint=ERASED))


def require_request_id(request: Message) -> None:
    if not request.request_id:  # type: ignore[attr-defined]
        raise InvalidArgument([("request_id", "required: a client-chosen id that makes retries safe")])


def idempotent_call(db: Database, request: Message, method: str, response_type: type[R],
                    work: Callable[[UnitOfWork], R], subject: Callable[[R], str] | None = None) -> R:
    """A mutating RPC whose request carries shop_id and request_id at its top level."""
    require_shop(request.shop_id)  # type: ignore[attr-defined]
    return run_idempotent(db, shop_id=request.shop_id, method=method,  # type: ignore[attr-defined]
                          request=request, response_type=response_type, work=work, subject=subject)
