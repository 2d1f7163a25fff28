"""The gRPC servicer of the points service: requests to commands, results to responses."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import Message
from loyalty.points.v1 import points_service_pb2 as pb
from loyalty.points.v1 import points_service_pb2_grpc as pb_grpc
from sqlalchemy import Connection, select
from sqlalchemy.engine import Row

from services.kit import paging
from services.kit.auth import current_principal
from services.kit.errors import InvalidArgument, Violations, enum_value
from services.kit.idempotency import idempotent_call, require_request_id
from services.kit.storage import UnitOfWork
from services.kit.timeutil import from_timestamp, to_timestamp, utcnow
from services.kit.validation import require_id, require_shop
from services.points import domain, jobs
from services.points.domain import Action, Caps, EarnRule, ExpiryPolicy, LeavePolicy, Multiplier, MultiplierKind
from services.points.service import BalanceView, PointsService, Program, Source
from services.points.tables import ledger

R = TypeVar("R", bound=Message)


def balance_to_proto(view: BalanceView) -> pb.Balance:
    return pb.Balance(shop_id=view.shop_id, member_id=view.member_id, available=view.available, held=view.held,
                      lifetime_earned=view.lifetime_earned, next_expiry_time=to_timestamp(view.next_expiry_at),
                      next_expiry_amount=view.next_expiry_amount)


def entry_to_proto(row: Row) -> pb.LedgerEntry:
    return pb.LedgerEntry(
        entry_id=row.id, kind=row.kind, amount=row.amount, held_delta=row.held_delta,
        balance_after=row.balance_after, create_time=to_timestamp(row.created_at),
        expire_time=to_timestamp(row.expires_at),
        source=pb.Source(order_id=row.order_id, action=row.action, rule_id=row.rule_id,
                         multiplier_id=row.multiplier_id, redemption_id=row.redemption_id, hold_id=row.hold_id,
                         operator=row.operator, reason=row.reason, reference=row.reference))


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


def _source(s: pb.Source) -> Source:
    v = Violations()
    for name in ("order_id", "redemption_id", "reference"):
        v.check(len(getattr(s, name)) <= 64, f"source.{name}", "at most 64 characters")
    v.check(len(s.operator) <= 100, "source.operator", "at most 100 characters")
    v.check(len(s.reason) <= 500, "source.reason", "at most 500 characters")
    v.raise_if_any()
    return Source(order_id=s.order_id, action=s.action, rule_id=s.rule_id[:32], multiplier_id=s.multiplier_id[:64],
                  redemption_id=s.redemption_id, operator=s.operator, reason=s.reason, reference=s.reference)


def _page(kind: str, items: list, request: Message) -> tuple[list, str]:
    """One page of a short list held in full (a shop's rules or multipliers)."""
    limit = paging.page_size(request.page_size)  # type: ignore[attr-defined]
    after = paging.decode_token(kind, request.page_token, int)  # type: ignore[attr-defined]
    start = after[0] if after else 0
    end = start + limit
    return items[start:end], paging.encode_token(kind, [end]) if end < len(items) else ""


class PointsApi(pb_grpc.PointsServiceServicer):
    def __init__(self, service: PointsService):
        self.svc = service
        self.db = service.db

    def _idem(self, request: Message, method: str, response_type: type[R], work: Callable[[UnitOfWork], R]) -> R:
        require_request_id(request)
        return idempotent_call(self.db, request, method, response_type, work)

    def _entry(self, conn: Connection, entry_id: int) -> pb.LedgerEntry:
        return entry_to_proto(conn.execute(select(ledger).where(ledger.c.id == entry_id)).one())

    def _entry_and_balance(self, uow: UnitOfWork, shop_id: str, member_id: str, entry_id: int,
                           response_type: type[R]) -> R:
        entry = self._entry(uow.conn, entry_id)
        return response_type(entry=entry, balance=self._balance_in(uow.conn, shop_id, member_id))

    def _balance_in(self, conn: Connection, shop_id: str, member_id: str) -> pb.Balance:
        """The balance as this transaction sees it (the cache may not know it yet)."""
        return balance_to_proto(self.svc.read_balance(conn, shop_id, member_id, utcnow()))

    # ----- balances and the ledger -----

    def GetBalance(self, request: pb.GetBalanceRequest, context) -> pb.Balance:  # noqa: ANN001, N802
        require_shop(request.shop_id)
        require_id(request.member_id, "member_id")
        return balance_to_proto(self.svc.balance(request.shop_id, request.member_id))

    def ListLedger(self, request: pb.ListLedgerRequest, context) -> pb.ListLedgerResponse:  # noqa: ANN001, N802
        require_shop(request.shop_id)
        require_id(request.member_id, "member_id")
        limit = paging.page_size(request.page_size)
        before = paging.decode_token("ledger", request.page_token, int)
        kinds = [int(enum_value(domain.EntryKind, k, "kinds")) for k in request.kinds]

        def read(conn: Connection) -> pb.ListLedgerResponse:
            rows = self.svc.ledger_page(conn, shop_id=request.shop_id, member_id=request.member_id, limit=limit + 1,
                                        before_id=before[0] if before else None, kinds=kinds,
                                        start=from_timestamp(request.start_time, field="start_time"),
                                        end=from_timestamp(request.end_time, field="end_time"))
            token = paging.encode_token("ledger", [rows[limit - 1].id]) if len(rows) > limit else ""
            return pb.ListLedgerResponse(entries=[entry_to_proto(r) for r in rows[:limit]], next_page_token=token)

        return self.db.read(read)

    # ----- earning -----

    def RecordAction(self, request: pb.RecordActionRequest, context) -> pb.RecordActionResponse:  # noqa: ANN001, N802
        require_id(request.member_id, "member_id")
        action = enum_value(Action, request.action, "action")
        at = from_timestamp(request.occur_time, utcnow(), field="occur_time")

        def work(uow: UnitOfWork) -> pb.RecordActionResponse:
            outcome = self.svc.record_action(uow, shop_id=request.shop_id, member_id=request.member_id,
                                             action=action, subject=request.subject, at=at)
            return pb.RecordActionResponse(points=outcome.points, not_earned_reason=outcome.not_earned_reason,
                                           multiplier_milli=outcome.multiplier_milli,
                                           streak_days=outcome.streak_days,
                                           balance=self._balance_in(uow.conn, request.shop_id, request.member_id))

        return self._idem(request, "RecordAction", pb.RecordActionResponse, work)

    def Earn(self, request: pb.EarnRequest, context) -> pb.EarnResponse:  # noqa: ANN001, N802
        require_id(request.member_id, "member_id")
        source = _source(request.source)

        def work(uow: UnitOfWork) -> pb.EarnResponse:
            entry_id = self.svc.earn(uow, shop_id=request.shop_id, member_id=request.member_id,
                                     points=request.points, source=source)
            return self._entry_and_balance(uow, request.shop_id, request.member_id, entry_id, pb.EarnResponse)

        return self._idem(request, "Earn", pb.EarnResponse, work)

    # ----- spending -----

    def Spend(self, request: pb.SpendRequest, context) -> pb.SpendResponse:  # noqa: ANN001, N802
        require_id(request.member_id, "member_id")
        source = _source(request.source)

        def work(uow: UnitOfWork) -> pb.SpendResponse:
            entry_id = self.svc.spend(uow, shop_id=request.shop_id, member_id=request.member_id,
                                      points=request.points, source=source)
            return self._entry_and_balance(uow, request.shop_id, request.member_id, entry_id, pb.SpendResponse)

        return self._idem(request, "Spend", pb.SpendResponse, work)

    def Hold(self, request: pb.HoldRequest, context) -> pb.HoldResponse:  # noqa: ANN001, N802
        require_id(request.member_id, "member_id")
        source = _source(request.source)

        def work(uow: UnitOfWork) -> pb.HoldResponse:
            hold_id, expires_at = self.svc.hold(uow, shop_id=request.shop_id, member_id=request.member_id,
                                                points=request.points, ttl_seconds=request.ttl_seconds,
                                                source=source)
            return pb.HoldResponse(hold_id=hold_id, expire_time=to_timestamp(expires_at),
                                   balance=self._balance_in(uow.conn, request.shop_id, request.member_id))

        return self._idem(request, "Hold", pb.HoldResponse, work)

    def CaptureHold(self, request: pb.CaptureHoldRequest, context) -> pb.CaptureHoldResponse:  # noqa: ANN001, N802
        require_id(request.hold_id, "hold_id")
        def work(uow: UnitOfWork) -> pb.CaptureHoldResponse:
            entry_id, member_id = self.svc.capture_hold(uow, shop_id=request.shop_id, hold_id=request.hold_id)
            return self._entry_and_balance(uow, request.shop_id, member_id, entry_id, pb.CaptureHoldResponse)

        return self._idem(request, "CaptureHold", pb.CaptureHoldResponse, work)

    def ReleaseHold(self, request: pb.ReleaseHoldRequest, context) -> pb.ReleaseHoldResponse:  # noqa: ANN001, N802
        require_id(request.hold_id, "hold_id")
        def work(uow: UnitOfWork) -> pb.ReleaseHoldResponse:
            entry_id, member_id = self.svc.release_hold(uow, shop_id=request.shop_id, hold_id=request.hold_id)
            return self._entry_and_balance(uow, request.shop_id, member_id, entry_id, pb.ReleaseHoldResponse)

        return self._idem(request, "ReleaseHold", pb.ReleaseHoldResponse, work)

    def Adjust(self, request: pb.AdjustRequest, context) -> pb.AdjustResponse:  # noqa: ANN001, N802
        require_id(request.member_id, "member_id")

        def work(uow: UnitOfWork) -> pb.AdjustResponse:
            entry_id = self.svc.adjust(uow, shop_id=request.shop_id, member_id=request.member_id,
                                       points=request.points, operator=request.operator, reason=request.reason)
            return self._entry_and_balance(uow, request.shop_id, request.member_id, entry_id, pb.AdjustResponse)

        return self._idem(request, "Adjust", pb.AdjustResponse, work)

    # ----- lifecycle and reports -----

    def ExpirePoints(self, request: pb.ExpirePointsRequest, context) -> pb.ExpirePointsResponse:  # noqa: ANN001, N802
        as_of = from_timestamp(request.as_of, utcnow(), field="as_of")
        if not request.shop_id:
            principal = current_principal()
            if principal is None or not principal.is_admin:
                raise InvalidArgument([("shop_id", "required (only the admin key expires every shop at once)")])
            require_request_id(request)
            # One transaction per shop, so no single record: a retry finds nothing more to expire.
            members, lot_count, points = jobs.expire_all(self.svc, as_of)
            return pb.ExpirePointsResponse(members=members, lots=lot_count, points=points)

        def work(uow: UnitOfWork) -> pb.ExpirePointsResponse:
            self.svc.program(request.shop_id, uow.conn)
            members, lot_count, points = self.svc.expire_shop(uow, request.shop_id, as_of)
            return pb.ExpirePointsResponse(members=members, lots=lot_count, points=points)

        return self._idem(request, "ExpirePoints", pb.ExpirePointsResponse, work)

    def ListExpiringPoints(self, request: pb.ListExpiringPointsRequest, context) -> pb.ListExpiringPointsResponse:  # noqa: ANN001, N802
        require_shop(request.shop_id)
        limit = paging.page_size(request.page_size)
        after = paging.decode_token("expiring", request.page_token)

        def read(conn: Connection) -> pb.ListExpiringPointsResponse:
            rows = self.svc.expiring(conn, shop_id=request.shop_id, within_days=request.within_days,
                                     limit=limit + 1, after=after[0] if after else None)
            token = paging.encode_token("expiring", [rows[limit - 1].member_id]) if len(rows) > limit else ""
            return pb.ListExpiringPointsResponse(next_page_token=token, members=[
                pb.ExpiringPoints(member_id=r.member_id, points=int(r.points), first_expire_time=to_timestamp(r.first))
                for r in rows[:limit]])

        return self.db.read(read)

    def GetLiabilityReport(self, request: pb.GetLiabilityReportRequest, context) -> pb.LiabilityReport:  # noqa: ANN001, N802
        require_shop(request.shop_id)
        monthly = request.granularity == pb.GRANULARITY_MONTH

        def read(conn: Connection) -> pb.LiabilityReport:
            report = self.svc.liability(conn, shop_id=request.shop_id, monthly=monthly,
                                        start=from_timestamp(request.start_time, field="start_time"),
                                        end=from_timestamp(request.end_time, field="end_time"))
            return pb.LiabilityReport(
                shop_id=request.shop_id, outstanding_points=report["outstanding"],
                outstanding_value_fen=report["value_fen"], members_with_points=report["members"],
                periods=[pb.LiabilityPeriod(**p) for p in report["periods"]],
                expiry_schedule=[pb.LiabilityPeriod(period=label, expired=amount)
                                 for label, amount in report["schedule"]])

        return self.db.read(read)

    # ----- program, rules, multipliers -----

    def GetPointsProgram(self, request: pb.GetPointsProgramRequest, context) -> pb.PointsProgram:  # noqa: ANN001, N802
        require_shop(request.shop_id)
        return program_to_proto(self.svc.program(request.shop_id))

    def UpdatePointsProgram(self, request: pb.UpdatePointsProgramRequest, context) -> pb.PointsProgram:  # noqa: ANN001, N802
        p = request.program
        require_request_id(request)

        def work(uow: UnitOfWork) -> pb.PointsProgram:
            return program_to_proto(self.svc.update_program(
                uow, shop_id=request.shop_id,
                expiry_policy=enum_value(ExpiryPolicy, p.expiry_policy, "program.expiry_policy"),
                expiry_months=p.expiry_months, points_per_yuan=p.points_per_yuan,
                leave_policy=enum_value(LeavePolicy, p.leave_policy, "program.leave_policy"),
                daily_pool_points=p.daily_pool_points, default_hold_ttl_seconds=p.default_hold_ttl_seconds))

        return idempotent_call(self.db, request, "UpdatePointsProgram", pb.PointsProgram, work)

    def ListEarnRules(self, request: pb.ListEarnRulesRequest, context) -> pb.ListEarnRulesResponse:  # noqa: ANN001, N802
        require_shop(request.shop_id)

        def read(conn: Connection) -> pb.ListEarnRulesResponse:
            self.svc.program(request.shop_id, conn)
            rules = self.svc.rules(conn, request.shop_id)
            page, token = _page("earn_rules", [rule_to_proto(rules[a]) for a in sorted(rules)], request)
            return pb.ListEarnRulesResponse(rules=page, next_page_token=token)

        return self.db.read(read)

    def UpsertEarnRule(self, request: pb.UpsertEarnRuleRequest, context) -> pb.EarnRule:  # noqa: ANN001, N802
        r = request.rule
        rule = EarnRule(enum_value(Action, r.action, "rule.action"), r.points, r.enabled,
                        Caps(r.caps.per_day, r.caps.per_month, r.caps.lifetime), r.streak_days, r.streak_bonus,
                        r.min_order_fen, r.multipliers_apply)
        return self._idem(request, "UpsertEarnRule", pb.EarnRule,
                          lambda uow: rule_to_proto(self.svc.upsert_rule(uow, request.shop_id, rule)))

    def ListMultipliers(self, request: pb.ListMultipliersRequest, context) -> pb.ListMultipliersResponse:  # noqa: ANN001, N802
        require_shop(request.shop_id)

        def read(conn: Connection) -> pb.ListMultipliersResponse:
            self.svc.program(request.shop_id, conn)
            page, token = _page("multipliers", [multiplier_to_proto(m) for m in
                                                self.svc.multipliers(conn, request.shop_id)], request)
            return pb.ListMultipliersResponse(multipliers=page, next_page_token=token)

        return self.db.read(read)

    def CreateMultiplier(self, request: pb.CreateMultiplierRequest, context) -> pb.Multiplier:  # noqa: ANN001, N802
        m = request.multiplier
        multiplier = Multiplier(
            "", m.name, enum_value(MultiplierKind, m.kind, "multiplier.kind"), m.multiplier_milli, m.day_of_month,
            m.weekday, enum_value(domain.BirthdayWindow, m.birthday_window, "multiplier.birthday_window",
                                  domain.BirthdayWindow.MONTH),
            from_timestamp(m.start_time, field="multiplier.start_time"),
            from_timestamp(m.end_time, field="multiplier.end_time"),
            frozenset(enum_value(Action, a, "multiplier.actions") for a in m.actions))
        return self._idem(request, "CreateMultiplier", pb.Multiplier, lambda uow: multiplier_to_proto(
            self.svc.create_multiplier(uow, request.shop_id, multiplier)))

    def DeleteMultiplier(self, request: pb.DeleteMultiplierRequest, context) -> pb.DeleteMultiplierResponse:  # noqa: ANN001, N802
        def work(uow: UnitOfWork) -> pb.DeleteMultiplierResponse:
            self.svc.delete_multiplier(uow, request.shop_id, request.multiplier_id)
            return pb.DeleteMultiplierResponse()

        return self._idem(request, "DeleteMultiplier", pb.DeleteMultiplierResponse, work)

    # ----- the daily pool -----

    def JoinDailyPool(self, request: pb.JoinDailyPoolRequest, context) -> pb.JoinDailyPoolResponse:  # noqa: ANN001, N802
        require_id(request.member_id, "member_id")

        def work(uow: UnitOfWork) -> pb.JoinDailyPoolResponse:
            day, participants = self.svc.join_pool(uow, shop_id=request.shop_id, member_id=request.member_id)
            return pb.JoinDailyPoolResponse(day=day, participants=participants)

        return self._idem(request, "JoinDailyPool", pb.JoinDailyPoolResponse, work)

    def SettleDailyPool(self, request: pb.SettleDailyPoolRequest, context) -> pb.SettleDailyPoolResponse:  # noqa: ANN001, N802
        def work(uow: UnitOfWork) -> pb.SettleDailyPoolResponse:
            day, participants, each, already = self.svc.settle_pool(uow, shop_id=request.shop_id, day=request.day)
            return pb.SettleDailyPoolResponse(day=day, participants=participants, points_each=each,
                                              already_settled=already)

        return self._idem(request, "SettleDailyPool", pb.SettleDailyPoolResponse, work)
