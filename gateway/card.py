"""The storefront member module's decision (店铺首页会员模块), made on every visit:

- a member sees their tier, points and progress to the next tier, in both modes;
- a non-member who meets the join threshold, in a shop with a join gift (入会礼), sees the join
  card: the gift and a join button (smart mode, 智能设定) or the operator's call to action over
  the operator's background image (custom mode, 自定义设定);
- anyone else sees nothing: `state: none` with the reason (the threshold's unmet parts, or no
  join gift in this shop).

One call to membership's CheckJoinEligibility decides the state; for a member, the tier progress
and the points balance follow, in parallel. A returning member (their member id known from an
earlier visit in this process) needs only those two: membership answers NOT_FOUND for an id that
is no longer a member's, and the card is then decided afresh. The services cache what they answer: nothing here is
heavier than turning their answers into the card."""

from __future__ import annotations

from typing import Literal

from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.points.v1 import points_service_pb2 as ppb
from pydantic import BaseModel, Field

from gateway.members import eligibility
from gateway.problems import Problem
from gateway.tokens import Buyer
from gateway.upstream import Upstreams

CardStateName = Literal["member", "join", "none"]
CardModeName = Literal["SMART", "CUSTOM"]
NothingReason = Literal["THRESHOLD_NOT_MET", "NO_JOIN_BENEFIT"]
Requirement = Literal["FOLLOW", "COMPLETED_TRADES", "SPEND"]
QualificationModeName = Literal["CUMULATIVE_SPEND", "TRADE_COUNT", "SPEND_OR_COUNT", "GROWTH"]

_REQUIREMENTS: dict[int, Requirement] = {
    mpb.JOIN_REQUIREMENT_FOLLOW: "FOLLOW", mpb.JOIN_REQUIREMENT_COMPLETED_TRADES: "COMPLETED_TRADES",
    mpb.JOIN_REQUIREMENT_SPEND: "SPEND"}
_QUALIFICATION: dict[int, QualificationModeName] = {
    mpb.QUALIFICATION_MODE_CUMULATIVE_SPEND: "CUMULATIVE_SPEND", mpb.QUALIFICATION_MODE_TRADE_COUNT: "TRADE_COUNT",
    mpb.QUALIFICATION_MODE_SPEND_OR_COUNT: "SPEND_OR_COUNT", mpb.QUALIFICATION_MODE_GROWTH: "GROWTH"}


class CardTier(BaseModel):
    """A rung of the shop's tier ladder (会员等级)."""

    level: int = Field(description="0-based; 0 is the entry tier.")
    code: str
    name: str


class CardProgress(BaseModel):
    """下一等级进度条: how far the member is from the next tier."""

    next_tier: CardTier | None = Field(description="Unset at the top of the ladder.")
    progress_permille: int = Field(ge=0, le=1000, description="From the current tier's threshold to the next's.")
    qualification_mode: QualificationModeName = Field(description="Which measures count for the next tier.")
    spend_missing_fen: int = Field(ge=0, description="Spend still missing, in fen (0: met or not a measure).")
    trades_missing: int = Field(ge=0, description="Completed trades still missing (0: met or not a measure).")
    growth_missing: int = Field(ge=0, description="Growth value still missing (GROWTH mode only).")


class CardMember(BaseModel):
    """What a member sees: tier, points and progress (both modes)."""

    tier: CardTier
    points: int = Field(description="Spendable points (积分) now.")
    points_pending: bool = Field(description="The points account is still being opened (just joined): "
                                             "`points` is 0 for now, ask again shortly.")
    progress: CardProgress


class CardJoin(BaseModel):
    """What a non-member who may join sees: the join gift (入会礼), and in custom mode the
    operator's call to action and background image."""

    gift: str = Field(description="The join gift as the operator describes it.")
    pack_id: str | None = Field(description="The rewards pack new members get, when the operator set one.")
    call_to_action: str | None = Field(description="CUSTOM mode: the operator's text, 1-13 characters.")
    background_image_url: str | None = Field(description="CUSTOM mode: an http(s) image of 702x110 pixels.")


