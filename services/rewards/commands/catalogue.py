"""What operators and members ask of the catalogue. A reward's fields arrive as a Draft (the
fields an operator sets, with whichever specs the request carried); `draft_violations` holds every
rule a reward must keep, so CreateReward checks the draft it received and UpdateReward the
stored reward with its changes applied: a partial update cannot leave a reward that Create
would have refused."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import datetime

from services.kit.errors import Violations
from services.kit.validation import check_ids, validate_id
from services.rewards import domain
from services.rewards.domain import (
    CouponSpec,
    GiftSpec,
    Reward,
    RewardKind,
    RewardStatus,
    Spec,
    VirtualKind,
    VirtualSpec,
)

MAX_NAME = 100
MAX_DESCRIPTION = 1000
MAX_DISCOUNT_PERMILLE = 999
# The paths UpdateReward accepts (AIP-134): not kind (a reward keeps its kind), not stock (AddStock).
UPDATE_PATHS = ("name", "description", "status", "points_price", "cash_price_fen", "min_tier_level",
                "unlimited_stock", "limit_per_member", "monthly_limit_per_member", "start_time", "end_time",
                "coupon", "gift", "virtual")
SPEC_FIELD = {RewardKind.COUPON: "coupon", RewardKind.GIFT: "gift", RewardKind.VIRTUAL: "virtual"}


@dataclass(frozen=True)
class Draft:
    """A reward's operator-set fields. The three specs are what the request carried: exactly the
    one of `kind` must be there (a check, not an assumption, so a mismatched request is refused)."""

    name: str
    kind: RewardKind
    status: RewardStatus = RewardStatus.ACTIVE
    description: str = ""
    points_price: int = 0
    cash_price_fen: int = 0
    min_tier_level: int = 0
    unlimited_stock: bool = False
    stock: int = 0
    limit_per_member: int = 0
    monthly_limit_per_member: int = 0
    start_time: datetime | None = None
    end_time: datetime | None = None
    coupon: CouponSpec | None = None
    gift: GiftSpec | None = None
    virtual: VirtualSpec | None = None

    @property
    def spec(self) -> Spec | None:
        return getattr(self, SPEC_FIELD[self.kind])

    def to_reward(self, shop_id: str, reward_id: str, now: datetime, *, redeemed: int = 0,
                  created_at: datetime | None = None) -> Reward:
        spec = self.spec
        assert spec is not None  # checked by draft_violations
        return Reward(
            shop_id=shop_id, reward_id=reward_id, name=self.name, kind=self.kind, status=self.status,
            points_price=self.points_price, spec=spec, description=self.description,
            cash_price_fen=self.cash_price_fen, min_tier_level=self.min_tier_level,
            unlimited_stock=self.unlimited_stock, stock=self.stock, redeemed=redeemed,
            limit_per_member=self.limit_per_member, monthly_limit_per_member=self.monthly_limit_per_member,
            start_at=self.start_time, end_at=self.end_time, created_at=created_at or now, updated_at=now)


def draft_of(reward: Reward) -> Draft:
    """The stored reward as a draft, to apply an update's changes to."""
    return Draft(name=reward.name, kind=reward.kind, status=reward.status, description=reward.description,
                 points_price=reward.points_price, cash_price_fen=reward.cash_price_fen,
                 min_tier_level=reward.min_tier_level, unlimited_stock=reward.unlimited_stock, stock=reward.stock,
                 limit_per_member=reward.limit_per_member,
                 monthly_limit_per_member=reward.monthly_limit_per_member, start_time=reward.start_at,
                 end_time=reward.end_at, **{SPEC_FIELD[reward.kind]: reward.spec})


def _check_range(v: Violations, value: int, low: int, high: int, name: str) -> None:
    v.check(low <= value <= high, name, f"must be {low}..{high}")


def _coupon_violations(v: Violations, c: CouponSpec) -> None:
    _check_range(v, c.face_value_fen, 1, domain.MAX_FEN, "reward.coupon.face_value_fen")
    _check_range(v, c.threshold_fen, 0, domain.MAX_FEN, "reward.coupon.threshold_fen")
    fixed = c.valid_from is not None or c.valid_until is not None
    if c.valid_days and fixed:
        v.add("reward.coupon.valid_days", "either valid_days or a fixed window (valid_from, valid_until), not both")
    elif c.valid_days:
        _check_range(v, c.valid_days, 1, domain.MAX_VALID_DAYS, "reward.coupon.valid_days")
    elif c.valid_until is None:
        v.add("reward.coupon.valid_until",
              f"required: a fixed window's end, or valid_days (1..{domain.MAX_VALID_DAYS}) instead")
    elif c.valid_from is not None and c.valid_until <= c.valid_from:
        v.add("reward.coupon.valid_until", "must be after valid_from")


