"""Members: joining (入会), profile and consent updates, leaving (退会) with crypto-shredding of
personal data, and imports (会员导入). Exports and lists are reads, in views.py."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import TYPE_CHECKING, Any

from loyalty.membership.v1 import events_pb2
from sqlalchemy import Connection, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from services.kit.cache import invalidate_on_commit
from services.kit.errors import AlreadyExists, InvalidArgument, Violations
from services.kit.idempotency import erase_responses
from services.kit.storage import UnitOfWork
from services.kit.timeutil import to_timestamp, utcnow
from services.membership import commands, data_keys, domain, joining, lifecycle, reasons, tiers, views
from services.membership.domain import MemberStatus, ProfileField, ProfileInput, TierChangeReason
from services.membership.pii import DataKey
from services.membership.rules import JoinFacts
from services.membership.tables import members, orders, tier_history
from services.membership.views import MemberView

if TYPE_CHECKING:
    from services.membership.context import Membership


def _sealed_profile(key: DataKey, shop_id: str, member_id: str, profile: ProfileInput) -> dict[str, Any]:
    """The member's columns for the profile fields a request gives, each sealed with the key."""

    def seal(name: str, value: str | None) -> bytes | None:
        return key.seal(value, data_keys.member_field(shop_id, member_id, name)) if value else None

    values: dict[str, Any] = {}
    if ProfileField.NAME in profile.given:
        values["name_cipher"] = seal("name", profile.name)
    if ProfileField.GENDER in profile.given:
        values["gender"] = profile.gender or 0
    if ProfileField.PHONE in profile.given:
        values["phone_cipher"] = seal("phone", domain.normalize_phone(profile.phone) if profile.phone else None)
    if ProfileField.BIRTHDAY in profile.given:
        values["birthday_cipher"] = seal("birthday", views.birthday_text(profile.birthday) if profile.birthday
                                         else None)
    if ProfileField.REGION in profile.given:
        values["region_cipher"] = seal("region", profile.region)
    return values


def _new_member(key: DataKey, shop_id: str, member_id: str, buyer_id: str, buyer_hash: str, *, profile: ProfileInput,
                consent: frozenset[ProfileField], channel: int, referrer_member_id: str, joined_at: datetime,
                tier_level: int, now: datetime, spend_fen: int = 0, trades: int = 0,
                first_completed_at: datetime | None = None) -> dict[str, Any]:
    return {
        "shop_id": shop_id, "member_id": member_id, "status": MemberStatus.ACTIVE, "key_id": key.key_id,
        "buyer_hash": buyer_hash, "buyer_id_cipher": key.seal(buyer_id, data_keys.member_field(
            shop_id, member_id, "buyer_id")),
        "name_cipher": None, "gender": 0, "phone_cipher": None, "birthday_cipher": None, "region_cipher": None,
        "consent_fields": views.fields_str(consent), "consent_at": joined_at if consent else None,
        "consent_revoked_at": None, "join_channel": channel, "referrer_member_id": referrer_member_id or None,
        "joined_at": joined_at, "left_at": None, "tier_level": tier_level, "tier_since": now,
        "cumulative_spend_fen": spend_fen, "trade_count": trades, "first_completed_at": first_completed_at,
        **_sealed_profile(key, shop_id, member_id, profile),
    }


def _birthday_given(profile: ProfileInput) -> bool:
    return ProfileField.BIRTHDAY in profile.given and bool(profile.birthday)


def _given(profile: ProfileInput) -> dict[str, bool]:
    """What MemberJoined says was given (the values are read with GetMember, never sent)."""
    return {"birthday_given": _birthday_given(profile),
            "gender_given": ProfileField.GENDER in profile.given and bool(profile.gender),
            "region_given": ProfileField.REGION in profile.given and bool(profile.region)}


def active_member(ctx: Membership, conn: Connection, shop_id: str, member_id: str, *, lock: bool = False) -> Row:
    """The member's row; NOT_FOUND unless they are an active member."""
    query = select(members).where(members.c.shop_id == shop_id, members.c.member_id == member_id,
                                  members.c.status == MemberStatus.ACTIVE)
    row = conn.execute(query.with_for_update(of=members) if lock else query).first()
    if row is None:
        raise views.member_not_found(member_id)
    return row


