"""What follows a reservation: points + cash redemptions paid (ConfirmPayment), cancelled by the
member or past their payment deadline, completed gift redemptions shipped, or cancelled by an
operator before shipment. Each change is a conditional update of the redemption's state (so only one of
confirm and cancel wins) recorded with the saga that carries it out, in one transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from loyalty.points.v1 import points_service_pb2 as pp
from loyalty.rewards.v1 import events_pb2
from sqlalchemy import select

from services.kit.errors import InvalidArgument
from services.kit.saga import REFUSAL, SagaContext, SagaDefinition, Step
from services.kit.storage import UnitOfWork
from services.kit.timeutil import to_timestamp, utcnow
from services.rewards import reasons
from services.rewards.commands.redemptions import CancelRedemption, ConfirmPayment, ShipRedemption
from services.rewards.domain import RedemptionState, RewardKind
from services.rewards.redeeming import (
    RedemptionSteps,
    refused,
    saga_data,
    saga_id_for,
    set_state,
    unreserve,
)
from services.rewards.redemptions import read_redemption
from services.rewards.service import RewardsService
from services.rewards.tables import redemptions

# Paid: confirmed → capture → fulfil (a refused capture gives everything back).
KIND_PAID = "redeem-paid"
# Cancelled before payment, or past the deadline: release the hold → give back stock and limits.
KIND_UNWIND = "redeem-unwind"
# A completed gift cancelled by the operator: return the points (Adjust) → give back stock and limits.
KIND_REFUND = "redeem-refund"
MAX_POINTS_REASON = 500  # points' limit on an adjustment's reason


def _record(service: RewardsService, uow: UnitOfWork, kind: str, row: Any, **extra: Any) -> str:
    assert service.sagas is not None
    saga_id = saga_id_for(row.redemption_id, kind)
    service.sagas.record(uow, kind, row.shop_id, {**saga_data(row._mapping), "hold_id": row.hold_id, **extra},
                         saga_id=saga_id)
    return saga_id


def confirm(service: RewardsService, uow: UnitOfWork, cmd: ConfirmPayment, now: datetime) -> str:
    """AWAITING_PAYMENT → PENDING with the payment's reference, and the saga that captures the
    points and issues the reward; returns the saga's id."""
    row = read_redemption(uow.conn, cmd.shop_id, cmd.redemption_id)
    subject = f"redemption/{cmd.redemption_id}"
    if row.state != RedemptionState.AWAITING_PAYMENT:
        raise refused(reasons.NOT_AWAITING_PAYMENT, "the redemption is not awaiting payment", subject)
    if row.payment_deadline is not None and row.payment_deadline <= now:
        raise refused(reasons.PAYMENT_TIMEOUT, "the payment deadline has passed", subject)
    if not set_state(uow, cmd.shop_id, cmd.redemption_id, RedemptionState.AWAITING_PAYMENT,
                      state=int(RedemptionState.PENDING), payment_reference=cmd.payment_reference):
        raise refused(reasons.NOT_AWAITING_PAYMENT, "the redemption is not awaiting payment", subject)
    return _record(service, uow, KIND_PAID, row)


def _unwind(service: RewardsService, uow: UnitOfWork, row: Any, reason: str, cancel_reason: str) -> str | None:
    """AWAITING_PAYMENT → CANCELLED, and the saga that gives points and stock back (None: the
    redemption was confirmed or cancelled meanwhile)."""
    if not set_state(uow, row.shop_id, row.redemption_id, RedemptionState.AWAITING_PAYMENT,
                      state=int(RedemptionState.CANCELLED), failure_reason=reason, cancel_reason=cancel_reason):
        return None
    return _record(service, uow, KIND_UNWIND, row)


def cancel(service: RewardsService, uow: UnitOfWork, cmd: CancelRedemption) -> str:
    """Cancels before payment, or a completed gift not shipped (an operator, returning the
    points); returns the id of the saga that gives everything back."""
    row = read_redemption(uow.conn, cmd.shop_id, cmd.redemption_id)
    subject = f"redemption/{cmd.redemption_id}"
    if row.state == RedemptionState.AWAITING_PAYMENT:
        reason = reasons.CANCELLED_BY_OPERATOR if cmd.operator else reasons.CANCELLED_BY_MEMBER
        saga_id = _unwind(service, uow, row, reason, cmd.reason)
        if saga_id is None:
            raise refused(reasons.NOT_CANCELLABLE, "the redemption was settled meanwhile", subject)
        return saga_id
    if row.state != RedemptionState.COMPLETED or row.kind != RewardKind.GIFT:
        raise refused(reasons.NOT_CANCELLABLE, "only a redemption awaiting payment or a completed gift "
                      "redemption not shipped yet can be cancelled", subject)
    if row.shipped:
        raise refused(reasons.ALREADY_SHIPPED, "the gift was shipped", subject)
    if not cmd.operator:
        raise InvalidArgument([("operator", "required to cancel a completed redemption")],
                              reason=reasons.OPERATOR_REQUIRED)
    if not set_state(uow, row.shop_id, row.redemption_id, RedemptionState.COMPLETED,
                      state=int(RedemptionState.CANCELLED), failure_reason=reasons.CANCELLED_BY_OPERATOR,
                      cancel_reason=cmd.reason, unless_shipped=True):
        raise refused(reasons.NOT_CANCELLABLE, "the redemption changed meanwhile (shipped or cancelled)", subject)
    return _record(service, uow, KIND_REFUND, row, operator=cmd.operator, reason=cmd.reason)


