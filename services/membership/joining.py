"""The join decision (入会门槛): whether a buyer may join, from the facts the caller states
(BuyerFacts) and those membership knows itself (the buyer's completed orders recorded in the
shop, also from before they joined), and what the storefront's join card needs
(CheckJoinEligibility). JoinMember enforces the same threshold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, func, select

from services.kit.errors import FailedPrecondition
from services.kit.validation import check_ids, validate_id
from services.membership import reasons
from services.membership.domain import MemberStatus, OrderStatus, Tier
from services.membership.rules import JoinFacts, JoinRequirement, ProgramRules, unmet_requirements
from services.membership.tables import members, orders

if TYPE_CHECKING:
    from services.membership.context import Membership
    from services.membership.programs import Program


@dataclass(frozen=True)
class Eligibility:
    member_id: str  # "" when not a member
    tier: Tier | None
    eligible: bool
    unmet: list[JoinRequirement]
    facts: JoinFacts
    require_follow: bool
    rules: ProgramRules


def own_facts(conn: Connection, shop_id: str, buyer_hash: str) -> tuple[int, int]:
    """The buyer's completed trades (not refunded in full) in the shop and their spend less refunds."""
    row = conn.execute(select(func.count(), func.coalesce(func.sum(orders.c.amount_fen - orders.c.refunded_fen), 0))
                       .where(orders.c.shop_id == shop_id, orders.c.buyer_hash == buyer_hash,
                              orders.c.status == OrderStatus.COMPLETED)).one()
    return int(row[0]), int(row[1])


def join_facts(conn: Connection, shop_id: str, buyer_hash: str, stated: JoinFacts) -> JoinFacts:
    """What the threshold is checked with: following as the caller states it; trades and spend
    the larger of the caller's figures and membership's own (never their sum, which could count
    the same trade twice)."""
    trades, spend = own_facts(conn, shop_id, buyer_hash)
    return JoinFacts(stated.follows_shop, max(trades, stated.completed_trades), max(spend, stated.spent_fen))


def require_threshold(ctx: Membership, conn: Connection, program: Program, buyer_id: str, buyer_hash: str,
                      stated: JoinFacts) -> None:
    """FAILED_PRECONDITION JOIN_THRESHOLD_NOT_MET naming the unmet parts, unless the buyer may join."""
    facts = join_facts(conn, program.shop_id, buyer_hash, stated)
    unmet = unmet_requirements(program.require_follow, program.rules, facts)
    if unmet:
        raise FailedPrecondition("the buyer does not meet the shop's join threshold",
                                 reason=reasons.JOIN_THRESHOLD_NOT_MET, subject=f"buyer/{buyer_id}",
                                 metadata={"unmet": ",".join(part.name.lower() for part in unmet)})


def check_eligibility(ctx: Membership, shop_id: str, buyer_id: str, stated: JoinFacts) -> Eligibility:
    """CheckJoinEligibility: a member already (with their tier), or whether the threshold lets the
    buyer join and which parts it lacks; the program's join benefit goes with either answer."""
    v = check_ids(shop_id)
    validate_id(buyer_id, "buyer_id", v)
    v.check(stated.completed_trades >= 0, "facts.completed_trades", "must not be negative")
    v.check(stated.spent_fen >= 0, "facts.spent_fen", "must not be negative")
    v.raise_if_any()
    buyer_hash = ctx.pii.buyer_hash(shop_id, buyer_id)

    def read(conn: Connection) -> Eligibility:
        program = ctx.programs.get(shop_id, conn)
        facts = join_facts(conn, shop_id, buyer_hash, stated)
        member = conn.execute(select(members.c.member_id, members.c.tier_level).where(
            members.c.shop_id == shop_id, members.c.buyer_hash == buyer_hash,
            members.c.status == MemberStatus.ACTIVE)).first()
        if member is not None:
            return Eligibility(member.member_id, program.ladder.tier(member.tier_level), False, [], facts,
                               program.require_follow, program.rules)
        unmet = unmet_requirements(program.require_follow, program.rules, facts)
        return Eligibility("", None, not unmet, unmet, facts, program.require_follow, program.rules)

    return ctx.db.read(read)
