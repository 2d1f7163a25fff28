"""Every reason the rewards service gives (AIP-193 ErrorInfo.reason, and the why-nots of
ListRewards and ValidateRedemption), declared once: no reason is spelled anywhere else."""

from __future__ import annotations

# Not found.
REWARD_NOT_FOUND = "REWARD_NOT_FOUND"
REDEMPTION_NOT_FOUND = "REDEMPTION_NOT_FOUND"
COUPON_NOT_FOUND = "COUPON_NOT_FOUND"

# Why a reward cannot be redeemed (FAILED_PRECONDITION reasons of Redeem, too).
NOT_ACTIVE = "NOT_ACTIVE"
NOT_STARTED = "NOT_STARTED"
ENDED = "ENDED"
NOT_A_MEMBER = "NOT_A_MEMBER"
TIER_TOO_LOW = "TIER_TOO_LOW"
OUT_OF_STOCK = "OUT_OF_STOCK"
LIMIT_REACHED = "LIMIT_REACHED"
MONTHLY_LIMIT_REACHED = "MONTHLY_LIMIT_REACHED"
# From points: the member's balance does not cover the price.
INSUFFICIENT_POINTS = "INSUFFICIENT_POINTS"
# From points too: a redemption's or draw's failure_reason when points refuses a step of its saga.
ACCOUNT_CLOSED = "ACCOUNT_CLOSED"  # the member left: points takes nothing more
HOLD_EXPIRED = "HOLD_EXPIRED"  # the points were held too long (a payment never came)
HOLD_NOT_FOUND = "HOLD_NOT_FOUND"
HOLD_RELEASED = "HOLD_RELEASED"
POINTS_MEMBER_NOT_FOUND = "MEMBER_NOT_FOUND"  # points has not heard of the member yet
FROM_POINTS = frozenset({INSUFFICIENT_POINTS, ACCOUNT_CLOSED, HOLD_EXPIRED, HOLD_NOT_FOUND, HOLD_RELEASED,
                         POINTS_MEMBER_NOT_FOUND})

# Redemptions' states and changes.
NOT_AWAITING_PAYMENT = "NOT_AWAITING_PAYMENT"
PAYMENT_TIMEOUT = "PAYMENT_TIMEOUT"
CANCELLED_BY_MEMBER = "CANCELLED_BY_MEMBER"
CANCELLED_BY_OPERATOR = "CANCELLED_BY_OPERATOR"
ALREADY_SHIPPED = "ALREADY_SHIPPED"
NOT_A_GIFT = "NOT_A_GIFT"
NOT_SHIPPABLE = "NOT_SHIPPABLE"
NOT_CANCELLABLE = "NOT_CANCELLABLE"
OPERATOR_REQUIRED = "OPERATOR_REQUIRED"
# A redemption given up after its saga met accidents too many times (everything given back).
REDEMPTION_ABORTED = "REDEMPTION_ABORTED"

# Coupons.
COUPON_NOT_A_COUPON_REWARD = "COUPON_NOT_A_COUPON_REWARD"
COUPON_ALREADY_USED = "COUPON_ALREADY_USED"
COUPON_EXPIRED = "COUPON_EXPIRED"
COUPON_NOT_YET_VALID = "COUPON_NOT_YET_VALID"
COUPON_REVOKED = "COUPON_REVOKED"
COUPON_NOT_USED = "COUPON_NOT_USED"
COUPON_ORDER_MISMATCH = "COUPON_ORDER_MISMATCH"
THRESHOLD_NOT_MET = "THRESHOLD_NOT_MET"

# Benefit packs.
PACK_NOT_FOUND = "PACK_NOT_FOUND"
PACK_ITEM_NOT_PACKABLE = "PACK_ITEM_NOT_PACKABLE"

# Lottery.
LOTTERY_NOT_FOUND = "LOTTERY_NOT_FOUND"
DRAW_NOT_FOUND = "DRAW_NOT_FOUND"
# A COUPON prize names a reward that is not a coupon reward, or a GIFT prize one not a gift.
PRIZE_REWARD_MISMATCH = "PRIZE_REWARD_MISMATCH"
# A free-only lottery (cost_points 0) whose free draws of the month are used up.
NO_DRAWS_LEFT = "NO_DRAWS_LEFT"
# A draw undone for a reason the refusal did not name.
DRAW_ABORTED = "DRAW_ABORTED"

# Campaigns and checkout.
CAMPAIGN_NOT_FOUND = "CAMPAIGN_NOT_FOUND"
# The segments service could not say whether the buyer is in a segment audience (the campaign
# does not apply: EvaluateCart's why-not).
SEGMENTS_NOT_AVAILABLE = "SEGMENTS_NOT_AVAILABLE"
# Issuance to a segment (IssuanceJob.failure_reason; NOT_ACTIVE as above when the reward was
# deactivated meanwhile, and segments' own reasons, e.g. SEGMENT_NOT_FOUND, pass on).
ISSUANCE_JOB_NOT_FOUND = "ISSUANCE_JOB_NOT_FOUND"
# Why a campaign does not apply to a cart (EvaluateCart; THRESHOLD_NOT_MET as above).
NOT_RUNNING = "NOT_RUNNING"
NOT_IN_AUDIENCE = "NOT_IN_AUDIENCE"
HELD_OUT = "HELD_OUT"
NO_ELIGIBLE_ITEMS = "NO_ELIGIBLE_ITEMS"
# A better campaign or coupon applied instead.
OUTDONE = "OUTDONE"
# A coupon of another member's wallet (or a cart without a member).
COUPON_NOT_OWNED = "COUPON_NOT_OWNED"
