"""A member's points account: the balance rules that every change obeys. Credits pay a debt
first; spends take the live lots that expire first; a closed account takes nothing. Pure
Python: the ledger module loads an Account, changes it, and saves what changed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime

from services.kit.errors import FailedPrecondition
from services.points import reasons
from services.points.domain.earning import next_streak


@dataclass
class Source:
    """Where a ledger entry came from."""

    order_id: str = ""
    action: int = 0
    rule_id: str = ""
    multiplier_id: str = ""
    redemption_id: str = ""
    hold_id: str = ""
    operator: str = ""
    reason: str = ""
    reference: str = ""


@dataclass(frozen=True)
class Lot:
    """Points earned together, expiring together (积分批次)."""

    lot_id: int
    remaining: int
    expires_at: datetime | None  # naive UTC; None never expires
    order_id: str = ""

    def live(self, now: datetime) -> bool:
        return self.remaining > 0 and (self.expires_at is None or self.expires_at > now)


def lots_to_take(lots: Iterable[Lot], points: int, now: datetime, *, prefer_order: str = ""
                 ) -> tuple[list[tuple[int, int]], int]:
    """Which live lots give `points`: the earliest expiry first, lots that never expire last (a
    refunded order's own lot before any). Returns [(lot_id, taken)] and what they cannot cover."""
    def order(lot: Lot) -> tuple:
        return (bool(prefer_order) and lot.order_id != prefer_order, lot.expires_at is None,
                lot.expires_at or datetime.max, lot.lot_id)

    taken: list[tuple[int, int]] = []
    left = points
    for lot in sorted((lot for lot in lots if lot.live(now)), key=order):
        if left == 0:
            break
        take = min(left, lot.remaining)
        taken.append((lot.lot_id, take))
        left -= take
    return taken, left


@dataclass
class Account:
    """available = Σ live lots − debt = Σ ledger amounts; held = Σ ledger held deltas."""

    shop_id: str
    member_id: str
    closed: bool
    available: int
    held: int
    debt: int
    lifetime_earned: int
    birth_month: int | None
    birth_day: int | None
    referrer_member_id: str | None
    last_sign_in_day: str | None
    sign_in_streak: int
    dirty: set[str] = field(default_factory=set)  # what changed since loaded

    @property
    def birthday(self) -> tuple[int, int] | None:
        return (self.birth_month, self.birth_day) if self.birth_month and self.birth_day else None

    def refuse_if_closed(self) -> None:
        if self.closed:
            raise FailedPrecondition("the member left; the account is closed", reason=reasons.ACCOUNT_CLOSED,
                                     subject=f"member/{self.member_id}")

    def move(self, amount: int, held_delta: int = 0) -> None:
        """Moves the balance by one ledger entry."""
        self.available += amount
        self.held += held_delta
        self.dirty.update(("available", "held"))

    def credit(self, points: int) -> int:
        """Adds points; a debt is paid off first. Returns what is left for a new lot."""
        self.move(points)
        paid = min(self.debt, points)
        if paid:
            self.debt -= paid
            self.dirty.add("debt")
        return points - paid

    def count_earned(self, points: int) -> None:
        self.lifetime_earned += points
        self.dirty.add("lifetime_earned")

    def require_spendable(self, points: int) -> None:
        """Refuses a spend or hold beyond the available balance, telling the shortfall."""
        if self.available < points:
            raise FailedPrecondition(
                f"not enough points: {self.available} available, {points} asked", reason=reasons.INSUFFICIENT_POINTS,
                subject=f"member/{self.member_id}",
                metadata={"available": self.available, "requested": points, "shortfall": points - self.available})

    def owe(self, points: int) -> None:
        """Points taken back after they were spent: later earnings pay them first."""
        if points:
            self.debt += points
            self.dirty.add("debt")

    def judge_sign_in(self, day: date) -> tuple[str, int]:
        """(a reason it earns nothing or "", the streak including `day`) for a sign-in on `day`:
        once per day, and never on a day before the last sign-in."""
        if self.last_sign_in_day is not None:
            last = date.fromisoformat(self.last_sign_in_day)
            if day == last:
                return reasons.ALREADY_SIGNED_IN_TODAY, self.sign_in_streak
            if day < last:
                return reasons.SIGN_IN_BEFORE_LAST, self.sign_in_streak
            return "", next_streak(last, self.sign_in_streak, day)
        return "", next_streak(None, self.sign_in_streak, day)

    def sign_in(self, day: date, streak: int) -> None:
        self.last_sign_in_day, self.sign_in_streak = day.isoformat(), streak
        self.dirty.update(("last_sign_in_day", "sign_in_streak"))

    def close(self) -> None:
        """The member left: no more points, and the birthday goes with the member."""
        self.closed = True
        self.birth_month = self.birth_day = None
        self.dirty.update(("closed", "birth_month", "birth_day"))
