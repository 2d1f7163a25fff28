"""The ledger (积分明细): every balance change is one entry, made under the account's row lock,
with the lots it adds or takes, so that every balance is the sum of its ledger. The account
rules themselves are the domain's Account; this module loads it, posts, and saves it."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from datetime import datetime

from loyalty.points.v1 import events_pb2
from sqlalchemy import Row, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from services.kit.cache import invalidate_on_commit
from services.kit.storage import DIALECTS, Prepared, UnitOfWork, arrays_as_rows, as_arrays, insert_many, one_of
from services.kit.timeutil import to_timestamp, utcnow
from services.points import commands, domain
from services.points.domain import Account, EntryKind, Lot, Program, Source
from services.points.program import load_program
from services.points.service import PointsService
from services.points.tables import accounts, ledger, lots
from services.points.views import BalanceView, Entry, balance_after, balance_key, balance_of, entry, no_account


@dataclass(frozen=True)
class Posted:
    """A write's answer: its entry and the balance right after it."""

    entry: Entry
    balance: BalanceView


# The hot statements, built once (SQLAlchemy then finds their compiled SQL without rebuilding
# and re-keying an expression on every call) and run prepared on PostgreSQL.
_MEMBER = {"shop_id": bindparam("shop_id"), "member_id": bindparam("member_id")}
_LOCK = Prepared(select(accounts).where(accounts.c.shop_id == _MEMBER["shop_id"],
                                        accounts.c.member_id == _MEMBER["member_id"]).with_for_update())
# Every lot with points left, overdue or not: sweep_expired() tells them apart.
_LOTS = Prepared(select(lots.c.id, lots.c.remaining, lots.c.expires_at, lots.c.order_id)
                 .where(lots.c.shop_id == _MEMBER["shop_id"], lots.c.member_id == _MEMBER["member_id"],
                        lots.c.remaining > 0)
                 .order_by(lots.c.id).with_for_update())
# SET takes the columns given at execution (what changed of the account).
_SAVE = Prepared(update(accounts).where(accounts.c.shop_id == bindparam("key_shop_id"),
                                        accounts.c.member_id == bindparam("key_member_id")))
_APPEND = Prepared(insert(ledger).returning(ledger.c.id))
_NEW_LOT = Prepared(insert(lots))
_TAKE = Prepared(update(lots).where(lots.c.id == bindparam("lot_id")).values(remaining=bindparam("left")))


def posted(uow: UnitOfWork, acct: Account, made: Entry, now: datetime, live: list[Lot] | None = None) -> Posted:
    """The answer of a write that made the entry `made`; with the account's `live` lots known
    (a debit loaded them all), without a query."""
    balance = balance_of(acct, live, now) if live is not None else balance_after(uow.conn, acct, now)
    return Posted(made, balance)


def posted_before(uow: UnitOfWork, acct: Account, entry_id: int) -> Posted:
    """The answer of a write done before (a repeated capture or release): its entry, read back."""
    return Posted(entry(uow.conn, entry_id), balance_after(uow.conn, acct, utcnow()))


def open_account(uow: UnitOfWork, shop_id: str, member_id: str, *, birth_month: int = 0, birth_day: int = 0,
                 referrer_member_id: str = "") -> bool:
    """Creates the member's account; False when it existed already."""
    if uow.conn.execute(select(accounts.c.member_id).where(accounts.c.shop_id == shop_id,
                                                           accounts.c.member_id == member_id)).first():
        return False
    try:
        # Events of one member may be handled by two workers at once (a join and an order).
        with uow.conn.begin_nested():
            uow.conn.execute(insert(accounts), {
                "shop_id": shop_id, "member_id": member_id, "closed": False, "available": 0, "held": 0,
                "debt": 0, "lifetime_earned": 0, "birth_month": birth_month or None,
                "birth_day": birth_day or None, "referrer_member_id": referrer_member_id or None,
                "last_sign_in_day": None, "sign_in_streak": 0, "created_at": utcnow()})
    except IntegrityError:
        return False
    return True


