"""The gRPC servicer: requests to commands, results to responses. Nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

from google.protobuf.message import Message
from google.type import date_pb2
from loyalty.membership.v1 import membership_service_pb2 as pb
from loyalty.membership.v1 import membership_service_pb2_grpc as pb_grpc
from sqlalchemy.engine import Row

from services.kit import paging
from services.kit.errors import InvalidArgument, enum_value
from services.kit.idempotency import idempotent_call, require_request_id
from services.kit.storage import UnitOfWork
from services.kit.timeutil import from_timestamp, to_timestamp, utcnow
from services.kit.validation import require_shop
from services.membership import domain
from services.membership.domain import DowngradePolicy, ProfileField, ProfileInput, QualificationMode, Tier
from services.membership.service import ImportRow, MembershipService, OrderOutcome, Program

R = TypeVar("R", bound=Message)


def tier_to_proto(tier: Tier) -> pb.Tier:
    return pb.Tier(level=tier.level, code=tier.code, name=tier.name, min_spend_fen=tier.min_spend_fen,
                   min_trades=tier.min_trades, discount_bp=tier.discount_bp,
                   points_rate_milli=tier.points_rate_milli, benefits=list(tier.benefits))


def tier_from_proto(t: pb.Tier) -> Tier:
    return Tier(t.level, t.code, t.name, t.min_spend_fen, t.min_trades, t.discount_bp, t.points_rate_milli,
                tuple(t.benefits))


def program_to_proto(p: Program) -> pb.Program:
    return pb.Program(
        shop_id=p.shop_id, name=p.name, time_zone=p.time_zone,
        join_threshold=pb.JoinThreshold(require_follow=p.require_follow),
        tiers=[tier_to_proto(t) for t in p.ladder.tiers], qualification_mode=int(p.ladder.mode),
        downgrade_policy=int(p.ladder.policy), create_time=to_timestamp(p.created_at),
        update_time=to_timestamp(p.updated_at))


def order_to_proto(row: Row) -> pb.Order:
    return pb.Order(shop_id=row.shop_id, order_id=row.order_id, buyer_id=row.buyer_id or "",
                    member_id=row.member_id or "", amount_fen=row.amount_fen, refunded_fen=row.refunded_fen,
                    status=row.status, paid_time=to_timestamp(row.paid_at),
                    complete_time=to_timestamp(row.completed_at), counted=row.counted)


def _mode(value: int) -> QualificationMode:
    return enum_value(QualificationMode, value, "qualification_mode", QualificationMode.CUMULATIVE_SPEND)


def _policy(value: int) -> DowngradePolicy:
    return enum_value(DowngradePolicy, value, "downgrade_policy", DowngradePolicy.NEVER)


def _consent(values, field_name: str) -> set[ProfileField]:  # noqa: ANN001
    fields = set()
    for value in values:
        try:
            fields.add(ProfileField(value))
        except ValueError as exc:
            raise InvalidArgument([(field_name, f"unknown profile field {value}")]) from exc
    return fields


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


def _member_id(member: pb.Member) -> str:
    return member.member_id


class MembershipApi(pb_grpc.MembershipServiceServicer):
    def __init__(self, service: MembershipService):
        self.svc = service
        self.db = service.db

    def member_to_proto(self, row: Row, program: Program) -> pb.Member:
        tier = program.ladder.tier(row.tier_level)
        birthday = None
        if row.birth_month:
            birthday = date_pb2.Date(year=row.birth_year or 0, month=row.birth_month, day=row.birth_day)
        consent = sorted(int(x) for x in row.consent_fields.split(",") if x)
        return pb.Member(
            shop_id=row.shop_id, member_id=row.member_id, buyer_id=row.buyer_id or "", status=row.status,
            profile=pb.Profile(name=row.name or "", gender=row.gender, phone_masked=self.svc.phone_masked(row),
                               birthday=birthday, region=row.region or ""),
            consent=pb.Consent(fields=consent, consent_time=to_timestamp(row.consent_at),
                               channel=row.join_channel, revoke_time=to_timestamp(row.consent_revoked_at)),
            join_channel=row.join_channel, referrer_member_id=row.referrer_member_id or "",
            join_time=to_timestamp(row.joined_at), leave_time=to_timestamp(row.left_at),
            tier_level=tier.level, tier_code=tier.code, tier_name=tier.name,
            tier_since=to_timestamp(row.tier_since), cumulative_spend_fen=row.cumulative_spend_fen,
            trade_count=row.trade_count)

    # ----- programs -----

    def CreateProgram(self, request: pb.CreateProgramRequest, context) -> pb.CreateProgramResponse:  # noqa: ANN001, N802
        require_request_id(request)

        def work(uow: UnitOfWork) -> pb.CreateProgramResponse:
            program, key = self.svc.create_program(
                uow, shop_id=request.shop_id, name=request.name,
                time_zone=request.time_zone or domain.DEFAULT_TIME_ZONE,
                require_follow=request.join_threshold.require_follow,
                tiers=[tier_from_proto(t) for t in request.tiers], mode=_mode(request.qualification_mode),
                policy=_policy(request.downgrade_policy))
            return pb.CreateProgramResponse(program=program_to_proto(program), api_key=key)

        return idempotent_call(self.db, request, "CreateProgram", pb.CreateProgramResponse, work)

    def GetProgram(self, request: pb.GetProgramRequest, context) -> pb.Program:  # noqa: ANN001, N802
        require_shop(request.shop_id)
        return program_to_proto(self.svc.program(request.shop_id))

    def UpdateProgram(self, request: pb.UpdateProgramRequest, context) -> pb.Program:  # noqa: ANN001, N802
        require_request_id(request)
        paths = set(request.update_mask.paths)
        unknown = paths - {"name", "time_zone", "join_threshold"}
        if not paths or unknown:
            raise InvalidArgument([("update_mask", "name paths among name, time_zone, join_threshold")])

        def work(uow: UnitOfWork) -> pb.Program:
            return program_to_proto(self.svc.update_program(
                uow, shop_id=request.shop_id, name=request.name if "name" in paths else None,
                time_zone=request.time_zone if "time_zone" in paths else None,
                require_follow=request.join_threshold.require_follow if "join_threshold" in paths else None))

        return idempotent_call(self.db, request, "UpdateProgram", pb.Program, work)

    def IssueApiKey(self, request: pb.IssueApiKeyRequest, context) -> pb.IssueApiKeyResponse:  # noqa: ANN001, N802
        require_request_id(request)

        def work(uow: UnitOfWork) -> pb.IssueApiKeyResponse:
            key_id, key = self.svc.issue_api_key(uow, shop_id=request.shop_id, label=request.label)
            return pb.IssueApiKeyResponse(key_id=key_id, api_key=key)

        return idempotent_call(self.db, request, "IssueApiKey", pb.IssueApiKeyResponse, work)

    # ----- members -----

    def JoinMember(self, request: pb.JoinMemberRequest, context) -> pb.Member:  # noqa: ANN001, N802
        require_request_id(request)
        profile = _profile(request.profile)
        consent = _consent(request.consent_fields, "consent_fields")

        def work(uow: UnitOfWork) -> pb.Member:
            row = self.svc.join_member(
                uow, shop_id=request.shop_id, buyer_id=request.buyer_id, profile=profile, consent=consent,
                channel=request.join_channel, referrer_member_id=request.referrer_member_id,
                follows_shop=request.facts.follows_shop)
            return self.member_to_proto(row, self.svc.program(request.shop_id, uow.conn))

        return idempotent_call(self.db, request, "JoinMember", pb.Member, work, subject=_member_id)

    def GetMember(self, request: pb.GetMemberRequest, context) -> pb.Member:  # noqa: ANN001, N802
        require_shop(request.shop_id)
        return self.db.read(lambda conn: self.member_to_proto(
            self.svc.get_member(conn, request.shop_id, member_id=request.member_id, buyer_id=request.buyer_id),
            self.svc.program(request.shop_id, conn)))

    def UpdateProfile(self, request: pb.UpdateProfileRequest, context) -> pb.Member:  # noqa: ANN001, N802
        require_request_id(request)
        profile = _profile(request.profile, set(request.update_mask.paths))
        consent = _consent(request.consent_fields, "consent_fields")

        def work(uow: UnitOfWork) -> pb.Member:
            row = self.svc.update_profile(uow, shop_id=request.shop_id, member_id=request.member_id,
                                          profile=profile, new_consent=consent)
            return self.member_to_proto(row, self.svc.program(request.shop_id, uow.conn))

        return idempotent_call(self.db, request, "UpdateProfile", pb.Member, work, subject=_member_id)

    def LeaveMember(self, request: pb.LeaveMemberRequest, context) -> pb.LeaveMemberResponse:  # noqa: ANN001, N802
        require_request_id(request)

        def work(uow: UnitOfWork) -> pb.LeaveMemberResponse:
            left = self.svc.leave_member(uow, shop_id=request.shop_id, member_id=request.member_id,
                                         reason=request.reason)
            return pb.LeaveMemberResponse(member_id=request.member_id, leave_time=to_timestamp(left))

        return idempotent_call(self.db, request, "LeaveMember", pb.LeaveMemberResponse, work)

    def ListMembers(self, request: pb.ListMembersRequest, context) -> pb.ListMembersResponse:  # noqa: ANN001, N802
        require_shop(request.shop_id)
        limit = paging.page_size(request.page_size)
        after = paging.decode_token("members", request.page_token)

        def read(conn) -> pb.ListMembersResponse:  # noqa: ANN001
            rows = self.svc.list_members(
                conn, shop_id=request.shop_id, limit=limit + 1, after=after[0] if after else None,
                tier_level=request.tier_level if request.HasField("tier_level") else None, status=request.status)
            program = self.svc.program(request.shop_id, conn)
            token = paging.encode_token("members", [rows[limit - 1].member_id]) if len(rows) > limit else ""
            return pb.ListMembersResponse(members=[self.member_to_proto(r, program) for r in rows[:limit]],
                                          next_page_token=token)

        return self.db.read(read)

    def ImportMembers(self, request: pb.ImportMembersRequest, context) -> pb.ImportMembersResponse:  # noqa: ANN001, N802
        require_request_id(request)
        rows = []
        for i, m in enumerate(request.members):
            rows.append(ImportRow(
                buyer_id=m.buyer_id, profile=_profile(m.profile),
                consent=_consent(m.consent_fields, f"members[{i}].consent_fields"),
                join_time=from_timestamp(m.join_time, field=f"members[{i}].join_time"),
                cumulative_spend_fen=m.cumulative_spend_fen, trade_count=m.trade_count,
                tier_level=m.tier_level if m.HasField("tier_level") else None))

        def work(uow: UnitOfWork) -> pb.ImportMembersResponse:
            ids = self.svc.import_members(uow, shop_id=request.shop_id, rows=rows,
                                          validate_only=request.validate_only)
            return pb.ImportMembersResponse(imported_count=len(ids), member_ids=ids)

        return idempotent_call(self.db, request, "ImportMembers", pb.ImportMembersResponse, work)

    def ExportMembers(self, request: pb.ExportMembersRequest, context) -> Iterator[pb.Member]:  # noqa: ANN001, N802
        require_shop(request.shop_id)
        program = self.svc.program(request.shop_id)
        for row in self.svc.export_members(request.shop_id, request.include_left):
            yield self.member_to_proto(row, program)

    # ----- orders -----

    def _outcome(self, outcome: OrderOutcome, response_type: type[R]) -> R:
        response = response_type(order=order_to_proto(outcome.order), tier_changed=outcome.tier_changed)
        if outcome.tier is not None:
            response.tier.CopyFrom(tier_to_proto(outcome.tier))
        return response

    def RecordOrder(self, request: pb.RecordOrderRequest, context) -> pb.Order:  # noqa: ANN001, N802
        paid_at = from_timestamp(request.paid_time, utcnow(), field="paid_time")
        return idempotent_call(self.db, request, "RecordOrder", pb.Order, lambda uow: order_to_proto(
            self.svc.record_order(uow, shop_id=request.shop_id, order_id=request.order_id, buyer_id=request.buyer_id,
                                  amount_fen=request.amount_fen, paid_at=paid_at)))

    def CompleteOrder(self, request: pb.CompleteOrderRequest, context) -> pb.CompleteOrderResponse:  # noqa: ANN001, N802
        completed_at = from_timestamp(request.complete_time, utcnow(), field="complete_time")
        return idempotent_call(self.db, request, "CompleteOrder", pb.CompleteOrderResponse, lambda uow: self._outcome(
            self.svc.complete_order(uow, shop_id=request.shop_id, order_id=request.order_id,
                                    completed_at=completed_at), pb.CompleteOrderResponse))

    def RefundOrder(self, request: pb.RefundOrderRequest, context) -> pb.RefundOrderResponse:  # noqa: ANN001, N802
        refunded_at = from_timestamp(request.refund_time, utcnow(), field="refund_time")
        return idempotent_call(self.db, request, "RefundOrder", pb.RefundOrderResponse, lambda uow: self._outcome(
            self.svc.refund_order(uow, shop_id=request.shop_id, order_id=request.order_id,
                                  refund_id=request.refund_id, amount_fen=request.amount_fen,
                                  refunded_at=refunded_at), pb.RefundOrderResponse))

    # ----- tiers -----

    def GetTier(self, request: pb.GetTierRequest, context) -> pb.GetTierResponse:  # noqa: ANN001, N802
        require_shop(request.shop_id)
        view = self.svc.get_tier(request.shop_id, member_id=request.member_id, buyer_id=request.buyer_id)
        return pb.GetTierResponse(member_id=view.member_id, tier=tier_to_proto(view.tier),
                                  tier_since=to_timestamp(view.since))

    def GetTierProgress(self, request: pb.GetTierProgressRequest, context) -> pb.GetTierProgressResponse:  # noqa: ANN001, N802
        require_shop(request.shop_id)

        def read(conn) -> pb.GetTierProgressResponse:  # noqa: ANN001
            program, row, progress = self.svc.tier_progress(conn, shop_id=request.shop_id,
                                                            member_id=request.member_id)
            response = pb.GetTierProgressResponse(
                current=tier_to_proto(progress.current), qualification_mode=int(program.ladder.mode),
                cumulative_spend_fen=row.cumulative_spend_fen, trade_count=row.trade_count,
                spend_missing_fen=progress.spend_missing_fen, trades_missing=progress.trades_missing,
                progress_permille=progress.progress_permille)
            if progress.next is not None:
                response.next.CopyFrom(tier_to_proto(progress.next))
            return response

        return self.db.read(read)

    def SetTier(self, request: pb.SetTierRequest, context) -> pb.SetTierResponse:  # noqa: ANN001, N802
        require_request_id(request)

        def work(uow: UnitOfWork) -> pb.SetTierResponse:
            from_level, tier = self.svc.set_tier(uow, shop_id=request.shop_id, member_id=request.member_id,
                                                 level=request.tier_level, reason=request.reason,
                                                 operator=request.operator)
            return pb.SetTierResponse(member_id=request.member_id, from_level=from_level, tier=tier_to_proto(tier))

        return idempotent_call(self.db, request, "SetTier", pb.SetTierResponse, work)

    def ListTierHistory(self, request: pb.ListTierHistoryRequest, context) -> pb.ListTierHistoryResponse:  # noqa: ANN001, N802
        require_shop(request.shop_id)
        limit = paging.page_size(request.page_size)
        before = paging.decode_token("tier_history", request.page_token, int)

        def read(conn) -> pb.ListTierHistoryResponse:  # noqa: ANN001
            rows = self.svc.tier_history(conn, shop_id=request.shop_id, member_id=request.member_id,
                                         limit=limit + 1, before_id=before[0] if before else None)
            token = paging.encode_token("tier_history", [rows[limit - 1].id]) if len(rows) > limit else ""
            return pb.ListTierHistoryResponse(next_page_token=token, changes=[
                pb.TierChange(from_level=r.from_level, to_level=r.to_level, reason=r.reason, note=r.note,
                              operator=r.operator, order_id=r.order_id, change_time=to_timestamp(r.changed_at))
                for r in rows[:limit]])

        return self.db.read(read)

    def ConfigureTiers(self, request: pb.ConfigureTiersRequest, context) -> pb.Program:  # noqa: ANN001, N802
        require_request_id(request)
        return idempotent_call(self.db, request, "ConfigureTiers", pb.Program, lambda uow: program_to_proto(
            self.svc.configure_tiers(uow, shop_id=request.shop_id, tiers=[tier_from_proto(t) for t in request.tiers],
                                     mode=_mode(request.qualification_mode),
                                     policy=_policy(request.downgrade_policy))))

    def ReevaluateTiers(self, request: pb.ReevaluateTiersRequest, context) -> pb.ReevaluateTiersResponse:  # noqa: ANN001, N802
        require_request_id(request)

        def work(uow: UnitOfWork) -> pb.ReevaluateTiersResponse:
            up, down, same = self.svc.reevaluate_tiers(uow, shop_id=request.shop_id, dry_run=request.dry_run)
            return pb.ReevaluateTiersResponse(upgraded=up, downgraded=down, unchanged=same, dry_run=request.dry_run)

        return idempotent_call(self.db, request, "ReevaluateTiers", pb.ReevaluateTiersResponse, work)
