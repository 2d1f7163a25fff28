"""The lottery RPCs of RewardsApi: CreateLottery, GetLottery, UpdateLottery, ListLotteries, Draw,
ListDraws. Draw runs its idempotent part (checks, a free draw taken, the draw row and its saga's
record) in the kit's idempotent unit of work, whose stored answer is only the draw's id; the saga
is then driven by the call that recorded it, and every answer — a retry's too — is read from the
draw row as it is now."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from loyalty.rewards.v1 import lottery_pb2 as lpb

from services.kit import paging
from services.kit.errors import FailedPrecondition, enum_value
from services.kit.idempotency import idempotent_call, require_request_id
from services.kit.storage import UnitOfWork
from services.kit.timeutil import from_timestamp, to_timestamp, utcnow
from services.kit.validation import mask_paths, require_shop
from services.rewards import lottery, lottery_admin
from services.rewards.commands import lottery as commands
from services.rewards.lottery_domain import DrawState, Lottery, LotteryStyle, Prize, PrizeKind, with_defaults
from services.rewards.service import RewardsService


def prize_to_proto(p: Prize) -> lpb.Prize:
    return lpb.Prize(prize_id=p.prize_id, name=p.name, kind=int(p.kind), points=p.points, reward_id=p.reward_id,
                     probability_bp=p.probability_bp, unlimited_stock=p.unlimited_stock, stock=p.stock, won=p.won)


def lottery_to_proto(t: Lottery) -> lpb.Lottery:
    return lpb.Lottery(lottery_id=t.lottery_id, shop_id=t.shop_id, name=t.name, style=int(t.style),
                       enabled=t.enabled, start_time=to_timestamp(t.start_at), end_time=to_timestamp(t.end_at),
                       cost_points=t.cost_points, free_draws_per_month=t.free_draws_per_month,
                       free_draw_tier_levels=list(t.free_draw_tier_levels),
                       prizes=[prize_to_proto(p) for p in t.prizes], create_time=to_timestamp(t.created_at),
                       update_time=to_timestamp(t.updated_at))


def draw_to_proto(v: lottery.DrawView) -> lpb.LotteryDraw:
    return lpb.LotteryDraw(draw_id=v.draw_id, shop_id=v.shop_id, lottery_id=v.lottery_id, member_id=v.member_id,
                           state=int(v.state), free=v.free, cost_points=v.cost_points, prize_id=v.prize_id,
                           prize_name=v.prize_name, prize_kind=v.prize_kind, points=v.points, reward_id=v.reward_id,
                           coupon_ids=list(v.coupon_ids), points_credited=v.points_credited, shipped=v.shipped,
                           failure_reason=v.failure_reason, draw_time=to_timestamp(v.drawn_at or v.created_at))


def _prizes(t: lpb.Lottery) -> tuple[Prize, ...]:
    return with_defaults([Prize(prize_id=p.prize_id, name=p.name,
                                kind=enum_value(PrizeKind, p.kind, f"lottery.prizes[{i}].kind"),
                                probability_bp=p.probability_bp, points=p.points, reward_id=p.reward_id,
                                unlimited_stock=p.unlimited_stock, stock=p.stock)
                          for i, p in enumerate(t.prizes)])


def _readers(t: lpb.Lottery) -> dict[str, Callable[[], object]]:
    """How each settable field of a Lottery message reads as a Lottery's field."""
    return {
        "name": lambda: t.name,
        "style": lambda: enum_value(LotteryStyle, t.style, "lottery.style"),
        "enabled": lambda: t.enabled,
        "start_time": lambda: from_timestamp(t.start_time, field="lottery.start_time"),
        "end_time": lambda: from_timestamp(t.end_time, field="lottery.end_time"),
        "cost_points": lambda: t.cost_points,
        "free_draws_per_month": lambda: t.free_draws_per_month,
        "free_draw_tier_levels": lambda: tuple(t.free_draw_tier_levels),
        "prizes": lambda: _prizes(t),
    }


def lottery_from_proto(shop_id: str, t: lpb.Lottery) -> Lottery:
    read = {commands.FIELD_OF_PATH.get(path, path): reader() for path, reader in _readers(t).items()}
    return Lottery(shop_id=shop_id, lottery_id="", **read)  # type: ignore[arg-type]


