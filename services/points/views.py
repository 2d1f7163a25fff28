"""Read queries of balances and the ledger: plain data out, no handler, no transaction of their
own beyond a read (the balance is cached until the next write or expiry)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, Connection, and_, case, cast, func, select
from sqlalchemy.engine import Row
from sqlalchemy.sql import ColumnElement

from services.kit.cache import cache_key
from services.kit.codec import DataclassCodec, TypedCache
from services.kit.errors import NotFound
from services.kit.timeutil import utcnow
from services.points import commands, reasons
from services.points.domain import Account, Lot, Source
from services.points.program import load_program
from services.points.service import PointsService
from services.points.tables import accounts, ledger, lots


@dataclass(frozen=True)
class BalanceView:
    shop_id: str
    member_id: str
    available: int
    held: int
    lifetime_earned: int
    next_expiry_at: datetime | None
    next_expiry_amount: int


@dataclass(frozen=True)
class Entry:
    """One ledger entry as a caller sees it."""

    entry_id: int
    kind: int
    amount: int
    held_delta: int
    balance_after: int
    source: Source
    created_at: datetime
    expires_at: datetime | None


BALANCE_CODEC = DataclassCodec(BalanceView)


def total(column: ColumnElement) -> ColumnElement:
    """SUM as a whole number on every backend (PostgreSQL sums bigints to numeric)."""
    return cast(func.coalesce(func.sum(column), 0), BigInteger)


def member_lots(shop_id: str, member_id: str) -> ColumnElement[bool]:
    return and_(lots.c.shop_id == shop_id, lots.c.member_id == member_id)


def balance_key(shop_id: str, member_id: str) -> str:
    return cache_key(shop_id, "points", "balance", member_id)


def no_account(shop_id: str, member_id: str) -> NotFound:
    return NotFound(f"member {member_id!r} has no points account in shop {shop_id!r}",
                    reason=reasons.MEMBER_NOT_FOUND, metadata={"member_id": member_id})


def _entry(row: Row) -> Entry:
    return Entry(row.id, row.kind, row.amount, row.held_delta, row.balance_after,
                 Source(order_id=row.order_id, action=row.action, rule_id=row.rule_id,
                        multiplier_id=row.multiplier_id, redemption_id=row.redemption_id, hold_id=row.hold_id,
                        operator=row.operator, reason=row.reason, reference=row.reference),
                 row.created_at, row.expires_at)


def entry(conn: Connection, entry_id: int) -> Entry:
    return _entry(conn.execute(select(ledger).where(ledger.c.id == entry_id)).one())


def balance(svc: PointsService, query: commands.MemberQuery) -> BalanceView:
    """Cached until the next write or the next expiry, whichever comes first. Lots past their
    date never count, even before the expiry job wrote them off."""
    key = balance_key(query.shop_id, query.member_id)
    balances = TypedCache(svc.cache, BALANCE_CODEC)
    cached = balances.get(key)
    if cached is not None:
        return cached
    now = utcnow()
    load_program(svc, query.shop_id)
    view = svc.db.read(lambda conn: balance_in(conn, query.shop_id, query.member_id, now))
    ttl = svc.cache_ttl
    if view.next_expiry_at is not None:
        ttl = min(ttl, (view.next_expiry_at - now).total_seconds())
    if ttl > 0:
        balances.add(key, view, ttl)
    return view


def balance_in(conn: Connection, shop_id: str, member_id: str, now: datetime | None = None) -> BalanceView:
    """The balance as `conn`'s transaction sees it (a write answers with it: the cache may not
    know it yet)."""
    now = now or utcnow()
    row = conn.execute(select(accounts.c.available, accounts.c.held, accounts.c.lifetime_earned).where(
        accounts.c.shop_id == shop_id, accounts.c.member_id == member_id)).first()
    if row is None:
        raise no_account(shop_id, member_id)
    return _with_lots(conn, shop_id, member_id, row.available, row.held, row.lifetime_earned, now)


def balance_after(conn: Connection, acct: Account, now: datetime) -> BalanceView:
    """The balance of an account this transaction holds locked (and saved), with one query of its lots."""
    return _with_lots(conn, acct.shop_id, acct.member_id, acct.available, acct.held, acct.lifetime_earned, now)


def balance_of(acct: Account, live: list[Lot], now: datetime) -> BalanceView:
    """The balance of a locked account whose live lots are all in `live` (none overdue): no query."""
    dated = [lot for lot in live if lot.live(now) and lot.expires_at is not None]
    next_at = min((lot.expires_at for lot in dated), default=None)
    amount = sum(lot.remaining for lot in dated if lot.expires_at == next_at)
    return BalanceView(acct.shop_id, acct.member_id, acct.available, acct.held, acct.lifetime_earned, next_at, amount)


def _with_lots(conn: Connection, shop_id: str, member_id: str, available: int, held: int, lifetime: int,
               now: datetime) -> BalanceView:
    """Lots past their date taken off `available`, and the next expiry, in one statement."""
    mine = and_(member_lots(shop_id, member_id), lots.c.remaining > 0)
    next_at = select(func.min(lots.c.expires_at)).where(mine, lots.c.expires_at > now).scalar_subquery()
    overdue, upcoming_at, upcoming = conn.execute(select(
        total(case((lots.c.expires_at <= now, lots.c.remaining), else_=0)), next_at,
        total(case((lots.c.expires_at == next_at, lots.c.remaining), else_=0))).where(mine)).one()
    return BalanceView(shop_id, member_id, available - overdue, held, lifetime, upcoming_at if upcoming else None,
                       upcoming)


def ledger_page(svc: PointsService, query: commands.LedgerQuery) -> list[Entry]:
    """Up to `query.limit` entries of the member's ledger, newest first."""
    return svc.db.read(lambda conn: _ledger_page(svc, conn, query))


def _ledger_page(svc: PointsService, conn: Connection, query: commands.LedgerQuery) -> list[Entry]:
    load_program(svc, query.shop_id, conn)
    if conn.execute(select(accounts.c.member_id).where(accounts.c.shop_id == query.shop_id,
                                                       accounts.c.member_id == query.member_id)).first() is None:
        raise no_account(query.shop_id, query.member_id)
    select_page = (select(ledger).where(ledger.c.shop_id == query.shop_id, ledger.c.member_id == query.member_id)
                   .order_by(ledger.c.id.desc()).limit(query.limit))
    if query.kinds:
        select_page = select_page.where(ledger.c.kind.in_(query.kinds))
    if query.before_id is not None:
        select_page = select_page.where(ledger.c.id < query.before_id)
    if query.start is not None:
        select_page = select_page.where(ledger.c.created_at >= query.start)
    if query.end is not None:
        select_page = select_page.where(ledger.c.created_at < query.end)
    return [_entry(row) for row in conn.execute(select_page)]
