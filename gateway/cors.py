"""CORS: each shop lists its storefront origins (membership's program, `storefront_origins`);
a browser page of another origin can neither read the gateway's answers nor act with a buyer
token it got hold of.

The shop of a browser request is the one its query names (`?shop_id=`: the widget and the member
centre send it, so preflights carry it too), else the one of its buyer token. Then:
- a preflight (OPTIONS with Origin and Access-Control-Request-Method) from a listed origin gets
  204 with the allow headers; from any other origin, or naming no shop, 403 ORIGIN_NOT_ALLOWED;
- a request with an Origin listed for its shop gets Access-Control-Allow-Origin (that origin);
  one with an Origin not listed is refused, 403 ORIGIN_NOT_ALLOWED, before it reaches a route;
- the gateway's own pages (an Origin whose host is the request's Host) and requests without an
  Origin (servers, curl) are not cross-origin: they pass as they are.
The lists are read with membership's GetProgram and kept a few seconds in the process, so an
operator's change reaches every gateway within that time."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import parse_qs

from fastapi import FastAPI
from loyalty.membership.v1 import membership_service_pb2 as mpb
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.problems import Problem
from services.kit.auth import SHOP_ID_PATTERN

ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE"
ALLOW_HEADERS = "authorization, content-type, idempotency-key"
EXPOSE_HEADERS = "retry-after"
MAX_AGE_SECONDS = 600  # how long a browser may keep a preflight's answer
ORIGINS_TTL_SECONDS = 5.0
MAX_SHOPS_KEPT = 10_000

NOT_ALLOWED = "ORIGIN_NOT_ALLOWED"


class ShopOrigins:
    """Each shop's storefront origins, read from membership and kept `ttl` seconds."""

    def __init__(self, ttl: float = ORIGINS_TTL_SECONDS):
        self.ttl = ttl
        self._kept: dict[str, tuple[float, frozenset[str]]] = {}
        self._reading: dict[str, asyncio.Future[frozenset[str]]] = {}

    async def of(self, app: FastAPI, shop_id: str) -> frozenset[str]:
        """The shop's origins (lower case); none for a shop without a program. Concurrent requests
        of one shop share one read."""
        kept = self._kept.get(shop_id)
        if kept is not None and kept[0] > time.monotonic():
            return kept[1]
        reading = self._reading.get(shop_id)
        if reading is None:
            reading = asyncio.ensure_future(self._read(app, shop_id))
            self._reading[shop_id] = reading
            reading.add_done_callback(lambda _: self._reading.pop(shop_id, None))
        return await asyncio.shield(reading)

    async def _read(self, app: FastAPI, shop_id: str) -> frozenset[str]:
        up = app.state.upstreams
        try:
            program = await up.call(up.membership.GetProgram, mpb.GetProgramRequest(shop_id=shop_id), shop_id)
            origins = frozenset(origin.lower() for origin in program.storefront_origins)
        except Problem as problem:
            if problem.status != 404:  # membership does not answer: decide nothing, keep nothing
                raise
            origins = frozenset()
        if len(self._kept) >= MAX_SHOPS_KEPT:
            self._kept.clear()
        self._kept[shop_id] = (time.monotonic() + self.ttl, origins)
        return origins


class CorsMiddleware:
    """The per-shop CORS decision, as plain ASGI (it sits in front of every request)."""

    def __init__(self, app: ASGIApp, origins: ShopOrigins | None = None):
        self.app = app
        self.origins = origins or ShopOrigins()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None or _same_origin(origin, headers.get("host", "")):
            await self.app(scope, receive, send)
            return
        preflight = scope["method"] == "OPTIONS" and "access-control-request-method" in headers
        shop_id = _named_shop(scope) or (None if preflight else _token_shop(scope, headers))
        if shop_id is None:
            if preflight:
                await _refuse(scope, send, "a preflight names its shop: add ?shop_id= to the URL")
            else:  # not a storefront request (no shop, no buyer token): the browser gets no CORS headers
                await self.app(scope, receive, send)
            return
        try:
            allowed = origin.lower() in await self.origins.of(scope["app"], shop_id)
        except Problem as problem:
            await problem.response(scope["path"])(scope, receive, send)
            return
        if not allowed:
            await _refuse(scope, send, f"the origin {origin[:100]} is not one of the shop's storefront origins")
            return
        if preflight:
            await _send_preflight(send, origin)
            return

        async def send_allowed(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer = MutableHeaders(scope=message)
                answer["access-control-allow-origin"] = origin
                answer["access-control-expose-headers"] = EXPOSE_HEADERS
                answer.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, send_allowed)


def _same_origin(origin: str, host: str) -> bool:
    """The gateway's own pages: the Origin's host and port are the ones the request was sent to."""
    _, _, netloc = origin.partition("://")
    return bool(host) and netloc.lower() == host.lower()


def _named_shop(scope: Scope) -> str | None:
    query = scope.get("query_string", b"")
    if b"shop_id=" not in query:
        return None
    values = parse_qs(query.decode("latin-1")).get("shop_id")
    return values[0] if values and SHOP_ID_PATTERN.fullmatch(values[0]) else None


def _token_shop(scope: Scope, headers: Headers) -> str | None:
    """The shop of the request's buyer token, when it carries a valid one."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        return scope["app"].state.tokens.verify(token.strip()).shop_id
    except Problem:
        return None


async def _refuse(scope: Scope, send: Send, detail: str) -> None:
    problem = Problem(403, detail, reason=NOT_ALLOWED, headers={"vary": "Origin"})
    await problem.response(scope["path"])(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send_preflight(send: Send, origin: str) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-methods", ALLOW_METHODS.encode()),
        (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
        (b"access-control-max-age", str(MAX_AGE_SECONDS).encode()),
        (b"vary", b"Origin"),
    ]})
    await send({"type": "http.response.body", "body": b""})


def install(app: FastAPI) -> None:
    """Adds the per-shop CORS decision in front of every route."""
    app.add_middleware(CorsMiddleware)
