"""Segments (人群): saved rule segments and the predefined groups, previewed, counted, listed and
streamed through one compiled SQL query each (compiler.py). Every query is scoped to its shop:
another shop's segment is not found.

A HAS_TAG condition naming a tag that does not exist (or no longer exists) is accepted and
matches nobody: tags come and go independently of the segments that mention them."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy import Connection, Executable, Select, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from services.kit.cache import cache_key
from services.kit.errors import AlreadyExists, FailedPrecondition, NotFound, Violations
from services.kit.storage import UnitOfWork, upsert
from services.kit.timeutil import utcnow
from services.segments import commands, groups, reasons, rules
from services.segments.compiler import members_query
from services.segments.service import SegmentsService
from services.segments.tables import member_facts, segment_sizes, segments

IS_MEMBER_SECONDS = 1.0  # how long an IsMember answer is served from the cache (a checkout asks in bursts)
STREAM_BATCH = 1000


@dataclass(frozen=True)
class Segment:
    shop_id: str
    segment_id: str
    name: str
    description: str
    rule: rules.Rule
    group: groups.Group | None = None
    last_count: int = 0
    count_time: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def predefined(self) -> bool:
        return self.group is not None


@dataclass(frozen=True)
class Preview:
    count: int
    sample: list[str]


@dataclass(frozen=True)
class Page:
    segments: list[Segment]
    next_after: tuple[str, str] | None


def _new_id() -> str:
    return "sg_" + secrets.token_hex(12)


def _not_found(segment_id: str) -> NotFound:
    return NotFound(f"no segment {segment_id!r} in this shop", reason=reasons.SEGMENT_NOT_FOUND,
                    metadata={"segment_id": segment_id})


def _read_only(segment_id: str) -> FailedPrecondition:
    return FailedPrecondition(f"{segment_id!r} is a predefined group: change it through UpdateGroupSettings",
                              reason=reasons.PREDEFINED_READ_ONLY, subject=f"segments/{segment_id}",
                              metadata={"segment_id": segment_id})


def _key(shop_id: str, segment_id: str) -> object:
    return and_(segments.c.shop_id == shop_id, segments.c.segment_id == segment_id)


def _counts(conn: Connection, shop_id: str, segment_ids: list[str]) -> dict[str, tuple[int, datetime]]:
    """Each segment's latest recorded size and when it was counted (its latest shop-local day)."""
    if not segment_ids:
        return {}
    s = segment_sizes.c
    latest = (select(s.segment_id, func.max(s.day).label("day"))
              .where(s.shop_id == shop_id, s.segment_id.in_(segment_ids)).group_by(s.segment_id).subquery())
    rows = conn.execute(select(s.segment_id, s.count, s.counted_at).join_from(
        segment_sizes, latest, and_(s.segment_id == latest.c.segment_id, s.day == latest.c.day))
        .where(s.shop_id == shop_id))
    return {r.segment_id: (r.count, r.counted_at) for r in rows}


def _with_counts(conn: Connection, shop_id: str, found: list[Segment]) -> list[Segment]:
    counts = _counts(conn, shop_id, [s.segment_id for s in found])
    return [replace(s, last_count=counts[s.segment_id][0], count_time=counts[s.segment_id][1])
            if s.segment_id in counts else s for s in found]


def _predefined(group: groups.Group, shop_id: str, settings: groups.Settings,
                changed_at: datetime | None) -> Segment:
    return Segment(shop_id=shop_id, segment_id=group.segment_id, name=groups.name_of(group),
                   description=groups.description_of(group, settings), rule=groups.rule_of(group, settings),
                   group=group, updated_at=changed_at)


def _saved(row: object) -> Segment:
    return Segment(shop_id=row.shop_id, segment_id=row.segment_id, name=row.name, description=row.description,
                   rule=rules.from_json(row.rule), created_at=row.created_at, updated_at=row.updated_at)


def _find(conn: Connection, shop_id: str, segment_id: str) -> Segment:
    """The saved or predefined segment (without its count), or NOT_FOUND."""
    group = groups.BY_ID.get(segment_id)
    if group is not None:
        settings, changed_at = groups.read_settings(conn, shop_id)
        return _predefined(group, shop_id, settings, changed_at)
    row = conn.execute(select(segments).where(_key(shop_id, segment_id))).first()
    if row is None:
        raise _not_found(segment_id)
    return _saved(row)