def lock(uow: UnitOfWork, shop_id: str, member_id: str) -> Account:
    """The member's account under its row lock, or MEMBER_NOT_FOUND."""
    row = _LOCK(uow.conn, {"shop_id": shop_id, "member_id": member_id}).first()
    if row is None:
        raise no_account(shop_id, member_id)
    return _account(row)


def lock_many(uow: UnitOfWork, shop_id: str, member_ids: list[str]) -> dict[str, Account]:
    """The members' accounts that exist, by member, under their row locks taken in member order
    (two batches locking overlapping members then cannot deadlock)."""
    rows = _LOCK_MANY[uow.conn.dialect.name](uow.conn, {"shop_id": shop_id, "members": sorted(set(member_ids))})
    return {row.member_id: _account(row) for row in rows}


_LOCK_MANY = {dialect: Prepared(select(accounts).where(
    accounts.c.shop_id == bindparam("shop_id"), one_of(accounts.c.member_id, "members", dialect))
    .order_by(accounts.c.member_id).with_for_update()) for dialect in DIALECTS}


def _account(row: Row) -> Account:
    return Account(row.shop_id, row.member_id, row.closed, row.available, row.held, row.debt,
                   row.lifetime_earned, row.birth_month, row.birth_day, row.referrer_member_id,
                   row.last_sign_in_day, row.sign_in_streak)


def save(svc: PointsService, uow: UnitOfWork, acct: Account) -> None:
    """Writes what changed of the account, and keeps its cached balance out until the commit held."""
    values = {name: getattr(acct, name) for name in acct.dirty}
    if values:
        _SAVE(uow.conn, {"key_shop_id": acct.shop_id, "key_member_id": acct.member_id, **values})
        acct.dirty.clear()
    invalidate_on_commit(uow, svc.cache, [balance_key(acct.shop_id, acct.member_id)])


def save_many(svc: PointsService, uow: UnitOfWork, accts: list[Account]) -> None:
    """save() for many accounts: one statement for each set of changed columns, one cache fence."""
    changed: dict[tuple[str, ...], list[dict]] = {}
    for acct in accts:
        if acct.dirty:
            names = tuple(sorted(acct.dirty))
            changed.setdefault(names, []).append({"key_shop_id": acct.shop_id, "key_member_id": acct.member_id,
                                                  **{name: getattr(acct, name) for name in names}})
            acct.dirty.clear()
    for names, rows in changed.items():
        if len(rows) == 1 or uow.db.is_sqlite:
            _SAVE(uow.conn, rows[0] if len(rows) == 1 else rows)
            continue
        # One statement for them all (psycopg2 sends an executemany UPDATE row by row), its rows as
        # one array per column: the statement is the same for any number of rows, so it is built
        # and prepared once per set of columns.
        _save_many_statement(names)(uow.conn, {
            "a_shop_id": [row["key_shop_id"] for row in rows], "a_member_id": [row["key_member_id"] for row in rows],
            **as_arrays(rows, names)})
    if accts:
        invalidate_on_commit(uow, svc.cache, [balance_key(acct.shop_id, acct.member_id) for acct in accts])


_SAVE_MANY: dict[tuple[str, ...], Prepared] = {}


def _save_many_statement(names: tuple[str, ...]) -> Prepared:
    """UPDATE accounts … FROM arrays_as_rows(shop_id, member_id, <name>…) AS given (PostgreSQL)."""
    statement = _SAVE_MANY.get(names)
    if statement is None:
        given = arrays_as_rows(accounts, ("shop_id", "member_id", *names))
        statement = _SAVE_MANY[names] = Prepared(update(accounts).where(
            accounts.c.shop_id == given.c.shop_id, accounts.c.member_id == given.c.member_id).values(
            {name: given.c[name] for name in names}))
    return statement


def post(uow: UnitOfWork, acct: Account, kind: EntryKind, amount: int, held_delta: int, source: Source,
         at: datetime) -> Entry:
    """Moves the account by one ledger entry and appends it."""
    acct.move(amount, held_delta)
    return _append(uow, acct, kind, amount, held_delta, source, at)


