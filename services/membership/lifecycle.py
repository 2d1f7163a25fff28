"""Tier lifecycle (动态调整): a tier reached holds for the program's tier_validity_months, after
which the member is re-qualified on the last period's figures (completed spend and trades within
the period before expiry, from membership's own order facts) by the shop's downgrade policy; a
TierExpiring notice goes out downgrade_notice_days before an expiry that would move a member
down. A scheduled job applies both set-wise, one transaction per shop, in the shop's time zone
(expiries fall on shop-local midnights). It is idempotent: a notice is kept once per member and
expiry, and an expired tier gets its next expiry (or none, at level 0) in the same transaction.

In production a CronJob runs `python -m services.membership expire-tiers`; in the embedded
default (or with LOYALTY_MEMBERSHIP_JOBS=1) the service's periodic worker runs it every minute."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from loyalty.membership.v1 import events_pb2
from sqlalchemy import ColumnElement, Connection, and_, case, exists, func, insert, or_, select, update

from services.kit.jobs import PeriodicJob
from services.kit.storage import UnitOfWork
from services.kit.timeutil import to_timestamp, utcnow
from services.membership import rules, standing, tiers
from services.membership.domain import DowngradePolicy, Ladder, MemberStatus, TierChangeReason
from services.membership.rules import local_date, local_midnight_utc
from services.membership.tables import members, orders, programs, tier_expiry_notices

if TYPE_CHECKING:
    from services.membership.context import Membership
    from services.membership.programs import Program

log = logging.getLogger("loyalty.membership.lifecycle")


@dataclass(frozen=True)
class ExpiryRun:
    notices: int
    renewed: int
    moved: int


@dataclass(frozen=True)
class Notice:
    id: int
    member_id: str
    tier_level: int
    expected_level: int
    expires_at: datetime
    notified_at: datetime


# ----- the rule in SQL --------------------------------------------------------------------------


def period_figures(start: datetime, end: datetime) -> tuple[ColumnElement[int], ColumnElement[int]]:
    """A member's completed spend (less refunds) and trades completed in [start, end), as scalar
    subqueries correlated to the members row."""
    scope = and_(orders.c.shop_id == members.c.shop_id, orders.c.member_id == members.c.member_id,
                 orders.c.counted.is_(True), orders.c.completed_at >= start, orders.c.completed_at < end)
    spend = select(func.coalesce(func.sum(orders.c.amount_fen - orders.c.refunded_fen), 0)).where(
        scope).scalar_subquery()
    trades = select(func.count()).where(scope).scalar_subquery()
    return spend, trades


def expiry_level_sql(ladder: Ladder, spend: ColumnElement[int], trades: ColumnElement[int]) -> ColumnElement[int]:
    """rules.expiry_level() in SQL, on the level the figures qualify for (tiers.target_level_sql
    under RECOMPUTE is exactly that)."""
    qualified = tiers.target_level_sql(Ladder(ladder.tiers, ladder.mode, DowngradePolicy.RECOMPUTE), spend, trades)
    current = members.c.tier_level
    if ladder.policy is DowngradePolicy.NEVER:
        return case((qualified > current, qualified), else_=current)
    if ladder.policy is DowngradePolicy.DOWN_ONE_LEVEL:
        return case((qualified >= current, current), else_=current - 1)
    return qualified


# ----- expiry stamps ----------------------------------------------------------------------------


def validity_changed(ctx: Membership, uow: UnitOfWork, before: Program, after: Program, now: datetime) -> None:
    """UpdateProgram changed tier validity: turned off, no tier expires any more; turned on (or
    changed), tiers that had no expiry hold from now for the new period. Expiries already set
    stay (they were announced by the rules of their day)."""
    if before.rules.validity_months == after.rules.validity_months:
        return
    scope = and_(members.c.shop_id == after.shop_id, members.c.status == MemberStatus.ACTIVE)
    standing.invalidate_shop(ctx, uow, after.shop_id)
    expiry = rules.tier_expiry(after.rules, ZoneInfo(after.time_zone), 1, now)
    if expiry is None:
        uow.conn.execute(update(members).where(scope, members.c.tier_expires_at.is_not(None))
                         .values(tier_expires_at=None))
        return
    uow.conn.execute(update(members).where(scope, members.c.tier_level > 0, members.c.tier_expires_at.is_(None))
                     .values(tier_expires_at=expiry))


def stamp_imported(ctx: Membership, uow: UnitOfWork, program: Program, member_ids: list[str], now: datetime) -> None:
    """Imported members' tiers (reached as of the import) expire like any other."""
    expiry = rules.tier_expiry(program.rules, ZoneInfo(program.time_zone), 1, now)
    if expiry is not None and member_ids:
        standing.invalidate_shop(ctx, uow, program.shop_id)
        uow.conn.execute(update(members).where(members.c.shop_id == program.shop_id, members.c.tier_level > 0,
                                               members.c.member_id.in_(member_ids)).values(tier_expires_at=expiry))


