"""Rate limits over HTTP on both backends: a buyer over their limit gets 429 with Retry-After
while another buyer of the shop is still served; the shop's limit caps all its buyers and its
token requests; on the production backend two gateway processes share the limits through Redis;
and a rate-limit store that does not answer lets requests through rather than failing them.
The gateways here have bursts of a few requests refilled at one per 100 seconds, so that what
passes does not depend on how fast the test runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.backends import free_port
from tests.conftest import Authed, Backend, ServiceUnderTest, Shop, create_shop
from tests.support.gateway import Storefront, gateway_settings, start_gateway
from tests.support.probe import PATH, add_probe

SLOW = 0.01  # requests per second: nothing refills during a test
BUYER_BURST, SHOP_BURST = 3, 8


def start(backend: Backend, suite: dict[str, ServiceUnderTest], tmp: Path, **overrides: object) -> Storefront:
    settings = gateway_settings(backend, suite, tmp, buyer_rate_per_second=SLOW, buyer_burst=BUYER_BURST,
                                shop_rate_per_second=SLOW, shop_burst=SHOP_BURST, **overrides)
    return Storefront(add_probe(start_gateway(settings)))


@pytest.fixture(scope="module")
def gateways(backend: Backend, suite: dict[str, ServiceUnderTest],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Storefront]]:
    """Two gateways with low limits and the same settings (the same Redis on the production backend)."""
    running = [start(backend, suite, tmp_path_factory.mktemp("limited")) for _ in range(2)]
    yield running
    for storefront in running:
        storefront.gateway.stop()


def probe(storefront: Storefront, token: str) -> httpx.Response:
    with storefront.client() as http:
        return http.get(PATH, headers={"authorization": f"Bearer {token}"})


def assert_limited(answer: httpx.Response, reason: str) -> None:
    assert answer.status_code == 429, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["reason"] == reason
    assert 1 <= int(answer.headers["retry-after"]) <= 2 * SHOP_BURST / SLOW


def test_a_buyer_over_the_limit_waits_while_another_buyer_of_the_shop_is_served(
        gateways: list[Storefront], shop: Shop) -> None:
    gateway = gateways[0]
    first, second = gateway.token(shop, "b-first"), gateway.token(shop, "b-second")
    assert [probe(gateway, first).status_code for _ in range(BUYER_BURST)] == [200] * BUYER_BURST
    assert_limited(probe(gateway, first), "BUYER_RATE_LIMITED")
    assert_limited(probe(gateway, first), "BUYER_RATE_LIMITED")  # refused requests do not count for the shop
    answer = probe(gateway, second)
    assert answer.status_code == 200 and answer.json()["buyer_id"] == "b-second"


def test_the_shop_limit_caps_all_its_buyers_and_its_token_requests(
        gateways: list[Storefront], shop: Shop, membership: ServiceUnderTest, admin: Authed) -> None:
    gateway = gateways[0]
    buyers = [f"b-{n}" for n in range(4)]
    tokens = [gateway.token(shop, buyer) for buyer in buyers]  # 4 of the shop's 8
    assert [probe(gateway, token).status_code for token in tokens] == [200] * 4  # 8 of 8
    assert_limited(probe(gateway, tokens[0]), "SHOP_RATE_LIMITED")  # the buyer has used 1 of their 3
    with gateway.client() as http:
        asked = http.post("/v1/buyer-tokens", json={"buyer_id": "b-new"},
                          headers={"authorization": f"Bearer {shop.key}"})
    assert_limited(asked, "SHOP_RATE_LIMITED")
    other = create_shop(membership, admin)
    assert probe(gateway, gateway.token(other, "b-0")).status_code == 200  # another shop is not held back


def test_gateway_processes_share_the_limits_through_redis(
        backend: Backend, gateways: list[Storefront], shop: Shop) -> None:
    if not backend.redis_url:
        pytest.skip("the embedded backend keeps limits in its one process")
    token = gateways[0].token(shop, "b-roaming")
    statuses = [probe(gateways[n % 2], token).status_code for n in range(BUYER_BURST)]
    assert statuses == [200] * BUYER_BURST
    assert_limited(probe(gateways[1], token), "BUYER_RATE_LIMITED")
    assert_limited(probe(gateways[0], token), "BUYER_RATE_LIMITED")


def test_a_rate_limit_store_that_does_not_answer_lets_requests_through(
        backend: Backend, suite: dict[str, ServiceUnderTest], tmp_path: Path, shop: Shop) -> None:
    gateway = start(backend, suite, tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        token = gateway.token(shop, "b-unlimited")
        assert [probe(gateway, token).status_code for _ in range(BUYER_BURST + 3)] == [200] * (BUYER_BURST + 3)
    finally:
        gateway.gateway.stop()
