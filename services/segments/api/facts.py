"""GetMemberFacts: what segments knows of one member."""

from __future__ import annotations

import grpc
from loyalty.segments.v1 import rules_pb2
from loyalty.segments.v1 import segments_service_pb2 as pb

from services.kit.errors import NotFound
from services.kit.timeutil import to_timestamp
from services.kit.validation import check_ids
from services.segments import facts, reasons
from services.segments.service import SegmentsService


class FactsApi:
    service: SegmentsService

    def GetMemberFacts(self, request: pb.GetMemberFactsRequest, context: grpc.ServicerContext) -> rules_pb2.MemberFacts:
        check_ids(request.shop_id, member_id=request.member_id).raise_if_any()
        found = self.service.db.read(lambda conn: facts.get_facts(conn, request.shop_id, request.member_id))
        if found is None:
            raise NotFound(f"segments knows no member {request.member_id!r}", reason=reasons.MEMBER_NOT_FOUND,
                           metadata={"member_id": request.member_id})
        row, tag_ids, category_ids = found
        return rules_pb2.MemberFacts(
            shop_id=row.shop_id, member_id=row.member_id, left=row.left_at is not None, tier_level=row.tier_level,
            points_balance=row.points_balance, join_channel=row.join_channel, birth_month=row.birth_month or 0,
            join_time=to_timestamp(row.joined_at), first_purchase_time=to_timestamp(row.first_purchase_at),
            last_purchase_time=to_timestamp(row.last_purchase_at),
            last_activity_time=to_timestamp(row.last_activity_at), trades=row.trades, spend_fen=row.spend_fen,
            refunds=row.refunds, referrals=row.referrals, tag_ids=tag_ids, units=row.units,
            promoted_trades=row.promoted_trades, category_ids=category_ids,
            shares=row.shares, gender=row.gender or 0, region=row.region or "")