def schedule_downgrade(uow: UnitOfWork, program: Program, who: ColumnElement[bool], now: datetime) -> int:
    """Announces a coming downgrade (decay took these members below their tier): their tier
    expires at the shop-local midnight downgrade_notice_days on (unless it expires sooner), a
    TierExpiring notice goes out now, and the expiry job re-qualifies them then. Returns how many
    were announced."""
    zone = ZoneInfo(program.time_zone)
    last_day = local_date(now, zone) + timedelta(days=program.rules.notice_days)
    expires_at = local_midnight_utc(last_day + timedelta(days=1), zone)
    uow.conn.execute(update(members).where(
        members.c.shop_id == program.shop_id, who,
        or_(members.c.tier_expires_at.is_(None), members.c.tier_expires_at > expires_at)).values(
        tier_expires_at=expires_at))
    return _notify(uow, program, zone, expires_at, now)


# ----- the scheduled job ------------------------------------------------------------------------


def expire_all(ctx: Membership, now: datetime | None = None) -> ExpiryRun:
    """Every shop with tier validity: notices due, then expiries due; one transaction a shop."""
    now = now or utcnow()

    def due_shops(conn: Connection) -> list[str]:
        # Shops with tier validity, and shops whose members have a downgrade announced by decay.
        valid = {r.shop_id for r in conn.execute(select(programs.c.shop_id, programs.c.rules).where(
            programs.c.rules.is_not(None))) if rules.rules_from_json(r.rules).validity_months > 0}
        announced = set(conn.execute(select(members.c.shop_id).distinct().where(
            members.c.tier_expires_at.is_not(None), members.c.status == MemberStatus.ACTIVE)).scalars())
        return sorted(valid | announced)

    shops = ctx.db.read(due_shops)
    notices = renewed = moved = 0
    for shop_id in shops:
        done = ctx.db.transact(lambda uow, shop_id=shop_id: expire_shop(ctx, uow, shop_id, now))
        notices, renewed, moved = notices + done.notices, renewed + done.renewed, moved + done.moved
    return ExpiryRun(notices, renewed, moved)


def expire_shop(ctx: Membership, uow: UnitOfWork, shop_id: str, now: datetime) -> ExpiryRun:
    """One shop's notices and expiries as of `now`. The program row is locked, so that two runs
    (a CronJob and a worker) queue rather than both act."""
    program = ctx.programs.for_update(uow, shop_id)
    r, zone = program.rules, ZoneInfo(program.time_zone)
    notices = 0
    if r.notice_days > 0 and program.ladder.policy is not DowngradePolicy.NEVER:
        for expires_at in _expiries(uow.conn, shop_id, now, now + timedelta(days=r.notice_days)):
            notices += _notify(uow, program, zone, expires_at, now)
    renewed = moved = 0
    for expires_at in _expiries(uow.conn, shop_id, None, now):
        standing.invalidate_shop(ctx, uow, shop_id)  # tiers move or renew set-wise
        spend, trades = period_figures(rules.period_start(r, zone, expires_at), expires_at)
        target = expiry_level_sql(program.ladder, spend, trades)
        due = members.c.tier_expires_at == expires_at
        # Those who move get their new tier's expiry from tiers.move_setwise; the others renew.
        moved += tiers.move_setwise(ctx, uow, shop_id, program.ladder, target,
                                    and_(due, target != members.c.tier_level), TierChangeReason.EXPIRED, now)
        # Without tier validity (an expiry decay announced), a tier that stays holds for good again.
        renewed += uow.conn.execute(update(members).where(
            members.c.shop_id == shop_id, members.c.status == MemberStatus.ACTIVE, due).values(
            tier_expires_at=rules.tier_expiry(r, zone, 1, now))).rowcount
    return ExpiryRun(notices, renewed, moved)


