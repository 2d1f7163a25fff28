"""Benefit packs (权益礼包): defined by the operator, granted once per member and period — on
joining and on reaching a higher tier (membership's events), a month after joining, in the birth
month and every month (the periodic worker, in the shop's time zone). A grant commits its
coupons and virtual goods with itself; its points follow through points' Earn (idempotent by the
grant id), retried by a job until points answers, so a grant never loses and never doubles them."""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from loyalty.points.v1 import points_service_pb2 as ppb
from loyalty.rewards.v1 import events_pb2
from sqlalchemy import Connection, Row, and_, exists, insert, or_, select, tuple_, update

from services.kit.errors import FailedPrecondition, NotFound, ServiceError
from services.kit.storage import UnitOfWork, insert_ignoring
from services.kit.timeutil import to_timestamp, utcnow
from services.rewards import catalogue, reasons, wallet
from services.rewards.commands import packs as commands
from services.rewards.domain import (
    PACKABLE,
    SCHEDULED_TRIGGERS,
    BenefitPack,
    CouponSource,
    PackTrigger,
    RewardKind,
    month_after,
    month_end,
    month_of,
    pack_period,
    spec_to_json,
)
from services.rewards.service import RewardsService
from services.rewards.tables import benefit_packs, grants, members, pack_grants

log = logging.getLogger("loyalty.rewards.packs")
CREDITED = "CREDITED"
_BATCH = 200


@dataclass(frozen=True)
class Grant:
    shop_id: str
    grant_id: str
    pack_id: str
    member_id: str
    trigger: PackTrigger
    period: str
    points: int
    points_outcome: str
    coupon_ids: tuple[str, ...]
    granted_at: datetime


# ----- the operator's packs -------------------------------------------------------------------------


def _row_to_pack(row: Row) -> BenefitPack:
    return BenefitPack(shop_id=row.shop_id, pack_id=row.pack_id, name=row.name, trigger=PackTrigger(row.trigger),
                       enabled=row.enabled, points=row.points,
                       items=tuple((r, q) for r, q in json.loads(row.items)),
                       tier_levels=tuple(json.loads(row.tier_levels)), created_at=row.created_at,
                       updated_at=row.updated_at)


def _check_items(conn: Connection, pack: BenefitPack) -> None:
    """Every item is a coupon or a virtual good of the shop's catalogue."""
    for reward_id, _ in pack.items:
        reward = catalogue.read_reward(conn, pack.shop_id, reward_id)
        if reward.kind not in PACKABLE:
            raise FailedPrecondition(f"reward {reward_id} is a {reward.kind.name.lower()}: packs give coupons and "
                                     "virtual goods", reason=reasons.PACK_ITEM_NOT_PACKABLE, subject=reward_id)


def create_pack(service: RewardsService, uow: UnitOfWork, cmd: commands.CreatePack) -> BenefitPack:
    now = utcnow()
    pack = replace(cmd.pack, shop_id=cmd.shop_id, pack_id="pk_" + secrets.token_hex(10), created_at=now,
                   updated_at=now)
    _check_items(uow.conn, pack)
    uow.conn.execute(insert(benefit_packs), _pack_values(pack))
    return pack


def update_pack(service: RewardsService, uow: UnitOfWork, cmd: commands.UpdatePack) -> BenefitPack:
    current = read_pack(uow.conn, cmd.shop_id, cmd.pack.pack_id)
    pack = replace(current, **{path: getattr(cmd.pack, path) for path in cmd.paths}, updated_at=utcnow())
    commands.CreatePack(cmd.shop_id, pack)  # the result must be a whole, valid pack
    _check_items(uow.conn, pack)
    values = _pack_values(pack)
    uow.conn.execute(update(benefit_packs).where(benefit_packs.c.shop_id == cmd.shop_id,
                                                 benefit_packs.c.pack_id == pack.pack_id)
                     .values({k: v for k, v in values.items() if k not in ("shop_id", "pack_id", "created_at")}))
    return pack


