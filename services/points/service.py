"""Points use cases. Every change to an account happens under its row lock, writes one ledger
entry per change of the balance, and commits with its lots, its outbox event and its
idempotency record: every balance is the sum of its ledger."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from loyalty.points.v1 import events_pb2
from sqlalchemy import BigInteger, Connection, and_, case, cast, exists, func, insert, literal, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from services.kit.cache import Cache, LocalCache, cache_key, invalidate_on_commit
from services.kit.errors import FailedPrecondition, InvalidArgument, NotFound, Violations
from services.kit.storage import Database, UnitOfWork
from services.kit.timeutil import to_timestamp, utcnow
from services.points import domain
from services.points.domain import (
    Action,
    Caps,
    EarnRule,
    EntryKind,
    ExpiryPolicy,
    HoldStatus,
    LeavePolicy,
    Multiplier,
    MultiplierKind,
)
from services.points.tables import (
    accounts,
    action_counts,
    action_subjects,
    earn_rules,
    hold_lots,
    holds,
    ledger,
    lots,
    multipliers,
    order_earnings,
    pool_entries,
    pool_settlements,
    programs,
)

DEFAULT_TIME_ZONE = "Asia/Shanghai"
MAX_POINTS = 10**12
MAX_HOLD_SECONDS = 7 * 24 * 3600
PROGRAM_MEMO_SECONDS = 2.0


class EventOutOfOrder(Exception):
    """An event that depends on one not yet applied; the bus delivers it again later."""


@dataclass(frozen=True)
class Program:
    shop_id: str
    time_zone: str
    expiry_policy: ExpiryPolicy
    expiry_months: int
    points_per_yuan: int
    leave_policy: LeavePolicy
    daily_pool_points: int
    default_hold_ttl_seconds: int

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


@dataclass
class Source:
    """Where a ledger entry came from."""

    order_id: str = ""
    action: int = 0
    rule_id: str = ""
    multiplier_id: str = ""
    redemption_id: str = ""
    hold_id: str = ""
    operator: str = ""
    reason: str = ""
    reference: str = ""


@dataclass(frozen=True)
class BalanceView:
    shop_id: str
    member_id: str
    available: int
    held: int
    lifetime_earned: int
    next_expiry_at: datetime | None
    next_expiry_amount: int


@dataclass
class ActionOutcome:
    points: int = 0
    not_earned_reason: str = ""
    multiplier_milli: int = domain.MILLI
    streak_days: int = 0


@dataclass
class _Account:
    """The locked account row, kept in step with what this transaction writes."""

    shop_id: str
    member_id: str
    closed: bool
    available: int
    held: int
    debt: int
    lifetime_earned: int
    birth_month: int | None
    birth_day: int | None
    referrer_member_id: str | None
    last_sign_in_day: str | None
    sign_in_streak: int
    dirty: set[str] = field(default_factory=set)

    @property
    def birthday(self) -> tuple[int, int] | None:
        return (self.birth_month, self.birth_day) if self.birth_month and self.birth_day else None


def _program_from_row(row: Row) -> Program:
    return Program(row.shop_id, row.time_zone, ExpiryPolicy(row.expiry_policy), row.expiry_months,
                   row.points_per_yuan, LeavePolicy(row.leave_policy), row.daily_pool_points,
                   row.default_hold_ttl_seconds)


def _rule_from_row(row: Row) -> EarnRule:
    return EarnRule(Action(row.action), row.points, row.enabled, Caps(row.cap_per_day, row.cap_per_month,
                    row.cap_lifetime), row.streak_days, row.streak_bonus, row.min_order_fen, row.multipliers_apply)


def _rule_values(rule: EarnRule) -> dict:
    return {"action": int(rule.action), "enabled": rule.enabled, "points": rule.points,
            "cap_per_day": rule.caps.per_day, "cap_per_month": rule.caps.per_month,
            "cap_lifetime": rule.caps.lifetime, "streak_days": rule.streak_days, "streak_bonus": rule.streak_bonus,
            "min_order_fen": rule.min_order_fen, "multipliers_apply": rule.multipliers_apply}


def _multiplier_from_row(row: Row) -> Multiplier:
    return Multiplier(row.multiplier_id, row.name, MultiplierKind(row.kind), row.multiplier_milli, row.day_of_month,
                      row.weekday, domain.BirthdayWindow(row.birthday_window), row.start_at, row.end_at,
                      frozenset(Action(int(a)) for a in row.actions.split(",") if a))


def _multiplier_values(m: Multiplier) -> dict:
    return {"multiplier_id": m.multiplier_id, "name": m.name, "kind": int(m.kind),
            "multiplier_milli": m.multiplier_milli, "day_of_month": m.day_of_month, "weekday": m.weekday,
            "birthday_window": int(m.birthday_window), "start_at": m.start_at, "end_at": m.end_at,
            "actions": ",".join(str(int(a)) for a in sorted(m.actions))}


def _member_lots(shop_id: str, member_id: str):  # noqa: ANN202 - a SQL condition
    return and_(lots.c.shop_id == shop_id, lots.c.member_id == member_id)


class PointsService:
    def __init__(self, db: Database, cache: Cache, *, cache_ttl: float = 60.0):
        self.db = db
        self.cache = cache
        self.cache_ttl = cache_ttl
        self._programs = LocalCache(max_entries=10_000)

    # ----- programs, rules, multipliers -----------------------------------------------------

    def ensure_program(self, uow: UnitOfWork, shop_id: str, time_zone: str = "") -> Program:
        """The shop's points program, created with the default rules the first time a shop
        shows up (by its ProgramChanged event, or any later event)."""
        row = uow.conn.execute(select(programs).where(programs.c.shop_id == shop_id)).first()
        if row is not None:
            if time_zone and row.time_zone != time_zone:
                uow.conn.execute(update(programs).where(programs.c.shop_id == shop_id)
                                 .values(time_zone=time_zone, updated_at=utcnow()))
                self._forget_program(uow, shop_id)
                return _program_from_row(uow.conn.execute(select(programs).where(programs.c.shop_id == shop_id)).one())
            return _program_from_row(row)
        now = utcnow()
        values = {"shop_id": shop_id, "time_zone": time_zone or DEFAULT_TIME_ZONE,
                  "expiry_policy": int(ExpiryPolicy.ROLLING_MONTHS), "expiry_months": 12, "points_per_yuan": 100,
                  "leave_policy": int(LeavePolicy.FORFEIT), "daily_pool_points": 0,
                  "default_hold_ttl_seconds": 900, "created_at": now, "updated_at": now}
        try:
            with uow.conn.begin_nested():  # another worker may be creating it from another event
                uow.conn.execute(insert(programs), values)
                uow.conn.execute(insert(earn_rules), [{"shop_id": shop_id, "updated_at": now, **_rule_values(r)}
                                                      for r in domain.default_rules()])
                uow.conn.execute(insert(multipliers), [{"shop_id": shop_id, "created_at": now,
                                                        **_multiplier_values(m)} for m in domain.default_multipliers()])
        except IntegrityError:
            pass
        return _program_from_row(uow.conn.execute(select(programs).where(programs.c.shop_id == shop_id)).one())

    def program(self, shop_id: str, conn: Connection | None = None) -> Program:
        memo = self._programs.get(shop_id)
        if memo is not None:
            return memo
        query = select(programs).where(programs.c.shop_id == shop_id)
        row = conn.execute(query).first() if conn is not None else self.db.read(lambda c: c.execute(query).first())
        if row is None:
            raise NotFound(f"shop {shop_id!r} has no points program", reason="PROGRAM_NOT_FOUND",
                           metadata={"shop_id": shop_id})
        program = _program_from_row(row)
        self._programs.set(shop_id, program, PROGRAM_MEMO_SECONDS)
        return program

    def _forget_program(self, uow: UnitOfWork, shop_id: str) -> None:
        self._programs.delete(shop_id)
        uow.after_commit(lambda: self._programs.delete(shop_id))

    def update_program(self, uow: UnitOfWork, *, shop_id: str, expiry_policy: ExpiryPolicy, expiry_months: int,
                       points_per_yuan: int, leave_policy: LeavePolicy, daily_pool_points: int,
                       default_hold_ttl_seconds: int) -> Program:
        v = Violations()
        v.check(expiry_policy is not ExpiryPolicy.ROLLING_MONTHS or 1 <= expiry_months <= 120, "program.expiry_months",
                "must be 1..120 for rolling expiry")
        v.check(1 <= points_per_yuan <= 1_000_000, "program.points_per_yuan", "must be 1..1000000")
        v.check(0 <= daily_pool_points <= MAX_POINTS, "program.daily_pool_points", "must not be negative")
        v.check(0 < default_hold_ttl_seconds <= MAX_HOLD_SECONDS, "program.default_hold_ttl_seconds",
                f"must be 1..{MAX_HOLD_SECONDS}")
        v.raise_if_any()
        self.program(shop_id, uow.conn)
        uow.conn.execute(update(programs).where(programs.c.shop_id == shop_id).values(
            expiry_policy=int(expiry_policy), expiry_months=expiry_months, points_per_yuan=points_per_yuan,
            leave_policy=int(leave_policy), daily_pool_points=daily_pool_points,
            default_hold_ttl_seconds=default_hold_ttl_seconds, updated_at=utcnow()))
        self._forget_program(uow, shop_id)
        return _program_from_row(uow.conn.execute(select(programs).where(programs.c.shop_id == shop_id)).one())

    def rules(self, conn: Connection, shop_id: str) -> dict[Action, EarnRule]:
        rows = conn.execute(select(earn_rules).where(earn_rules.c.shop_id == shop_id)).all()
        return {Action(r.action): _rule_from_row(r) for r in rows}

    def upsert_rule(self, uow: UnitOfWork, shop_id: str, rule: EarnRule) -> EarnRule:
        v = Violations()
        v.check(rule.action is not Action.DAILY_POOL, "rule.action", "the daily pool is set on the program")
        v.check(0 <= rule.points <= 1_000_000, "rule.points", "must be 0..1000000")
        for name, value in (("per_day", rule.caps.per_day), ("per_month", rule.caps.per_month),
                            ("lifetime", rule.caps.lifetime)):
            v.check(value >= 0, f"rule.caps.{name}", "must not be negative")
        v.check(rule.streak_days >= 0, "rule.streak_days", "must not be negative")
        v.check(0 <= rule.streak_bonus <= 1_000_000, "rule.streak_bonus", "must be 0..1000000")
        v.check(rule.min_order_fen >= 0, "rule.min_order_fen", "must not be negative")
        v.raise_if_any()
        self.program(shop_id, uow.conn)
        values = {"updated_at": utcnow(), **_rule_values(rule)}
        done = uow.conn.execute(update(earn_rules).where(earn_rules.c.shop_id == shop_id,
                                                         earn_rules.c.action == int(rule.action)).values(**values))
        if done.rowcount == 0:
            uow.conn.execute(insert(earn_rules), {"shop_id": shop_id, **values})
        return rule

    def multipliers(self, conn: Connection, shop_id: str) -> list[Multiplier]:
        rows = conn.execute(select(multipliers).where(multipliers.c.shop_id == shop_id)
                            .order_by(multipliers.c.created_at, multipliers.c.multiplier_id)).all()
        return [_multiplier_from_row(r) for r in rows]

    def create_multiplier(self, uow: UnitOfWork, shop_id: str, m: Multiplier) -> Multiplier:
        v = Violations()
        v.check(0 < len(m.name) <= 100, "multiplier.name", "required, at most 100 characters")
        v.check(1000 < m.multiplier_milli <= 10_000, "multiplier.multiplier_milli", "must be 1001..10000 (×1..×10)")
        if m.kind is MultiplierKind.MEMBER_DAY:
            v.check((1 <= m.day_of_month <= 31) != (1 <= m.weekday <= 7), "multiplier.day_of_month",
                    "a member day is either a day of the month (1-31) or a weekday (1-7)")
        elif m.kind is MultiplierKind.CAMPAIGN:
            v.check(m.start_at is not None and m.end_at is not None and m.start_at < m.end_at,
                    "multiplier.end_time", "a campaign needs start_time before end_time")
        v.raise_if_any()
        self.program(shop_id, uow.conn)
        created = Multiplier(**{**m.__dict__, "multiplier_id": "x_" + secrets.token_hex(6)})
        uow.conn.execute(insert(multipliers), {"shop_id": shop_id, "created_at": utcnow(),
                                               **_multiplier_values(created)})
        return created

    def delete_multiplier(self, uow: UnitOfWork, shop_id: str, multiplier_id: str) -> None:
        self.program(shop_id, uow.conn)
        gone = uow.conn.execute(multipliers.delete().where(multipliers.c.shop_id == shop_id,
                                                           multipliers.c.multiplier_id == multiplier_id))
        if gone.rowcount == 0:
            raise NotFound(f"no multiplier {multiplier_id!r}", reason="MULTIPLIER_NOT_FOUND")

    # ----- accounts -------------------------------------------------------------------------

    def open_account(self, uow: UnitOfWork, shop_id: str, member_id: str, *, birth_month: int = 0,
                     birth_day: int = 0, referrer_member_id: str = "") -> bool:
        """Creates the member's account; False when it existed already."""
        if uow.conn.execute(select(accounts.c.member_id).where(accounts.c.shop_id == shop_id,
                                                               accounts.c.member_id == member_id)).first():
            return False
        try:
            # Events of one member may be handled by two workers at once (a join and an order).
            with uow.conn.begin_nested():
                uow.conn.execute(insert(accounts), {
                    "shop_id": shop_id, "member_id": member_id, "closed": False, "available": 0, "held": 0,
                    "debt": 0, "lifetime_earned": 0, "birth_month": birth_month or None,
                    "birth_day": birth_day or None, "referrer_member_id": referrer_member_id or None,
                    "last_sign_in_day": None, "sign_in_streak": 0, "created_at": utcnow()})
        except IntegrityError:
            return False
        return True

    def _lock(self, uow: UnitOfWork, shop_id: str, member_id: str) -> _Account:
        row = uow.conn.execute(select(accounts).where(accounts.c.shop_id == shop_id,
                                                      accounts.c.member_id == member_id).with_for_update()).first()
        if row is None:
            raise NotFound(f"member {member_id!r} has no points account in shop {shop_id!r}",
                           reason="MEMBER_NOT_FOUND", metadata={"member_id": member_id})
        return _Account(row.shop_id, row.member_id, row.closed, row.available, row.held, row.debt,
                        row.lifetime_earned, row.birth_month, row.birth_day, row.referrer_member_id,
                        row.last_sign_in_day, row.sign_in_streak)

    def _save(self, uow: UnitOfWork, acct: _Account) -> None:
        values = {name: getattr(acct, name) for name in acct.dirty}
        if values:
            uow.conn.execute(update(accounts).where(accounts.c.shop_id == acct.shop_id,
                                                    accounts.c.member_id == acct.member_id).values(**values))
            acct.dirty.clear()
        invalidate_on_commit(uow, self.cache, [cache_key(acct.shop_id, "points", "balance", acct.member_id)])

    def _post(self, uow: UnitOfWork, acct: _Account, kind: EntryKind, amount: int, held_delta: int, source: Source,
              at: datetime, expires_at: datetime | None = None) -> int:
        """Appends one ledger entry and moves the account by it; returns the entry id."""
        acct.available += amount
        acct.held += held_delta
        acct.dirty.update(("available", "held"))
        result = uow.conn.execute(insert(ledger), {
            "shop_id": acct.shop_id, "member_id": acct.member_id, "kind": int(kind), "amount": amount,
            "held_delta": held_delta, "balance_after": acct.available, "order_id": source.order_id,
            "action": source.action, "rule_id": source.rule_id, "multiplier_id": source.multiplier_id,
            "redemption_id": source.redemption_id, "hold_id": source.hold_id, "operator": source.operator,
            "reason": source.reason, "reference": source.reference, "expires_at": expires_at, "created_at": at})
        return int(result.inserted_primary_key[0])

    def _take(self, uow: UnitOfWork, acct: _Account, points: int, now: datetime, *, prefer_order: str = ""
              ) -> tuple[list[tuple[int, int]], int]:
        """Takes points from the member's live lots, those that expire first first (a refunded
        order's own lot before any); returns [(lot_id, taken)] and what the lots could not cover."""
        live = and_(_member_lots(acct.shop_id, acct.member_id), lots.c.remaining > 0,
                    (lots.c.expires_at.is_(None)) | (lots.c.expires_at > now))
        order = [case((lots.c.expires_at.is_(None), 1), else_=0), lots.c.expires_at, lots.c.id]
        if prefer_order:
            order.insert(0, case((lots.c.order_id == prefer_order, 0), else_=1))
        rows = uow.conn.execute(select(lots.c.id, lots.c.remaining).where(live).order_by(*order)
                                .with_for_update()).all()
        taken: list[tuple[int, int]] = []
        left = points
        for row in rows:
            if left == 0:
                break
            take = min(left, row.remaining)
            uow.conn.execute(update(lots).where(lots.c.id == row.id).values(remaining=row.remaining - take))
            taken.append((row.id, take))
            left -= take
        return taken, left

    def _sweep_expired(self, uow: UnitOfWork, acct: _Account, now: datetime) -> None:
        """Expires the member's lots that are past their date (before any spend decides)."""
        due = and_(_member_lots(acct.shop_id, acct.member_id), lots.c.remaining > 0, lots.c.expires_at <= now)
        total = uow.conn.execute(select(_total(lots.c.remaining)).where(due)).scalar()
        if not total:
            return
        uow.conn.execute(update(lots).where(due).values(remaining=0))
        self._post(uow, acct, EntryKind.EXPIRE, -total, 0, Source(), now)
        uow.emit(acct.shop_id, events_pb2.PointsExpired(shop_id=acct.shop_id, member_id=acct.member_id,
                                                        points=total, balance_after=acct.available,
                                                        occurred_at=to_timestamp(now)))

    # ----- earning --------------------------------------------------------------------------

    def _credit(self, uow: UnitOfWork, program: Program, acct: _Account, kind: EntryKind, points: int,
                source: Source, at: datetime) -> tuple[int, datetime | None]:
        """Adds points as a new lot (a debt is paid off first); returns (entry id, expiry)."""
        expires_at = domain.expiry_for(at, program.zone, program.expiry_policy, program.expiry_months)
        entry_id = self._post(uow, acct, kind, points, 0, source, at, expires_at)
        paid = min(acct.debt, points)
        if paid:
            acct.debt -= paid
            acct.dirty.add("debt")
        if points - paid:
            uow.conn.execute(insert(lots), {
                "shop_id": acct.shop_id, "member_id": acct.member_id, "entry_id": entry_id,
                "order_id": source.order_id, "amount": points - paid, "remaining": points - paid, "earned_at": at,
                "expires_at": expires_at})
        return entry_id, expires_at

    def _earn(self, uow: UnitOfWork, program: Program, acct: _Account, points: int, source: Source,
              at: datetime) -> int:
        """Credits earned points; returns the entry id."""
        entry_id, expires_at = self._credit(uow, program, acct, EntryKind.EARN, points, source, at)
        acct.lifetime_earned += points
        acct.dirty.add("lifetime_earned")
        uow.emit(acct.shop_id, events_pb2.PointsEarned(
            shop_id=acct.shop_id, member_id=acct.member_id, points=points, action=source.action,
            order_id=source.order_id, balance_after=acct.available, expire_time=to_timestamp(expires_at),
            occurred_at=to_timestamp(at)))
        return entry_id

    def earn(self, uow: UnitOfWork, *, shop_id: str, member_id: str, points: int, source: Source) -> int:
        """A direct grant from another system (a lottery win, a campaign's gift)."""
        _check_points(points)
        program = self.program(shop_id, uow.conn)
        acct = self._lock(uow, shop_id, member_id)
        _refuse_closed(acct)
        entry_id = self._earn(uow, program, acct, points, source, utcnow())
        self._save(uow, acct)
        return entry_id

    def record_action(self, uow: UnitOfWork, *, shop_id: str, member_id: str, action: Action, subject: str,
                      at: datetime) -> ActionOutcome:
        """An action the shop rewards (sign-in, review, share…), under its rule's caps."""
        v = Violations()
        v.check(action in domain.RECORDABLE, "action", "not an action to record (purchases come from orders)")
        v.check(action not in domain.SUBJECT_ACTIONS or bool(subject), "subject",
                "required for this action (the reviewed order, the invited friend, the survey)")
        v.check(len(subject) <= 64, "subject", "at most 64 characters")
        now = utcnow()
        # Late reports are accepted for a while; older ones would let caps be earned again.
        v.check(now - timedelta(days=31) <= at <= now + timedelta(minutes=5), "occur_time",
                "must be within the last 31 days, not in the future")
        v.raise_if_any()
        program = self.program(shop_id, uow.conn)
        acct = self._lock(uow, shop_id, member_id)
        if acct.closed:
            return ActionOutcome(not_earned_reason="ACCOUNT_CLOSED")
        rule = self.rules(uow.conn, shop_id).get(action)
        if rule is None or not rule.enabled:
            return ActionOutcome(not_earned_reason="RULE_DISABLED")
        day = domain.local_date(at, program.zone)
        outcome = ActionOutcome()
        if action is Action.DAILY_SIGN_IN:
            # Never before the last sign-in: a day already passed cannot be signed in again.
            if acct.last_sign_in_day is not None and day.isoformat() <= acct.last_sign_in_day:
                return ActionOutcome(not_earned_reason="ALREADY_SIGNED_IN_TODAY", streak_days=acct.sign_in_streak)
            last = date.fromisoformat(acct.last_sign_in_day) if acct.last_sign_in_day else None
            outcome.streak_days = domain.next_streak(last, acct.sign_in_streak, day)
        refusal = self._cap_refusal(uow.conn, acct, rule, subject, day)
        if refusal:
            outcome.not_earned_reason = refusal
            return outcome
        points = rule.points
        if rule.multipliers_apply:
            outcome.multiplier_milli, multiplier_id = domain.best_multiplier(
                self.multipliers(uow.conn, shop_id), action, at, program.zone, acct.birthday)
            points = points * outcome.multiplier_milli // domain.MILLI
        else:
            multiplier_id = ""
        if action is Action.DAILY_SIGN_IN:
            acct.last_sign_in_day, acct.sign_in_streak = day.isoformat(), outcome.streak_days
            acct.dirty.update(("last_sign_in_day", "sign_in_streak"))
            if rule.streak_days and outcome.streak_days % rule.streak_days == 0:
                points += rule.streak_bonus
        self._count(uow, acct, action, subject, day)
        if points > 0:
            self._earn(uow, program, acct, points, Source(action=int(action), rule_id=rule.rule_id,
                                                          multiplier_id=multiplier_id, reference=subject), at)
        self._save(uow, acct)
        outcome.points = points
        return outcome

    @staticmethod
    def _cap_refusal(conn: Connection, acct: _Account, rule: EarnRule, subject: str, day: date) -> str:
        action = int(rule.action)
        if subject and rule.action in domain.SUBJECT_ACTIONS and conn.execute(select(action_subjects.c.subject).where(
                action_subjects.c.shop_id == acct.shop_id, action_subjects.c.member_id == acct.member_id,
                action_subjects.c.action == action, action_subjects.c.subject == subject)).first():
            return "ALREADY_EARNED"
        day_key, month_key, life_key = domain.cap_periods(day)
        counts = dict(conn.execute(select(action_counts.c.period, action_counts.c.count).where(
            action_counts.c.shop_id == acct.shop_id, action_counts.c.member_id == acct.member_id,
            action_counts.c.action == action, action_counts.c.period.in_([day_key, month_key, life_key]))).all())
        if rule.action in domain.ONCE_ACTIONS and counts.get(life_key, 0) >= 1:
            return "ALREADY_EARNED"
        for cap, key, reason in ((rule.caps.per_day, day_key, "DAILY_CAP_REACHED"),
                                 (rule.caps.per_month, month_key, "MONTHLY_CAP_REACHED"),
                                 (rule.caps.lifetime, life_key, "LIFETIME_CAP_REACHED")):
            if cap and counts.get(key, 0) >= cap:
                return reason
        return ""

    @staticmethod
    def _count(uow: UnitOfWork, acct: _Account, action: Action, subject: str, day: date) -> None:
        for period in domain.cap_periods(day):
            key = and_(action_counts.c.shop_id == acct.shop_id, action_counts.c.member_id == acct.member_id,
                       action_counts.c.action == int(action), action_counts.c.period == period)
            if uow.conn.execute(update(action_counts).where(key).values(count=action_counts.c.count + 1)).rowcount == 0:
                uow.conn.execute(insert(action_counts), {"shop_id": acct.shop_id, "member_id": acct.member_id,
                                                         "action": int(action), "period": period, "count": 1})
        if subject and action in domain.SUBJECT_ACTIONS | {Action.REFERRAL}:
            uow.conn.execute(insert(action_subjects), {"shop_id": acct.shop_id, "member_id": acct.member_id,
                                                       "action": int(action), "subject": subject,
                                                       "created_at": utcnow()})

    # ----- events from membership -------------------------------------------------------------

    def on_order_completed(self, uow: UnitOfWork, *, shop_id: str, order_id: str, member_id: str, amount_fen: int,
                           rate_milli: int, completed_at: datetime, first_order: bool, referrer_member_id: str,
                           birth_month: int, birth_day: int) -> None:
        """Purchase points at the tier rate held when the trade succeeded; on a first purchase,
        the referral reward for both sides."""
        program = self.ensure_program(uow, shop_id)
        self.open_account(uow, shop_id, member_id, birth_month=birth_month, birth_day=birth_day,
                          referrer_member_id=referrer_member_id)
        if uow.conn.execute(select(order_earnings.c.order_id).where(
                order_earnings.c.shop_id == shop_id, order_earnings.c.order_id == order_id)).first():
            return
        acct = self._lock(uow, shop_id, member_id)
        rules = self.rules(uow.conn, shop_id)
        rule = rules.get(Action.PURCHASE)
        earns = not acct.closed and rule is not None and rule.enabled
        multiplier, multiplier_id, per_yuan, points = domain.MILLI, "", 0, 0
        if earns:
            per_yuan = rule.points
            if rule.multipliers_apply:
                birthday = (birth_month, birth_day) if birth_month and birth_day else acct.birthday
                multiplier, multiplier_id = domain.best_multiplier(
                    self.multipliers(uow.conn, shop_id), Action.PURCHASE, completed_at, program.zone, birthday)
            points = domain.purchase_points(amount_fen, per_yuan, rate_milli, multiplier)
        # Recorded even when nothing is earned: a refund of the order then knows the completion was seen.
        uow.conn.execute(insert(order_earnings), {
            "shop_id": shop_id, "order_id": order_id, "member_id": member_id, "amount_fen": amount_fen,
            "points_per_yuan": per_yuan, "rate_milli": rate_milli, "multiplier_milli": multiplier,
            "earned": points, "clawed_back": 0})
        if not earns:
            return
        if points > 0:
            self._earn(uow, program, acct, points, Source(order_id=order_id, action=int(Action.PURCHASE),
                                                          rule_id=rule.rule_id, multiplier_id=multiplier_id),
                       completed_at)
        self._save(uow, acct)
        referral = rules.get(Action.REFERRAL)
        if first_order and referrer_member_id and referral is not None and referral.enabled \
                and amount_fen >= referral.min_order_fen:
            reward = referral.points or amount_fen // 100
            for beneficiary in (member_id, referrer_member_id):
                self._reward_referral(uow, program, referral, beneficiary, member_id, order_id, reward, completed_at)

    def _reward_referral(self, uow: UnitOfWork, program: Program, rule: EarnRule, beneficiary: str, referee: str,
                         order_id: str, points: int, at: datetime) -> None:
        try:
            acct = self._lock(uow, program.shop_id, beneficiary)
        except NotFound:
            return  # the referrer has no account here (left before points knew them)
        day = domain.local_date(at, program.zone)
        if acct.closed or self._cap_refusal(uow.conn, acct, rule, referee, day) or \
                uow.conn.execute(select(action_subjects.c.subject).where(
                    action_subjects.c.shop_id == acct.shop_id, action_subjects.c.member_id == acct.member_id,
                    action_subjects.c.action == int(Action.REFERRAL), action_subjects.c.subject == referee)).first():
            return
        self._count(uow, acct, Action.REFERRAL, referee, day)
        if points > 0:
            self._earn(uow, program, acct, points, Source(order_id=order_id, action=int(Action.REFERRAL),
                                                          rule_id="referral", reference=referee), at)
        self._save(uow, acct)

    def on_order_refunded(self, uow: UnitOfWork, *, shop_id: str, order_id: str, order_amount_fen: int,
                          total_refunded_fen: int, at: datetime) -> None:
        """退换货扣除: take back what the refunded part of the order earned."""
        earning = uow.conn.execute(select(order_earnings).where(
            order_earnings.c.shop_id == shop_id, order_earnings.c.order_id == order_id).with_for_update()).first()
        if earning is None:
            # The completion this refund follows has not been applied yet (another worker holds
            # it, or it is being retried): leave the event to be delivered again.
            raise EventOutOfOrder(f"refund of {shop_id}/{order_id} arrived before its completion")
        # What was refunded before the completion never counted (amount_fen is net of it).
        refunded_since = total_refunded_fen - (order_amount_fen - earning.amount_fen)
        points = domain.clawback_points(earning.earned, earning.amount_fen, refunded_since,
                                        earning.points_per_yuan, earning.rate_milli, earning.multiplier_milli,
                                        earning.clawed_back)
        if points <= 0:
            return
        uow.conn.execute(update(order_earnings).where(
            order_earnings.c.shop_id == shop_id, order_earnings.c.order_id == order_id).values(
            clawed_back=earning.clawed_back + points))
        acct = self._lock(uow, shop_id, earning.member_id)
        if acct.closed:
            return
        self._sweep_expired(uow, acct, at)
        _, uncovered = self._take(uow, acct, points, at, prefer_order=order_id)
        if uncovered:  # already spent: the member owes it, and later earnings pay it first
            acct.debt += uncovered
            acct.dirty.add("debt")
        self._post(uow, acct, EntryKind.CLAWBACK, -points, 0, Source(order_id=order_id,
                                                                     action=int(Action.PURCHASE),
                                                                     reason="order refunded"), at)
        self._save(uow, acct)
        uow.emit(shop_id, events_pb2.PointsAdjusted(shop_id=shop_id, member_id=acct.member_id, points=-points,
                                                    kind=int(EntryKind.CLAWBACK), order_id=order_id,
                                                    reason="order refunded", balance_after=acct.available,
                                                    occurred_at=to_timestamp(at)))

    def on_member_joined(self, uow: UnitOfWork, *, shop_id: str, member_id: str, referrer_member_id: str,
                         birth_month: int, birth_day: int, imported: bool, at: datetime) -> None:
        """Opens the account; a member who joined (not one imported) earns the join bonus."""
        program = self.ensure_program(uow, shop_id)
        self.open_account(uow, shop_id, member_id, birth_month=birth_month, birth_day=birth_day,
                          referrer_member_id=referrer_member_id)
        rule = self.rules(uow.conn, shop_id).get(Action.JOIN)
        if imported or rule is None or not rule.enabled or rule.points <= 0:
            return
        acct = self._lock(uow, shop_id, member_id)
        day = domain.local_date(at, program.zone)
        if self._cap_refusal(uow.conn, acct, rule, "", day):
            return
        self._count(uow, acct, Action.JOIN, "", day)
        self._earn(uow, program, acct, rule.points, Source(action=int(Action.JOIN), rule_id=rule.rule_id), at)
        self._save(uow, acct)

    def on_profile_updated(self, uow: UnitOfWork, *, shop_id: str, member_id: str, birth_month: int,
                           birth_day: int) -> None:
        uow.conn.execute(update(accounts).where(accounts.c.shop_id == shop_id, accounts.c.member_id == member_id)
                         .values(birth_month=birth_month or None, birth_day=birth_day or None))

    def on_member_left(self, uow: UnitOfWork, *, shop_id: str, member_id: str, at: datetime) -> None:
        """Holds are released; under FORFEIT (the default) the balance is forfeited in the
        ledger; the account takes no more points either way."""
        program = self.ensure_program(uow, shop_id)
        try:
            acct = self._lock(uow, shop_id, member_id)
        except NotFound:
            return
        for hold in uow.conn.execute(select(holds.c.hold_id).where(
                holds.c.shop_id == shop_id, holds.c.member_id == member_id,
                holds.c.status == int(HoldStatus.HELD))).all():
            self._release(uow, acct, hold.hold_id, at, reason="member left")
        if program.leave_policy is LeavePolicy.FORFEIT:
            self._sweep_expired(uow, acct, at)
            if acct.available > 0:
                points = acct.available
                self._take(uow, acct, points, at)
                self._post(uow, acct, EntryKind.FORFEIT, -points, 0, Source(reason="member left"), at)
                uow.emit(shop_id, events_pb2.PointsAdjusted(
                    shop_id=shop_id, member_id=member_id, points=-points, kind=int(EntryKind.FORFEIT),
                    reason="member left", balance_after=acct.available, occurred_at=to_timestamp(at)))
        acct.closed = True
        acct.birth_month = acct.birth_day = None  # personal data goes with the member
        acct.dirty.update(("closed", "birth_month", "birth_day"))
        self._save(uow, acct)

    # ----- spending -------------------------------------------------------------------------

    def _debit(self, uow: UnitOfWork, shop_id: str, member_id: str, points: int, now: datetime) -> tuple[
            _Account, list[tuple[int, int]]]:
        """Locks the account and takes `points` from its live lots, or refuses with the shortfall."""
        _check_points(points)
        self.program(shop_id, uow.conn)
        acct = self._lock(uow, shop_id, member_id)
        _refuse_closed(acct)
        self._sweep_expired(uow, acct, now)
        if acct.available < points:
            shortfall = points - acct.available
            raise FailedPrecondition(
                f"not enough points: {acct.available} available, {points} asked", reason="INSUFFICIENT_POINTS",
                subject=f"member/{member_id}", metadata={"available": acct.available, "requested": points,
                                                         "shortfall": shortfall})
        taken, uncovered = self._take(uow, acct, points, now)
        if uncovered:  # cannot happen while available = Σ live lots − debt; never hide it if it does
            raise RuntimeError(f"lots of {shop_id}/{member_id} do not cover the balance ({uncovered} short)")
        return acct, taken

    def spend(self, uow: UnitOfWork, *, shop_id: str, member_id: str, points: int, source: Source) -> int:
        now = utcnow()
        acct, _ = self._debit(uow, shop_id, member_id, points, now)
        entry_id = self._post(uow, acct, EntryKind.SPEND, -points, 0, source, now)
        self._save(uow, acct)
        uow.emit(shop_id, events_pb2.PointsSpent(shop_id=shop_id, member_id=member_id, points=points,
                                                 kind=int(EntryKind.SPEND), redemption_id=source.redemption_id,
                                                 balance_after=acct.available, occurred_at=to_timestamp(now)))
        return entry_id

    def hold(self, uow: UnitOfWork, *, shop_id: str, member_id: str, points: int, ttl_seconds: int,
             source: Source) -> tuple[str, datetime]:
        """Two-phase spend, phase one: the points move from available to held until captured,
        released, or the TTL passes (then they are released by themselves)."""
        v = Violations()
        v.check(0 <= ttl_seconds <= MAX_HOLD_SECONDS, "ttl_seconds", f"must be 0..{MAX_HOLD_SECONDS} (0: default)")
        v.raise_if_any()
        now = utcnow()
        ttl = ttl_seconds or self.program(shop_id, uow.conn).default_hold_ttl_seconds
        acct, taken = self._debit(uow, shop_id, member_id, points, now)
        hold_id = "h_" + secrets.token_hex(10)
        expires_at = now + timedelta(seconds=ttl)
        uow.conn.execute(insert(holds), {"shop_id": shop_id, "hold_id": hold_id, "member_id": member_id,
                                         "amount": points, "status": int(HoldStatus.HELD),
                                         "redemption_id": source.redemption_id, "expires_at": expires_at,
                                         "created_at": now, "settled_entry_id": None})
        uow.conn.execute(insert(hold_lots), [{"shop_id": shop_id, "hold_id": hold_id, "lot_id": lot_id,
                                              "amount": amount} for lot_id, amount in taken])
        source.hold_id = hold_id
        self._post(uow, acct, EntryKind.HOLD, -points, points, source, now)
        self._save(uow, acct)
        return hold_id, expires_at

    def _hold_row(self, conn: Connection, shop_id: str, hold_id: str) -> Row:
        row = conn.execute(select(holds).where(holds.c.shop_id == shop_id, holds.c.hold_id == hold_id)).first()
        if row is None:
            raise NotFound(f"no hold {hold_id!r}", reason="HOLD_NOT_FOUND", metadata={"hold_id": hold_id})
        return row

    def capture_hold(self, uow: UnitOfWork, *, shop_id: str, hold_id: str) -> tuple[int, str]:
        """Phase two: the held points are spent. Returns (entry id, member id)."""
        self.program(shop_id, uow.conn)
        member_id = self._hold_row(uow.conn, shop_id, hold_id).member_id
        acct = self._lock(uow, shop_id, member_id)
        hold = self._hold_row(uow.conn, shop_id, hold_id)  # read again under the account lock
        now = utcnow()
        if hold.status == HoldStatus.CAPTURED:
            return hold.settled_entry_id, member_id
        if hold.status == HoldStatus.RELEASED:
            raise FailedPrecondition("the hold was released", reason="HOLD_RELEASED", subject=f"hold/{hold_id}")
        if hold.expires_at <= now:
            raise FailedPrecondition("the hold expired; its points are being released", reason="HOLD_EXPIRED",
                                     subject=f"hold/{hold_id}")
        entry_id = self._post(uow, acct, EntryKind.CAPTURE, 0, -hold.amount,
                              Source(hold_id=hold_id, redemption_id=hold.redemption_id), now)
        uow.conn.execute(update(holds).where(holds.c.shop_id == shop_id, holds.c.hold_id == hold_id).values(
            status=int(HoldStatus.CAPTURED), settled_entry_id=entry_id))
        self._save(uow, acct)
        uow.emit(shop_id, events_pb2.PointsSpent(shop_id=shop_id, member_id=member_id, points=hold.amount,
                                                 kind=int(EntryKind.CAPTURE), redemption_id=hold.redemption_id,
                                                 balance_after=acct.available, occurred_at=to_timestamp(now)))
        return entry_id, member_id

    def release_hold(self, uow: UnitOfWork, *, shop_id: str, hold_id: str, reason: str = "released") -> tuple[
            int, str]:
        self.program(shop_id, uow.conn)
        member_id = self._hold_row(uow.conn, shop_id, hold_id).member_id
        acct = self._lock(uow, shop_id, member_id)
        entry_id = self._release(uow, acct, hold_id, utcnow(), reason=reason)
        self._save(uow, acct)
        return entry_id, member_id

    def _release(self, uow: UnitOfWork, acct: _Account, hold_id: str, now: datetime, *, reason: str) -> int:
        """Gives held points back to the lots they came from (the account is locked)."""
        hold = self._hold_row(uow.conn, acct.shop_id, hold_id)
        if hold.status == HoldStatus.RELEASED:
            return hold.settled_entry_id
        if hold.status == HoldStatus.CAPTURED:
            raise FailedPrecondition("the hold was captured", reason="HOLD_CAPTURED", subject=f"hold/{hold_id}")
        for part in uow.conn.execute(select(hold_lots.c.lot_id, hold_lots.c.amount).where(
                hold_lots.c.shop_id == acct.shop_id, hold_lots.c.hold_id == hold_id)).all():
            uow.conn.execute(update(lots).where(lots.c.id == part.lot_id).values(
                remaining=lots.c.remaining + part.amount))
        entry_id = self._post(uow, acct, EntryKind.RELEASE, hold.amount, -hold.amount,
                              Source(hold_id=hold_id, redemption_id=hold.redemption_id, reason=reason), now)
        uow.conn.execute(update(holds).where(holds.c.shop_id == acct.shop_id, holds.c.hold_id == hold_id).values(
            status=int(HoldStatus.RELEASED), settled_entry_id=entry_id))
        return entry_id

    def release_expired_holds(self, now: datetime | None = None, limit: int = 200) -> int:
        """Releases holds whose TTL passed; each in its own short transaction."""
        now = now or utcnow()
        due = self.db.read(lambda conn: conn.execute(
            select(holds.c.shop_id, holds.c.hold_id).where(holds.c.status == int(HoldStatus.HELD),
                                                           holds.c.expires_at <= now).limit(limit)).all())
        released = 0
        for shop_id, hold_id in due:
            def release(uow: UnitOfWork, shop_id: str = shop_id, hold_id: str = hold_id) -> None:
                hold = self._hold_row(uow.conn, shop_id, hold_id)
                acct = self._lock(uow, shop_id, hold.member_id)
                if self._hold_row(uow.conn, shop_id, hold_id).status == HoldStatus.HELD:
                    self._release(uow, acct, hold_id, now, reason="hold expired")
                    self._save(uow, acct)
            self.db.transact(release)
            released += 1
        return released

    def adjust(self, uow: UnitOfWork, *, shop_id: str, member_id: str, points: int, operator: str,
               reason: str) -> int:
        """An operator's correction: positive adds a lot, negative takes from the lots and may
        not go below zero."""
        v = Violations()
        v.check(points != 0 and abs(points) <= MAX_POINTS, "points", f"must be non-zero, at most {MAX_POINTS}")
        v.check(0 < len(operator.strip()) <= 100, "operator", "required, at most 100 characters")
        v.check(0 < len(reason.strip()) <= 500, "reason", "required, at most 500 characters")
        v.raise_if_any()
        now = utcnow()
        source = Source(operator=operator, reason=reason)
        if points > 0:
            program = self.program(shop_id, uow.conn)
            acct = self._lock(uow, shop_id, member_id)
            _refuse_closed(acct)
            entry_id, _ = self._credit(uow, program, acct, EntryKind.ADJUST, points, source, now)
        else:
            acct, _ = self._debit(uow, shop_id, member_id, -points, now)
            entry_id = self._post(uow, acct, EntryKind.ADJUST, points, 0, source, now)
        self._save(uow, acct)
        uow.emit(shop_id, events_pb2.PointsAdjusted(shop_id=shop_id, member_id=member_id, points=points,
                                                    kind=int(EntryKind.ADJUST), operator=operator, reason=reason,
                                                    balance_after=acct.available, occurred_at=to_timestamp(now)))
        return entry_id

    # ----- expiry -----------------------------------------------------------------------------

    def shops_with_due_lots(self, as_of: datetime) -> list[str]:
        return self.db.read(lambda conn: [r[0] for r in conn.execute(
            select(lots.c.shop_id).where(lots.c.expires_at <= as_of, lots.c.remaining > 0).distinct())])

    def expire_shop(self, uow: UnitOfWork, shop_id: str, as_of: datetime) -> tuple[int, int, int]:
        """积分过期 for one shop in set-based SQL: one EXPIRE entry per member, the balances and
        the lots updated by a statement each. Returns (members, lots, points)."""
        due = and_(lots.c.shop_id == shop_id, lots.c.expires_at <= as_of, lots.c.remaining > 0)
        per_member = (select(lots.c.member_id, _total(lots.c.remaining).label("points"),
                             func.count().label("lots")).where(due).group_by(lots.c.member_id).subquery())
        member_of = and_(accounts.c.shop_id == shop_id, accounts.c.member_id == per_member.c.member_id)
        member_due = and_(due, lots.c.member_id == accounts.c.member_id)
        if not self.db.is_sqlite:
            # One expiry run per shop at a time; then lock the accounts, as every spend does, and
            # only then read what is due, so that what a concurrent spend swept is not counted.
            uow.conn.execute(select(func.pg_advisory_xact_lock(func.hashtext("points-expire:" + shop_id))))
            uow.conn.execute(select(accounts.c.member_id).where(accounts.c.shop_id == shop_id, exists().where(
                member_due)).order_by(accounts.c.member_id).with_for_update()).all()
        moved = uow.conn.execute(
            select(per_member.c.member_id, per_member.c.points, per_member.c.lots,
                   (accounts.c.available - per_member.c.points).label("balance_after"))
            .join(accounts, member_of).order_by(per_member.c.member_id)).all()
        if not moved:
            return 0, 0, 0
        blank = literal("")
        uow.conn.execute(insert(ledger).from_select(
            ["shop_id", "member_id", "kind", "amount", "held_delta", "balance_after", "order_id", "action", "rule_id",
             "multiplier_id", "redemption_id", "hold_id", "operator", "reason", "reference", "created_at"],
            select(literal(shop_id), per_member.c.member_id, literal(int(EntryKind.EXPIRE)), -per_member.c.points,
                   literal(0), accounts.c.available - per_member.c.points, blank, literal(0), blank, blank, blank,
                   blank, blank, literal("expired"), blank, literal(as_of)).join(accounts, member_of)))
        uow.conn.execute(update(accounts).where(accounts.c.shop_id == shop_id, exists().where(member_due)).values(
            available=accounts.c.available - select(_total(lots.c.remaining)).where(member_due).scalar_subquery()))
        uow.conn.execute(update(lots).where(due).values(remaining=0))
        occurred = to_timestamp(as_of)
        for i in range(0, len(moved), 1000):
            uow.emit_many(shop_id, [events_pb2.PointsExpired(shop_id=shop_id, member_id=m.member_id, points=m.points,
                                                             balance_after=m.balance_after, occurred_at=occurred)
                                    for m in moved[i:i + 1000]])
        keys = [cache_key(shop_id, "points", "balance", m.member_id) for m in moved]
        invalidate_on_commit(uow, self.cache, keys)
        return len(moved), sum(m.lots for m in moved), sum(m.points for m in moved)

    # ----- reads --------------------------------------------------------------------------------

    def balance(self, shop_id: str, member_id: str) -> BalanceView:
        """Cached until the next write or the next expiry, whichever comes first. Lots past their
        date never count, even before the expiry job wrote them off."""
        key = cache_key(shop_id, "points", "balance", member_id)
        cached = self.cache.get(key)
        now = utcnow()
        if cached is not None:
            available, held, lifetime, expiry, amount = cached.decode().split("|")
            return BalanceView(shop_id, member_id, int(available), int(held), int(lifetime),
                               datetime.fromisoformat(expiry) if expiry else None, int(amount))
        self.program(shop_id)
        view = self.db.read(lambda conn: self.read_balance(conn, shop_id, member_id, now))
        ttl = self.cache_ttl
        if view.next_expiry_at is not None:
            ttl = min(ttl, (view.next_expiry_at - now).total_seconds())
        if ttl > 0:
            expiry = view.next_expiry_at.isoformat() if view.next_expiry_at else ""
            self.cache.add(key, f"{view.available}|{view.held}|{view.lifetime_earned}|{expiry}|"
                                f"{view.next_expiry_amount}".encode(), ttl)
        return view

    @staticmethod
    def read_balance(conn: Connection, shop_id: str, member_id: str, now: datetime) -> BalanceView:
        """The balance as `conn`'s transaction sees it."""
        row = conn.execute(select(accounts).where(accounts.c.shop_id == shop_id,
                                                  accounts.c.member_id == member_id)).first()
        if row is None:
            raise NotFound(f"member {member_id!r} has no points account in shop {shop_id!r}",
                           reason="MEMBER_NOT_FOUND", metadata={"member_id": member_id})
        mine = _member_lots(shop_id, member_id)
        overdue = conn.execute(select(_total(lots.c.remaining)).where(
            mine, lots.c.remaining > 0, lots.c.expires_at <= now)).scalar()
        upcoming = conn.execute(select(lots.c.expires_at, _total(lots.c.remaining)).where(
            mine, lots.c.remaining > 0, lots.c.expires_at > now).group_by(lots.c.expires_at)
            .order_by(lots.c.expires_at).limit(1)).first()
        return BalanceView(shop_id, member_id, row.available - overdue, row.held, row.lifetime_earned,
                           upcoming[0] if upcoming else None, int(upcoming[1]) if upcoming else 0)

    def ledger_page(self, conn: Connection, *, shop_id: str, member_id: str, limit: int, before_id: int | None,
                    kinds: Iterable[int], start: datetime | None, end: datetime | None) -> list[Row]:
        self.program(shop_id, conn)
        if conn.execute(select(accounts.c.member_id).where(accounts.c.shop_id == shop_id,
                                                           accounts.c.member_id == member_id)).first() is None:
            raise NotFound(f"member {member_id!r} has no points account", reason="MEMBER_NOT_FOUND",
                           metadata={"member_id": member_id})
        query = (select(ledger).where(ledger.c.shop_id == shop_id, ledger.c.member_id == member_id)
                 .order_by(ledger.c.id.desc()).limit(limit))
        kinds = list(kinds)
        if kinds:
            query = query.where(ledger.c.kind.in_(kinds))
        if before_id is not None:
            query = query.where(ledger.c.id < before_id)
        if start is not None:
            query = query.where(ledger.c.created_at >= start)
        if end is not None:
            query = query.where(ledger.c.created_at < end)
        return list(conn.execute(query))

    def expiring(self, conn: Connection, *, shop_id: str, within_days: int, limit: int,
                 after: str | None) -> list[Row]:
        """积分到期提醒: members whose points expire within the window."""
        if not 0 < within_days <= 366:
            raise InvalidArgument([("within_days", "must be 1..366")])
        self.program(shop_id, conn)
        now = utcnow()
        query = (select(lots.c.member_id, _total(lots.c.remaining).label("points"),
                        func.min(lots.c.expires_at).label("first")).where(
            lots.c.shop_id == shop_id, lots.c.remaining > 0, lots.c.expires_at > now,
            lots.c.expires_at <= now + timedelta(days=within_days))
            .group_by(lots.c.member_id).order_by(lots.c.member_id).limit(limit))
        if after:
            query = query.where(lots.c.member_id > after)
        return list(conn.execute(query))

    def liability(self, conn: Connection, *, shop_id: str, monthly: bool, start: datetime | None,
                  end: datetime | None) -> dict:
        """积分负债: what is outstanding and what it is worth, the flow per period, and the
        expiry schedule ahead, all by the shop's calendar."""
        program = self.program(shop_id, conn)
        zone = program.zone
        now = utcnow()
        today = domain.local_date(now, zone)
        if monthly:
            first = domain.add_months(today.replace(day=1), -11)
            default_start = domain.local_midnight_utc(first, zone)
        else:
            default_start = domain.local_midnight_utc(today - timedelta(days=29), zone)
        start = start or default_start
        end = end or domain.local_midnight_utc(today + timedelta(days=1), zone)
        if start >= end or (end - start).days > 3700:
            raise InvalidArgument([("end_time", "must be after start_time, within about ten years")])
        boundaries = _period_boundaries(start, end, zone, monthly)
        outstanding = conn.execute(select(_total(accounts.c.available + accounts.c.held),
                                          func.count()).where(accounts.c.shop_id == shop_id,
                                                              (accounts.c.available + accounts.c.held) > 0)).one()
        period = _bucket(ledger.c.created_at, boundaries)
        flows = conn.execute(select(period.label("p"), ledger.c.kind, _total(ledger.c.amount)).where(
            ledger.c.shop_id == shop_id, ledger.c.created_at >= start, ledger.c.created_at < end)
            .group_by(period, ledger.c.kind)).all()
        periods = [{"period": label, "earned": 0, "spent": 0, "expired": 0, "adjusted": 0}
                   for label, _, _ in boundaries]
        column = {EntryKind.EARN: "earned", EntryKind.SPEND: "spent", EntryKind.HOLD: "spent",
                  EntryKind.RELEASE: "spent", EntryKind.EXPIRE: "expired", EntryKind.ADJUST: "adjusted",
                  EntryKind.CLAWBACK: "adjusted", EntryKind.FORFEIT: "adjusted"}
        for index, kind, amount in flows:
            name = column.get(EntryKind(kind))
            if name is not None and index is not None:
                # Spends show as positive amounts spent; a released hold gives back what it held.
                periods[index][name] += -amount if name in ("spent", "expired") else amount
        schedule_bounds = _period_boundaries(now, domain.local_midnight_utc(
            domain.add_months(today.replace(day=1), 25), zone), zone, True)
        bucket = _bucket(lots.c.expires_at, schedule_bounds)
        ahead = conn.execute(select(bucket, _total(lots.c.remaining)).where(
            lots.c.shop_id == shop_id, lots.c.remaining > 0, lots.c.expires_at > now).group_by(bucket)).all()
        schedule = {index: amount for index, amount in ahead if index is not None}
        return {
            "outstanding": int(outstanding[0]),
            "value_fen": int(outstanding[0]) * 100 // program.points_per_yuan,
            "members": int(outstanding[1]),
            "periods": periods,
            "schedule": [(schedule_bounds[i][0], int(schedule[i])) for i in sorted(schedule)],
        }

    # ----- the daily pool (每日瓜分积分) ----------------------------------------------------------

    def join_pool(self, uow: UnitOfWork, *, shop_id: str, member_id: str) -> tuple[str, int]:
        program = self.program(shop_id, uow.conn)
        if program.daily_pool_points <= 0:
            raise FailedPrecondition("the shop has no daily pool", reason="NO_DAILY_POOL", subject=f"shop/{shop_id}")
        acct = self._lock(uow, shop_id, member_id)
        _refuse_closed(acct)
        day = domain.local_date(utcnow(), program.zone).isoformat()
        try:
            with uow.conn.begin_nested():
                uow.conn.execute(insert(pool_entries), {"shop_id": shop_id, "day": day, "member_id": member_id})
        except IntegrityError:
            pass  # joined already today
        count = uow.conn.execute(select(func.count()).where(pool_entries.c.shop_id == shop_id,
                                                            pool_entries.c.day == day)).scalar()
        return day, int(count)

    def settle_pool(self, uow: UnitOfWork, *, shop_id: str, day: str) -> tuple[str, int, int, bool]:
        """Splits the pool evenly among the day's participants, once; the remainder below one
        point each is not paid out. Returns (day, participants, points each, already settled)."""
        program = self.program(shop_id, uow.conn)
        today = domain.local_date(utcnow(), program.zone)
        if day:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
                raise InvalidArgument([("day", "a date such as 2026-11-23")])
            try:
                settled_day = date.fromisoformat(day)
            except ValueError as exc:
                raise InvalidArgument([("day", "a date such as 2026-11-23")]) from exc
            if settled_day > today:
                raise InvalidArgument([("day", "a day to come cannot be settled")])
        else:
            day = (today - timedelta(days=1)).isoformat()
        done = uow.conn.execute(select(pool_settlements).where(pool_settlements.c.shop_id == shop_id,
                                                               pool_settlements.c.day == day)).first()
        if done is not None:
            return day, done.participants, done.points_each, True
        members = [r[0] for r in uow.conn.execute(select(pool_entries.c.member_id).where(
            pool_entries.c.shop_id == shop_id, pool_entries.c.day == day).order_by(pool_entries.c.member_id))]
        each = program.daily_pool_points // len(members) if members else 0
        now = utcnow()
        try:
            with uow.conn.begin_nested():
                uow.conn.execute(insert(pool_settlements), {"shop_id": shop_id, "day": day,
                                                            "participants": len(members), "points_each": each,
                                                            "settled_at": now})
        except IntegrityError:  # settled concurrently
            return day, len(members), each, True
        if each > 0:
            for member_id in members:
                acct = self._lock(uow, shop_id, member_id)
                if not acct.closed:
                    self._earn(uow, program, acct, each, Source(action=int(Action.DAILY_POOL),
                                                                reference=f"daily-pool:{day}"), now)
                    self._save(uow, acct)
        return day, len(members), each, False

    def shops_with_pools(self) -> list[str]:
        return self.db.read(lambda conn: [r[0] for r in conn.execute(
            select(programs.c.shop_id).where(programs.c.daily_pool_points > 0))])


