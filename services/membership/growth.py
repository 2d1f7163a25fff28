"""Growth value (成长值): the append-only growth ledger and each member's balance, fed by
completed spend (in CompleteOrder's transaction), by the actions points hears (its ActionRecorded
events, so a storefront reports a sign-in or review once, to points), and by operators; refunds
take back their order's share. A rise may reach a milestone (GrowthMilestoneReached, once per
member and milestone); in QUALIFICATION_MODE_GROWTH any change re-qualifies the member.

Lock order: the member's row (members), then their growth account, as CompleteOrder does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from loyalty.membership.v1 import events_pb2
from sqlalchemy import Connection, and_, bindparam, cast, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Row

from services.kit import storage
from services.kit.errors import InvalidArgument, NotFound, Violations
from services.kit.storage import Database, UnitOfWork
from services.kit.timeutil import to_timestamp, utcnow
from services.kit.validation import check_ids, validate_id
from services.membership import domain, growth_rules, standing, tiers, views
from services.membership.commands import check_audited
from services.membership.domain import MemberStatus, QualificationMode, TierChangeReason
from services.membership.growth_rules import Decay, DecayKind, GrowthSettings, GrowthSource
from services.membership.tables import (
    growth_accounts,
    growth_counts,
    growth_ledger,
    growth_milestones,
    growth_settings,
    members,
    order_growth,
)

if TYPE_CHECKING:
    from services.membership.context import Membership
    from services.membership.programs import Program


@dataclass(frozen=True)
class GrowthEntry:
    id: int
    amount: int
    source: int
    reference: str
    reason: str
    operator: str
    balance_after: int
    created_at: datetime


@dataclass(frozen=True)
class GrowthView:
    member_id: str
    balance: int
    last_earned_at: datetime | None


@dataclass(frozen=True)
class Adjusted:
    entry: GrowthEntry
    tier: domain.Tier
    tier_changed: bool


@dataclass(frozen=True)
class AdjustGrowth:
    shop_id: str
    member_id: str
    amount: int
    reason: str
    operator: str

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        validate_id(self.member_id, "member_id", v)
        v.check(self.amount != 0 and abs(self.amount) <= growth_rules.MAX_GROWTH, "amount",
                f"non-zero, at most {growth_rules.MAX_GROWTH} either way")
        check_audited(v, self.reason, self.operator)
        v.raise_if_any()


@dataclass(frozen=True)
class UpdateGrowthRules:
    """None: not named by the update mask."""

    shop_id: str
    rules: tuple[growth_rules.GrowthRule, ...] | None
    decay: Decay | None
    milestones: tuple[growth_rules.Milestone, ...] | None

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        v.check(self.rules is not None or self.decay is not None or self.milestones is not None, "update_mask",
                "name at least one of: rules, decay, milestones")
        if self.rules is not None:
            v.check(len({r.source for r in self.rules}) == len(self.rules), "growth_rules.rules",
                    "one rule per source")
        growth_rules.validate(GrowthSettings({r.source: r for r in self.rules or ()}, self.decay or Decay(),
                                             self.milestones or ()), v)
        v.raise_if_any()


# ----- settings ---------------------------------------------------------------------------------


def settings_of(conn: Connection, shop_id: str) -> tuple[GrowthSettings, datetime | None]:
    """The shop's growth settings (the defaults until it changes them) and when they changed."""
    row = conn.execute(select(growth_settings).where(growth_settings.c.shop_id == shop_id)).first()
    if row is None:
        return growth_rules.default_settings(), None
    return GrowthSettings(growth_rules.rules_from_json(row.rules),
                          Decay(DecayKind(row.decay_kind), row.decay_months, row.decay_percent),
                          growth_rules.milestones_from_json(row.milestones)), row.updated_at