def _virtual_violations(v: Violations, s: VirtualSpec) -> None:
    _check_range(v, s.top_up_fen, 0, domain.MAX_FEN, "reward.virtual.top_up_fen")
    _check_range(v, s.bonus_fen, 0, domain.MAX_FEN, "reward.virtual.bonus_fen")
    _check_range(v, s.valid_days, 0, domain.MAX_VALID_DAYS, "reward.virtual.valid_days")
    if s.virtual_kind is VirtualKind.STORED_VALUE:
        v.check(s.top_up_fen > 0, "reward.virtual.top_up_fen", "required for stored value (top up X get X+Y)")
    if s.virtual_kind is VirtualKind.DISCOUNT_CARD:
        _check_range(v, s.discount_permille, 1, MAX_DISCOUNT_PERMILLE, "reward.virtual.discount_permille")
    else:
        v.check(s.discount_permille == 0, "reward.virtual.discount_permille", "only for discount cards")


def draft_violations(d: Draft, v: Violations | None = None) -> Violations:
    """Every rule a reward keeps, as field violations (named as in the request: reward.*)."""
    v = v or Violations()
    v.check(d.name.strip() != "" and len(d.name) <= MAX_NAME, "reward.name", f"1..{MAX_NAME} characters")
    v.check(len(d.description) <= MAX_DESCRIPTION, "reward.description", f"at most {MAX_DESCRIPTION} characters")
    _check_range(v, d.points_price, 0, domain.MAX_POINTS_PRICE, "reward.points_price")
    _check_range(v, d.cash_price_fen, 0, domain.MAX_FEN, "reward.cash_price_fen")
    if d.points_price == 0 and d.cash_price_fen == 0:
        v.add("reward.points_price", "a reward costs points (or cash): points_price or cash_price_fen above 0")
    _check_range(v, d.min_tier_level, 0, domain.MAX_TIER_LEVEL, "reward.min_tier_level")
    _check_range(v, d.stock, 0, domain.MAX_STOCK, "reward.stock")
    _check_range(v, d.limit_per_member, 0, domain.MAX_LIMIT, "reward.limit_per_member")
    _check_range(v, d.monthly_limit_per_member, 0, domain.MAX_LIMIT, "reward.monthly_limit_per_member")
    if d.start_time is not None and d.end_time is not None and d.end_time <= d.start_time:
        v.add("reward.end_time", "must be after start_time")
    present = [name for name in SPEC_FIELD.values() if getattr(d, name) is not None]
    wanted = SPEC_FIELD[d.kind]
    for name in present:
        if name != wanted:
            v.add(f"reward.{name}", f"a {d.kind.name} reward takes reward.{wanted} only")
    if wanted not in present:
        v.add(f"reward.{wanted}", f"required for a {d.kind.name} reward")
    elif isinstance(d.spec, CouponSpec):
        _coupon_violations(v, d.spec)
    elif isinstance(d.spec, VirtualSpec):
        _virtual_violations(v, d.spec)
    return v


def apply_changes(draft: Draft, changes: dict[str, object]) -> Draft:
    """The draft with an update's masked fields replaced; a spec path of another kind than the
    reward's sets that spec, which draft_violations then refuses by name."""
    known = {f.name for f in fields(Draft)}
    return replace(draft, **{path: value for path, value in changes.items() if path in known})


@dataclass(frozen=True)
class CreateReward:
    shop_id: str
    draft: Draft

    def __post_init__(self) -> None:
        draft_violations(self.draft, check_ids(self.shop_id)).raise_if_any()


@dataclass(frozen=True)
class RewardQuery:
    shop_id: str
    reward_id: str

    def __post_init__(self) -> None:
        check_ids(self.shop_id, reward_id=self.reward_id).raise_if_any()


@dataclass(frozen=True)
class UpdateReward:
    """Changes the masked fields (UPDATE_PATHS); the result is checked against the stored reward."""

    shop_id: str
    reward_id: str
    changes: dict[str, object]

    def __post_init__(self) -> None:
        check_ids(self.shop_id, **{"reward.reward_id": self.reward_id}).raise_if_any()


@dataclass(frozen=True)
class AddStock:
    shop_id: str
    reward_id: str
    delta: int

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id, reward_id=self.reward_id)
        v.check(self.delta != 0 and abs(self.delta) <= domain.MAX_STOCK, "delta",
                f"a non-zero change of at most {domain.MAX_STOCK} either way")
        v.raise_if_any()


@dataclass(frozen=True)
class ListRewards:
    """The operators' list (no member_id) or one member's view of the catalogue."""

    shop_id: str
    member_id: str
    include_unavailable: bool
    kind: RewardKind | None
    limit: int
    after: tuple[str, str] | None  # (created_at isoformat, reward_id) of the last reward listed before

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        validate_id(self.member_id, "member_id", v, required=False)
        v.raise_if_any()
