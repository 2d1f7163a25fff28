"""Members' completed orders as rewards knows them, kept from membership's OrderCompleted: the
facts a campaign's conversion (treated vs held out) is measured on in the operators' report.

Each order is written once, keyed by (shop, order): the event redelivered (the inbox normally
stops that, but a crash between the write and the inbox's record, or a replay, may not) counts
nothing twice. Orders of buyers who are not members are not kept: conversion is of members.
An order fully refunded after it completed (OrderRefunded) is marked, not deleted, so that it
no longer counts and a late redelivery of its OrderCompleted cannot bring it back. A partial
refund changes nothing: the order still converted, at the amount it completed with. Both events
of one member arrive in stream order (the consumer's lanes are by shop and member)."""

from __future__ import annotations

from loyalty.membership.v1 import events_pb2 as membership_events
from sqlalchemy import update

from services.kit.storage import UnitOfWork, insert_ignoring
from services.kit.timeutil import from_timestamp, utcnow
from services.rewards.tables import member_orders


def order_completed(uow: UnitOfWork, e: membership_events.OrderCompleted) -> None:
    """Keeps the completed order, once (insert-or-ignore on its key)."""
    if not e.member_id:
        return
    uow.conn.execute(insert_ignoring(uow.conn, member_orders, ["shop_id", "order_id"]).values(
        shop_id=e.shop_id, order_id=e.order_id, member_id=e.member_id, amount_fen=e.amount_fen,
        completed_at=from_timestamp(e.completed_at, utcnow())))


def order_refunded(uow: UnitOfWork, e: membership_events.OrderRefunded) -> None:
    """Takes an order fully refunded after it completed out of conversion (the first refund time
    is kept when the event comes again)."""
    if not (e.after_completion and e.fully_refunded):
        return
    uow.conn.execute(update(member_orders).where(
        member_orders.c.shop_id == e.shop_id, member_orders.c.order_id == e.order_id,
        member_orders.c.refunded_at.is_(None)).values(refunded_at=from_timestamp(e.refunded_at, utcnow())))
