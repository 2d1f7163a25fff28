"""The member centre (/v1/me/...) over HTTP, through a real gateway in front of the real services,
on both backends: a buyer joins and sees their profile (phone masked), tier, points earned for
real, the ledger page by page, their coupons by status and the rewards they can redeem (with why
not for the others); redeems once per request id; signs in once a day; draws in the lottery;
leaves only when they confirm it. A buyer sees only themself, in the token's shop only."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.rewards.v1 import rewards_service_pb2 as rpb

from tests.conftest import Authed, ServiceUnderTest, Shop, create_shop
from tests.support.builders import eventually, rid
from tests.support.gateway import Storefront
from tests.support.lottery import NOTHING, create_lottery, points_prize
from tests.support.rewards import create_reward, fund, rewards_api, set_tier, wait_until_known

MEMBER_ENDPOINTS = [("GET", "/v1/me"), ("GET", "/v1/me/tier"), ("GET", "/v1/me/points"), ("GET", "/v1/me/ledger"),
                    ("GET", "/v1/me/coupons"), ("GET", "/v1/me/rewards"), ("GET", "/v1/me/lotteries"),
                    ("POST", "/v1/me/sign-in"), ("POST", "/v1/me/redemptions"), ("POST", "/v1/me/leave")]


def key() -> str:
    return uuid.uuid4().hex


def join(http: httpx.Client, **body: Any) -> httpx.Response:
    return http.post("/v1/me/join", json={"consent": [], **body}, headers={"Idempotency-Key": key()})


class Centre:
    """A shop's rewards stub (a reward in its catalogue, so that rewards can be watched for its
    members) and its members, each a buyer with a token-carrying client."""

    def __init__(self, storefront: Storefront, rewards: ServiceUnderTest, points: ServiceUnderTest, shop: Shop):
        self.storefront, self.points, self.shop = storefront, points, shop
        self.api: Authed = rewards_api(rewards, shop)
        self.coupon = create_reward(self.api, shop.shop_id, name="满99减10", points_price=100, stock=10)

    def member(self, buyer_id: str | None = None, funded: int = 0, **profile: Any) -> tuple[httpx.Client, str]:
        """A buyer who joined through the gateway, known to rewards, with `funded` points more."""
        http = self.storefront.as_buyer(self.shop, buyer_id or "b-" + key()[:10], follows_shop=True)
        joined = join(http, **profile)
        assert joined.status_code == 201, joined.text
        member_id = joined.json()["member_id"]
        wait_until_known(self.api, self.shop.shop_id, member_id)
        fund(self.points, self.shop, member_id, funded) if funded else eventually(
            lambda: http.get("/v1/me/points").json()["lifetime_earned"] > 0, "the join points")
        return http, member_id


@pytest.fixture
def centre(storefront: Storefront, rewards: ServiceUnderTest, points: ServiceUnderTest, shop: Shop) -> Centre:
    return Centre(storefront, rewards, points, shop)


def available(http: httpx.Client) -> int:
    answer = http.get("/v1/me/points")
    assert answer.status_code == 200, answer.text
    return answer.json()["available"]


def whole_ledger(http: httpx.Client, page_size: int) -> tuple[list[dict[str, Any]], int]:
    """Every ledger entry, newest first, and how many pages it took."""
    entries, token, pages = [], "", 0
    while True:
        page = http.get("/v1/me/ledger", params={"page_size": page_size, "page_token": token})
        assert page.status_code == 200, page.text
        pages += 1
        entries += page.json()["entries"]
        token = page.json()["next_page_token"]
        if not token:
            return entries, pages


def redeem(http: httpx.Client, reward_id: str, request_key: str | None = None) -> httpx.Response:
    return http.post("/v1/me/redemptions", json={"reward_id": reward_id},
                     headers={"Idempotency-Key": request_key or key()})


# ----- joining and the profile ------------------------------------------------------------------


def test_a_buyer_joins_with_consented_fields_and_sees_the_phone_masked(storefront: Storefront, shop: Shop) -> None:
    http = storefront.as_buyer(shop, "b-" + key()[:10], follows_shop=True)
    joined = join(http, consent=["name", "phone", "region"], name="王小明", phone="13812345678", region="浙江",
                  channel="live_stream")
    assert joined.status_code == 201, joined.text

    me = http.get("/v1/me")

    assert me.status_code == 200
    body = me.json()
    assert body["profile"] == {"name": "王小明", "gender": None, "phone_masked": "138****5678", "birthday": None,
                               "region": "浙江"}
    assert "13812345678" not in me.text
    assert set(body["consent"]) == {"name", "phone", "region"} and body["join_channel"] == "live_stream"
    assert (body["tier"]["level"], body["status"], body["member_id"]) == (0, "active", joined.json()["member_id"])
    progress = http.get("/v1/me/tier").json()
    assert progress["current"]["level"] == 0 and progress["next"]["level"] == 1
    assert 0 <= progress["progress_permille"] <= 1000 and progress["spend_missing_fen"] > 0


def test_a_join_needs_a_request_id_and_consent_for_each_field_and_happens_once(storefront: Storefront,
                                                                             shop: Shop) -> None:
    http = storefront.as_buyer(shop, "b-" + key()[:10], follows_shop=True)
    no_key = http.post("/v1/me/join", json={"consent": []})
    unconsented = join(http, consent=["name"], name="王小明", phone="13812345678")
    assert (no_key.status_code, no_key.json()["reason"]) == (422, "REQUEST_ID_REQUIRED")
    assert (unconsented.status_code, unconsented.json()["reason"]) == (422, "CONSENT_REQUIRED")
    assert [e["field"] for e in unconsented.json()["errors"]] == ["phone"]

    first_key = key()
    first = http.post("/v1/me/join", json={"consent": []}, headers={"Idempotency-Key": first_key})
    retried = http.post("/v1/me/join", json={"consent": []}, headers={"Idempotency-Key": first_key})
    again = join(http)

    assert first.status_code == retried.status_code == 201
    assert first.json()["member_id"] == retried.json()["member_id"]
    assert (again.status_code, again.json()["reason"]) == (409, "ALREADY_MEMBER")
    assert again.headers["content-type"] == "application/problem+json"


def test_a_non_member_gets_404_not_a_member_on_every_member_endpoint(storefront: Storefront, shop: Shop) -> None:
    with storefront.as_buyer(shop, "b-" + key()[:10]) as http:
        for method, path in MEMBER_ENDPOINTS:
            body = {"reward_id": "r-1", "confirm": True} if method == "POST" else None
            answer = http.request(method, path, json=body, headers={"Idempotency-Key": key()})
            assert (answer.status_code, answer.json()["reason"]) == (404, "NOT_A_MEMBER"), path


def test_no_token_is_401_and_a_token_of_another_shop_named_in_the_query_is_403(storefront: Storefront,
                                                                             shop: Shop) -> None:
    with storefront.client() as anonymous, storefront.as_buyer(shop, "b-1") as http:
        assert anonymous.get("/v1/me").status_code == 401
        mismatch = http.get("/v1/me/points", params={"shop_id": "another-shop"})
    assert (mismatch.status_code, mismatch.json()["reason"]) == (403, "SHOP_MISMATCH")


# ----- points and the ledger --------------------------------------------------------------------


def test_points_earned_show_in_the_balance_and_the_ledger_newest_first_page_by_page(centre: Centre) -> None:
    http, member_id = centre.member()
    before = available(http)
    for amount in (11, 22, 33, 44, 55):
        fund(centre.points, centre.shop, member_id, amount)

    assert available(http) == before + 165
    entries, pages = whole_ledger(http, page_size=2)
    assert [e["amount"] for e in entries[:5]] == [55, 44, 33, 22, 11]
    assert entries[0]["balance_after"] == before + 165 and entries[0]["kind"] == "earn"
    assert entries[-1]["action"] == "join"  # the join's own points, first of all
    assert pages == -(-len(entries) // 2) >= 3
    assert len({e["entry_id"] for e in entries}) == len(entries)


def test_a_completed_order_earns_points_that_show_in_the_centre(centre: Centre) -> None:
    buyer_id = "b-" + key()[:10]
    http, _ = centre.member(buyer_id)
    before = available(http)
    centre.shop.api.RecordOrder(mpb.RecordOrderRequest(shop_id=centre.shop.shop_id, order_id="o-1",
                                                       buyer_id=buyer_id, amount_fen=12_345))
    centre.shop.api.CompleteOrder(mpb.CompleteOrderRequest(request_id=rid(), shop_id=centre.shop.shop_id,
                                                           order_id="o-1"))

    eventually(lambda: available(http) == before + 123, "the purchase points (123 whole yuan)", timeout=30)
    newest = http.get("/v1/me/ledger", params={"page_size": 1}).json()["entries"][0]
    assert (newest["action"], newest["order_id"], newest["amount"]) == ("purchase", "o-1", 123)
    assert newest["expire_time"] is not None
    points = http.get("/v1/me/points").json()
    assert points["next_expiry_time"] is not None and points["next_expiry_amount"] > 0
    assert http.get("/v1/me").json()["cumulative_spend_fen"] == 12_345


# ----- redeeming, coupons, rewards --------------------------------------------------------------


def test_a_redeem_lowers_the_balance_and_shows_in_the_ledger_and_the_coupons(centre: Centre) -> None:
    http, _ = centre.member(funded=500)
    before = available(http)

    done = redeem(http, centre.coupon.reward_id)

    assert done.status_code == 201, done.text
    redemption = done.json()
    assert (redemption["state"], redemption["points"], len(redemption["coupon_ids"])) == ("completed", 100, 1)
    assert available(http) == before - 100
    newest = http.get("/v1/me/ledger", params={"page_size": 5}).json()["entries"]
    assert any(e["redemption_id"] == redemption["redemption_id"] and e["kind"] == "capture" for e in newest)
    unused = http.get("/v1/me/coupons", params={"status": "unused"}).json()["coupons"]
    assert [c["coupon_id"] for c in unused] == redemption["coupon_ids"]
    assert (unused[0]["face_value_fen"], unused[0]["threshold_fen"], unused[0]["status"]) == (1000, 9900, "unused")


def test_the_same_idempotency_key_twice_redeems_once(centre: Centre) -> None:
    http, _ = centre.member(funded=500)
    before = available(http)
    same = key()

    first, second = redeem(http, centre.coupon.reward_id, same), redeem(http, centre.coupon.reward_id, same)

    assert first.status_code == second.status_code == 201
    assert first.json()["redemption_id"] == second.json()["redemption_id"]
    assert available(http) == before - 100
    assert len(http.get("/v1/me/coupons").json()["coupons"]) == 1


def test_a_redeem_without_enough_points_is_a_409_problem_with_the_reason(centre: Centre) -> None:
    dear = create_reward(centre.api, centre.shop.shop_id, name="贵", points_price=1_000_000, stock=10)
    http, _ = centre.member()
    before = available(http)

    refused = redeem(http, dear.reward_id)
    no_key = http.post("/v1/me/redemptions", json={"reward_id": dear.reward_id})

    assert (refused.status_code, refused.json()["reason"]) == (409, "INSUFFICIENT_POINTS")
    assert refused.headers["content-type"] == "application/problem+json"
    assert (no_key.status_code, no_key.json()["reason"]) == (422, "REQUEST_ID_REQUIRED")
    assert available(http) == before


def test_coupons_are_listed_by_status(centre: Centre) -> None:
    http, _ = centre.member(funded=500)
    kept, spent = (redeem(http, centre.coupon.reward_id).json()["coupon_ids"][0] for _ in range(2))
    centre.api.UseCoupon(rpb.UseCouponRequest(request_id=rid(), shop_id=centre.shop.shop_id, coupon_id=spent,
                                              order_id="o-used", order_amount_fen=10_000))

    def listed(status: str) -> list[str]:
        answer = http.get("/v1/me/coupons", params={"status": status})
        assert answer.status_code == 200, answer.text
        return [c["coupon_id"] for c in answer.json()["coupons"]]

    assert (listed("unused"), listed("used"), listed("expired")) == ([kept], [spent], [])
    assert http.get("/v1/me/coupons", params={"status": "lost"}).status_code == 422


def test_rewards_say_which_i_can_redeem_and_why_not_for_the_others(centre: Centre) -> None:
    gold = create_reward(centre.api, centre.shop.shop_id, name="金卡专享", points_price=10, stock=5, min_tier_level=2)
    http, member_id = centre.member()

    offers = {o["reward_id"]: o for o in http.get("/v1/me/rewards").json()["rewards"]}

    assert offers[centre.coupon.reward_id]["redeemable"] is True and offers[centre.coupon.reward_id]["why_not"] == []
    assert (offers[gold.reward_id]["redeemable"], offers[gold.reward_id]["why_not"]) == (False, ["TIER_TOO_LOW"])
    set_tier(centre.shop, member_id, 2)
    eventually(lambda: {o["reward_id"]: o for o in http.get("/v1/me/rewards").json()["rewards"]}[gold.reward_id][
        "redeemable"], "rewards heard of the new tier", timeout=30)


# ----- sign-in, the lottery, leaving ------------------------------------------------------------


def test_a_second_sign_in_on_a_day_is_refused_with_its_reason(centre: Centre) -> None:
    http, _ = centre.member()
    before = available(http)

    first = http.post("/v1/me/sign-in")
    second = http.post("/v1/me/sign-in")

    assert first.status_code == 200, first.text
    assert (first.json()["points"], first.json()["streak_days"]) == (5, 1)
    assert first.json()["balance"]["available"] == before + 5
    assert (second.status_code, second.json()["reason"]) == (409, "ALREADY_SIGNED_IN_TODAY")
    assert available(http) == before + 5


def test_a_lottery_draw_costs_its_points_and_a_retry_draws_once(centre: Centre) -> None:
    lottery = create_lottery(centre.api, centre.shop.shop_id, [points_prize(50), NOTHING], cost_points=30)
    http, _ = centre.member(funded=100)
    before = available(http)
    listed = http.get("/v1/me/lotteries").json()["lotteries"]
    assert [lo["lottery_id"] for lo in listed] == [lottery.lottery_id] and listed[0]["cost_points"] == 30
    same = key()

    first = http.post(f"/v1/me/lottery/{lottery.lottery_id}/draws", headers={"Idempotency-Key": same})
    again = http.post(f"/v1/me/lottery/{lottery.lottery_id}/draws", headers={"Idempotency-Key": same})
    missing = http.post("/v1/me/lottery/no-such-lottery/draws", headers={"Idempotency-Key": key()})

    assert first.status_code == again.status_code == 201, first.text
    assert first.json()["draw_id"] == again.json()["draw_id"]
    assert (first.json()["state"], first.json()["prize_kind"], first.json()["points"]) == ("completed", "points", 50)
    eventually(lambda: available(http) == before - 30 + 50, "the prize's points credited")
    assert missing.status_code == 404


def test_leaving_needs_a_confirmation_and_then_the_member_is_gone(centre: Centre) -> None:
    http, _ = centre.member()

    unconfirmed = http.post("/v1/me/leave", json={"reason": "太多消息"})
    assert (unconfirmed.status_code, unconfirmed.json()["reason"]) == (422, "CONFIRMATION_REQUIRED")
    assert http.get("/v1/me").status_code == 200

    left = http.post("/v1/me/leave", json={"confirm": True, "reason": "太多消息"})

    assert left.status_code == 200 and left.json()["left"] is True
    gone = http.get("/v1/me")
    assert (gone.status_code, gone.json()["reason"]) == (404, "NOT_A_MEMBER")


# ----- a buyer sees only themself ---------------------------------------------------------------


def test_a_buyer_never_sees_another_buyers_ledger_coupons_or_profile(centre: Centre) -> None:
    alice, alice_id = centre.member(funded=300, consent=["name", "phone"], name="Alice", phone="13900001111")
    bob, bob_id = centre.member()
    alice_coupon = redeem(alice, centre.coupon.reward_id).json()["coupon_ids"][0]
    alice_entries, _ = whole_ledger(alice, 50)

    bob_me, bob_coupons = bob.get("/v1/me").json(), bob.get("/v1/me/coupons").json()["coupons"]
    bob_entries, _ = whole_ledger(bob, 50)
    # Alice's page token, in Bob's hands, still pages through Bob's ledger only.
    alice_token = alice.get("/v1/me/ledger", params={"page_size": 1}).json()["next_page_token"]
    bob_with_token = bob.get("/v1/me/ledger", params={"page_size": 50, "page_token": alice_token})

    assert bob_me["member_id"] == bob_id != alice_id and bob_me["profile"]["name"] is None
    assert "Alice" not in str(bob_me) and alice_coupon not in str(bob_coupons) and bob_coupons == []
    assert not {e["entry_id"] for e in alice_entries} & {e["entry_id"] for e in bob_entries}
    assert all(e["redemption_id"] is None for e in bob_entries)
    assert bob_with_token.status_code in (200, 400)
    if bob_with_token.status_code == 200:
        assert not {e["entry_id"] for e in bob_with_token.json()["entries"]} & {e["entry_id"] for e in alice_entries}


def test_a_token_of_one_shop_never_reaches_the_same_buyer_id_in_another_shop(
    centre: Centre, storefront: Storefront, membership: ServiceUnderTest, admin: Authed
) -> None:
    buyer_id = "b-" + key()[:10]
    member_here, member_id = centre.member(buyer_id, funded=200, consent=["name"], name="Shop Y member")
    other_shop = create_shop(membership, admin)
    there = storefront.as_buyer(other_shop, buyer_id, follows_shop=True)

    assert there.get("/v1/me").json()["reason"] == "NOT_A_MEMBER"
    assert there.get("/v1/me/ledger").status_code == 404
    joined = join(there)  # the same buyer id joins the other shop: a separate member, separate data
    assert joined.status_code == 201 and joined.json()["member_id"] != member_id
    assert there.get("/v1/me").json()["profile"]["name"] is None
    assert member_here.get("/v1/me").json()["profile"]["name"] == "Shop Y member"
    redeem_here = there.post("/v1/me/redemptions", json={"reward_id": centre.coupon.reward_id},
                             headers={"Idempotency-Key": key()})
    assert redeem_here.status_code == 404  # shop Y's reward does not exist in shop X
