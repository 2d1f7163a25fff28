"""Tags (标签): operator-defined labels on members, assigned in bulk (listed members, or every
member of a segment in one INSERT … SELECT), taken off, merged and deleted. Only members segments
has heard of and who have not left carry tags (the facts projection takes a leaving member's
tags). Every change of who carries a tag is announced as TagAssigned / TagRemoved, at most 1,000
members per event.

A rule-assigned tag (标签规则) is carried by the members its rule selects when it was last applied
(ApplyTagRule, and the hourly job for rules applied more than a day ago): one INSERT … SELECT
tags those the rule selects, one DELETE untags those it no longer does. Hand tagging and merging
refuse it (TAG_IS_RULE_ASSIGNED); an empty rule makes it manual again, keeping its members."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from google.protobuf.message import Message
from loyalty.segments.v1 import events_pb2
from sqlalchemy import Connection, Row, Select, and_, delete, func, literal, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from services.kit.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Violations
from services.kit.storage import UnitOfWork, batches, insert_ignoring
from services.kit.timeutil import to_timestamp, utcnow
from services.kit.validation import validate_id
from services.segments import commands_tags as commands
from services.segments import reasons, rules
from services.segments.compiler import members_query
from services.segments.segments import members_select
from services.segments.service import SegmentsService
from services.segments.tables import member_facts, member_tags, tags

# A campaign or an issuance targets at most this many tags (checked by check_target_tags).
MAX_TARGET_TAGS = 5
EVENT_MEMBERS = 1_000  # members named by one TagAssigned / TagRemoved
RULE_STALE_AFTER = timedelta(days=1)  # a rule-assigned tag is applied again once its last application is this old


@dataclass(frozen=True)
class Tag:
    shop_id: str
    tag_id: str
    name: str
    description: str
    member_count: int
    created_at: datetime
    updated_at: datetime
    rule: rules.Rule | None = None
    rule_applied_at: datetime | None = None


@dataclass(frozen=True)
class Applied:
    tagged: int
    untagged: int
    member_count: int


@dataclass(frozen=True)
class Tagged:
    tagged: int
    unknown_member_ids: list[str]


def check_target_tags(tag_ids: Sequence[str], v: Violations, field: str) -> None:
    """The tags a campaign or an issuance targets: at most MAX_TARGET_TAGS well-formed ids. Too
    many is refused at once with TOO_MANY_TAGS (with the violations found so far)."""
    if len(set(tag_ids)) > MAX_TARGET_TAGS:
        v.add(field, f"at most {MAX_TARGET_TAGS} tags")
        raise InvalidArgument(v.items, reason=reasons.TOO_MANY_TAGS)
    for i, tag_id in enumerate(tag_ids):
        validate_id(tag_id, f"{field}[{i}]", v)


def new_tag_id() -> str:
    return "tg_" + secrets.token_hex(10)


def _tag_key(shop_id: str, tag_id: str) -> tuple[object, object]:
    return tags.c.shop_id == shop_id, tags.c.tag_id == tag_id


def no_tag(shop_id: str, tag_id: str) -> NotFound:
    return NotFound(f"no tag {tag_id!r} in shop {shop_id}", reason=reasons.TAG_NOT_FOUND, metadata={"tag_id": tag_id})


def name_taken(name: str) -> AlreadyExists:
    return AlreadyExists(f"the shop has a tag named {name!r} already", reason=reasons.TAG_NAME_TAKEN,
                         metadata={"name": name})


def _read_row(conn: Connection, shop_id: str, tag_id: str, *, for_update: bool = False) -> Row:
    query = select(tags).where(*_tag_key(shop_id, tag_id))
    row = conn.execute(query.with_for_update() if for_update else query).first()
    if row is None:
        raise no_tag(shop_id, tag_id)
    return row


def _counts(conn: Connection, shop_id: str, tag_ids: list[str]) -> dict[str, int]:
    """How many members carry each tag now (one grouped count)."""
    if not tag_ids:
        return {}
    return dict(conn.execute(select(member_tags.c.tag_id, func.count()).where(
        member_tags.c.shop_id == shop_id, member_tags.c.tag_id.in_(tag_ids)).group_by(member_tags.c.tag_id)).all())


def _to_tag(row: Row, count: int) -> Tag:
    return Tag(shop_id=row.shop_id, tag_id=row.tag_id, name=row.name, description=row.description,
               member_count=count, created_at=row.created_at, updated_at=row.updated_at,
               rule=rules.from_json(row.rule) if row.rule is not None else None,
               rule_applied_at=row.rule_applied_at)


def _with_count(conn: Connection, row: Row) -> Tag:
    return _to_tag(row, _counts(conn, row.shop_id, [row.tag_id]).get(row.tag_id, 0))


def _refuse_rule_assigned(row: Row) -> None:
    if row.rule is not None:
        raise FailedPrecondition(f"tag {row.tag_id!r} is assigned by its rule: change the rule, or clear it to tag "
                                 "by hand", reason=reasons.TAG_IS_RULE_ASSIGNED, subject=f"tags/{row.tag_id}",
                                 metadata={"tag_id": row.tag_id})


def _announce(uow: UnitOfWork, shop_id: str, tag_id: str, member_ids: list[str], now: datetime, *,
              assigned: bool) -> None:
    at = to_timestamp(now)
    events: list[Message] = [
        events_pb2.TagAssigned(shop_id=shop_id, tag_id=tag_id, member_ids=chunk, assigned_at=at) if assigned
        else events_pb2.TagRemoved(shop_id=shop_id, tag_id=tag_id, member_ids=chunk, removed_at=at)
        for chunk in batches(member_ids, EVENT_MEMBERS)]
    uow.emit_many(shop_id, events)


def create_tag(service: SegmentsService, uow: UnitOfWork, cmd: commands.CreateTag) -> Tag:
    """A new tag with no members (a rule-assigned one gets them when its rule is first applied);
    its name must be free in the shop (TAG_NAME_TAKEN)."""
    now = utcnow()
    tag_id = new_tag_id()
    created = uow.conn.execute(insert_ignoring(uow.conn, tags).values(
        shop_id=cmd.shop_id, tag_id=tag_id, name=cmd.name, description=cmd.description, created_at=now,
        updated_at=now, rule=rules.to_json(cmd.rule) if cmd.rule is not None else None)).rowcount
    if not created:
        raise name_taken(cmd.name)
    return Tag(cmd.shop_id, tag_id, cmd.name, cmd.description, 0, now, now, cmd.rule)


def get_tag(service: SegmentsService, query: commands.TagQuery) -> Tag:
    return service.db.read(lambda conn: _with_count(conn, _read_row(conn, query.shop_id, query.tag_id)))


def update_tag(service: SegmentsService, uow: UnitOfWork, cmd: commands.UpdateTag) -> Tag:
    """The masked fields changed; a new name must be free in the shop (TAG_NAME_TAKEN). A new rule
    is applied by the next run of the schedule or ApplyTagRule; clearing it keeps the members."""
    row = _read_row(uow.conn, cmd.shop_id, cmd.tag_id, for_update=True)
    changes: dict[str, object] = dict(cmd.changes)
    if cmd.set_rule:
        stored = rules.to_json(cmd.rule) if cmd.rule is not None else None
        if stored != row.rule:
            changes.update(rule=stored, rule_applied_at=None)
    name = cmd.changes.get("name", row.name)
    if name != row.name and uow.conn.execute(select(tags.c.tag_id).where(
            tags.c.shop_id == cmd.shop_id, tags.c.name == name)).first() is not None:
        raise name_taken(name)
    try:
        with uow.conn.begin_nested():  # a concurrent rename to the same name won
            uow.conn.execute(update(tags).where(*_tag_key(cmd.shop_id, cmd.tag_id)).values(
                **changes, updated_at=utcnow()))
    except IntegrityError as exc:
        raise name_taken(name) from exc
    return _with_count(uow.conn, _read_row(uow.conn, cmd.shop_id, cmd.tag_id))


def _untag_all(uow: UnitOfWork, shop_id: str, tag_id: str, now: datetime) -> int:
    """Takes the tag from everyone carrying it (one statement); returns how many."""
    removed = [r.member_id for r in uow.conn.execute(delete(member_tags).where(
        member_tags.c.shop_id == shop_id, member_tags.c.tag_id == tag_id).returning(member_tags.c.member_id))]
    _announce(uow, shop_id, tag_id, removed, now, assigned=False)
    return len(removed)


def delete_tag(service: SegmentsService, uow: UnitOfWork, cmd: commands.DeleteTag) -> int:
    """Deletes the tag after taking it from every member; returns how many carried it."""
    _read_row(uow.conn, cmd.shop_id, cmd.tag_id, for_update=True)
    untagged = _untag_all(uow, cmd.shop_id, cmd.tag_id, utcnow())
    uow.conn.execute(delete(tags).where(*_tag_key(cmd.shop_id, cmd.tag_id)))
    return untagged


def list_tags(service: SegmentsService, query: commands.ListTags) -> list[Tag]:
    """Up to `limit` of the shop's tags by name, after `after`, with their member counts."""
    def read(conn: Connection) -> list[Tag]:
        q = select(tags).where(tags.c.shop_id == query.shop_id)
        if query.after is not None:
            q = q.where(tuple_(tags.c.name, tags.c.tag_id) > tuple_(literal(query.after[0]), literal(query.after[1])))
        rows = conn.execute(q.order_by(tags.c.name, tags.c.tag_id).limit(query.limit)).all()
        counts = _counts(conn, query.shop_id, [r.tag_id for r in rows])
        return [_to_tag(r, counts.get(r.tag_id, 0)) for r in rows]

    return service.db.read(read)


