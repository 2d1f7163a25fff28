"""The shop's points program, earn rules and multipliers (积分规则): created with their defaults
when a shop first shows up, changed by the shop within the domain's limits."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from services.kit.errors import NotFound
from services.kit.storage import Database, UnitOfWork
from services.kit.timeutil import utcnow
from services.points import commands, domain, reasons
from services.points.domain import (
    Action,
    Caps,
    EarnRule,
    ExpiryPolicy,
    LeavePolicy,
    Multiplier,
    MultiplierKind,
    Program,
)
from services.points.tables import earn_rules, multipliers, programs

if TYPE_CHECKING:
    from services.points.service import PointsService

T = TypeVar("T")


def _program_from_row(row: Row) -> Program:
    return Program(row.shop_id, row.time_zone, ExpiryPolicy(row.expiry_policy), row.expiry_months,
                   row.points_per_yuan, LeavePolicy(row.leave_policy), row.daily_pool_points,
                   row.default_hold_ttl_seconds)


def _program_values(p: Program) -> dict:
    return {"time_zone": p.time_zone, "expiry_policy": int(p.expiry_policy), "expiry_months": p.expiry_months,
            "points_per_yuan": p.points_per_yuan, "leave_policy": int(p.leave_policy),
            "daily_pool_points": p.daily_pool_points, "default_hold_ttl_seconds": p.default_hold_ttl_seconds}


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


def _read_program(conn: Connection, shop_id: str, *, lock: bool = False) -> Program | None:
    query = select(programs).where(programs.c.shop_id == shop_id)
    row = conn.execute(query.with_for_update() if lock else query).first()
    return _program_from_row(row) if row is not None else None


def _no_program(shop_id: str) -> NotFound:
    return NotFound(f"shop {shop_id!r} has no points program", reason=reasons.PROGRAM_NOT_FOUND,
                    metadata={"shop_id": shop_id})


def _on(db: Database, conn: Connection | None, read: Callable[[Connection], T]) -> T:
    """`read` in the caller's transaction if it has one, else in a read of its own."""
    return read(conn) if conn is not None else db.read(read)


def read_program(db: Database, shop_id: str, conn: Connection | None) -> Program:
    """The shop's program from the database, or NOT_FOUND (the loader of PointsService.programs)."""
    program = _on(db, conn, lambda c: _read_program(c, shop_id))
    if program is None:
        raise _no_program(shop_id)
    return program


def read_rules(db: Database, shop_id: str, conn: Connection | None) -> Mapping[Action, EarnRule]:
    """The shop's earn rules by action, read-only (the loader of PointsService.earn_rules)."""
    return MappingProxyType(_on(db, conn, lambda c: rules(c, shop_id)))


def read_multipliers(db: Database, shop_id: str, conn: Connection | None) -> tuple[Multiplier, ...]:
    """The shop's multipliers, oldest first (the loader of PointsService.multipliers)."""
    return tuple(_on(db, conn, lambda c: shop_multipliers(c, shop_id)))


def load_program(svc: PointsService, shop_id: str, conn: Connection | None = None) -> Program:
    """The shop's program (memoised for a moment), or NOT_FOUND for a shop points never heard of."""
    return svc.programs.get(shop_id, conn)


def earn_rules_of(svc: PointsService, shop_id: str, conn: Connection | None = None) -> Mapping[Action, EarnRule]:
    """The shop's earn rules by action, memoised like the program (events read them one by one)."""
    return svc.earn_rules.get(shop_id, conn)


def multipliers_of(svc: PointsService, shop_id: str, conn: Connection | None = None) -> tuple[Multiplier, ...]:
    """The shop's multipliers, oldest first, memoised like the program."""
    return svc.multipliers.get(shop_id, conn)


def ensure_program(svc: PointsService, uow: UnitOfWork, shop_id: str, time_zone: str = "") -> Program:
    """The shop's points program, created with the default rules the first time a shop shows up
    (by its ProgramChanged event, or any later event); the time zone follows membership's."""
    if not time_zone:  # every event of a known shop: the memo answers
        try:
            return load_program(svc, shop_id, uow.conn)
        except NotFound:
            pass
    program = _read_program(uow.conn, shop_id)
    if program is not None:
        if time_zone and program.time_zone != time_zone:
            uow.conn.execute(update(programs).where(programs.c.shop_id == shop_id)
                             .values(time_zone=time_zone, updated_at=utcnow()))
            svc.programs.invalidate(uow, shop_id)
            return dataclasses.replace(program, time_zone=time_zone)
        return program
    now = utcnow()
    created = domain.default_program(shop_id, time_zone)
    for memo in (svc.programs, svc.earn_rules, svc.multipliers):
        memo.invalidate(uow, shop_id)
    try:
        with uow.conn.begin_nested():  # another worker may be creating it from another event
            uow.conn.execute(insert(programs), {"shop_id": shop_id, "created_at": now, "updated_at": now,
                                                **_program_values(created)})
            uow.conn.execute(insert(earn_rules), [{"shop_id": shop_id, "updated_at": now, **_rule_values(r)}
                                                  for r in domain.default_rules()])
            uow.conn.execute(insert(multipliers), [{"shop_id": shop_id, "created_at": now, **_multiplier_values(m)}
                                                   for m in domain.default_multipliers()])
    except IntegrityError:
        pass
    return _program_from_row(uow.conn.execute(select(programs).where(programs.c.shop_id == shop_id)).one())


