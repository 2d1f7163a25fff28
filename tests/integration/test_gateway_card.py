"""The storefront member card (店铺首页会员模块) over HTTP, through a real gateway in front of the
real services, on both backends: a member sees tier, points and progress (both modes); an
eligible non-member in a shop with a join gift sees the gift and a join button (smart) or the
operator's call to action (custom); anyone else gets an explicit nothing with the reason. Joining
from the card makes the buyer a member. A token shows its own buyer in its own shop only."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import jwt
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.points.v1 import points_service_pb2 as ppb
from loyalty.points.v1 import points_service_pb2_grpc as pgrpc

from gateway.tokens import ALGORITHM, AUDIENCE, ISSUER, LEEWAY_SECONDS
from tests.conftest import Authed, ServiceUnderTest, Shop, create_shop
from tests.integration.test_membership import rid
from tests.integration.test_membership_storefront import configure, custom
from tests.support.builders import eventually
from tests.support.gateway import TOKEN_KEY, Storefront

GIFT = "入会即享 100 积分 + 5 元券"
PACK = "pack-join-1"


def with_join_gift(shop: Shop, text: str = GIFT, pack_id: str = PACK) -> None:
    configure(shop, "join_benefit", join_benefit=mpb.JoinBenefit(text=text, pack_id=pack_id))


def member_who_spent(shop: Shop, buyer_id: str, yuan: int) -> str:
    """Joins the buyer (through membership, as another channel would) and completes one order of
    `yuan`; returns the member id."""
    joined = shop.api.JoinMember(mpb.JoinMemberRequest(
        request_id=rid(), shop_id=shop.shop_id, buyer_id=buyer_id, join_channel=mpb.JOIN_CHANNEL_LIVE_STREAM,
        facts=mpb.BuyerFacts(follows_shop=True)))
    order_id = "o-" + uuid.uuid4().hex[:10]
    shop.api.RecordOrder(mpb.RecordOrderRequest(shop_id=shop.shop_id, order_id=order_id, buyer_id=buyer_id,
                                                amount_fen=yuan * 100))
    shop.api.CompleteOrder(mpb.CompleteOrderRequest(shop_id=shop.shop_id, order_id=order_id))
    return joined.member_id


def balance(points: ServiceUnderTest, shop: Shop, member_id: str) -> int:
    api = Authed(pgrpc.PointsServiceStub(points.channel), shop.key)
    return api.GetBalance(ppb.GetBalanceRequest(shop_id=shop.shop_id, member_id=member_id)).available


def card(storefront: Storefront, shop: Shop, buyer_id: str, **facts: Any) -> dict[str, Any]:
    facts.setdefault("follows_shop", True)
    with storefront.as_buyer(shop, buyer_id, **facts) as http:
        answer = http.get("/v1/storefront/card", params={"shop_id": shop.shop_id})
    assert answer.status_code == 200, answer.text
    return answer.json()


def join(http: httpx.Client, shop: Shop, key: str | None = None, **body: Any) -> httpx.Response:
    headers = {"idempotency-key": key} if key else {}
    return http.post("/v1/storefront/join", params={"shop_id": shop.shop_id}, json=body, headers=headers)


# ----- the three states --------------------------------------------------------------------------------


def test_a_member_sees_tier_points_and_progress_in_both_modes(storefront: Storefront, shop: Shop,
                                                              points: ServiceUnderTest) -> None:
    member_id = member_who_spent(shop, "b-spender", 1_500)  # silver from 1,000 yuan; gold from 3,000

    def settled() -> dict[str, Any] | None:
        seen = card(storefront, shop, "b-spender")
        earned = seen["member"] and not seen["member"]["points_pending"] and seen["member"]["points"] >= 1_500
        return seen if earned and seen["member"]["points"] == balance(points, shop, member_id) else None

    seen = eventually(settled, "the order's points reach the card", timeout=60)
    assert (seen["state"], seen["mode"], seen["join"], seen["reason"]) == ("member", None, None, None)
    member = seen["member"]
    assert member["tier"] == {"level": 1, "code": "silver", "name": "银卡会员"}
    progress = member["progress"]
    assert progress["next_tier"] == {"level": 2, "code": "gold", "name": "金卡会员"}
    assert progress["spend_missing_fen"] == 150_000 and 0 < progress["progress_permille"] < 1000

    configure(shop, "storefront_card", storefront_card=custom("入会领好礼"))
    in_custom = card(storefront, shop, "b-spender")
    assert (in_custom["state"], in_custom["mode"]) == ("member", None)  # the same card in both modes
    assert in_custom["member"]["tier"]["code"] == "silver" and in_custom["member"]["points"] == member["points"]


def test_an_eligible_non_member_sees_the_join_gift_and_a_join_button(storefront: Storefront, shop: Shop) -> None:
    with_join_gift(shop)
    seen = card(storefront, shop, "b-new")
    assert (seen["state"], seen["mode"], seen["member"], seen["reason"]) == ("join", "SMART", None, None)
    assert seen["join"] == {"gift": GIFT, "pack_id": PACK, "call_to_action": None, "background_image_url": None}


def test_custom_mode_shows_the_operators_call_to_action_and_image(storefront: Storefront, shop: Shop) -> None:
    with_join_gift(shop)
    configure(shop, "storefront_card", storefront_card=custom("入会立领20元券", url="https://img.example.com/a.png"))
    seen = card(storefront, shop, "b-new")
    assert (seen["state"], seen["mode"]) == ("join", "CUSTOM")
    assert seen["join"]["call_to_action"] == "入会立领20元券"
    assert seen["join"]["background_image_url"] == "https://img.example.com/a.png"


def test_a_buyer_below_the_join_threshold_sees_nothing_and_why(storefront: Storefront, shop: Shop) -> None:
    with_join_gift(shop)
    configure(shop, "join_threshold", join_threshold=mpb.JoinThreshold(
        require_follow=True, min_completed_trades=2, combine=mpb.JOIN_THRESHOLD_COMBINE_ALL))
    below = card(storefront, shop, "b-new", follows_shop=False, completed_trades=1)
    assert (below["state"], below["reason"], below["member"], below["join"]) == ("none", "THRESHOLD_NOT_MET",
                                                                                 None, None)
    assert sorted(below["unmet"]) == ["COMPLETED_TRADES", "FOLLOW"]
    # The facts the shop vouches for in the token count: with them the buyer may join.
    assert card(storefront, shop, "b-new", completed_trades=2)["state"] == "join"


def test_a_shop_without_a_join_gift_shows_nothing(storefront: Storefront, shop: Shop) -> None:
    seen = card(storefront, shop, "b-new")
    assert (seen["state"], seen["reason"], seen["unmet"]) == ("none", "NO_JOIN_BENEFIT", [])


# ----- joining from the card ---------------------------------------------------------------------------


def test_joining_from_the_card_makes_the_buyer_a_member(storefront: Storefront, shop: Shop,
                                                        points: ServiceUnderTest) -> None:
    with_join_gift(shop)
    key = "join-" + uuid.uuid4().hex
    with storefront.as_buyer(shop, "b-joiner", follows_shop=True) as http:
        joined = join(http, shop, key, profile={"name": "小林", "region": "浙江"})
        again = join(http, shop, key, profile={"name": "小林", "region": "浙江"})  # a retried click: the same join
    assert joined.status_code == 200, joined.text
    assert joined.json()["state"] == "member" and joined.json()["member"]["tier"]["code"] == "regular"
    assert again.status_code == 200 and again.json()["member"]["tier"] == joined.json()["member"]["tier"]

    member = shop.api.GetMember(mpb.GetMemberRequest(shop_id=shop.shop_id, buyer_id="b-joiner"))
    assert member.join_channel == mpb.JOIN_CHANNEL_HOME_PAGE_MODULE
    assert (member.profile.name, member.profile.region) == ("小林", "浙江")
    assert set(member.consent.fields) == {mpb.PROFILE_FIELD_NAME, mpb.PROFILE_FIELD_REGION}
    seen = eventually(lambda: (c := card(storefront, shop, "b-joiner"))["member"]["points_pending"] is False and c,
                      "points opened the account", timeout=60)
    assert seen["state"] == "member"
    assert seen["member"]["points"] == balance(points, shop, member.member_id)


def test_a_join_needs_an_idempotency_key_and_the_threshold(storefront: Storefront, shop: Shop) -> None:
    with_join_gift(shop)
    with storefront.as_buyer(shop, "b-stranger", follows_shop=False) as http:
        no_key = join(http, shop)
        configure(shop, "join_threshold", join_threshold=mpb.JoinThreshold(require_follow=True))
        refused = join(http, shop, "join-" + uuid.uuid4().hex)
        bad_profile = join(http, shop, "join-" + uuid.uuid4().hex, profile={"phone": "12"})
    assert no_key.status_code == 422 and no_key.json()["errors"][0]["field"] == "Idempotency-Key"
    assert (refused.status_code, refused.json()["reason"]) == (409, "JOIN_THRESHOLD_NOT_MET")
    assert bad_profile.status_code == 422 and bad_profile.json()["errors"][0]["field"] == "profile.phone"
    assert card(storefront, shop, "b-stranger", follows_shop=False)["state"] == "none"


def test_joining_again_answers_the_member_card(storefront: Storefront, shop: Shop) -> None:
    with_join_gift(shop)
    member_who_spent(shop, "b-twice", 10)
    with storefront.as_buyer(shop, "b-twice", follows_shop=True) as http:
        again = join(http, shop, "join-" + uuid.uuid4().hex)
    assert again.status_code == 200 and again.json()["state"] == "member"


def test_a_member_who_left_or_joined_again_sees_the_card_of_now(storefront: Storefront, shop: Shop) -> None:
    with_join_gift(shop)

    def leave(member_id: str) -> None:
        shop.api.LeaveMember(mpb.LeaveMemberRequest(request_id=rid(), shop_id=shop.shop_id, member_id=member_id,
                                                    reason="buyer asked"))

    first_id = member_who_spent(shop, "b-back", 2_000)
    assert card(storefront, shop, "b-back")["member"]["tier"]["code"] == "silver"
    leave(first_id)
    # Joined again elsewhere since the last visit: a new membership, from the ladder's first rung.
    second_id = shop.api.JoinMember(mpb.JoinMemberRequest(
        request_id=rid(), shop_id=shop.shop_id, buyer_id="b-back", facts=mpb.BuyerFacts(follows_shop=True),
        join_channel=mpb.JOIN_CHANNEL_LIVE_STREAM)).member_id
    assert second_id != first_id
    assert card(storefront, shop, "b-back")["member"]["tier"]["code"] == "regular"
    leave(second_id)
    assert card(storefront, shop, "b-back")["state"] == "join"
    with storefront.as_buyer(shop, "b-back", follows_shop=True) as http:
        again = join(http, shop, "join-" + uuid.uuid4().hex)
    assert again.status_code == 200 and again.json()["state"] == "member"


# ----- a token shows its own buyer in its own shop ----------------------------------------------------


def test_another_buyers_token_shows_their_own_card_only(storefront: Storefront, shop: Shop) -> None:
    with_join_gift(shop)
    member_id = member_who_spent(shop, "b-first", 2_000)
    first = card(storefront, shop, "b-first")
    other = card(storefront, shop, "b-second")
    assert first["state"] == "member" and other["state"] == "join" and other["member"] is None
    with storefront.as_buyer(shop, "b-second", follows_shop=True) as http:
        body = http.get("/v1/storefront/card", params={"shop_id": shop.shop_id, "buyer_id": "b-first",
                                                       "member_id": member_id}).text
    assert "b-first" not in body and member_id not in body and '"member":null' in body


def test_a_token_reaches_its_own_shop_only(storefront: Storefront, shop: Shop, membership: ServiceUnderTest,
                                           admin: Authed) -> None:
    other_shop = create_shop(membership, admin)
    with_join_gift(other_shop)
    member_who_spent(other_shop, "b-1", 100)
    forged = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "b-1", "shop": other_shop.shop_id,
                         "iat": int(time.time()), "exp": int(time.time()) + 300},
                        b"another-key-of-at-least-thirty-two-bytes", algorithm=ALGORITHM)
    with storefront.as_buyer(shop, "b-1", follows_shop=True) as http:
        named_other = http.get("/v1/storefront/card", params={"shop_id": other_shop.shop_id})
        join_other = http.post("/v1/storefront/join", params={"shop_id": other_shop.shop_id},
                               headers={"idempotency-key": "join-" + uuid.uuid4().hex})
        own = http.get("/v1/storefront/card")
    with storefront.client() as http:
        with_forged = http.get("/v1/storefront/card", headers={"authorization": f"Bearer {forged}"})
    assert (named_other.status_code, named_other.json()["reason"]) == (403, "SHOP_MISMATCH")
    assert join_other.status_code == 403
    assert (with_forged.status_code, with_forged.json()["reason"]) == (401, "INVALID_TOKEN")
    # In its own shop, the same buyer id is nobody's member (and this shop has no join gift).
    assert own.json()["shop_id"] == shop.shop_id and own.json()["state"] == "none"


def test_an_expired_missing_or_garbage_token_is_a_401_problem(storefront: Storefront, shop: Shop) -> None:
    now = int(time.time())
    expired = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "b-1", "shop": shop.shop_id, "iat": now - 900,
                          "exp": now - 60}, TOKEN_KEY, algorithm=ALGORITHM)
    with storefront.client() as http:
        answers = {
            "TOKEN_EXPIRED": http.get("/v1/storefront/card", headers={"authorization": f"Bearer {expired}"}),
            "INVALID_TOKEN": http.get("/v1/storefront/card", headers={"authorization": "Bearer not.a.token"}),
            "MISSING_CREDENTIALS": http.post("/v1/storefront/join", headers={"idempotency-key": "join-12345678"}),
        }
    for reason, answer in answers.items():
        assert (answer.status_code, answer.json()["reason"]) == (401, reason)
        assert answer.headers["content-type"] == "application/problem+json"


def test_a_token_accepted_before_is_refused_once_it_expires(storefront: Storefront, shop: Shop) -> None:
    """The gateway remembers tokens it verified; that must not make one outlive its expiry."""
    now = time.time()
    # Expired a moment ago, still inside the few seconds of clock leeway: accepted for now.
    expires = int(now) - LEEWAY_SECONDS + 4
    token = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "b-1", "shop": shop.shop_id, "iat": expires - 900,
                        "exp": expires}, TOKEN_KEY, algorithm=ALGORITHM)
    with storefront.client() as http:
        card = http.get("/v1/storefront/card", headers={"authorization": f"Bearer {token}"})
        assert card.status_code == 200, card.text
        time.sleep(max(0.0, expires + LEEWAY_SECONDS + 0.5 - time.time()))
        late = http.get("/v1/storefront/card", headers={"authorization": f"Bearer {token}"})
    assert (late.status_code, late.json()["reason"]) == (401, "TOKEN_EXPIRED")


# ----- the script and the pages ----------------------------------------------------------------------


def test_the_widget_script_is_served_small_cacheable_and_revalidated(storefront: Storefront) -> None:
    with storefront.client() as http:
        script = http.get("/widget.js")
        again = http.get("/widget.js", headers={"if-none-match": script.headers["etag"]})
        no_demo = http.get("/")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "max-age" in script.headers["cache-control"] and len(script.content) < 16_000
    assert script.headers["content-encoding"] == "gzip"  # httpx asks for it, as browsers do
    assert "attachShadow" in script.text and "/v1/storefront/card" in script.text
    assert again.status_code == 304 and not again.content
    # Only the embedded default (make run) has a demo storefront.
    assert no_demo.status_code == 404 and no_demo.headers["content-type"] == "application/problem+json"
