"""Segments under test: its API with a shop's key, and members whose facts are made for real
(membership and points calls whose events segments hears), waited for until segments knows them."""

from __future__ import annotations

from collections.abc import Callable

from loyalty.segments.v1 import rules_pb2
from loyalty.segments.v1 import segments_service_pb2 as spb
from loyalty.segments.v1 import segments_service_pb2_grpc as sgrpc

from tests.support.builders import eventually
from tests.support.services import Authed, ServiceUnderTest, Shop


def segments_api(segments: ServiceUnderTest, shop: Shop) -> Authed:
    return Authed(sgrpc.SegmentsServiceStub(segments.channel), shop.key)


def facts_of(api: Authed, shop: Shop, member_id: str) -> rules_pb2.MemberFacts:
    return api.GetMemberFacts(spb.GetMemberFactsRequest(shop_id=shop.shop_id, member_id=member_id))


def facts_when(api: Authed, shop: Shop, member_id: str, done: Callable[[rules_pb2.MemberFacts], bool],
               what: str, timeout: float = 30.0) -> rules_pb2.MemberFacts:
    """The member's facts once `done` holds for them (segments hears events asynchronously)."""
    return eventually(lambda: (lambda f: f if done(f) else None)(facts_of(api, shop, member_id)), what,
                      timeout=timeout)
