"""CORS over HTTP on both backends, with the Origin headers a browser sends: a shop's storefront
origins (its program's `storefront_origins`) get preflights answered and responses readable; any
other origin is refused, before the route, even with a valid buyer token; the gateway's own
pages and callers without an Origin are not cross-origin."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from google.protobuf import field_mask_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loyalty.membership.v1 import membership_service_pb2 as mpb
from playwright.sync_api import Browser

from tests.backends import wait_until
from tests.conftest import Authed, Backend, ServiceUnderTest, Shop, create_shop
from tests.support.gateway import Storefront, gateway_settings, start_gateway
from tests.support.probe import PATH, add_probe

STOREFRONT = "https://shop.example.com"
FOREIGN = "https://evil.example.net"


@pytest.fixture(scope="module")
def gateway(backend: Backend, suite: dict[str, ServiceUnderTest],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storefront]:
    running = add_probe(start_gateway(gateway_settings(backend, suite, tmp_path_factory.mktemp("cors"))))
    yield Storefront(running)
    running.stop()


def list_origins(shop: Shop, *origins: str) -> None:
    shop.api.UpdateProgram(mpb.UpdateProgramRequest(
        request_id=uuid.uuid4().hex, shop_id=shop.shop_id, storefront_origins=list(origins),
        update_mask=field_mask_pb2.FieldMask(paths=["storefront_origins"])))


@pytest.fixture
def listed(shop: Shop) -> Shop:
    """A shop whose storefront is STOREFRONT."""
    list_origins(shop, STOREFRONT, "http://127.0.0.1:9000")
    return shop


def preflight(gateway: Storefront, origin: str, query: str, method: str = "GET") -> httpx.Response:
    with gateway.client() as http:
        return http.options(PATH + query, headers={
            "origin": origin, "access-control-request-method": method,
            "access-control-request-headers": "authorization"})


def test_a_preflight_from_a_storefront_origin_is_allowed(gateway: Storefront, listed: Shop) -> None:
    answer = preflight(gateway, STOREFRONT, f"?shop_id={listed.shop_id}", "POST")
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == STOREFRONT  # the origin itself, never *
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert {"authorization", "content-type", "idempotency-key"} <= {
        h.strip() for h in answer.headers["access-control-allow-headers"].split(",")}
    assert int(answer.headers["access-control-max-age"]) > 0
    assert "Origin" in answer.headers["vary"]


@pytest.mark.parametrize("origin, query", [
    (FOREIGN, "?shop_id={shop}"),
    ("null", "?shop_id={shop}"),  # a sandboxed frame or a file
    ("https://shop.example.com.evil.example.net", "?shop_id={shop}"),
    (STOREFRONT, ""),  # no shop named: nothing to allow it for
    (STOREFRONT, "?shop_id=no-such-shop"),
])
def test_a_preflight_from_anywhere_else_is_refused(gateway: Storefront, listed: Shop, origin: str,
                                                   query: str) -> None:
    answer = preflight(gateway, origin, query.format(shop=listed.shop_id))
    assert answer.status_code == 403
    assert answer.json()["reason"] == "ORIGIN_NOT_ALLOWED"
    assert "access-control-allow-origin" not in answer.headers


def test_a_storefront_page_reads_the_answer_with_or_without_naming_the_shop(
        gateway: Storefront, listed: Shop) -> None:
    token = gateway.token(listed, "b-1")
    with gateway.client(headers={"origin": STOREFRONT, "authorization": f"Bearer {token}"}) as http:
        named = http.get(PATH, params={"shop_id": listed.shop_id})
        by_token = http.post(PATH)
    for answer in (named, by_token):
        assert answer.status_code == 200 and answer.json()["buyer_id"] == "b-1"
        assert answer.headers["access-control-allow-origin"] == STOREFRONT
        assert "Origin" in answer.headers["vary"]


def test_a_problem_answer_is_readable_by_the_storefront_too(gateway: Storefront, listed: Shop) -> None:
    with gateway.client(headers={"origin": STOREFRONT}) as http:
        answer = http.get(PATH, params={"shop_id": listed.shop_id})
    assert answer.status_code == 401 and answer.json()["reason"] == "MISSING_CREDENTIALS"
    assert answer.headers["access-control-allow-origin"] == STOREFRONT


def test_a_foreign_page_cannot_use_a_leaked_token(gateway: Storefront, listed: Shop) -> None:
    token = gateway.token(listed, "b-1")
    with gateway.client(headers={"origin": FOREIGN, "authorization": f"Bearer {token}"}) as http:
        named = http.get(PATH, params={"shop_id": listed.shop_id})
        unnamed = http.post(PATH)
    for answer in (named, unnamed):
        assert answer.status_code == 403 and answer.json()["reason"] == "ORIGIN_NOT_ALLOWED"
        assert "access-control-allow-origin" not in answer.headers


def test_naming_a_shop_that_lists_the_page_lends_nothing_to_another_shops_token(
        gateway: Storefront, listed: Shop, membership: ServiceUnderTest, admin: Authed) -> None:
    other = create_shop(membership, admin)
    list_origins(other, FOREIGN)
    token = gateway.token(listed, "b-1")  # of a shop that does not list the foreign page
    with gateway.client(headers={"origin": FOREIGN, "authorization": f"Bearer {token}"}) as http:
        answer = http.get(PATH, params={"shop_id": other.shop_id})
    assert answer.status_code == 403 and answer.json()["reason"] == "SHOP_MISMATCH"


def test_the_gateways_own_pages_and_callers_without_an_origin_are_not_cross_origin(
        gateway: Storefront, listed: Shop) -> None:
    token = gateway.token(listed, "b-1")
    with gateway.client(headers={"authorization": f"Bearer {token}"}) as http:
        own = http.get(PATH, params={"shop_id": listed.shop_id}, headers={"origin": gateway.url})
        server = http.get(PATH, params={"shop_id": listed.shop_id})
    for answer in (own, server):
        assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers


def test_an_origin_the_operator_adds_is_allowed_within_seconds(gateway: Storefront, listed: Shop) -> None:
    added = "https://m.shop.example.com"
    assert preflight(gateway, added, f"?shop_id={listed.shop_id}").status_code == 403
    list_origins(listed, STOREFRONT, added)
    wait_until(lambda: preflight(gateway, added, f"?shop_id={listed.shop_id}").status_code == 204,
               "the added origin to be allowed")
    list_origins(listed, added)
    wait_until(lambda: preflight(gateway, STOREFRONT, f"?shop_id={listed.shop_id}").status_code == 403,
               "the removed origin to be refused")


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><html><head><meta charset=utf-8></head><body>a page</body></html>"
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture(scope="module")
def pages() -> Iterator[tuple[str, str]]:
    """Two pages on this host, of two origins (two ports): a shop's storefront and a foreign one."""
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Page) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    storefront, foreign = (f"http://127.0.0.1:{server.server_address[1]}" for server in servers)
    yield storefront, foreign
    for server in servers:
        server.shutdown()
        server.server_close()