def _members_of_segment(service: SegmentsService, conn: Connection, shop_id: str, segment_id: str,
                        now: datetime) -> Select:
    """The SELECT of member_facts.member_id that the segment selects now (the segments module's)."""
    return members_select(service, conn, shop_id, segment_id, now)


def tag_members(service: SegmentsService, uow: UnitOfWork, cmd: commands.ChangeMembers) -> Tagged:
    """Tags the listed members segments knows and who have not left (the others are reported,
    not tagged), or every member of the segment now, in one INSERT … SELECT that ignores those
    carrying the tag already: `tagged` counts the new ones, who are announced in TagAssigned."""
    _refuse_rule_assigned(_read_row(uow.conn, cmd.shop_id, cmd.tag_id, for_update=True))
    if cmd.segment_id:
        chosen = _members_of_segment(service, uow.conn, cmd.shop_id, cmd.segment_id, cmd.now).subquery()
        source = select(literal(cmd.shop_id), literal(cmd.tag_id), chosen.c.member_id, literal(cmd.now)).where(
            chosen.c.member_id.is_not(None))
        unknown: list[str] = []
    else:
        present = (member_facts.c.shop_id == cmd.shop_id, member_facts.c.member_id.in_(cmd.member_ids),
                   member_facts.c.left_at.is_(None))
        # Shared locks: a MemberLeft applied meanwhile waits, then takes these tags too (PostgreSQL).
        found = {r.member_id for r in uow.conn.execute(
            select(member_facts.c.member_id).where(*present).with_for_update(read=True))}
        unknown = [m for m in cmd.member_ids if m not in found]
        if not found:
            return Tagged(0, unknown)
        source = select(literal(cmd.shop_id), literal(cmd.tag_id), member_facts.c.member_id,
                        literal(cmd.now)).where(*present)
    statement = insert_ignoring(uow.conn, member_tags).from_select(
        ["shop_id", "tag_id", "member_id", "tagged_at"], source).returning(member_tags.c.member_id)
    new = sorted(r.member_id for r in uow.conn.execute(statement))
    _announce(uow, cmd.shop_id, cmd.tag_id, new, cmd.now, assigned=True)
    return Tagged(len(new), unknown)