def _pack_values(pack: BenefitPack) -> dict[str, object]:
    return {"shop_id": pack.shop_id, "pack_id": pack.pack_id, "name": pack.name, "trigger": int(pack.trigger),
            "enabled": pack.enabled, "points": pack.points, "items": json.dumps([list(i) for i in pack.items]),
            "tier_levels": json.dumps(sorted(set(pack.tier_levels))), "created_at": pack.created_at,
            "updated_at": pack.updated_at}


def read_pack(conn: Connection, shop_id: str, pack_id: str) -> BenefitPack:
    row = conn.execute(select(benefit_packs).where(benefit_packs.c.shop_id == shop_id,
                                                   benefit_packs.c.pack_id == pack_id)).first()
    if row is None:
        raise NotFound(f"no benefit pack {pack_id} in shop {shop_id}", reason=reasons.PACK_NOT_FOUND,
                       metadata={"pack_id": pack_id})
    return _row_to_pack(row)


def list_packs(service: RewardsService, shop_id: str, limit: int, after: str | None) -> list[BenefitPack]:
    query = select(benefit_packs).where(benefit_packs.c.shop_id == shop_id)
    if after is not None:
        query = query.where(benefit_packs.c.pack_id > after)
    return service.db.read(lambda conn: [_row_to_pack(r) for r in conn.execute(
        query.order_by(benefit_packs.c.pack_id).limit(limit)).all()])


def _enabled_packs(conn: Connection, shop_id: str, trigger: PackTrigger) -> list[BenefitPack]:
    return [_row_to_pack(r) for r in conn.execute(select(benefit_packs).where(
        benefit_packs.c.shop_id == shop_id, benefit_packs.c.trigger == int(trigger),
        benefit_packs.c.enabled.is_(True))).all()]


# ----- granting ---------------------------------------------------------------------------------------


def grant(service: RewardsService, uow: UnitOfWork, pack: BenefitPack, member_id: str, period: str,
          now: datetime) -> str | None:
    """Gives the pack to the member for `period` unless it was given already; returns the grant
    id, or None when there was nothing to give. Its coupons and virtual goods commit with it."""
    grant_id = "pg_" + secrets.token_hex(12)
    once = insert_ignoring(uow.conn, pack_grants, ["shop_id", "pack_id", "member_id", "period"])
    inserted = uow.conn.execute(once.values(
        shop_id=pack.shop_id, grant_id=grant_id, pack_id=pack.pack_id, member_id=member_id,
        trigger=int(pack.trigger), period=period, points=pack.points,
        points_outcome="" if pack.points else CREDITED, coupon_ids="[]", granted_at=now)).rowcount
    if not inserted:
        return None
    coupon_ids: list[str] = []
    # 当月权益: a monthly pack's coupons are valid that shop-local month only.
    cap = month_end(now, service.zones.get(pack.shop_id, uow.conn)) if pack.trigger is PackTrigger.MONTHLY else None
    for i, (reward_id, quantity) in enumerate(pack.items):
        try:
            reward = catalogue.read_reward(uow.conn, pack.shop_id, reward_id)
        except NotFound:
            log.warning("pack %s names reward %s, which is gone; granted without it", pack.pack_id, reward_id)
            continue
        if reward.kind is RewardKind.COUPON:
            coupon_ids += wallet.issue_coupons(service, uow, reward, member_id, source=CouponSource.BENEFIT_PACK,
                                               source_reference=f"{grant_id}/{i}", quantity=quantity, now=now,
                                               valid_until_cap=cap)
        elif reward.kind is RewardKind.VIRTUAL:
            uow.conn.execute(insert(grants), {
                "shop_id": pack.shop_id, "redemption_id": f"{grant_id}-{i}", "member_id": member_id,
                "reward_id": reward_id, "spec": spec_to_json(reward.spec), "quantity": quantity,
                "valid_until": _grant_end(reward.spec, now, cap), "revoked": False, "created_at": now})
    uow.conn.execute(update(pack_grants).where(pack_grants.c.shop_id == pack.shop_id,
                                               pack_grants.c.grant_id == grant_id)
                     .values(coupon_ids=json.dumps(coupon_ids)))
    uow.emit(pack.shop_id, events_pb2.PackGranted(
        shop_id=pack.shop_id, member_id=member_id, grant_id=grant_id, pack_id=pack.pack_id, trigger=int(pack.trigger),
        period=period, points=pack.points, coupon_ids=coupon_ids, granted_at=to_timestamp(now)))
    return grant_id


