"""Lottery commands: each checks its ids and fields when built (the whole lottery's rules live in
lottery_domain, so an update is checked on its result in lottery.py, like a new lottery here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.kit.validation import check_ids, validate_id
from services.rewards.lottery_domain import Lottery, lottery_violations

# The paths UpdateLottery accepts (AIP-134).
UPDATE_PATHS = ("name", "style", "enabled", "start_time", "end_time", "cost_points", "free_draws_per_month",
                "free_draw_tier_levels", "prizes")
# How an update path reads as a Lottery field.
FIELD_OF_PATH = {"start_time": "start_at", "end_time": "end_at"}


@dataclass(frozen=True)
class CreateLottery:
    shop_id: str
    lottery: Lottery

    def __post_init__(self) -> None:
        lottery_violations(self.lottery, check_ids(self.shop_id)).raise_if_any()


@dataclass(frozen=True)
class UpdateLottery:
    """Changes the masked fields; lottery.py checks the stored lottery with them applied."""

    shop_id: str
    lottery_id: str
    changes: dict[str, object]  # Lottery field -> value

    def __post_init__(self) -> None:
        check_ids(self.shop_id, **{"lottery.lottery_id": self.lottery_id}).raise_if_any()


@dataclass(frozen=True)
class LotteryQuery:
    shop_id: str
    lottery_id: str

    def __post_init__(self) -> None:
        check_ids(self.shop_id, lottery_id=self.lottery_id).raise_if_any()


@dataclass(frozen=True)
class Draw:
    shop_id: str
    request_id: str
    lottery_id: str
    member_id: str

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id, lottery_id=self.lottery_id, member_id=self.member_id)
        v.check(bool(self.request_id), "request_id", "required: a client-chosen id that makes retries safe")
        v.raise_if_any()


@dataclass(frozen=True)
class ListDraws:
    """One member's draws (of one lottery, if named), newest first."""

    shop_id: str
    member_id: str
    lottery_id: str
    limit: int
    before: tuple[str, str] | None  # (created_at isoformat, draw_id) of the last draw listed

    def __post_init__(self) -> None:
        v = check_ids(self.shop_id, member_id=self.member_id)
        validate_id(self.lottery_id, "lottery_id", v, required=False)
        if self.before is not None:
            try:
                datetime.fromisoformat(self.before[0])
            except ValueError:
                v.add("page_token", "not a token this list returned")
        v.raise_if_any()
