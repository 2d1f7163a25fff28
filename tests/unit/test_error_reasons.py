"""INVALID_ARGUMENT names what was wrong in its reason (AIP-193), so a caller can act on it without
reading the message: the first violation's field, required or invalid."""

from __future__ import annotations

import pytest

from services.kit.errors import InvalidArgument


@pytest.mark.parametrize(("violations", "reason"), [
    ([("shop_id", "required")], "SHOP_ID_REQUIRED"),
    ([("page_token", "not a token this list returned")], "INVALID_PAGE_TOKEN"),
    ([("profile.phone", "11 digits"), ("shop_id", "required")], "INVALID_PROFILE_PHONE"),
    ([("members[3].buyer_id", "1-64 characters")], "INVALID_MEMBERS_BUYER_ID"),
    ([("x" * 80, "too long")], "INVALID_" + "X" * 55),
    ([], "INVALID_ARGUMENT"),
])
def test_the_reason_names_the_first_bad_field(violations: list[tuple[str, str]], reason: str) -> None:
    error = InvalidArgument(violations)
    assert error.reason == reason and len(error.reason) <= 63


def test_a_given_reason_is_kept() -> None:
    assert InvalidArgument([("request", "not the request message")], reason="MALFORMED_REQUEST").reason == (
        "MALFORMED_REQUEST")
