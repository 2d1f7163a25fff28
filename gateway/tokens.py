"""Buyer tokens: a shop's own backend asks for one with its shop key (POST /v1/buyer-tokens); the
token (a JWT, HS256 with LOYALTY_GATEWAY_TOKEN_KEY, minutes long) names the shop and the buyer,
and the facts about the buyer the shop vouches for (follows the shop, trades it knows of). Every
storefront endpoint acts for that buyer in that shop only: the shop and buyer come from the
token, never from the request."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Annotated

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.problems import Problem
from services.kit.auth import KeyRing
from services.kit.errors import ServiceError

ISSUER = "loyalty-gateway"
AUDIENCE = "loyalty-storefront"
ALGORITHM = "HS256"
MAX_TTL_SECONDS = 3600
LEEWAY_SECONDS = 5
VERIFIED_KEPT = 50_000  # tokens remembered as verified (a page view's widget sends the same token again and again)


@dataclass(frozen=True)
class Buyer:
    """Who a storefront call acts for, as the shop's backend vouched for them."""

    shop_id: str
    buyer_id: str
    follows_shop: bool = False
    completed_trades: int = 0
    spent_fen: int = 0


class TokenSigner:
    def __init__(self, key: bytes, ttl_seconds: int):
        self._key, self.ttl_seconds = key, ttl_seconds
        # Tokens verified already, with when they stop being accepted: a token is checked once,
        # not on every request it comes with (it cannot change; expiry is still checked each time).
        self._verified: dict[str, tuple[Buyer, float]] = {}

    def issue(self, buyer: Buyer, ttl_seconds: int | None = None) -> tuple[str, int]:
        """A token for `buyer`, and when it expires (epoch seconds)."""
        now = int(time.time())
        expires = now + min(ttl_seconds or self.ttl_seconds, MAX_TTL_SECONDS)
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": buyer.buyer_id, "shop": buyer.shop_id, "iat": now,
                  "exp": expires, "jti": uuid.uuid4().hex,
                  "facts": {"follows": buyer.follows_shop, "trades": buyer.completed_trades,
                            "spent_fen": buyer.spent_fen}}
        return jwt.encode(claims, self._key, algorithm=ALGORITHM), expires

    def verify(self, token: str) -> Buyer:
        known = self._verified.get(token)
        if known is not None:
            if time.time() < known[1]:
                return known[0]
            del self._verified[token]
        buyer, expires = self._verify(token)
        if len(self._verified) >= VERIFIED_KEPT:
            self._verified.clear()
        self._verified[token] = (buyer, expires + LEEWAY_SECONDS)
        return buyer

    def _verify(self, token: str) -> tuple[Buyer, float]:
        try:
            claims = jwt.decode(token, self._key, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
                                leeway=LEEWAY_SECONDS, options={"require": ["exp", "iat", "sub", "shop"]})
        except jwt.ExpiredSignatureError as exc:
            raise _unauthenticated("the buyer token has expired: ask the shop for a new one", "TOKEN_EXPIRED") from exc
        except jwt.PyJWTError as exc:
            raise _unauthenticated("invalid buyer token", "INVALID_TOKEN") from exc
        facts = claims.get("facts") if isinstance(claims.get("facts"), dict) else {}
        shop, sub = claims["shop"], claims["sub"]
        if not (isinstance(shop, str) and isinstance(sub, str) and shop and sub):
            raise _unauthenticated("invalid buyer token", "INVALID_TOKEN")
        return Buyer(shop, sub, follows_shop=facts.get("follows") is True, completed_trades=_count(facts.get("trades")),
                     spent_fen=_count(facts.get("spent_fen"))), float(claims["exp"])


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**62 else 0


def _unauthenticated(detail: str, reason: str) -> Problem:
    return Problem(401, detail, reason=reason, headers={"WWW-Authenticate": 'Bearer realm="storefront"'})


_buyer_bearer = HTTPBearer(auto_error=False, scheme_name="BuyerToken",
                           description="A buyer token from POST /v1/buyer-tokens.")
_shop_bearer = HTTPBearer(auto_error=False, scheme_name="ShopKey",
                          description="The shop's API key (as for the gRPC services).")


async def current_buyer(request: Request,
                        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_buyer_bearer)]) -> Buyer:
    """The buyer a storefront request acts for. A request may also name its shop (`shop_id` in the
    query, as the widget does so that CORS can be decided before the token is seen): it must be
    the token's."""
    if credentials is None:
        raise _unauthenticated("send 'Authorization: Bearer <buyer token>'", "MISSING_CREDENTIALS")
    buyer = request.app.state.tokens.verify(credentials.credentials)
    named = request.query_params.get("shop_id")
    if named is not None and named != buyer.shop_id:
        raise Problem(403, "the buyer token belongs to another shop", reason="SHOP_MISMATCH")
    limiter = request.app.state.limiter
    if limiter is not None:
        await limiter.check(buyer.shop_id, buyer.buyer_id)
    request.state.buyer = buyer
    return buyer


async def current_shop(request: Request,
                       credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_shop_bearer)]) -> str:
    """The shop whose key signed the request (the shop's own backend asking for buyer tokens)."""
    if credentials is None:
        raise _unauthenticated("send 'Authorization: Bearer <shop API key>'", "MISSING_CREDENTIALS")
    keyring: KeyRing = request.app.state.keyring
    try:
        principal = keyring.authenticate(credentials.credentials)
    except ServiceError as exc:
        raise _unauthenticated(str(exc), exc.reason) from exc
    if principal.shop_id is None:
        raise Problem(403, "buyer tokens are asked for with a shop key", reason="SHOP_KEY_REQUIRED")
    limiter = request.app.state.limiter
    if limiter is not None:
        await limiter.check(principal.shop_id, None)
    return principal.shop_id


# What a route takes to act for the token's buyer, or for the shop whose key signed the request.
CurrentBuyer = Annotated[Buyer, Depends(current_buyer)]
CurrentShop = Annotated[str, Depends(current_shop)]
