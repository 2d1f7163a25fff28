"""The demo shop's rewards: its points mall, benefit packs, lottery and a running campaign,
created through the public API before the demo members join (so each joins with the join pack)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from loyalty.rewards.v1 import campaigns_pb2 as cpb
from loyalty.rewards.v1 import lottery_pb2 as lpb
from loyalty.rewards.v1 import rewards_service_pb2 as rpb
from loyalty.rewards.v1 import rewards_service_pb2_grpc as rgrpc


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


def demo_campaign() -> cpb.Campaign:
    """会员专享 满299减30: Silver members and above, on every item, running for a year from the
    seeding, with 10% of the audience held out to measure its lift."""
    start, end = Timestamp(), Timestamp()
    start.FromDatetime(datetime.now(UTC) - timedelta(days=1))
    end.FromDatetime(datetime.now(UTC) + timedelta(days=365))
    return cpb.Campaign(name="会员专享 满299减30", kind=cpb.CAMPAIGN_KIND_CASH_OFF, all_items=True, cash_off_fen=3_000,
                        threshold_fen=29_900, holdout_bp=1_000, start_time=start, end_time=end,
                        audience=cpb.Audience(kind=cpb.AUDIENCE_KIND_TIERS, tier_levels=[1, 2, 3, 4]))


def seed(rewards_port: int, shop_id: str, auth: list[tuple[str, str]]) -> str:
    """The demo catalogue, packs, lottery and running campaign, once (fixed request_ids: a rerun
    after a crash creates nothing twice). Returns the join pack's id."""
    with grpc.insecure_channel(f"127.0.0.1:{rewards_port}") as channel:
        stub = rgrpc.RewardsServiceStub(channel)
        if not stub.ListRewards(rpb.ListRewardsRequest(shop_id=shop_id, page_size=1), metadata=auth).rewards:
            _create(stub, shop_id, auth)
        packs = stub.ListBenefitPacks(rpb.ListBenefitPacksRequest(shop_id=shop_id), metadata=auth).packs
        return next(pack.pack_id for pack in packs if pack.trigger == rpb.PACK_TRIGGER_JOIN)


def _create(stub: rgrpc.RewardsServiceStub, shop_id: str, auth: list[tuple[str, str]]) -> None:
    ids = {handle: stub.CreateReward(rpb.CreateRewardRequest(request_id=f"demo-reward-{handle}", shop_id=shop_id,
                                                              reward=reward), metadata=auth).reward_id
           for handle, reward in demo_catalogue().items()}
    for i, pack in enumerate(demo_packs(ids)):
        stub.CreateBenefitPack(rpb.CreateBenefitPackRequest(request_id=f"demo-pack-{i}", shop_id=shop_id,
                                                            pack=pack), metadata=auth)
    stub.CreateLottery(lpb.CreateLotteryRequest(request_id="demo-lottery", shop_id=shop_id,
                                                lottery=demo_lottery(ids)), metadata=auth)
    stub.CreateCampaign(cpb.CreateCampaignRequest(request_id="demo-campaign", shop_id=shop_id,
                                                  campaign=demo_campaign()), metadata=auth)
