"""The lottery's rules, testable without a database: what a lottery and its prize table are,
every rule a table keeps, and the drawing itself — a pure function of one random integer in
[0, 10,000) (the service passes secrets.randbelow(TOTAL_BP)), so that a test can run a hundred
thousand draws from a seeded source and compare them with the table. The IntEnums mirror the
proto enums of loyalty.rewards.v1 (a unit test holds them to it)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum

from services.kit.errors import Violations
from services.kit.validation import validate_id
from services.rewards import reasons
from services.rewards.domain import MAX_POINTS_PRICE, MAX_STOCK, MAX_TIER_LEVEL

TOTAL_BP = 10_000
MAX_PRIZES = 16
MAX_FREE_DRAWS = 1_000
MAX_NAME = 100
NOTHING_NAME = "谢谢参与"


class LotteryStyle(IntEnum):
    WHEEL = 1
    GRID = 2


class PrizeKind(IntEnum):
    POINTS = 1
    COUPON = 2
    GIFT = 3
    NOTHING = 4


class DrawState(IntEnum):
    PENDING = 1
    COMPLETED = 2
    FAILED = 3


@dataclass(frozen=True)
class Prize:
    prize_id: str
    name: str
    kind: PrizeKind
    probability_bp: int
    points: int = 0
    reward_id: str = ""
    unlimited_stock: bool = False
    stock: int = 0
    won: int = 0

    @property
    def in_stock(self) -> bool:
        return self.unlimited_stock or self.stock > 0


@dataclass(frozen=True)
class Lottery:
    shop_id: str
    lottery_id: str
    name: str
    style: LotteryStyle
    prizes: tuple[Prize, ...]
    enabled: bool = True
    start_at: datetime | None = None
    end_at: datetime | None = None
    cost_points: int = 0
    free_draws_per_month: int = 0
    free_draw_tier_levels: tuple[int, ...] = ()
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def free_draws_for(self, tier_level: int) -> int:
        """The free draws a month a member of `tier_level` gets."""
        if self.free_draw_tier_levels and tier_level not in self.free_draw_tier_levels:
            return 0
        return self.free_draws_per_month

    def why_not_running(self, now: datetime) -> str | None:
        """The reason no draw is taken now, or None while it runs."""
        if not self.enabled:
            return reasons.NOT_ACTIVE
        if self.start_at is not None and now < self.start_at:
            return reasons.NOT_STARTED
        if self.end_at is not None and now >= self.end_at:
            return reasons.ENDED
        return None


def with_defaults(prizes: Sequence[Prize]) -> tuple[Prize, ...]:
    """The table as stored: a prize without an id is "slot-<n>", the NOTHING slot is named
    谢谢参与 unless named and is always unlimited."""
    out = []
    for i, p in enumerate(prizes):
        prize_id = p.prize_id or f"slot-{i + 1}"
        if p.kind is PrizeKind.NOTHING:
            p = Prize(prize_id, p.name or NOTHING_NAME, p.kind, p.probability_bp, unlimited_stock=True)
        out.append(Prize(prize_id, p.name, p.kind, p.probability_bp, p.points, p.reward_id, p.unlimited_stock,
                         p.stock, p.won))
    return tuple(out)


def table_violations(prizes: Sequence[Prize], v: Violations | None = None, field: str = "lottery.prizes") -> Violations:
    """Every rule a prize table keeps: 1..MAX_PRIZES slots, probabilities (basis points) that sum
    to exactly 10,000, exactly one NOTHING slot (the fallback of a prize out of stock), and each
    prize's fields those of its kind. (Whether a reward exists and is of the right kind is the
    catalogue's to say: lottery.py checks it.)"""
    v = v or Violations()
    if not 1 <= len(prizes) <= MAX_PRIZES:
        v.add(field, f"1..{MAX_PRIZES} prizes")
    nothing = sum(p.kind is PrizeKind.NOTHING for p in prizes)
    if nothing != 1:
        v.add(field, f"exactly one NOTHING slot ({NOTHING_NAME}) is required, found {nothing}")
    total = sum(p.probability_bp for p in prizes)
    if total != TOTAL_BP:
        v.add(field, f"probability_bp must sum to exactly {TOTAL_BP}, not {total}")
    ids = [p.prize_id for p in prizes if p.prize_id]
    if len(set(ids)) != len(ids):
        v.add(field, "prize_id must be unique")
    for i, p in enumerate(prizes):
        at = f"{field}[{i}]"
        validate_id(p.prize_id, f"{at}.prize_id", v, required=False)
        v.check(len(p.name) <= MAX_NAME and (p.name.strip() != "" or p.kind is PrizeKind.NOTHING),
                f"{at}.name", f"1..{MAX_NAME} characters")
        v.check(0 <= p.probability_bp <= TOTAL_BP, f"{at}.probability_bp", f"must be 0..{TOTAL_BP}")
        v.check(0 <= p.stock <= MAX_STOCK, f"{at}.stock", f"must be 0..{MAX_STOCK}")
        if p.kind is PrizeKind.POINTS:
            v.check(1 <= p.points <= MAX_POINTS_PRICE, f"{at}.points", f"must be 1..{MAX_POINTS_PRICE}")
        else:
            v.check(p.points == 0, f"{at}.points", "only for a POINTS prize")
        if p.kind in (PrizeKind.COUPON, PrizeKind.GIFT):
            validate_id(p.reward_id, f"{at}.reward_id", v)
        else:
            v.check(p.reward_id == "", f"{at}.reward_id", "only for a COUPON or GIFT prize")
    return v


