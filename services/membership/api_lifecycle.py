"""The servicer's RPCs of the tier lifecycle and the join decision (a mixin of api.MembershipApi,
kept apart so that neither file grows past a screenful of RPCs): SimulateTierRules,
ListTierExpiryNotices, CheckJoinEligibility. Requests to reads, results to responses."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
from loyalty.membership.v1 import membership_service_pb2 as pb

from services.kit import paging
from services.kit.timeutil import to_timestamp
from services.membership import joining, lifecycle, simulation
from services.membership.domain import Ladder
from services.membership.rules import Combine, JoinFacts, ProgramRules

if TYPE_CHECKING:
    from services.membership.context import Membership


def join_threshold_to_proto(require_follow: bool, rules: ProgramRules) -> pb.JoinThreshold:
    return pb.JoinThreshold(require_follow=require_follow, min_completed_trades=rules.join_min_trades,
                            min_spend_fen=rules.join_min_spend_fen, combine=int(rules.join_combine))


def join_benefit_to_proto(rules: ProgramRules) -> pb.JoinBenefit:
    return pb.JoinBenefit(text=rules.benefit_text, pack_id=rules.benefit_pack_id)


def storefront_card_to_proto(rules: ProgramRules) -> pb.StorefrontCard:
    width, height = rules.card_image_size
    return pb.StorefrontCard(mode=int(rules.card_mode), call_to_action=rules.card_call_to_action,
                             background_image_url=rules.card_image_url, background_image_width=width,
                             background_image_height=height)


def join_rules(threshold: pb.JoinThreshold) -> ProgramRules:
    """CreateProgram's join threshold parts beyond following (UpdateProgram names them by mask)."""
    return ProgramRules(join_min_trades=threshold.min_completed_trades, join_min_spend_fen=threshold.min_spend_fen,
                        join_combine=Combine.ANY if threshold.combine == Combine.ANY else Combine.ALL)


class LifecycleRpcs:
    ctx: Membership

    def SimulateTierRules(self, request: pb.SimulateTierRulesRequest,
                          context: grpc.ServicerContext) -> pb.SimulateTierRulesResponse:
        from services.membership.api import _mode, _policy, tier_from_proto  # api imports this module

        ladder = Ladder(tuple(tier_from_proto(t) for t in request.tiers), _mode(request.qualification_mode),
                        _policy(request.downgrade_policy))
        done = simulation.simulate(self.ctx, request.shop_id, ladder, request.sample_size)
        return pb.SimulateTierRulesResponse(
            moves=[pb.TierMove(from_level=m.from_level, to_level=m.to_level, member_count=m.count,
                               sample_member_ids=m.sample) for m in done.moves],
            upgraded=done.upgraded, downgraded=done.downgraded, unchanged=done.unchanged)

    def ListTierExpiryNotices(self, request: pb.ListTierExpiryNoticesRequest,
                              context: grpc.ServicerContext) -> pb.ListTierExpiryNoticesResponse:
        from services.kit.validation import require_shop

        require_shop(request.shop_id)
        limit = paging.page_size(request.page_size)
        before = paging.decode_token("tier_expiry_notices", request.shop_id, request.page_token, int)
        notices = lifecycle.list_notices(self.ctx, request.shop_id, limit=limit + 1,
                                         before_id=before[0] if before else None)
        token = paging.next_page_token("tier_expiry_notices", request.shop_id, notices, limit, lambda n: [n.id])
        return pb.ListTierExpiryNoticesResponse(next_page_token=token, notices=[
            pb.TierExpiryNotice(member_id=n.member_id, tier_level=n.tier_level, expected_level=n.expected_level,
                                expire_time=to_timestamp(n.expires_at), notice_time=to_timestamp(n.notified_at))
            for n in notices[:limit]])

    def CheckJoinEligibility(self, request: pb.CheckJoinEligibilityRequest,
                             context: grpc.ServicerContext) -> pb.CheckJoinEligibilityResponse:
        from services.membership.api import tier_to_proto

        seen = joining.check_eligibility(self.ctx, request.shop_id, request.buyer_id, JoinFacts(
            request.facts.follows_shop, request.facts.completed_trades, request.facts.spent_fen))
        response = pb.CheckJoinEligibilityResponse(
            is_member=bool(seen.member_id), member_id=seen.member_id, eligible=seen.eligible,
            unmet=[int(u) for u in seen.unmet], completed_trades=seen.facts.completed_trades,
            spent_fen=seen.facts.spent_fen, has_join_benefit=seen.rules.has_join_benefit,
            join_benefit=join_benefit_to_proto(seen.rules),
            join_threshold=join_threshold_to_proto(seen.require_follow, seen.rules),
            storefront_card=storefront_card_to_proto(seen.rules))
        if seen.tier is not None:
            response.tier.CopyFrom(tier_to_proto(seen.tier))
        return response
