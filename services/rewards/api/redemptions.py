"""The redemptions RPCs of RewardsApi. Redeem, ConfirmPayment and CancelRedemption run their
idempotent part (checks, the state change and its saga's record) in the kit's idempotent unit of
work, whose stored answer is only the redemption's id; the saga is then driven (by the call that
recorded it), and every answer — a retry's too — is read from the redemption row as it is now."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from loyalty.rewards.v1 import rewards_service_pb2 as pb

from services.kit import paging
from services.kit.errors import FailedPrecondition, enum_value
from services.kit.idempotency import idempotent_call, require_request_id
from services.kit.storage import UnitOfWork
from services.kit.timeutil import to_timestamp, utcnow
from services.rewards import payments, redeeming, redemptions
from services.rewards.commands import redemptions as commands
from services.rewards.domain import RedemptionState
from services.rewards.redemptions import RedemptionView
from services.rewards.service import RewardsService

LIST_KIND = "redemptions"


def redemption_to_proto(v: RedemptionView) -> pb.Redemption:
    return pb.Redemption(
        redemption_id=v.redemption_id, shop_id=v.shop_id, member_id=v.member_id, reward_id=v.reward_id,
        kind=int(v.kind), quantity=v.quantity, points=v.points, cash_fen=v.cash_fen, state=int(v.state),
        failure_reason=v.failure_reason, payment_reference=v.payment_reference,
        payment_deadline=to_timestamp(v.payment_deadline), coupon_ids=list(v.coupon_ids), shipped=v.shipped,
        create_time=to_timestamp(v.created_at), complete_time=to_timestamp(v.completed_at),
        cancel_reason=v.cancel_reason, ship_time=to_timestamp(v.shipped_at), shipment_reference=v.shipment_reference)


class RedemptionsApi:
    service: RewardsService

    def _settle(self, request: object, method: str, change: Callable[[UnitOfWork], tuple[str, str | None]]
                ) -> pb.Redemption:
        """Runs `change` (returning the redemption's id and the saga it recorded) once per
        request_id, drives that saga if this call recorded it, and answers from the row: a
        redemption that FAILED is FAILED_PRECONDITION with its reason."""
        recorded: list[str] = []

        def work(uow: UnitOfWork) -> pb.Redemption:
            redemption_id, saga_id = change(uow)
            if saga_id is not None:
                uow.after_commit(lambda: recorded.append(saga_id))
            return pb.Redemption(redemption_id=redemption_id)

        accepted = idempotent_call(self.service.db, request, method, pb.Redemption, work)
        assert self.service.sagas is not None
        for saga_id in recorded:
            self.service.sagas.run(saga_id)
        shop_id: str = request.shop_id  # type: ignore[attr-defined]
        view = self.service.db.read(lambda conn: redemptions.get(conn, shop_id, accepted.redemption_id))
        if view.state is RedemptionState.FAILED:
            raise FailedPrecondition(f"redemption {view.redemption_id} failed: {view.failure_reason}",
                                     reason=view.failure_reason, subject=f"redemption/{view.redemption_id}",
                                     metadata={"redemption_id": view.redemption_id})
        return redemption_to_proto(view)

    def ValidateRedemption(self, request: pb.ValidateRedemptionRequest,
                           context: grpc.ServicerContext) -> pb.ValidateRedemptionResponse:
        cmd = commands.validate(request.shop_id, request.member_id, request.reward_id, request.quantity)
        why, cost = redeeming.validate(self.service, cmd, utcnow())
        return pb.ValidateRedemptionResponse(redeemable=not why, unavailable_reasons=why, points=cost.points,
                                             cash_fen=cost.cash_fen)

    def Redeem(self, request: pb.RedeemRequest, context: grpc.ServicerContext) -> pb.Redemption:
        cmd = commands.redeem(request.shop_id, request.request_id, request.member_id, request.reward_id,
                              request.quantity)
        return self._settle(request, "Redeem", lambda uow: redeeming.accept(self.service, uow, cmd, utcnow()))

    def ConfirmPayment(self, request: pb.ConfirmPaymentRequest, context: grpc.ServicerContext) -> pb.Redemption:
        cmd = commands.ConfirmPayment(request.shop_id, request.redemption_id, request.payment_reference)
        return self._settle(request, "ConfirmPayment", lambda uow: (
            cmd.redemption_id, payments.confirm(self.service, uow, cmd, utcnow())))

    def CancelRedemption(self, request: pb.CancelRedemptionRequest,
                         context: grpc.ServicerContext) -> pb.Redemption:
        cmd = commands.CancelRedemption(request.shop_id, request.redemption_id, request.reason, request.operator)
        return self._settle(request, "CancelRedemption", lambda uow: (
            cmd.redemption_id, payments.cancel(self.service, uow, cmd)))

    def ShipRedemption(self, request: pb.ShipRedemptionRequest, context: grpc.ServicerContext) -> pb.Redemption:
        require_request_id(request)
        cmd = commands.ShipRedemption(request.shop_id, request.redemption_id, request.shipment_reference)

        def work(uow: UnitOfWork) -> tuple[str, None]:
            payments.ship(self.service, uow, cmd, utcnow())
            return cmd.redemption_id, None

        return self._settle(request, "ShipRedemption", work)

    def GetRedemption(self, request: pb.GetRedemptionRequest, context: grpc.ServicerContext) -> pb.Redemption:
        query = commands.GetRedemption(request.shop_id, request.redemption_id)
        return redemption_to_proto(self.service.db.read(
            lambda conn: redemptions.get(conn, query.shop_id, query.redemption_id)))

    def ListRedemptions(self, request: pb.ListRedemptionsRequest,
                        context: grpc.ServicerContext) -> pb.ListRedemptionsResponse:
        limit = paging.page_size(request.page_size)
        after = paging.decode_token(LIST_KIND, request.shop_id, request.page_token, str, size=2)
        state = enum_value(RedemptionState, request.state, "state") if request.state else None
        query = commands.ListRedemptions(request.shop_id, request.member_id, request.reward_id, state, limit + 1,
                                         (after[0], after[1]) if after else None)
        found = self.service.db.read(lambda conn: redemptions.page(conn, query))
        token = paging.next_page_token(LIST_KIND, request.shop_id, found, limit,
                                       lambda v: [v.created_at.isoformat(), v.redemption_id])
        return pb.ListRedemptionsResponse(redemptions=[redemption_to_proto(v) for v in found[:limit]],
                                          next_page_token=token)
