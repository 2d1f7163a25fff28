"""The campaign RPCs of RewardsApi: CreateCampaign, GetCampaign, UpdateCampaign, ListCampaigns,
and the checkout's EvaluateCart."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from loyalty.rewards.v1 import campaigns_pb2 as pb

from services.kit import paging
from services.kit.errors import enum_value
from services.kit.idempotency import idempotent_call, require_request_id
from services.kit.timeutil import from_timestamp, to_timestamp, utcnow
from services.kit.validation import mask_paths
from services.rewards import campaigns, checkout
from services.rewards.checkout import Audience, AudienceKind, Campaign, CampaignKind, CampaignStatus, Line
from services.rewards.commands import campaigns as commands
from services.rewards.service import RewardsService

LIST_KIND = "campaigns"


# ----- results to responses ---------------------------------------------------------------------------


def campaign_to_proto(c: Campaign) -> pb.Campaign:
    a = c.audience
    return pb.Campaign(
        campaign_id=c.campaign_id, shop_id=c.shop_id, name=c.name, kind=int(c.kind),
        audience=pb.Audience(kind=int(a.kind), tier_levels=list(a.tier_levels), tag_ids=list(a.tag_ids),
                             segment_id=a.segment_id),
        start_time=to_timestamp(c.start_at), end_time=to_timestamp(c.end_at), all_items=c.all_items,
        skus=list(c.skus), discount_permille=c.discount_permille, cash_off_fen=c.cash_off_fen,
        threshold_fen=c.threshold_fen, coupon_reward_id=c.coupon_reward_id, holdout_bp=c.holdout_bp,
        status=int(c.status(utcnow())), create_time=to_timestamp(c.created_at),
        update_time=to_timestamp(c.updated_at))


def evaluation_to_proto(e: checkout.Evaluation) -> pb.EvaluateCartResponse:
    return pb.EvaluateCartResponse(
        lines=[pb.LineEvaluation(sku=r.line.sku, quantity=r.line.quantity, unit_price_fen=r.line.unit_price_fen,
                                 amount_fen=r.line.amount_fen, tier_discount_fen=r.tier_discount_fen,
                                 campaign_discount_fen=r.campaign_discount_fen,
                                 coupon_discount_fen=r.coupon_discount_fen, total_fen=r.total_fen)
               for r in e.lines],
        member=bool(e.buyer.member_id), tier_level=e.buyer.tier_level,
        tier_discount_bp=e.buyer.tier_discount_bp if e.buyer.member_id else checkout.FULL_BP,
        subtotal_fen=e.total("amount_fen"), tier_discount_fen=e.total("tier_discount_fen"),
        campaign_discount_fen=e.total("campaign_discount_fen"), coupon_discount_fen=e.total("coupon_discount_fen"),
        total_discount_fen=e.total("amount_fen") - e.total("total_fen"), total_fen=e.total("total_fen"),
        free_shipping=e.free_shipping, applied_campaign_id=e.applied_campaign_id,
        applied_coupon_id=e.applied_coupon_id,
        campaigns=[pb.CampaignEvaluation(campaign_id=c.campaign_id, name=c.name, kind=int(c.kind), applied=v.applied,
                                         reason=v.reason, discount_fen=v.discount_fen) for c, v in e.campaigns],
        coupons=[pb.CouponEvaluation(coupon_id=c.coupon_id, applied=v.applied, reason=v.reason,
                                     face_value_fen=c.face_value_fen, threshold_fen=c.threshold_fen)
                 for c, v in e.coupons])


# ----- requests to commands ----------------------------------------------------------------------------


def _audience(c: pb.Campaign) -> Audience:
    a = c.audience
    return Audience(enum_value(AudienceKind, a.kind, "campaign.audience.kind", AudienceKind.EVERYONE),
                    tuple(a.tier_levels), tuple(a.tag_ids), a.segment_id)


def _readers(c: pb.Campaign) -> dict[str, tuple[str, Callable[[], object]]]:
    """How each settable field of a Campaign message reads as the Campaign dataclass's field."""
    return {
        "name": ("name", lambda: c.name),
        "audience": ("audience", lambda: _audience(c)),
        "start_time": ("start_at", lambda: from_timestamp(c.start_time, field="campaign.start_time")),
        "end_time": ("end_at", lambda: from_timestamp(c.end_time, field="campaign.end_time")),
        "all_items": ("all_items", lambda: c.all_items),
        "skus": ("skus", lambda: tuple(c.skus)),
        "discount_permille": ("discount_permille", lambda: c.discount_permille),
        "cash_off_fen": ("cash_off_fen", lambda: c.cash_off_fen),
        "threshold_fen": ("threshold_fen", lambda: c.threshold_fen),
        "coupon_reward_id": ("coupon_reward_id", lambda: c.coupon_reward_id),
        "holdout_bp": ("holdout_bp", lambda: c.holdout_bp),
    }


