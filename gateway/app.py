"""The gateway's FastAPI application: routes, problem details, tracing, and what every request
shares (the services' stubs, the token signer, the rate limiter), made once per process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from gateway import cors, limits, problems, tracing
from gateway.routes import card, centre, centre_page, centre_rewards, health, pages, tokens
from gateway.tokens import TokenSigner
from gateway.upstream import Upstreams
from services.kit.auth import KeyRing
from services.kit.config import GatewaySettings


@dataclass(frozen=True)
class DemoStorefront:
    """The demo shop's page at / (the embedded default): its shop and two of its buyers."""

    shop_id: str
    member_buyer_id: str
    guest_buyer_id: str


def create_app(settings: GatewaySettings, *, demo: DemoStorefront | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.upstreams = Upstreams(settings.upstreams, settings.auth_secret,
                                        timeout=settings.call_timeout_seconds)
        try:
            yield
        finally:
            await app.state.upstreams.close()
            await app.state.limiter.close()

    app = FastAPI(
        title="Loyalty suite gateway", version="1",
        description="The storefront's member card and member centre, and buyer tokens, over the loyalty "
                    "suite's services. Errors are RFC 9457 problem details carrying the services' reasons.",
        lifespan=lifespan, docs_url="/docs", redoc_url=None, openapi_url="/openapi.json",
        telemetry=tracing.TELEMETRY)
    app.state.settings = settings
    app.state.tokens = TokenSigner(settings.token_key, settings.token_ttl_seconds)
    app.state.keyring = KeyRing("", settings.auth_secret)
    app.state.limiter = limits.build(settings)
    app.state.demo = demo
    problems.install(app)
    cors.install(app)
    for module in (health, tokens, card, centre, centre_rewards, centre_page, pages):
        app.include_router(module.router)
    return app
