"""The gRPC servicer of the points service: requests to commands (which check their fields),
handlers run in the kit's idempotent unit of work, results to responses. No SQL here."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from loyalty.points.v1 import points_service_pb2 as pb
from loyalty.points.v1 import points_service_pb2_grpc as pb_grpc

from services.kit import paging
from services.kit.auth import current_principal
from services.kit.errors import InvalidArgument, PermissionDenied, enum_value
from services.kit.idempotency import idempotent_call, require_request_id
from services.kit.storage import UnitOfWork
from services.kit.timeutil import from_timestamp, to_timestamp, utcnow
from services.kit.validation import mask_paths
from services.points import (
    commands,
    domain,
    earning,
    expiry,
    jobs,
    ledger,
    pool,
    program,
    reasons,
    reports,
    spending,
    views,
)
from services.points.domain import (
    Action,
    BirthdayWindow,
    Caps,
    EarnRule,
    EntryKind,
    ExpiryPolicy,
    Granularity,
    LeavePolicy,
    Multiplier,
    MultiplierKind,
    Program,
    Source,
)
from services.points.service import PointsService

R = TypeVar("R", bound=Message)
# A full update (an empty mask, or "*") names every setting; "caps" stands for its three fields.
FULL_RULE = tuple(path for path in domain.RULE_PATHS if path not in domain.CAPS_PATHS)


# ----- results to responses ---------------------------------------------------------------------------


def balance_to_proto(view: views.BalanceView) -> pb.Balance:
    return pb.Balance(shop_id=view.shop_id, member_id=view.member_id, available=view.available, held=view.held,
                      lifetime_earned=view.lifetime_earned, next_expiry_time=to_timestamp(view.next_expiry_at),
                      next_expiry_amount=view.next_expiry_amount)


def entry_to_proto(e: views.Entry) -> pb.LedgerEntry:
    s = e.source
    return pb.LedgerEntry(
        entry_id=e.entry_id, kind=e.kind, amount=e.amount, held_delta=e.held_delta, balance_after=e.balance_after,
        create_time=to_timestamp(e.created_at), expire_time=to_timestamp(e.expires_at),
        source=pb.Source(order_id=s.order_id, action=s.action, rule_id=s.rule_id, multiplier_id=s.multiplier_id,
                         redemption_id=s.redemption_id, hold_id=s.hold_id, operator=s.operator, reason=s.reason,
                         reference=s.reference))


def posted_to_proto(response_type: type[R]) -> Callable[[ledger.Posted], R]:
    """A write's entry and balance as its response (EarnResponse, SpendResponse, …)."""
    return lambda p: response_type(entry=entry_to_proto(p.entry), balance=balance_to_proto(p.balance))


def program_to_proto(p: Program) -> pb.PointsProgram:
    return pb.PointsProgram(shop_id=p.shop_id, time_zone=p.time_zone, expiry_policy=int(p.expiry_policy),
                            expiry_months=p.expiry_months, points_per_yuan=p.points_per_yuan,
                            leave_policy=int(p.leave_policy), daily_pool_points=p.daily_pool_points,
                            default_hold_ttl_seconds=p.default_hold_ttl_seconds)


def rule_to_proto(rule: EarnRule) -> pb.EarnRule:
    return pb.EarnRule(rule_id=rule.rule_id, action=int(rule.action), enabled=rule.enabled, points=rule.points,
                       caps=pb.Caps(per_day=rule.caps.per_day, per_month=rule.caps.per_month,
                                    lifetime=rule.caps.lifetime),
                       streak_days=rule.streak_days, streak_bonus=rule.streak_bonus,
                       min_order_fen=rule.min_order_fen, multipliers_apply=rule.multipliers_apply)


def multiplier_to_proto(m: Multiplier) -> pb.Multiplier:
    return pb.Multiplier(multiplier_id=m.multiplier_id, name=m.name, kind=int(m.kind),
                         multiplier_milli=m.multiplier_milli, day_of_month=m.day_of_month, weekday=m.weekday,
                         birthday_window=int(m.birthday_window), start_time=to_timestamp(m.start_at),
                         end_time=to_timestamp(m.end_at), actions=sorted(int(a) for a in m.actions))


