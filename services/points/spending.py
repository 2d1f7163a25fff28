"""Spending points: at once (Spend), or in two phases for sagas — Hold moves points from
available to held, then CaptureHold spends them or ReleaseHold (or the TTL passing) gives them
back to the lots they came from."""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from loyalty.points.v1 import events_pb2
from sqlalchemy import Connection, insert, select, update
from sqlalchemy.engine import Row

from services.kit.errors import FailedPrecondition, NotFound
from services.kit.storage import UnitOfWork
from services.kit.timeutil import to_timestamp, utcnow
from services.points import commands, ledger, reasons
from services.points.domain import Account, EntryKind, HoldStatus, Source
from services.points.program import load_program
from services.points.service import PointsService
from services.points.tables import hold_lots, holds, lots
from services.points.views import BalanceView, Entry, balance_of


@dataclass(frozen=True)
class HoldPlaced:
    hold_id: str
    expires_at: datetime
    balance: BalanceView


def spend(svc: PointsService, uow: UnitOfWork, cmd: commands.Spend) -> ledger.Posted:
    now = utcnow()
    acct, _, live = ledger.debit(svc, uow, cmd.shop_id, cmd.member_id, cmd.points, now)
    made = ledger.post(uow, acct, EntryKind.SPEND, -cmd.points, 0, cmd.source, now)
    ledger.save(svc, uow, acct)
    uow.emit(cmd.shop_id, events_pb2.PointsSpent(
        shop_id=cmd.shop_id, member_id=cmd.member_id, points=cmd.points, kind=int(EntryKind.SPEND),
        redemption_id=cmd.source.redemption_id, balance_after=acct.available, occurred_at=to_timestamp(now)))
    return ledger.posted(uow, acct, made, now, live)


def hold(svc: PointsService, uow: UnitOfWork, cmd: commands.Hold) -> HoldPlaced:
    """Two-phase spend, phase one: the points move from available to held until captured,
    released, or the TTL passes (then they are released by themselves)."""
    now = utcnow()
    ttl = cmd.ttl_seconds or load_program(svc, cmd.shop_id, uow.conn).default_hold_ttl_seconds
    acct, taken, live = ledger.debit(svc, uow, cmd.shop_id, cmd.member_id, cmd.points, now)
    hold_id = "h_" + secrets.token_hex(10)
    expires_at = now + timedelta(seconds=ttl)
    uow.conn.execute(insert(holds), {"shop_id": cmd.shop_id, "hold_id": hold_id, "member_id": cmd.member_id,
                                     "amount": cmd.points, "status": int(HoldStatus.HELD),
                                     "redemption_id": cmd.source.redemption_id, "expires_at": expires_at,
                                     "created_at": now, "settled_entry_id": None})
    uow.conn.execute(insert(hold_lots), [{"shop_id": cmd.shop_id, "hold_id": hold_id, "lot_id": lot_id,
                                          "amount": amount} for lot_id, amount in taken])
    source = dataclasses.replace(cmd.source, hold_id=hold_id)
    ledger.post(uow, acct, EntryKind.HOLD, -cmd.points, cmd.points, source, now)
    ledger.save(svc, uow, acct)
    return HoldPlaced(hold_id, expires_at, balance_of(acct, live, now))


def _hold_row(conn: Connection, shop_id: str, hold_id: str) -> Row:
    row = conn.execute(select(holds).where(holds.c.shop_id == shop_id, holds.c.hold_id == hold_id)).first()
    if row is None:
        raise NotFound(f"no hold {hold_id!r}", reason=reasons.HOLD_NOT_FOUND, metadata={"hold_id": hold_id})
    return row


def _lock_holder(uow: UnitOfWork, shop_id: str, hold_id: str) -> Account:
    """The account of the hold's member, locked before the hold is judged."""
    return ledger.lock(uow, shop_id, _hold_row(uow.conn, shop_id, hold_id).member_id)


