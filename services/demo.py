"""The demo shop of the embedded default: the default ladder and a few dozen members with
completed orders, so that every tier is populated. Seeded once through the public API; later
runs find it and only print its keys."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import grpc
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.membership.v1 import membership_service_pb2_grpc as mgrpc
from loyalty.rewards.v1 import lottery_pb2 as lpb
from loyalty.rewards.v1 import rewards_service_pb2 as rpb
from loyalty.rewards.v1 import rewards_service_pb2_grpc as rgrpc

from services.kit.auth import KeyRing
from services.kit.config import Settings
from services.kit.server import RunningService

SHOP_ID = "demo-shop"
DEMO_KEY_ID = "demo"
# (members, lowest spend, highest spend) in yuan per tier of the default ladder.
TIER_SPREAD = [(15, 0, 900), (10, 1_000, 2_900), (8, 3_000, 9_500), (5, 10_000, 28_000), (3, 30_000, 60_000)]


@dataclass(frozen=True)
class DemoKeys:
    admin_key: str
    shop_key: str


def demo_catalogue() -> dict[str, rpb.Reward]:
    """The demo shop's points mall by handle: coupons for every budget, one for Gold and above, a
    participation gift shipped with the next order, stored value for points + cash, and a free
    trial of a new product (the join pack's trial item)."""
    coupon = rpb.REWARD_KIND_COUPON
    return {
        "coupon-99-10": rpb.Reward(
            name="满99减10 优惠券", kind=coupon, points_price=500, unlimited_stock=True, limit_per_member=5,
            monthly_limit_per_member=2,
            coupon=rpb.CouponSpec(face_value_fen=1_000, threshold_fen=9_900, valid_days=30)),
        "coupon-5": rpb.Reward(
            name="无门槛 5 元券", kind=coupon, points_price=300, stock=500, monthly_limit_per_member=1,
            coupon=rpb.CouponSpec(face_value_fen=500, valid_days=7)),
        "coupon-gold": rpb.Reward(
            name="满199减30 金卡专享", kind=coupon, points_price=1_200, stock=200, min_tier_level=2,
            coupon=rpb.CouponSpec(face_value_fen=3_000, threshold_fen=19_900, valid_days=30)),
        "gift-bag": rpb.Reward(
            name="品牌帆布袋 (随单发货)", kind=rpb.REWARD_KIND_GIFT, points_price=2_000, stock=50, limit_per_member=1,
            gift=rpb.GiftSpec(gift_class=rpb.GIFT_CLASS_PARTICIPATION, ship_with_next_order=True)),
        "stored-value": rpb.Reward(
            name="购物金 充100得110", kind=rpb.REWARD_KIND_VIRTUAL, points_price=200, cash_price_fen=10_000,
            unlimited_stock=True, monthly_limit_per_member=1, virtual=rpb.VirtualSpec(
                virtual_kind=rpb.VIRTUAL_KIND_STORED_VALUE, top_up_fen=10_000, bonus_fen=1_000)),
        "trial": rpb.Reward(
            name="新品小样 免费试用", kind=rpb.REWARD_KIND_VIRTUAL, points_price=100, stock=1_000, limit_per_member=1,
            virtual=rpb.VirtualSpec(virtual_kind=rpb.VIRTUAL_KIND_FREE_TRIAL, valid_days=30)),
    }


def demo_packs(ids: dict[str, str]) -> list[rpb.BenefitPack]:
    """The demo shop's benefit packs, naming rewards of the catalogue by their ids."""
    def items(*handles: str) -> list[rpb.PackItem]:
        return [rpb.PackItem(reward_id=ids[h], quantity=1) for h in handles]

    return [
        rpb.BenefitPack(name="入会礼包", trigger=rpb.PACK_TRIGGER_JOIN, enabled=True, points=100,
                        items=items("coupon-5", "trial")),
        rpb.BenefitPack(name="入会满月礼", trigger=rpb.PACK_TRIGGER_MONTH_AFTER_JOIN, enabled=True, points=50),
        rpb.BenefitPack(name="生日礼包", trigger=rpb.PACK_TRIGGER_BIRTHDAY, enabled=True, points=200,
                        items=items("coupon-99-10")),
        rpb.BenefitPack(name="金卡及以上升级礼", trigger=rpb.PACK_TRIGGER_TIER_UPGRADE, enabled=True,
                        items=items("coupon-gold"), tier_levels=[2, 3, 4]),
    ]


def demo_lottery(ids: dict[str, str]) -> lpb.Lottery:
    """幸运大转盘: 20 points a draw; Diamond members (the ladder's "monthly lottery chance") draw
    once a month for free first."""
    return lpb.Lottery(
        name="幸运大转盘", style=lpb.LOTTERY_STYLE_WHEEL, enabled=True, cost_points=20, free_draws_per_month=1,
        free_draw_tier_levels=[4], prizes=[
            lpb.Prize(name="188 积分", kind=lpb.PRIZE_KIND_POINTS, points=188, probability_bp=500,
                      unlimited_stock=True),
            lpb.Prize(name="无门槛 5 元券", kind=lpb.PRIZE_KIND_COUPON, reward_id=ids["coupon-5"], probability_bp=1_000,
                      stock=200),
            lpb.Prize(name="品牌帆布袋", kind=lpb.PRIZE_KIND_GIFT, reward_id=ids["gift-bag"], probability_bp=50,
                      stock=5),
            lpb.Prize(kind=lpb.PRIZE_KIND_NOTHING, probability_bp=8_450),
        ])


def seed_rewards(rewards_port: int, auth: list[tuple[str, str]]) -> None:
    """The demo catalogue, packs and lottery, once (fixed request_ids: a rerun after a crash creates nothing twice)."""
    with grpc.insecure_channel(f"127.0.0.1:{rewards_port}") as channel:
        stub = rgrpc.RewardsServiceStub(channel)
        if stub.ListRewards(rpb.ListRewardsRequest(shop_id=SHOP_ID, page_size=1), metadata=auth).rewards:
            return
        ids = {handle: stub.CreateReward(rpb.CreateRewardRequest(request_id=f"demo-reward-{handle}", shop_id=SHOP_ID,
                                                                  reward=reward), metadata=auth).reward_id
               for handle, reward in demo_catalogue().items()}
        for i, pack in enumerate(demo_packs(ids)):
            stub.CreateBenefitPack(rpb.CreateBenefitPackRequest(request_id=f"demo-pack-{i}", shop_id=SHOP_ID,
                                                                pack=pack), metadata=auth)
        stub.CreateLottery(lpb.CreateLotteryRequest(request_id="demo-lottery", shop_id=SHOP_ID,
                                                    lottery=demo_lottery(ids)), metadata=auth)


def seed(settings: Settings, membership_port: int, rewards_port: int | None = None) -> DemoKeys:
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
            seed_rewards(rewards_port, auth)
        if created:
            _add_members(stub, auth)
    (settings.data_dir / "demo.env").write_text(
        f"export LOYALTY_ADMIN_KEY={keys.admin_key}\nexport SHOP_KEY={keys.shop_key}\nexport SHOP_ID={SHOP_ID}\n")
    return keys


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


def print_banner(settings: Settings, running: list[RunningService], keys: DemoKeys | None) -> None:
    lines = ["", "loyalty suite (embedded default) is up", f"  data:        {settings.data_dir}"]
    for service in running:
        lines.append(f"  {service.app.name:<12} localhost:{service.port}  ({service.app.full_name}, health SERVING)")
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
    lines += ["", "Ctrl-C stops it; the next `make run` keeps the data.", ""]
    print("\n".join(lines), flush=True)