def _total(column):  # noqa: ANN001, ANN202 - a SQL expression
    """SUM as a whole number on every backend (PostgreSQL sums bigints to numeric)."""
    return cast(func.coalesce(func.sum(column), 0), BigInteger)


def _check_points(points: int) -> None:
    if not 0 < points <= MAX_POINTS:
        raise InvalidArgument([("points", f"must be 1..{MAX_POINTS}")])


def _refuse_closed(acct: _Account) -> None:
    if acct.closed:
        raise FailedPrecondition("the member left; the account is closed", reason="ACCOUNT_CLOSED",
                                 subject=f"member/{acct.member_id}")


def _period_boundaries(start: datetime, end: datetime, zone: ZoneInfo, monthly: bool
                       ) -> list[tuple[str, datetime, datetime]]:
    """Shop-local days or months covering [start, end), as (label, utc start, utc end)."""
    day = domain.local_date(start, zone)
    first = day.replace(day=1) if monthly else day
    out = []
    while True:
        nxt = domain.add_months(first, 1) if monthly else first + timedelta(days=1)
        lo, hi = domain.local_midnight_utc(first, zone), domain.local_midnight_utc(nxt, zone)
        if lo >= end:
            return out
        out.append((first.strftime("%Y-%m") if monthly else first.isoformat(), max(lo, start), min(hi, end)))
        first = nxt


def _bucket(column, boundaries: list[tuple[str, datetime, datetime]]):  # noqa: ANN001, ANN202
    """The index of the period a timestamp falls in, as one CASE."""
    if not boundaries:
        return literal(None)
    return case(*[((column >= lo) & (column < hi), i) for i, (_, lo, hi) in enumerate(boundaries)], else_=None)
