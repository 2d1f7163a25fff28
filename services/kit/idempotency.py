"""Idempotent mutations (AIP-155): the response to a request_id is stored in the same
transaction as the change, so a retry returns the first response and changes nothing."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import Row, insert, select, update
from sqlalchemy.exc import IntegrityError

from services.kit.errors import InvalidArgument
from services.kit.storage import Database, UnitOfWork
from services.kit.timeutil import utcnow
from services.kit.validation import require_shop

R = TypeVar("R", bound=Message)
MAX_REQUEST_ID = 128


class _Duplicate(Exception):
    """Another transaction holds this request_id; read its answer instead."""


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
    whom a response is about, so that erase_responses() can forget it."""
    request_id: str = request.request_id  # type: ignore[attr-defined]
    if len(request_id) > MAX_REQUEST_ID:
        raise InvalidArgument([("request_id", f"at most {MAX_REQUEST_ID} characters")])
    if not request_id:
        return db.transact(work)
    fingerprint = hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
    table = db.kit.idempotency
    key = (table.c.shop_id == shop_id) & (table.c.method == method) & (table.c.request_id == request_id)
    query = select(table.c.fingerprint, table.c.response).where(key)

    def stored(row: Row) -> R:
        if row.fingerprint != fingerprint:
            raise InvalidArgument(
                [("request_id", "already used for a different request; use a new request_id")],
                reason="REQUEST_ID_REUSED",
            )
        return response_type.FromString(row.response)

    def attempt(uow: UnitOfWork) -> R:
        row = uow.conn.execute(query).first()
        if row is not None:
            return stored(row)
        try:
            uow.conn.execute(
                insert(table),
                {
                    "shop_id": shop_id,
                    "method": method,
                    "request_id": request_id,
                    "fingerprint": fingerprint,
                    "response": b"",
                    "created_at": utcnow(),
                },
            )
        except IntegrityError as exc:  # a concurrent twin committed first
            raise _Duplicate from exc
        response = work(uow)
        uow.conn.execute(update(table).where(key).values(
            response=response.SerializeToString(), subject=subject(response) if subject else ""))
        return response

    try:
        return db.transact(attempt)
    except _Duplicate:
        return db.read(lambda conn: stored(conn.execute(query).one()))


def erase_responses(uow: UnitOfWork, shop_id: str, subject: str) -> None:
    """Forgets the stored responses about `subject` (personal data of a member who left); a retry
    of those requests is then refused rather than answered with what was erased."""
    table = uow.db.kit.idempotency
    uow.conn.execute(update(table).where(table.c.shop_id == shop_id, table.c.subject == subject)
                     .values(response=b"", fingerprint="erased"))


def require_request_id(request: Message) -> None:
    if not request.request_id:  # type: ignore[attr-defined]
        raise InvalidArgument([("request_id", "required: a client-chosen id that makes retries safe")])


def idempotent_call(db: Database, request: Message, method: str, response_type: type[R],
                    work: Callable[[UnitOfWork], R], subject: Callable[[R], str] | None = None) -> R:
    """A mutating RPC whose request carries shop_id and request_id at its top level."""
    require_shop(request.shop_id)  # type: ignore[attr-defined]
    return run_idempotent(db, shop_id=request.shop_id, method=method,  # type: ignore[attr-defined]
                          request=request, response_type=response_type, work=work, subject=subject)
