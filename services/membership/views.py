"""Read queries: members and orders as the service shows them (personal fields decrypted with
their buyer's data key), and the lists and exports. No handler, no write transaction."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection, func, select
from sqlalchemy.engine import Row

from services.kit.errors import NotFound
from services.membership import data_keys, domain, order_details, reasons, standing
from services.membership.commands import require_member_id, require_one_member_key
from services.membership.domain import Ladder, MemberStatus, ProfileField, Tier
from services.membership.pii import DataKey
from services.membership.tables import members, orders, refunds

if TYPE_CHECKING:
    from services.membership.context import Membership
    from services.membership.programs import Program


@dataclass(frozen=True)
class MemberView:
    shop_id: str
    member_id: str
    key_id: str  # the data key of the buyer ("" once they left)
    buyer_id: str
    status: MemberStatus
    name: str
    gender: int
    phone: str
    birthday: tuple[int, int, int] | None  # (year or 0, month, day)
    region: str
    consent: frozenset[ProfileField]
    consent_at: datetime | None
    consent_revoked_at: datetime | None
    join_channel: int
    referrer_member_id: str
    joined_at: datetime
    left_at: datetime | None
    tier: Tier  # the tier of the member's level in the shop's ladder
    tier_since: datetime
    cumulative_spend_fen: int
    trade_count: int
    tier_expires_at: datetime | None = None  # None: the tier holds (no validity, or the entry tier)


@dataclass(frozen=True)
class OrderView:
    shop_id: str
    order_id: str
    key_id: str
    buyer_id: str
    member_id: str
    amount_fen: int
    refunded_fen: int
    status: int
    paid_at: datetime
    completed_at: datetime | None
    counted: bool
    points_rate_milli: int
    details: order_details.OrderDetails = order_details.NONE
    refunds_after_completion: int = 0


@dataclass(frozen=True)
class TierStanding:
    """What the progress bar needs of a member: no personal field (nothing is decrypted)."""

    cumulative_spend_fen: int
    trade_count: int
    tier_expires_at: datetime | None


@dataclass(frozen=True)
class TierProgress:
    program: Program
    member: TierStanding
    progress: domain.Progress
    growth_value: int = 0


def fields_str(fields: set[ProfileField] | frozenset[ProfileField]) -> str:
    return ",".join(str(int(f)) for f in sorted(fields))


def fields_set(raw: str) -> frozenset[ProfileField]:
    return frozenset(ProfileField(int(x)) for x in raw.split(",") if x)


def birthday_text(birthday: tuple[int, int, int]) -> str:
    return "-".join(str(part) for part in birthday)


def member_view(ctx: Membership, row: Row, ladder: Ladder, keys: dict[str, DataKey] | None = None) -> MemberView:
    """A members row, decrypted with its data key (from `keys` when a list fetched them together),
    its level read on `ladder`."""
    key = data_keys.unwrap(ctx, row) if keys is None else keys.get(row.key_id or "")

    def field(name: str) -> str:
        if key is None:
            return ""
        return key.open(getattr(row, f"{name}_cipher"), data_keys.member_field(row.shop_id, row.member_id, name)) or ""

    birthday = None
    if birthday_raw := field("birthday"):
        year, month, day = (int(part) for part in birthday_raw.split("-"))
        birthday = (year, month, day)
    return MemberView(
        shop_id=row.shop_id, member_id=row.member_id, key_id=row.key_id or "", buyer_id=field("buyer_id"),
        status=MemberStatus(row.status), name=field("name"), gender=row.gender, phone=field("phone"),
        birthday=birthday, region=field("region"),
        consent=fields_set(row.consent_fields), consent_at=row.consent_at, consent_revoked_at=row.consent_revoked_at,
        join_channel=row.join_channel, referrer_member_id=row.referrer_member_id or "", joined_at=row.joined_at,
        left_at=row.left_at, tier=ladder.tier(row.tier_level), tier_since=row.tier_since,
        cumulative_spend_fen=row.cumulative_spend_fen, trade_count=row.trade_count,
        tier_expires_at=row.tier_expires_at)


def order_view(ctx: Membership, row: Row, keys: dict[str, DataKey] | None = None) -> OrderView:
    """An orders row, decrypted with its data key (from `keys` when the caller holds it already)."""
    key = keys[row.key_id] if keys is not None and row.key_id in keys else data_keys.unwrap(ctx, row)
    buyer_id = key.open(row.buyer_id_cipher, data_keys.order_buyer(row.shop_id, row.order_id)) if key else None
    return OrderView(
        shop_id=row.shop_id, order_id=row.order_id, key_id=row.key_id or "", buyer_id=buyer_id or "",
        member_id=row.member_id or "", amount_fen=row.amount_fen, refunded_fen=row.refunded_fen, status=row.status,
        paid_at=row.paid_at, completed_at=row.completed_at, counted=row.counted,
        points_rate_milli=row.points_rate_milli, details=order_details.from_json(row.details))


def member_not_found(member_id: str = "", buyer_id: str = "") -> NotFound:
    return NotFound("no such member", reason=reasons.MEMBER_NOT_FOUND,
                    metadata={"member_id": member_id} if member_id else {"buyer_id": buyer_id})


def get_program(ctx: Membership, shop_id: str) -> Program:
    return ctx.programs.get(shop_id)


def get_member(ctx: Membership, shop_id: str, *, member_id: str, buyer_id: str) -> MemberView:
    """A member by member_id (also after leaving) or by buyer_id (active members only)."""
    require_one_member_key(member_id, buyer_id)

    def read(conn: Connection) -> MemberView:
        program = ctx.programs.get(shop_id, conn)
        query = select(members).where(members.c.shop_id == shop_id)
        if member_id:
            query = query.where(members.c.member_id == member_id)
        else:
            query = query.where(members.c.buyer_hash == ctx.pii.buyer_hash(shop_id, buyer_id),
                                members.c.status == MemberStatus.ACTIVE)
        row = conn.execute(query).first()
        if row is None:
            raise member_not_found(member_id, buyer_id)
        return member_view(ctx, row, program.ladder)

    return ctx.db.read(read)


def list_members(ctx: Membership, shop_id: str, *, limit: int, after: str | None, tier_level: int | None,
                 status: int) -> list[MemberView]:
    def read(conn: Connection) -> list[MemberView]:
        program = ctx.programs.get(shop_id, conn)
        query = (select(members).where(members.c.shop_id == shop_id)
                 .order_by(members.c.member_id).limit(limit))
        if after:
            query = query.where(members.c.member_id > after)
        if tier_level is not None:
            query = query.where(members.c.tier_level == tier_level)
        if status:
            query = query.where(members.c.status == status)
        rows = conn.execute(query).all()
        keys = ctx.keys.keys(shop_id, [row.key_id for row in rows if row.key_id])
        return [member_view(ctx, row, program.ladder, keys) for row in rows]

    return ctx.db.read(read)


def export_members(ctx: Membership, shop_id: str, include_left: bool) -> Iterator[MemberView]:
    """会员导出: streamed through a server-side cursor, so memory stays flat at any size."""
    program = ctx.programs.get(shop_id)

    def stream() -> Iterator[MemberView]:
        with ctx.db.engine.connect() as conn:
            conn = conn.execution_options(stream_results=True, yield_per=500)
            query = select(members).where(members.c.shop_id == shop_id).order_by(members.c.member_id)
            if not include_left:
                query = query.where(members.c.status == MemberStatus.ACTIVE)
            with conn.begin():
                for rows in conn.execute(query).partitions():
                    keys = ctx.keys.keys(shop_id, [row.key_id for row in rows if row.key_id])
                    for row in rows:
                        yield member_view(ctx, row, program.ladder, keys)

    return stream()


def export_orders(ctx: Membership, shop_id: str) -> Iterator[OrderView]:
    """订单导出: the shop's completed orders of members, in order id order, through a server-side
    cursor (flat memory); nothing is decrypted (the buyer is named by the member id)."""
    ctx.programs.get(shop_id)
    after_completion = (select(func.count()).where(
        refunds.c.shop_id == orders.c.shop_id, refunds.c.order_id == orders.c.order_id,
        refunds.c.refunded_at >= orders.c.completed_at).scalar_subquery())
    query = (select(orders, after_completion.label("refunds_after_completion"))
             .where(orders.c.shop_id == shop_id, orders.c.completed_at.is_not(None), orders.c.member_id.is_not(None))
             .order_by(orders.c.order_id))

    def stream() -> Iterator[OrderView]:
        with ctx.db.engine.connect() as conn:
            conn = conn.execution_options(stream_results=True, yield_per=1000)
            with conn.begin():
                for row in conn.execute(query):
                    yield OrderView(
                        shop_id=row.shop_id, order_id=row.order_id, key_id="", buyer_id="", member_id=row.member_id,
                        amount_fen=row.amount_fen, refunded_fen=row.refunded_fen, status=row.status,
                        paid_at=row.paid_at, completed_at=row.completed_at, counted=row.counted,
                        points_rate_milli=row.points_rate_milli, details=order_details.from_json(row.details),
                        refunds_after_completion=row.refunds_after_completion)

    return stream()


def tier_progress(ctx: Membership, shop_id: str, member_id: str) -> TierProgress:
    """Cached (standing.py): the storefront card asks for it on every visit."""
    require_member_id(member_id)
    program = ctx.programs.get(shop_id)
    found = standing.read(ctx, shop_id, member_id)
    if found is None:
        raise member_not_found(member_id)
    return TierProgress(program, TierStanding(found.cumulative_spend_fen, found.trade_count, found.tier_expires_at),
                        program.ladder.progress(found.tier_level, found.cumulative_spend_fen, found.trade_count,
                                                found.growth_value), found.growth_value)


def order(ctx: Membership, conn: Connection, shop_id: str, order_id: str) -> OrderView:
    row = conn.execute(select(orders).where(orders.c.shop_id == shop_id,
                                                        orders.c.order_id == order_id)).first()
    if row is None:
        raise NotFound(f"order {order_id!r} was never recorded", reason=reasons.ORDER_NOT_FOUND,
                       metadata={"order_id": order_id})
    return order_view(ctx, row)
