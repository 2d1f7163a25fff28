"""The gateway under test: started in a thread on a free port in front of the session's services
(their real gRPC servers), with the test secrets; an HTTP client; buyer tokens for a shop."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gateway.app import DemoStorefront
from gateway.server import RunningGateway, start_in_thread
from services.kit.config import GatewaySettings
from tests.support.services import AUTH_SECRET, Backend, ServiceUnderTest, Shop

TOKEN_KEY = b"test-gateway-token-key-of-32-bytes-at-least"


def gateway_settings(backend: Backend, services: dict[str, ServiceUnderTest], data_dir: Path,
                     **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = dict(
        host="127.0.0.1", port=0, workers=1, auth_secret=AUTH_SECRET, token_key=TOKEN_KEY, token_ttl_seconds=600,
        upstreams={name: service.address for name, service in services.items()},
        redis_url=backend.redis_url, shop_rate_per_second=10_000.0, buyer_rate_per_second=1_000.0,
        call_timeout_seconds=10.0, log_level="WARNING", access_log=False, trace_exporter="", data_dir=data_dir)
    values.update(overrides)
    return GatewaySettings(**values)


def start_gateway(settings: GatewaySettings, demo: DemoStorefront | None = None) -> RunningGateway:
    return start_in_thread(settings, demo=demo, port=0)


@dataclass
class Storefront:
    """HTTP calls to a running gateway, as a shop's backend and its buyers make them."""

    gateway: RunningGateway

    @property
    def url(self) -> str:
        return self.gateway.url

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def token(self, shop: Shop, buyer_id: str, **facts: Any) -> str:
        """A buyer token, asked for with the shop's key (as the shop's backend does)."""
        with self.client() as http:
            answer = http.post("/v1/buyer-tokens", json={"buyer_id": buyer_id, **facts},
                               headers={"authorization": f"Bearer {shop.key}"})
        assert answer.status_code == 201, answer.text
        return answer.json()["token"]

    def as_buyer(self, shop: Shop, buyer_id: str, **facts: Any) -> httpx.Client:
        """A client whose every request carries the buyer's token."""
        return self.client(headers={"authorization": f"Bearer {self.token(shop, buyer_id, **facts)}"})
