"""Benefit-pack commands: each checks its ids and fields when built."""

from __future__ import annotations

from dataclasses import dataclass

from services.kit.errors import Violations
from services.kit.validation import check_ids, validate_id
from services.rewards.domain import (
    MAX_PACK_ITEM_QUANTITY,
    MAX_PACK_ITEMS,
    MAX_POINTS_PRICE,
    MAX_TIER_LEVEL,
    BenefitPack,
)

PACK_PATHS = ("name", "enabled", "points", "items", "tier_levels")


def _check_pack(v: Violations, pack: BenefitPack, fields: tuple[str, ...] = PACK_PATHS) -> None:
    if "name" in fields:
        v.check(0 < len(pack.name) <= 100, "pack.name", "1 to 100 characters")
    if "points" in fields:
        v.check(0 <= pack.points <= MAX_POINTS_PRICE, "pack.points", f"must be 0..{MAX_POINTS_PRICE}")
    if "items" in fields:
        v.check(len(pack.items) <= MAX_PACK_ITEMS, "pack.items", f"at most {MAX_PACK_ITEMS}")
        for i, (reward_id, quantity) in enumerate(pack.items):
            validate_id(reward_id, f"pack.items[{i}].reward_id", v)
            v.check(1 <= quantity <= MAX_PACK_ITEM_QUANTITY, f"pack.items[{i}].quantity",
                    f"must be 1..{MAX_PACK_ITEM_QUANTITY}")
        v.check(len({r for r, _ in pack.items}) == len(pack.items), "pack.items", "a reward at most once")
    if "tier_levels" in fields:
        v.check(all(0 <= t <= MAX_TIER_LEVEL for t in pack.tier_levels), "pack.tier_levels",
                f"levels 0..{MAX_TIER_LEVEL}")
    if "points" in fields and "items" in fields:
        v.check(pack.points > 0 or bool(pack.items), "pack", "give points, items, or both")


@dataclass(frozen=True)
class CreatePack:
    shop_id: str
    pack: BenefitPack

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id)
        _check_pack(v, self.pack)
        v.raise_if_any()


@dataclass(frozen=True)
class UpdatePack:
    shop_id: str
    pack: BenefitPack
    paths: tuple[str, ...]

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id, **{"pack.pack_id": self.pack.pack_id})
        _check_pack(v, self.pack, self.paths)
        v.raise_if_any()


@dataclass(frozen=True)
class GrantsQuery:
    shop_id: str
    member_id: str
    limit: int
    before: tuple[str, str] | None  # (granted_at ISO, grant_id) of the last grant seen

    def __post_init__(self) -> None:
        check_ids(self.shop_id, member_id=self.member_id).raise_if_any()
