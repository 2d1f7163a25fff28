"""What callers ask of the coupon wallet (卡券包): direct issuance by the operator, a member's
wallet, using a coupon with an order and giving it back, expiring what is past its window."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.kit.validation import check_ids, validate_id_list
from services.rewards.domain import MAX_FEN, CouponState

# One request's issuance stays one short transaction (and one answer of a few hundred kB);
# more members go in more requests, each with its own request_id.
MAX_ISSUE_MEMBERS = 1_000


@dataclass(frozen=True)
class IssueCoupons:
    """The operator puts one coupon of the reward into each listed member's wallet; the list
    is deduplicated, keeping the caller's order."""

    shop_id: str
    reward_id: str
    member_ids: tuple[str, ...]
    request_id: str

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id, reward_id=self.reward_id)
        members = validate_id_list(self.member_ids, "member_ids", v, maximum=MAX_ISSUE_MEMBERS)
        v.raise_if_any()
        object.__setattr__(self, "member_ids", members)


@dataclass(frozen=True)
class CouponsQuery:
    """One page of a member's wallet, newest first: `state` None for every state; `after` is
    the (issued_at, coupon_id) the previous page ended with."""

    shop_id: str
    member_id: str
    state: CouponState | None
    limit: int
    after: tuple[datetime, str] | None = None

    def __post_init__(self) -> None:
        check_ids(self.shop_id, member_id=self.member_id).raise_if_any()


@dataclass(frozen=True)
class UseCoupon:
    """The member pays part of an order with the coupon; `order_amount_fen` is the order's
    amount before the coupon (the threshold's measure)."""

    shop_id: str
    coupon_id: str
    order_id: str
    order_amount_fen: int

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id, coupon_id=self.coupon_id, order_id=self.order_id)
        v.check(0 <= self.order_amount_fen <= MAX_FEN, "order_amount_fen", f"must be 0..{MAX_FEN}")
        v.raise_if_any()


@dataclass(frozen=True)
class ReleaseCoupon:
    """The order the coupon was used with was cancelled before it completed."""

    shop_id: str
    coupon_id: str
    order_id: str

    def __post_init__(self) -> None:
        check_ids(self.shop_id, coupon_id=self.coupon_id, order_id=self.order_id).raise_if_any()


@dataclass(frozen=True)
class ExpireShopCoupons:
    """Every unused coupon of the shop whose window ended by `now` becomes EXPIRED."""

    shop_id: str
    now: datetime

    def __post_init__(self) -> None:
        check_ids(self.shop_id).raise_if_any()
