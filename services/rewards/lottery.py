"""The lottery's draws (大转盘 / 九宫格): Draw as a durable saga with points, and the members' draws.
(The operators' lotteries and their prize tables are lottery_admin's.)

Draw checks the lottery and the member, takes a free draw of the month if one is left (a
conditional update within the allowance), and writes the draw PENDING with its saga in one
transaction. The saga then, for a paid draw, holds cost_points (points' Hold, idempotent by the
step's request id, derived from the draw id); draws — the slot won, its stock (a conditional
update, never below zero: out of stock falls back to the NOTHING slot), its coupon and the draw
row all commit in ONE transaction, claimed by the draw's PENDING state so a retried step never
draws twice; captures the hold; and credits a POINTS prize through points' Earn (idempotent by
the draw id). A refusal on the way (INSUFFICIENT_POINTS) gives back what was taken — the hold,
the free draw, and, should the capture ever be refused, the prize — and the draw FAILS; a crash
leaves the saga to the recovery job, which finishes or undoes it."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loyalty.points.v1 import points_service_pb2 as pp
from sqlalchemy import Connection, Row, insert, select, tuple_, update

from services.kit.errors import FailedPrecondition, NotFound
from services.kit.saga import REFUSAL, SagaContext, SagaDefinition, Step
from services.kit.storage import UnitOfWork, insert_ignoring
from services.kit.timeutil import utcnow
from services.rewards import catalogue, domain, members, reasons
from services.rewards.commands import lottery as commands
from services.rewards.domain import CouponSource, CouponState
from services.rewards.lottery_admin import REWARD_KIND_OF, prizes_of, read_lottery
from services.rewards.lottery_domain import DrawState, Lottery, Prize, PrizeKind, random_bp
from services.rewards.lottery_domain import draw as draw_slot
from services.rewards.service import RewardsService
from services.rewards.tables import coupons, lottery_chances, lottery_draws, lottery_prizes
from services.rewards.wallet import issue_coupons

KIND_PAID = "lottery-draw"  # open → hold → draw → capture → credit
KIND_FREE = "lottery-free-draw"  # open → draw → credit
_SAGA_NAMESPACE = uuid.UUID("3d0e6f4a-8b1c-4f27-a5d9-61c2e7b40f18")


@dataclass(frozen=True)
class DrawView:
    shop_id: str
    draw_id: str
    lottery_id: str
    member_id: str
    state: DrawState
    free: bool
    cost_points: int
    prize_id: str
    prize_name: str
    prize_kind: int
    points: int
    reward_id: str
    coupon_ids: tuple[str, ...]
    points_credited: bool
    shipped: bool
    failure_reason: str
    created_at: datetime
    drawn_at: datetime | None


# ----- Draw: the checks, the free draw, the row and its saga, in one transaction --------------------


def draw_id_for(shop_id: str, request_id: str) -> str:
    """The same for every retry of one Draw request: a retried Draw is the same draw."""
    return "dr_" + hashlib.sha256(f"{shop_id}\x00{request_id}".encode()).hexdigest()[:24]


def saga_id_for(draw_id: str) -> str:
    return str(uuid.uuid5(_SAGA_NAMESPACE, draw_id))


def _take_free_draw(conn: Connection, lottery: Lottery, member_id: str, allowance: int, month: str) -> bool:
    """Takes one of the member's free draws of the month, if one is left."""
    if allowance <= 0:
        return False
    key = {"shop_id": lottery.shop_id, "lottery_id": lottery.lottery_id, "member_id": member_id, "period": month}
    conn.execute(insert_ignoring(conn, lottery_chances).values(**key, used=0))
    c = lottery_chances.c
    return conn.execute(update(lottery_chances).where(*[getattr(c, k) == v for k, v in key.items()],
                                                      c.used + 1 <= allowance)
                        .values(used=c.used + 1)).rowcount == 1


