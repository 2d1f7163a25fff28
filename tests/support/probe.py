"""A buyer endpoint of the tests' own, added to a gateway under test: it takes the buyer token as
every storefront endpoint does (the same dependency, so the same rate limits and shop check) and
asks membership about the buyer, so that the gateway's edges (rate limits, CORS, tracing) are
checked apart from what the storefront endpoints answer."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from gateway import members
from gateway.server import RunningGateway
from gateway.tokens import CurrentBuyer

PATH = "/v1/test/probe"
router = APIRouter()


class Probe(BaseModel):
    shop_id: str
    buyer_id: str
    is_member: bool


@router.get(PATH, response_model=Probe)
@router.post(PATH, response_model=Probe)
async def probe(buyer: CurrentBuyer, request: Request) -> Probe:
    seen = await members.eligibility(request.app.state.upstreams, buyer)
    return Probe(shop_id=buyer.shop_id, buyer_id=buyer.buyer_id, is_member=seen.is_member)


def add_probe(running: RunningGateway) -> RunningGateway:
    """Routes are looked up on every request, so one added to a running gateway answers at once."""
    running.app.include_router(router)
    return running
