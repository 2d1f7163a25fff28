"""Programs: a shop's loyalty program, its API keys and its tier ladder configuration."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from loyalty.membership.v1 import events_pb2
from loyalty.membership.v1 import membership_service_pb2 as membership_pb
from sqlalchemy import Connection, insert, literal, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from services.kit.errors import AlreadyExists, NotFound
from services.kit.memo import ShopMemo
from services.kit.storage import Database, UnitOfWork
from services.kit.timeutil import to_timestamp, utcnow
from services.membership import commands, domain, lifecycle, reasons, tiers
from services.membership.domain import DowngradePolicy, Ladder, QualificationMode, Tier, TierChangeReason
from services.membership.rules import ProgramRules, rules_from_json, rules_json
from services.membership.tables import api_keys, members, programs

if TYPE_CHECKING:
    from services.membership.context import Membership

@dataclass(frozen=True)
class Program:
    shop_id: str
    name: str
    time_zone: str
    require_follow: bool
    ladder: Ladder
    created_at: datetime
    updated_at: datetime
    rules: ProgramRules = ProgramRules()  # join threshold parts, join benefit, tier validity


@dataclass(frozen=True)
class IssuedKey:
    key_id: str
    api_key: str


def _ladder_json(ladder: Ladder) -> str:
    return json.dumps(
        {"mode": int(ladder.mode), "policy": int(ladder.policy), "tiers": [asdict(t) for t in ladder.tiers]},
        ensure_ascii=False,
    )


def _ladder_from_json(raw: str) -> Ladder:
    data = json.loads(raw)
    ladder_tiers = tuple(Tier(**{**t, "benefits": tuple(t["benefits"])}) for t in data["tiers"])
    return Ladder(ladder_tiers, QualificationMode(data["mode"]), DowngradePolicy(data["policy"]))


def _program(row: Row) -> Program:
    return Program(row.shop_id, row.name, row.time_zone, row.require_follow, _ladder_from_json(row.tiers),
                   row.created_at, row.updated_at, rules_from_json(row.rules))


def _not_found(shop_id: str) -> NotFound:
    return NotFound(f"shop {shop_id!r} has no loyalty program", reason=reasons.PROGRAM_NOT_FOUND,
                    metadata={"shop_id": shop_id})


class ProgramMemo:
    """Programs change rarely and are read on every call: the kit's per-shop memo of them."""

    def __init__(self, db: Database):
        self._db = db
        self._memo: ShopMemo[Program] = ShopMemo(self._load)

    def get(self, shop_id: str, conn: Connection | None = None) -> Program:
        """The shop's program (memoised for a moment); NOT_FOUND when the shop has none."""
        return self._memo.get(shop_id, conn)

    def _load(self, shop_id: str, conn: Connection | None) -> Program:
        query = select(programs).where(programs.c.shop_id == shop_id)
        row = conn.execute(query).first() if conn is not None else self._db.read(lambda c: c.execute(query).first())
        if row is None:
            raise _not_found(shop_id)
        return _program(row)

    def for_update(self, uow: UnitOfWork, shop_id: str) -> Program:
        """The program, locked until the unit of work ends (changes to it and its ladder queue)."""
        row = uow.conn.execute(select(programs).where(programs.c.shop_id == shop_id).with_for_update()).first()
        if row is None:
            raise _not_found(shop_id)
        return _program(row)

    def forget(self, uow: UnitOfWork, shop_id: str) -> None:
        """For a transaction that changes the program: not memoised until it committed."""
        self._memo.invalidate(uow, shop_id)


def _ladder_tiers(ladder: Ladder) -> list[membership_pb.Tier]:
    """The ladder as ProgramChanged carries it (rewards prices carts with the tiers' discounts),
    with the thresholds of its qualification mode, as GetProgram shows them."""
    shown = [domain.shown(t, ladder.mode) for t in ladder.tiers]
    return [membership_pb.Tier(level=t.level, code=t.code, name=t.name, min_spend_fen=t.min_spend_fen,
                               min_trades=t.min_trades, min_growth=t.min_growth, discount_bp=t.discount_bp,
                               points_rate_milli=t.points_rate_milli, benefits=list(t.benefits))
            for t in shown]