def _append(uow: UnitOfWork, acct: Account, kind: EntryKind, amount: int, held_delta: int, source: Source,
            at: datetime, expires_at: datetime | None = None) -> Entry:
    """Appends the entry of a change the account already made (its id comes back by RETURNING)."""
    entry_id = _APPEND(uow.conn, _entry_row(acct, kind, amount, held_delta, source, at, expires_at)).scalar_one()
    return Entry(int(entry_id), int(kind), amount, held_delta, acct.available,
                 dataclasses.replace(source), at, expires_at)


def _entry_row(acct: Account, kind: EntryKind, amount: int, held_delta: int, source: Source, at: datetime,
               expires_at: datetime | None) -> dict:
    return {"shop_id": acct.shop_id, "member_id": acct.member_id, "kind": int(kind), "amount": amount,
            "held_delta": held_delta, "balance_after": acct.available, "order_id": source.order_id,
            "action": source.action, "rule_id": source.rule_id, "multiplier_id": source.multiplier_id,
            "redemption_id": source.redemption_id, "hold_id": source.hold_id, "operator": source.operator,
            "reason": source.reason, "reference": source.reference, "expires_at": expires_at, "created_at": at}


def credit(uow: UnitOfWork, program: Program, acct: Account, kind: EntryKind, points: int, source: Source,
           at: datetime) -> Entry:
    """Adds points as a new lot (a debt is paid off first); returns the entry (with the lot's expiry)."""
    expires_at = domain.expiry_for(at, program.zone, program.expiry_policy, program.expiry_months)
    into_lot = acct.credit(points)
    made = _append(uow, acct, kind, points, 0, source, at, expires_at)
    if into_lot:
        _NEW_LOT(uow.conn, {
            "shop_id": acct.shop_id, "member_id": acct.member_id, "entry_id": made.entry_id,
            "order_id": source.order_id, "amount": into_lot, "remaining": into_lot, "earned_at": at,
            "expires_at": expires_at})
    return made


def earn_points(uow: UnitOfWork, program: Program, acct: Account, points: int, source: Source, at: datetime
                ) -> Entry:
    """Credits earned points and announces them; returns the entry."""
    made = credit(uow, program, acct, EntryKind.EARN, points, source, at)
    acct.count_earned(points)
    uow.emit(acct.shop_id, events_pb2.PointsEarned(
        shop_id=acct.shop_id, member_id=acct.member_id, points=points, action=source.action,
        order_id=source.order_id, balance_after=acct.available, expire_time=to_timestamp(made.expires_at),
        occurred_at=to_timestamp(at)))
    return made


@dataclass(frozen=True)
class Earning:
    """One credit of earned points, for earn_many()."""

    program: Program
    acct: Account
    points: int
    source: Source
    at: datetime


def earn_many(uow: UnitOfWork, earnings: list[Earning]) -> None:
    """earn_points() for many credits in their order (an account may appear more than once),
    with one statement for the entries, one for the lots and one for the events of a shop."""
    entries: list[dict] = []
    new_lots: list[tuple[int, dict]] = []  # (index of its entry, the lot)
    events: list[tuple[str, events_pb2.PointsEarned]] = []
    for e in earnings:
        acct, program, source = e.acct, e.program, e.source
        expires_at = domain.expiry_for(e.at, program.zone, program.expiry_policy, program.expiry_months)
        into_lot = acct.credit(e.points)
        entries.append(_entry_row(acct, EntryKind.EARN, e.points, 0, source, e.at, expires_at))
        if into_lot:
            new_lots.append((len(entries) - 1, {
                "shop_id": acct.shop_id, "member_id": acct.member_id, "order_id": source.order_id,
                "amount": into_lot, "remaining": into_lot, "earned_at": e.at, "expires_at": expires_at}))
        acct.count_earned(e.points)
        events.append((acct.shop_id, events_pb2.PointsEarned(
            shop_id=acct.shop_id, member_id=acct.member_id, points=e.points, action=source.action,
            order_id=source.order_id, balance_after=acct.available, expire_time=to_timestamp(expires_at),
            occurred_at=to_timestamp(e.at))))
    if not entries:
        return
    ids = insert_many(uow.conn, ledger, entries, returning=ledger.c.id)
    if new_lots:
        insert_many(uow.conn, lots, [{**lot, "entry_id": ids[i]} for i, lot in new_lots])
    for shop_id, run in itertools.groupby(events, key=lambda event: event[0]):
        uow.emit_many(shop_id, [payload for _, payload in run])


