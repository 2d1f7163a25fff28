"""Campaigns' rules and the pricing of a cart (EvaluateCart), testable without a database: what a
campaign is, whether it reaches a buyer (window, audience, holdout), and what a buyer pays.

Stacking, per line: the tier discount first, then the one best percentage or cash-off campaign
(the largest discount for the buyer), then at most one coupon per cart (the largest that
applies). Rounding, in integer fen: a discounted price is rounded down (the buyer never pays
more than the exact price); an amount taken off several lines (cash off, a coupon) is spread in
proportion to the lines' amounts, each share rounded down, the remainder to the last line, so
the lines always sum exactly to the total. Nothing goes below zero.
The IntEnums mirror the proto enums of loyalty.rewards.v1 (a unit test holds them to it)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum

from services.rewards import reasons
from services.rewards.domain import CouponState, coupon_applies

FULL_BP = 10_000  # basis points: tier discounts (9500 = pay 95%), holdout shares
FULL_PERMILLE = 1_000  # campaigns' percentage discounts (900 = pay 90%)
# Membership's default ladder (level: price in basis points), until rewards hears the shop's own.
DEFAULT_TIER_DISCOUNTS_BP = {0: 10_000, 1: 9_500, 2: 9_000, 3: 8_500, 4: 8_000}


class CampaignKind(IntEnum):
    PERCENTAGE_DISCOUNT = 1
    CASH_OFF = 2
    FREE_SHIPPING = 3
    COUPON_AFTER_ORDER = 4


class AudienceKind(IntEnum):
    EVERYONE = 1
    TIERS = 2
    TAGS = 3
    SEGMENT = 4


class CampaignStatus(IntEnum):
    NOT_STARTED = 1
    RUNNING = 2
    ENDED = 3


PRICE_CAMPAIGNS = (CampaignKind.PERCENTAGE_DISCOUNT, CampaignKind.CASH_OFF)  # the best one applies


@dataclass(frozen=True)
class Audience:
    kind: AudienceKind = AudienceKind.EVERYONE
    tier_levels: tuple[int, ...] = ()
    tag_ids: tuple[str, ...] = ()
    segment_id: str = ""


@dataclass(frozen=True)
class Campaign:
    shop_id: str
    campaign_id: str
    name: str
    kind: CampaignKind
    start_at: datetime
    end_at: datetime
    audience: Audience = Audience()
    all_items: bool = True
    skus: tuple[str, ...] = ()
    discount_permille: int = 0
    cash_off_fen: int = 0
    threshold_fen: int = 0
    coupon_reward_id: str = ""
    holdout_bp: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def status(self, now: datetime) -> CampaignStatus:
        """Derived from the window: never stored, so it cannot go stale."""
        if now < self.start_at:
            return CampaignStatus.NOT_STARTED
        return CampaignStatus.RUNNING if now < self.end_at else CampaignStatus.ENDED

    def covers(self, sku: str) -> bool:
        return self.all_items or sku in self.skus


def held_out(campaign_id: str, member_id: str, holdout_bp: int) -> bool:
    """Whether the member is in the campaign's holdout (kept out to measure lift): the first 8
    bytes of sha256("<campaign_id>:<member_id>") mod 10000 below the share. Always the same answer
    for one member and campaign, on every replica (Python's hash() is salted per process).
    Buyers who are not members are never held out."""
    if not member_id or holdout_bp <= 0:
        return False
    digest = hashlib.sha256(f"{campaign_id}:{member_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % FULL_BP < holdout_bp


@dataclass(frozen=True)
class Buyer:
    """Who is buying: member_id "" for a buyer rewards does not know as a current member."""

    member_id: str = ""
    tier_level: int = 0
    tier_discount_bp: int = FULL_BP
    # What the segments service says of the member, as far as the campaigns at hand ask: the tags
    # they carry, the segments they are in, and the segments it could not answer for.
    tag_ids: frozenset[str] = frozenset()
    segment_ids: frozenset[str] = frozenset()
    undecided_segment_ids: frozenset[str] = frozenset()


def audience_refusal(audience: Audience, buyer: Buyer) -> str:
    """Why the audience does not hold the buyer ("" when it does). Only members are in a tiers,
    tags or segment audience; a segment segments could not answer for holds nobody
    (SEGMENTS_NOT_AVAILABLE)."""
    if audience.kind is AudienceKind.EVERYONE:
        return ""
    if not buyer.member_id:
        return reasons.NOT_IN_AUDIENCE
    if audience.kind is AudienceKind.TIERS:
        held = buyer.tier_level in audience.tier_levels
    elif audience.kind is AudienceKind.TAGS:
        held = not buyer.tag_ids.isdisjoint(audience.tag_ids)
    else:
        if audience.segment_id in buyer.undecided_segment_ids:
            return reasons.SEGMENTS_NOT_AVAILABLE
        held = audience.segment_id in buyer.segment_ids
    return "" if held else reasons.NOT_IN_AUDIENCE


def reaches(campaign: Campaign, buyer: Buyer, now: datetime) -> str:
    """Why the campaign does not reach the buyer now ("" when it does): its window, its audience,
    its holdout."""
    if campaign.status(now) is not CampaignStatus.RUNNING:
        return reasons.NOT_RUNNING
    why = audience_refusal(campaign.audience, buyer)
    if why:
        return why
    if held_out(campaign.campaign_id, buyer.member_id, campaign.holdout_bp):
        return reasons.HELD_OUT
    return ""


def discounted(amount_fen: int, rate: int, full: int) -> int:
    """The price of `amount_fen` at `rate` out of `full`, rounded down to the fen."""
    return amount_fen * rate // full


def spread(total_fen: int, amounts: list[int]) -> list[int]:
    """`total_fen` (at most the amounts' sum) over the amounts in proportion, each share rounded
    down, the remainder to the last amount; to earlier ones, from the end, where the last cannot
    take it all. The shares sum exactly to the total and no share exceeds its amount."""
    base = sum(amounts)
    total = min(total_fen, base)
    if total <= 0:
        return [0] * len(amounts)
    shares = [total * a // base for a in amounts]
    left = total - sum(shares)
    for i in reversed(range(len(amounts))):
        take = min(left, amounts[i] - shares[i])
        shares[i] += take
        left -= take
    return shares


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    unit_price_fen: int

    @property
    def amount_fen(self) -> int:
        return self.quantity * self.unit_price_fen


@dataclass(frozen=True)
class WalletCoupon:
    """A coupon named in the cart, as the wallet has it (None fields: no such coupon in the shop)."""

    coupon_id: str
    member_id: str | None = None
    state: CouponState = CouponState.UNUSED
    face_value_fen: int = 0
    threshold_fen: int = 0
    valid_from: datetime | None = None
    valid_until: datetime | None = None


@dataclass(frozen=True)
class Verdict:
    """Whether a campaign or coupon applies (reason "" when it does) and what it takes off."""

    subject_id: str
    reason: str = ""
    discount_fen: int = 0

    @property
    def applied(self) -> bool:
        return not self.reason


@dataclass(frozen=True)
class LineResult:
    line: Line
    tier_discount_fen: int
    campaign_discount_fen: int
    coupon_discount_fen: int

    @property
    def total_fen(self) -> int:
        return self.line.amount_fen - self.tier_discount_fen - self.campaign_discount_fen - self.coupon_discount_fen


@dataclass(frozen=True)
class Evaluation:
    buyer: Buyer
    lines: list[LineResult]
    free_shipping: bool = False
    campaigns: list[tuple[Campaign, Verdict]] = field(default_factory=list)
    coupons: list[tuple[WalletCoupon, Verdict]] = field(default_factory=list)
    applied_campaign_id: str = ""
    applied_coupon_id: str = ""

    def total(self, part: str) -> int:
        """The sum over the lines of one part: amount_fen, tier_discount_fen, …, total_fen."""
        return sum(getattr(r.line, part) if part == "amount_fen" else getattr(r, part) for r in self.lines)


def _campaign_discounts(campaign: Campaign, lines: list[Line], prices: list[int], now: datetime,
                        buyer: Buyer) -> tuple[str, list[int]]:
    """Why the campaign does not apply to the cart ("" when it does), and what it would take off
    each line (the prices after the tier discount)."""
    why = reaches(campaign, buyer, now)
    if why:
        return why, []
    eligible = [i for i, line in enumerate(lines) if campaign.covers(line.sku) and prices[i] > 0]
    if not eligible:
        return reasons.NO_ELIGIBLE_ITEMS, []
    eligible_fen = sum(prices[i] for i in eligible)
    if eligible_fen < campaign.threshold_fen:
        return reasons.THRESHOLD_NOT_MET, []
    off = [0] * len(lines)
    if campaign.kind is CampaignKind.PERCENTAGE_DISCOUNT:
        for i in eligible:
            off[i] = prices[i] - discounted(prices[i], campaign.discount_permille, FULL_PERMILLE)
    elif campaign.kind is CampaignKind.CASH_OFF:
        for i, share in zip(eligible, spread(campaign.cash_off_fen, [prices[i] for i in eligible]), strict=True):
            off[i] = share
    return "", off


def coupon_refusal(coupon: WalletCoupon, buyer: Buyer, amount_fen: int, now: datetime) -> str:
    """Why the coupon cannot pay part of a cart worth `amount_fen` (after campaigns): "" when it can."""
    if coupon.member_id is None:
        return reasons.COUPON_NOT_FOUND
    if not buyer.member_id or coupon.member_id != buyer.member_id:
        return reasons.COUPON_NOT_OWNED
    if coupon.state is CouponState.USED:
        return reasons.COUPON_ALREADY_USED
    if coupon.state is CouponState.REVOKED:
        return reasons.COUPON_REVOKED
    if coupon.state is CouponState.EXPIRED or (coupon.valid_until is not None and coupon.valid_until <= now):
        return reasons.COUPON_EXPIRED
    if coupon.valid_from is not None and now < coupon.valid_from:
        return reasons.COUPON_NOT_YET_VALID
    if not coupon_applies(coupon.face_value_fen, coupon.threshold_fen, amount_fen):
        return reasons.THRESHOLD_NOT_MET
    return ""


def evaluate(buyer: Buyer, lines: list[Line], campaigns: list[Campaign], coupons: list[WalletCoupon],
             now: datetime) -> Evaluation:
    """The cart priced by the stacking rule (module docstring), with a verdict for every campaign
    (but coupon-after-order ones, which act when an order completes) and every coupon given."""
    amounts = [line.amount_fen for line in lines]
    rate = buyer.tier_discount_bp if buyer.member_id else FULL_BP
    prices = [discounted(a, rate, FULL_BP) for a in amounts]

    verdicts: dict[str, Verdict] = {}
    candidates: list[tuple[int, str, list[int]]] = []
    free_shipping = False
    priced = sorted((c for c in campaigns if c.kind is not CampaignKind.COUPON_AFTER_ORDER),
                    key=lambda c: c.campaign_id)
    for campaign in priced:
        why, off = _campaign_discounts(campaign, lines, prices, now, buyer)
        if why:
            verdicts[campaign.campaign_id] = Verdict(campaign.campaign_id, why)
        elif campaign.kind is CampaignKind.FREE_SHIPPING:
            free_shipping = True
            verdicts[campaign.campaign_id] = Verdict(campaign.campaign_id)
        else:
            candidates.append((sum(off), campaign.campaign_id, off))
    campaign_off = [0] * len(lines)
    applied_campaign = ""
    # The largest discount for the buyer; on a tie, the earlier campaign id (candidates are in id order).
    for rank, (total, campaign_id, off) in enumerate(sorted(candidates, key=lambda c: -c[0])):
        verdicts[campaign_id] = Verdict(campaign_id, "" if rank == 0 else reasons.OUTDONE, total)
        if rank == 0:
            applied_campaign, campaign_off = campaign_id, off
    after_campaign = [p - o for p, o in zip(prices, campaign_off, strict=True)]

    cart_fen = sum(after_campaign)
    judged = [(coupon, coupon_refusal(coupon, buyer, cart_fen, now)) for coupon in coupons]
    best: WalletCoupon | None = None
    for coupon, why in judged:  # the largest face value; on a tie, the first given
        if not why and (best is None or coupon.face_value_fen > best.face_value_fen):
            best = coupon
    coupon_off = spread(best.face_value_fen, after_campaign) if best else [0] * len(lines)
    coupon_verdicts = [(c, Verdict(c.coupon_id, why or ("" if c is best else reasons.OUTDONE),
                                   c.face_value_fen if not why else 0)) for c, why in judged]

    results = [LineResult(line, a - p, o, c)
               for line, a, p, o, c in zip(lines, amounts, prices, campaign_off, coupon_off, strict=True)]
    return Evaluation(buyer, results, free_shipping, [(c, verdicts[c.campaign_id]) for c in priced],
                      coupon_verdicts, applied_campaign, best.coupon_id if best else "")
