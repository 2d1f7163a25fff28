"""Small builders of test data through the public API: ids, waiting for asynchronous effects,
a shop as points knows it, members with points."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.points.v1 import points_service_pb2 as pp
from loyalty.points.v1 import points_service_pb2_grpc

from tests.support.services import Authed, ServiceUnderTest, Shop

T = TypeVar("T")


def rid() -> str:
    """A fresh request_id."""
    return uuid.uuid4().hex


def eventually(probe: Callable[[], T], what: str, timeout: float = 5.0) -> T:
    """Calls `probe` until it returns something truthy (an RpcError counts as not yet)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = probe()
            if result:
                return result
            last = result
        except grpc.RpcError as exc:
            last = f"{exc.code()}: {exc.details()}"
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting until {what} (last: {last})")
        time.sleep(0.02)


@dataclass
class PointsShop:
    """A shop seen from both services: `shop.api` is membership, `api` is points (same key)."""

    shop: Shop
    api: Authed

    @property
    def shop_id(self) -> str:
        return self.shop.shop_id


def points_shop(points: ServiceUnderTest, shop: Shop) -> PointsShop:
    """Waits until points has heard of the shop (ProgramChanged) and made its points program."""
    api = Authed(points_service_pb2_grpc.PointsServiceStub(points.channel), shop.key)
    # The first shop of a session may wait behind the backlog of other tests' events.
    eventually(lambda: api.GetPointsProgram(pp.GetPointsProgramRequest(shop_id=shop.shop_id)),
               "points knows the shop", timeout=60.0)
    return PointsShop(shop, api)


def join_member(shop: Shop, buyer: str | None = None) -> str:
    """A new member of the shop; returns the member_id."""
    buyer = buyer or "b-" + uuid.uuid4().hex[:10]
    return shop.api.JoinMember(mpb.JoinMemberRequest(
        request_id=rid(), shop_id=shop.shop_id, buyer_id=buyer, join_channel=mpb.JOIN_CHANNEL_HOME_PAGE_MODULE,
    )).member_id


def member_with_points(ps: PointsShop, points: int) -> str:
    """A member whose account points has opened, credited with `points` on top of the join's."""
    member_id = join_member(ps.shop)
    eventually(lambda: ps.api.GetBalance(pp.GetBalanceRequest(shop_id=ps.shop_id, member_id=member_id)),
               "points opened the account")
    ps.api.Earn(pp.EarnRequest(request_id=rid(), shop_id=ps.shop_id, member_id=member_id, points=points,
                               source=pp.Source(reference="test")))
    return member_id


def balance(ps: PointsShop, member_id: str) -> pp.Balance:
    return ps.api.GetBalance(pp.GetBalanceRequest(shop_id=ps.shop_id, member_id=member_id))