def settings_loader(db: Database) -> Callable[[str, Connection | None], tuple[GrowthSettings, datetime | None]]:
    """What the context's per-shop memo of growth settings loads (in the caller's transaction
    when it has one)."""
    def load(shop_id: str, conn: Connection | None) -> tuple[GrowthSettings, datetime | None]:
        return settings_of(conn, shop_id) if conn is not None else db.read(lambda c: settings_of(c, shop_id))

    return load


def get_rules(ctx: Membership, shop_id: str) -> tuple[GrowthSettings, datetime | None]:
    def read(conn: Connection) -> tuple[GrowthSettings, datetime | None]:
        ctx.programs.get(shop_id, conn)
        return settings_of(conn, shop_id)

    return ctx.db.read(read)


def update_rules(ctx: Membership, uow: UnitOfWork, cmd: UpdateGrowthRules) -> tuple[GrowthSettings, datetime]:
    """Replaces what the mask names: the rules given (others keep theirs), the decay, the milestones."""
    ctx.programs.for_update(uow, cmd.shop_id)
    ctx.growth_settings.invalidate(uow, cmd.shop_id)
    current, _ = settings_of(uow.conn, cmd.shop_id)
    rules = {**current.rules, **{r.source: r for r in cmd.rules or ()}}
    settings = GrowthSettings(rules, current.decay if cmd.decay is None else cmd.decay,
                              current.milestones if cmd.milestones is None else
                              tuple(sorted(cmd.milestones, key=lambda m: m.threshold)))
    now = utcnow()
    values = {"rules": growth_rules.rules_json(settings.rules), "decay_kind": int(settings.decay.kind),
              "decay_months": settings.decay.months, "decay_percent": settings.decay.percent,
              "milestones": growth_rules.milestones_json(settings.milestones), "updated_at": now}
    if uow.conn.execute(update(growth_settings).where(growth_settings.c.shop_id == cmd.shop_id)
                        .values(**values)).rowcount == 0:
        uow.conn.execute(insert(growth_settings), {"shop_id": cmd.shop_id, **values})
    return settings, now


# ----- reads ------------------------------------------------------------------------------------


def balance_of(conn: Connection, shop_id: str, member_id: str) -> int:
    row = conn.execute(select(growth_accounts.c.balance).where(
        growth_accounts.c.shop_id == shop_id, growth_accounts.c.member_id == member_id)).first()
    return row.balance if row else 0


def _known_member(ctx: Membership, conn: Connection, shop_id: str, member_id: str) -> None:
    ctx.programs.get(shop_id, conn)
    if conn.execute(select(members.c.member_id).where(members.c.shop_id == shop_id,
                                                      members.c.member_id == member_id)).first() is None:
        raise views.member_not_found(member_id)


def get_growth(ctx: Membership, shop_id: str, member_id: str) -> GrowthView:
    validate_member(member_id)

    def read(conn: Connection) -> GrowthView:
        _known_member(ctx, conn, shop_id, member_id)
        row = conn.execute(select(growth_accounts).where(growth_accounts.c.shop_id == shop_id,
                                                         growth_accounts.c.member_id == member_id)).first()
        return GrowthView(member_id, row.balance if row else 0, row.last_earned_at if row else None)

    return ctx.db.read(read)


def ledger(ctx: Membership, shop_id: str, member_id: str, *, limit: int, before_id: int | None) -> list[GrowthEntry]:
    """The member's growth entries, newest first (also after they left)."""
    validate_member(member_id)

    def read(conn: Connection) -> list[GrowthEntry]:
        _known_member(ctx, conn, shop_id, member_id)
        query = (select(growth_ledger).where(growth_ledger.c.shop_id == shop_id, growth_ledger.c.member_id == member_id)
                 .order_by(growth_ledger.c.id.desc()).limit(limit))
        if before_id is not None:
            query = query.where(growth_ledger.c.id < before_id)
        return [_entry(r) for r in conn.execute(query)]

    return ctx.db.read(read)


def validate_member(member_id: str) -> None:
    v = Violations()
    validate_id(member_id, "member_id", v)
    v.raise_if_any()