def ship(service: RewardsService, uow: UnitOfWork, cmd: ShipRedemption, now: datetime) -> None:
    """A completed gift redemption shipped: it can no longer be cancelled (one conditional update,
    so of a shipment and an operator's cancellation at once exactly one wins). Shipping it again
    with the same reference changes nothing."""
    row = read_redemption(uow.conn, cmd.shop_id, cmd.redemption_id)
    subject = f"redemption/{cmd.redemption_id}"
    if row.kind != RewardKind.GIFT:
        raise refused(reasons.NOT_A_GIFT, "only a gift redemption is shipped", subject)
    if row.shipped:
        if row.shipment_reference == cmd.shipment_reference:
            return
        raise refused(reasons.ALREADY_SHIPPED, f"the gift was shipped ({row.shipment_reference})", subject)
    if not set_state(uow, row.shop_id, row.redemption_id, RedemptionState.COMPLETED, unless_shipped=True,
                     shipped=True, shipped_at=now, shipment_reference=cmd.shipment_reference):
        raise refused(reasons.NOT_SHIPPABLE, "only a completed redemption is shipped", subject)


def cancel_overdue(service: RewardsService, now: datetime | None = None, limit: int = 100) -> int:
    """The deadline job: cancels redemptions still awaiting payment past their deadline (each in
    its own transaction, with its unwind saga, run at once); returns how many."""
    assert service.sagas is not None
    now = now or utcnow()
    r = redemptions.c
    due = service.db.read(lambda conn: conn.execute(select(r.shop_id, r.redemption_id).where(
        r.state == int(RedemptionState.AWAITING_PAYMENT), r.payment_deadline <= now).limit(limit)).all())
    cancelled = 0
    for shop_id, redemption_id in due:
        saga_id = service.db.transact(lambda uow, s=shop_id, i=redemption_id: _unwind(
            service, uow, read_redemption(uow.conn, s, i), reasons.PAYMENT_TIMEOUT, ""))
        if saga_id is not None:
            cancelled += 1
            service.sagas.run(saga_id)
    return cancelled


class PaymentSteps:
    """The steps of the sagas after a reservation, on top of the redemption's own."""

    def __init__(self, steps: RedemptionSteps):
        self.s = steps

    def confirmed(self, ctx: SagaContext) -> None:
        """Nothing to do: the state changed with the saga's record. Its compensation runs last."""

    def give_back_unpaid(self, ctx: SagaContext) -> None:
        """A paid redemption whose capture was refused: points and stock back, and FAILED (the
        shop refunds the cash it took)."""
        self.s.release_hold(ctx, ctx.data["hold_id"] or "")
        reason = ctx.data.get(REFUSAL, {}).get("reason") or reasons.REDEMPTION_ABORTED

        def work(uow: UnitOfWork) -> None:
            unreserve(uow, ctx.shop_id, ctx.data)
            set_state(uow, ctx.shop_id, ctx.data["redemption_id"], RedemptionState.PENDING,
                       state=int(RedemptionState.FAILED), failure_reason=reason)

        self.s.transact(work)

    def release(self, ctx: SagaContext) -> None:
        self.s.release_hold(ctx, ctx.data["hold_id"] or "")

    def give_back(self, ctx: SagaContext) -> None:
        self.s.transact(lambda uow: unreserve(uow, ctx.shop_id, ctx.data))

    def refund(self, ctx: SagaContext) -> None:
        """The points go back as an operator's adjustment naming the redemption (points' ledger)."""
        if ctx.data["points"]:
            why = f"redemption {ctx.data['redemption_id']} cancelled: {ctx.data['reason']}"[:MAX_POINTS_REASON]
            self.s.service.points.Adjust(pp.AdjustRequest(
                request_id=ctx.request_id(), shop_id=ctx.shop_id, member_id=ctx.data["member_id"],
                points=ctx.data["points"], operator=ctx.data["operator"], reason=why))

    def give_back_refunded(self, ctx: SagaContext) -> None:
        def work(uow: UnitOfWork) -> None:
            if unreserve(uow, ctx.shop_id, ctx.data):
                uow.emit(ctx.shop_id, events_pb2.RedemptionCancelled(
                    shop_id=ctx.shop_id, member_id=ctx.data["member_id"], redemption_id=ctx.data["redemption_id"],
                    reward_id=ctx.data["reward_id"], points_returned=ctx.data["points"], reason=ctx.data["reason"],
                    cancelled_at=to_timestamp(utcnow())))

        self.s.transact(work)


def saga_definitions(steps: RedemptionSteps) -> list[SagaDefinition]:
    p, s = PaymentSteps(steps), steps
    return [
        SagaDefinition(KIND_PAID, [Step("confirmed", p.confirmed, p.give_back_unpaid), Step("capture", s.capture),
                                   Step("fulfil", s.fulfil)]),
        SagaDefinition(KIND_UNWIND, [Step("release", p.release), Step("give_back", p.give_back)]),
        SagaDefinition(KIND_REFUND, [Step("refund", p.refund), Step("give_back", p.give_back_refunded)]),
    ]

