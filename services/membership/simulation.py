"""What-if before ConfigureTiers (SimulateTierRules): the moves a proposed ladder would cause,
computed set-wise with the same SQL the changes themselves use, and changing nothing.

ConfigureTiers moves members at a level the new ladder lacks to its top level; ReevaluateTiers
then applies tiers.target_level_sql. The simulation composes the two in one GROUP BY, so its
counts are what ConfigureTiers + ReevaluateTiers would do to the active members now."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, case, func, literal, select

from services.kit.errors import Violations
from services.kit.validation import check_ids
from services.membership import domain, tiers
from services.membership.domain import Ladder, MemberStatus
from services.membership.tables import members

if TYPE_CHECKING:
    from services.membership.context import Membership

DEFAULT_SAMPLE = 5
MAX_SAMPLE = 20


@dataclass(frozen=True)
class Move:
    from_level: int
    to_level: int
    count: int
    sample: list[str]


@dataclass(frozen=True)
class Simulation:
    moves: list[Move]
    upgraded: int
    downgraded: int
    unchanged: int


def validate(shop_id: str, ladder: Ladder, sample_size: int) -> int:
    """The ladder checked as ConfigureTiers checks it; returns the sample size to use."""
    v: Violations = check_ids(shop_id)
    domain.validate_tiers(list(ladder.tiers), v, ladder.mode)
    v.check(0 <= sample_size <= MAX_SAMPLE, "sample_size", f"must be 0..{MAX_SAMPLE} (0: {DEFAULT_SAMPLE})")
    v.raise_if_any()
    return sample_size or DEFAULT_SAMPLE


def simulate(ctx: Membership, shop_id: str, ladder: Ladder, sample_size: int) -> Simulation:
    size = validate(shop_id, ladder, sample_size)

    def read(conn: Connection) -> Simulation:
        ctx.programs.get(shop_id, conn)
        # After ConfigureTiers: nobody above the new top level.
        current = case((members.c.tier_level > ladder.top, literal(ladder.top)), else_=members.c.tier_level)
        target = tiers.target_level_sql(ladder, current=current)
        # A subquery, so that the GROUP BY names columns (PostgreSQL would not match the CASE's
        # bound parameters written twice).
        levels = select(members.c.member_id, members.c.tier_level.label("from_level"), target.label("to_level")).where(
            members.c.shop_id == shop_id, members.c.status == MemberStatus.ACTIVE).subquery()
        rows = conn.execute(select(levels.c.from_level, levels.c.to_level, func.count().label("n"))
                            .group_by(levels.c.from_level, levels.c.to_level)).all()
        moves, unchanged = [], 0
        for row in sorted(rows, key=lambda r: (r.from_level, r.to_level)):
            if row.from_level == row.to_level:
                unchanged += row.n
                continue
            sample = [r.member_id for r in conn.execute(
                select(levels.c.member_id).where(levels.c.from_level == row.from_level,
                                                 levels.c.to_level == row.to_level)
                .order_by(levels.c.member_id).limit(size))]
            moves.append(Move(row.from_level, row.to_level, row.n, sample))
        return Simulation(moves, sum(m.count for m in moves if m.to_level > m.from_level),
                          sum(m.count for m in moves if m.to_level < m.from_level), unchanged)

    return ctx.db.read(read)
