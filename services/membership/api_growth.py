"""The growth value (成长值) RPCs of MembershipService, mixed into the servicer (api.py): requests
to growth.py's commands and reads, results to responses."""

from __future__ import annotations

from datetime import datetime

import grpc
from loyalty.membership.v1 import membership_service_pb2 as pb

from services.kit import paging
from services.kit.auth import current_principal
from services.kit.errors import PermissionDenied, enum_value
from services.kit.idempotency import idempotent_call, require_request_id
from services.kit.timeutil import from_timestamp, to_timestamp, utcnow
from services.kit.validation import mask_paths, require_shop
from services.membership import growth, growth_decay, reasons
from services.membership.context import Membership
from services.membership.growth_rules import Decay, DecayKind, GrowthRule, GrowthSettings, GrowthSource, Milestone

GROWTH_RULES_PATHS = ("rules", "decay", "milestones")


def entry_to_proto(e: growth.GrowthEntry) -> pb.GrowthEntry:
    return pb.GrowthEntry(id=e.id, amount=e.amount, source=e.source, reference=e.reference, reason=e.reason,
                          operator=e.operator, balance_after=e.balance_after, create_time=to_timestamp(e.created_at))


def rules_to_proto(shop_id: str, settings: GrowthSettings, updated_at: datetime | None) -> pb.GrowthRules:
    return pb.GrowthRules(
        shop_id=shop_id,
        rules=[pb.GrowthRule(source=int(r.source), growth=r.growth, daily_cap=r.daily_cap, monthly_cap=r.monthly_cap,
                             lifetime_cap=r.lifetime_cap) for r in settings.rules.values()],
        decay=pb.GrowthDecay(kind=int(settings.decay.kind), months=settings.decay.months,
                             percent=settings.decay.percent),
        milestones=[pb.GrowthMilestone(threshold=m.threshold, pack_id=m.pack_id) for m in settings.milestones],
        update_time=to_timestamp(updated_at) if updated_at else None)


def _rule(i: int, r: pb.GrowthRule) -> GrowthRule:
    source = enum_value(GrowthSource, r.source, f"growth_rules.rules[{i}].source")
    return GrowthRule(source, r.growth, r.daily_cap, r.monthly_cap, r.lifetime_cap)


class GrowthApi:
    """MembershipService's growth RPCs (the servicer's `ctx` and `_run` come from MembershipApi)."""

    ctx: Membership

    def GetGrowth(self, request: pb.GetGrowthRequest, context: grpc.ServicerContext) -> pb.Growth:
        require_shop(request.shop_id)
        view = growth.get_growth(self.ctx, request.shop_id, request.member_id)
        return pb.Growth(member_id=view.member_id, growth_value=view.balance,
                         last_earn_time=to_timestamp(view.last_earned_at) if view.last_earned_at else None)

    def ListGrowthLedger(self, request: pb.ListGrowthLedgerRequest,
                         context: grpc.ServicerContext) -> pb.ListGrowthLedgerResponse:
        require_shop(request.shop_id)
        limit = paging.page_size(request.page_size)
        before = paging.decode_token("growth_ledger", request.shop_id, request.page_token, int)
        entries = growth.ledger(self.ctx, request.shop_id, request.member_id, limit=limit + 1,
                                before_id=before[0] if before else None)
        token = paging.next_page_token("growth_ledger", request.shop_id, entries, limit, lambda e: [e.id])
        return pb.ListGrowthLedgerResponse(entries=[entry_to_proto(e) for e in entries[:limit]],
                                           next_page_token=token)

    def AdjustGrowth(self, request: pb.AdjustGrowthRequest, context: grpc.ServicerContext) -> pb.AdjustGrowthResponse:
        from services.membership.api import tier_to_proto  # the servicer's module imports this one

        require_request_id(request)
        command = growth.AdjustGrowth(request.shop_id, request.member_id, request.amount, request.reason,
                                      request.operator)
        return self._run(request, "AdjustGrowth", command, growth.adjust,  # type: ignore[attr-defined]
                         lambda done: pb.AdjustGrowthResponse(entry=entry_to_proto(done.entry),
                                                              tier=tier_to_proto(done.tier),
                                                              tier_changed=done.tier_changed),
                         pb.AdjustGrowthResponse)

    def GetGrowthRules(self, request: pb.GetGrowthRulesRequest, context: grpc.ServicerContext) -> pb.GrowthRules:
        require_shop(request.shop_id)
        settings, updated_at = growth.get_rules(self.ctx, request.shop_id)
        return rules_to_proto(request.shop_id, settings, updated_at)

    def UpdateGrowthRules(self, request: pb.UpdateGrowthRulesRequest,
                          context: grpc.ServicerContext) -> pb.GrowthRules:
        require_request_id(request)
        paths = set(mask_paths(request.update_mask, GROWTH_RULES_PATHS))
        given = request.growth_rules
        decay = None
        if "decay" in paths:
            decay = Decay(enum_value(DecayKind, given.decay.kind, "growth_rules.decay.kind", DecayKind.NONE),
                          given.decay.months, given.decay.percent)
        command = growth.UpdateGrowthRules(
            shop_id=request.shop_id,
            rules=tuple(_rule(i, r) for i, r in enumerate(given.rules)) if "rules" in paths else None,
            decay=decay,
            milestones=tuple(Milestone(m.threshold, m.pack_id) for m in given.milestones)
            if "milestones" in paths else None)
        return self._run(request, "UpdateGrowthRules", command, growth.update_rules,  # type: ignore[attr-defined]
                         lambda done: rules_to_proto(request.shop_id, done[0], done[1]), pb.GrowthRules)

    def DecayGrowth(self, request: pb.DecayGrowthRequest, context: grpc.ServicerContext) -> pb.DecayGrowthResponse:
        require_request_id(request)
        as_of = from_timestamp(request.as_of, utcnow(), field="as_of")
        principal = current_principal()
        if as_of > utcnow() and not (principal is not None and principal.is_admin):
            raise PermissionDenied("a shop key decays only what is due now (leave as_of unset); an as_of still to "
                                   "come needs the admin key", reason=reasons.DECAY_AHEAD_ADMIN_ONLY,
                                   metadata={"as_of": to_timestamp(as_of).ToJsonString()})
        command = growth_decay.DecayShop(request.shop_id, as_of)
        return idempotent_call(self.ctx.db, request, "DecayGrowth", pb.DecayGrowthResponse,
                               lambda uow: _decayed(growth_decay.decay_shop(self.ctx, uow, command)))


def _decayed(done: growth_decay.Decayed) -> pb.DecayGrowthResponse:
    return pb.DecayGrowthResponse(members=done.members, growth=done.growth, downgraded=done.downgraded,
                                      downgrades_announced=done.scheduled)

