"""成长值衰减: a shop's decay policy applied to all its members at once, in set-based SQL, by the
scheduled job (`python -m services.membership decay`, or the embedded periodic worker) or
DecayGrowth. Each decay is a DECAY entry in the growth ledger, so a balance stays explainable.

- EXPIRE_AFTER_MONTHS N: a member's growth value is at most what they earned in the last N
  calendar months (growth taken before, by refunds or adjustments, is counted against the old).
- PERCENT_PER_IDLE_MONTH P: a member who earned nothing for a month loses P% (rounded down),
  and P% again for each further month without earning.

In QUALIFICATION_MODE_GROWTH, members the decay takes below their tier's threshold follow the
shop's downgrade policy: NEVER keeps them where they are; DOWN_ONE_LEVEL and RECOMPUTE move them
at once when the shop gives no notice, and otherwise announce it (TierExpiring, listed by
ListTierExpiryNotices) and let their tier expire downgrade_notice_days later, when the tier
expiry job re-qualifies them on their growth value then (growth earned meanwhile saves them)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, and_, case, exists, func, insert, literal, or_, select, update

from services.kit.storage import UnitOfWork
from services.kit.timeutil import utcnow
from services.kit.validation import check_ids
from services.membership import growth, lifecycle, standing, tiers
from services.membership.domain import DowngradePolicy, MemberStatus, QualificationMode, TierChangeReason
from services.membership.growth_rules import DecayKind, GrowthSource
from services.membership.tables import growth_accounts, growth_ledger, growth_settings, members

if TYPE_CHECKING:
    from services.membership.context import Membership

log = logging.getLogger("loyalty.membership.jobs")


@dataclass(frozen=True)
class DecayShop:
    shop_id: str
    as_of: datetime

    def __post_init__(self) -> None:
        check_ids(self.shop_id).raise_if_any()


@dataclass(frozen=True)
class Decayed:
    members: int
    growth: int
    downgraded: int
    scheduled: int = 0  # downgrades announced (TierExpiring), to happen downgrade_notice_days later


def months_before(at: datetime, months: int) -> datetime:
    """The same moment `months` calendar months earlier (the month's last day when shorter)."""
    index = at.year * 12 + at.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    days = [31, 29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28, 31, 30, 31, 30, 31, 31, 30, 31,
            30, 31][month - 1]
    return at.replace(year=year, month=month, day=min(at.day, days))


def _plan(kind: DecayKind, months: int, percent: int, shop_id: str,
          as_of: datetime) -> tuple[ColumnElement[bool], ColumnElement[int], str] | None:
    """Which accounts decay, the balance each keeps (SQL over growth_accounts), and the reason."""
    account = growth_accounts.c
    if kind is DecayKind.EXPIRE_AFTER_MONTHS:
        cutoff = months_before(as_of, months)
        recent = func.coalesce(select(func.sum(growth_ledger.c.amount)).where(
            growth_ledger.c.shop_id == account.shop_id, growth_ledger.c.member_id == account.member_id,
            growth_ledger.c.amount > 0, growth_ledger.c.created_at >= cutoff).scalar_subquery(), 0)
        return account.balance > recent, recent, f"growth earned more than {months} months ago no longer counts"
    if kind is DecayKind.PERCENT_PER_IDLE_MONTH:
        since = months_before(as_of, 1)
        last = case((and_(account.decayed_at.is_not(None), or_(account.last_earned_at.is_(None),
                                                                account.decayed_at > account.last_earned_at)),
                     account.decayed_at), else_=account.last_earned_at)
        keep = account.balance - account.balance * percent // 100
        return (and_(account.balance > 0, or_(last.is_(None), last <= since), account.balance * percent // 100 > 0),
                keep, f"−{percent}% after a month without growth earned")
    return None


def decay_shop(ctx: Membership, uow: UnitOfWork, cmd: DecayShop) -> Decayed:
    """Applies the shop's policy as of `cmd.as_of`; running it again at the same moment finds
    nothing more to take."""
    program = ctx.programs.get(cmd.shop_id, uow.conn)
    settings, _ = growth.settings_of(uow.conn, cmd.shop_id)
    d = settings.decay
    plan = _plan(d.kind, d.months, d.percent, cmd.shop_id, cmd.as_of)
    if plan is None:
        return Decayed(0, 0, 0)
    due, keep, reason = plan
    scope = and_(growth_accounts.c.shop_id == cmd.shop_id, due)
    # Members first, as every growth change locks them: no balance moves under the statements.
    uow.conn.execute(select(members.c.member_id).where(
        members.c.shop_id == cmd.shop_id,
        members.c.member_id.in_(select(growth_accounts.c.member_id).where(scope))).with_for_update())
    counted = uow.conn.execute(select(func.count(), func.coalesce(func.sum(growth_accounts.c.balance - keep), 0))
                               .where(scope)).one()
    if not counted[0]:
        return Decayed(0, 0, 0)
    now = utcnow()
    standing.invalidate_shop(ctx, uow, cmd.shop_id)  # balances (and perhaps expiries) move set-wise
    uow.conn.execute(insert(growth_ledger).from_select(
        ["shop_id", "member_id", "amount", "source", "reference", "reason", "operator", "balance_after", "created_at"],
        select(growth_accounts.c.shop_id, growth_accounts.c.member_id, keep - growth_accounts.c.balance,
               literal(int(GrowthSource.DECAY)), literal(""), literal(reason), literal(""), keep, literal(now))
        .where(scope)))
    values = {"balance": keep}
    if d.kind is DecayKind.PERCENT_PER_IDLE_MONTH:
        values["decayed_at"] = literal(cmd.as_of)
    uow.conn.execute(update(growth_accounts).where(scope).values(**values))
    downgraded = scheduled = 0
    if program.ladder.mode is QualificationMode.GROWTH and program.ladder.policy is not DowngradePolicy.NEVER:
        decayed_now = exists().where(
            growth_ledger.c.shop_id == members.c.shop_id, growth_ledger.c.member_id == members.c.member_id,
            growth_ledger.c.source == int(GrowthSource.DECAY), growth_ledger.c.created_at == now)
        # What the tier becomes by the policy (down one level, or what the growth qualifies for).
        target = lifecycle.expiry_level_sql(program.ladder, members.c.cumulative_spend_fen, members.c.trade_count)
        below = and_(members.c.status == MemberStatus.ACTIVE, decayed_now, target < members.c.tier_level)
        if program.rules.notice_days <= 0:
            downgraded = tiers.move_setwise(ctx, uow, cmd.shop_id, program.ladder, target, below,
                                            TierChangeReason.REEVALUATED, now)
        else:
            scheduled = lifecycle.schedule_downgrade(uow, program, below, now)
    return Decayed(int(counted[0]), int(counted[1]), downgraded, scheduled)


def decay_all(ctx: Membership, as_of: datetime | None = None) -> Decayed:
    """Every shop with a decay policy, one transaction each."""
    as_of = as_of or utcnow()
    shops = ctx.db.read(lambda conn: [r.shop_id for r in conn.execute(select(growth_settings.c.shop_id).where(
        growth_settings.c.decay_kind != int(DecayKind.NONE)))])
    total = Decayed(0, 0, 0)
    for shop_id in shops:
        done = ctx.db.transact(lambda uow, shop_id=shop_id: decay_shop(ctx, uow, DecayShop(shop_id, as_of)))
        total = Decayed(total.members + done.members, total.growth + done.growth, total.downgraded + done.downgraded,
                        total.scheduled + done.scheduled)
    if total.members:
        log.info("growth decayed", extra={"members": total.members, "growth": total.growth,
                                          "downgraded": total.downgraded})
    return total