def campaign_from_proto(shop_id: str, c: pb.Campaign) -> Campaign:
    values = {name: read() for name, read in _readers(c).values()}
    return Campaign(shop_id=shop_id, campaign_id="", kind=enum_value(CampaignKind, c.kind, "campaign.kind"),
                    **values)  # type: ignore[arg-type]


def changes_from_proto(request: pb.UpdateCampaignRequest) -> dict[str, object]:
    read = _readers(request.campaign)
    return {read[path][0]: read[path][1]() for path in mask_paths(request.update_mask, commands.UPDATE_PATHS)}


class CampaignsApi:
    service: RewardsService

    def CreateCampaign(self, request: pb.CreateCampaignRequest, context: grpc.ServicerContext) -> pb.Campaign:
        require_request_id(request)
        cmd = commands.CreateCampaign(request.shop_id, campaign_from_proto(request.shop_id, request.campaign))
        campaigns.check_audience(self.service, cmd)
        return idempotent_call(self.service.db, request, "CreateCampaign", pb.Campaign,
                               lambda uow: campaign_to_proto(campaigns.create_campaign(self.service, uow, cmd)))

    def GetCampaign(self, request: pb.GetCampaignRequest, context: grpc.ServicerContext) -> pb.Campaign:
        query = commands.CampaignQuery(request.shop_id, request.campaign_id)
        return campaign_to_proto(campaigns.get_campaign(self.service, query))

    def UpdateCampaign(self, request: pb.UpdateCampaignRequest, context: grpc.ServicerContext) -> pb.Campaign:
        require_request_id(request)
        cmd = commands.UpdateCampaign(request.shop_id, request.campaign.campaign_id, changes_from_proto(request))
        campaigns.check_audience(self.service, cmd)
        return idempotent_call(self.service.db, request, "UpdateCampaign", pb.Campaign,
                               lambda uow: campaign_to_proto(campaigns.update_campaign(self.service, uow, cmd)))

    def ListCampaigns(self, request: pb.ListCampaignsRequest,
                      context: grpc.ServicerContext) -> pb.ListCampaignsResponse:
        limit = paging.page_size(request.page_size)
        after = paging.decode_token(LIST_KIND, request.shop_id, request.page_token)
        status = enum_value(CampaignStatus, request.status, "status") if request.status else None
        found = campaigns.list_campaigns(self.service, commands.ListCampaigns(
            request.shop_id, status, limit, after[0] if after else None))
        token = paging.next_page_token(LIST_KIND, request.shop_id, found, limit, lambda c: [c.campaign_id])
        return pb.ListCampaignsResponse(campaigns=[campaign_to_proto(c) for c in found[:limit]],
                                        next_page_token=token)

    def EvaluateCart(self, request: pb.EvaluateCartRequest, context: grpc.ServicerContext) -> pb.EvaluateCartResponse:
        cmd = commands.EvaluateCart(request.shop_id, request.member_id,
                                    tuple(Line(x.sku, x.quantity, x.unit_price_fen) for x in request.lines),
                                    tuple(request.coupon_ids))
        return evaluation_to_proto(campaigns.evaluate_cart(self.service, cmd))