def _entry(r: Row) -> GrowthEntry:
    return GrowthEntry(r.id, r.amount, r.source, r.reference, r.reason, r.operator, r.balance_after, r.created_at)


# ----- changes ----------------------------------------------------------------------------------


# Built once, run prepared: every completed order adds these.
_LEDGER_ENTRY = storage.Prepared(insert(growth_ledger).returning(growth_ledger.c.id))
_ORDER_GROWTH = storage.Prepared(insert(order_growth))


def _rise_statement() -> storage.Prepared:
    """PostgreSQL: a rise's account and its ledger entry in one statement (the account added to in
    a data-modifying CTE, the entry made from what it returns): one round trip instead of two."""
    adding = pg_insert(growth_accounts).values(shop_id=bindparam("shop_id"), member_id=bindparam("member_id"),
                                              balance=bindparam("amount"), last_earned_at=bindparam("at"),
                                              decayed_at=None)
    account = adding.on_conflict_do_update(
        index_elements=["shop_id", "member_id"],
        set_={"balance": growth_accounts.c.balance + adding.excluded.balance,
              "last_earned_at": adding.excluded.last_earned_at}).returning(growth_accounts.c.balance).cte("account")
    given = ["shop_id", "member_id", "amount", "source", "reference", "reason", "operator"]
    # Typed: a parameter of a SELECT list has no type of its own when the statement is prepared.
    entry = select(*[cast(bindparam(name), growth_ledger.c[name].type) for name in given], account.c.balance,
                   cast(bindparam("created_at"), growth_ledger.c.created_at.type))
    return storage.Prepared(insert(growth_ledger).from_select([*given, "balance_after", "created_at"], entry)
                            .returning(growth_ledger.c.id, growth_ledger.c.balance_after).add_cte(account))


_RISE = _rise_statement()


def post(ctx: Membership, uow: UnitOfWork, program: Program, member: Row, amount: int, source: GrowthSource,
         at: datetime, *, reference: str = "", reason: str = "", operator: str = "",
         settings: GrowthSettings | None = None) -> tuple[GrowthEntry, int]:
    """One ledger entry for the member (their row locked by the caller) and their new balance; a
    rise emits the milestones it reaches. Returns the entry and the balance after it."""
    shop_id, member_id = member.shop_id, member.member_id
    standing.invalidate_member(ctx, uow, shop_id, member_id)
    now = utcnow()
    if amount > 0 and uow.conn.dialect.name == "postgresql":  # a rise (every completed order): one statement
        entry_id, after = _RISE(uow.conn, {
            "shop_id": shop_id, "member_id": member_id, "amount": amount, "at": at, "source": int(source),
            "reference": reference[:64], "reason": reason, "operator": operator, "created_at": now}).one()
        return _posted(ctx, uow, member, GrowthEntry(entry_id, amount, int(source), reference[:64], reason, operator,
                                                     after, now), after - amount, settings)
    if amount > 0:  # a rise (the busy path: every completed order): one statement adds it
        after = storage.add_returning(uow.conn, growth_accounts, {
            "shop_id": shop_id, "member_id": member_id, "balance": amount, "last_earned_at": at,
            "decayed_at": None}, keys=("shop_id", "member_id"), add="balance", set_=("last_earned_at",))
        before = after - amount
    else:
        account = uow.conn.execute(select(growth_accounts).where(
            growth_accounts.c.shop_id == shop_id, growth_accounts.c.member_id == member_id)).first()
        before = account.balance if account else 0
        after = max(0, before + amount)  # never below zero
        if account is None:
            uow.conn.execute(insert(growth_accounts), {"shop_id": shop_id, "member_id": member_id, "balance": after,
                                                       "last_earned_at": None, "decayed_at": None})
        elif after != before:
            uow.conn.execute(update(growth_accounts).where(growth_accounts.c.shop_id == shop_id,
                                                           growth_accounts.c.member_id == member_id)
                             .values(balance=after))
    entry_id = _LEDGER_ENTRY(uow.conn, {
        "shop_id": shop_id, "member_id": member_id, "amount": after - before, "source": int(source),
        "reference": reference[:64], "reason": reason, "operator": operator, "balance_after": after,
        "created_at": now}).scalar_one()
    return _posted(ctx, uow, member, GrowthEntry(entry_id, after - before, int(source), reference[:64], reason,
                                                 operator, after, now), before, settings)


