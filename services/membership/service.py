"""Membership use cases: one method per command, each inside the caller's unit of work so the
change, its events and its idempotency record commit together."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime

from loyalty.membership.v1 import events_pb2
from sqlalchemy import Connection, and_, case, func, insert, literal, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from services.kit.auth import KeyRing
from services.kit.cache import Cache, LocalCache, cache_key, invalidate_on_commit
from services.kit.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Violations
from services.kit.idempotency import erase_responses
from services.kit.storage import Database, UnitOfWork
from services.kit.timeutil import to_timestamp, utcnow
from services.kit.validation import validate_id, validate_shop_id
from services.membership import domain
from services.membership.domain import (
    DowngradePolicy,
    Ladder,
    MemberStatus,
    OrderStatus,
    ProfileField,
    ProfileInput,
    QualificationMode,
    Tier,
    TierChangeReason,
)
from services.membership.pii import PhoneVault
from services.membership.tables import api_keys, members, orders, programs, refunds, tier_history

MAX_IMPORT_ROWS = 1000
MAX_AMOUNT_FEN = 10**13  # 100 billion yuan: anything above is a unit mistake
PROGRAM_MEMO_SECONDS = 2.0


@dataclass(frozen=True)
class Program:
    shop_id: str
    name: str
    time_zone: str
    require_follow: bool
    ladder: Ladder
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class TierView:
    member_id: str
    tier: Tier
    since: datetime


@dataclass(frozen=True)
class OrderOutcome:
    order: Row
    tier: Tier | None
    tier_changed: bool


@dataclass
class ImportRow:
    buyer_id: str
    profile: ProfileInput
    consent: set[ProfileField]
    join_time: datetime | None
    cumulative_spend_fen: int
    trade_count: int
    tier_level: int | None


def _ladder_json(ladder: Ladder) -> str:
    return json.dumps(
        {"mode": int(ladder.mode), "policy": int(ladder.policy), "tiers": [asdict(t) for t in ladder.tiers]},
        ensure_ascii=False,
    )


def _ladder_from_json(raw: str) -> Ladder:
    data = json.loads(raw)
    tiers = tuple(Tier(**{**t, "benefits": tuple(t["benefits"])}) for t in data["tiers"])
    return Ladder(tiers, QualificationMode(data["mode"]), DowngradePolicy(data["policy"]))


def _tier_cache_value(member_id: str, level: int, since: datetime) -> bytes:
    return f"{member_id}|{level}|{since.isoformat()}".encode()


class MembershipService:
    def __init__(self, db: Database, cache: Cache, vault: PhoneVault, keyring: KeyRing, *, cache_ttl: float = 60.0):
        self.db = db
        self.cache = cache
        self.vault = vault
        self.keyring = keyring
        self.cache_ttl = cache_ttl
        # Programs change rarely and are read on every call: a short per-process memo.
        self._programs = LocalCache(max_entries=10_000)

    # ----- programs -----------------------------------------------------------------------

    def program(self, shop_id: str, conn: Connection | None = None) -> Program:
        """The shop's program (memoised for a moment); NOT_FOUND when the shop has none."""
        memo = self._programs.get(shop_id)
        if memo is not None:
            return memo
        row = (conn.execute(select(programs).where(programs.c.shop_id == shop_id)).first() if conn is not None
               else self.db.read(lambda c: c.execute(select(programs).where(programs.c.shop_id == shop_id)).first()))
        if row is None:
            raise NotFound(f"shop {shop_id!r} has no loyalty program", reason="PROGRAM_NOT_FOUND",
                           metadata={"shop_id": shop_id})
        program = Program(row.shop_id, row.name, row.time_zone, row.require_follow, _ladder_from_json(row.tiers),
                          row.created_at, row.updated_at)
        self._programs.set(shop_id, program, PROGRAM_MEMO_SECONDS)
        return program

    def _forget_program(self, uow: UnitOfWork, shop_id: str) -> None:
        self._programs.delete(shop_id)
        uow.after_commit(lambda: self._programs.delete(shop_id))

    def create_program(self, uow: UnitOfWork, *, shop_id: str, name: str, time_zone: str, require_follow: bool,
                       tiers: list[Tier], mode: QualificationMode, policy: DowngradePolicy) -> tuple[Program, str]:
        v = Violations()
        validate_shop_id(shop_id, v)
        v.check(0 < len(name) <= domain.MAX_NAME, "name", f"required, at most {domain.MAX_NAME} characters")
        domain.validate_time_zone(time_zone, v)
        ladder_tiers = tiers or list(domain.default_tiers())
        domain.validate_tiers(ladder_tiers, v, mode)
        v.raise_if_any()
        now = utcnow()
        ladder = Ladder(tuple(ladder_tiers), mode, policy)
        try:
            uow.conn.execute(insert(programs), {
                "shop_id": shop_id, "name": name, "time_zone": time_zone, "require_follow": require_follow,
                "qualification_mode": int(mode), "downgrade_policy": int(policy), "tiers": _ladder_json(ladder),
                "created_at": now, "updated_at": now,
            })
        except IntegrityError as exc:
            raise AlreadyExists(f"shop {shop_id!r} already has a program", reason="PROGRAM_EXISTS",
                                metadata={"shop_id": shop_id}) from exc
        _, key = self.issue_api_key(uow, shop_id=shop_id, label="first key")
        self._forget_program(uow, shop_id)
        uow.emit(shop_id, events_pb2.ProgramChanged(shop_id=shop_id, name=name, time_zone=time_zone, created=True,
                                                    changed_at=to_timestamp(now)))
        return Program(shop_id, name, time_zone, require_follow, ladder, now, now), key

    def _program_for_update(self, uow: UnitOfWork, shop_id: str) -> Program:
        row = uow.conn.execute(select(programs).where(programs.c.shop_id == shop_id).with_for_update()).first()
        if row is None:
            raise NotFound(f"shop {shop_id!r} has no loyalty program", reason="PROGRAM_NOT_FOUND",
                           metadata={"shop_id": shop_id})
        return Program(row.shop_id, row.name, row.time_zone, row.require_follow, _ladder_from_json(row.tiers),
                       row.created_at, row.updated_at)

    def update_program(self, uow: UnitOfWork, *, shop_id: str, name: str | None, time_zone: str | None,
                       require_follow: bool | None) -> Program:
        v = Violations()
        if name is not None:
            v.check(0 < len(name) <= domain.MAX_NAME, "name", f"required, at most {domain.MAX_NAME} characters")
        if time_zone is not None:
            domain.validate_time_zone(time_zone, v)
        v.raise_if_any()
        current = self._program_for_update(uow, shop_id)
        values = {"updated_at": utcnow()}
        if name is not None:
            values["name"] = name
        if time_zone is not None:
            values["time_zone"] = time_zone
        if require_follow is not None:
            values["require_follow"] = require_follow
        uow.conn.execute(update(programs).where(programs.c.shop_id == shop_id).values(**values))
        self._forget_program(uow, shop_id)
        program = Program(shop_id, values.get("name", current.name), values.get("time_zone", current.time_zone),
                          values.get("require_follow", current.require_follow), current.ladder, current.created_at,
                          values["updated_at"])
        uow.emit(shop_id, events_pb2.ProgramChanged(shop_id=shop_id, name=program.name, time_zone=program.time_zone,
                                                    changed_at=to_timestamp(program.updated_at)))
        return program

    def issue_api_key(self, uow: UnitOfWork, *, shop_id: str, label: str) -> tuple[str, str]:
        v = Violations()
        v.check(len(label) <= domain.MAX_NAME, "label", f"at most {domain.MAX_NAME} characters")
        v.raise_if_any()
        if uow.conn.execute(select(programs.c.shop_id).where(programs.c.shop_id == shop_id)).first() is None:
            raise NotFound(f"shop {shop_id!r} has no loyalty program", reason="PROGRAM_NOT_FOUND",
                           metadata={"shop_id": shop_id})
        key_id, key = self.keyring.issue(shop_id)
        uow.conn.execute(insert(api_keys), {"shop_id": shop_id, "key_id": key_id, "label": label,
                                            "created_at": utcnow()})
        return key_id, key

    def configure_tiers(self, uow: UnitOfWork, *, shop_id: str, tiers: list[Tier], mode: QualificationMode,
                        policy: DowngradePolicy) -> Program:
        """Replaces the ladder. Nobody moves, except members at a level the new ladder lacks,
        who go to its top level."""
        v = Violations()
        domain.validate_tiers(tiers, v, mode)
        v.raise_if_any()
        current = self._program_for_update(uow, shop_id)
        ladder = Ladder(tuple(tiers), mode, policy)
        now = utcnow()
        uow.conn.execute(update(programs).where(programs.c.shop_id == shop_id).values(
            tiers=_ladder_json(ladder), qualification_mode=int(mode), downgrade_policy=int(policy), updated_at=now))
        self._forget_program(uow, shop_id)
        self._move_tiers_setwise(uow, shop_id, ladder, literal(ladder.top), members.c.tier_level > ladder.top,
                                 TierChangeReason.LADDER_CHANGED, now)
        return Program(shop_id, current.name, current.time_zone, current.require_follow, ladder,
                       current.created_at, now)

    # ----- members ------------------------------------------------------------------------

    def _active_member(self, conn: Connection, shop_id: str, *, member_id: str = "", buyer_id: str = "",
                       lock: bool = False) -> Row:
        query = select(members).where(members.c.shop_id == shop_id, members.c.status == MemberStatus.ACTIVE)
        query = query.where(members.c.member_id == member_id) if member_id else query.where(
            members.c.buyer_id == buyer_id)
        if lock:
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            who = f"member {member_id!r}" if member_id else f"buyer {buyer_id!r}"
            raise NotFound(f"{who} is not a member of shop {shop_id!r}", reason="MEMBER_NOT_FOUND",
                           metadata={"member_id": member_id} if member_id else {"buyer_id": buyer_id})
        return row

    def phone_masked(self, row: Row) -> str:
        if row.phone_cipher is None:
            return ""
        phone = self.vault.open(row.shop_id, row.member_id, row.phone_cipher)
        return domain.mask_phone(phone) if phone else ""

    def _profile_values(self, shop_id: str, member_id: str, profile: ProfileInput) -> dict:
        values: dict = {}
        if ProfileField.NAME in profile.given:
            values["name"] = profile.name or None
        if ProfileField.GENDER in profile.given:
            values["gender"] = profile.gender or 0
        if ProfileField.PHONE in profile.given:
            phone = domain.normalize_phone(profile.phone) if profile.phone else None
            values["phone_cipher"] = self.vault.seal(shop_id, member_id, phone) if phone else None
        if ProfileField.BIRTHDAY in profile.given:
            year, month, day = profile.birthday or (0, 0, 0)
            values.update(birth_year=year or None, birth_month=month or None, birth_day=day or None)
        if ProfileField.REGION in profile.given:
            values["region"] = profile.region or None
        return values

    def join_member(self, uow: UnitOfWork, *, shop_id: str, buyer_id: str, profile: ProfileInput,
                    consent: set[ProfileField], channel: int, referrer_member_id: str, follows_shop: bool) -> Row:
        v = Violations()
        validate_id(buyer_id, "buyer_id", v)
        v.check(channel > 0, "join_channel", "required: where the buyer joined")
        validate_id(referrer_member_id, "referrer_member_id", v, required=False)
        domain.validate_profile(profile, consent, v)
        v.raise_if_any()
        program = self.program(shop_id, uow.conn)
        if program.require_follow and not follows_shop:
            raise FailedPrecondition("the shop requires following it before joining", reason="JOIN_THRESHOLD_NOT_MET",
                                     subject=f"buyer/{buyer_id}")
        if referrer_member_id:
            try:
                self._active_member(uow.conn, shop_id, member_id=referrer_member_id)
            except NotFound as exc:
                raise InvalidArgument([("referrer_member_id", "not a member of this shop")]) from exc
        existing = uow.conn.execute(select(members.c.member_id).where(
            members.c.shop_id == shop_id, members.c.buyer_id == buyer_id)).first()
        if existing is not None:
            raise AlreadyExists(f"buyer {buyer_id!r} is already a member", reason="ALREADY_MEMBER",
                                metadata={"member_id": existing.member_id})
        now = utcnow()
        member_id = "m_" + secrets.token_hex(10)
        row = {
            "shop_id": shop_id, "member_id": member_id, "buyer_id": buyer_id, "status": MemberStatus.ACTIVE,
            "name": None, "gender": 0, "phone_cipher": None, "birth_year": None, "birth_month": None,
            "birth_day": None, "region": None, "consent_fields": _fields_str(consent),
            "consent_at": now if consent else None, "consent_revoked_at": None, "join_channel": channel,
            "referrer_member_id": referrer_member_id or None, "joined_at": now, "left_at": None,
            "tier_level": 0, "tier_since": now, "cumulative_spend_fen": 0, "trade_count": 0,
            "first_completed_at": None,
            **self._profile_values(shop_id, member_id, profile),
        }
        try:
            uow.conn.execute(insert(members), row)
        except IntegrityError as exc:  # a concurrent join of the same buyer won
            raise AlreadyExists(f"buyer {buyer_id!r} is already a member", reason="ALREADY_MEMBER") from exc
        self._record_tier_change(uow, shop_id, member_id, 0, 0, TierChangeReason.JOINED, now)
        uow.emit(shop_id, events_pb2.MemberJoined(
            shop_id=shop_id, member_id=member_id, buyer_id=buyer_id, join_channel=channel,
            referrer_member_id=referrer_member_id, joined_at=to_timestamp(now), tier_level=0,
            birth_month=row["birth_month"] or 0, birth_day=row["birth_day"] or 0))
        return self._active_member(uow.conn, shop_id, member_id=member_id)

    def get_member(self, conn: Connection, shop_id: str, *, member_id: str, buyer_id: str) -> Row:
        _require_one(member_id, buyer_id)
        self.program(shop_id, conn)
        query = select(members).where(members.c.shop_id == shop_id)
        if member_id:
            row = conn.execute(query.where(members.c.member_id == member_id)).first()
        else:
            row = conn.execute(query.where(members.c.buyer_id == buyer_id,
                                           members.c.status == MemberStatus.ACTIVE)).first()
        if row is None:
            raise NotFound("no such member", reason="MEMBER_NOT_FOUND",
                           metadata={"member_id": member_id} if member_id else {"buyer_id": buyer_id})
        return row

    def update_profile(self, uow: UnitOfWork, *, shop_id: str, member_id: str, profile: ProfileInput,
                       new_consent: set[ProfileField]) -> Row:
        v = Violations()
        validate_id(member_id, "member_id", v)
        v.check(bool(profile.given), "update_mask", "name at least one of: " + ", ".join(domain.PROFILE_PATHS))
        v.raise_if_any()
        self.program(shop_id, uow.conn)
        row = self._active_member(uow.conn, shop_id, member_id=member_id, lock=True)
        consent = _fields_set(row.consent_fields) | new_consent
        v = Violations()
        domain.validate_profile(profile, consent, v)
        v.raise_if_any()
        now = utcnow()
        values = self._profile_values(shop_id, member_id, profile)
        values["consent_fields"] = _fields_str(consent)
        if new_consent - _fields_set(row.consent_fields):
            values["consent_at"] = now
        uow.conn.execute(update(members).where(members.c.shop_id == shop_id, members.c.member_id == member_id)
                         .values(**values))
        updated = self._active_member(uow.conn, shop_id, member_id=member_id)
        uow.emit(shop_id, events_pb2.ProfileUpdated(
            shop_id=shop_id, member_id=member_id, changed_fields=sorted(f.name.lower() for f in profile.given),
            birth_month=updated.birth_month or 0, birth_day=updated.birth_day or 0, region=updated.region or "",
            updated_at=to_timestamp(now)))
        return updated

    def leave_member(self, uow: UnitOfWork, *, shop_id: str, member_id: str, reason: str) -> datetime:
        """自愿退出: personal data is erased; the anonymised member id, tier history and order
        amounts stay for accounting."""
        v = Violations()
        validate_id(member_id, "member_id", v)
        v.check(len(reason) <= domain.MAX_NOTE, "reason", f"at most {domain.MAX_NOTE} characters")
        v.raise_if_any()
        self.program(shop_id, uow.conn)
        row = self._active_member(uow.conn, shop_id, member_id=member_id, lock=True)
        now = utcnow()
        uow.conn.execute(update(members).where(members.c.shop_id == shop_id, members.c.member_id == member_id)
                         .values(status=MemberStatus.LEFT, left_at=now, buyer_id=None, name=None, gender=0,
                                 phone_cipher=None, birth_year=None, birth_month=None, birth_day=None,
                                 region=None, consent_fields="", consent_revoked_at=now))
        uow.conn.execute(update(orders).where(orders.c.shop_id == shop_id, (orders.c.member_id == member_id) | (
            orders.c.buyer_id == row.buyer_id)).values(buyer_id=None))
        erase_responses(uow, shop_id, member_id)  # stored answers of JoinMember/UpdateProfile hold PII
        uow.emit(shop_id, events_pb2.MemberLeft(shop_id=shop_id, member_id=member_id, left_at=to_timestamp(now)))
        self._invalidate_tier(uow, shop_id, member_id, row.buyer_id)
        return now

    def list_members(self, conn: Connection, *, shop_id: str, limit: int, after: str | None,
                     tier_level: int | None, status: int) -> list[Row]:
        self.program(shop_id, conn)
        query = select(members).where(members.c.shop_id == shop_id).order_by(members.c.member_id).limit(limit)
        if after:
            query = query.where(members.c.member_id > after)
        if tier_level is not None:
            query = query.where(members.c.tier_level == tier_level)
        if status:
            query = query.where(members.c.status == status)
        return list(conn.execute(query))

    def import_members(self, uow: UnitOfWork, *, shop_id: str, rows: list[ImportRow], validate_only: bool) -> list[str]:
        """会员导入: all rows or none; every invalid row is reported as members[i].field."""
        v = Violations()
        v.check(0 < len(rows) <= MAX_IMPORT_ROWS, "members", f"1..{MAX_IMPORT_ROWS} rows a call")
        v.raise_if_any()
        program = self.program(shop_id, uow.conn)
        seen: set[str] = set()
        for i, r in enumerate(rows):
            at = f"members[{i}]"
            validate_id(r.buyer_id, f"{at}.buyer_id", v)
            v.check(r.buyer_id not in seen, f"{at}.buyer_id", "appears twice in this import")
            seen.add(r.buyer_id)
            domain.validate_profile(r.profile, r.consent, v, prefix=f"{at}.profile")
            v.check(0 <= r.cumulative_spend_fen <= MAX_AMOUNT_FEN, f"{at}.cumulative_spend_fen",
                    f"must be 0..{MAX_AMOUNT_FEN}")
            v.check(r.trade_count >= 0, f"{at}.trade_count", "must not be negative")
            if r.tier_level is not None:
                v.check(0 <= r.tier_level <= program.ladder.top, f"{at}.tier_level",
                        f"must be 0..{program.ladder.top}")
            v.check(r.join_time is None or r.join_time <= utcnow(), f"{at}.join_time", "in the future")
        if seen:
            taken = {b for (b,) in uow.conn.execute(select(members.c.buyer_id).where(
                members.c.shop_id == shop_id, members.c.buyer_id.in_(list(seen))))}
            for i, r in enumerate(rows):
                v.check(r.buyer_id not in taken, f"members[{i}].buyer_id", "already a member")
        v.raise_if_any()
        if validate_only:
            return []
        now = utcnow()
        member_ids, inserts, history, joined = [], [], [], []
        for r in rows:
            member_id = "m_" + secrets.token_hex(10)
            level = r.tier_level if r.tier_level is not None else program.ladder.qualified_level(
                r.cumulative_spend_fen, r.trade_count)
            joined_at = r.join_time or now
            values = {
                "shop_id": shop_id, "member_id": member_id, "buyer_id": r.buyer_id, "status": MemberStatus.ACTIVE,
                "name": None, "gender": 0, "phone_cipher": None, "birth_year": None, "birth_month": None,
                "birth_day": None, "region": None, "consent_fields": _fields_str(r.consent),
                "consent_at": joined_at if r.consent else None, "consent_revoked_at": None,
                "join_channel": domain.JOIN_CHANNEL_CRM_IMPORT, "referrer_member_id": None, "joined_at": joined_at,
                "left_at": None,
                "tier_level": level, "tier_since": now, "cumulative_spend_fen": r.cumulative_spend_fen,
                "trade_count": r.trade_count, "first_completed_at": now if r.trade_count else None,
                **self._profile_values(shop_id, member_id, r.profile),
            }
            inserts.append(values)
            history.append({"shop_id": shop_id, "member_id": member_id, "from_level": 0, "to_level": level,
                            "reason": TierChangeReason.IMPORTED, "note": "", "operator": "", "order_id": "",
                            "changed_at": now})
            joined.append(events_pb2.MemberJoined(
                shop_id=shop_id, member_id=member_id, buyer_id=r.buyer_id, join_channel=domain.JOIN_CHANNEL_CRM_IMPORT,
                joined_at=to_timestamp(joined_at), tier_level=level, birth_month=values["birth_month"] or 0,
                birth_day=values["birth_day"] or 0, imported=True))
            member_ids.append(member_id)
        try:
            uow.conn.execute(insert(members), inserts)
        except IntegrityError as exc:  # a buyer joined while we were importing
            raise AlreadyExists("a buyer of this import joined meanwhile; validate and import again",
                                reason="ALREADY_MEMBER") from exc
        uow.conn.execute(insert(tier_history), history)
        uow.emit_many(shop_id, joined)
        return member_ids

    def export_members(self, shop_id: str, include_left: bool) -> Iterator[Row]:
        """会员导出: streamed through a server-side cursor, so memory stays flat at any size."""
        self.program(shop_id)
        with self.db.engine.connect() as conn:
            conn = conn.execution_options(stream_results=True, yield_per=500)
            query = select(members).where(members.c.shop_id == shop_id).order_by(members.c.member_id)
            if not include_left:
                query = query.where(members.c.status == MemberStatus.ACTIVE)
            with conn.begin():
                yield from conn.execute(query)

    # ----- orders -------------------------------------------------------------------------

    def _order(self, conn: Connection, shop_id: str, order_id: str, *, lock: bool = False) -> Row:
        query = select(orders).where(orders.c.shop_id == shop_id, orders.c.order_id == order_id)
        row = conn.execute(query.with_for_update() if lock else query).first()
        if row is None:
            raise NotFound(f"order {order_id!r} was never recorded", reason="ORDER_NOT_FOUND",
                           metadata={"order_id": order_id})
        return row

    def record_order(self, uow: UnitOfWork, *, shop_id: str, order_id: str, buyer_id: str, amount_fen: int,
                     paid_at: datetime) -> Row:
        v = Violations()
        validate_id(order_id, "order_id", v)
        validate_id(buyer_id, "buyer_id", v)
        v.check(0 <= amount_fen <= MAX_AMOUNT_FEN, "amount_fen", f"must be 0..{MAX_AMOUNT_FEN} fen")
        v.raise_if_any()
        self.program(shop_id, uow.conn)
        existing = uow.conn.execute(select(orders).where(orders.c.shop_id == shop_id,
                                                         orders.c.order_id == order_id)).first()
        if existing is not None:
            if existing.amount_fen != amount_fen or (existing.buyer_id not in (None, buyer_id)):
                raise AlreadyExists(f"order {order_id!r} was recorded with other details", reason="ORDER_CONFLICT",
                                    metadata={"order_id": order_id})
            return existing
        try:
            with uow.conn.begin_nested():
                uow.conn.execute(insert(orders), {
                    "shop_id": shop_id, "order_id": order_id, "buyer_id": buyer_id, "member_id": None,
                    "amount_fen": amount_fen, "refunded_fen": 0, "status": OrderStatus.PAID, "paid_at": paid_at,
                    "completed_at": None, "counted": False, "points_rate_milli": 0})
        except IntegrityError:  # a concurrent retry recorded it first: answer as a retry would
            return self.record_order(uow, shop_id=shop_id, order_id=order_id, buyer_id=buyer_id,
                                     amount_fen=amount_fen, paid_at=paid_at)
        return self._order(uow.conn, shop_id, order_id)

    def complete_order(self, uow: UnitOfWork, *, shop_id: str, order_id: str, completed_at: datetime) -> OrderOutcome:
        """交易成功: the trade counts for the buyer's membership; the tier may go up after it."""
        v = Violations()
        validate_id(order_id, "order_id", v)
        v.raise_if_any()
        program = self.program(shop_id, uow.conn)
        order = self._order(uow.conn, shop_id, order_id, lock=True)
        if order.status == OrderStatus.REFUNDED and order.completed_at is None:
            raise FailedPrecondition("the order was refunded in full before it completed", reason="ORDER_REFUNDED",
                                     subject=f"order/{order_id}")
        if order.completed_at is not None:  # completed before: the same answer again
            return OrderOutcome(order, self._member_tier(uow.conn, program, shop_id, order.member_id), False)
        member = None
        if order.buyer_id is not None:
            member = uow.conn.execute(select(members).where(
                members.c.shop_id == shop_id, members.c.buyer_id == order.buyer_id,
                members.c.status == MemberStatus.ACTIVE).with_for_update()).first()
        if member is None:  # an order alone does not make a member
            uow.conn.execute(update(orders).where(orders.c.shop_id == shop_id, orders.c.order_id == order_id)
                             .values(status=OrderStatus.COMPLETED, completed_at=completed_at))
            return OrderOutcome(self._order(uow.conn, shop_id, order_id), None, False)

        ladder = program.ladder
        held = ladder.tier(member.tier_level)  # the rate of the tier held when the trade succeeds
        amount = order.amount_fen - order.refunded_fen
        spend = member.cumulative_spend_fen + amount
        trades = member.trade_count + 1
        first = member.first_completed_at is None
        uow.conn.execute(update(orders).where(orders.c.shop_id == shop_id, orders.c.order_id == order_id).values(
            status=OrderStatus.COMPLETED, completed_at=completed_at, member_id=member.member_id, counted=True,
            points_rate_milli=held.points_rate_milli))
        uow.conn.execute(update(members).where(
            members.c.shop_id == shop_id, members.c.member_id == member.member_id).values(
            cumulative_spend_fen=spend, trade_count=trades,
            first_completed_at=member.first_completed_at or completed_at))
        uow.emit(shop_id, events_pb2.OrderCompleted(
            shop_id=shop_id, order_id=order_id, member_id=member.member_id, buyer_id=order.buyer_id,
            amount_fen=amount, completed_at=to_timestamp(completed_at), tier_level=held.level, tier_code=held.code,
            points_rate_milli=held.points_rate_milli, first_completed_order=first,
            referrer_member_id=member.referrer_member_id or "", birth_month=member.birth_month or 0,
            birth_day=member.birth_day or 0))
        new_level = ladder.evaluate(member.tier_level, spend, trades)
        changed = new_level != member.tier_level
        if changed:
            self._change_tier(uow, ladder, member, new_level, TierChangeReason.QUALIFIED, order_id=order_id)
        return OrderOutcome(self._order(uow.conn, shop_id, order_id), ladder.tier(new_level), changed)

    def refund_order(self, uow: UnitOfWork, *, shop_id: str, order_id: str, refund_id: str, amount_fen: int,
                     refunded_at: datetime) -> OrderOutcome:
        """退款: a refund takes its amount off the member's cumulative spend; a full refund also
        takes the trade off their count."""
        v = Violations()
        validate_id(order_id, "order_id", v)
        validate_id(refund_id, "refund_id", v)
        v.check(0 < amount_fen <= MAX_AMOUNT_FEN, "amount_fen", "must be positive")
        v.raise_if_any()
        program = self.program(shop_id, uow.conn)
        order = self._order(uow.conn, shop_id, order_id, lock=True)
        previous = uow.conn.execute(select(refunds.c.amount_fen).where(
            refunds.c.shop_id == shop_id, refunds.c.order_id == order_id, refunds.c.refund_id == refund_id)).first()
        if previous is not None:
            if previous.amount_fen != amount_fen:
                raise AlreadyExists(f"refund {refund_id!r} was made with another amount", reason="REFUND_CONFLICT",
                                    metadata={"refund_id": refund_id})
            return OrderOutcome(order, self._member_tier(uow.conn, program, shop_id, order.member_id), False)
        remaining = order.amount_fen - order.refunded_fen
        if amount_fen > remaining:
            raise FailedPrecondition(f"refund of {amount_fen} fen exceeds the {remaining} fen left on the order",
                                     reason="REFUND_EXCEEDS_ORDER", subject=f"order/{order_id}",
                                     metadata={"remaining_fen": str(remaining)})
        refunded = order.refunded_fen + amount_fen
        full = refunded == order.amount_fen
        uow.conn.execute(insert(refunds), {"shop_id": shop_id, "order_id": order_id, "refund_id": refund_id,
                                           "amount_fen": amount_fen, "refunded_at": refunded_at})
        values: dict = {"refunded_fen": refunded}
        if full:
            values["status"] = OrderStatus.REFUNDED
            values["counted"] = False
        uow.conn.execute(update(orders).where(orders.c.shop_id == shop_id, orders.c.order_id == order_id)
                         .values(**values))
        tier, changed = None, False
        member = None
        if order.counted and order.member_id:
            member = uow.conn.execute(select(members).where(
                members.c.shop_id == shop_id, members.c.member_id == order.member_id,
                members.c.status == MemberStatus.ACTIVE).with_for_update()).first()
        if member is not None:
            spend = max(0, member.cumulative_spend_fen - amount_fen)
            trades = max(0, member.trade_count - (1 if full else 0))
            uow.conn.execute(update(members).where(
                members.c.shop_id == shop_id, members.c.member_id == member.member_id).values(
                cumulative_spend_fen=spend, trade_count=trades))
            new_level = program.ladder.evaluate(member.tier_level, spend, trades)
            changed = new_level != member.tier_level
            if changed:
                self._change_tier(uow, program.ladder, member, new_level, TierChangeReason.REFUNDED, order_id=order_id)
            tier = program.ladder.tier(new_level)
        uow.emit(shop_id, events_pb2.OrderRefunded(
            shop_id=shop_id, order_id=order_id, refund_id=refund_id, member_id=order.member_id or "",
            refund_amount_fen=amount_fen, total_refunded_fen=refunded, order_amount_fen=order.amount_fen,
            after_completion=order.completed_at is not None, fully_refunded=full,
            points_rate_milli=order.points_rate_milli, refunded_at=to_timestamp(refunded_at)))
        return OrderOutcome(self._order(uow.conn, shop_id, order_id), tier, changed)

    def _member_tier(self, conn: Connection, program: Program, shop_id: str, member_id: str | None) -> Tier | None:
        if not member_id:
            return None
        row = conn.execute(select(members.c.tier_level).where(
            members.c.shop_id == shop_id, members.c.member_id == member_id)).first()
        return program.ladder.tier(row.tier_level) if row else None

    # ----- tiers --------------------------------------------------------------------------

    def get_tier(self, shop_id: str, *, member_id: str, buyer_id: str) -> TierView:
        """Cached: the member's tier from the cache when it has it, else from the database."""
        _require_one(member_id, buyer_id)
        program = self.program(shop_id)
        key = cache_key(shop_id, "tier", "m", member_id) if member_id else cache_key(shop_id, "tier", "b", buyer_id)
        cached = self.cache.get(key)
        if cached is not None:
            mid, level, since = cached.decode().split("|")
            return TierView(mid, program.ladder.tier(int(level)), datetime.fromisoformat(since))
        row = self.db.read(lambda conn: self._active_member(conn, shop_id, member_id=member_id, buyer_id=buyer_id))
        self.cache.add(key, _tier_cache_value(row.member_id, row.tier_level, row.tier_since), self.cache_ttl)
        return TierView(row.member_id, program.ladder.tier(row.tier_level), row.tier_since)

    def _invalidate_tier(self, uow: UnitOfWork, shop_id: str, member_id: str, buyer_id: str | None) -> None:
        keys = [cache_key(shop_id, "tier", "m", member_id)]
        if buyer_id:
            keys.append(cache_key(shop_id, "tier", "b", buyer_id))
        invalidate_on_commit(uow, self.cache, keys)

    def tier_progress(self, conn: Connection, *, shop_id: str, member_id: str) -> tuple[Program, Row, domain.Progress]:
        v = Violations()
        validate_id(member_id, "member_id", v)
        v.raise_if_any()
        program = self.program(shop_id, conn)
        row = self._active_member(conn, shop_id, member_id=member_id)
        return program, row, program.ladder.progress(row.tier_level, row.cumulative_spend_fen, row.trade_count)

    def set_tier(self, uow: UnitOfWork, *, shop_id: str, member_id: str, level: int, reason: str,
                 operator: str) -> tuple[int, Tier]:
        """A manual tier, audited with who and why."""
        v = Violations()
        validate_id(member_id, "member_id", v)
        v.check(0 < len(reason.strip()) <= domain.MAX_NOTE, "reason", f"required, at most {domain.MAX_NOTE} characters")
        v.check(0 < len(operator.strip()) <= domain.MAX_NAME, "operator",
                f"required, at most {domain.MAX_NAME} characters")
        v.raise_if_any()
        program = self._program_for_update(uow, shop_id)
        if not 0 <= level <= program.ladder.top:
            raise InvalidArgument([("tier_level", f"must be 0..{program.ladder.top}")])
        member = self._active_member(uow.conn, shop_id, member_id=member_id, lock=True)
        if member.tier_level != level:
            self._change_tier(uow, program.ladder, member, level, TierChangeReason.MANUAL, note=reason,
                              operator=operator)
        return member.tier_level, program.ladder.tier(level)

    def _change_tier(self, uow: UnitOfWork, ladder: Ladder, member: Row, level: int, reason: TierChangeReason, *,
                     note: str = "", operator: str = "", order_id: str = "") -> None:
        now = utcnow()
        shop_id, member_id = member.shop_id, member.member_id
        uow.conn.execute(update(members).where(members.c.shop_id == shop_id, members.c.member_id == member_id)
                         .values(tier_level=level, tier_since=now))
        self._record_tier_change(uow, shop_id, member_id, member.tier_level, level, reason, now, note=note,
                                 operator=operator, order_id=order_id)
        uow.emit(shop_id, events_pb2.TierChanged(
            shop_id=shop_id, member_id=member_id, from_level=member.tier_level, to_level=level,
            to_code=ladder.tier(level).code, reason=reason, operator=operator, note=note, order_id=order_id,
            changed_at=to_timestamp(now)))
        self._invalidate_tier(uow, shop_id, member_id, member.buyer_id)

    @staticmethod
    def _record_tier_change(uow: UnitOfWork, shop_id: str, member_id: str, from_level: int, to_level: int,
                            reason: TierChangeReason, at: datetime, *, note: str = "", operator: str = "",
                            order_id: str = "") -> None:
        uow.conn.execute(insert(tier_history), {
            "shop_id": shop_id, "member_id": member_id, "from_level": from_level, "to_level": to_level,
            "reason": reason, "note": note, "operator": operator, "order_id": order_id, "changed_at": at})

    def tier_history(self, conn: Connection, *, shop_id: str, member_id: str, limit: int,
                     before_id: int | None) -> list[Row]:
        v = Violations()
        validate_id(member_id, "member_id", v)
        v.raise_if_any()
        self.program(shop_id, conn)
        if conn.execute(select(members.c.member_id).where(members.c.shop_id == shop_id,
                                                          members.c.member_id == member_id)).first() is None:
            raise NotFound(f"member {member_id!r} not found", reason="MEMBER_NOT_FOUND",
                           metadata={"member_id": member_id})
        query = (select(tier_history).where(tier_history.c.shop_id == shop_id, tier_history.c.member_id == member_id)
                 .order_by(tier_history.c.id.desc()).limit(limit))
        if before_id is not None:
            query = query.where(tier_history.c.id < before_id)
        return list(conn.execute(query))

    def reevaluate_tiers(self, uow: UnitOfWork, *, shop_id: str, dry_run: bool) -> tuple[int, int, int]:
        """Re-applies the current rules to every active member in set-based SQL. A dry run counts
        the same moves without making them. Returns (upgraded, downgraded, unchanged)."""
        program = self._program_for_update(uow, shop_id)
        target = _target_level_sql(program.ladder)
        counts = uow.conn.execute(select(
            func.coalesce(func.sum(case((target > members.c.tier_level, 1), else_=0)), 0),
            func.coalesce(func.sum(case((target < members.c.tier_level, 1), else_=0)), 0),
            func.count(),
        ).where(members.c.shop_id == shop_id, members.c.status == MemberStatus.ACTIVE)).one()
        upgraded, downgraded, total = int(counts[0]), int(counts[1]), int(counts[2])
        if not dry_run and upgraded + downgraded:
            self._move_tiers_setwise(uow, shop_id, program.ladder, target, target != members.c.tier_level,
                                     TierChangeReason.REEVALUATED, utcnow())
        return upgraded, downgraded, total - upgraded - downgraded

    def _move_tiers_setwise(self, uow: UnitOfWork, shop_id: str, ladder: Ladder, target, condition,  # noqa: ANN001
                            reason: TierChangeReason, now: datetime) -> int:
        """Moves every active member matching `condition` to `target` (SQL expressions): history
        rows with INSERT ... SELECT, one UPDATE, then a TierChanged event per member moved."""
        scope = and_(members.c.shop_id == shop_id, members.c.status == MemberStatus.ACTIVE, condition)
        # Locks the rows it moves, so a concurrent completion waits and history, events and the
        # update agree.
        moved = uow.conn.execute(select(members.c.member_id, members.c.buyer_id, members.c.tier_level,
                                        target.label("target")).where(scope).with_for_update()).all()
        if not moved:
            return 0
        uow.conn.execute(insert(tier_history).from_select(
            ["shop_id", "member_id", "from_level", "to_level", "reason", "note", "operator", "order_id", "changed_at"],
            select(members.c.shop_id, members.c.member_id, members.c.tier_level, target, literal(int(reason)),
                   literal(""), literal(""), literal(""), literal(now)).where(scope)))
        uow.conn.execute(update(members).where(scope).values(tier_level=target, tier_since=now))
        changed_at = to_timestamp(now)
        for i in range(0, len(moved), 1000):
            uow.emit_many(shop_id, [
                events_pb2.TierChanged(shop_id=shop_id, member_id=m.member_id, from_level=m.tier_level,
                                       to_level=m.target, to_code=ladder.tier(m.target).code, reason=reason,
                                       changed_at=changed_at)
                for m in moved[i:i + 1000]])
        keys = [cache_key(shop_id, "tier", "m", m.member_id) for m in moved]
        keys += [cache_key(shop_id, "tier", "b", m.buyer_id) for m in moved if m.buyer_id]
        invalidate_on_commit(uow, self.cache, keys)
        return len(moved)


