"""What an earning is worth: purchase points, clawbacks, streaks, caps and the referral reward.
Pure Python."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta

from services.points import reasons
from services.points.domain.enums import ONCE_ACTIONS
from services.points.domain.rules import MILLI, EarnRule


def purchase_points(amount_fen: int, points_per_yuan: int, rate_milli: int, multiplier_milli: int) -> int:
    """Points per whole yuan (不满1元部分不累计) × tier rate × multiplier, floored once, in integers."""
    whole_yuan = max(0, amount_fen) // 100
    return whole_yuan * points_per_yuan * rate_milli * multiplier_milli // (MILLI * MILLI)


def clawback_points(earned: int, amount_fen: int, refunded_fen: int, points_per_yuan: int, rate_milli: int,
                    multiplier_milli: int, already_clawed: int) -> int:
    """What a refund takes back: what the order earned less what its remaining amount would have
    earned, less what earlier refunds took back."""
    keeps = purchase_points(amount_fen - refunded_fen, points_per_yuan, rate_milli, multiplier_milli)
    return max(0, earned - keeps - already_clawed)


def next_streak(last_day: date | None, streak: int, today: date) -> int:
    return streak + 1 if last_day is not None and today - last_day == timedelta(days=1) else 1


def cap_periods(day: date) -> tuple[str, str, str]:
    """The counter keys of one occurrence: its day, its month, lifetime."""
    return f"d:{day.isoformat()}", f"m:{day.year:04d}-{day.month:02d}", "life"


def cap_refusal(rule: EarnRule, counts: Mapping[str, int], day: date, *, subject_earned: bool = False) -> str:
    """Why the rule earns nothing more (a reason), or "" when it may earn. `counts` are the
    member's earlier occurrences by cap_periods key; `subject_earned` says the subject (the
    reviewed order, the referee) earned already."""
    if subject_earned:
        return reasons.ALREADY_EARNED
    day_key, month_key, life_key = cap_periods(day)
    if rule.action in ONCE_ACTIONS and counts.get(life_key, 0) >= 1:
        return reasons.ALREADY_EARNED
    for cap, key, reason in ((rule.caps.per_day, day_key, reasons.DAILY_CAP_REACHED),
                             (rule.caps.per_month, month_key, reasons.MONTHLY_CAP_REACHED),
                             (rule.caps.lifetime, life_key, reasons.LIFETIME_CAP_REACHED)):
        if cap and counts.get(key, 0) >= cap:
            return reason
    return ""


def referral_points(rule: EarnRule | None, *, first_order: bool, has_referrer: bool, amount_fen: int) -> int | None:
    """What a referee's purchase gives each side of a referral, or None when it gives nothing:
    only a first purchase of a referred member, of at least the rule's minimum; the rule's
    points, or as many points as the purchase's whole yuan when the rule says 0."""
    if not (first_order and has_referrer and rule is not None and rule.enabled and amount_fen >= rule.min_order_fen):
        return None
    return rule.points or amount_fen // 100