def take(uow: UnitOfWork, acct: Account, points: int, now: datetime, live: list[Lot], *, prefer_order: str = ""
         ) -> tuple[list[tuple[int, int]], int]:
    """Takes points from the member's `live` lots (from sweep_expired) as the domain chooses
    them, with one statement; returns [(lot_id, taken)] and what the lots could not cover, and
    leaves `live` as the lots are after."""
    taken, uncovered = domain.lots_to_take(live, points, now, prefer_order=prefer_order)
    if taken:
        left = dict(taken)
        live[:] = [dataclasses.replace(lot, remaining=lot.remaining - left.get(lot.lot_id, 0)) for lot in live]
        changes = [{"lot_id": lot.lot_id, "left": lot.remaining} for lot in live if lot.lot_id in left]
        _TAKE(uow.conn, changes[0] if len(changes) == 1 else changes)
    return taken, uncovered



def sweep_expired(uow: UnitOfWork, acct: Account, now: datetime) -> list[Lot]:
    """The member's lots with points left, locked, with one query; those past their date are
    expired first (an EXPIRE entry, before any spend decides). Returns the live ones."""
    rows = _LOTS(uow.conn, {"shop_id": acct.shop_id, "member_id": acct.member_id}).all()
    held = [Lot(r.id, r.remaining, r.expires_at, r.order_id) for r in rows]
    overdue = [lot for lot in held if not lot.live(now)]
    if overdue:
        points = sum(lot.remaining for lot in overdue)
        uow.conn.execute(update(lots).where(lots.c.id.in_([lot.lot_id for lot in overdue])).values(remaining=0))
        post(uow, acct, EntryKind.EXPIRE, -points, 0, Source(), now)
        uow.emit(acct.shop_id, events_pb2.PointsExpired(shop_id=acct.shop_id, member_id=acct.member_id,
                                                        points=points, balance_after=acct.available,
                                                        occurred_at=to_timestamp(now)))
    return [lot for lot in held if lot.live(now)]


def debit(svc: PointsService, uow: UnitOfWork, shop_id: str, member_id: str, points: int, now: datetime
          ) -> tuple[Account, list[tuple[int, int]], list[Lot]]:
    """Locks the account and takes `points` from its live lots, or refuses with the shortfall.
    Returns the account, what was taken from which lot, and the live lots as they are after."""
    load_program(svc, shop_id, uow.conn)
    acct = lock(uow, shop_id, member_id)
    acct.refuse_if_closed()
    live = sweep_expired(uow, acct, now)
    acct.require_spendable(points)
    taken, uncovered = take(uow, acct, points, now, live)
    if uncovered:  # cannot happen while available = Σ live lots − debt; never hide it if it does
        raise RuntimeError(f"lots of {shop_id}/{member_id} do not cover the balance ({uncovered} short)")
    return acct, taken, live


def adjust(svc: PointsService, uow: UnitOfWork, cmd: commands.Adjust) -> Posted:
    """An operator's correction: positive adds a lot, negative takes from the lots and may not
    go below zero."""
    now = utcnow()
    source = Source(operator=cmd.operator, reason=cmd.reason)
    if cmd.points > 0:
        program = load_program(svc, cmd.shop_id, uow.conn)
        acct = lock(uow, cmd.shop_id, cmd.member_id)
        acct.refuse_if_closed()
        made, live = credit(uow, program, acct, EntryKind.ADJUST, cmd.points, source, now), None
    else:
        acct, _, live = debit(svc, uow, cmd.shop_id, cmd.member_id, -cmd.points, now)
        made = post(uow, acct, EntryKind.ADJUST, cmd.points, 0, source, now)
    save(svc, uow, acct)
    uow.emit(cmd.shop_id, events_pb2.PointsAdjusted(
        shop_id=cmd.shop_id, member_id=cmd.member_id, points=cmd.points, kind=int(EntryKind.ADJUST),
        operator=cmd.operator, reason=cmd.reason, balance_after=acct.available, occurred_at=to_timestamp(now)))
    return posted(uow, acct, made, now, live)
