"""Points rules in pure Python (no database, no gRPC): the vocabulary (enums), shop-local
dates and expiry, the program with its rules and multipliers, what an earning is worth, and the
account aggregate every balance change goes through."""

from services.points.domain.account import Account, Lot, Source, lots_to_take
from services.points.domain.dates import add_months, expiry_for, local_date, local_midnight_utc
from services.points.domain.earning import (
    cap_periods,
    cap_refusal,
    clawback_points,
    next_streak,
    purchase_points,
    referral_points,
)
from services.points.domain.enums import (
    ONCE_ACTIONS,
    RECORDABLE,
    SUBJECT_ACTIONS,
    Action,
    BirthdayWindow,
    EntryKind,
    ExpiryPolicy,
    Granularity,
    HoldStatus,
    LeavePolicy,
    MultiplierKind,
)
from services.points.domain.rules import (
    CAPS_PATHS,
    DEFAULT_TIME_ZONE,
    MAX_HOLD_SECONDS,
    MAX_POINTS,
    MILLI,
    PROGRAM_PATHS,
    RULE_PATHS,
    Caps,
    EarnRule,
    Multiplier,
    Program,
    best_multiplier,
    default_multipliers,
    default_program,
    default_rules,
    in_birthday_window,
    starting_rule,
)

__all__ = [
    "CAPS_PATHS", "DEFAULT_TIME_ZONE", "MAX_HOLD_SECONDS", "MAX_POINTS", "MILLI", "ONCE_ACTIONS", "PROGRAM_PATHS",
    "RECORDABLE", "RULE_PATHS", "SUBJECT_ACTIONS", "Account", "Action", "BirthdayWindow", "Caps", "EarnRule",
    "EntryKind", "ExpiryPolicy", "Granularity", "HoldStatus", "LeavePolicy", "Lot", "Multiplier", "MultiplierKind",
    "Program", "Source", "add_months", "best_multiplier", "cap_periods", "cap_refusal", "clawback_points",
    "default_multipliers", "default_program", "default_rules", "expiry_for", "in_birthday_window", "local_date",
    "local_midnight_utc", "lots_to_take", "next_streak", "purchase_points", "referral_points", "starting_rule",
]