def _grant_end(spec: object, now: datetime, cap: datetime | None) -> datetime | None:
    """Until when a packed virtual good lasts: its valid_days from now, within a monthly cap."""
    days = getattr(spec, "valid_days", 0)
    end = now + timedelta(days=days) if days else None
    return min(end, cap) if end is not None and cap is not None else end or cap


def on_joined(service: RewardsService, uow: UnitOfWork, shop_id: str, member_id: str, *, imported: bool,
              at: datetime) -> None:
    """入会礼包: for members who join (an imported member joined long ago, elsewhere)."""
    if imported:
        return
    for pack in _enabled_packs(uow.conn, shop_id, PackTrigger.JOIN):
        grant(service, uow, pack, member_id, "join", at)


def on_tier_changed(service: RewardsService, uow: UnitOfWork, shop_id: str, member_id: str, from_level: int,
                    to_level: int, at: datetime) -> None:
    """升级礼包: once per tier a member reaches upwards (a downgrade and a climb back give nothing more)."""
    if to_level <= from_level:
        return
    for pack in _enabled_packs(uow.conn, shop_id, PackTrigger.TIER_UPGRADE):
        if pack.for_tier(to_level):
            grant(service, uow, pack, member_id, pack_period(PackTrigger.TIER_UPGRADE, at, service.zones.get(
                shop_id, uow.conn), tier_level=to_level), at)


def on_growth_milestone(service: RewardsService, uow: UnitOfWork, shop_id: str, member_id: str, threshold: int,
                        pack_id: str, tier_level: int, at: datetime) -> None:
    """阶段性奖励: the pack the milestone names (if it still exists and is enabled), else the shop's
    enabled GROWTH_MILESTONE packs whose tiers include the member's; once per milestone."""
    if pack_id:
        try:
            chosen = [read_pack(uow.conn, shop_id, pack_id)]
        except NotFound:
            log.warning("growth milestone %s names pack %s, which is gone; nothing granted", threshold, pack_id)
            return
        chosen = [p for p in chosen if p.enabled]
    else:
        chosen = [p for p in _enabled_packs(uow.conn, shop_id, PackTrigger.GROWTH_MILESTONE) if p.for_tier(tier_level)]
    for pack in chosen:
        grant(service, uow, pack, member_id, f"milestone-{threshold}", at)


def grant_due(service: RewardsService, now: datetime | None = None) -> int:
    """The scheduled packs (month after joining, birthday, monthly) for every member due now, in
    batches of a few hundred members a transaction; returns how many grants it made."""
    now = now or utcnow()
    packs = service.db.read(lambda conn: [_row_to_pack(r) for r in conn.execute(select(benefit_packs).where(
        benefit_packs.c.trigger.in_([int(t) for t in SCHEDULED_TRIGGERS]), benefit_packs.c.enabled.is_(True))).all()])
    made = 0
    for pack in packs:
        zone = service.zones.get(pack.shop_id)
        period = pack_period(pack.trigger, now, zone)
        while True:
            due = service.db.read(lambda conn, pack=pack, period=period, zone=zone: _due_members(
                conn, pack, period, now, zone))
            if not due:
                break
            made += service.db.transact(lambda uow, pack=pack, period=period, due=due: sum(
                grant(service, uow, pack, member_id, period, now) is not None for member_id in due))
    return made


