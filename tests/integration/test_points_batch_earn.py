"""Completed orders applied together (the consumer's batch of OrderCompleted) earn exactly what
they earn one by one: the same ledger, lots, balances and PointsEarned, on both backends."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from loyalty.common.v1 import envelope_pb2
from loyalty.membership.v1 import events_pb2 as mev
from loyalty.points.v1 import events_pb2 as pev
from loyalty.points.v1 import points_service_pb2 as pp

from services.kit.events import BatchHandler
from tests.conftest import create_shop
from tests.integration.test_points import (
    YUAN,
    Member,
    PointsShop,
    get_balance,
    join,
    ledger,
    ordinary_time,
    outbox,
    points_shop,
    ts,
)


def completed(s: PointsShop, member: Member, order_id: str, fen: int, when: datetime, *, rate_milli: int = 1000,
              first: bool = False, referrer: Member | None = None, birth_month: int = 0) -> bytes:
    """An OrderCompleted as membership sends it."""
    envelope = envelope_pb2.EventEnvelope(id=str(uuid.uuid4()), type=mev.OrderCompleted.DESCRIPTOR.full_name,
                                          shop_id=s.shop_id, producer="membership")
    envelope.payload.Pack(mev.OrderCompleted(
        shop_id=s.shop_id, order_id=order_id, member_id=member.member_id, amount_fen=fen, completed_at=ts(when),
        points_rate_milli=rate_milli, first_completed_order=first,
        referrer_member_id=referrer.member_id if referrer else "", birth_month=birth_month,
        birth_day=1 if birth_month else 0))
    return envelope.SerializeToString()


def script(s: PointsShop, members: list[Member], tag: str, when: datetime) -> list[bytes]:
    """Orders of several members: two of one member, a referred member's first order, a
    birthday, a second event of an order already in the batch, and an event delivered twice."""
    a, b, c, d = members
    twice = completed(s, b, f"{tag}-2", 80 * YUAN + 50, when, rate_milli=1500)
    return [
        completed(s, a, f"{tag}-1", 100 * YUAN, when),
        twice,
        completed(s, a, f"{tag}-3", 33 * YUAN, when),
        completed(s, c, f"{tag}-4", 250 * YUAN, when, birth_month=when.month),
        completed(s, d, f"{tag}-5", 60 * YUAN, when, first=True, referrer=a),
        completed(s, a, f"{tag}-1", 100 * YUAN, when),  # the same order again, under another event id
        completed(s, d, f"{tag}-6", 10 * YUAN, when),
        twice,
        completed(s, c, f"{tag}-7", 99, when),  # less than a yuan: nothing earned, still recorded
    ]


def shape(s: PointsShop, db: Any, members: list[Member], tag: str) -> dict[str, Any]:
    """What a caller sees of the members, with their ids and order ids replaced by positions."""
    names = {m.member_id: f"m{i}" for i, m in enumerate(members)}

    def order(order_id: str) -> str:
        return order_id.removeprefix(tag)

    seen: dict[str, Any] = {}
    for m in members:
        balance = get_balance(s, m)
        seen[names[m.member_id]] = {
            "balance": (balance.available, balance.held),
            "ledger": [(e.kind, e.amount, e.held_delta, e.balance_after, e.source.action, order(e.source.order_id),
                        e.source.rule_id, e.source.multiplier_id, names.get(e.source.reference, e.source.reference),
                        e.expire_time.ToSeconds()) for e in reversed(ledger(s, m))],
        }
    # Members' events keep their order; how lanes applied side by side interleave them does not matter.
    for e in outbox(db, s.shop_id, pev.PointsEarned):
        seen[names[e.member_id]].setdefault("events", []).append(
            (e.points, e.action, order(e.order_id), e.balance_after, e.expire_time.ToSeconds()))
    return seen


def test_orders_applied_together_earn_what_they_earn_one_by_one(points: Any, membership: Any, admin: Any) -> None:
    consumer = points.running.app.consumers[0]
    runs: list[int] = []
    (event_type, batch), = ((k, v) for k, v in consumer.batch_handlers.items() if k.endswith("OrderCompleted"))

    def counted(uow: Any, events: list[Any], fn: BatchHandler = batch) -> None:
        runs.append(len(events))
        fn(uow, events)

    consumer.batch_handlers[event_type] = counted
    try:
        shapes = []
        for together in (True, False):
            s = points_shop(points, create_shop(membership, admin))
            members = [join(s) for _ in range(4)]
            tag = "o-" + uuid.uuid4().hex[:8]
            messages = script(s, members, tag, ordinary_time())
            if together:
                results = consumer.handle_batch(messages)
                assert not [r for r in results if isinstance(r, Exception)], results
                assert sum(results) == len(messages) - 1  # the event delivered twice took effect once
            else:
                assert [consumer.handle(m) for m in messages].count(True) == len(messages) - 1
                assert not consumer.handle(messages[1])
            shapes.append(shape(s, points.running.app.db, members, tag))
        assert runs and max(runs) > 1  # the batch handler did apply several orders at once
        assert shapes[0] == shapes[1]
        purchases = [row for m in shapes[0].values() for row in m["events"] if row[1] == pp.ACTION_PURCHASE]
        assert len(purchases) == 6  # every order that earns, once
    finally:
        consumer.batch_handlers[event_type] = batch


def test_an_order_earned_in_an_earlier_batch_earns_nothing_again(points: Any, membership: Any, admin: Any) -> None:
    consumer = points.running.app.consumers[0]
    s = points_shop(points, create_shop(membership, admin))
    a, b = join(s), join(s)
    tag, when = "o-" + uuid.uuid4().hex[:8], ordinary_time()
    first = [completed(s, a, f"{tag}-1", 100 * YUAN, when), completed(s, b, f"{tag}-2", 50 * YUAN, when)]
    assert consumer.handle_batch(first) == [True, True]
    before = {m.member_id: (get_balance(s, m).available, len(ledger(s, m))) for m in (a, b)}
    # The same orders under new event ids (membership sent them again), with one new order.
    again = [completed(s, a, f"{tag}-1", 100 * YUAN, when), completed(s, b, f"{tag}-2", 50 * YUAN, when),
             completed(s, b, f"{tag}-3", 20 * YUAN, when)]
    assert consumer.handle_batch(again) == [True, True, True]
    assert (get_balance(s, a).available, len(ledger(s, a))) == before[a.member_id]
    balance_b, entries_b = before[b.member_id]
    assert get_balance(s, b).available > balance_b and len(ledger(s, b)) == entries_b + 1
