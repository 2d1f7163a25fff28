"""A member's account over the membership: the birthday multipliers look at, and closing it
when the member leaves (holds released; under FORFEIT, the default, the balance forfeited).
Opening it is the join's first step (earning.welcome)."""

from __future__ import annotations

from loyalty.points.v1 import events_pb2
from sqlalchemy import update

from services.kit.errors import NotFound
from services.kit.storage import UnitOfWork
from services.kit.timeutil import to_timestamp
from services.points import commands, ledger, spending
from services.points.domain import EntryKind, LeavePolicy, Source
from services.points.program import ensure_program
from services.points.service import PointsService
from services.points.tables import accounts

LEFT = "member left"


def set_birthday(svc: PointsService, uow: UnitOfWork, cmd: commands.SetBirthday) -> None:
    uow.conn.execute(update(accounts).where(accounts.c.shop_id == cmd.shop_id, accounts.c.member_id == cmd.member_id)
                     .values(birth_month=cmd.birth_month or None, birth_day=cmd.birth_day or None))


def close_account(svc: PointsService, uow: UnitOfWork, cmd: commands.CloseAccount) -> None:
    """Holds are released; under FORFEIT the balance is forfeited in the ledger; the account
    takes no more points either way."""
    program = ensure_program(svc, uow, cmd.shop_id)
    try:
        acct = ledger.lock(uow, cmd.shop_id, cmd.member_id)
    except NotFound:
        return
    for hold_id in spending.held_by(uow.conn, cmd.shop_id, cmd.member_id):
        spending.release(uow, acct, hold_id, cmd.at, reason=LEFT)
    if program.leave_policy is LeavePolicy.FORFEIT:
        live = ledger.sweep_expired(uow, acct, cmd.at)
        if acct.available > 0:
            points = acct.available
            ledger.take(uow, acct, points, cmd.at, live)
            ledger.post(uow, acct, EntryKind.FORFEIT, -points, 0, Source(reason=LEFT), cmd.at)
            uow.emit(cmd.shop_id, events_pb2.PointsAdjusted(
                shop_id=cmd.shop_id, member_id=cmd.member_id, points=-points, kind=int(EntryKind.FORFEIT),
                reason=LEFT, balance_after=acct.available, occurred_at=to_timestamp(cmd.at)))
    acct.close()
    ledger.save(svc, uow, acct)