def update_program(svc: PointsService, uow: UnitOfWork, cmd: commands.UpdateProgram) -> Program:
    """Changes the settings the command names; the others stay as they are."""
    # Read under a lock, not from the memo: the settings not named must stay as they are now.
    current = _read_program(uow.conn, cmd.shop_id, lock=True)
    if current is None:
        raise _no_program(cmd.shop_id)
    program = current.updated(cmd.changes)
    values = _program_values(program)
    del values["time_zone"]  # it follows the membership program
    uow.conn.execute(update(programs).where(programs.c.shop_id == cmd.shop_id).values(updated_at=utcnow(), **values))
    svc.programs.invalidate(uow, cmd.shop_id)
    return program


def rules(conn: Connection, shop_id: str) -> dict[Action, EarnRule]:
    """The shop's earn rules by action."""
    rows = conn.execute(select(earn_rules).where(earn_rules.c.shop_id == shop_id)).all()
    return {Action(r.action): _rule_from_row(r) for r in rows}


def upsert_rule(svc: PointsService, uow: UnitOfWork, cmd: commands.UpsertRule) -> EarnRule:
    """Sets the settings the command names of the shop's rule for one action (there is one rule
    per action); a rule the shop does not have yet starts from its default."""
    load_program(svc, cmd.shop_id, uow.conn)
    key = (earn_rules.c.shop_id == cmd.shop_id) & (earn_rules.c.action == int(cmd.action))
    row = uow.conn.execute(select(earn_rules).where(key)).first()
    current = _rule_from_row(row) if row is not None else domain.starting_rule(cmd.action)
    rule = current.updated(cmd.changes)
    values = {"updated_at": utcnow(), **_rule_values(rule)}
    if row is not None:
        uow.conn.execute(update(earn_rules).where(key).values(**values))
    else:
        uow.conn.execute(insert(earn_rules), {"shop_id": cmd.shop_id, **values})
    svc.earn_rules.invalidate(uow, cmd.shop_id)
    return rule


def shop_multipliers(conn: Connection, shop_id: str) -> list[Multiplier]:
    """The shop's multipliers, oldest first."""
    rows = conn.execute(select(multipliers).where(multipliers.c.shop_id == shop_id)
                        .order_by(multipliers.c.created_at, multipliers.c.multiplier_id)).all()
    return [_multiplier_from_row(r) for r in rows]


def create_multiplier(svc: PointsService, uow: UnitOfWork, cmd: commands.CreateMultiplier) -> Multiplier:
    cmd.multiplier.check()
    load_program(svc, cmd.shop_id, uow.conn)
    created = dataclasses.replace(cmd.multiplier, multiplier_id="x_" + secrets.token_hex(6))
    uow.conn.execute(insert(multipliers), {"shop_id": cmd.shop_id, "created_at": utcnow(),
                                           **_multiplier_values(created)})
    svc.multipliers.invalidate(uow, cmd.shop_id)
    return created


@dataclass(frozen=True)
class Deleted:
    multiplier_id: str


def delete_multiplier(svc: PointsService, uow: UnitOfWork, cmd: commands.DeleteMultiplier) -> Deleted:
    load_program(svc, cmd.shop_id, uow.conn)
    gone = uow.conn.execute(multipliers.delete().where(multipliers.c.shop_id == cmd.shop_id,
                                                       multipliers.c.multiplier_id == cmd.multiplier_id))
    if gone.rowcount == 0:
        raise NotFound(f"no multiplier {cmd.multiplier_id!r}", reason=reasons.MULTIPLIER_NOT_FOUND)
    svc.multipliers.invalidate(uow, cmd.shop_id)
    return Deleted(cmd.multiplier_id)


def list_rules(svc: PointsService, query: commands.ShopQuery) -> list[EarnRule]:
    """The shop's earn rules in the order of their actions."""
    def read(conn: Connection) -> list[EarnRule]:
        load_program(svc, query.shop_id, conn)
        by_action = rules(conn, query.shop_id)
        return [by_action[a] for a in sorted(by_action)]

    return svc.db.read(read)


def list_multipliers(svc: PointsService, query: commands.ShopQuery) -> list[Multiplier]:
    """The shop's multipliers, oldest first."""
    def read(conn: Connection) -> list[Multiplier]:
        load_program(svc, query.shop_id, conn)
        return shop_multipliers(conn, query.shop_id)

    return svc.db.read(read)
