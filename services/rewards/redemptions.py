"""Reads of redemptions: one by id (another shop's is NOT_FOUND), and pages of a shop's
redemptions, newest first, with the coupons each issued."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Row, and_, or_, select

from services.kit.errors import NotFound
from services.rewards import reasons
from services.rewards.commands.redemptions import ListRedemptions
from services.rewards.domain import CouponSource, RedemptionState, RewardKind
from services.rewards.tables import coupons, redemptions


@dataclass(frozen=True)
class RedemptionView:
    shop_id: str
    redemption_id: str
    member_id: str
    reward_id: str
    kind: RewardKind
    quantity: int
    points: int
    cash_fen: int
    state: RedemptionState
    failure_reason: str
    payment_reference: str
    payment_deadline: datetime | None
    shipped: bool
    cancel_reason: str
    created_at: datetime
    completed_at: datetime | None
    coupon_ids: tuple[str, ...] = ()
    shipped_at: datetime | None = None
    shipment_reference: str = ""


def read_redemption(conn: Connection, shop_id: str, redemption_id: str) -> Row:
    """The shop's redemption row, or NOT_FOUND (another shop's id too)."""
    row = conn.execute(select(redemptions).where(redemptions.c.shop_id == shop_id,
                                                 redemptions.c.redemption_id == redemption_id)).first()
    if row is None:
        raise NotFound(f"no redemption {redemption_id} in shop {shop_id}", reason=reasons.REDEMPTION_NOT_FOUND,
                       metadata={"redemption_id": redemption_id})
    return row


def _issued(conn: Connection, shop_id: str, rows: list[Row]) -> dict[str, tuple[str, ...]]:
    """The coupons each coupon redemption put into the wallet, in ordinal order."""
    ids = [r.redemption_id for r in rows if r.kind == RewardKind.COUPON]
    if not ids:
        return {}
    found: dict[str, list[str]] = {}
    for ref, coupon_id in conn.execute(select(coupons.c.source_reference, coupons.c.coupon_id).where(
            coupons.c.shop_id == shop_id, coupons.c.source == int(CouponSource.REDEMPTION),
            coupons.c.source_reference.in_(ids)).order_by(coupons.c.source_reference, coupons.c.ordinal)):
        found.setdefault(ref, []).append(coupon_id)
    return {ref: tuple(values) for ref, values in found.items()}


def _view(row: Row, coupon_ids: tuple[str, ...]) -> RedemptionView:
    return RedemptionView(
        shop_id=row.shop_id, redemption_id=row.redemption_id, member_id=row.member_id, reward_id=row.reward_id,
        kind=RewardKind(row.kind), quantity=row.quantity, points=row.points, cash_fen=row.cash_fen,
        state=RedemptionState(row.state), failure_reason=row.failure_reason,
        payment_reference=row.payment_reference or "", payment_deadline=row.payment_deadline, shipped=row.shipped,
        cancel_reason=row.cancel_reason, created_at=row.created_at, completed_at=row.completed_at,
        coupon_ids=coupon_ids, shipped_at=row.shipped_at, shipment_reference=row.shipment_reference or "")


def get(conn: Connection, shop_id: str, redemption_id: str) -> RedemptionView:
    row = read_redemption(conn, shop_id, redemption_id)
    return _view(row, _issued(conn, shop_id, [row]).get(redemption_id, ()))


def page(conn: Connection, query: ListRedemptions) -> list[RedemptionView]:
    """Up to query.limit redemptions after query.after, newest first."""
    r = redemptions.c
    where = [r.shop_id == query.shop_id]
    if query.member_id:
        where.append(r.member_id == query.member_id)
    if query.reward_id:
        where.append(r.reward_id == query.reward_id)
    if query.state is not None:
        where.append(r.state == int(query.state))
    if query.after is not None:
        at, redemption_id = datetime.fromisoformat(query.after[0]), query.after[1]
        where.append(or_(r.created_at < at, and_(r.created_at == at, r.redemption_id < redemption_id)))
    rows = conn.execute(select(redemptions).where(*where).order_by(r.created_at.desc(), r.redemption_id.desc())
                        .limit(query.limit)).all()
    issued = _issued(conn, query.shop_id, rows)
    return [_view(row, issued.get(row.redemption_id, ())) for row in rows]
