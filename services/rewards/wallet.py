"""The coupon wallet (卡券包): coupons issued to members, used once with an order, released when
that order is cancelled, expired by a periodic job. Every coupon is issued once per
(source, reference, member, ordinal), so a redelivered event or a retried call finds what it
issued before. A coupon's state changes only by conditional updates: of two concurrent uses
(or a use and the expiry job), one finds the coupon as it expected and the other nothing."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from loyalty.rewards.v1 import events_pb2
from sqlalchemy import ColumnElement, Connection, Row, and_, or_, select, update

from services.kit.errors import FailedPrecondition, NotFound
from services.kit.storage import UnitOfWork, insert_ignoring
from services.kit.timeutil import to_timestamp, utcnow
from services.rewards import reasons
from services.rewards.catalogue import read_reward
from services.rewards.commands import wallet as commands
from services.rewards.domain import (
    CouponSource,
    CouponSpec,
    CouponState,
    Reward,
    RewardKind,
    RewardStatus,
    coupon_applies,
    coupon_window,
)
from services.rewards.service import RewardsService
from services.rewards.tables import coupons, members

log = logging.getLogger("loyalty.rewards.wallet")
ROWS_PER_INSERT = 500  # well under both databases' limits on a statement's parameters


@dataclass(frozen=True)
class Coupon:
    """A coupon as its member sees it: `state` is EXPIRED once past valid_until, whether or not
    the expiry job has run yet."""

    shop_id: str
    coupon_id: str
    member_id: str
    reward_id: str
    name: str
    face_value_fen: int
    threshold_fen: int
    valid_from: datetime
    valid_until: datetime
    state: CouponState
    source: CouponSource
    source_reference: str
    order_id: str
    issued_at: datetime
    used_at: datetime | None


@dataclass(frozen=True)
class Issued:
    """What a direct issuance gave: the new coupons, and the members given nothing."""

    coupons: list[Coupon]
    skipped_member_ids: list[str]


def new_coupon_id() -> str:
    return "cp_" + secrets.token_hex(12)


def shown_state(state: CouponState, valid_until: datetime, now: datetime) -> CouponState:
    return CouponState.EXPIRED if state is CouponState.UNUSED and valid_until <= now else state


def row_to_coupon(row: Row | dict, now: datetime) -> Coupon:
    r = row._mapping if isinstance(row, Row) else row
    return Coupon(
        shop_id=r["shop_id"], coupon_id=r["coupon_id"], member_id=r["member_id"], reward_id=r["reward_id"],
        name=r["name"], face_value_fen=r["face_value_fen"], threshold_fen=r["threshold_fen"],
        valid_from=r["valid_from"], valid_until=r["valid_until"],
        state=shown_state(CouponState(r["state"]), r["valid_until"], now), source=CouponSource(r["source"]),
        source_reference=r["source_reference"], order_id=r["order_id"] or "", issued_at=r["issued_at"],
        used_at=r["used_at"])


# ----- issuance ----------------------------------------------------------------------------------------


def _issue(service: RewardsService, uow: UnitOfWork, reward: Reward, member_ids: Sequence[str], *,
           source: CouponSource, source_reference: str, quantity: int, now: datetime,
           valid_until_cap: datetime | None = None) -> list[dict]:
    """Inserts `quantity` coupons per member, skipping those of this (source, reference) that
    exist already; emits CouponIssued for the new ones and returns their rows. `valid_until_cap`
    ends the coupons' window earlier (a monthly benefit is valid that month only)."""
    assert isinstance(reward.spec, CouponSpec), "only a coupon reward issues coupons"
    spec = reward.spec
    valid_from, valid_until = coupon_window(spec, now, service.zones.get(reward.shop_id, uow.conn))
    if valid_until_cap is not None:
        valid_until = min(valid_until, valid_until_cap)
    rows = [{"shop_id": reward.shop_id, "coupon_id": new_coupon_id(), "member_id": member_id,
             "reward_id": reward.reward_id, "name": reward.name, "face_value_fen": spec.face_value_fen,
             "threshold_fen": spec.threshold_fen, "valid_from": valid_from, "valid_until": valid_until,
             "state": int(CouponState.UNUSED), "source": int(source), "source_reference": source_reference,
             "ordinal": ordinal, "order_id": None, "issued_at": now, "used_at": None, "updated_at": now}
            for member_id in member_ids for ordinal in range(quantity)]
    once = insert_ignoring(uow.conn, coupons, ["shop_id", "source", "source_reference", "member_id", "ordinal"])
    inserted: set[str] = set()
    for i in range(0, len(rows), ROWS_PER_INSERT):
        inserted.update(uow.conn.execute(once.values(rows[i:i + ROWS_PER_INSERT])
                                         .returning(coupons.c.coupon_id)).scalars())
    new = [row for row in rows if row["coupon_id"] in inserted]
    for i in range(0, len(new), ROWS_PER_INSERT):
        uow.emit_many(reward.shop_id, [events_pb2.CouponIssued(
            shop_id=reward.shop_id, member_id=row["member_id"], coupon_id=row["coupon_id"],
            reward_id=reward.reward_id, source=int(source), source_reference=source_reference,
            face_value_fen=spec.face_value_fen, threshold_fen=spec.threshold_fen,
            valid_until=to_timestamp(valid_until), issued_at=to_timestamp(now)) for row in new[i:i + ROWS_PER_INSERT]])
    return new


