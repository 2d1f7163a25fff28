"""Buyer tokens and the gateway's own surface, over HTTP on both backends: a shop's key gets a
token for one of its buyers; anything else is a 4xx problem (RFC 9457) with a reason; the
readiness probe reflects the services behind it."""

from __future__ import annotations

import time

import jwt

from gateway.tokens import ALGORITHM, AUDIENCE, ISSUER
from services import registry
from tests.conftest import Shop
from tests.support.gateway import TOKEN_KEY, Storefront


def test_a_shop_key_gets_a_short_lived_token_naming_its_shop_and_the_buyer(storefront: Storefront,
                                                                           shop: Shop) -> None:
    with storefront.client() as http:
        answer = http.post("/v1/buyer-tokens", json={"buyer_id": "b-1", "follows_shop": True},
                           headers={"authorization": f"Bearer {shop.key}"})
    assert answer.status_code == 201
    body = answer.json()
    claims = jwt.decode(body["token"], TOKEN_KEY, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER)
    assert (claims["shop"], claims["sub"], claims["facts"]["follows"]) == (shop.shop_id, "b-1", True)
    assert 0 < claims["exp"] - time.time() <= 600 and body["expires_in"] <= 600


def test_no_key_or_a_bad_key_or_bad_input_is_a_problem_not_a_token(storefront: Storefront, shop: Shop) -> None:
    with storefront.client() as http:
        missing = http.post("/v1/buyer-tokens", json={"buyer_id": "b-1"})
        forged = http.post("/v1/buyer-tokens", json={"buyer_id": "b-1"},
                           headers={"authorization": f"Bearer {shop.key[:-2]}xx"})
        bad = http.post("/v1/buyer-tokens", json={"buyer_id": "b 1", "ttl_seconds": 10**9},
                        headers={"authorization": f"Bearer {shop.key}"})
        garbage = http.post("/v1/buyer-tokens", content=b"\xff\xfe{", headers={
            "authorization": f"Bearer {shop.key}", "content-type": "application/json"})
    assert (missing.status_code, missing.json()["reason"]) == (401, "MISSING_CREDENTIALS")
    assert (forged.status_code, forged.json()["reason"]) == (401, "INVALID_CREDENTIALS")
    assert missing.headers["content-type"] == "application/problem+json"
    assert bad.status_code == 422 and {e["field"] for e in bad.json()["errors"]} == {"buyer_id", "ttl_seconds"}
    assert garbage.status_code == 400 and garbage.json()["status"] == 400  # not JSON at all


def test_health_and_readiness(storefront: Storefront) -> None:
    with storefront.client() as http:
        assert http.get("/healthz").json()["status"] == "ok"
        ready = http.get("/readyz")
    assert ready.status_code == 200 and set(ready.json()["upstreams"]) == {e.name for e in registry.SERVICES}
    assert all(ready.json()["upstreams"].values())


def test_openapi_describes_the_versioned_paths(storefront: Storefront) -> None:
    with storefront.client() as http:
        spec = http.get("/openapi.json").json()
    assert "/v1/buyer-tokens" in spec["paths"] and spec["openapi"].startswith("3.")