def untag_members(service: SegmentsService, uow: UnitOfWork, cmd: commands.ChangeMembers) -> int:
    """Takes the tag from the listed members, or from every member of the segment now (one
    DELETE); returns how many carried it, who are announced in TagRemoved."""
    _refuse_rule_assigned(_read_row(uow.conn, cmd.shop_id, cmd.tag_id, for_update=True))
    if cmd.segment_id:
        chosen = _members_of_segment(service, uow.conn, cmd.shop_id, cmd.segment_id, cmd.now).subquery()
        which = member_tags.c.member_id.in_(select(chosen.c.member_id))
    else:
        which = member_tags.c.member_id.in_(cmd.member_ids)
    removed = sorted(r.member_id for r in uow.conn.execute(delete(member_tags).where(
        member_tags.c.shop_id == cmd.shop_id, member_tags.c.tag_id == cmd.tag_id, which)
        .returning(member_tags.c.member_id)))
    _announce(uow, cmd.shop_id, cmd.tag_id, removed, cmd.now, assigned=False)
    return len(removed)


def merge_tags(service: SegmentsService, uow: UnitOfWork, cmd: commands.MergeTags) -> Tag:
    """Every member of the source carries the target (one INSERT … SELECT ignoring those who do
    already), then the source is taken from them and deleted; returns the target."""
    _refuse_rule_assigned(_read_row(uow.conn, cmd.shop_id, cmd.source_tag_id, for_update=True))
    _refuse_rule_assigned(_read_row(uow.conn, cmd.shop_id, cmd.target_tag_id, for_update=True))
    now = utcnow()
    mt = member_tags.c
    source = select(literal(cmd.shop_id), literal(cmd.target_tag_id), mt.member_id, literal(now)).where(
        mt.shop_id == cmd.shop_id, mt.tag_id == cmd.source_tag_id)
    moved = sorted(r.member_id for r in uow.conn.execute(insert_ignoring(uow.conn, member_tags).from_select(
        ["shop_id", "tag_id", "member_id", "tagged_at"], source).returning(mt.member_id)))
    _announce(uow, cmd.shop_id, cmd.target_tag_id, moved, now, assigned=True)
    _untag_all(uow, cmd.shop_id, cmd.source_tag_id, now)
    uow.conn.execute(delete(tags).where(*_tag_key(cmd.shop_id, cmd.source_tag_id)))
    uow.conn.execute(update(tags).where(*_tag_key(cmd.shop_id, cmd.target_tag_id)).values(updated_at=now))
    return _with_count(uow.conn, _read_row(uow.conn, cmd.shop_id, cmd.target_tag_id))


