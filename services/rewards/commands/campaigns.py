"""Campaign and checkout commands: each checks its ids and fields when built. `campaign_violations`
holds every rule a campaign keeps, so CreateCampaign checks what it received and UpdateCampaign
the stored campaign with its changes applied (a partial update cannot leave a campaign that
Create would have refused)."""

from __future__ import annotations

from dataclasses import dataclass

from services.kit.errors import Violations
from services.kit.validation import check_ids, validate_id
from services.rewards.checkout import Audience, AudienceKind, Campaign, CampaignKind, CampaignStatus, Line
from services.rewards.domain import MAX_FEN, MAX_TIER_LEVEL
from services.segments.tags import check_target_tags

MAX_NAME = 100
MAX_SKUS = 500
MAX_SKU = 64
MAX_HOLDOUT_BP = 9_999
MAX_LINES = 100
MAX_LINE_QUANTITY = 9_999
MAX_CART_COUPONS = 10
# The paths UpdateCampaign accepts (AIP-134): everything an operator sets but the kind.
UPDATE_PATHS = ("name", "audience", "start_time", "end_time", "all_items", "skus", "discount_permille",
                "cash_off_fen", "threshold_fen", "coupon_reward_id", "holdout_bp")
# The fields only one kind uses: the others must leave them unset.
_KIND_FIELDS = {"discount_permille": CampaignKind.PERCENTAGE_DISCOUNT, "cash_off_fen": CampaignKind.CASH_OFF,
                "coupon_reward_id": CampaignKind.COUPON_AFTER_ORDER}


def check_audience(v: Violations, a: Audience) -> None:
    if a.kind is AudienceKind.TIERS:
        v.check(bool(a.tier_levels), "campaign.audience.tier_levels", "name at least one tier level")
        v.check(all(0 <= t <= MAX_TIER_LEVEL for t in a.tier_levels), "campaign.audience.tier_levels",
                f"levels 0..{MAX_TIER_LEVEL}")
        v.check(len(set(a.tier_levels)) == len(a.tier_levels), "campaign.audience.tier_levels", "each level once")
    else:
        v.check(not a.tier_levels, "campaign.audience.tier_levels", "only for a tiers audience")
    if a.kind is AudienceKind.TAGS:
        # The segments service's own rule for what a campaign targets (1-5 tags; more is
        # INVALID_ARGUMENT TOO_MANY_TAGS at once).
        v.check(bool(a.tag_ids), "campaign.audience.tag_ids", "name at least one tag")
        v.check(len(set(a.tag_ids)) == len(a.tag_ids), "campaign.audience.tag_ids", "each tag once")
        check_target_tags(a.tag_ids, v, "campaign.audience.tag_ids")
    else:
        v.check(not a.tag_ids, "campaign.audience.tag_ids", "only for a tags audience")
    if a.kind is AudienceKind.SEGMENT:
        validate_id(a.segment_id, "campaign.audience.segment_id", v)
    else:
        v.check(not a.segment_id, "campaign.audience.segment_id", "only for a segment audience")


def _check_items(v: Violations, c: Campaign) -> None:
    if c.kind is CampaignKind.COUPON_AFTER_ORDER:
        v.check(c.all_items and not c.skus, "campaign.all_items",
                "a coupon-after-order campaign covers all items (orders carry no SKUs yet)")
        return
    if c.all_items:
        v.check(not c.skus, "campaign.skus", "leave empty with all_items")
        return
    v.check(0 < len(c.skus) <= MAX_SKUS, "campaign.skus", f"set all_items, or list 1 to {MAX_SKUS} SKUs")
    v.check(all(0 < len(s) <= MAX_SKU for s in c.skus), "campaign.skus", f"each SKU 1 to {MAX_SKU} characters")
    v.check(len(set(c.skus)) == len(c.skus), "campaign.skus", "each SKU once")


