"""The catalogue RPCs of RewardsApi: CreateReward, GetReward, UpdateReward, AddStock, ListRewards."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import grpc
from loyalty.rewards.v1 import rewards_service_pb2 as pb

from services.kit import paging
from services.kit.errors import InvalidArgument, enum_value
from services.kit.idempotency import idempotent_call, require_request_id
from services.kit.timeutil import from_timestamp, to_timestamp
from services.kit.validation import mask_paths
from services.rewards import catalogue, offers
from services.rewards.commands import catalogue as commands
from services.rewards.domain import (
    CouponSpec,
    GiftClass,
    GiftSpec,
    Reward,
    RewardKind,
    RewardStatus,
    VirtualKind,
    VirtualSpec,
)
from services.rewards.service import RewardsService

LIST_KIND = "rewards"


# ----- results to responses ---------------------------------------------------------------------------


def reward_to_proto(r: Reward) -> pb.Reward:
    message = pb.Reward(
        reward_id=r.reward_id, shop_id=r.shop_id, name=r.name, description=r.description, kind=int(r.kind),
        status=int(r.status), points_price=r.points_price, cash_price_fen=r.cash_price_fen,
        min_tier_level=r.min_tier_level, unlimited_stock=r.unlimited_stock, stock=r.stock, redeemed=r.redeemed,
        limit_per_member=r.limit_per_member, monthly_limit_per_member=r.monthly_limit_per_member,
        start_time=to_timestamp(r.start_at), end_time=to_timestamp(r.end_at),
        create_time=to_timestamp(r.created_at), update_time=to_timestamp(r.updated_at))
    s = r.spec
    if isinstance(s, CouponSpec):
        message.coupon.CopyFrom(pb.CouponSpec(face_value_fen=s.face_value_fen, threshold_fen=s.threshold_fen,
                                              valid_from=to_timestamp(s.valid_from),
                                              valid_until=to_timestamp(s.valid_until), valid_days=s.valid_days))
    elif isinstance(s, GiftSpec):
        message.gift.CopyFrom(pb.GiftSpec(gift_class=int(s.gift_class), ship_with_next_order=s.ship_with_next_order))
    else:
        message.virtual.CopyFrom(pb.VirtualSpec(virtual_kind=int(s.virtual_kind), top_up_fen=s.top_up_fen,
                                                bonus_fen=s.bonus_fen, discount_permille=s.discount_permille,
                                                valid_days=s.valid_days))
    return message


def offer_to_proto(offer: offers.Offer) -> pb.RewardOffer:
    return pb.RewardOffer(reward=reward_to_proto(offer.reward), redeemable=offer.verdict.redeemable,
                          unavailable_reasons=list(offer.verdict.reasons))


# ----- requests to commands ----------------------------------------------------------------------------


def _coupon(r: pb.Reward) -> CouponSpec | None:
    if not r.HasField("coupon"):
        return None
    c = r.coupon
    return CouponSpec(c.face_value_fen, c.threshold_fen,
                      from_timestamp(c.valid_from, field="reward.coupon.valid_from"),
                      from_timestamp(c.valid_until, field="reward.coupon.valid_until"), c.valid_days)


def _gift(r: pb.Reward) -> GiftSpec | None:
    if not r.HasField("gift"):
        return None
    return GiftSpec(enum_value(GiftClass, r.gift.gift_class, "reward.gift.gift_class", GiftClass.PARTICIPATION),
                    r.gift.ship_with_next_order)


def _virtual(r: pb.Reward) -> VirtualSpec | None:
    if not r.HasField("virtual"):
        return None
    s = r.virtual
    return VirtualSpec(enum_value(VirtualKind, s.virtual_kind, "reward.virtual.virtual_kind"), s.top_up_fen,
                       s.bonus_fen, s.discount_permille, s.valid_days)


def _readers(r: pb.Reward) -> dict[str, Callable[[], object]]:
    """How each settable field of a Reward message reads as a Draft's field."""
    return {
        "name": lambda: r.name,
        "description": lambda: r.description,
        "status": lambda: enum_value(RewardStatus, r.status, "reward.status"),
        "points_price": lambda: r.points_price,
        "cash_price_fen": lambda: r.cash_price_fen,
        "min_tier_level": lambda: r.min_tier_level,
        "unlimited_stock": lambda: r.unlimited_stock,
        "limit_per_member": lambda: r.limit_per_member,
        "monthly_limit_per_member": lambda: r.monthly_limit_per_member,
        "start_time": lambda: from_timestamp(r.start_time, field="reward.start_time"),
        "end_time": lambda: from_timestamp(r.end_time, field="reward.end_time"),
        "coupon": lambda: _coupon(r),
        "gift": lambda: _gift(r),
        "virtual": lambda: _virtual(r),
    }


