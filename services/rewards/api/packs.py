"""The benefit-pack RPCs of RewardsApi."""

from __future__ import annotations

import grpc
from loyalty.rewards.v1 import rewards_service_pb2 as pb

from services.kit import paging
from services.kit.errors import enum_value
from services.kit.idempotency import idempotent_call, require_request_id
from services.kit.timeutil import to_timestamp
from services.kit.validation import mask_paths, require_shop
from services.rewards import packs
from services.rewards.commands import packs as commands
from services.rewards.domain import BenefitPack, PackTrigger
from services.rewards.service import RewardsService


def pack_to_proto(p: BenefitPack) -> pb.BenefitPack:
    return pb.BenefitPack(pack_id=p.pack_id, shop_id=p.shop_id, name=p.name, trigger=int(p.trigger),
                          enabled=p.enabled, points=p.points,
                          items=[pb.PackItem(reward_id=r, quantity=q) for r, q in p.items],
                          tier_levels=list(p.tier_levels), create_time=to_timestamp(p.created_at),
                          update_time=to_timestamp(p.updated_at))


def grant_to_proto(g: packs.Grant) -> pb.PackGrant:
    return pb.PackGrant(grant_id=g.grant_id, shop_id=g.shop_id, pack_id=g.pack_id, member_id=g.member_id,
                        trigger=int(g.trigger), period=g.period, points=g.points,
                        points_credited=g.points_outcome == packs.CREDITED, coupon_ids=list(g.coupon_ids),
                        grant_time=to_timestamp(g.granted_at))


def _pack(shop_id: str, p: pb.BenefitPack, *, trigger_required: bool) -> BenefitPack:
    trigger = (enum_value(PackTrigger, p.trigger, "pack.trigger") if trigger_required
               else PackTrigger(p.trigger) if p.trigger in PackTrigger._value2member_map_ else PackTrigger.JOIN)
    return BenefitPack(shop_id=shop_id, pack_id=p.pack_id, name=p.name, trigger=trigger, enabled=p.enabled,
                       points=p.points, items=tuple((i.reward_id, i.quantity or 1) for i in p.items),
                       tier_levels=tuple(p.tier_levels))


class PacksApi:
    service: RewardsService

    def CreateBenefitPack(self, request: pb.CreateBenefitPackRequest, context: grpc.ServicerContext) -> pb.BenefitPack:
        require_request_id(request)
        cmd = commands.CreatePack(request.shop_id, _pack(request.shop_id, request.pack, trigger_required=True))
        return idempotent_call(self.service.db, request, "CreateBenefitPack", pb.BenefitPack,
                               lambda uow: pack_to_proto(packs.create_pack(self.service, uow, cmd)))

    def UpdateBenefitPack(self, request: pb.UpdateBenefitPackRequest, context: grpc.ServicerContext) -> pb.BenefitPack:
        require_request_id(request)
        paths = tuple(mask_paths(request.update_mask, commands.PACK_PATHS))
        cmd = commands.UpdatePack(request.shop_id, _pack(request.shop_id, request.pack, trigger_required=False),
                                  paths)
        return idempotent_call(self.service.db, request, "UpdateBenefitPack", pb.BenefitPack,
                               lambda uow: pack_to_proto(packs.update_pack(self.service, uow, cmd)))

    def ListBenefitPacks(self, request: pb.ListBenefitPacksRequest,
                         context: grpc.ServicerContext) -> pb.ListBenefitPacksResponse:
        require_shop(request.shop_id)
        limit = paging.page_size(request.page_size)
        after = paging.decode_token("packs", request.shop_id, request.page_token)
        found = packs.list_packs(self.service, request.shop_id, limit + 1, after[0] if after else None)
        token = paging.next_page_token("packs", request.shop_id, found, limit, lambda p: [p.pack_id])
        return pb.ListBenefitPacksResponse(packs=[pack_to_proto(p) for p in found[:limit]], next_page_token=token)

    def ListPackGrants(self, request: pb.ListPackGrantsRequest,
                       context: grpc.ServicerContext) -> pb.ListPackGrantsResponse:
        limit = paging.page_size(request.page_size)
        before = paging.decode_token("pack-grants", request.shop_id, request.page_token, str, 2)
        query = commands.GrantsQuery(request.shop_id, request.member_id, limit + 1,
                                     (before[0], before[1]) if before else None)
        found = packs.list_grants(self.service, query)
        token = paging.next_page_token("pack-grants", request.shop_id, found, limit,
                                       lambda g: [g.granted_at.isoformat(), g.grant_id])
        return pb.ListPackGrantsResponse(grants=[grant_to_proto(g) for g in found[:limit]], next_page_token=token)