def _target_level_sql(ladder: Ladder):  # noqa: ANN202 - a SQLAlchemy column expression
    """The tier each member's figures qualify for, as one CASE, then the downgrade policy."""
    spend, trades = members.c.cumulative_spend_fen, members.c.trade_count
    whens = []
    for tier in reversed(ladder.tiers[1:]):
        by_spend, by_count = spend >= tier.min_spend_fen, trades >= tier.min_trades
        meets = {QualificationMode.CUMULATIVE_SPEND: by_spend, QualificationMode.TRADE_COUNT: by_count}.get(
            ladder.mode, by_spend | by_count)
        whens.append((meets, tier.level))
    qualified = case(*whens, else_=0) if whens else literal(0)
    if ladder.policy is DowngradePolicy.NEVER:
        return case((qualified > members.c.tier_level, qualified), else_=members.c.tier_level)
    return qualified


def _require_one(member_id: str, buyer_id: str) -> None:
    if bool(member_id) == bool(buyer_id):
        raise InvalidArgument([("member_id", "give exactly one of member_id and buyer_id")])
    v = Violations()
    validate_id(member_id, "member_id", v, required=False)
    validate_id(buyer_id, "buyer_id", v, required=False)
    v.raise_if_any()


def _fields_str(fields: set[ProfileField]) -> str:
    return ",".join(str(int(f)) for f in sorted(fields))


def _fields_set(raw: str) -> set[ProfileField]:
    return {ProfileField(int(x)) for x in raw.split(",") if x}