FETCH = """async ([url, token]) => {
  try {
    const answer = await fetch(url, {method: "POST", headers: {authorization: "Bearer " + token}});
    return {status: answer.status, body: await answer.json()};
  } catch (error) {
    return {error: String(error)};
  }
}"""


def test_in_a_browser_the_storefront_reads_the_answer_and_a_foreign_page_cannot(
        gateway: Storefront, shop: Shop, pages: tuple[str, str], browser: Browser) -> None:
    storefront, foreign = pages
    list_origins(shop, storefront)
    token = gateway.token(shop, "b-browser")
    url = f"{gateway.url}{PATH}?shop_id={shop.shop_id}"
    page = browser.new_page()
    try:
        page.goto(storefront + "/")
        allowed = page.evaluate(FETCH, [url, token])
        page.goto(foreign + "/")
        refused = page.evaluate(FETCH, [url, token])
        unnamed = page.evaluate(FETCH, [f"{gateway.url}{PATH}", token])
    finally:
        page.close()
    assert allowed == {"status": 200, "body": {"shop_id": shop.shop_id, "buyer_id": "b-browser", "is_member": False}}
    assert "error" in refused and "error" in unnamed  # the browser refused: the gateway allowed nothing


_header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60).map(str.strip)


@given(origin=st.one_of(st.sampled_from([STOREFRONT, STOREFRONT.upper(), FOREIGN, "null"]), _header_text),
       shop_id=st.one_of(st.none(), st.text(max_size=70)), signed=st.booleans(),
       method=st.sampled_from(["GET", "POST", "OPTIONS"]), preflight=st.booleans())
@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_no_origin_shop_or_token_makes_the_cors_decision_fail_or_leak(
        gateway: Storefront, listed: Shop, origin: str, shop_id: str | None, signed: bool, method: str,
        preflight: bool) -> None:
    headers = {"origin": origin}
    if signed:
        headers["authorization"] = f"Bearer {gateway.token(listed, 'b-any')}"
    if preflight:
        headers["access-control-request-method"] = "POST"
    with gateway.client() as http:
        answer = http.request(method, PATH, params={} if shop_id is None else {"shop_id": shop_id}, headers=headers)
    assert answer.status_code < 500
    allowed = answer.headers.get("access-control-allow-origin")
    assert allowed is None or (allowed == origin and origin.lower() == STOREFRONT)
