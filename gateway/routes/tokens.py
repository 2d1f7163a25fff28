"""POST /v1/buyer-tokens: the shop's own backend, with its shop key, asks for a short-lived token
for one buyer, which it hands to the buyer's browser (the widget, the member centre)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from gateway.tokens import MAX_TTL_SECONDS, Buyer, CurrentShop

router = APIRouter(prefix="/v1", tags=["buyer tokens"])

ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"


class BuyerTokenRequest(BaseModel):
    buyer_id: str = Field(pattern=ID_PATTERN, description="The buyer's id on the marketplace.")
    follows_shop: bool = Field(False, description="The buyer follows the shop (a join threshold part).")
    completed_trades: int = Field(0, ge=0, le=1_000_000, description="Completed trades the shop knows of.")
    spent_fen: int = Field(0, ge=0, le=10**13, description="Spend on completed trades the shop knows of, in fen.")
    ttl_seconds: int | None = Field(None, ge=30, le=MAX_TTL_SECONDS, description="Default: the gateway's setting.")


class BuyerToken(BaseModel):
    token: str
    token_type: str = "Bearer"
    shop_id: str
    buyer_id: str
    expires_at: int = Field(description="Epoch seconds.")
    expires_in: int = Field(description="Seconds from now.")


@router.post("/buyer-tokens", response_model=BuyerToken, status_code=201,
             summary="A short-lived token for one buyer of the calling shop")
async def issue_buyer_token(body: BuyerTokenRequest, request: Request,
                            shop_id: CurrentShop) -> BuyerToken:
    signer = request.app.state.tokens
    buyer = Buyer(shop_id, body.buyer_id, body.follows_shop, body.completed_trades, body.spent_fen)
    token, expires_at = signer.issue(buyer, body.ttl_seconds)
    return BuyerToken(token=token, shop_id=shop_id, buyer_id=body.buyer_id, expires_at=expires_at,
                      expires_in=max(0, expires_at - int(time.time())))
