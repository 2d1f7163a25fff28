"""The operators' report RPC of RewardsApi."""

from __future__ import annotations

import grpc
from loyalty.rewards.v1 import rewards_service_pb2 as pb

from services.kit.timeutil import from_timestamp, to_timestamp
from services.rewards import reports, reports_campaigns
from services.rewards.service import RewardsService


def _coupons(f: reports.CouponFigures) -> pb.CouponFigures:
    return pb.CouponFigures(issued=f.issued, used=f.used, expired=f.expired, unused=f.unused, revoked=f.revoked,
                            use_rate_bp=f.use_rate_bp)


def _group(g: reports_campaigns.Group) -> pb.CampaignGroup:
    return pb.CampaignGroup(members=g.members, converted=g.converted, conversion_rate_bp=g.conversion_rate_bp,
                            orders=g.orders, spend_fen=g.spend_fen)


def _campaign(f: reports_campaigns.CampaignFigures) -> pb.CampaignFigures:
    c = f.campaign
    return pb.CampaignFigures(campaign_id=c.campaign_id, name=c.name, kind=int(c.kind), status=int(f.status),
                              start_time=to_timestamp(c.start_at), end_time=to_timestamp(c.end_at),
                              holdout_bp=c.holdout_bp, measured_start_time=to_timestamp(f.measured_start),
                              measured_end_time=to_timestamp(f.measured_end), reach=f.reach,
                              treated=_group(f.treated), held_out=_group(f.held_out))


class ReportsApi:
    service: RewardsService

    def GetRewardsReport(self, request: pb.GetRewardsReportRequest, context: grpc.ServicerContext) -> pb.RewardsReport:
        r = reports.report(self.service, request.shop_id, from_timestamp(request.start_time, field="start_time"),
                           from_timestamp(request.end_time, field="end_time"))
        return pb.RewardsReport(
            shop_id=r.shop_id, start_time=to_timestamp(r.start), end_time=to_timestamp(r.end),
            redemptions=[pb.RedemptionDay(day=d.day, reward_id=d.reward_id, reward_name=d.reward_name,
                                          redemptions=d.redemptions, quantity=d.quantity, points=d.points,
                                          cash_fen=d.cash_fen) for d in r.days],
            points_consumed=r.points_consumed, cash_fen=r.cash_fen,
            stock=[pb.RewardStock(reward_id=s.reward_id, name=s.name, status=int(s.status),
                                  unlimited_stock=s.unlimited_stock, stock=s.stock, redeemed=s.redeemed)
                   for s in r.stock],
            coupons=_coupons(r.coupons),
            coupons_by_reward=[pb.CouponRewardFigures(reward_id=reward_id, name=name, figures=_coupons(f))
                               for reward_id, name, f in r.coupons_by_reward],
            campaigns=[_campaign(f) for f in r.campaigns])
