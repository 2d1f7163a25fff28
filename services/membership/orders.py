"""Orders and qualification: a paid order is recorded, a completed one (交易成功) counts toward
the member's cumulative spend and trade count and may raise their tier, a refund (退款) takes
its amount back off."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from loyalty.membership.v1 import events_pb2
from loyalty.membership.v1 import membership_service_pb2 as pb
from sqlalchemy import Connection, and_, bindparam, insert, select, update
from sqlalchemy.engine import Row

from services.kit.errors import AlreadyExists, FailedPrecondition, NotFound
from services.kit.storage import Prepared, UnitOfWork, ignoring_returning
from services.kit.timeutil import to_timestamp
from services.membership import commands, data_keys, growth, order_details, reasons, standing, tiers, views
from services.membership.domain import MemberStatus, OrderStatus, Tier, TierChangeReason
from services.membership.tables import members, orders, refunds, tier_history
from services.membership.views import OrderView

if TYPE_CHECKING:
    from services.membership.context import Membership
    from services.membership.programs import Program


# The busy path's statements (RecordOrder, CompleteOrder at a sale's rate), built once: building a
# Core statement and its cache key on every call cost more Python than running it.
_ORDER_OF = and_(orders.c.shop_id == bindparam("b_shop"), orders.c.order_id == bindparam("b_order"))
_LOCKED_ORDER = Prepared(select(orders).where(_ORDER_OF).with_for_update())
_RECORDED = Prepared(select(orders.c.amount_fen, orders.c.buyer_hash).where(_ORDER_OF))
_BUYERS_MEMBER = Prepared(select(members).where(
    members.c.shop_id == bindparam("b_shop"), members.c.buyer_hash == bindparam("b_buyer"),
    members.c.status == MemberStatus.ACTIVE).with_for_update(of=members))
_COMPLETE = update(orders).where(_ORDER_OF).values(
    status=OrderStatus.COMPLETED, completed_at=bindparam("b_at"), member_id=bindparam("b_member"), counted=True,
    points_rate_milli=bindparam("b_rate")).returning(*orders.c)
_COUNT = update(members).where(
    members.c.shop_id == bindparam("b_shop"), members.c.member_id == bindparam("b_member")).values(
    cumulative_spend_fen=bindparam("b_spend"), trade_count=bindparam("b_trades"),
    first_completed_at=bindparam("b_first"))
# The order completed for the member, and the member's trade counted: on PostgreSQL one statement
# (the member's update as a data-modifying CTE), elsewhere two.
_COMPLETE_AND_COUNT = {"postgresql": (Prepared(_COMPLETE.add_cte(_COUNT.cte("member_counts"))),),
                       "sqlite": (Prepared(_COMPLETE), Prepared(_COUNT))}



@dataclass(frozen=True)
class OrderOutcome:
    order: OrderView
    tier: Tier | None  # the member's tier after the change; None when the order has no member
    tier_changed: bool


def _locked_order(conn: Connection, shop_id: str, order_id: str) -> Row:
    row = _LOCKED_ORDER(conn, {"b_shop": shop_id, "b_order": order_id}).first()
    if row is None:
        raise NotFound(f"order {order_id!r} was never recorded", reason=reasons.ORDER_NOT_FOUND,
                       metadata={"order_id": order_id})
    return row


def _member_tier(conn: Connection, program: Program, shop_id: str, member_id: str | None) -> Tier | None:
    if not member_id:
        return None
    row = conn.execute(select(members.c.tier_level).where(
        members.c.shop_id == shop_id, members.c.member_id == member_id)).first()
    return program.ladder.tier(row.tier_level) if row else None


def lines_to_proto(details: order_details.OrderDetails) -> list[pb.OrderLine]:
    return [pb.OrderLine(sku_id=x.sku_id, category_id=x.category_id, quantity=x.quantity, amount_fen=x.amount_fen)
            for x in details.lines]


def record_order(ctx: Membership, uow: UnitOfWork, cmd: commands.RecordOrder) -> OrderView:
    """A paid order; recording it again with the same details is a retry, with others a conflict."""
    ctx.programs.get(cmd.shop_id, uow.conn)
    buyer_hash = ctx.pii.buyer_hash(cmd.shop_id, cmd.buyer_id)
    unconfirmed: list[str] = []
    key = data_keys.key_for_buyer(ctx, uow, cmd.shop_id, buyer_hash, unconfirmed=unconfirmed)
    # One statement, no savepoint: an order recorded before (a retry, or a concurrent twin that
    # came first) leaves nothing inserted.
    recorded = ignoring_returning(uow.conn, orders, ["shop_id", "order_id"], list(orders.c), prepared=True)
    row = recorded(uow.conn, {
        "shop_id": cmd.shop_id, "order_id": cmd.order_id, "buyer_hash": buyer_hash, "key_id": key.key_id,
        "buyer_id_cipher": key.seal(cmd.buyer_id, data_keys.order_buyer(cmd.shop_id, cmd.order_id)),
        "member_id": None, "amount_fen": cmd.amount_fen, "refunded_fen": 0, "status": OrderStatus.PAID,
        "paid_at": cmd.paid_at, "completed_at": None, "counted": False, "points_rate_milli": 0,
        "details": order_details.to_json(cmd.details)}).first()
    if row is not None:
        data_keys.confirm_on_commit(ctx, uow, cmd.shop_id, unconfirmed)
        return views.order_view(ctx, row, {key.key_id: key})
    # Recorded before. A key made just now for a buyer who left since stays unconfirmed: no row
    # uses it, and the sweeper destroys it.
    existing = _RECORDED(uow.conn, {"b_shop": cmd.shop_id, "b_order": cmd.order_id}).one()
    if existing.amount_fen != cmd.amount_fen or existing.buyer_hash not in (None, buyer_hash):
        raise AlreadyExists(f"order {cmd.order_id!r} was recorded with other details",
                            reason=reasons.ORDER_CONFLICT, metadata={"order_id": cmd.order_id})
    return views.order(ctx, uow.conn, cmd.shop_id, cmd.order_id)


def complete_order(ctx: Membership, uow: UnitOfWork, cmd: commands.CompleteOrder) -> OrderOutcome:
    """交易成功: the trade counts for the buyer's membership; the tier may go up after it."""
    shop_id, order_id = cmd.shop_id, cmd.order_id
    program = ctx.programs.get(shop_id, uow.conn)
    order = _locked_order(uow.conn, shop_id, order_id)
    if order.status == OrderStatus.REFUNDED and order.completed_at is None:
        raise FailedPrecondition("the order was refunded in full before it completed", reason=reasons.ORDER_REFUNDED,
                                 subject=f"order/{order_id}")
    if order.completed_at is not None:  # completed before: the same answer again
        return _completed_again(ctx, uow.conn, program, order)
    member = None
    if order.buyer_hash is not None:
        member = _BUYERS_MEMBER(uow.conn, {"b_shop": shop_id, "b_buyer": order.buyer_hash}).first()
    if member is not None and cmd.completed_at < member.joined_at - commands.CLOCK_SKEW:
        member = None  # completed before the buyer joined: a fact about the buyer, not the member's trade
    if member is None:  # an order alone does not make a member
        uow.conn.execute(update(orders).where(orders.c.shop_id == shop_id, orders.c.order_id == order_id)
                         .values(status=OrderStatus.COMPLETED, completed_at=cmd.completed_at))
        return OrderOutcome(views.order(ctx, uow.conn, shop_id, order_id), None, False)

    ladder = program.ladder
    held = ladder.tier(member.tier_level)  # the rate of the tier held when the trade succeeds
    amount = order.amount_fen - order.refunded_fen
    spend = member.cumulative_spend_fen + amount
    trades = member.trade_count + 1
    first = member.first_completed_at is None
    complete, *count = _COMPLETE_AND_COUNT[uow.conn.dialect.name]
    changes = {"b_shop": shop_id, "b_order": order_id, "b_at": cmd.completed_at, "b_member": member.member_id,
               "b_rate": held.points_rate_milli, "b_spend": spend, "b_trades": trades,
               "b_first": member.first_completed_at or cmd.completed_at}
    completed = complete(uow.conn, changes).one()
    for statement in count:
        statement(uow.conn, changes)
    standing.invalidate_member(ctx, uow, shop_id, member.member_id)
    # The buyer's key, read from the key store once (the order's view is the member's, unless
    # the buyer left and joined again since the order was paid).
    keys = {member.key_id: key} if member.key_id and (key := data_keys.unwrap(ctx, member)) else {}
    # Neither the buyer id nor the birthday is sent (both fields are deprecated): events outlive
    # an erasure on the bus, and consumers keep the birthday from MemberJoined/ProfileUpdated.
    details = order_details.from_json(order.details)
    uow.emit(shop_id, events_pb2.OrderCompleted(
        shop_id=shop_id, order_id=order_id, member_id=member.member_id, amount_fen=amount,
        completed_at=to_timestamp(cmd.completed_at), tier_level=held.level, tier_code=held.code,
        points_rate_milli=held.points_rate_milli, first_completed_order=first,
        referrer_member_id=member.referrer_member_id or "", lines=lines_to_proto(details),
        coupon_applied=details.coupon_applied, campaign_applied=details.campaign_applied))
    growth_value = growth.credit_spend(ctx, uow, program, member, order_id, amount, cmd.completed_at)
    new_level = ladder.evaluate(member.tier_level, spend, trades, growth_value)
    changed = new_level != member.tier_level
    if changed:
        tiers.change_tier(ctx, uow, ladder, shop_id, member.member_id, member.tier_level, member.buyer_hash,
                          new_level, TierChangeReason.QUALIFIED, order_id=order_id)
    return OrderOutcome(views.order_view(ctx, completed, keys), ladder.tier(new_level), changed)


