"""Every error reason the membership service gives (AIP-193 ErrorInfo.reason), in one place."""

from __future__ import annotations

PROGRAM_NOT_FOUND = "PROGRAM_NOT_FOUND"
PROGRAM_EXISTS = "PROGRAM_EXISTS"
MEMBER_NOT_FOUND = "MEMBER_NOT_FOUND"
ALREADY_MEMBER = "ALREADY_MEMBER"
JOIN_THRESHOLD_NOT_MET = "JOIN_THRESHOLD_NOT_MET"
ORDER_NOT_FOUND = "ORDER_NOT_FOUND"
ORDER_CONFLICT = "ORDER_CONFLICT"
ORDER_REFUNDED = "ORDER_REFUNDED"
REFUND_CONFLICT = "REFUND_CONFLICT"
REFUND_EXCEEDS_ORDER = "REFUND_EXCEEDS_ORDER"
# The kit's reason for a request_id whose stored answer does not fit; membership gives it too for
# an answer erased with a member's data.
REQUEST_ID_REUSED = "REQUEST_ID_REUSED"
# DecayGrowth as of a moment still to come needs the admin key (a shop key decays what is due now).
DECAY_AHEAD_ADMIN_ONLY = "DECAY_AHEAD_ADMIN_ONLY"
