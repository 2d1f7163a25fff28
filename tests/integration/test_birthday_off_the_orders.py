"""The birthday stays off the bus: no event carries a birth month or day (events outlive a
member's erasure on the bus: outbox rows, stream entries). MemberJoined says a birthday was given
and ProfileUpdated names the changed fields; points reads the birthday from membership then, and
still doubles a purchase in the member's birth month, whether the birthday came with the join or
with a later profile update."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from google.protobuf import field_mask_pb2
from google.type import date_pb2
from loyalty.membership.v1 import events_pb2
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.points.v1 import points_service_pb2 as pp

from tests.conftest import ServiceUnderTest, Shop
from tests.support.builders import PointsShop, eventually, points_shop, rid
from tests.support.events import outbox_envelopes, outbox_events


def _this_month() -> int:
    return datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")).month


def _join(shop: Shop, birthday: date_pb2.Date | None = None) -> tuple[str, str]:
    """A new member (with the birthday, consented, if one is given): (member id, buyer id)."""
    buyer = "b-" + uuid.uuid4().hex[:10]
    given = {"profile": mpb.Profile(birthday=birthday), "consent_fields": [mpb.PROFILE_FIELD_BIRTHDAY]} \
        if birthday else {}
    member_id = shop.api.JoinMember(mpb.JoinMemberRequest(
        request_id=rid(), shop_id=shop.shop_id, buyer_id=buyer, join_channel=mpb.JOIN_CHANNEL_HOME_PAGE_MODULE,
        **given)).member_id
    return member_id, buyer


def test_an_order_of_a_member_with_a_birthday_carries_none_and_still_earns_double(
        membership: ServiceUnderTest, points: ServiceUnderTest, shop: Shop) -> None:
    ps = points_shop(points, shop)
    member_id, buyer = _join(shop, date_pb2.Date(year=1990, month=_this_month(), day=1))
    (joined,) = outbox_events(membership.running.app.db, shop.shop_id, events_pb2.MemberJoined)
    assert joined.birthday_given and (joined.birth_month, joined.birth_day) == (0, 0)
    _order_earns(ps, shop, membership, member_id, buyer, 200)


def test_a_birthday_given_later_reaches_points_without_travelling_on_the_bus(
        membership: ServiceUnderTest, points: ServiceUnderTest, shop: Shop) -> None:
    ps = points_shop(points, shop)
    member_id, buyer = _join(shop)
    shop.api.UpdateProfile(mpb.UpdateProfileRequest(
        request_id=rid(), shop_id=shop.shop_id, member_id=member_id,
        profile=mpb.Profile(birthday=date_pb2.Date(year=1991, month=_this_month(), day=2)),
        update_mask=field_mask_pb2.FieldMask(paths=["birthday"]), consent_fields=[mpb.PROFILE_FIELD_BIRTHDAY]))
    (joined,) = outbox_events(membership.running.app.db, shop.shop_id, events_pb2.MemberJoined)
    (updated,) = outbox_events(membership.running.app.db, shop.shop_id, events_pb2.ProfileUpdated)
    assert not joined.birthday_given and list(updated.changed_fields) == ["birthday"]
    assert (updated.birth_month, updated.birth_day) == (0, 0)
    raw = b"".join(outbox_envelopes(membership.running.app.db, shop.shop_id, events_pb2.ProfileUpdated))
    assert b"1991" not in raw
    _order_earns(ps, shop, membership, member_id, buyer, 200)


def _order_earns(ps: PointsShop, shop: Shop, membership: ServiceUnderTest, member_id: str, buyer: str,
                 expected: int) -> None:
    """A 100-yuan order of the member's earns `expected` points (200: doubled in the birth month),
    and its OrderCompleted carries no birthday either."""
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
    assert entry.amount == expected  # 100 yuan at 1 point a yuan, doubled in the birth month (×2, never compounded)
