"""A shop with members, made through the public API as a shop's systems would make it: a program
(admin key), members imported in batches, their points accounts (from membership's events), and
points to spend."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.membership.v1 import membership_service_pb2_grpc as mgrpc
from loyalty.points.v1 import points_service_pb2 as ppb
from loyalty.points.v1 import points_service_pb2_grpc as pgrpc

from bench.stack import ADMIN_KEY

IMPORT_BATCH = 1000  # ImportMembers' limit


def auth(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


@dataclass
class Shop:
    shop_id: str
    key: str
    buyer_ids: list[str]
    member_ids: list[str]


def make_shop(membership: str, points: str, members: int, *, timeout: float = 300) -> Shop:
    """A program with `members` imported members, each with a points account."""
    shop_id = "bench-" + uuid.uuid4().hex[:8]
    with grpc.insecure_channel(membership) as channel:
        stub = mgrpc.MembershipServiceStub(channel)
        key = stub.CreateProgram(mpb.CreateProgramRequest(request_id="create-" + shop_id, shop_id=shop_id,
                                                          name="Bench shop", time_zone="Asia/Shanghai"),
                                 metadata=auth(ADMIN_KEY), timeout=30).api_key
        buyer_ids = [f"buyer-{i:06d}" for i in range(members)]
        member_ids: list[str] = []
        for start in range(0, members, IMPORT_BATCH):
            batch = buyer_ids[start:start + IMPORT_BATCH]
            reply = stub.ImportMembers(mpb.ImportMembersRequest(
                request_id=f"import-{start}", shop_id=shop_id,
                members=[mpb.ImportedMember(buyer_id=b) for b in batch]), metadata=auth(key), timeout=120)
            member_ids.extend(reply.member_ids)
    shop = Shop(shop_id, key, buyer_ids, member_ids)
    wait_for_accounts(points, shop, timeout)
    return shop


def wait_for_accounts(points: str, shop: Shop, timeout: float) -> None:
    """Points learns of members from membership's events, so their accounts come a little later."""
    deadline = time.monotonic() + timeout
    pending = list(shop.member_ids)
    with grpc.insecure_channel(points) as channel:
        get = pgrpc.PointsServiceStub(channel).GetBalance

        def known(member_id: str) -> bool:
            try:
                get(ppb.GetBalanceRequest(shop_id=shop.shop_id, member_id=member_id), metadata=auth(shop.key),
                    timeout=10)
                return True
            except grpc.RpcError:
                return False

        while pending and time.monotonic() < deadline:
            # The last imported member is usually the last to arrive: wait for it before checking all.
            if known(pending[-1]):
                pending = [m for m in pending if not known(m)]
            if pending:
                time.sleep(0.5)
    if pending:
        raise TimeoutError(f"points knows {len(shop.member_ids) - len(pending)} of {len(shop.member_ids)} members "
                           f"after {timeout:.0f} s")


def fund(points: str, shop: Shop, amount: int) -> None:
    """Gives every member `amount` points (an operator's adjustment), eight at a time."""
    with grpc.insecure_channel(points) as channel:
        adjust = pgrpc.PointsServiceStub(channel).Adjust

        def one(member_id: str) -> None:
            adjust(ppb.AdjustRequest(request_id="fund-" + member_id, shop_id=shop.shop_id, member_id=member_id,
                                     points=amount, operator="bench", reason="benchmark funding"),
                   metadata=auth(shop.key), timeout=60)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, shop.member_ids))
