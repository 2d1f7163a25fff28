"""Page tokens are checked completely before any query sees them: a forged or foreign token is
INVALID_ARGUMENT on page_token, never INTERNAL, through the real list RPCs on both backends."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.points.v1 import points_service_pb2 as pp

from tests.support.builders import PointsShop, join_member, member_with_points, points_shop
from tests.support.errors import failure_of
from tests.support.services import Authed, ServiceUnderTest, Shop, create_shop


def forged(data: Any) -> str:
    """A token as an attacker builds one: base64 of any JSON."""
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def assert_refused_token(call: Callable[[str], object], token: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call(token)
    failure = failure_of(caught.value)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert "page_token" in failure.fields


@pytest.fixture
def ps(points: ServiceUnderTest, shop: Shop) -> PointsShop:
    return points_shop(points, shop)


def ledger_call(ps: PointsShop, member_id: str) -> Callable[[str], pp.ListLedgerResponse]:
    return lambda token: ps.api.ListLedger(pp.ListLedgerRequest(
        shop_id=ps.shop_id, member_id=member_id, page_size=1, page_token=token))


def tier_history_call(shop: Shop, member_id: str) -> Callable[[str], mpb.ListTierHistoryResponse]:
    return lambda token: shop.api.ListTierHistory(mpb.ListTierHistoryRequest(
        shop_id=shop.shop_id, member_id=member_id, page_size=1, page_token=token))


def forged_cursors(kind: str, shop_id: str) -> list[Any]:
    """Bodies of tokens that no list returned: out of int64, wrong types, wrong shapes."""
    return [
        {"k": kind, "a": [2**70], "s": shop_id},
        {"k": kind, "a": [-3], "s": shop_id},
        {"k": kind, "a": [1, 1], "s": shop_id},
        {"k": kind, "a": [-(2**70)], "s": shop_id},
        {"k": kind, "a": [2**63], "s": shop_id},
        {"k": kind, "a": [2**200], "s": shop_id},
        {"k": kind, "a": [1.5], "s": shop_id},
        {"k": kind, "a": [True], "s": shop_id},
        {"k": kind, "a": ["12"], "s": shop_id},
        {"k": kind, "a": [None], "s": shop_id},
        {"k": kind, "a": [[1]], "s": shop_id},
        {"k": kind, "a": [], "s": shop_id},
        {"k": kind, "a": {"id": 1}, "s": shop_id},
        {"k": "members", "a": [1], "s": shop_id},
        {"k": kind, "a": [1]},
        {"k": kind, "a": [1], "s": "another-shop"},
        [kind, [1]],
        "just a string",
    ]


def test_forged_ledger_tokens_are_invalid_arguments(ps: PointsShop) -> None:
    member_id = member_with_points(ps, 10)
    call = ledger_call(ps, member_id)
    for body in forged_cursors("ledger", ps.shop_id):
        assert_refused_token(call, forged(body))
    for token in ("%%%", "not-base64!", "A" * 5000, base64.urlsafe_b64encode(b"\xff\xfe").decode()):
        assert_refused_token(call, token)


def test_forged_tier_history_tokens_are_invalid_arguments(shop: Shop) -> None:
    call = tier_history_call(shop, join_member(shop))
    for body in forged_cursors("tier_history", shop.shop_id):
        assert_refused_token(call, forged(body))


def test_member_list_tokens_with_hostile_text_are_invalid_arguments(shop: Shop) -> None:
    def call(token: str) -> mpb.ListMembersResponse:
        return shop.api.ListMembers(mpb.ListMembersRequest(shop_id=shop.shop_id, page_size=1, page_token=token))

    for cursor in ("m\x00", "m" * 500, 7):
        assert_refused_token(call, forged({"k": "members", "a": [cursor], "s": shop.shop_id}))


def test_a_token_in_range_still_pages(ps: PointsShop) -> None:
    member_id = member_with_points(ps, 10)
    call = ledger_call(ps, member_id)
    first = call("")
    assert first.next_page_token
    second = call(first.next_page_token)
    assert second.entries[0].entry_id != first.entries[0].entry_id
    # The largest int64 is a valid (if empty-handed) position: it pages from the newest entry.
    assert call(forged({"k": "ledger", "a": [2**63 - 1], "s": ps.shop_id})).entries


def test_a_token_minted_for_one_shop_is_refused_for_another(
    membership: ServiceUnderTest, admin: Authed, points: ServiceUnderTest, ps: PointsShop
) -> None:
    other = points_shop(points, create_shop(membership, admin))
    mine = member_with_points(ps, 10)
    theirs = member_with_points(other, 10)
    token = ledger_call(ps, mine)("").next_page_token
    assert token
    assert_refused_token(ledger_call(other, theirs), token)

    for _ in range(2):
        join_member(ps.shop)
    members = ps.shop.api.ListMembers(mpb.ListMembersRequest(shop_id=ps.shop_id, page_size=1))
    assert members.next_page_token
    assert_refused_token(lambda t: other.shop.api.ListMembers(mpb.ListMembersRequest(
        shop_id=other.shop_id, page_size=1, page_token=t)), members.next_page_token)


def test_forged_tokens_of_the_shops_short_lists_are_invalid_arguments(ps: PointsShop) -> None:
    """Earn rules and multipliers page by position: a negative or extra position is refused, not
    read from the end of the list."""
    calls: dict[str, Callable[[str], object]] = {
        "earn_rules": lambda t: ps.api.ListEarnRules(pp.ListEarnRulesRequest(
            shop_id=ps.shop_id, page_size=1, page_token=t)),
        "multipliers": lambda t: ps.api.ListMultipliers(pp.ListMultipliersRequest(
            shop_id=ps.shop_id, page_size=1, page_token=t)),
    }
    for kind, call in calls.items():
        for body in forged_cursors(kind, ps.shop_id):
            assert_refused_token(call, forged(body))
    expiring = forged({"k": "expiring", "a": [7], "s": ps.shop_id})
    assert_refused_token(lambda t: ps.api.ListExpiringPoints(pp.ListExpiringPointsRequest(
        shop_id=ps.shop_id, within_days=30, page_token=t)), expiring)