def issue_coupons(service: RewardsService, uow: UnitOfWork, reward: Reward, member_id: str, *,
                  source: CouponSource, source_reference: str, quantity: int, now: datetime,
                  valid_until_cap: datetime | None = None) -> list[str]:
    """Puts `quantity` coupons of the coupon reward into the member's wallet (those this source
    and reference issued before are not issued again); returns every coupon id of the issuance,
    in ordinal order, and emits CouponIssued for the new ones."""
    _issue(service, uow, reward, [member_id], source=source, source_reference=source_reference,
           quantity=quantity, now=now, valid_until_cap=valid_until_cap)
    return list(uow.conn.execute(select(coupons.c.coupon_id).where(
        coupons.c.shop_id == reward.shop_id, coupons.c.source == int(source),
        coupons.c.source_reference == source_reference, coupons.c.member_id == member_id)
        .order_by(coupons.c.ordinal)).scalars())


def _current_members(conn: Connection, shop_id: str, member_ids: Sequence[str]) -> set[str]:
    """Those of `member_ids` rewards knows as members of the shop who have not left."""
    return set(conn.execute(select(members.c.member_id).where(
        members.c.shop_id == shop_id, members.c.member_id.in_(member_ids), members.c.left_at.is_(None))).scalars())


def issuable_reward(conn: Connection, shop_id: str, reward_id: str) -> Reward:
    """The reward a direct issuance gives: an active coupon reward of the shop (NOT_FOUND,
    COUPON_NOT_A_COUPON_REWARD or NOT_ACTIVE otherwise)."""
    reward = read_reward(conn, shop_id, reward_id)
    if reward.kind is not RewardKind.COUPON:
        raise FailedPrecondition(f"reward {reward.reward_id} is not a coupon reward (only coupons are issued)",
                                 reason=reasons.COUPON_NOT_A_COUPON_REWARD, subject=f"reward/{reward.reward_id}",
                                 metadata={"reward_id": reward.reward_id})
    if reward.status is not RewardStatus.ACTIVE:
        raise FailedPrecondition(f"reward {reward.reward_id} is {reward.status.name.lower()}: activate it to issue it",
                                 reason=reasons.NOT_ACTIVE, subject=f"reward/{reward.reward_id}",
                                 metadata={"reward_id": reward.reward_id, "status": reward.status.name})
    return reward


def issue_once(service: RewardsService, uow: UnitOfWork, reward: Reward, member_ids: Sequence[str], reference: str,
               now: datetime) -> Issued:
    """One coupon of the reward per listed member who is a current member of the shop, once per
    `reference` (a request, or a job issuing to a segment): members given one before under it,
    and those who are not members (or left), are skipped."""
    current = _current_members(uow.conn, reward.shop_id, member_ids) if member_ids else set()
    new = _issue(service, uow, reward, [m for m in member_ids if m in current], source=CouponSource.OPERATOR,
                 source_reference=reference, quantity=1, now=now)
    given = {row["member_id"] for row in new}
    return Issued([row_to_coupon(row, now) for row in new], [m for m in member_ids if m not in given])


def issue_to_members(service: RewardsService, uow: UnitOfWork, cmd: commands.IssueCoupons, now: datetime) -> Issued:
    """The operator's direct issuance (定向发券): one coupon of the reward per listed member, with
    the request as its reference, so a retry issues nothing twice. It takes no stock and costs
    no points: the reward is only the coupon's template."""
    reward = issuable_reward(uow.conn, cmd.shop_id, cmd.reward_id)
    return issue_once(service, uow, reward, cmd.member_ids, cmd.request_id, now)


# ----- use and release ---------------------------------------------------------------------------------


def _read_coupon(conn: Connection, shop_id: str, coupon_id: str) -> Row:
    """The shop's coupon, or NOT_FOUND (another shop's id too)."""
    row = conn.execute(select(coupons).where(coupons.c.shop_id == shop_id, coupons.c.coupon_id == coupon_id)).first()
    if row is None:
        raise NotFound(f"no coupon {coupon_id} in shop {shop_id}", reason=reasons.COUPON_NOT_FOUND,
                       metadata={"coupon_id": coupon_id})
    return row