def accept(service: RewardsService, uow: UnitOfWork, cmd: commands.Draw, now: datetime) -> tuple[str, str]:
    """Checks the draw, takes a free draw if one is left, writes the draw PENDING and records its
    saga; returns (draw id, saga id). A refusal here takes nothing."""
    assert service.sagas is not None
    lottery = read_lottery(uow.conn, cmd.shop_id, cmd.lottery_id)
    why = lottery.why_not_running(now)
    if why is not None:
        raise FailedPrecondition(f"lottery {lottery.lottery_id} is not running ({why})", reason=why,
                                 subject=f"lottery/{lottery.lottery_id}")
    member = members.standing(uow.conn, cmd.shop_id, cmd.member_id)
    if member is None or member.left:
        raise FailedPrecondition(f"{cmd.member_id} is not a member of shop {cmd.shop_id}",
                                 reason=reasons.NOT_A_MEMBER, subject=f"member/{cmd.member_id}")
    month = domain.month_of(now, service.zones.get(cmd.shop_id, uow.conn))
    free = _take_free_draw(uow.conn, lottery, cmd.member_id, lottery.free_draws_for(member.tier_level), month)
    if not free and lottery.cost_points == 0:
        raise FailedPrecondition(f"no free draws of lottery {lottery.lottery_id} are left this month",
                                 reason=reasons.NO_DRAWS_LEFT, subject=f"lottery/{lottery.lottery_id}")
    draw_id = draw_id_for(cmd.shop_id, cmd.request_id)
    cost = 0 if free else lottery.cost_points
    uow.conn.execute(insert(lottery_draws), {
        "shop_id": cmd.shop_id, "draw_id": draw_id, "lottery_id": lottery.lottery_id, "member_id": cmd.member_id,
        "state": int(DrawState.PENDING), "free": free, "month": month, "cost_points": cost, "prize_id": "",
        "prize_name": "", "prize_kind": 0, "points": 0, "reward_id": "", "stock_taken": False, "coupon_ids": "[]",
        "points_credited": False, "shipped": False, "failure_reason": "", "created_at": now, "drawn_at": None,
        "updated_at": now})
    saga_id = saga_id_for(draw_id)
    data = {"draw_id": draw_id, "lottery_id": lottery.lottery_id, "member_id": cmd.member_id, "free": free,
            "cost_points": cost, "month": month}
    service.sagas.record(uow, KIND_FREE if free else KIND_PAID, cmd.shop_id, data, saga_id=saga_id)
    return draw_id, saga_id


# ----- the draw itself: prize, stock, coupon and row in one transaction -----------------------------


def _take_prize(conn: Connection, shop_id: str, lottery_id: str, prize: Prize) -> bool:
    """Counts the win and takes one of the prize's stock unless unlimited; False when none is
    left (or the table changed meanwhile)."""
    c = lottery_prizes.c
    where = [c.shop_id == shop_id, c.lottery_id == lottery_id, c.prize_id == prize.prize_id,
             c.unlimited_stock.is_(prize.unlimited_stock)]
    values: dict[str, Any] = {"won": c.won + 1}
    if not prize.unlimited_stock:
        where.append(c.stock >= 1)
        values["stock"] = c.stock - 1
    return conn.execute(update(lottery_prizes).where(*where).values(**values)).rowcount == 1


def _usable_reward(conn: Connection, shop_id: str, prize: Prize) -> catalogue.Reward | None:
    try:
        reward = catalogue.read_reward(conn, shop_id, prize.reward_id)
    except NotFound:
        return None
    return reward if reward.kind is REWARD_KIND_OF[prize.kind] else None


def draw(service: RewardsService, uow: UnitOfWork, shop_id: str, data: dict[str, Any],
         r: int | None = None) -> dict[str, Any]:
    """Draws a PENDING draw (once: the state claims it) with the random integer `r` (by default
    from secrets): the slot won, or the NOTHING slot when that prize is out of stock or its reward
    is gone; takes its stock, issues its coupon and records it. Returns the prize's kind and points."""
    conn, now, draw_id = uow.conn, utcnow(), data["draw_id"]
    d = lottery_draws.c
    claimed = conn.execute(update(lottery_draws).where(d.shop_id == shop_id, d.draw_id == draw_id,
                                                       d.state == int(DrawState.PENDING))
                           .values(state=int(DrawState.COMPLETED), drawn_at=now, updated_at=now)).rowcount
    if not claimed:
        row = conn.execute(select(d.prize_kind, d.points).where(d.shop_id == shop_id, d.draw_id == draw_id)).one()
        return {"prize_kind": row.prize_kind, "points": row.points}
    prizes = prizes_of(conn, shop_id, [data["lottery_id"]])[data["lottery_id"]]
    prize = prizes[draw_slot(prizes, random_bp() if r is None else r)]
    nothing = next(p for p in prizes if p.kind is PrizeKind.NOTHING)
    reward = _usable_reward(conn, shop_id, prize) if prize.kind in REWARD_KIND_OF else None
    if prize.kind in REWARD_KIND_OF and reward is None:
        prize = nothing
    if not _take_prize(conn, shop_id, data["lottery_id"], prize) and prize is not nothing:
        prize, reward = nothing, None
        _take_prize(conn, shop_id, data["lottery_id"], prize)
    coupon_ids: list[str] = []
    if prize.kind is PrizeKind.COUPON and reward is not None:
        coupon_ids = issue_coupons(service, uow, reward, data["member_id"], source=CouponSource.LOTTERY,
                                   source_reference=draw_id, quantity=1, now=now)
    conn.execute(update(lottery_draws).where(d.shop_id == shop_id, d.draw_id == draw_id).values(
        prize_id=prize.prize_id, prize_name=prize.name, prize_kind=int(prize.kind), points=prize.points,
        reward_id=prize.reward_id, stock_taken=not prize.unlimited_stock, coupon_ids=json.dumps(coupon_ids),
        points_credited=prize.kind is not PrizeKind.POINTS))
    return {"prize_kind": int(prize.kind), "points": prize.points}


