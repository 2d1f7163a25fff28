"""The operators' report RPC of RewardsApi."""

from __future__ import annotations

import grpc
from loyalty.rewards.v1 import rewards_service_pb2 as pb

from services.kit.timeutil import from_timestamp, to_timestamp
from services.rewards import reports
from services.rewards.service import RewardsService


def _coupons(f: reports.CouponFigures) -> pb.CouponFigures:
    return pb.CouponFigures(issued=f.issued, used=f.used, expired=f.expired, unused=f.unused, revoked=f.revoked,
                            use_rate_bp=f.use_rate_bp)


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
                               for reward_id, name, f in r.coupons_by_reward])