def join_member(ctx: Membership, uow: UnitOfWork, cmd: commands.JoinMember) -> MemberView:
    program = ctx.programs.get(cmd.shop_id, uow.conn)
    joining.require_threshold(ctx, uow.conn, program, cmd.buyer_id, ctx.pii.buyer_hash(cmd.shop_id, cmd.buyer_id),
                              JoinFacts(cmd.follows_shop, cmd.completed_trades, cmd.spent_fen))
    if cmd.referrer_member_id:
        referrer = uow.conn.execute(select(members.c.member_id).where(
            members.c.shop_id == cmd.shop_id, members.c.member_id == cmd.referrer_member_id,
            members.c.status == MemberStatus.ACTIVE)).first()
        if referrer is None:
            raise InvalidArgument([("referrer_member_id", "not a member of this shop")])
    buyer_hash = ctx.pii.buyer_hash(cmd.shop_id, cmd.buyer_id)
    existing = uow.conn.execute(select(members.c.member_id).where(
        members.c.shop_id == cmd.shop_id, members.c.buyer_hash == buyer_hash)).first()
    if existing is not None:
        raise AlreadyExists(f"buyer {cmd.buyer_id!r} is already a member", reason=reasons.ALREADY_MEMBER,
                            metadata={"member_id": existing.member_id})
    key = data_keys.key_for_buyer(ctx, uow, cmd.shop_id, buyer_hash)
    now = utcnow()
    member_id = "m_" + secrets.token_hex(10)
    try:
        uow.conn.execute(insert(members), _new_member(
            key, cmd.shop_id, member_id, cmd.buyer_id, buyer_hash, profile=cmd.profile, consent=cmd.consent,
            channel=cmd.channel, referrer_member_id=cmd.referrer_member_id, joined_at=now, tier_level=0, now=now))
    except IntegrityError as exc:  # a concurrent join of the same buyer won
        raise AlreadyExists(f"buyer {cmd.buyer_id!r} is already a member", reason=reasons.ALREADY_MEMBER) from exc
    tiers.record_tier_change(uow, cmd.shop_id, member_id, 0, 0, TierChangeReason.JOINED, now)
    # No personal value is sent (buyer id, birthday): events outlive an erasure on the bus.
    uow.emit(cmd.shop_id, events_pb2.MemberJoined(
        shop_id=cmd.shop_id, member_id=member_id, join_channel=cmd.channel,
        referrer_member_id=cmd.referrer_member_id, joined_at=to_timestamp(now), tier_level=0,
        **_given(cmd.profile)))
    return views.member_view(ctx, active_member(ctx, uow.conn, cmd.shop_id, member_id), program.ladder)


def update_profile(ctx: Membership, uow: UnitOfWork, cmd: commands.UpdateProfile) -> MemberView:
    program = ctx.programs.get(cmd.shop_id, uow.conn)
    row = active_member(ctx, uow.conn, cmd.shop_id, cmd.member_id, lock=True)
    stored_consent = views.fields_set(row.consent_fields)
    consent = stored_consent | cmd.new_consent
    v = Violations()
    domain.validate_profile(cmd.profile, set(consent), v)
    v.raise_if_any()
    key = data_keys.unwrap(ctx, row)
    if key is None:
        raise RuntimeError(f"member {cmd.member_id} of shop {cmd.shop_id} is active but has no data key")
    now = utcnow()
    values = _sealed_profile(key, cmd.shop_id, cmd.member_id, cmd.profile)
    values["consent_fields"] = views.fields_str(consent)
    if cmd.new_consent - stored_consent:
        values["consent_at"] = now
    uow.conn.execute(update(members).where(members.c.shop_id == cmd.shop_id, members.c.member_id == cmd.member_id)
                     .values(**values))
    updated = views.member_view(ctx, active_member(ctx, uow.conn, cmd.shop_id, cmd.member_id), program.ladder)
    # Only the names of the changed fields are sent: events outlive an erasure on the bus, so a
    # consumer that keeps a value (points, the birthday) reads it with GetMember.
    uow.emit(cmd.shop_id, events_pb2.ProfileUpdated(
        shop_id=cmd.shop_id, member_id=cmd.member_id,
        changed_fields=sorted(f.name.lower() for f in cmd.profile.given), updated_at=to_timestamp(now)))
    return updated