def void(uow: UnitOfWork, shop_id: str, draw_id: str, reason: str) -> None:
    """Undoes a drawn draw whose points were never captured (once: the state claims it): its
    stock back, its win uncounted, its coupon revoked unless used already, the draw FAILED."""
    d, c = lottery_draws.c, lottery_prizes.c
    if not uow.conn.execute(update(lottery_draws).where(d.shop_id == shop_id, d.draw_id == draw_id,
                                                        d.state == int(DrawState.COMPLETED))
                            .values(state=int(DrawState.FAILED), failure_reason=reason,
                                    updated_at=utcnow())).rowcount:
        return
    row = uow.conn.execute(select(lottery_draws).where(d.shop_id == shop_id, d.draw_id == draw_id)).one()
    where = (c.shop_id == shop_id, c.lottery_id == row.lottery_id, c.prize_id == row.prize_id, c.won >= 1)
    values: dict[str, Any] = {"won": c.won - 1}
    if row.stock_taken:
        values["stock"] = c.stock + 1
    uow.conn.execute(update(lottery_prizes).where(*where).values(**values))
    uow.conn.execute(update(coupons).where(
        coupons.c.shop_id == shop_id, coupons.c.source == int(CouponSource.LOTTERY),
        coupons.c.source_reference == draw_id, coupons.c.state == int(CouponState.UNUSED))
        .values(state=int(CouponState.REVOKED), updated_at=utcnow()))


def fail(uow: UnitOfWork, shop_id: str, data: dict[str, Any], reason: str) -> None:
    """A draw refused before it was drawn FAILS with the reason; a free draw of the month is
    given back."""
    d = lottery_draws.c
    if not uow.conn.execute(update(lottery_draws).where(d.shop_id == shop_id, d.draw_id == data["draw_id"],
                                                        d.state == int(DrawState.PENDING))
                            .values(state=int(DrawState.FAILED), failure_reason=reason,
                                    updated_at=utcnow())).rowcount:
        return
    if data["free"]:
        c = lottery_chances.c
        uow.conn.execute(update(lottery_chances).where(
            c.shop_id == shop_id, c.lottery_id == data["lottery_id"], c.member_id == data["member_id"],
            c.period == data["month"], c.used >= 1).values(used=c.used - 1))


# ----- the steps ---------------------------------------------------------------------------------------