def apply_rule(service: SegmentsService, uow: UnitOfWork, cmd: commands.ApplyTagRule) -> Applied:
    """The members the tag's rule selects now carry it, and only they: one INSERT … SELECT of those
    not carrying it (TagAssigned), one DELETE of those it no longer selects (TagRemoved)."""
    row = _read_row(uow.conn, cmd.shop_id, cmd.tag_id, for_update=True)
    if row.rule is None:
        raise FailedPrecondition(f"tag {cmd.tag_id!r} has no rule: its members are tagged by hand",
                                 reason=reasons.TAG_HAS_NO_RULE, subject=f"tags/{cmd.tag_id}",
                                 metadata={"tag_id": cmd.tag_id})
    return _apply(uow, row, utcnow())


def _apply(uow: UnitOfWork, row: Row, now: datetime) -> Applied:
    shop_id, tag_id = row.shop_id, row.tag_id
    chosen = members_query(shop_id, rules.from_json(row.rule), now).subquery()
    mt = member_tags.c
    # The WHERE keeps SQLite from reading the upsert's ON CONFLICT as a join constraint.
    source = select(literal(shop_id), literal(tag_id), chosen.c.member_id, literal(now)).where(
        chosen.c.member_id.is_not(None))
    tagged = sorted(r.member_id for r in uow.conn.execute(insert_ignoring(uow.conn, member_tags).from_select(
        ["shop_id", "tag_id", "member_id", "tagged_at"], source).returning(mt.member_id)))
    _announce(uow, shop_id, tag_id, tagged, now, assigned=True)
    untagged = sorted(r.member_id for r in uow.conn.execute(delete(member_tags).where(
        mt.shop_id == shop_id, mt.tag_id == tag_id, mt.member_id.not_in(select(chosen.c.member_id)))
        .returning(mt.member_id)))
    _announce(uow, shop_id, tag_id, untagged, now, assigned=False)
    uow.conn.execute(update(tags).where(*_tag_key(shop_id, tag_id)).values(rule_applied_at=now))
    return Applied(len(tagged), len(untagged), _counts(uow.conn, shop_id, [tag_id]).get(tag_id, 0))


def apply_due_rules(service: SegmentsService, now: datetime | None = None) -> int:
    """Applies every rule-assigned tag of every shop last applied more than RULE_STALE_AFTER ago (or
    never), each in its own transaction; returns how many. Safe on several replicas at once: a
    tag is checked again under its row lock."""
    now = now or utcnow()
    due = and_(tags.c.rule.is_not(None),
               or_(tags.c.rule_applied_at.is_(None), tags.c.rule_applied_at < now - RULE_STALE_AFTER))
    found = service.db.read(lambda conn: conn.execute(select(tags.c.shop_id, tags.c.tag_id).where(due)
                                                      .order_by(tags.c.shop_id, tags.c.tag_id)).all())

    def apply_one(uow: UnitOfWork, shop_id: str, tag_id: str) -> bool:
        row = uow.conn.execute(select(tags).where(*_tag_key(shop_id, tag_id), due).with_for_update()).first()
        if row is None:  # deleted, made manual, or applied meanwhile
            return False
        _apply(uow, row, utcnow())
        return True

    return sum(service.db.transact(lambda uow, s=shop_id, t=tag_id: apply_one(uow, s, t)) for shop_id, tag_id in found)


def member_tags_of(service: SegmentsService, query: commands.MemberTagsQuery) -> list[Tag]:
    """The tags the member carries, by name (NOT_FOUND for a member segments never heard of)."""
    def read(conn: Connection) -> list[Tag]:
        if conn.execute(select(member_facts.c.member_id).where(
                member_facts.c.shop_id == query.shop_id, member_facts.c.member_id == query.member_id)).first() is None:
            raise NotFound(f"segments knows no member {query.member_id!r}", reason=reasons.MEMBER_NOT_FOUND,
                           metadata={"member_id": query.member_id})
        rows = conn.execute(select(tags).join(member_tags, (member_tags.c.shop_id == tags.c.shop_id)
                                              & (member_tags.c.tag_id == tags.c.tag_id)).where(
            member_tags.c.shop_id == query.shop_id, member_tags.c.member_id == query.member_id)
            .order_by(tags.c.name, tags.c.tag_id)).all()
        counts = _counts(conn, query.shop_id, [r.tag_id for r in rows])
        return [_to_tag(r, counts.get(r.tag_id, 0)) for r in rows]

    return service.db.read(read)