def _refusal(coupon: Coupon, reason: str, message: str, **metadata: object) -> FailedPrecondition:
    return FailedPrecondition(message, reason=reason, subject=f"coupon/{coupon.coupon_id}",
                              metadata={"coupon_id": coupon.coupon_id, **metadata})


def _why_not_usable(coupon: Coupon, cmd: commands.UseCoupon, now: datetime) -> FailedPrecondition | None:
    """Why the coupon cannot pay part of the order now (None: it can)."""
    if coupon.state is CouponState.USED:
        return _refusal(coupon, reasons.COUPON_ALREADY_USED, "the coupon was used with another order",
                        order_id=coupon.order_id)
    if coupon.state is CouponState.REVOKED:
        return _refusal(coupon, reasons.COUPON_REVOKED, "the coupon was taken back (its redemption was cancelled)")
    if coupon.state is CouponState.EXPIRED:
        return _refusal(coupon, reasons.COUPON_EXPIRED, "the coupon's validity ended",
                        valid_until=to_timestamp(coupon.valid_until).ToJsonString())
    if now < coupon.valid_from:
        return _refusal(coupon, reasons.COUPON_NOT_YET_VALID, "the coupon is not valid yet",
                        valid_from=to_timestamp(coupon.valid_from).ToJsonString())
    if not coupon_applies(coupon.face_value_fen, coupon.threshold_fen, cmd.order_amount_fen):
        return _refusal(coupon, reasons.THRESHOLD_NOT_MET, "the order does not reach the coupon's threshold "
                        "(满减: at least the threshold, and at least the coupon's value)",
                        threshold_fen=coupon.threshold_fen, face_value_fen=coupon.face_value_fen,
                        order_amount_fen=cmd.order_amount_fen)
    return None


def use_coupon(service: RewardsService, uow: UnitOfWork, cmd: commands.UseCoupon, now: datetime) -> Coupon:
    """Marks an unused coupon within its window USED by the order, once: the update applies only
    to a coupon still UNUSED and unexpired, so of concurrent uses exactly one wins. A coupon
    already used by this very order is answered as it is."""
    coupon = row_to_coupon(_read_coupon(uow.conn, cmd.shop_id, cmd.coupon_id), now)
    if coupon.state is CouponState.USED and coupon.order_id == cmd.order_id:
        return coupon
    refusal = _why_not_usable(coupon, cmd, now)
    if refusal is not None:
        raise refusal
    won = uow.conn.execute(update(coupons).where(
        coupons.c.shop_id == cmd.shop_id, coupons.c.coupon_id == cmd.coupon_id,
        coupons.c.state == int(CouponState.UNUSED), coupons.c.valid_until > now)
        .values(state=int(CouponState.USED), order_id=cmd.order_id, used_at=now, updated_at=now)).rowcount
    if not won:
        # A concurrent use (or the expiry job) changed it since it was read: judge it as it is now.
        coupon = row_to_coupon(_read_coupon(uow.conn, cmd.shop_id, cmd.coupon_id), now)
        if coupon.state is CouponState.USED and coupon.order_id == cmd.order_id:
            return coupon
        raise _why_not_usable(coupon, cmd, now) or _refusal(
            coupon, reasons.COUPON_ALREADY_USED, "the coupon was used with another order")
    uow.emit(cmd.shop_id, events_pb2.CouponUsed(
        shop_id=cmd.shop_id, member_id=coupon.member_id, coupon_id=coupon.coupon_id, order_id=cmd.order_id,
        face_value_fen=coupon.face_value_fen, used_at=to_timestamp(now)))
    return replace(coupon, state=CouponState.USED, order_id=cmd.order_id, used_at=now)