class MemberCard(BaseModel):
    """The storefront member module for the token's buyer. Exactly one part is set, by `state`:
    `member` (tier, points, progress), `join` (the join gift; the join button is
    POST /v1/storefront/join), or `none` (show nothing; `reason` and `unmet` say why)."""

    state: CardStateName
    mode: CardModeName | None = Field(description="How the operator set the module up (SMART or CUSTOM): what "
                                                  "the join card looks like. Null on a member's card, which is "
                                                  "the same in both modes.")
    shop_id: str
    member: CardMember | None = None
    join: CardJoin | None = None
    reason: NothingReason | None = Field(None, description="state none: why there is nothing to show.")
    unmet: list[Requirement] = Field([], description="The join threshold's parts the buyer does not meet.")


# The member id each buyer had at their last visit: a returning member's card needs only the tier
# progress and the balance (two calls in parallel). If the id is no longer a member's (the buyer
# left, or left and joined again), membership answers NOT_FOUND and the card is decided afresh.
_member_ids: dict[tuple[str, str], str] = {}
_MEMBER_IDS_KEPT = 100_000


def _remember(key: tuple[str, str], member_id: str | None) -> None:
    if member_id is None:
        _member_ids.pop(key, None)
        return
    if len(_member_ids) >= _MEMBER_IDS_KEPT:
        _member_ids.clear()
    _member_ids[key] = member_id


async def card_for(up: Upstreams, buyer: Buyer) -> MemberCard:
    """The card the buyer sees now."""
    key = (buyer.shop_id, buyer.buyer_id)
    known = _member_ids.get(key)
    if known is not None:
        try:
            member = await member_part(up, buyer.shop_id, known)
        except Problem as problem:
            if problem.status != 404:
                raise
            _remember(key, None)  # no longer this member: decide afresh below
        else:
            return MemberCard(state="member", mode=None, shop_id=buyer.shop_id, member=member)
    seen = await eligibility(up, buyer)
    mode: CardModeName = "CUSTOM" if seen.storefront_card.mode == mpb.CARD_MODE_CUSTOM else "SMART"
    if seen.is_member:
        _remember(key, seen.member_id)
        return MemberCard(state="member", mode=None, shop_id=buyer.shop_id,
                          member=await member_part(up, buyer.shop_id, seen.member_id))
    _member_ids.pop(key, None)
    unmet = [_REQUIREMENTS[u] for u in seen.unmet if u in _REQUIREMENTS]
    if not seen.has_join_benefit:
        return MemberCard(state="none", mode=mode, shop_id=buyer.shop_id, reason="NO_JOIN_BENEFIT", unmet=unmet)
    if not seen.eligible:
        return MemberCard(state="none", mode=mode, shop_id=buyer.shop_id, reason="THRESHOLD_NOT_MET", unmet=unmet)
    custom = seen.storefront_card if mode == "CUSTOM" else None
    return MemberCard(state="join", mode=mode, shop_id=buyer.shop_id, join=CardJoin(
        gift=seen.join_benefit.text, pack_id=seen.join_benefit.pack_id or None,
        call_to_action=custom.call_to_action if custom else None,
        background_image_url=(custom.background_image_url or None) if custom else None))


async def member_part(up: Upstreams, shop_id: str, member_id: str) -> CardMember:
    """Tier progress (which carries the current tier) and the points balance, asked in parallel."""
    progress, balance = await up.gather(
        up.call(up.membership.GetTierProgress, mpb.GetTierProgressRequest(shop_id=shop_id, member_id=member_id),
                shop_id),
        _balance(up, shop_id, member_id))
    return CardMember(
        tier=_tier(progress.current), points=balance.available if balance else 0, points_pending=balance is None,
        progress=CardProgress(
            next_tier=_tier(progress.next) if progress.HasField("next") else None,
            progress_permille=min(1000, max(0, progress.progress_permille)),
            qualification_mode=_QUALIFICATION.get(progress.qualification_mode, "CUMULATIVE_SPEND"),
            spend_missing_fen=max(0, progress.spend_missing_fen), trades_missing=max(0, progress.trades_missing),
            growth_missing=max(0, progress.growth_missing)))


async def _balance(up: Upstreams, shop_id: str, member_id: str) -> ppb.Balance | None:
    """The member's balance; None while points has not opened the account of a member who has
    just joined (it does so on hearing of the join)."""
    try:
        return await up.call(up.points.GetBalance, ppb.GetBalanceRequest(shop_id=shop_id, member_id=member_id),
                             shop_id)
    except Problem as problem:
        if problem.status == 404:
            return None
        raise


def _tier(tier: mpb.Tier) -> CardTier:
    return CardTier(level=tier.level, code=tier.code, name=tier.name)