class LotteryApi:
    service: RewardsService

    def CreateLottery(self, request: lpb.CreateLotteryRequest, context: grpc.ServicerContext) -> lpb.Lottery:
        require_request_id(request)
        cmd = commands.CreateLottery(request.shop_id, lottery_from_proto(request.shop_id, request.lottery))
        return idempotent_call(self.service.db, request, "CreateLottery", lpb.Lottery,
                               lambda uow: lottery_to_proto(lottery_admin.create_lottery(self.service, uow, cmd)))

    def GetLottery(self, request: lpb.GetLotteryRequest, context: grpc.ServicerContext) -> lpb.Lottery:
        query = commands.LotteryQuery(request.shop_id, request.lottery_id)
        return lottery_to_proto(self.service.db.read(
            lambda conn: lottery_admin.read_lottery(conn, query.shop_id, query.lottery_id)))

    def UpdateLottery(self, request: lpb.UpdateLotteryRequest, context: grpc.ServicerContext) -> lpb.Lottery:
        require_request_id(request)
        read = _readers(request.lottery)
        changes = {commands.FIELD_OF_PATH.get(path, path): read[path]()
                   for path in mask_paths(request.update_mask, commands.UPDATE_PATHS)}
        cmd = commands.UpdateLottery(request.shop_id, request.lottery.lottery_id, changes)
        return idempotent_call(self.service.db, request, "UpdateLottery", lpb.Lottery,
                               lambda uow: lottery_to_proto(lottery_admin.update_lottery(self.service, uow, cmd)))

    def ListLotteries(self, request: lpb.ListLotteriesRequest,
                      context: grpc.ServicerContext) -> lpb.ListLotteriesResponse:
        require_shop(request.shop_id)
        limit = paging.page_size(request.page_size)
        after = paging.decode_token("lotteries", request.shop_id, request.page_token)
        found = lottery_admin.list_lotteries(self.service, request.shop_id, limit + 1, after[0] if after else None)
        token = paging.next_page_token("lotteries", request.shop_id, found, limit, lambda t: [t.lottery_id])
        return lpb.ListLotteriesResponse(lotteries=[lottery_to_proto(t) for t in found[:limit]],
                                         next_page_token=token)

    def Draw(self, request: lpb.DrawRequest, context: grpc.ServicerContext) -> lpb.LotteryDraw:
        """A draw FAILED on the way (INSUFFICIENT_POINTS) is FAILED_PRECONDITION with its reason,
        for a retry of the same request too."""
        require_request_id(request)
        cmd = commands.Draw(request.shop_id, request.request_id, request.lottery_id, request.member_id)
        recorded: list[str] = []

        def work(uow: UnitOfWork) -> lpb.LotteryDraw:
            draw_id, saga_id = lottery.accept(self.service, uow, cmd, utcnow())
            uow.after_commit(lambda: recorded.append(saga_id))
            return lpb.LotteryDraw(draw_id=draw_id)

        accepted = idempotent_call(self.service.db, request, "Draw", lpb.LotteryDraw, work)
        assert self.service.sagas is not None
        for saga_id in recorded:
            self.service.sagas.run(saga_id)
        view = self.service.db.read(lambda conn: lottery.get_draw(conn, cmd.shop_id, accepted.draw_id))
        if view.state is DrawState.FAILED:
            raise FailedPrecondition(f"draw {view.draw_id} failed: {view.failure_reason}",
                                     reason=view.failure_reason, subject=f"draw/{view.draw_id}",
                                     metadata={"draw_id": view.draw_id})
        return draw_to_proto(view)

    def ListDraws(self, request: lpb.ListDrawsRequest, context: grpc.ServicerContext) -> lpb.ListDrawsResponse:
        limit = paging.page_size(request.page_size)
        before = paging.decode_token("draws", request.shop_id, request.page_token, str, 2)
        query = commands.ListDraws(request.shop_id, request.member_id, request.lottery_id, limit + 1,
                                   (before[0], before[1]) if before else None)
        found = lottery.list_draws(self.service, query)
        token = paging.next_page_token("draws", request.shop_id, found, limit,
                                       lambda v: [v.created_at.isoformat(), v.draw_id])
        return lpb.ListDrawsResponse(draws=[draw_to_proto(v) for v in found[:limit]], next_page_token=token)
