"""The birthday stays off the busiest event: OrderCompleted carries no birth month or day (events
outlive a member's erasure on the bus), and points still doubles a purchase in the member's birth
month from the birthday it keeps since MemberJoined."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from google.type import date_pb2
from loyalty.membership.v1 import events_pb2
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.points.v1 import points_service_pb2 as pp

from tests.conftest import ServiceUnderTest, Shop
from tests.support.builders import eventually, points_shop, rid
from tests.support.events import outbox_events


def test_an_order_of_a_member_with_a_birthday_carries_none_and_still_earns_double(
        membership: ServiceUnderTest, points: ServiceUnderTest, shop: Shop) -> None:
    ps = points_shop(points, shop)
    today = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai"))
    buyer = "b-" + uuid.uuid4().hex[:10]
    member_id = shop.api.JoinMember(mpb.JoinMemberRequest(
        request_id=rid(), shop_id=shop.shop_id, buyer_id=buyer, join_channel=mpb.JOIN_CHANNEL_HOME_PAGE_MODULE,
        profile=mpb.Profile(birthday=date_pb2.Date(year=1990, month=today.month, day=1)),
        consent_fields=[mpb.PROFILE_FIELD_BIRTHDAY])).member_id
    eventually(lambda: ps.api.GetBalance(pp.GetBalanceRequest(shop_id=shop.shop_id, member_id=member_id)),
               "points opened the account")
    order_id = "o-" + uuid.uuid4().hex[:10]
    shop.api.RecordOrder(mpb.RecordOrderRequest(shop_id=shop.shop_id, order_id=order_id, buyer_id=buyer,
                                                amount_fen=100_00))
    shop.api.CompleteOrder(mpb.CompleteOrderRequest(request_id=rid(), shop_id=shop.shop_id, order_id=order_id))

    (completed,) = outbox_events(membership.running.app.db, shop.shop_id, events_pb2.OrderCompleted)
    assert (completed.member_id, completed.birth_month, completed.birth_day) == (member_id, 0, 0)

    def earned() -> list[pp.LedgerEntry]:
        return [e for e in ps.api.ListLedger(pp.ListLedgerRequest(shop_id=shop.shop_id, member_id=member_id)).entries
                if e.source.order_id == order_id]

    (entry,) = eventually(earned, "points credits the purchase", timeout=30)
    assert entry.amount == 200  # 100 yuan at 1 point a yuan, doubled in the birth month (×2, never compounded)
