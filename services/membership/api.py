"""The gRPC servicer: requests to commands (run by their handlers inside the kit's unit of work,
with the idempotency record and the outbox) or to view queries, and results to responses."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from google.protobuf.wrappers_pb2 import BytesValue
from google.type import date_pb2
from loyalty.membership.v1 import membership_service_pb2 as pb
from loyalty.membership.v1 import membership_service_pb2_grpc as pb_grpc

from services.kit import paging
from services.kit.errors import InvalidArgument, enum_value
from services.kit.idempotency import idempotent_call, require_request_id
from services.kit.storage import UnitOfWork
from services.kit.timeutil import from_timestamp, to_timestamp, utcnow
from services.kit.validation import mask_paths, require_shop
from services.membership import (
    answers,
    commands,
    domain,
    key_store,
    members,
    order_details,
    orders,
    programs,
    tiers,
    views,
)
from services.membership.api_growth import GrowthApi
from services.membership.api_lifecycle import (
    LifecycleRpcs,
    join_benefit_to_proto,
    join_rules,
    join_threshold_to_proto,
    storefront_card_to_proto,
)
from services.membership.context import Membership
from services.membership.domain import DowngradePolicy, ProfileField, ProfileInput, QualificationMode, Tier
from services.membership.orders import OrderOutcome
from services.membership.programs import Program
from services.membership.views import MemberView, OrderView

R = TypeVar("R", bound=Message)
PROGRAM_PATHS = ("name", "time_zone", "join_threshold", "join_benefit", "tier_validity_months",
                 "downgrade_notice_days", "storefront_card", "storefront_origins")  # what UpdateProgram may change
T = TypeVar("T")
C = TypeVar("C", bound=commands.Command)
Handler = Callable[[Membership, UnitOfWork, C], T]


def tier_to_proto(tier: Tier) -> pb.Tier:
    return pb.Tier(level=tier.level, code=tier.code, name=tier.name, min_spend_fen=tier.min_spend_fen,
                   min_trades=tier.min_trades, discount_bp=tier.discount_bp,
                   points_rate_milli=tier.points_rate_milli, benefits=list(tier.benefits),
                   min_growth=tier.min_growth)


def tier_from_proto(t: pb.Tier) -> Tier:
    return Tier(t.level, t.code, t.name, t.min_spend_fen, t.min_trades, t.discount_bp, t.points_rate_milli,
                tuple(t.benefits), t.min_growth)


def _card(card: pb.StorefrontCard) -> tuple[int, str, str, int, int]:
    return (card.mode, card.call_to_action, card.background_image_url, card.background_image_width,
            card.background_image_height)


def program_to_proto(p: Program) -> pb.Program:
    return pb.Program(
        shop_id=p.shop_id, name=p.name, time_zone=p.time_zone,
        join_threshold=join_threshold_to_proto(p.require_follow, p.rules),
        join_benefit=join_benefit_to_proto(p.rules), tier_validity_months=p.rules.validity_months,
        downgrade_notice_days=p.rules.notice_days, storefront_card=storefront_card_to_proto(p.rules),
        storefront_origins=p.rules.storefront_origins,
        tiers=[tier_to_proto(domain.shown(t, p.ladder.mode)) for t in p.ladder.tiers],
        qualification_mode=int(p.ladder.mode),
        downgrade_policy=int(p.ladder.policy), create_time=to_timestamp(p.created_at),
        update_time=to_timestamp(p.updated_at))


def order_to_proto(o: OrderView) -> pb.Order:
    return pb.Order(shop_id=o.shop_id, order_id=o.order_id, buyer_id=o.buyer_id, member_id=o.member_id,
                    amount_fen=o.amount_fen, refunded_fen=o.refunded_fen, status=o.status,
                    paid_time=to_timestamp(o.paid_at), complete_time=to_timestamp(o.completed_at), counted=o.counted,
                    lines=orders.lines_to_proto(o.details), coupon_applied=o.details.coupon_applied,
                    campaign_applied=o.details.campaign_applied, refunds_after_completion=o.refunds_after_completion)


def member_to_proto(m: MemberView) -> pb.Member:
    birthday = None
    if m.birthday:
        year, month, day = m.birthday
        birthday = date_pb2.Date(year=year, month=month, day=day)
    return pb.Member(
        shop_id=m.shop_id, member_id=m.member_id, buyer_id=m.buyer_id, status=m.status,
        profile=pb.Profile(name=m.name, gender=m.gender, phone_masked=domain.mask_phone(m.phone) if m.phone else "",
                           birthday=birthday, region=m.region),
        consent=pb.Consent(fields=sorted(int(f) for f in m.consent), consent_time=to_timestamp(m.consent_at),
                           channel=m.join_channel, revoke_time=to_timestamp(m.consent_revoked_at)),
        join_channel=m.join_channel, referrer_member_id=m.referrer_member_id,
        join_time=to_timestamp(m.joined_at), leave_time=to_timestamp(m.left_at),
        tier_level=m.tier.level, tier_code=m.tier.code, tier_name=m.tier.name,
        tier_since=to_timestamp(m.tier_since), tier_expire_time=to_timestamp(m.tier_expires_at),
        cumulative_spend_fen=m.cumulative_spend_fen,
        trade_count=m.trade_count)


def _outcome(outcome: OrderOutcome, response_type: type[R]) -> R:
    response = response_type(order=order_to_proto(outcome.order), tier_changed=outcome.tier_changed)
    if outcome.tier is not None:
        response.tier.CopyFrom(tier_to_proto(outcome.tier))  # type: ignore[attr-defined]
    return response


def _mode(value: int) -> QualificationMode:
    return enum_value(QualificationMode, value, "qualification_mode", QualificationMode.CUMULATIVE_SPEND)


def _policy(value: int) -> DowngradePolicy:
    return enum_value(DowngradePolicy, value, "downgrade_policy", DowngradePolicy.NEVER)


def _consent(values: Iterable[int], field_name: str) -> frozenset[ProfileField]:
    fields = set()
    for value in values:
        try:
            fields.add(ProfileField(value))
        except ValueError as exc:
            raise InvalidArgument([(field_name, f"unknown profile field {value}")]) from exc
    return frozenset(fields)


def _profile(p: pb.Profile, paths: set[str] | None = None) -> ProfileInput:
    """The fields a request gives: those named by `paths` (an update mask), or else those set."""
    if paths is None:
        paths = {name for name, present in (
            ("name", bool(p.name)), ("gender", p.gender != 0), ("phone", bool(p.phone)),
            ("birthday", p.HasField("birthday")), ("region", bool(p.region))) if present}
    unknown = paths - set(domain.PROFILE_PATHS)
    if unknown:
        raise InvalidArgument([("update_mask", f"unknown path {sorted(unknown)[0]!r}; use "
                                               + ", ".join(domain.PROFILE_PATHS))])
    birthday = None
    if "birthday" in paths and p.HasField("birthday"):
        birthday = (p.birthday.year, p.birthday.month, p.birthday.day)
    return ProfileInput(
        name=p.name if "name" in paths else None,
        gender=p.gender if "gender" in paths else None,
        phone=p.phone if "phone" in paths else None,
        birthday=birthday,
        region=p.region if "region" in paths else None,
        given={domain.PROFILE_PATHS[path] for path in paths},
    )


class MembershipApi(LifecycleRpcs, GrowthApi, pb_grpc.MembershipServiceServicer):
    def __init__(self, ctx: Membership):
        self.ctx = ctx

    def _run(self, request: Message, method: str, command: C, handler: Handler[C, T],
             to_proto: Callable[[T], R], response_type: type[R]) -> R:
        """A command's handler in the kit's unit of work, with its idempotency record and outbox."""
        return idempotent_call(self.ctx.db, request, method, response_type,
                               lambda uow: to_proto(handler(self.ctx, uow, command)))

    def _run_sealed(self, request: Message, method: str, command: C, handler: Handler[C, T],
                    to_proto: Callable[[T], R], response_type: type[R], key_id: Callable[[T], str]) -> R:
        """_run() for answers that show a person: stored sealed with the buyer's data key."""
        if not request.request_id:  # type: ignore[attr-defined]  # nothing is stored: nothing to seal
            require_shop(request.shop_id)  # type: ignore[attr-defined]
            with key_store.request_scope():
                return self.ctx.db.transact(lambda uow: to_proto(handler(self.ctx, uow, command)))
        fresh: list[tuple[BytesValue, R]] = []

        def work(uow: UnitOfWork) -> BytesValue:
            result = handler(self.ctx, uow, command)
            answer = to_proto(result)
            stored = answers.seal(self.ctx, command.shop_id, key_id(result), method, answer)
            fresh.append((stored, answer))
            return stored

        with key_store.request_scope():
            stored = idempotent_call(self.ctx.db, request, method, BytesValue, work, subject=answers.subject)
            if fresh and fresh[-1][0] is stored:
                return fresh[-1][1]
            return answers.open_answer(self.ctx, command.shop_id, method, stored, response_type)

    # ----- programs -----

    def CreateProgram(self, request: pb.CreateProgramRequest,
                      context: grpc.ServicerContext) -> pb.CreateProgramResponse:
        require_request_id(request)
        command = commands.CreateProgram(
            shop_id=request.shop_id, name=request.name, time_zone=request.time_zone or domain.DEFAULT_TIME_ZONE,
            require_follow=request.join_threshold.require_follow,
            tiers=tuple(tier_from_proto(t) for t in request.tiers), mode=_mode(request.qualification_mode),
            policy=_policy(request.downgrade_policy), rules=join_rules(request.join_threshold))
        return self._run(request, "CreateProgram", command, programs.create_program,
                         lambda result: pb.CreateProgramResponse(program=program_to_proto(result[0]),
                                                                 api_key=result[1].api_key),
                         pb.CreateProgramResponse)

    def GetProgram(self, request: pb.GetProgramRequest, context: grpc.ServicerContext) -> pb.Program:
        require_shop(request.shop_id)
        return program_to_proto(views.get_program(self.ctx, request.shop_id))

    def UpdateProgram(self, request: pb.UpdateProgramRequest, context: grpc.ServicerContext) -> pb.Program:
        require_request_id(request)
        paths = set(mask_paths(request.update_mask, PROGRAM_PATHS))
        command = commands.UpdateProgram(
            shop_id=request.shop_id, name=request.name if "name" in paths else None,
            time_zone=request.time_zone if "time_zone" in paths else None,
            require_follow=request.join_threshold.require_follow if "join_threshold" in paths else None,
            join_parts=(request.join_threshold.min_completed_trades, request.join_threshold.min_spend_fen,
                        request.join_threshold.combine) if "join_threshold" in paths else None,
            join_benefit=(request.join_benefit.text, request.join_benefit.pack_id)
            if "join_benefit" in paths else None,
            validity_months=request.tier_validity_months if "tier_validity_months" in paths else None,
            notice_days=request.downgrade_notice_days if "downgrade_notice_days" in paths else None,
            card=_card(request.storefront_card) if "storefront_card" in paths else None,
            storefront_origins=tuple(request.storefront_origins) if "storefront_origins" in paths else None)
        return self._run(request, "UpdateProgram", command, programs.update_program, program_to_proto, pb.Program)

    def IssueApiKey(self, request: pb.IssueApiKeyRequest, context: grpc.ServicerContext) -> pb.IssueApiKeyResponse:
        require_request_id(request)
        return self._run(request, "IssueApiKey", commands.IssueApiKey(request.shop_id, request.label),
                         programs.issue_api_key,
                         lambda key: pb.IssueApiKeyResponse(key_id=key.key_id, api_key=key.api_key),
                         pb.IssueApiKeyResponse)

    # ----- members -----

    def JoinMember(self, request: pb.JoinMemberRequest, context: grpc.ServicerContext) -> pb.Member:
        require_request_id(request)
        command = commands.JoinMember(
            shop_id=request.shop_id, buyer_id=request.buyer_id, profile=_profile(request.profile),
            consent=_consent(request.consent_fields, "consent_fields"), channel=request.join_channel,
            referrer_member_id=request.referrer_member_id, follows_shop=request.facts.follows_shop,
            completed_trades=request.facts.completed_trades, spent_fen=request.facts.spent_fen)
        return self._run_sealed(request, "JoinMember", command, members.join_member, member_to_proto, pb.Member,
                                key_id=lambda m: m.key_id)

    def GetMember(self, request: pb.GetMemberRequest, context: grpc.ServicerContext) -> pb.Member:
        require_shop(request.shop_id)
        return member_to_proto(views.get_member(self.ctx, request.shop_id, member_id=request.member_id,
                                                buyer_id=request.buyer_id))

    def UpdateProfile(self, request: pb.UpdateProfileRequest, context: grpc.ServicerContext) -> pb.Member:
        require_request_id(request)
        command = commands.UpdateProfile(
            shop_id=request.shop_id, member_id=request.member_id,
            profile=_profile(request.profile, set(mask_paths(request.update_mask, domain.PROFILE_PATHS))),
            new_consent=_consent(request.consent_fields, "consent_fields"))
        return self._run_sealed(request, "UpdateProfile", command, members.update_profile, member_to_proto,
                                pb.Member, key_id=lambda m: m.key_id)

    def LeaveMember(self, request: pb.LeaveMemberRequest, context: grpc.ServicerContext) -> pb.LeaveMemberResponse:
        require_request_id(request)
        command = commands.LeaveMember(request.shop_id, request.member_id, request.reason)
        return self._run(request, "LeaveMember", command, members.leave_member,
                         lambda left_at: pb.LeaveMemberResponse(member_id=request.member_id,
                                                                leave_time=to_timestamp(left_at)),
                         pb.LeaveMemberResponse)

    def ListMembers(self, request: pb.ListMembersRequest, context: grpc.ServicerContext) -> pb.ListMembersResponse:
        require_shop(request.shop_id)
        limit = paging.page_size(request.page_size)
        after = paging.decode_token("members", request.shop_id, request.page_token)
        page = views.list_members(
            self.ctx, request.shop_id, limit=limit + 1, after=after[0] if after else None,
            tier_level=request.tier_level if request.HasField("tier_level") else None, status=request.status)
        token = paging.next_page_token("members", request.shop_id, page, limit, lambda m: [m.member_id])
        return pb.ListMembersResponse(members=[member_to_proto(m) for m in page[:limit]], next_page_token=token)

    def ImportMembers(self, request: pb.ImportMembersRequest,
                      context: grpc.ServicerContext) -> pb.ImportMembersResponse:
        require_request_id(request)
        rows = tuple(
            commands.ImportRow(
                buyer_id=m.buyer_id, profile=_profile(m.profile),
                consent=_consent(m.consent_fields, f"members[{i}].consent_fields"),
                join_time=from_timestamp(m.join_time, field=f"members[{i}].join_time"),
                cumulative_spend_fen=m.cumulative_spend_fen, trade_count=m.trade_count,
                tier_level=m.tier_level if m.HasField("tier_level") else None)
            for i, m in enumerate(request.members))
        command = commands.ImportMembers(request.shop_id, rows, request.validate_only)
        return self._run(request, "ImportMembers", command, members.import_members,
                         lambda ids: pb.ImportMembersResponse(imported_count=len(ids), member_ids=ids),
                         pb.ImportMembersResponse)

    def ExportMembers(self, request: pb.ExportMembersRequest, context: grpc.ServicerContext) -> Iterator[pb.Member]:
        require_shop(request.shop_id)
        for member in views.export_members(self.ctx, request.shop_id, request.include_left):
            yield member_to_proto(member)

    def ExportOrders(self, request: pb.ExportOrdersRequest, context: grpc.ServicerContext) -> Iterator[pb.Order]:
        require_shop(request.shop_id)
        for order in views.export_orders(self.ctx, request.shop_id):
            yield order_to_proto(order)

    # ----- orders -----

    def RecordOrder(self, request: pb.RecordOrderRequest, context: grpc.ServicerContext) -> pb.Order:
        command = commands.RecordOrder(request.shop_id, request.order_id, request.buyer_id, request.amount_fen,
                                       from_timestamp(request.paid_time, utcnow(), field="paid_time"),
                                       order_details.OrderDetails(
                                           tuple(order_details.OrderLine(x.sku_id, x.category_id, x.quantity,
                                                                         x.amount_fen) for x in request.lines),
                                           request.coupon_applied, request.campaign_applied))
        return self._run_sealed(request, "RecordOrder", command, orders.record_order, order_to_proto, pb.Order,
                                key_id=lambda o: o.key_id)

    def CompleteOrder(self, request: pb.CompleteOrderRequest,
                      context: grpc.ServicerContext) -> pb.CompleteOrderResponse:
        command = commands.CompleteOrder(request.shop_id, request.order_id,
                                         from_timestamp(request.complete_time, utcnow(), field="complete_time"))
        return self._run_sealed(request, "CompleteOrder", command, orders.complete_order,
                                lambda o: _outcome(o, pb.CompleteOrderResponse), pb.CompleteOrderResponse,
                                key_id=lambda o: o.order.key_id)

    def RefundOrder(self, request: pb.RefundOrderRequest, context: grpc.ServicerContext) -> pb.RefundOrderResponse:
        command = commands.RefundOrder(request.shop_id, request.order_id, request.refund_id, request.amount_fen,
                                       from_timestamp(request.refund_time, utcnow(), field="refund_time"))
        return self._run_sealed(request, "RefundOrder", command, orders.refund_order,
                                lambda o: _outcome(o, pb.RefundOrderResponse), pb.RefundOrderResponse,
                                key_id=lambda o: o.order.key_id)

    # ----- tiers -----

    def GetTier(self, request: pb.GetTierRequest, context: grpc.ServicerContext) -> pb.GetTierResponse:
        require_shop(request.shop_id)
        view = tiers.get_tier(self.ctx, request.shop_id, member_id=request.member_id, buyer_id=request.buyer_id)
        return pb.GetTierResponse(member_id=view.member_id, tier=tier_to_proto(view.tier),
                                  tier_since=to_timestamp(view.since))

    def GetTierProgress(self, request: pb.GetTierProgressRequest,
                        context: grpc.ServicerContext) -> pb.GetTierProgressResponse:
        require_shop(request.shop_id)
        seen = views.tier_progress(self.ctx, request.shop_id, request.member_id)
        progress = seen.progress
        mode = seen.program.ladder.mode
        response = pb.GetTierProgressResponse(
            current=tier_to_proto(domain.shown(progress.current, mode)), qualification_mode=int(mode),
            cumulative_spend_fen=seen.member.cumulative_spend_fen, trade_count=seen.member.trade_count,
            spend_missing_fen=progress.spend_missing_fen, trades_missing=progress.trades_missing,
            progress_permille=progress.progress_permille, growth_value=seen.growth_value,
            growth_missing=progress.growth_missing, tier_expire_time=to_timestamp(seen.member.tier_expires_at))
        if progress.next is not None:
            response.next.CopyFrom(tier_to_proto(domain.shown(progress.next, mode)))
        return response

    def SetTier(self, request: pb.SetTierRequest, context: grpc.ServicerContext) -> pb.SetTierResponse:
        require_request_id(request)
        command = commands.SetTier(request.shop_id, request.member_id, request.tier_level, request.reason,
                                   request.operator)
        return self._run(request, "SetTier", command, tiers.set_tier,
                         lambda done: pb.SetTierResponse(member_id=done.member_id, from_level=done.from_level,
                                                         tier=tier_to_proto(done.tier)),
                         pb.SetTierResponse)

    def ListTierHistory(self, request: pb.ListTierHistoryRequest,
                        context: grpc.ServicerContext) -> pb.ListTierHistoryResponse:
        require_shop(request.shop_id)
        limit = paging.page_size(request.page_size)
        before = paging.decode_token("tier_history", request.shop_id, request.page_token, int)
        changes = tiers.tier_history(self.ctx, request.shop_id, member_id=request.member_id, limit=limit + 1,
                                     before_id=before[0] if before else None)
        token = paging.next_page_token("tier_history", request.shop_id, changes, limit, lambda c: [c.id])
        return pb.ListTierHistoryResponse(next_page_token=token, changes=[
            pb.TierChange(from_level=c.from_level, to_level=c.to_level, reason=c.reason, note=c.note,
                          operator=c.operator, order_id=c.order_id, change_time=to_timestamp(c.changed_at))
            for c in changes[:limit]])

    def ConfigureTiers(self, request: pb.ConfigureTiersRequest, context: grpc.ServicerContext) -> pb.Program:
        require_request_id(request)
        command = commands.ConfigureTiers(request.shop_id, tuple(tier_from_proto(t) for t in request.tiers),
                                          _mode(request.qualification_mode), _policy(request.downgrade_policy))
        return self._run(request, "ConfigureTiers", command, programs.configure_tiers, program_to_proto, pb.Program)

    def ReevaluateTiers(self, request: pb.ReevaluateTiersRequest,
                        context: grpc.ServicerContext) -> pb.ReevaluateTiersResponse:
        require_request_id(request)
        command = commands.ReevaluateTiers(request.shop_id, request.dry_run)
        return self._run(request, "ReevaluateTiers", command, tiers.reevaluate_tiers,
                         lambda r: pb.ReevaluateTiersResponse(upgraded=r.upgraded, downgraded=r.downgraded,
                                                              unchanged=r.unchanged, dry_run=request.dry_run),
                         pb.ReevaluateTiersResponse)

