"""A rule tree as one SQL boolean over `member_facts` (never a loop over members). Lifetime figures
and dates are member_facts' columns; a windowed figure (window_days N > 0) is a correlated
subquery over the member's orders completed since `now - N days`; HAS_TAG is an EXISTS over
member_tags. `now` is passed in, so windows move with time and tests can choose it.

NULL semantics (rules.py): a comparison with a fact the member does not have does not hold
(SQL's NULL in a WHERE); NOT holds for the members its rule does not select, so its operand is
coalesced to false before it is negated."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Select,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    not_,
    or_,
    select,
    true,
)

from services.segments.rules import TEXT_FACTS, All, Condition, Fact, Not, Op, Rule
from services.segments.tables import member_categories, member_facts, member_orders, member_tags, rfm_scores

mf = member_facts.c
mo = member_orders.c

_COLUMNS = {
    Fact.TIER_LEVEL: mf.tier_level,
    Fact.POINTS_BALANCE: mf.points_balance,
    Fact.JOIN_CHANNEL: mf.join_channel,
    Fact.BIRTH_MONTH: mf.birth_month,
    Fact.REFERRALS: mf.referrals,
    Fact.LAST_PURCHASE: mf.last_purchase_at,
    Fact.LAST_ACTIVITY: mf.last_activity_at,
    Fact.JOINED: mf.joined_at,
    Fact.SHARES: mf.shares,
    Fact.GENDER: mf.gender,
    Fact.REGION: mf.region,
    Fact.SHARES_AND_REFERRALS: mf.shares + mf.referrals,
}


def _orders_since(since: datetime) -> ColumnElement[bool]:
    return and_(mo.shop_id == mf.shop_id, mo.member_id == mf.member_id, mo.completed_at >= since)


def _window_trades(since: datetime) -> ColumnElement:
    return (select(func.count()).where(_orders_since(since), mo.fully_refunded.is_(False))
            .correlate(member_facts).scalar_subquery())


def _window_trades_at_least(since: datetime, k: int) -> ColumnElement[bool]:
    """At least k trades in the window, as EXISTS of the k-th (k >= 1): a semi-join for k = 1,
    and a probe that stops at the k-th order otherwise, where a count reads them all."""
    kept = select(mo.order_id).where(_orders_since(since), mo.fully_refunded.is_(False))
    return exists(kept.offset(k - 1) if k > 1 else kept).correlate(member_facts)


def _window_trades_compared(c: Condition, since: datetime) -> ColumnElement[bool] | None:
    """A windowed trade count against a threshold as EXISTS / NOT EXISTS (the count is never NULL,
    so the two agree on every member); None for the comparisons a count says best."""
    x = c.values[0] if c.values else 0
    at_least = {Op.GE: x, Op.GT: x + 1}.get(c.op)
    if at_least is not None:
        return true() if at_least <= 0 else _window_trades_at_least(since, at_least)
    at_most = {Op.LE: x, Op.LT: x - 1}.get(c.op, 0 if c.op is Op.EQ and x == 0 else None)
    if at_most is not None:
        return false() if at_most < 0 else not_(_window_trades_at_least(since, at_most + 1))
    if c.op is Op.NE and x == 0:
        return _window_trades_at_least(since, 1)
    return None


def _window_spend(since: datetime) -> ColumnElement:
    total = cast(func.coalesce(func.sum(mo.amount_fen - mo.refunded_fen), 0), BigInteger)
    return select(total).where(_orders_since(since)).correlate(member_facts).scalar_subquery()


def _window_refunds(since: datetime) -> ColumnElement:
    total = cast(func.coalesce(func.sum(mo.refunds), 0), BigInteger)
    return select(total).where(_orders_since(since)).correlate(member_facts).scalar_subquery()


def _window_average(since: datetime) -> ColumnElement:
    """Spend over trades in the window (integer fen, rounded down); NULL without a trade in it."""
    trades = func.sum(case((mo.fully_refunded.is_(False), 1), else_=0))
    spend = cast(func.sum(mo.amount_fen - mo.refunded_fen), BigInteger)
    average = case((trades > 0, spend // trades), else_=None)
    return select(average).where(_orders_since(since)).correlate(member_facts).scalar_subquery()


# ----- order details: units, promotion share, categories bought ---------------------------------------

_KEPT = mo.fully_refunded.is_(False)  # a trade that counts (not refunded in full)


def _window_units(since: datetime) -> ColumnElement:
    total = cast(func.coalesce(func.sum(case((_KEPT, mo.units), else_=0)), 0), BigInteger)
    return select(total).where(_orders_since(since)).correlate(member_facts).scalar_subquery()


def _percent(part: ColumnElement, whole: ColumnElement) -> ColumnElement:
    """part of whole in whole percent (rounded down); NULL when whole is 0."""
    return case((whole > 0, (part * 100) // whole), else_=None)


def _window_promoted_share(since: datetime) -> ColumnElement:
    trades = func.sum(case((_KEPT, 1), else_=0))
    promoted = func.sum(case((and_(_KEPT, or_(mo.coupon_applied, mo.campaign_applied)), 1), else_=0))
    return select(_percent(promoted, trades)).where(_orders_since(since)).correlate(member_facts).scalar_subquery()


def _bought_category(c: Condition, now: datetime) -> ColumnElement[bool]:
    """The member bought one of the categories (last within the window, if one is given)."""
    mc = member_categories.c
    bought = select(mc.category_id).where(mc.shop_id == mf.shop_id, mc.member_id == mf.member_id,
                                          mc.category_id.in_(list(c.texts)))
    if c.window_days:
        bought = bought.where(mc.last_bought_at >= now - timedelta(days=c.window_days))
    return exists(bought.correlate(member_facts))


_WINDOWED_DETAILS = {Fact.UNITS: _window_units, Fact.PROMOTED_SHARE_PERCENT: _window_promoted_share}
_LIFETIME_DETAILS = {Fact.UNITS: mf.units, Fact.PROMOTED_SHARE_PERCENT: _percent(mf.promoted_trades, mf.trades)}


# RFM: the member's score or class at the shop's last recompute, NULL without a row (no comparison holds).
_RFM_COLUMNS = {Fact.RFM_RECENCY: rfm_scores.c.recency, Fact.RFM_FREQUENCY: rfm_scores.c.frequency,
                Fact.RFM_MONETARY: rfm_scores.c.monetary, Fact.RFM_CLASS: rfm_scores.c.rfm_class}


def _rfm_value(fact: Fact) -> ColumnElement:
    return (select(_RFM_COLUMNS[fact]).where(rfm_scores.c.shop_id == mf.shop_id,
                                             rfm_scores.c.member_id == mf.member_id)
            .correlate(member_facts).scalar_subquery())


def fact_value(fact: Fact, window_days: int, now: datetime) -> ColumnElement:
    """The SQL value of a numeric or date fact for the member row being filtered."""
    if fact in _COLUMNS:
        return _COLUMNS[fact]
    if fact in _WINDOWED_DETAILS:
        return _WINDOWED_DETAILS[fact](now - timedelta(days=window_days)) if window_days else _LIFETIME_DETAILS[fact]
    if fact in _RFM_COLUMNS:
        return _rfm_value(fact)
    if window_days:
        since = now - timedelta(days=window_days)
        return {Fact.TRADES: _window_trades, Fact.SPEND_FEN: _window_spend, Fact.REFUNDS: _window_refunds,
                Fact.AVERAGE_ORDER_FEN: _window_average}[fact](since)
    if fact is Fact.TRADES:
        return mf.trades
    if fact is Fact.SPEND_FEN:
        return mf.spend_fen
    if fact is Fact.REFUNDS:
        return mf.refunds
    if fact is Fact.AVERAGE_ORDER_FEN:
        return case((mf.trades > 0, mf.spend_fen // mf.trades), else_=None)
    raise ValueError(f"no value for {fact!r}")


def _condition(c: Condition, now: datetime) -> ColumnElement[bool]:
    if c.op is Op.HAS_TAG:
        return exists(select(member_tags.c.member_id).where(
            member_tags.c.shop_id == mf.shop_id, member_tags.c.member_id == mf.member_id,
            member_tags.c.tag_id == c.tag_id).correlate(member_facts))
    if c.fact is Fact.CATEGORY:
        return _bought_category(c, now)
    if c.fact is Fact.TRADES and c.window_days:
        compared = _window_trades_compared(c, now - timedelta(days=c.window_days))
        if compared is not None:
            return compared
    value = fact_value(c.fact, c.window_days, now)
    if c.op is Op.WITHIN_DAYS:
        return value >= now - timedelta(days=c.values[0])
    if c.op is Op.NOT_WITHIN_DAYS:
        return or_(value.is_(None), value < now - timedelta(days=c.values[0]))
    if c.op is Op.BETWEEN:
        return value.between(c.values[0], c.values[1])
    operands = c.texts if c.fact in TEXT_FACTS else c.values
    if c.op is Op.IN:
        return value.in_(list(operands))
    x = operands[0]
    return {Op.EQ: value == x, Op.NE: value != x, Op.LT: value < x, Op.LE: value <= x, Op.GT: value > x,
            Op.GE: value >= x}[c.op]


_NEGATED = {Op.EQ: Op.NE, Op.NE: Op.EQ, Op.LT: Op.GE, Op.LE: Op.GT, Op.GT: Op.LE, Op.GE: Op.LT,
            Op.WITHIN_DAYS: Op.NOT_WITHIN_DAYS, Op.NOT_WITHIN_DAYS: Op.WITHIN_DAYS}


def _negated_column_condition(rule: Rule, now: datetime) -> ColumnElement[bool] | None:
    """NOT of a comparison with one of member_facts' columns as the opposite comparison, holding
    where the column is NULL too ("not purchased within 30 days" is "last purchase NULL or before
    the 30 days"): the planner estimates its rows as well as a hand-written query, where it cannot
    see through NOT COALESCE(...). A windowed trade count's comparison likewise (the count is never
    NULL). None for any other rule."""
    if not isinstance(rule, Condition) or rule.op not in _NEGATED:
        return None
    windowed_trades = rule.fact is Fact.TRADES and rule.window_days > 0
    if not windowed_trades and rule.fact not in _COLUMNS:
        return None
    opposite = _condition(replace(rule, op=_NEGATED[rule.op]), now)
    if windowed_trades:
        return opposite  # a windowed count is never NULL: NOT (at least k) is NOT EXISTS of the k-th, an anti-join
    if rule.op in (Op.WITHIN_DAYS, Op.NOT_WITHIN_DAYS):
        return opposite  # NOT_WITHIN_DAYS holds for NULL already, and WITHIN_DAYS is NOT (NULL or before)
    return or_(_COLUMNS[rule.fact].is_(None), opposite)


def compile_rule(rule: Rule, now: datetime) -> ColumnElement[bool]:
    """The rule as a boolean over the member_facts row being filtered (true: selected)."""
    if isinstance(rule, Condition):
        return _condition(rule, now)
    if isinstance(rule, Not):
        negated = _negated_column_condition(rule.rule, now)
        if negated is not None:
            return negated
        return not_(func.coalesce(compile_rule(rule.rule, now), false(), type_=Boolean))
    parts = [compile_rule(r, now) for r in rule.rules]
    return and_(*parts) if isinstance(rule, All) else or_(*parts)


def members_query(shop_id: str, rule: Rule, now: datetime) -> Select:
    """SELECT member_id of the shop's members (not those who left) the rule selects now."""
    return select(mf.member_id).where(mf.shop_id == shop_id, mf.left_at.is_(None), compile_rule(rule, now))