def members_select(service: SegmentsService, conn: Connection, shop_id: str, segment_id: str,
                   now: datetime) -> Select:
    """SELECT member_facts.member_id of the members a saved or predefined segment selects at `now`
    (NOT_FOUND SEGMENT_NOT_FOUND for an id the shop has no segment by)."""
    return members_query(shop_id, _find(conn, shop_id, segment_id).rule, now)


def _count_of(query: Select) -> Select:
    return select(func.count()).select_from(query.subquery())


# ----- preview and saved segments -------------------------------------------------------------------


def preview(service: SegmentsService, cmd: commands.PreviewSegment) -> Preview:
    query = members_query(cmd.shop_id, cmd.rule, utcnow())

    def read(conn: Connection) -> Preview:
        count = conn.execute(_count_of(query)).scalar_one()
        sample = list(conn.execute(query.order_by(member_facts.c.member_id).limit(cmd.sample)).scalars())
        return Preview(count, sample)

    return service.db.read(read)


def _check_name(conn: Connection, shop_id: str, name: str, segment_id: str = "") -> None:
    """SEGMENT_NAME_TAKEN unless the name is free in the shop (the predefined groups' names are
    taken). Writers of one shop's segment names queue on a lock (PostgreSQL: an advisory lock
    for the transaction; SQLite: writers are serial), so two concurrent creates cannot both pass."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(func.hashtext("segments.name:" + shop_id))))
    taken = name in {groups.name_of(g) for g in groups.Group} or conn.execute(
        select(segments.c.segment_id).where(segments.c.shop_id == shop_id, segments.c.name == name,
                                            segments.c.segment_id != segment_id).limit(1)).first() is not None
    if taken:
        raise _name_taken(name)


def _name_taken(name: str) -> AlreadyExists:
    return AlreadyExists(f"the shop has a segment named {name!r} already", reason=reasons.SEGMENT_NAME_TAKEN,
                         metadata={"field": "segment.name", "name": name})


def _write_named(uow: UnitOfWork, name: str, statement: Executable) -> None:
    """Runs the insert or update of a segment named `name`; the unique index on (shop, name) is the
    last word when another writer took the name meanwhile (SEGMENT_NAME_TAKEN, not INTERNAL)."""
    try:
        with uow.conn.begin_nested():
            uow.conn.execute(statement)
    except IntegrityError as exc:
        raise _name_taken(name) from exc


def create(service: SegmentsService, uow: UnitOfWork, cmd: commands.CreateSegment) -> Segment:
    _check_name(uow.conn, cmd.shop_id, cmd.name)
    now = utcnow()
    segment = Segment(shop_id=cmd.shop_id, segment_id=_new_id(), name=cmd.name, description=cmd.description,
                      rule=cmd.rule, created_at=now, updated_at=now)
    _write_named(uow, segment.name, insert(segments).values(
        shop_id=segment.shop_id, segment_id=segment.segment_id, name=segment.name,
        description=segment.description, rule=rules.to_json(segment.rule), created_at=now, updated_at=now))
    return segment


def get(service: SegmentsService, query: commands.SegmentQuery) -> Segment:
    return service.db.read(lambda conn: _with_counts(conn, query.shop_id,
                                                     [_find(conn, query.shop_id, query.segment_id)])[0])


def update_segment(service: SegmentsService, uow: UnitOfWork, cmd: commands.UpdateSegment) -> Segment:
    if cmd.segment_id in groups.BY_ID:
        raise _read_only(cmd.segment_id)
    current = _find(uow.conn, cmd.shop_id, cmd.segment_id)
    changes: dict[str, object] = {}
    if "name" in cmd.paths and cmd.name != current.name:
        _check_name(uow.conn, cmd.shop_id, cmd.name, cmd.segment_id)
        changes["name"] = cmd.name
    if "description" in cmd.paths:
        changes["description"] = cmd.description
    if "rule" in cmd.paths and cmd.rule is not None:
        changes["rule"] = cmd.rule
    now = utcnow()
    updated = replace(current, **changes, updated_at=now)
    _write_named(uow, updated.name, update(segments).where(_key(cmd.shop_id, cmd.segment_id)).values(
        name=updated.name, description=updated.description, rule=rules.to_json(updated.rule), updated_at=now))
    return _with_counts(uow.conn, cmd.shop_id, [updated])[0]


def delete_segment(service: SegmentsService, uow: UnitOfWork, cmd: commands.SegmentQuery) -> str:
    if cmd.segment_id in groups.BY_ID:
        raise _read_only(cmd.segment_id)
    if not uow.conn.execute(delete(segments).where(_key(cmd.shop_id, cmd.segment_id))).rowcount:
        raise _not_found(cmd.segment_id)
    uow.conn.execute(delete(segment_sizes).where(segment_sizes.c.shop_id == cmd.shop_id,
                                                 segment_sizes.c.segment_id == cmd.segment_id))
    return cmd.segment_id


def list_segments(service: SegmentsService, query: commands.ListSegments) -> Page:
    """The predefined groups (in their enum's order), then the saved segments oldest first."""
    after = query.after

    def read(conn: Connection) -> Page:
        found: list[Segment] = []
        if after is None or after[0] == "":
            settings, changed_at = groups.read_settings(conn, query.shop_id)
            start = groups.BY_ID[after[1]] + 1 if after is not None and after[1] in groups.BY_ID else 1
            found = [_predefined(g, query.shop_id, settings, changed_at) for g in groups.Group if g >= start]
        if len(found) <= query.limit:
            c = segments.c
            saved = select(segments).where(c.shop_id == query.shop_id)
            if after is not None and after[0]:
                at = datetime.fromisoformat(after[0])
                saved = saved.where(or_(c.created_at > at, and_(c.created_at == at, c.segment_id > after[1])))
            rows = conn.execute(saved.order_by(c.created_at, c.segment_id).limit(query.limit + 1 - len(found)))
            found += [_saved(r) for r in rows]
        more = len(found) > query.limit
        page = _with_counts(conn, query.shop_id, found[:query.limit])
        last = page[-1] if page else None
        next_after = None
        if more and last is not None:
            next_after = (last.created_at.isoformat() if last.created_at else "", last.segment_id)
        return Page(page, next_after)

    return service.db.read(read)


# ----- counts, members, membership ------------------------------------------------------------------


def count(service: SegmentsService, query: commands.SegmentQuery) -> tuple[int, datetime]:
    """Counts the segment now and records it as today's (shop-local) size."""
    now = utcnow()
    total = service.db.read(lambda conn: conn.execute(
        _count_of(members_select(service, conn, query.shop_id, query.segment_id, now))).scalar_one())
    day = now.replace(tzinfo=UTC).astimezone(service.zones.get(query.shop_id)).date().isoformat()

    def record(uow: UnitOfWork) -> None:
        upsert(uow.conn, segment_sizes, {"shop_id": query.shop_id, "segment_id": query.segment_id, "day": day,
                                         "count": total, "counted_at": now}, keys=("shop_id", "segment_id", "day"))

    service.db.transact(record)
    return total, now


def stream_members(service: SegmentsService, query: commands.SegmentQuery) -> Iterator[str]:
    """Every member id of the segment in order, read from one snapshot of the facts while it is
    sent (a server-side cursor on PostgreSQL: memory stays flat for any size)."""
    now = utcnow()
    with service.db.snapshot() as conn:
        select_members = members_select(service, conn, query.shop_id, query.segment_id, now)
        rows = conn.execution_options(stream_results=True, yield_per=STREAM_BATCH).execute(
            select_members.order_by(member_facts.c.member_id))
        yield from rows.scalars()


def is_member(service: SegmentsService, query: commands.IsMember) -> bool:
    """Whether the member is in the segment now: the segment's query narrowed to one member row,
    answered from the cache for a few seconds."""
    key = cache_key(query.shop_id, "is_member", query.segment_id, query.member_id)
    cache = service.cache
    if cache is not None:
        cached = cache.get(key)
        if cached is not None:
            return cached == b"1"
    now = utcnow()

    def read(conn: Connection) -> bool:
        one = members_select(service, conn, query.shop_id, query.segment_id, now).where(
            member_facts.c.member_id == query.member_id)
        return conn.execute(one.limit(1)).first() is not None

    answer = service.db.read(read)
    if cache is not None:
        cache.add(key, b"1" if answer else b"0", IS_MEMBER_SECONDS)
    return answer


# ----- group settings ---------------------------------------------------------------------------------


def get_settings(service: SegmentsService, query: commands.ShopQuery) -> tuple[groups.Settings, datetime | None]:
    return service.db.read(lambda conn: groups.read_settings(conn, query.shop_id))


def update_settings(service: SegmentsService, uow: UnitOfWork,
                    cmd: commands.UpdateGroupSettings) -> tuple[groups.Settings, datetime]:
    current, _ = groups.read_settings(uow.conn, cmd.shop_id)
    changed = replace(current, **cmd.changes)
    groups.violations(changed, Violations()).raise_if_any()
    now = utcnow()
    groups.write_settings(uow.conn, cmd.shop_id, changed, now)
    return changed, now