def lottery_violations(lottery: Lottery, v: Violations | None = None) -> Violations:
    """Every rule a lottery keeps, named as in the request (lottery.*)."""
    v = v or Violations()
    v.check(lottery.name.strip() != "" and len(lottery.name) <= MAX_NAME, "lottery.name",
            f"1..{MAX_NAME} characters")
    v.check(0 <= lottery.cost_points <= MAX_POINTS_PRICE, "lottery.cost_points", f"must be 0..{MAX_POINTS_PRICE}")
    v.check(0 <= lottery.free_draws_per_month <= MAX_FREE_DRAWS, "lottery.free_draws_per_month",
            f"must be 0..{MAX_FREE_DRAWS}")
    if lottery.cost_points == 0 and lottery.free_draws_per_month == 0:
        v.add("lottery.cost_points", "a draw costs points, or members get free draws a month: set either")
    v.check(all(0 <= t <= MAX_TIER_LEVEL for t in lottery.free_draw_tier_levels), "lottery.free_draw_tier_levels",
            f"levels 0..{MAX_TIER_LEVEL}")
    if lottery.start_at is not None and lottery.end_at is not None and lottery.end_at <= lottery.start_at:
        v.add("lottery.end_time", "must be after start_time")
    return table_violations(lottery.prizes, v)


def slot_of(prizes: Sequence[Prize], r: int) -> int:
    """The slot the random integer r (0 <= r < 10,000) lands on: slot i owns the r in
    [sum of the slots before it, that plus its probability_bp)."""
    if not 0 <= r < TOTAL_BP:
        raise ValueError(f"r must be in [0, {TOTAL_BP})")
    edge = 0
    for i, p in enumerate(prizes):
        edge += p.probability_bp
        if r < edge:
            return i
    raise ValueError("the table's probabilities do not sum to 10,000")


def nothing_slot(prizes: Sequence[Prize]) -> int:
    return next(i for i, p in enumerate(prizes) if p.kind is PrizeKind.NOTHING)


def draw(prizes: Sequence[Prize], r: int) -> int:
    """The slot won with the random integer r: the slot r lands on, or the NOTHING slot when that
    prize is out of stock (as the table says; the stock is taken by a conditional update, which
    falls back the same way when it loses a race)."""
    i = slot_of(prizes, r)
    return i if prizes[i].in_stock else nothing_slot(prizes)


def random_bp() -> int:
    """The draw's random integer from a cryptographically sound source."""
    return secrets.randbelow(TOTAL_BP)
