"""The demo shop of the embedded default: the default ladder and a few dozen members with
completed orders, so that every tier is populated. Seeded once through the public API; later
runs find it and only print its keys."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import grpc
from google.protobuf import field_mask_pb2
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.membership.v1 import membership_service_pb2_grpc as mgrpc

from services import demo_rewards, demo_segments
from services.kit.auth import KeyRing
from services.kit.config import Settings
from services.kit.server import RunningService

SHOP_ID = "demo-shop"
MEMBER_BUYER_ID = "demo-buyer-020"  # a Silver member, shown on the demo storefront page
GUEST_BUYER_ID = "demo-guest-001"  # a buyer who has not joined: the page shows them the join gift
JOIN_BENEFIT_TEXT = "入会即享 100 积分 + 无门槛 5 元券 + 新品小样"
DEMO_KEY_ID = "demo"
# (members, lowest spend, highest spend) in yuan per tier of the default ladder.
TIER_SPREAD = [(15, 0, 900), (10, 1_000, 2_900), (8, 3_000, 9_500), (5, 10_000, 28_000), (3, 30_000, 60_000)]


@dataclass(frozen=True)
class DemoKeys:
    admin_key: str
    shop_key: str


def seed(settings: Settings, membership_port: int, rewards_port: int | None = None,
         storefront_origins: tuple[str, ...] = (), segments_port: int | None = None) -> DemoKeys:
    keyring = KeyRing(settings.admin_key, settings.auth_secret)
    keys = DemoKeys(settings.admin_key, keyring.key_for(SHOP_ID, DEMO_KEY_ID))
    auth = [("authorization", f"Bearer {keys.admin_key}")]
    with grpc.insecure_channel(f"127.0.0.1:{membership_port}") as channel:
        stub = mgrpc.MembershipServiceStub(channel)
        try:
            stub.GetProgram(mpb.GetProgramRequest(shop_id=SHOP_ID), metadata=auth)
            created = False
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            stub.CreateProgram(mpb.CreateProgramRequest(request_id="demo-program", shop_id=SHOP_ID,
                                                        name="Demo Shop 旗舰店"), metadata=auth)
            created = True
        if rewards_port is not None:  # before the members, so that they join with the join pack there
            pack_id = demo_rewards.seed(rewards_port, SHOP_ID, auth)
            if created:
                _storefront(stub, auth, pack_id, storefront_origins)
        if created:
            _add_members(stub, auth)
    if segments_port is not None:  # after the members: the demo tags are put on some of them
        demo_segments.seed(segments_port, SHOP_ID, auth, membership_port=membership_port)
    (settings.data_dir / "demo.env").write_text(
        f"export LOYALTY_ADMIN_KEY={keys.admin_key}\nexport SHOP_KEY={keys.shop_key}\nexport SHOP_ID={SHOP_ID}\n")
    return keys


def _storefront(stub: mgrpc.MembershipServiceStub, auth: list[tuple[str, str]], join_pack_id: str,
                origins: tuple[str, ...]) -> None:
    """The storefront's join card shows the join pack; the demo page may call the gateway."""
    stub.UpdateProgram(mpb.UpdateProgramRequest(
        request_id="demo-storefront", shop_id=SHOP_ID,
        join_benefit=mpb.JoinBenefit(text=JOIN_BENEFIT_TEXT, pack_id=join_pack_id), storefront_origins=origins,
        update_mask=field_mask_pb2.FieldMask(paths=["join_benefit", "storefront_origins"])), metadata=auth)


def _add_members(stub: mgrpc.MembershipServiceStub, auth: list[tuple[str, str]]) -> None:
    rng = random.Random(20261123)
    n = 0
    for count, low, high in TIER_SPREAD:
        for _ in range(count):
            n += 1
            buyer = f"demo-buyer-{n:03d}"
            stub.JoinMember(mpb.JoinMemberRequest(
                request_id=f"demo-join-{n}", shop_id=SHOP_ID, buyer_id=buyer,
                profile=mpb.Profile(name=f"会员{n:03d}", phone=f"138{rng.randrange(10**8):08d}", region="浙江"),
                consent_fields=[mpb.PROFILE_FIELD_NAME, mpb.PROFILE_FIELD_PHONE, mpb.PROFILE_FIELD_REGION],
                join_channel=rng.choice([1, 2, 3, 4, 6]), facts=mpb.BuyerFacts(follows_shop=True)), metadata=auth)
            total_fen = rng.randint(low, high) * 100 + rng.randrange(100)
            parts = rng.randint(1, 4)
            for i in range(parts):
                amount = total_fen // parts + (total_fen % parts if i == 0 else 0)
                order_id = f"demo-order-{n:03d}-{i}"
                stub.RecordOrder(mpb.RecordOrderRequest(shop_id=SHOP_ID, order_id=order_id, buyer_id=buyer,
                                                        amount_fen=amount), metadata=auth)
                stub.CompleteOrder(mpb.CompleteOrderRequest(shop_id=SHOP_ID, order_id=order_id), metadata=auth)


def port_of(running: list[RunningService], name: str) -> int:
    return next(service.port for service in running if service.app.name == name)


def membership_port(running: list[RunningService]) -> int:
    """The demo is seeded and shown through membership."""
    return port_of(running, "membership")


def print_banner(settings: Settings, running: list[RunningService], keys: DemoKeys | None, *,
                 gateway_url: str = "") -> None:
    lines = ["", "loyalty suite (embedded default) is up", f"  data:        {settings.data_dir}"]
    for service in running:
        lines.append(f"  {service.app.name:<12} localhost:{service.port}  ({service.app.full_name}, health SERVING)")
    if gateway_url:
        lines.append(f"  {'gateway':<12} {gateway_url}  (the demo storefront; API docs at {gateway_url}/docs)")
    if keys is not None:
        body = json.dumps({"shop_id": SHOP_ID, "buyer_id": "demo-buyer-020"})
        lines += [
            f"  admin key:   {keys.admin_key}",
            f"  shop key:    {keys.shop_key}   (shop {SHOP_ID})",
            f"  keys as env: source {settings.data_dir / 'demo.env'}",
            "",
            "try (grpcurl, or `.venv/bin/python -m tools.grpcurl` with the same arguments):",
            f"  grpcurl -plaintext -H 'authorization: Bearer {keys.shop_key}' -d '{body}' \\",
            f"    localhost:{membership_port(running)} loyalty.membership.v1.MembershipService/GetTier",
        ]
        if any(service.app.name == "rewards" for service in running):
            shop = json.dumps({"shop_id": SHOP_ID})
            lines += [
                f"  grpcurl -plaintext -H 'authorization: Bearer {keys.shop_key}' -d '{shop}' \\",
                f"    localhost:{port_of(running, 'rewards')} loyalty.rewards.v1.RewardsService/ListRewards",
            ]
        if any(service.app.name == "segments" for service in running):
            shop = json.dumps({"shop_id": SHOP_ID})
            lines += [
                f"  grpcurl -plaintext -H 'authorization: Bearer {keys.shop_key}' -d '{shop}' \\",
                f"    localhost:{port_of(running, 'segments')} loyalty.segments.v1.SegmentsService/ListTags",
            ]
    lines += ["", "Ctrl-C stops it; the next `make run` keeps the data.", ""]
    print("\n".join(lines), flush=True)
