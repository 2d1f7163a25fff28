"""GetMemberFacts: what segments knows of one member."""

from __future__ import annotations

import grpc
from loyalty.segments.v1 import rules_pb2
from loyalty.segments.v1 import segments_service_pb2 as pb

from services.kit.errors import NotFound
from services.kit.timeutil import to_timestamp
from services.kit.validation import check_ids
from services.segments import facts, reasons, rfm
from services.segments.service import SegmentsService


def rfm_to_proto(s: rfm.MemberScores | None) -> rules_pb2.RfmScores | None:
    if s is None:
        return None
    return rules_pb2.RfmScores(recency=s.recency, frequency=s.frequency, monetary=s.monetary,
                               rfm_class=int(s.rfm_class), compute_time=to_timestamp(s.computed_at))


class FactsApi:
    service: SegmentsService

    def GetMemberFacts(self, request: pb.GetMemberFactsRequest, context: grpc.ServicerContext) -> rules_pb2.MemberFacts:
        check_ids(request.shop_id, member_id=request.member_id).raise_if_any()
        found = self.service.db.read(lambda conn: facts.get_facts(conn, request.shop_id, request.member_id))
        if found is None:
            raise NotFound(f"segments knows no member {request.member_id!r}", reason=reasons.MEMBER_NOT_FOUND,
                           metadata={"member_id": request.member_id})
        row, tag_ids, category_ids = found
        scores = self.service.db.read(lambda conn: rfm.member_scores(conn, request.shop_id, request.member_id))
        return rules_pb2.MemberFacts(
            rfm=rfm_to_proto(scores),
            shop_id=row.shop_id, member_id=row.member_id, left=row.left_at is not None, tier_level=row.tier_level,
            points_balance=row.points_balance, join_channel=row.join_channel, birth_month=row.birth_month or 0,
            join_time=to_timestamp(row.joined_at), first_purchase_time=to_timestamp(row.first_purchase_at),
            last_purchase_time=to_timestamp(row.last_purchase_at),
            last_activity_time=to_timestamp(row.last_activity_at), trades=row.trades, spend_fen=row.spend_fen,
            refunds=row.refunds, referrals=row.referrals, tag_ids=tag_ids, units=row.units,
            promoted_trades=row.promoted_trades, category_ids=category_ids,
            shares=row.shares, gender=row.gender or 0, region=row.region or "")
