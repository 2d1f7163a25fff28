"""What points does with membership's events, each applied once through the inbox."""

from __future__ import annotations

from loyalty.common.v1 import envelope_pb2
from loyalty.membership.v1 import events_pb2 as membership_events

from services.kit.bus import Bus
from services.kit.events import EventConsumer
from services.kit.storage import Database, UnitOfWork
from services.kit.timeutil import from_timestamp, utcnow
from services.membership import client as membership_client
from services.points import accounts, commands, earning, program
from services.points.service import PointsService

CONSUMER = "points"


def membership_consumer(db: Database, bus: Bus, service: PointsService, membership: membership_client.Client, *,
                        workers: int = 4, per_transaction: int = 50) -> EventConsumer:
    """Points' consumer of membership's stream: batches in `workers` lanes by member, up to
    `per_transaction` events a transaction. The birthday (for birthday multipliers) is read from
    membership when an event says it was given or changed: the bus carries no personal value."""

    def birthday(shop_id: str, member_id: str, given: bool) -> tuple[int, int]:
        found = membership_client.birthday(membership, shop_id, member_id) if given else None
        return found or (0, 0)

    def program_changed(uow: UnitOfWork, e: membership_events.ProgramChanged, _: envelope_pb2.EventEnvelope) -> None:
        program.ensure_program(service, uow, e.shop_id, e.time_zone)

    def member_joined(uow: UnitOfWork, e: membership_events.MemberJoined, _: envelope_pb2.EventEnvelope) -> None:
        month, day = birthday(e.shop_id, e.member_id, e.birthday_given)
        earning.welcome(service, uow, commands.OpenAccount(
            shop_id=e.shop_id, member_id=e.member_id, referrer_member_id=e.referrer_member_id,
            birth_month=month, birth_day=day, imported=e.imported, at=from_timestamp(e.joined_at, utcnow())))

    def profile_updated(uow: UnitOfWork, e: membership_events.ProfileUpdated, _: envelope_pb2.EventEnvelope) -> None:
        if "birthday" not in e.changed_fields:
            return
        month, day = birthday(e.shop_id, e.member_id, True)
        accounts.set_birthday(service, uow, commands.SetBirthday(
            shop_id=e.shop_id, member_id=e.member_id, birth_month=month, birth_day=day))

    def order_completed(uow: UnitOfWork, e: membership_events.OrderCompleted, _: envelope_pb2.EventEnvelope) -> None:
        earning.credit_purchase(service, uow, _purchase(e))

    def orders_completed(uow: UnitOfWork,
                         events: list[tuple[membership_events.OrderCompleted, envelope_pb2.EventEnvelope]]) -> None:
        earning.credit_purchases(service, uow, [_purchase(e) for e, _ in events])

    def order_refunded(uow: UnitOfWork, e: membership_events.OrderRefunded, _: envelope_pb2.EventEnvelope) -> None:
        if e.after_completion and e.member_id:
            earning.claw_back(service, uow, commands.ClawBack(
                shop_id=e.shop_id, order_id=e.order_id, order_amount_fen=e.order_amount_fen,
                total_refunded_fen=e.total_refunded_fen, at=from_timestamp(e.refunded_at, utcnow())))

    def member_left(uow: UnitOfWork, e: membership_events.MemberLeft, _: envelope_pb2.EventEnvelope) -> None:
        accounts.close_account(service, uow, commands.CloseAccount(
            shop_id=e.shop_id, member_id=e.member_id, at=from_timestamp(e.left_at, utcnow())))

    return EventConsumer(db, bus, consumer=CONSUMER, producer="membership", handlers={
        membership_events.ProgramChanged: program_changed,
        membership_events.MemberJoined: member_joined,
        membership_events.ProfileUpdated: profile_updated,
        membership_events.OrderCompleted: order_completed,
        membership_events.OrderRefunded: order_refunded,
        membership_events.MemberLeft: member_left,
    }, batch_handlers={membership_events.OrderCompleted: orders_completed},
        workers=workers, per_transaction=per_transaction)


def _purchase(e: membership_events.OrderCompleted) -> commands.CreditPurchase:
    return commands.CreditPurchase(
        shop_id=e.shop_id, order_id=e.order_id, member_id=e.member_id, amount_fen=e.amount_fen,
        rate_milli=e.points_rate_milli, completed_at=from_timestamp(e.completed_at, utcnow()),
        first_order=e.first_completed_order, referrer_member_id=e.referrer_member_id,
        birth_month=e.birth_month, birth_day=e.birth_day)