# ----- requests to commands ----------------------------------------------------------------------------


def _source(s: pb.Source) -> Source:
    return Source(order_id=s.order_id, action=s.action, rule_id=s.rule_id, multiplier_id=s.multiplier_id,
                  redemption_id=s.redemption_id, operator=s.operator, reason=s.reason, reference=s.reference)


def _program_changes(request: pb.UpdatePointsProgramRequest) -> dict[str, object]:
    p = request.program
    read = {
        "expiry_policy": lambda: enum_value(ExpiryPolicy, p.expiry_policy, "program.expiry_policy"),
        "expiry_months": lambda: p.expiry_months,
        "points_per_yuan": lambda: p.points_per_yuan,
        "leave_policy": lambda: enum_value(LeavePolicy, p.leave_policy, "program.leave_policy"),
        "daily_pool_points": lambda: p.daily_pool_points,
        "default_hold_ttl_seconds": lambda: p.default_hold_ttl_seconds,
    }
    return {path: read[path]() for path in mask_paths(request.update_mask, domain.PROGRAM_PATHS, empty_is_full=True)}


def _rule_changes(request: pb.UpsertEarnRuleRequest) -> dict[str, object]:
    r = request.rule
    read = {
        "enabled": lambda: r.enabled,
        "points": lambda: r.points,
        "caps": lambda: Caps(r.caps.per_day, r.caps.per_month, r.caps.lifetime),
        "caps.per_day": lambda: r.caps.per_day,
        "caps.per_month": lambda: r.caps.per_month,
        "caps.lifetime": lambda: r.caps.lifetime,
        "streak_days": lambda: r.streak_days,
        "streak_bonus": lambda: r.streak_bonus,
        "min_order_fen": lambda: r.min_order_fen,
        "multipliers_apply": lambda: r.multipliers_apply,
    }
    paths = mask_paths(request.update_mask, domain.RULE_PATHS, full=FULL_RULE, empty_is_full=True)
    return {path: read[path]() for path in paths}


def _multiplier(m: pb.Multiplier) -> Multiplier:
    return Multiplier(
        "", m.name, enum_value(MultiplierKind, m.kind, "multiplier.kind"), m.multiplier_milli, m.day_of_month,
        m.weekday, enum_value(BirthdayWindow, m.birthday_window, "multiplier.birthday_window", BirthdayWindow.MONTH),
        from_timestamp(m.start_time, field="multiplier.start_time"),
        from_timestamp(m.end_time, field="multiplier.end_time"),
        frozenset(enum_value(Action, a, "multiplier.actions") for a in m.actions))


def _page(kind: str, shop_id: str, items: list, page_size: int, page_token: str) -> tuple[list, str]:
    """One page of a short list held in full (a shop's rules or multipliers)."""
    limit = paging.page_size(page_size)
    after = paging.decode_token(kind, shop_id, page_token, int)
    start = after[0] if after else 0
    end = start + limit
    return items[start:end], paging.encode_token(kind, shop_id, [end]) if end < len(items) else ""


def _is_admin() -> bool:
    principal = current_principal()
    return principal is not None and principal.is_admin