def _posted(ctx: Membership, uow: UnitOfWork, member: Row, entry: GrowthEntry, before: int,
            settings: GrowthSettings | None) -> tuple[GrowthEntry, int]:
    """post()'s answer, once the milestones a rise reached are emitted."""
    if entry.balance_after > before:
        settings = settings or ctx.growth_settings.get(member.shop_id, uow.conn)[0]
        _reach_milestones(uow, settings, member, before, entry.balance_after, entry.created_at)
    return entry, entry.balance_after


def _reach_milestones(uow: UnitOfWork, settings: GrowthSettings, member: Row, before: int, after: int,
                      now: datetime) -> None:
    for milestone in settings.reached(before, after):
        key = and_(growth_milestones.c.shop_id == member.shop_id, growth_milestones.c.member_id == member.member_id,
                   growth_milestones.c.threshold == milestone.threshold)
        if uow.conn.execute(select(growth_milestones.c.threshold).where(key)).first() is not None:
            continue  # reached before (and lost since to decay or a refund): rewarded once
        uow.conn.execute(insert(growth_milestones), {"shop_id": member.shop_id, "member_id": member.member_id,
                                                     "threshold": milestone.threshold, "reached_at": now})
        uow.emit(member.shop_id, events_pb2.GrowthMilestoneReached(
            shop_id=member.shop_id, member_id=member.member_id, threshold=milestone.threshold,
            pack_id=milestone.pack_id, growth_value=after, tier_level=member.tier_level,
            reached_at=to_timestamp(now)))


def requalify(ctx: Membership, uow: UnitOfWork, program: Program, member: Row, growth: int,
              reason: TierChangeReason, order_id: str = "") -> tuple[domain.Tier, bool]:
    """In QUALIFICATION_MODE_GROWTH, the member's tier after a growth change (under the shop's
    downgrade policy); in the other modes growth moves nobody."""
    ladder = program.ladder
    if ladder.mode is not QualificationMode.GROWTH:
        return ladder.tier(member.tier_level), False
    level = ladder.evaluate(member.tier_level, member.cumulative_spend_fen, member.trade_count, growth)
    if level == member.tier_level:
        return ladder.tier(level), False
    tiers.change_tier(ctx, uow, ladder, member.shop_id, member.member_id, member.tier_level, member.buyer_hash,
                      level, reason, order_id=order_id)
    return ladder.tier(level), True


def credit_spend(ctx: Membership, uow: UnitOfWork, program: Program, member: Row, order_id: str, amount_fen: int,
                 at: datetime) -> int:
    """CompleteOrder's part: the spend growth of the order (recorded even when 0, so its refunds
    know what it gave). Returns the member's growth value after it."""
    settings, _ = ctx.growth_settings.get(member.shop_id, uow.conn)
    growth = growth_rules.spend_growth(settings.rules[GrowthSource.SPEND], amount_fen)
    _ORDER_GROWTH(uow.conn, {"shop_id": member.shop_id, "order_id": order_id,
                                            "member_id": member.member_id, "amount_fen": amount_fen,
                                            "growth": growth, "refunded_fen": 0, "taken_back": 0})
    if growth <= 0:
        return balance_of(uow.conn, member.shop_id, member.member_id)
    return post(ctx, uow, program, member, growth, GrowthSource.SPEND, at, reference=order_id, settings=settings)[1]