def _due_members(conn: Connection, pack: BenefitPack, period: str, now: datetime, zone: ZoneInfo) -> list[str]:
    """Up to a batch of members the pack is due to for `period` and not yet given."""
    m = members.c
    already = exists().where(pack_grants.c.shop_id == m.shop_id, pack_grants.c.member_id == m.member_id,
                             pack_grants.c.pack_id == pack.pack_id, pack_grants.c.period == period)
    query = select(m.member_id, m.joined_at).where(m.shop_id == pack.shop_id, m.left_at.is_(None), ~already)
    if pack.tier_levels:
        query = query.where(m.tier_level.in_(pack.tier_levels))
    if pack.trigger is PackTrigger.BIRTHDAY:
        query = query.where(m.birth_month == int(month_of(now, zone)[5:]))
    if pack.trigger is not PackTrigger.MONTH_AFTER_JOIN:
        return list(conn.execute(query.order_by(m.member_id).limit(_BATCH)).scalars())
    # Members who joined since the pack exists and have completed their first month: the earliest
    # joiners first, so the batch ends at the first member not yet due.
    rows = conn.execute(query.where(m.joined_at >= pack.created_at, m.joined_at <= now - timedelta(days=27))
                        .order_by(m.joined_at, m.member_id).limit(_BATCH)).all()
    due = []
    for row in rows:
        if month_after(row.joined_at, zone) > now:
            break
        due.append(row.member_id)
    return due


def credit_points(service: RewardsService, limit: int = 100, now: datetime | None = None) -> int:
    """Sends the points of grants that points has not taken yet (Earn, idempotent by the grant
    id). A member points does not know yet is tried again later, each time after twice as long
    (up to an hour), so such grants never hold up newer ones. Returns how many grants it settled."""
    now = now or utcnow()
    g = pack_grants.c
    due = service.db.read(lambda conn: conn.execute(select(
        g.shop_id, g.grant_id, g.pack_id, g.member_id, g.points, g.points_attempts).where(
        g.points_outcome == "", or_(g.points_retry_at.is_(None), g.points_retry_at <= now))
        .order_by(g.granted_at).limit(limit)).all())
    settled = 0
    for row in due:
        key = and_(g.shop_id == row.shop_id, g.grant_id == row.grant_id, g.points_outcome == "")
        try:
            service.points.Earn(ppb.EarnRequest(
                request_id=f"rewards-{row.grant_id}", shop_id=row.shop_id, member_id=row.member_id, points=row.points,
                source=ppb.Source(reference=f"pack:{row.pack_id}", reason="benefit pack")))
            outcome = CREDITED
        except NotFound:  # points has not heard of the member yet: later, and not before newer grants
            wait = timedelta(seconds=min(2 ** min(row.points_attempts, 12), 3600))
            service.db.transact(lambda uow, key=key, row=row, wait=wait: uow.conn.execute(
                update(pack_grants).where(key).values(points_attempts=row.points_attempts + 1,
                                                      points_retry_at=now + wait)))
            continue
        except FailedPrecondition as exc:
            outcome = exc.reason  # e.g. the member left meanwhile: nothing to credit
        except ServiceError as exc:
            log.info("crediting grant %s waits: %s", row.grant_id, exc.message)
            break  # points unavailable: the next run tries again
        service.db.transact(lambda uow, key=key, outcome=outcome: uow.conn.execute(
            update(pack_grants).where(key).values(points_outcome=outcome)))
        settled += 1
    return settled


# ----- reads --------------------------------------------------------------------------------------------


def _row_to_grant(row: Row) -> Grant:
    return Grant(shop_id=row.shop_id, grant_id=row.grant_id, pack_id=row.pack_id, member_id=row.member_id,
                 trigger=PackTrigger(row.trigger), period=row.period, points=row.points,
                 points_outcome=row.points_outcome, coupon_ids=tuple(json.loads(row.coupon_ids)),
                 granted_at=row.granted_at)


def list_grants(service: RewardsService, query: commands.GrantsQuery) -> list[Grant]:
    """The member's grants, newest first."""
    g = pack_grants.c
    select_ = select(pack_grants).where(g.shop_id == query.shop_id, g.member_id == query.member_id)
    if query.before is not None:
        at, grant_id = datetime.fromisoformat(query.before[0]), query.before[1]
        select_ = select_.where(tuple_(g.granted_at, g.grant_id) < tuple_(at, grant_id))
    return service.db.read(lambda conn: [_row_to_grant(r) for r in conn.execute(
        select_.order_by(g.granted_at.desc(), g.grant_id.desc()).limit(query.limit)).all()])
