"""Every error reason the kit itself gives (ErrorInfo.reason, AIP-193), in one place; each
service declares its own in its reasons.py."""

from __future__ import annotations

INVALID_ARGUMENT = "INVALID_ARGUMENT"  # only with no field to name; see errors.reason_for:
# bad fields give <FIELD>_REQUIRED (SHOP_ID_REQUIRED) or INVALID_<FIELD> (INVALID_PAGE_TOKEN)
MALFORMED_REQUEST = "MALFORMED_REQUEST"  # bytes that are not the request message
REQUEST_ID_REUSED = "REQUEST_ID_REUSED"  # the same request_id with another request
REQUEST_ANSWER_ERASED = "REQUEST_ANSWER_ERASED"  # the first answer went with a member's personal data
MISSING_CREDENTIALS = "MISSING_CREDENTIALS"
INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
ADMIN_ONLY = "ADMIN_ONLY"
SHOP_MISMATCH = "SHOP_MISMATCH"
DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
CONSUMER_UNAVAILABLE = "CONSUMER_UNAVAILABLE"
OVERLOADED = "OVERLOADED"
INTERNAL = "INTERNAL"