def leave_member(ctx: Membership, uow: UnitOfWork, cmd: commands.LeaveMember) -> datetime:
    """自愿退出: the buyer's data key is destroyed once this commits, so their personal data is
    unreadable in every copy at once (backups included), and the columns are erased too; the
    anonymised member id, tier history and order amounts stay for accounting."""
    ctx.programs.get(cmd.shop_id, uow.conn)
    row = active_member(ctx, uow.conn, cmd.shop_id, cmd.member_id, lock=True)
    now = utcnow()
    uow.conn.execute(update(members).where(members.c.shop_id == cmd.shop_id, members.c.member_id == cmd.member_id)
                     .values(status=MemberStatus.LEFT, left_at=now, key_id=None, buyer_hash=None,
                             buyer_id_cipher=None, name_cipher=None, gender=0, phone_cipher=None,
                             birthday_cipher=None, region_cipher=None, consent_fields="", consent_revoked_at=now))
    if row.key_id:
        uow.conn.execute(update(orders).where(orders.c.shop_id == cmd.shop_id, orders.c.key_id == row.key_id)
                         .values(key_id=None, buyer_hash=None, buyer_id_cipher=None))
        # Stored answers about the buyer (joins, profile updates, orders) are sealed with the key;
        # erasing them too makes a replay refused rather than unreadable.
        erase_responses(uow, cmd.shop_id, row.key_id)
        data_keys.retire(ctx, uow, cmd.shop_id, row.key_id)
    uow.emit(cmd.shop_id, events_pb2.MemberLeft(shop_id=cmd.shop_id, member_id=cmd.member_id,
                                                left_at=to_timestamp(now)))
    invalidate_on_commit(uow, ctx.cache, tiers.tier_cache_keys(cmd.shop_id, cmd.member_id, row.buyer_hash))
    return now


def import_members(ctx: Membership, uow: UnitOfWork, cmd: commands.ImportMembers) -> list[str]:
    """会员导入: all rows or none; returns the new member ids (none for a validate_only run)."""
    program = ctx.programs.get(cmd.shop_id, uow.conn)
    v = Violations()
    cmd.check_rows(v, program.ladder.top)
    hashes = {r.buyer_id: ctx.pii.buyer_hash(cmd.shop_id, r.buyer_id) for r in cmd.rows}
    taken = {h for (h,) in uow.conn.execute(select(members.c.buyer_hash).where(
        members.c.shop_id == cmd.shop_id, members.c.buyer_hash.in_(list(hashes.values()))))}
    for i, r in enumerate(cmd.rows):
        v.check(hashes[r.buyer_id] not in taken, f"members[{i}].buyer_id", "already a member")
    v.raise_if_any()
    if cmd.validate_only:
        return []
    keys = data_keys.keys_for_buyers(ctx, uow, cmd.shop_id, list(hashes.values()))
    now = utcnow()
    member_ids, inserts, history, joined = [], [], [], []
    for r in cmd.rows:
        member_id = "m_" + secrets.token_hex(10)
        level = r.tier_level if r.tier_level is not None else program.ladder.qualified_level(
            r.cumulative_spend_fen, r.trade_count)
        joined_at = r.join_time or now
        inserts.append(_new_member(
            keys[hashes[r.buyer_id]], cmd.shop_id, member_id, r.buyer_id, hashes[r.buyer_id], profile=r.profile,
            consent=r.consent, channel=domain.JOIN_CHANNEL_CRM_IMPORT, referrer_member_id="", joined_at=joined_at,
            tier_level=level, now=now, spend_fen=r.cumulative_spend_fen, trades=r.trade_count,
            first_completed_at=now if r.trade_count else None))
        history.append({"shop_id": cmd.shop_id, "member_id": member_id, "from_level": 0, "to_level": level,
                        "reason": TierChangeReason.IMPORTED, "note": "", "operator": "", "order_id": "",
                        "changed_at": now})
        joined.append(events_pb2.MemberJoined(
            shop_id=cmd.shop_id, member_id=member_id, join_channel=domain.JOIN_CHANNEL_CRM_IMPORT,
            joined_at=to_timestamp(joined_at), tier_level=level, **_given(r.profile), imported=True))
        member_ids.append(member_id)
    try:
        uow.conn.execute(insert(members), inserts)
    except IntegrityError as exc:  # a buyer joined while we were importing
        raise AlreadyExists("a buyer of this import joined meanwhile; validate and import again",
                            reason=reasons.ALREADY_MEMBER) from exc
    uow.conn.execute(insert(tier_history), history)
    lifecycle.stamp_imported(ctx, uow, program, member_ids, now)
    uow.emit_many(cmd.shop_id, joined)
    return member_ids
