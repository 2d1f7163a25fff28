"""Redemption (兑换) as a durable saga with points. Redeem checks and writes the redemption row and
its saga in one transaction; the saga then holds the points (points' Hold, idempotent by the
step's request_id), reserves stock and the member's limits (conditional updates, never below
zero), captures the hold and issues what was redeemed. A refusal on the way gives back what was
taken, newest first; a crash leaves the saga to the recovery job, which finishes or undoes it.

The redemption row's hold_id marks the reservation: it is set in the transaction that takes
stock and limits and cleared in the one that gives them back, so each happens exactly once
however often a step is retried. Points + cash redemptions stop after the reservation
(AWAITING_PAYMENT); payments.py continues them."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from loyalty.points.v1 import points_service_pb2 as pp
from loyalty.rewards.v1 import events_pb2
from sqlalchemy import Connection, case, insert, select, update

from services.kit.errors import FailedPrecondition, NotFound
from services.kit.saga import REFUSAL, SagaContext, SagaDefinition, Step
from services.kit.storage import UnitOfWork, insert_ignoring
from services.kit.timeutil import to_timestamp, utcnow
from services.rewards import catalogue, domain, members, reasons
from services.rewards.commands.redemptions import Redeem, Validate
from services.rewards.domain import CouponSource, RedemptionState, RewardKind, VirtualSpec
from services.rewards.service import RewardsService
from services.rewards.tables import grants, redemptions, rewards, usage
from services.rewards.wallet import issue_coupons

# Points only: open → hold → reserve → capture → fulfil.
KIND_REDEEM = "redeem"
# Points + cash: open → hold → reserve, then AWAITING_PAYMENT (payments.py takes it from there).
KIND_REDEEM_CASH = "redeem-cash"
# A points + cash hold outlives the payment window, so the deadline job (not points' TTL) ends it.
HOLD_MARGIN = timedelta(minutes=5)
_SAGA_NAMESPACE = uuid.UUID("7c1f3b52-4a0e-4d55-9a86-2f0c1d7e9b31")


def redemption_id_for(shop_id: str, request_id: str) -> str:
    """The same for every retry of one Redeem request: a retried Redeem is the same redemption."""
    return "rd_" + hashlib.sha256(f"{shop_id}\x00{request_id}".encode()).hexdigest()[:24]


def saga_id_for(redemption_id: str, kind: str) -> str:
    """One saga of each kind per redemption: recording it twice is refused by its key."""
    return str(uuid.uuid5(_SAGA_NAMESPACE, f"{kind}/{redemption_id}"))


def refused(reason: str, message: str, subject: str) -> FailedPrecondition:
    return FailedPrecondition(message, reason=reason, subject=subject)


SAGA_FIELDS = ("redemption_id", "member_id", "reward_id", "kind", "quantity", "points", "cash_fen", "month")


def saga_data(row: Mapping[str, Any]) -> dict[str, Any]:
    """What every saga of a redemption works from: the redemption row as the saga is recorded."""
    return {name: row[name] for name in SAGA_FIELDS}


# ----- Redeem: the check, the row and its saga, in one transaction ---------------------------------


def judge(service: RewardsService, conn: Connection, shop_id: str, member_id: str, reward_id: str, quantity: int,
          now: datetime) -> tuple[domain.Reward, domain.Verdict, str]:
    """The reward, every reason the member cannot redeem it now (points aside), and the month."""
    reward = catalogue.read_reward(conn, shop_id, reward_id)
    month = domain.month_of(now, service.zones.get(shop_id, conn))
    taken = catalogue.usage_of(conn, shop_id, reward_id, member_id, month)
    verdict = domain.judge(reward, members.standing(conn, shop_id, member_id), taken, now, quantity)
    return reward, verdict, month


def validate(service: RewardsService, cmd: Validate, now: datetime) -> tuple[list[str], domain.Cost]:
    """Every reason the redemption would be refused now, points' balance included, and its cost.
    Reserves nothing: between this and Redeem another member may take the last one."""
    reward, verdict, _ = service.db.read(lambda conn: judge(
        service, conn, cmd.shop_id, cmd.member_id, cmd.reward_id, cmd.quantity, now))
    cost = domain.cost_of(reward, cmd.quantity)
    why = list(verdict.reasons)
    if cost.points:
        try:
            available = service.points.GetBalance(pp.GetBalanceRequest(
                shop_id=cmd.shop_id, member_id=cmd.member_id)).available
        except NotFound:  # points never opened an account: nothing to spend
            available = 0
        if available < cost.points:
            why.append(reasons.INSUFFICIENT_POINTS)
    return why, cost


def accept(service: RewardsService, uow: UnitOfWork, cmd: Redeem, now: datetime) -> tuple[str, str | None]:
    """Checks the redemption, writes it PENDING and records its saga; returns (redemption id,
    saga id). A refusal here takes nothing (no row, no saga). A request whose redemption exists
    (retried after the kit forgot its answer) is that redemption, with no new saga."""
    assert service.sagas is not None
    redemption_id = redemption_id_for(cmd.shop_id, cmd.request_id)
    if uow.conn.execute(select(redemptions.c.redemption_id).where(
            redemptions.c.shop_id == cmd.shop_id, redemptions.c.redemption_id == redemption_id)).first():
        return redemption_id, None
    reward, verdict, month = judge(service, uow.conn, cmd.shop_id, cmd.member_id, cmd.reward_id, cmd.quantity, now)
    if not verdict.redeemable:
        raise refused(verdict.reasons[0], f"reward {cmd.reward_id} cannot be redeemed now: "
                      + ", ".join(verdict.reasons), f"reward/{cmd.reward_id}")
    cost = domain.cost_of(reward, cmd.quantity)
    row = {"shop_id": cmd.shop_id, "redemption_id": redemption_id, "member_id": cmd.member_id,
           "reward_id": cmd.reward_id, "kind": int(reward.kind), "quantity": cmd.quantity, "points": cost.points,
           "cash_fen": cost.cash_fen, "state": int(RedemptionState.PENDING), "failure_reason": "", "month": month,
           "hold_id": None, "payment_reference": None, "payment_deadline": None, "shipped": False,
           "cancel_reason": "", "created_at": now, "completed_at": None, "updated_at": now}
    uow.conn.execute(insert(redemptions), row)
    kind = KIND_REDEEM_CASH if cost.cash_fen else KIND_REDEEM
    saga_id = saga_id_for(redemption_id, kind)
    service.sagas.record(uow, kind, cmd.shop_id, saga_data(row), saga_id=saga_id)
    return redemption_id, saga_id


# ----- what the steps change here -------------------------------------------------------------------


def set_state(uow: UnitOfWork, shop_id: str, redemption_id: str, expected: RedemptionState, *,
              unless_shipped: bool = False, **values: Any) -> bool:
    """Moves a redemption on from `expected` (and, with `unless_shipped`, only while it is not
    shipped): a conditional update, so only one change wins."""
    r = redemptions.c
    where = [r.shop_id == shop_id, r.redemption_id == redemption_id, r.state == int(expected)]
    if unless_shipped:
        where.append(r.shipped.is_(False))
    return uow.conn.execute(update(redemptions).where(*where).values(updated_at=utcnow(), **values)).rowcount == 1


def _take(conn: Connection, shop_id: str, data: dict[str, Any]) -> None:
    """Takes stock (unless unlimited) and counts the member's lifetime and monthly usage, each
    only within its limit; refuses (rolling all of it back) what does not fit."""
    reward_id, quantity = data["reward_id"], data["quantity"]
    reward = catalogue.read_reward(conn, shop_id, reward_id)
    taken = conn.execute(update(rewards).where(
        rewards.c.shop_id == shop_id, rewards.c.reward_id == reward_id,
        rewards.c.unlimited_stock.is_(True) | (rewards.c.stock >= quantity)).values(
        stock=case((rewards.c.unlimited_stock.is_(True), rewards.c.stock), else_=rewards.c.stock - quantity),
        redeemed=rewards.c.redeemed + quantity, updated_at=utcnow())).rowcount
    if not taken:
        raise refused(reasons.OUT_OF_STOCK, f"reward {reward_id} is out of stock", f"reward/{reward_id}")
    for period, limit, reason in (("", reward.limit_per_member, reasons.LIMIT_REACHED),
                                  (data["month"], reward.monthly_limit_per_member, reasons.MONTHLY_LIMIT_REACHED)):
        key = {"shop_id": shop_id, "reward_id": reward_id, "member_id": data["member_id"], "period": period}
        conn.execute(insert_ignoring(conn, usage).values(**key, quantity=0))
        where = [getattr(usage.c, k) == v for k, v in key.items()]
        if limit:
            where.append(usage.c.quantity + quantity <= limit)
        if not conn.execute(update(usage).where(*where).values(quantity=usage.c.quantity + quantity)).rowcount:
            raise refused(reason, f"the member's limit of reward {reward_id} is reached", f"reward/{reward_id}")


def _give_back(conn: Connection, shop_id: str, data: dict[str, Any]) -> None:
    reward_id, quantity = data["reward_id"], data["quantity"]
    conn.execute(update(rewards).where(rewards.c.shop_id == shop_id, rewards.c.reward_id == reward_id).values(
        stock=case((rewards.c.unlimited_stock.is_(True), rewards.c.stock), else_=rewards.c.stock + quantity),
        redeemed=rewards.c.redeemed - quantity, updated_at=utcnow()))
    conn.execute(update(usage).where(
        usage.c.shop_id == shop_id, usage.c.reward_id == reward_id, usage.c.member_id == data["member_id"],
        usage.c.period.in_(["", data["month"]]), usage.c.quantity >= quantity).values(
        quantity=usage.c.quantity - quantity))


def reserve(uow: UnitOfWork, shop_id: str, data: dict[str, Any], **state: Any) -> None:
    """Takes stock and limits for a PENDING redemption not reserved yet (and sets `state`)."""
    marked = uow.conn.execute(update(redemptions).where(
        redemptions.c.shop_id == shop_id, redemptions.c.redemption_id == data["redemption_id"],
        redemptions.c.state == int(RedemptionState.PENDING), redemptions.c.hold_id.is_(None)).values(
        hold_id=data["hold_id"], updated_at=utcnow(), **state)).rowcount
    if marked:
        _take(uow.conn, shop_id, data)


def unreserve(uow: UnitOfWork, shop_id: str, data: dict[str, Any], **state: Any) -> bool:
    """Gives back the stock and limits of a reserved redemption (once); whether it did."""
    released = uow.conn.execute(update(redemptions).where(
        redemptions.c.shop_id == shop_id, redemptions.c.redemption_id == data["redemption_id"],
        redemptions.c.hold_id.is_not(None)).values(hold_id=None, updated_at=utcnow(), **state)).rowcount
    if released:
        _give_back(uow.conn, shop_id, data)
    return bool(released)


def fulfil(service: RewardsService, uow: UnitOfWork, shop_id: str, data: dict[str, Any]) -> None:
    """Completes a PENDING redemption (once): issues what was redeemed and emits RewardRedeemed."""
    now = utcnow()
    if not set_state(uow, shop_id, data["redemption_id"], RedemptionState.PENDING,
                      state=int(RedemptionState.COMPLETED), completed_at=now):
        return
    reward = catalogue.read_reward(uow.conn, shop_id, data["reward_id"])
    if reward.kind is RewardKind.COUPON:
        issue_coupons(service, uow, reward, data["member_id"], source=CouponSource.REDEMPTION,
                      source_reference=data["redemption_id"], quantity=data["quantity"], now=now)
    elif reward.kind is RewardKind.VIRTUAL:
        assert isinstance(reward.spec, VirtualSpec)
        days = reward.spec.valid_days
        uow.conn.execute(insert(grants), {
            "shop_id": shop_id, "redemption_id": data["redemption_id"], "member_id": data["member_id"],
            "reward_id": reward.reward_id, "spec": domain.spec_to_json(reward.spec), "quantity": data["quantity"],
            "valid_until": now + timedelta(days=days) if days else None, "revoked": False, "created_at": now})
    # A gift needs nothing more: the redemption row is its shipment record (shipped = false).
    uow.emit(shop_id, events_pb2.RewardRedeemed(
        shop_id=shop_id, member_id=data["member_id"], redemption_id=data["redemption_id"],
        reward_id=data["reward_id"], kind=data["kind"], quantity=data["quantity"], points=data["points"],
        cash_fen=data["cash_fen"], redeemed_at=to_timestamp(now)))


# ----- the steps ---------------------------------------------------------------------------------------


class RedemptionSteps:
    """The steps and compensations the redemption sagas share, bound to the service."""

    def __init__(self, service: RewardsService):
        self.service = service

    def transact(self, work: Callable[[UnitOfWork], Any]) -> Any:
        return self.service.db.transact(work)

    def open(self, ctx: SagaContext) -> None:
        """Nothing to do: the row was written with the saga. Its compensation runs last."""

    def fail(self, ctx: SagaContext) -> None:
        """The redemption FAILED, with the refusal's reason, once everything was given back."""
        reason = ctx.data.get(REFUSAL, {}).get("reason") or reasons.REDEMPTION_ABORTED
        self.transact(lambda uow: set_state(uow, ctx.shop_id, ctx.data["redemption_id"], RedemptionState.PENDING,
                                             state=int(RedemptionState.FAILED), failure_reason=reason))

    def _hold_request(self, ctx: SagaContext) -> pp.HoldRequest:
        ttl = int((domain.PAYMENT_WINDOW + HOLD_MARGIN).total_seconds()) if ctx.data["cash_fen"] else 0
        return pp.HoldRequest(request_id=ctx.request_id(), shop_id=ctx.shop_id, member_id=ctx.data["member_id"],
                              points=ctx.data["points"], ttl_seconds=ttl,
                              source=pp.Source(redemption_id=ctx.data["redemption_id"]))

    def hold(self, ctx: SagaContext) -> dict[str, Any]:
        if not ctx.data["points"]:
            return {"hold_id": ""}  # a free reward holds nothing
        return {"hold_id": self.service.points.Hold(self._hold_request(ctx)).hold_id}

    def release(self, ctx: SagaContext) -> None:
        """Releases the hold: also one whose answer was never recorded (asked again with the same
        request_id), none if it was refused, and one released already or expired."""
        hold_id = ctx.data.get("hold_id")
        if hold_id is None and ctx.data["points"]:
            try:
                hold_id = self.service.points.Hold(self._hold_request(ctx)).hold_id
            except (FailedPrecondition, NotFound):
                return  # refused: nothing is held
        self.release_hold(ctx, hold_id or "")

    def release_hold(self, ctx: SagaContext, hold_id: str) -> None:
        if hold_id:
            self.service.points.ReleaseHold(pp.ReleaseHoldRequest(
                request_id=ctx.request_id("release"), shop_id=ctx.shop_id, hold_id=hold_id))

    def reserve(self, ctx: SagaContext) -> None:
        awaiting: dict[str, Any] = {}
        if ctx.data["cash_fen"]:
            awaiting = {"state": int(RedemptionState.AWAITING_PAYMENT),
                        "payment_deadline": utcnow() + domain.PAYMENT_WINDOW}
        self.transact(lambda uow: reserve(uow, ctx.shop_id, ctx.data, **awaiting))

    def unreserve(self, ctx: SagaContext) -> None:
        self.transact(lambda uow: unreserve(uow, ctx.shop_id, ctx.data))

    def capture(self, ctx: SagaContext) -> None:
        if ctx.data["hold_id"]:
            self.service.points.CaptureHold(pp.CaptureHoldRequest(
                request_id=ctx.request_id(), shop_id=ctx.shop_id, hold_id=ctx.data["hold_id"]))

    def fulfil(self, ctx: SagaContext) -> None:
        self.transact(lambda uow: fulfil(self.service, uow, ctx.shop_id, ctx.data))


def saga_definitions(service: RewardsService) -> list[SagaDefinition]:
    from services.rewards import payments  # it builds on these steps

    s = RedemptionSteps(service)
    opening = [Step("open", s.open, s.fail), Step("hold", s.hold, s.release), Step("reserve", s.reserve, s.unreserve)]
    return [SagaDefinition(KIND_REDEEM, [*opening, Step("capture", s.capture), Step("fulfil", s.fulfil)]),
            SagaDefinition(KIND_REDEEM_CASH, opening), *payments.saga_definitions(s)]