def create_program(ctx: Membership, uow: UnitOfWork, cmd: commands.CreateProgram) -> tuple[Program, IssuedKey]:
    """A shop's program with the default ladder unless it brings its own, and its first API key."""
    now = utcnow()
    ladder = Ladder(cmd.tiers or domain.default_tiers(cmd.mode), cmd.mode, cmd.policy)
    try:
        uow.conn.execute(insert(programs), {
            "shop_id": cmd.shop_id, "name": cmd.name, "time_zone": cmd.time_zone,
            "require_follow": cmd.require_follow, "qualification_mode": int(cmd.mode),
            "downgrade_policy": int(cmd.policy), "tiers": _ladder_json(ladder), "created_at": now, "updated_at": now,
            "rules": rules_json(cmd.rules),
        })
    except IntegrityError as exc:
        raise AlreadyExists(f"shop {cmd.shop_id!r} already has a program", reason=reasons.PROGRAM_EXISTS,
                            metadata={"shop_id": cmd.shop_id}) from exc
    key = issue_api_key(ctx, uow, commands.IssueApiKey(cmd.shop_id, "first key"))
    ctx.programs.forget(uow, cmd.shop_id)
    uow.emit(cmd.shop_id, events_pb2.ProgramChanged(shop_id=cmd.shop_id, name=cmd.name, time_zone=cmd.time_zone,
                                                    created=True, changed_at=to_timestamp(now),
                                                    tiers=_ladder_tiers(ladder)))
    return Program(cmd.shop_id, cmd.name, cmd.time_zone, cmd.require_follow, ladder, now, now, cmd.rules), key


def update_program(ctx: Membership, uow: UnitOfWork, cmd: commands.UpdateProgram) -> Program:
    current = ctx.programs.for_update(uow, cmd.shop_id)
    now = utcnow()
    program = Program(
        cmd.shop_id, current.name if cmd.name is None else cmd.name,
        current.time_zone if cmd.time_zone is None else cmd.time_zone,
        current.require_follow if cmd.require_follow is None else cmd.require_follow,
        current.ladder, current.created_at, now, cmd.rules(current.rules))
    uow.conn.execute(update(programs).where(programs.c.shop_id == cmd.shop_id).values(
        name=program.name, time_zone=program.time_zone, require_follow=program.require_follow, updated_at=now,
        rules=rules_json(program.rules)))
    ctx.programs.forget(uow, cmd.shop_id)
    lifecycle.validity_changed(ctx, uow, current, program, now)
    uow.emit(cmd.shop_id, events_pb2.ProgramChanged(shop_id=cmd.shop_id, name=program.name,
                                                    time_zone=program.time_zone, changed_at=to_timestamp(now),
                                                    tiers=_ladder_tiers(program.ladder)))
    return program


def issue_api_key(ctx: Membership, uow: UnitOfWork, cmd: commands.IssueApiKey) -> IssuedKey:
    if uow.conn.execute(select(programs.c.shop_id).where(programs.c.shop_id == cmd.shop_id)).first() is None:
        raise _not_found(cmd.shop_id)
    key_id, key = ctx.keyring.issue(cmd.shop_id)
    uow.conn.execute(insert(api_keys), {"shop_id": cmd.shop_id, "key_id": key_id, "label": cmd.label,
                                        "created_at": utcnow()})
    return IssuedKey(key_id, key)


def configure_tiers(ctx: Membership, uow: UnitOfWork, cmd: commands.ConfigureTiers) -> Program:
    """Replaces the ladder. Nobody moves, except members at a level the new ladder lacks, who go
    to its top level. ProgramChanged tells the other services the new ladder (its discounts)."""
    current = ctx.programs.for_update(uow, cmd.shop_id)
    ladder = Ladder(cmd.tiers, cmd.mode, cmd.policy)
    now = utcnow()
    uow.conn.execute(update(programs).where(programs.c.shop_id == cmd.shop_id).values(
        tiers=_ladder_json(ladder), qualification_mode=int(cmd.mode), downgrade_policy=int(cmd.policy),
        updated_at=now))
    ctx.programs.forget(uow, cmd.shop_id)
    tiers.move_setwise(ctx, uow, cmd.shop_id, ladder, literal(ladder.top), members.c.tier_level > ladder.top,
                       TierChangeReason.LADDER_CHANGED, now)
    uow.emit(cmd.shop_id, events_pb2.ProgramChanged(shop_id=cmd.shop_id, name=current.name,
                                                    time_zone=current.time_zone, changed_at=to_timestamp(now),
                                                    tiers=_ladder_tiers(ladder)))
    return Program(cmd.shop_id, current.name, current.time_zone, current.require_follow, ladder,
                   current.created_at, now, current.rules)