class DrawSteps:
    """The steps and compensations of the draw sagas, bound to the service."""

    def __init__(self, service: RewardsService):
        self.service = service

    def open(self, ctx: SagaContext) -> None:
        """Nothing to do: the row was written with the saga. Its compensation runs last."""

    def fail(self, ctx: SagaContext) -> None:
        reason = ctx.data.get(REFUSAL, {}).get("reason") or reasons.DRAW_ABORTED
        self.service.db.transact(lambda uow: fail(uow, ctx.shop_id, ctx.data, reason))

    def _hold_request(self, ctx: SagaContext) -> pp.HoldRequest:
        return pp.HoldRequest(request_id=ctx.request_id(), shop_id=ctx.shop_id, member_id=ctx.data["member_id"],
                              points=ctx.data["cost_points"],
                              source=pp.Source(reference=f"lottery:{ctx.data['lottery_id']}/{ctx.data['draw_id']}",
                                               reason="lottery draw"))

    def hold(self, ctx: SagaContext) -> dict[str, Any]:
        return {"hold_id": self.service.points.Hold(self._hold_request(ctx)).hold_id}

    def release(self, ctx: SagaContext) -> None:
        """Releases the hold: also one whose answer was never recorded (asked again with the same
        request id, which points answers rather than repeats), none if it was refused."""
        hold_id = ctx.data.get("hold_id")
        if hold_id is None:
            try:
                hold_id = self.service.points.Hold(self._hold_request(ctx)).hold_id
            except (FailedPrecondition, NotFound):
                return  # refused: nothing is held
        self.service.points.ReleaseHold(pp.ReleaseHoldRequest(request_id=ctx.request_id("release"),
                                                              shop_id=ctx.shop_id, hold_id=hold_id))

    def draw(self, ctx: SagaContext) -> dict[str, Any]:
        return self.service.db.transact(lambda uow: draw(self.service, uow, ctx.shop_id, ctx.data))

    def void(self, ctx: SagaContext) -> None:
        """Undoes the draw unless its points were captured: a paid draw stands then (its points
        prize, if points never took it, stays uncredited for an operator to see)."""
        if ctx.data.get("captured"):
            return
        reason = ctx.data.get(REFUSAL, {}).get("reason") or reasons.DRAW_ABORTED
        self.service.db.transact(lambda uow: void(uow, ctx.shop_id, ctx.data["draw_id"], reason))

    def capture(self, ctx: SagaContext) -> dict[str, Any]:
        self.service.points.CaptureHold(pp.CaptureHoldRequest(request_id=ctx.request_id(), shop_id=ctx.shop_id,
                                                              hold_id=ctx.data["hold_id"]))
        return {"captured": True}

    def credit(self, ctx: SagaContext) -> None:
        """A POINTS prize through points' Earn, idempotent by the draw id. Points refusing it (the
        member left meanwhile) ends the matter: the draw stands, uncredited; a member points has
        not heard of yet is an accident, tried again."""
        if ctx.data["prize_kind"] != int(PrizeKind.POINTS):
            return
        try:
            self.service.points.Earn(pp.EarnRequest(
                request_id=f"rewards-{ctx.data['draw_id']}", shop_id=ctx.shop_id, member_id=ctx.data["member_id"],
                points=ctx.data["points"], source=pp.Source(reference=f"lottery:{ctx.data['draw_id']}",
                                                            reason="lottery prize")))
        except NotFound as exc:
            raise RuntimeError(f"points has not heard of member {ctx.data['member_id']} yet") from exc
        except FailedPrecondition:
            return
        d = lottery_draws.c
        self.service.db.transact(lambda uow: uow.conn.execute(update(lottery_draws).where(
            d.shop_id == ctx.shop_id, d.draw_id == ctx.data["draw_id"]).values(points_credited=True)))


def saga_definitions(service: RewardsService) -> list[SagaDefinition]:
    s = DrawSteps(service)
    return [SagaDefinition(KIND_PAID, [Step("open", s.open, s.fail), Step("hold", s.hold, s.release),
                                       Step("draw", s.draw, s.void), Step("capture", s.capture),
                                       Step("credit", s.credit)]),
            SagaDefinition(KIND_FREE, [Step("open", s.open, s.fail), Step("draw", s.draw, s.void),
                                       Step("credit", s.credit)])]


# ----- reads --------------------------------------------------------------------------------------------


def _row_to_draw(row: Row) -> DrawView:
    return DrawView(shop_id=row.shop_id, draw_id=row.draw_id, lottery_id=row.lottery_id, member_id=row.member_id,
                    state=DrawState(row.state), free=row.free, cost_points=row.cost_points, prize_id=row.prize_id,
                    prize_name=row.prize_name, prize_kind=row.prize_kind, points=row.points,
                    reward_id=row.reward_id, coupon_ids=tuple(json.loads(row.coupon_ids)),
                    points_credited=row.points_credited, shipped=row.shipped, failure_reason=row.failure_reason,
                    created_at=row.created_at, drawn_at=row.drawn_at)


def get_draw(conn: Connection, shop_id: str, draw_id: str) -> DrawView:
    row = conn.execute(select(lottery_draws).where(lottery_draws.c.shop_id == shop_id,
                                                   lottery_draws.c.draw_id == draw_id)).first()
    if row is None:
        raise NotFound(f"no draw {draw_id} in shop {shop_id}", reason=reasons.DRAW_NOT_FOUND,
                       metadata={"draw_id": draw_id})
    return _row_to_draw(row)


def list_draws(service: RewardsService, query: commands.ListDraws) -> list[DrawView]:
    """The member's draws, newest first; refused ones (nothing drawn) are left out."""
    d = lottery_draws.c
    select_ = select(lottery_draws).where(d.shop_id == query.shop_id, d.member_id == query.member_id,
                                          d.state != int(DrawState.FAILED))
    if query.lottery_id:
        select_ = select_.where(d.lottery_id == query.lottery_id)
    if query.before is not None:
        at, draw_id = datetime.fromisoformat(query.before[0]), query.before[1]
        select_ = select_.where(tuple_(d.created_at, d.draw_id) < tuple_(at, draw_id))
    return service.db.read(lambda conn: [_row_to_draw(r) for r in conn.execute(
        select_.order_by(d.created_at.desc(), d.draw_id.desc()).limit(query.limit)).all()])
