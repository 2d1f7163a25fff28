"""The wallet RPCs of RewardsApi (卡券包): IssueCoupons, ListCoupons, UseCoupon, ReleaseCoupon and
ExpireCoupons. Requests to commands, handlers in the kit's idempotent unit of work, coupons to
protos."""

from __future__ import annotations

from datetime import datetime

import grpc
from loyalty.rewards.v1 import rewards_service_pb2 as pb

from services.kit import paging
from services.kit.auth import current_principal
from services.kit.errors import InvalidArgument, enum_value
from services.kit.idempotency import idempotent_call, require_request_id
from services.kit.storage import UnitOfWork
from services.kit.timeutil import to_timestamp, utcnow
from services.rewards import wallet
from services.rewards.commands import wallet as commands
from services.rewards.domain import CouponState
from services.rewards.service import RewardsService

PAGE_KIND = "coupons"


def coupon_to_proto(c: wallet.Coupon) -> pb.Coupon:
    return pb.Coupon(coupon_id=c.coupon_id, shop_id=c.shop_id, member_id=c.member_id, reward_id=c.reward_id,
                     name=c.name, face_value_fen=c.face_value_fen, threshold_fen=c.threshold_fen,
                     valid_from=to_timestamp(c.valid_from), valid_until=to_timestamp(c.valid_until),
                     state=int(c.state), source=int(c.source), source_reference=c.source_reference,
                     order_id=c.order_id, issue_time=to_timestamp(c.issued_at), use_time=to_timestamp(c.used_at))


def _after(shop_id: str, token: str) -> tuple[datetime, str] | None:
    """The (issued_at, coupon_id) a page token of this shop's wallets stands for."""
    after = paging.decode_token(PAGE_KIND, shop_id, token, str, size=2)
    if after is None:
        return None
    try:
        return datetime.fromisoformat(after[0]), after[1]
    except ValueError as exc:
        raise InvalidArgument([("page_token", "not a token this list returned")]) from exc


class WalletApi:
    service: RewardsService

    def IssueCoupons(self, request: pb.IssueCouponsRequest, context: grpc.ServicerContext) -> pb.IssueCouponsResponse:
        cmd = commands.IssueCoupons(request.shop_id, request.reward_id, tuple(request.member_ids), request.request_id)
        require_request_id(request)

        def work(uow: UnitOfWork) -> pb.IssueCouponsResponse:
            done = wallet.issue_to_members(self.service, uow, cmd, utcnow())
            return pb.IssueCouponsResponse(issued=len(done.coupons), skipped_member_ids=done.skipped_member_ids,
                                           coupons=[coupon_to_proto(c) for c in done.coupons])

        return idempotent_call(self.service.db, request, "IssueCoupons", pb.IssueCouponsResponse, work)

    def ListCoupons(self, request: pb.ListCouponsRequest, context: grpc.ServicerContext) -> pb.ListCouponsResponse:
        limit = paging.page_size(request.page_size)
        state = enum_value(CouponState, request.state, "state") if request.state else None
        query = commands.CouponsQuery(request.shop_id, request.member_id, state, limit + 1,
                                      _after(request.shop_id, request.page_token))
        found = wallet.list_coupons(self.service, query, utcnow())
        token = paging.next_page_token(PAGE_KIND, request.shop_id, found, limit,
                                       lambda c: [c.issued_at.isoformat(), c.coupon_id])
        return pb.ListCouponsResponse(coupons=[coupon_to_proto(c) for c in found[:limit]], next_page_token=token)

    def UseCoupon(self, request: pb.UseCouponRequest, context: grpc.ServicerContext) -> pb.Coupon:
        cmd = commands.UseCoupon(request.shop_id, request.coupon_id, request.order_id, request.order_amount_fen)
        require_request_id(request)
        return idempotent_call(self.service.db, request, "UseCoupon", pb.Coupon,
                               lambda uow: coupon_to_proto(wallet.use_coupon(self.service, uow, cmd, utcnow())))

    def ReleaseCoupon(self, request: pb.ReleaseCouponRequest, context: grpc.ServicerContext) -> pb.Coupon:
        cmd = commands.ReleaseCoupon(request.shop_id, request.coupon_id, request.order_id)
        require_request_id(request)
        return idempotent_call(self.service.db, request, "ReleaseCoupon", pb.Coupon,
                               lambda uow: coupon_to_proto(wallet.release_coupon(self.service, uow, cmd, utcnow())))

    def ExpireCoupons(self, request: pb.ExpireCouponsRequest,
                      context: grpc.ServicerContext) -> pb.ExpireCouponsResponse:
        require_request_id(request)
        if not request.shop_id:
            principal = current_principal()
            if principal is None or not principal.is_admin:
                raise InvalidArgument([("shop_id", "required (only the admin key expires every shop at once)")])
            # One transaction per shop, so no single record: a retry finds nothing more to expire.
            return pb.ExpireCouponsResponse(expired=wallet.expire_all(self.service))
        cmd = commands.ExpireShopCoupons(request.shop_id, utcnow())
        return idempotent_call(self.service.db, request, "ExpireCoupons", pb.ExpireCouponsResponse,
                               lambda uow: pb.ExpireCouponsResponse(expired=wallet.expire_shop(self.service, uow, cmd)))
