"""Every reason the points service gives (AIP-193 ErrorInfo.reason, and RecordAction's
not_earned_reason), declared once: no reason is spelled anywhere else."""

from __future__ import annotations

# Not found.
PROGRAM_NOT_FOUND = "PROGRAM_NOT_FOUND"
MEMBER_NOT_FOUND = "MEMBER_NOT_FOUND"
MULTIPLIER_NOT_FOUND = "MULTIPLIER_NOT_FOUND"
HOLD_NOT_FOUND = "HOLD_NOT_FOUND"

# Failed preconditions.
ACCOUNT_CLOSED = "ACCOUNT_CLOSED"
INSUFFICIENT_POINTS = "INSUFFICIENT_POINTS"
HOLD_CAPTURED = "HOLD_CAPTURED"
HOLD_RELEASED = "HOLD_RELEASED"
HOLD_EXPIRED = "HOLD_EXPIRED"
NO_DAILY_POOL = "NO_DAILY_POOL"

# Permission denied: a shop key asked ExpirePoints for an as_of still to come.
EXPIRY_AHEAD_ADMIN_ONLY = "EXPIRY_AHEAD_ADMIN_ONLY"

# Why RecordAction earned nothing (RecordActionResponse.not_earned_reason; ACCOUNT_CLOSED too).
RULE_DISABLED = "RULE_DISABLED"
ALREADY_EARNED = "ALREADY_EARNED"
DAILY_CAP_REACHED = "DAILY_CAP_REACHED"
MONTHLY_CAP_REACHED = "MONTHLY_CAP_REACHED"
LIFETIME_CAP_REACHED = "LIFETIME_CAP_REACHED"
ALREADY_SIGNED_IN_TODAY = "ALREADY_SIGNED_IN_TODAY"
# A late report of a sign-in on a day before the member's last sign-in.
SIGN_IN_BEFORE_LAST = "SIGN_IN_BEFORE_LAST"