class PointsApi(pb_grpc.PointsServiceServicer):
    def __init__(self, service: PointsService):
        self.svc = service
        self.db = service.db

    def _run(self, request: Message, method: str, response_type: type[R], work: Callable[[UnitOfWork], R]) -> R:
        """A mutation: its handler in the kit's unit of work, with the idempotency record and the outbox."""
        require_request_id(request)
        return idempotent_call(self.db, request, method, response_type, work)

    # ----- balances and the ledger -----

    def GetBalance(self, request: pb.GetBalanceRequest, context: grpc.ServicerContext) -> pb.Balance:
        return balance_to_proto(views.balance(self.svc, commands.MemberQuery(request.shop_id, request.member_id)))

    def ListLedger(self, request: pb.ListLedgerRequest, context: grpc.ServicerContext) -> pb.ListLedgerResponse:
        limit = paging.page_size(request.page_size)
        before = paging.decode_token("ledger", request.shop_id, request.page_token, int)
        query = commands.LedgerQuery(
            request.shop_id, request.member_id, limit + 1, before[0] if before else None,
            tuple(int(enum_value(EntryKind, k, "kinds")) for k in request.kinds),
            from_timestamp(request.start_time, field="start_time"), from_timestamp(request.end_time, field="end_time"))
        found = views.ledger_page(self.svc, query)
        token = paging.next_page_token("ledger", request.shop_id, found, limit, lambda e: [e.entry_id])
        return pb.ListLedgerResponse(entries=[entry_to_proto(e) for e in found[:limit]], next_page_token=token)

    # ----- earning -----

    def RecordAction(self, request: pb.RecordActionRequest,
                     context: grpc.ServicerContext) -> pb.RecordActionResponse:
        cmd = commands.RecordAction(request.shop_id, request.member_id, enum_value(Action, request.action, "action"),
                                    request.subject, from_timestamp(request.occur_time, utcnow(), field="occur_time"))

        def work(uow: UnitOfWork) -> pb.RecordActionResponse:
            done = earning.record_action(self.svc, uow, cmd)
            return pb.RecordActionResponse(points=done.points, not_earned_reason=done.not_earned_reason,
                                           multiplier_milli=done.multiplier_milli, streak_days=done.streak_days,
                                           balance=balance_to_proto(done.balance))

        return self._run(request, "RecordAction", pb.RecordActionResponse, work)

    def Earn(self, request: pb.EarnRequest, context: grpc.ServicerContext) -> pb.EarnResponse:
        cmd = commands.Earn(request.shop_id, request.member_id, request.points, _source(request.source))
        return self._run(request, "Earn", pb.EarnResponse,
                         lambda uow: posted_to_proto(pb.EarnResponse)(earning.earn(self.svc, uow, cmd)))

    # ----- spending -----

    def Spend(self, request: pb.SpendRequest, context: grpc.ServicerContext) -> pb.SpendResponse:
        cmd = commands.Spend(request.shop_id, request.member_id, request.points, _source(request.source))
        return self._run(request, "Spend", pb.SpendResponse,
                         lambda uow: posted_to_proto(pb.SpendResponse)(spending.spend(self.svc, uow, cmd)))

    def Hold(self, request: pb.HoldRequest, context: grpc.ServicerContext) -> pb.HoldResponse:
        cmd = commands.Hold(request.shop_id, request.member_id, request.points, request.ttl_seconds,
                            _source(request.source))

        def work(uow: UnitOfWork) -> pb.HoldResponse:
            held = spending.hold(self.svc, uow, cmd)
            return pb.HoldResponse(hold_id=held.hold_id, expire_time=to_timestamp(held.expires_at),
                                   balance=balance_to_proto(held.balance))

        return self._run(request, "Hold", pb.HoldResponse, work)

    def CaptureHold(self, request: pb.CaptureHoldRequest, context: grpc.ServicerContext) -> pb.CaptureHoldResponse:
        cmd = commands.CaptureHold(request.shop_id, request.hold_id)
        return self._run(request, "CaptureHold", pb.CaptureHoldResponse, lambda uow: posted_to_proto(
            pb.CaptureHoldResponse)(spending.capture_hold(self.svc, uow, cmd)))

    def ReleaseHold(self, request: pb.ReleaseHoldRequest, context: grpc.ServicerContext) -> pb.ReleaseHoldResponse:
        cmd = commands.ReleaseHold(request.shop_id, request.hold_id)
        return self._run(request, "ReleaseHold", pb.ReleaseHoldResponse, lambda uow: posted_to_proto(
            pb.ReleaseHoldResponse)(spending.release_hold(self.svc, uow, cmd)))

    def Adjust(self, request: pb.AdjustRequest, context: grpc.ServicerContext) -> pb.AdjustResponse:
        cmd = commands.Adjust(request.shop_id, request.member_id, request.points, request.operator, request.reason)
        return self._run(request, "Adjust", pb.AdjustResponse,
                         lambda uow: posted_to_proto(pb.AdjustResponse)(ledger.adjust(self.svc, uow, cmd)))

    # ----- lifecycle and reports -----

    def ExpirePoints(self, request: pb.ExpirePointsRequest,
                     context: grpc.ServicerContext) -> pb.ExpirePointsResponse:
        as_of = from_timestamp(request.as_of, utcnow(), field="as_of")
        if not request.shop_id:
            if not _is_admin():
                raise InvalidArgument([("shop_id", "required (only the admin key expires every shop at once)")])
            require_request_id(request)
            # One transaction per shop, so no single record: a retry finds nothing more to expire.
            members, lot_count, points = jobs.expire_all(self.svc, as_of)
            return pb.ExpirePointsResponse(members=members, lots=lot_count, points=points)
        if as_of > utcnow() and not _is_admin():
            # Expiring ahead of time takes points members still own: an operator's decision.
            raise PermissionDenied("a shop key expires only what is due now (leave as_of unset); an as_of still "
                                   "to come needs the admin key", reason=reasons.EXPIRY_AHEAD_ADMIN_ONLY,
                                   metadata={"as_of": to_timestamp(as_of).ToJsonString()})
        cmd = commands.ExpireShop(request.shop_id, as_of)

        def work(uow: UnitOfWork) -> pb.ExpirePointsResponse:
            done = expiry.expire_shop(self.svc, uow, cmd)
            return pb.ExpirePointsResponse(members=done.members, lots=done.lots, points=done.points)

        return self._run(request, "ExpirePoints", pb.ExpirePointsResponse, work)

    def ListExpiringPoints(self, request: pb.ListExpiringPointsRequest,
                           context: grpc.ServicerContext) -> pb.ListExpiringPointsResponse:
        limit = paging.page_size(request.page_size)
        after = paging.decode_token("expiring", request.shop_id, request.page_token)
        query = commands.ExpiringQuery(request.shop_id, request.within_days, limit + 1, after[0] if after else None)
        found = reports.expiring(self.svc, query)
        token = paging.next_page_token("expiring", request.shop_id, found, limit, lambda m: [m.member_id])
        return pb.ListExpiringPointsResponse(next_page_token=token, members=[
            pb.ExpiringPoints(member_id=m.member_id, points=m.points,
                              first_expire_time=to_timestamp(m.first_expires_at)) for m in found[:limit]])

    def GetLiabilityReport(self, request: pb.GetLiabilityReportRequest,
                           context: grpc.ServicerContext) -> pb.LiabilityReport:
        query = commands.LiabilityQuery(request.shop_id, request.granularity == Granularity.MONTH,
                                        from_timestamp(request.start_time, field="start_time"),
                                        from_timestamp(request.end_time, field="end_time"))
        report = reports.liability(self.svc, query)
        return pb.LiabilityReport(
            shop_id=report.shop_id, outstanding_points=report.outstanding, outstanding_value_fen=report.value_fen,
            members_with_points=report.members,
            periods=[pb.LiabilityPeriod(period=p.period, earned=p.earned, spent=p.spent, expired=p.expired,
                                        adjusted=p.adjusted) for p in report.periods],
            expiry_schedule=[pb.LiabilityPeriod(period=label, expired=amount) for label, amount in report.schedule])

    # ----- program, rules, multipliers -----

    def GetPointsProgram(self, request: pb.GetPointsProgramRequest,
                         context: grpc.ServicerContext) -> pb.PointsProgram:
        query = commands.ShopQuery(request.shop_id)
        return program_to_proto(program.load_program(self.svc, query.shop_id))

    def UpdatePointsProgram(self, request: pb.UpdatePointsProgramRequest,
                            context: grpc.ServicerContext) -> pb.PointsProgram:
        cmd = commands.UpdateProgram(request.shop_id, _program_changes(request))
        return self._run(request, "UpdatePointsProgram", pb.PointsProgram,
                         lambda uow: program_to_proto(program.update_program(self.svc, uow, cmd)))

    def ListEarnRules(self, request: pb.ListEarnRulesRequest,
                      context: grpc.ServicerContext) -> pb.ListEarnRulesResponse:
        query = commands.ShopQuery(request.shop_id)
        found = program.list_rules(self.svc, query)
        page, token = _page("earn_rules", request.shop_id, [rule_to_proto(r) for r in found], request.page_size,
                            request.page_token)
        return pb.ListEarnRulesResponse(rules=page, next_page_token=token)

    def UpsertEarnRule(self, request: pb.UpsertEarnRuleRequest, context: grpc.ServicerContext) -> pb.EarnRule:
        cmd = commands.UpsertRule(request.shop_id, enum_value(Action, request.rule.action, "rule.action"),
                                  _rule_changes(request))
        return self._run(request, "UpsertEarnRule", pb.EarnRule,
                         lambda uow: rule_to_proto(program.upsert_rule(self.svc, uow, cmd)))

    def ListMultipliers(self, request: pb.ListMultipliersRequest,
                        context: grpc.ServicerContext) -> pb.ListMultipliersResponse:
        query = commands.ShopQuery(request.shop_id)
        found = program.list_multipliers(self.svc, query)
        page, token = _page("multipliers", request.shop_id, [multiplier_to_proto(m) for m in found], request.page_size,
                            request.page_token)
        return pb.ListMultipliersResponse(multipliers=page, next_page_token=token)

    def CreateMultiplier(self, request: pb.CreateMultiplierRequest, context: grpc.ServicerContext) -> pb.Multiplier:
        cmd = commands.CreateMultiplier(request.shop_id, _multiplier(request.multiplier))
        return self._run(request, "CreateMultiplier", pb.Multiplier,
                         lambda uow: multiplier_to_proto(program.create_multiplier(self.svc, uow, cmd)))

    def DeleteMultiplier(self, request: pb.DeleteMultiplierRequest,
                         context: grpc.ServicerContext) -> pb.DeleteMultiplierResponse:
        cmd = commands.DeleteMultiplier(request.shop_id, request.multiplier_id)

        def work(uow: UnitOfWork) -> pb.DeleteMultiplierResponse:
            program.delete_multiplier(self.svc, uow, cmd)
            return pb.DeleteMultiplierResponse()

        return self._run(request, "DeleteMultiplier", pb.DeleteMultiplierResponse, work)

    # ----- the daily pool -----

    def JoinDailyPool(self, request: pb.JoinDailyPoolRequest,
                      context: grpc.ServicerContext) -> pb.JoinDailyPoolResponse:
        cmd = commands.JoinPool(request.shop_id, request.member_id)

        def work(uow: UnitOfWork) -> pb.JoinDailyPoolResponse:
            joined = pool.join_pool(self.svc, uow, cmd)
            return pb.JoinDailyPoolResponse(day=joined.day, participants=joined.participants)

        return self._run(request, "JoinDailyPool", pb.JoinDailyPoolResponse, work)

    def SettleDailyPool(self, request: pb.SettleDailyPoolRequest,
                        context: grpc.ServicerContext) -> pb.SettleDailyPoolResponse:
        cmd = commands.SettlePool(request.shop_id, request.day)

        def work(uow: UnitOfWork) -> pb.SettleDailyPoolResponse:
            done = pool.settle_pool(self.svc, uow, cmd)
            return pb.SettleDailyPoolResponse(day=done.day, participants=done.participants,
                                              points_each=done.points_each, already_settled=done.already_settled)

        return self._run(request, "SettleDailyPool", pb.SettleDailyPoolResponse, work)
