"""Redemption commands: what ValidateRedemption, Redeem, ConfirmPayment, CancelRedemption and the
redemption reads ask, checked on construction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.kit.validation import check_ids, validate_id
from services.rewards.domain import MAX_QUANTITY, RedemptionState

MAX_PAYMENT_REFERENCE = 128
MAX_OPERATOR = 100
MAX_SHIPMENT_REFERENCE = 128
MAX_REASON = 500


def _quantity(value: int) -> int:
    """The quantity asked for; 0 (unset) is one."""
    return value or 1


@dataclass(frozen=True)
class Redeem:
    """Redeem `quantity` of a reward for a member: the same check as Validate, then the saga."""

    shop_id: str
    request_id: str
    member_id: str
    reward_id: str
    quantity: int = 1

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id, member_id=self.member_id, reward_id=self.reward_id)
        v.check(bool(self.request_id), "request_id", "required: a client-chosen id that makes retries safe")
        v.check(1 <= self.quantity <= MAX_QUANTITY, "quantity", f"must be 1..{MAX_QUANTITY}")
        v.raise_if_any()


def redeem(shop_id: str, request_id: str, member_id: str, reward_id: str, quantity: int) -> Redeem:
    return Redeem(shop_id, request_id, member_id, reward_id, _quantity(quantity))


@dataclass(frozen=True)
class Validate:
    shop_id: str
    member_id: str
    reward_id: str
    quantity: int = 1

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id, member_id=self.member_id, reward_id=self.reward_id)
        v.check(1 <= self.quantity <= MAX_QUANTITY, "quantity", f"must be 1..{MAX_QUANTITY}")
        v.raise_if_any()


def validate(shop_id: str, member_id: str, reward_id: str, quantity: int) -> Validate:
    return Validate(shop_id, member_id, reward_id, _quantity(quantity))


@dataclass(frozen=True)
class ConfirmPayment:
    shop_id: str
    redemption_id: str
    payment_reference: str

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id, redemption_id=self.redemption_id)
        v.check(0 < len(self.payment_reference) <= MAX_PAYMENT_REFERENCE, "payment_reference",
                f"required, at most {MAX_PAYMENT_REFERENCE} characters")
        v.raise_if_any()


@dataclass(frozen=True)
class CancelRedemption:
    """Cancel before payment (the member's shop), or a completed gift before shipment (an operator)."""

    shop_id: str
    redemption_id: str
    reason: str = ""
    operator: str = ""

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id, redemption_id=self.redemption_id)
        v.check(len(self.reason) <= MAX_REASON, "reason", f"at most {MAX_REASON} characters")
        v.check(len(self.operator) <= MAX_OPERATOR, "operator", f"at most {MAX_OPERATOR} characters")
        v.raise_if_any()


@dataclass(frozen=True)
class ShipRedemption:
    """A completed gift redemption shipped, with its tracking number or the order it went with."""

    shop_id: str
    redemption_id: str
    shipment_reference: str

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id, redemption_id=self.redemption_id)
        v.check(0 < len(self.shipment_reference) <= MAX_SHIPMENT_REFERENCE, "shipment_reference",
                f"1 to {MAX_SHIPMENT_REFERENCE} characters: a tracking number or the order it shipped with")
        v.raise_if_any()


@dataclass(frozen=True)
class GetRedemption:
    shop_id: str
    redemption_id: str

    def __post_init__(self) -> None:
        check_ids(self.shop_id, redemption_id=self.redemption_id).raise_if_any()


@dataclass(frozen=True)
class ListRedemptions:
    """One page of the shop's redemptions, newest first; `after` is the last (created_at, id) seen."""

    shop_id: str
    member_id: str
    reward_id: str
    state: RedemptionState | None
    limit: int
    after: tuple[str, str] | None

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        validate_id(self.member_id, "member_id", v, required=False)
        validate_id(self.reward_id, "reward_id", v, required=False)
        if self.after is not None:
            try:
                datetime.fromisoformat(self.after[0])
            except ValueError:
                v.add("page_token", "not a token this list returned")
        v.raise_if_any()
