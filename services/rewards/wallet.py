"""The coupon wallet (卡券包): coupons issued to members, used once with an order, released when
that order is cancelled, expired by a job. Every coupon is issued once per (source, reference,
member, ordinal), so a redelivered event or a retried call finds what it issued before."""

from __future__ import annotations

import secrets
from datetime import datetime

from loyalty.rewards.v1 import events_pb2
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from services.kit.storage import UnitOfWork
from services.kit.timeutil import to_timestamp
from services.rewards.domain import CouponSource, CouponSpec, CouponState, Reward, coupon_window
from services.rewards.service import RewardsService
from services.rewards.tables import coupons


def new_coupon_id() -> str:
    return "cp_" + secrets.token_hex(12)


def issue_coupons(service: RewardsService, uow: UnitOfWork, reward: Reward, member_id: str, *,
                  source: CouponSource, source_reference: str, quantity: int, now: datetime) -> list[str]:
    """Puts `quantity` coupons of the coupon reward into the member's wallet (those this source
    and reference issued before are not issued again); returns every coupon id of the issuance,
    in ordinal order, and emits CouponIssued for the new ones."""
    assert isinstance(reward.spec, CouponSpec), "only a coupon reward issues coupons"
    spec = reward.spec
    valid_from, valid_until = coupon_window(spec, now, service.zones.get(reward.shop_id, uow.conn))
    rows = [{"shop_id": reward.shop_id, "coupon_id": new_coupon_id(), "member_id": member_id,
             "reward_id": reward.reward_id, "name": reward.name, "face_value_fen": spec.face_value_fen,
             "threshold_fen": spec.threshold_fen, "valid_from": valid_from, "valid_until": valid_until,
             "state": int(CouponState.UNUSED), "source": int(source), "source_reference": source_reference,
             "ordinal": ordinal, "order_id": None, "issued_at": now, "used_at": None, "updated_at": now}
            for ordinal in range(quantity)]
    dialect = pg_insert if uow.conn.dialect.name == "postgresql" else sqlite_insert
    inserted = set(uow.conn.execute(dialect(coupons).values(rows).on_conflict_do_nothing(index_elements=[
        "shop_id", "source", "source_reference", "member_id", "ordinal"]).returning(coupons.c.coupon_id)).scalars())
    uow.emit_many(reward.shop_id, [events_pb2.CouponIssued(
        shop_id=reward.shop_id, member_id=member_id, coupon_id=row["coupon_id"], reward_id=reward.reward_id,
        source=int(source), source_reference=source_reference, face_value_fen=spec.face_value_fen,
        threshold_fen=spec.threshold_fen, valid_until=to_timestamp(valid_until), issued_at=to_timestamp(now))
        for row in rows if row["coupon_id"] in inserted])
    return list(uow.conn.execute(select(coupons.c.coupon_id).where(
        coupons.c.shop_id == reward.shop_id, coupons.c.source == int(source),
        coupons.c.source_reference == source_reference, coupons.c.member_id == member_id)
        .order_by(coupons.c.ordinal)).scalars())