def capture_hold(svc: PointsService, uow: UnitOfWork, cmd: commands.CaptureHold) -> ledger.Posted:
    """Phase two: the held points are spent."""
    load_program(svc, cmd.shop_id, uow.conn)
    acct = _lock_holder(uow, cmd.shop_id, cmd.hold_id)
    held = _hold_row(uow.conn, cmd.shop_id, cmd.hold_id)  # read again under the account lock
    now = utcnow()
    if held.status == HoldStatus.CAPTURED:
        return ledger.posted_before(uow, acct, held.settled_entry_id)
    if held.status == HoldStatus.RELEASED:
        raise FailedPrecondition("the hold was released", reason=reasons.HOLD_RELEASED, subject=f"hold/{cmd.hold_id}")
    if held.expires_at <= now:
        raise FailedPrecondition("the hold expired; its points are being released", reason=reasons.HOLD_EXPIRED,
                                 subject=f"hold/{cmd.hold_id}")
    made = ledger.post(uow, acct, EntryKind.CAPTURE, 0, -held.amount,
                       Source(hold_id=cmd.hold_id, redemption_id=held.redemption_id), now)
    uow.conn.execute(update(holds).where(holds.c.shop_id == cmd.shop_id, holds.c.hold_id == cmd.hold_id).values(
        status=int(HoldStatus.CAPTURED), settled_entry_id=made.entry_id))
    ledger.save(svc, uow, acct)
    uow.emit(cmd.shop_id, events_pb2.PointsSpent(
        shop_id=cmd.shop_id, member_id=acct.member_id, points=held.amount, kind=int(EntryKind.CAPTURE),
        redemption_id=held.redemption_id, balance_after=acct.available, occurred_at=to_timestamp(now)))
    return ledger.posted(uow, acct, made, now)


def release_hold(svc: PointsService, uow: UnitOfWork, cmd: commands.ReleaseHold) -> ledger.Posted:
    """Phase two, the other way: the held points go back to where they came from."""
    load_program(svc, cmd.shop_id, uow.conn)
    acct = _lock_holder(uow, cmd.shop_id, cmd.hold_id)
    now = utcnow()
    made = release(uow, acct, cmd.hold_id, now, reason=cmd.reason)
    ledger.save(svc, uow, acct)
    if isinstance(made, int):
        return ledger.posted_before(uow, acct, made)
    return ledger.posted(uow, acct, made, now)


def release(uow: UnitOfWork, acct: Account, hold_id: str, now: datetime, *, reason: str) -> Entry | int:
    """Gives held points back to the lots they came from (the account is locked); returns the
    RELEASE entry (or the first one's id, when released already)."""
    held = _hold_row(uow.conn, acct.shop_id, hold_id)
    if held.status == HoldStatus.RELEASED:
        return held.settled_entry_id
    if held.status == HoldStatus.CAPTURED:
        raise FailedPrecondition("the hold was captured", reason=reasons.HOLD_CAPTURED, subject=f"hold/{hold_id}")
    for part in uow.conn.execute(select(hold_lots.c.lot_id, hold_lots.c.amount).where(
            hold_lots.c.shop_id == acct.shop_id, hold_lots.c.hold_id == hold_id)).all():
        uow.conn.execute(update(lots).where(lots.c.id == part.lot_id).values(remaining=lots.c.remaining + part.amount))
    made = ledger.post(uow, acct, EntryKind.RELEASE, held.amount, -held.amount,
                       Source(hold_id=hold_id, redemption_id=held.redemption_id, reason=reason), now)
    uow.conn.execute(update(holds).where(holds.c.shop_id == acct.shop_id, holds.c.hold_id == hold_id).values(
        status=int(HoldStatus.RELEASED), settled_entry_id=made.entry_id))
    return made


def held_by(conn: Connection, shop_id: str, member_id: str) -> list[str]:
    """The member's holds still held."""
    return [r.hold_id for r in conn.execute(select(holds.c.hold_id).where(
        holds.c.shop_id == shop_id, holds.c.member_id == member_id, holds.c.status == int(HoldStatus.HELD)))]


def due_holds(conn: Connection, now: datetime, limit: int) -> list[tuple[str, str]]:
    """(shop_id, hold_id) of holds whose TTL passed."""
    return [(r.shop_id, r.hold_id) for r in conn.execute(select(holds.c.shop_id, holds.c.hold_id).where(
        holds.c.status == int(HoldStatus.HELD), holds.c.expires_at <= now).limit(limit))]


def release_expired_hold(svc: PointsService, uow: UnitOfWork, shop_id: str, hold_id: str, now: datetime) -> None:
    """The hold sweeper's step: releases one hold whose TTL passed, unless settled meanwhile."""
    acct = _lock_holder(uow, shop_id, hold_id)
    if _hold_row(uow.conn, shop_id, hold_id).status == HoldStatus.HELD:
        release(uow, acct, hold_id, now, reason="hold expired")
        ledger.save(svc, uow, acct)