def release_coupon(service: RewardsService, uow: UnitOfWork, cmd: commands.ReleaseCoupon, now: datetime) -> Coupon:
    """Gives back the coupon of an order cancelled before it completed: UNUSED again, or EXPIRED
    if its window ended meanwhile (CouponExpired then too, as the expiry job will not see it)."""
    coupon = row_to_coupon(_read_coupon(uow.conn, cmd.shop_id, cmd.coupon_id), now)
    if coupon.state is CouponState.REVOKED:
        raise _refusal(coupon, reasons.COUPON_REVOKED, "the coupon was taken back (its redemption was cancelled)")
    if coupon.state is not CouponState.USED:
        raise _refusal(coupon, reasons.COUPON_NOT_USED, "the coupon is not used by any order")
    if coupon.order_id != cmd.order_id:
        raise _refusal(coupon, reasons.COUPON_ORDER_MISMATCH, "the coupon was used with another order",
                       order_id=cmd.order_id)
    back = CouponState.EXPIRED if coupon.valid_until <= now else CouponState.UNUSED
    released = uow.conn.execute(update(coupons).where(
        coupons.c.shop_id == cmd.shop_id, coupons.c.coupon_id == cmd.coupon_id,
        coupons.c.state == int(CouponState.USED), coupons.c.order_id == cmd.order_id)
        .values(state=int(back), order_id=None, used_at=None, updated_at=now)).rowcount
    if not released:  # a concurrent release of the same order came first
        raise _refusal(coupon, reasons.COUPON_NOT_USED, "the coupon is not used by any order")
    uow.emit(cmd.shop_id, events_pb2.CouponReleased(shop_id=cmd.shop_id, member_id=coupon.member_id,
                                                    coupon_id=coupon.coupon_id, order_id=cmd.order_id,
                                                    released_at=to_timestamp(now)))
    if back is CouponState.EXPIRED:
        uow.emit(cmd.shop_id, events_pb2.CouponExpired(shop_id=cmd.shop_id, member_id=coupon.member_id,
                                                       coupon_id=coupon.coupon_id,
                                                       expired_at=to_timestamp(coupon.valid_until)))
    return replace(coupon, state=back, order_id="", used_at=None)


# ----- the wallet --------------------------------------------------------------------------------------


def _in_state(state: CouponState, now: datetime) -> ColumnElement[bool]:
    """The condition of coupons shown in `state` at `now` (an unused one past its window shows EXPIRED)."""
    if state is CouponState.UNUSED:
        return and_(coupons.c.state == int(CouponState.UNUSED), coupons.c.valid_until > now)
    if state is CouponState.EXPIRED:
        return or_(coupons.c.state == int(CouponState.EXPIRED),
                   and_(coupons.c.state == int(CouponState.UNUSED), coupons.c.valid_until <= now))
    return coupons.c.state == int(state)


def list_coupons(service: RewardsService, query: commands.CouponsQuery, now: datetime) -> list[Coupon]:
    """Up to `query.limit` of the member's coupons, newest first, after the cursor."""
    where = [coupons.c.shop_id == query.shop_id, coupons.c.member_id == query.member_id]
    if query.state is not None:
        where.append(_in_state(query.state, now))
    if query.after is not None:
        issued_at, coupon_id = query.after
        where.append(or_(coupons.c.issued_at < issued_at,
                         and_(coupons.c.issued_at == issued_at, coupons.c.coupon_id < coupon_id)))
    statement = (select(coupons).where(*where).order_by(coupons.c.issued_at.desc(), coupons.c.coupon_id.desc())
                 .limit(query.limit))
    return [row_to_coupon(row, now) for row in service.db.read(lambda conn: conn.execute(statement).all())]


# ----- expiry ------------------------------------------------------------------------------------------


def expire_shop(service: RewardsService, uow: UnitOfWork, cmd: commands.ExpireShopCoupons) -> int:
    """Every unused coupon of the shop past its window becomes EXPIRED, by one statement that
    also says which (a coupon used or released meanwhile no longer matches it); returns how many."""
    expired = uow.conn.execute(update(coupons).where(
        coupons.c.shop_id == cmd.shop_id, coupons.c.state == int(CouponState.UNUSED), coupons.c.valid_until <= cmd.now)
        .values(state=int(CouponState.EXPIRED), updated_at=cmd.now)
        .returning(coupons.c.member_id, coupons.c.coupon_id, coupons.c.valid_until)).all()
    for i in range(0, len(expired), ROWS_PER_INSERT):
        uow.emit_many(cmd.shop_id, [events_pb2.CouponExpired(
            shop_id=cmd.shop_id, member_id=row.member_id, coupon_id=row.coupon_id,
            expired_at=to_timestamp(row.valid_until)) for row in expired[i:i + ROWS_PER_INSERT]])
    return len(expired)


def expire_all(service: RewardsService, now: datetime | None = None) -> int:
    """Expires every shop's due coupons, one transaction per shop; returns how many."""
    now = now or utcnow()
    due = select(coupons.c.shop_id).where(coupons.c.state == int(CouponState.UNUSED),
                                          coupons.c.valid_until <= now).distinct()
    total = 0
    for shop_id in service.db.read(lambda conn: list(conn.execute(due).scalars())):
        total += service.db.transact(lambda uow, shop_id=shop_id: expire_shop(
            service, uow, commands.ExpireShopCoupons(shop_id, now)))
    return total


def expire_due_coupons(service: RewardsService) -> None:
    """The periodic job: expires what is due in every shop, and says so when it did."""
    expired = expire_all(service)
    if expired:
        log.info("expired coupons", extra={"coupons": expired})