def _check_kind_fields(v: Violations, c: Campaign) -> None:
    for name, kind in _KIND_FIELDS.items():
        if c.kind is not kind:
            v.check(not getattr(c, name), f"campaign.{name}", f"only for {kind.name} campaigns")
    if c.kind is CampaignKind.PERCENTAGE_DISCOUNT:
        v.check(0 < c.discount_permille < 1000, "campaign.discount_permille",
                "the share paid, 1..999 per mille (900 = 10% off)")
    if c.kind is CampaignKind.CASH_OFF:
        v.check(0 < c.cash_off_fen <= MAX_FEN, "campaign.cash_off_fen", f"1..{MAX_FEN} fen")
    if c.kind is CampaignKind.COUPON_AFTER_ORDER:
        validate_id(c.coupon_reward_id, "campaign.coupon_reward_id", v)


def campaign_violations(c: Campaign) -> Violations:
    v = Violations()
    v.check(0 < len(c.name) <= MAX_NAME, "campaign.name", f"1 to {MAX_NAME} characters")
    check_audience(v, c.audience)
    v.check(c.start_at is not None, "campaign.start_time", "required")
    v.check(c.end_at is not None, "campaign.end_time", "required")
    if c.start_at is not None and c.end_at is not None:
        v.check(c.start_at < c.end_at, "campaign.end_time", "must be after start_time")
    _check_items(v, c)
    _check_kind_fields(v, c)
    v.check(0 <= c.threshold_fen <= MAX_FEN, "campaign.threshold_fen", f"0..{MAX_FEN} fen")
    v.check(0 <= c.holdout_bp <= MAX_HOLDOUT_BP, "campaign.holdout_bp",
            f"0..{MAX_HOLDOUT_BP} basis points (1000 = 10% held out)")
    return v


@dataclass(frozen=True)
class CreateCampaign:
    shop_id: str
    campaign: Campaign

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        v.items += campaign_violations(self.campaign).items
        v.raise_if_any()


@dataclass(frozen=True)
class UpdateCampaign:
    """`changes`: the masked fields of the Campaign dataclass (start_at/end_at for the times)."""

    shop_id: str
    campaign_id: str
    changes: dict[str, object]

    def __post_init__(self) -> None:
        check_ids(self.shop_id, **{"campaign.campaign_id": self.campaign_id}).raise_if_any()


@dataclass(frozen=True)
class CampaignQuery:
    shop_id: str
    campaign_id: str

    def __post_init__(self) -> None:
        check_ids(self.shop_id, campaign_id=self.campaign_id).raise_if_any()


@dataclass(frozen=True)
class ListCampaigns:
    shop_id: str
    status: CampaignStatus | None
    limit: int
    after: str | None  # the last campaign_id seen

    def __post_init__(self) -> None:
        check_ids(self.shop_id).raise_if_any()


@dataclass(frozen=True)
class EvaluateCart:
    shop_id: str
    member_id: str
    lines: tuple[Line, ...]
    coupon_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        validate_id(self.member_id, "member_id", v, required=False)
        v.check(0 < len(self.lines) <= MAX_LINES, "lines", f"1 to {MAX_LINES} lines")
        for i, line in enumerate(self.lines[:MAX_LINES]):
            v.check(0 < len(line.sku) <= MAX_SKU, f"lines[{i}].sku", f"1 to {MAX_SKU} characters")
            v.check(0 < line.quantity <= MAX_LINE_QUANTITY, f"lines[{i}].quantity", f"1..{MAX_LINE_QUANTITY}")
            v.check(0 <= line.unit_price_fen <= MAX_FEN, f"lines[{i}].unit_price_fen", f"0..{MAX_FEN} fen")
        v.check(len(self.coupon_ids) <= MAX_CART_COUPONS, "coupon_ids", f"at most {MAX_CART_COUPONS}")
        for i, coupon_id in enumerate(self.coupon_ids[:MAX_CART_COUPONS]):
            validate_id(coupon_id, f"coupon_ids[{i}]", v)
        v.raise_if_any()