def _expiries(conn: Connection, shop_id: str, after: datetime | None, until: datetime) -> list[datetime]:
    """The distinct expiries in (after, until] of the shop's active members (shop-local midnights:
    a few a day at most), oldest first."""
    query = select(members.c.tier_expires_at).distinct().where(
        members.c.shop_id == shop_id, members.c.status == MemberStatus.ACTIVE,
        members.c.tier_expires_at <= until).order_by(members.c.tier_expires_at)
    if after is not None:
        query = query.where(members.c.tier_expires_at > after)
    return [row.tier_expires_at for row in conn.execute(query)]


def _notify(uow: UnitOfWork, program: Program, zone: ZoneInfo, expires_at: datetime, now: datetime) -> int:
    """TierExpiring for each member whose tier expires at `expires_at` and whom the period's
    figures so far would move down, once per member and expiry."""
    shop_id = program.shop_id
    spend, trades = period_figures(rules.period_start(program.rules, zone, expires_at), expires_at)
    expected = expiry_level_sql(program.ladder, spend, trades)
    noticed = exists().where(tier_expiry_notices.c.shop_id == members.c.shop_id,
                             tier_expiry_notices.c.member_id == members.c.member_id,
                             tier_expiry_notices.c.expires_at == expires_at)
    due = uow.conn.execute(select(members.c.member_id, members.c.tier_level, expected.label("expected")).where(
        members.c.shop_id == shop_id, members.c.status == MemberStatus.ACTIVE,
        members.c.tier_expires_at == expires_at, expected < members.c.tier_level, ~noticed)).all()
    if not due:
        return 0
    uow.conn.execute(insert(tier_expiry_notices), [
        {"shop_id": shop_id, "member_id": m.member_id, "expires_at": expires_at, "tier_level": m.tier_level,
         "expected_level": m.expected, "notified_at": now} for m in due])
    ladder = program.ladder
    for i in range(0, len(due), 1000):
        uow.emit_many(shop_id, [events_pb2.TierExpiring(
            shop_id=shop_id, member_id=m.member_id, tier_level=m.tier_level, tier_code=ladder.tier(m.tier_level).code,
            expected_level=m.expected, expires_at=to_timestamp(expires_at), notified_at=to_timestamp(now))
            for m in due[i:i + 1000]])
    return len(due)


def list_notices(ctx: Membership, shop_id: str, *, limit: int, before_id: int | None) -> list[Notice]:
    """The shop's TierExpiring notices, newest first."""

    def read(conn: Connection) -> list[Notice]:
        ctx.programs.get(shop_id, conn)
        n = tier_expiry_notices.c
        query = select(tier_expiry_notices).where(n.shop_id == shop_id).order_by(n.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(n.id < before_id)
        return [Notice(row.id, row.member_id, row.tier_level, row.expected_level, row.expires_at, row.notified_at)
                for row in conn.execute(query)]

    return ctx.db.read(read)


def periodic_jobs(ctx: Membership, *, batch_jobs: bool) -> list[PeriodicJob]:
    """The tier expiry job every minute where the service runs its batch jobs itself."""
    return [PeriodicJob("expire-tiers", 60.0, lambda: _expire_and_log(ctx))] if batch_jobs else []


def _expire_and_log(ctx: Membership) -> None:
    run = expire_all(ctx)
    if run.notices or run.moved or run.renewed:
        log.info("tier expiry", extra={"notices": run.notices, "moved": run.moved, "renewed": run.renewed})
