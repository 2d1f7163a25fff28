"""The report RPCs of SegmentsApi (数据运营): GetMemberReport, GetSalesReport, GetRepurchaseReport, and
GetSegmentSizeHistory."""

from __future__ import annotations

import grpc
from loyalty.segments.v1 import segments_service_pb2 as pb

from services.kit.timeutil import to_timestamp
from services.segments import reports, sizes
from services.segments.commands_reports import (
    MemberReportQuery,
    RepurchaseQuery,
    SalesReportQuery,
    SizeHistoryQuery,
)
from services.segments.service import SegmentsService


def _figures(f: reports.BuyerFigures) -> pb.BuyerFigures:
    return pb.BuyerFigures(buyers=f.buyers, orders=f.orders, sales_fen=f.sales_fen, units=f.units,
                           average_order_fen=f.average_order_fen, units_per_order=f.units_per_order)


class ReportsApi:
    service: SegmentsService

    def GetMemberReport(self, request: pb.GetMemberReportRequest, context: grpc.ServicerContext) -> pb.MemberReport:
        r = reports.member_report(self.service, MemberReportQuery(request.shop_id, request.active_days))
        return pb.MemberReport(
            shop_id=r.shop_id, members=r.members, active_members=r.active_members, tagged_members=r.tagged_members,
            tiers=[pb.TierCount(tier_level=level, members=n) for level, n in r.tiers],
            members_with_no_trade=r.with_no_trade, members_with_one_trade=r.with_one_trade,
            members_with_more_trades=r.with_more_trades,
            join_channels=[pb.ChannelCount(join_channel=channel, members=n) for channel, n in r.join_channels],
            report_time=to_timestamp(r.at))

    def GetSalesReport(self, request: pb.GetSalesReportRequest, context: grpc.ServicerContext) -> pb.SalesReport:
        query = SalesReportQuery(request.shop_id, request.start_date, request.end_date, request.granularity)
        r = reports.sales_report(self.service, query)
        return pb.SalesReport(shop_id=r.shop_id, time_zone=r.time_zone, periods=[
            pb.SalesPeriod(period=p.period, new_members=p.new_members, new_buyers=_figures(p.new_buyers),
                           returning_buyers=_figures(p.returning_buyers)) for p in r.periods])

    def GetRepurchaseReport(self, request: pb.GetRepurchaseReportRequest,
                            context: grpc.ServicerContext) -> pb.RepurchaseReport:
        r = reports.repurchase(self.service, RepurchaseQuery(request.shop_id, request.window_days))
        return pb.RepurchaseReport(shop_id=r.shop_id, window_days=r.window_days, buyers=r.buyers,
                                   repeat_buyers=r.repeat_buyers, repurchase_rate_bp=r.rate_bp)

    def GetSegmentSizeHistory(self, request: pb.GetSegmentSizeHistoryRequest,
                              context: grpc.ServicerContext) -> pb.GetSegmentSizeHistoryResponse:
        query = SizeHistoryQuery(request.shop_id, request.segment_id, request.days)
        return pb.GetSegmentSizeHistoryResponse(sizes=[
            pb.SegmentSize(day=s.day, count=s.count, count_time=to_timestamp(s.counted_at))
            for s in sizes.history(self.service, query)])