def _completed_again(ctx: Membership, conn: Connection, program: Program, order: Row) -> OrderOutcome:
    """The first completion's answer again, to a retry under any request_id: whether the trade
    raised the tier is in the tier history (a QUALIFIED change naming the order), and the tier is
    the one it raised the member to."""
    raised = conn.execute(select(tier_history.c.to_level).where(
        tier_history.c.shop_id == order.shop_id, tier_history.c.member_id == order.member_id,
        tier_history.c.order_id == order.order_id, tier_history.c.reason == TierChangeReason.QUALIFIED)
        .order_by(tier_history.c.id)).first() if order.member_id else None
    view = views.order(ctx, conn, order.shop_id, order.order_id)
    if raised is not None:
        return OrderOutcome(view, program.ladder.tier(raised.to_level), True)
    return OrderOutcome(view, _member_tier(conn, program, order.shop_id, order.member_id), False)


def refund_order(ctx: Membership, uow: UnitOfWork, cmd: commands.RefundOrder) -> OrderOutcome:
    """退款: a refund takes its amount off the member's cumulative spend; a full refund also
    takes the trade off their count."""
    shop_id, order_id, refund_id, amount_fen = cmd.shop_id, cmd.order_id, cmd.refund_id, cmd.amount_fen
    program = ctx.programs.get(shop_id, uow.conn)
    order = _locked_order(uow.conn, shop_id, order_id)
    previous = uow.conn.execute(select(refunds.c.amount_fen, refunds.c.tier_level_after).where(
        refunds.c.shop_id == shop_id, refunds.c.order_id == order_id, refunds.c.refund_id == refund_id)).first()
    if previous is not None:  # refunded before: the first answer again, under any request_id
        if previous.amount_fen != amount_fen:
            raise AlreadyExists(f"refund {refund_id!r} was made with another amount", reason=reasons.REFUND_CONFLICT,
                                metadata={"refund_id": refund_id})
        if previous.tier_level_after is not None:
            return OrderOutcome(views.order(ctx, uow.conn, shop_id, order_id),
                                program.ladder.tier(previous.tier_level_after), True)
        return OrderOutcome(views.order(ctx, uow.conn, shop_id, order_id),
                            _member_tier(uow.conn, program, shop_id, order.member_id), False)
    remaining = order.amount_fen - order.refunded_fen
    if amount_fen > remaining:
        raise FailedPrecondition(f"refund of {amount_fen} fen exceeds the {remaining} fen left on the order",
                                 reason=reasons.REFUND_EXCEEDS_ORDER, subject=f"order/{order_id}",
                                 metadata={"remaining_fen": str(remaining)})
    refunded = order.refunded_fen + amount_fen
    full = refunded == order.amount_fen
    uow.conn.execute(insert(refunds), {"shop_id": shop_id, "order_id": order_id, "refund_id": refund_id,
                                       "amount_fen": amount_fen, "refunded_at": cmd.refunded_at})
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
        standing.invalidate_member(ctx, uow, shop_id, member.member_id)
        growth_value = growth.take_back_refund(ctx, uow, program, member, order_id, amount_fen, cmd.refunded_at)
        new_level = program.ladder.evaluate(member.tier_level, spend, trades, growth_value)
        changed = new_level != member.tier_level
        if changed:
            tiers.change_tier(ctx, uow, program.ladder, shop_id, member.member_id, member.tier_level,
                              member.buyer_hash, new_level, TierChangeReason.REFUNDED, order_id=order_id)
            uow.conn.execute(update(refunds).where(
                refunds.c.shop_id == shop_id, refunds.c.order_id == order_id, refunds.c.refund_id == refund_id)
                .values(tier_level_after=new_level))
        tier = program.ladder.tier(new_level)
    uow.emit(shop_id, events_pb2.OrderRefunded(
        shop_id=shop_id, order_id=order_id, refund_id=refund_id, member_id=order.member_id or "",
        refund_amount_fen=amount_fen, total_refunded_fen=refunded, order_amount_fen=order.amount_fen,
        after_completion=order.completed_at is not None, fully_refunded=full,
        points_rate_milli=order.points_rate_milli, refunded_at=to_timestamp(cmd.refunded_at)))
    return OrderOutcome(views.order(ctx, uow.conn, shop_id, order_id), tier, changed)