def take_back_refund(ctx: Membership, uow: UnitOfWork, program: Program, member: Row, order_id: str,
                     refund_fen: int, at: datetime) -> int:
    """RefundOrder's part: takes back the refunded share of the order's spend growth (all of it
    on a full refund), never more than it gave. Returns the member's growth value after it."""
    key = and_(order_growth.c.shop_id == member.shop_id, order_growth.c.order_id == order_id)
    given = uow.conn.execute(select(order_growth).where(key)).first()
    if given is None or given.amount_fen <= 0:
        return balance_of(uow.conn, member.shop_id, member.member_id)
    refunded = min(given.amount_fen, given.refunded_fen + refund_fen)
    keep = given.growth * (given.amount_fen - refunded) // given.amount_fen
    take = given.growth - keep - given.taken_back
    uow.conn.execute(update(order_growth).where(key).values(refunded_fen=refunded, taken_back=given.taken_back + take))
    if take <= 0:
        return balance_of(uow.conn, member.shop_id, member.member_id)
    return post(ctx, uow, program, member, -take, GrowthSource.REFUND, at, reference=order_id)[1]


def record_action(ctx: Membership, uow: UnitOfWork, shop_id: str, member_id: str, action: int, subject: str,
                  at: datetime) -> None:
    """An action points heard (its ActionRecorded): growth under the source's rule and caps. A
    member who left, or an action that gives no growth, changes nothing."""
    source = growth_rules.ACTION_SOURCES.get(action)
    if source is None:
        return
    try:
        program = ctx.programs.get(shop_id, uow.conn)
    except NotFound:  # a shop points knows without a membership program: nobody to give growth to
        return
    member = uow.conn.execute(select(members).where(
        members.c.shop_id == shop_id, members.c.member_id == member_id,
        members.c.status == MemberStatus.ACTIVE).with_for_update(of=members)).first()
    if member is None:
        return
    settings, _ = ctx.growth_settings.get(shop_id, uow.conn)
    rule = settings.rules[source]
    if rule.growth <= 0:
        return
    day = at.replace(tzinfo=UTC).astimezone(ZoneInfo(program.time_zone)).date()
    subject = subject[:60]
    periods = growth_rules.cap_periods(day, subject)
    scope = and_(growth_counts.c.shop_id == shop_id, growth_counts.c.member_id == member_id,
                 growth_counts.c.source == int(source))
    counts = dict(uow.conn.execute(select(growth_counts.c.period, growth_counts.c.count).where(
        scope, growth_counts.c.period.in_(periods))).all())
    if growth_rules.capped(rule, counts, day, subject):
        return
    for period in periods:
        if period in counts:
            uow.conn.execute(update(growth_counts).where(scope, growth_counts.c.period == period)
                             .values(count=growth_counts.c.count + 1))
        else:
            uow.conn.execute(insert(growth_counts), {"shop_id": shop_id, "member_id": member_id,
                                                     "source": int(source), "period": period, "count": 1})
    _, after = post(ctx, uow, program, member, rule.growth, source, at, reference=subject, settings=settings)
    requalify(ctx, uow, program, member, after, TierChangeReason.QUALIFIED)


def adjust(ctx: Membership, uow: UnitOfWork, cmd: AdjustGrowth) -> Adjusted:
    """An operator's adjustment, with who and why; a negative one takes at most the balance."""
    program = ctx.programs.get(cmd.shop_id, uow.conn)
    member = uow.conn.execute(select(members).where(
        members.c.shop_id == cmd.shop_id, members.c.member_id == cmd.member_id,
        members.c.status == MemberStatus.ACTIVE).with_for_update(of=members)).first()
    if member is None:
        raise views.member_not_found(cmd.member_id)
    if cmd.amount < 0 and balance_of(uow.conn, cmd.shop_id, cmd.member_id) == 0:
        raise InvalidArgument([("amount", "the member has no growth value to take")])
    entry, after = post(ctx, uow, program, member, cmd.amount, GrowthSource.ADJUSTMENT, utcnow(),
                        reason=cmd.reason, operator=cmd.operator)
    tier, changed = requalify(ctx, uow, program, member, after, TierChangeReason.QUALIFIED)
    return Adjusted(entry, tier, changed)