def draft_from_proto(r: pb.Reward) -> commands.Draft:
    read = _readers(r)
    values = {path: reader() for path, reader in read.items() if path != "status"}
    return commands.Draft(kind=enum_value(RewardKind, r.kind, "reward.kind"), stock=r.stock,
                          status=enum_value(RewardStatus, r.status, "reward.status", RewardStatus.ACTIVE),
                          **values)  # type: ignore[arg-type]


def changes_from_proto(request: pb.UpdateRewardRequest) -> dict[str, object]:
    read = _readers(request.reward)
    return {path: read[path]() for path in mask_paths(request.update_mask, commands.UPDATE_PATHS)}


class CatalogueApi:
    service: RewardsService

    def CreateReward(self, request: pb.CreateRewardRequest, context: grpc.ServicerContext) -> pb.Reward:
        require_request_id(request)
        cmd = commands.CreateReward(request.shop_id, draft_from_proto(request.reward))
        return idempotent_call(self.service.db, request, "CreateReward", pb.Reward,
                               lambda uow: reward_to_proto(catalogue.create_reward(self.service, uow, cmd)))

    def GetReward(self, request: pb.GetRewardRequest, context: grpc.ServicerContext) -> pb.Reward:
        query = commands.RewardQuery(request.shop_id, request.reward_id)
        return reward_to_proto(catalogue.get_reward(self.service, query))

    def UpdateReward(self, request: pb.UpdateRewardRequest, context: grpc.ServicerContext) -> pb.Reward:
        require_request_id(request)
        cmd = commands.UpdateReward(request.shop_id, request.reward.reward_id, changes_from_proto(request))
        return idempotent_call(self.service.db, request, "UpdateReward", pb.Reward,
                               lambda uow: reward_to_proto(catalogue.update_reward(self.service, uow, cmd)))

    def AddStock(self, request: pb.AddStockRequest, context: grpc.ServicerContext) -> pb.Reward:
        require_request_id(request)
        cmd = commands.AddStock(request.shop_id, request.reward_id, request.delta)
        return idempotent_call(self.service.db, request, "AddStock", pb.Reward,
                               lambda uow: reward_to_proto(catalogue.add_stock(self.service, uow, cmd)))

    def ListRewards(self, request: pb.ListRewardsRequest, context: grpc.ServicerContext) -> pb.ListRewardsResponse:
        limit = paging.page_size(request.page_size)
        after = paging.decode_token(LIST_KIND, request.shop_id, request.page_token, str, size=2)
        if after:
            try:
                datetime.fromisoformat(after[0])
            except ValueError as exc:
                raise InvalidArgument([("page_token", "not a token this list returned")]) from exc
        kind = enum_value(RewardKind, request.kind, "kind") if request.kind else None
        query = commands.ListRewards(request.shop_id, request.member_id, request.include_unavailable, kind, limit,
                                     (after[0], after[1]) if after else None)
        page = offers.list_rewards(self.service, query)
        token = paging.encode_token(LIST_KIND, request.shop_id, list(page.next_after)) if page.next_after else ""
        return pb.ListRewardsResponse(rewards=[offer_to_proto(o) for o in page.offers], next_page_token=token)
