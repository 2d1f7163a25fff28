"""The storefront member card (GET /v1/storefront/card) through the gateway in production shape
(`python -m gateway serve`, 2 workers) in front of the services: requests for members arrive at
a fixed 200 per second (as page views do, whatever the answers' latency), after a pass over
every member has warmed the caches. Latency is from when each request was due to its answer;
the floor is the gateway's own /healthz at the same rate (HTTP, no service behind it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from bench.fixtures import Shop, make_shop
from bench.load import CallFailed, OpenLoop, percentile
from bench.runner import Context, Row, fmt_ms
from bench.stack import start_gateway, start_production
from services import registry

RATE = 200.0  # requests per second
SECONDS = {"full": 30.0, "quick": 10.0, "selftest": 1.0}
WORKERS = 2
TARGET_P99_MS = 20.0
CARD = "/v1/storefront/card"


def http_get_call(_channel: None, params: dict[str, Any], slot: int) -> Callable[[int], object]:
    """GET params["path"] as the member whose token is next in turn (keep-alive, one client per slot)."""
    client = httpx.Client(base_url=params["url"], timeout=10)
    path, tokens, query = params["path"], params["tokens"], params["query"]

    def call(n: int) -> object:
        token = tokens[(n + slot * 7) % len(tokens)]
        answer = client.get(path, params=query, headers={"authorization": f"Bearer {token}"})
        if answer.status_code != 200:
            raise CallFailed(f"HTTP {answer.status_code}: {answer.text[:200]}")
        return answer

    return call


def buyer_tokens(url: str, shop: Shop) -> list[str]:
    """A token for every member, asked for with the shop's key as the shop's backend does."""
    with httpx.Client(base_url=url, timeout=30, headers={"authorization": f"Bearer {shop.key}"}) as http:
        tokens = []
        for buyer in shop.buyer_ids:
            answer = http.post("/v1/buyer-tokens", json={"buyer_id": buyer, "ttl_seconds": 3600})
            answer.raise_for_status()
            tokens.append(answer.json()["token"])
    return tokens


def warm(url: str, shop: Shop, tokens: list[str]) -> None:
    """One card per member: every cache the card reads is filled, and the card answers at all."""
    with httpx.Client(base_url=url, timeout=30) as http:
        for token in tokens:
            answer = http.get(CARD, params={"shop_id": shop.shop_id}, headers={"authorization": f"Bearer {token}"})
            if answer.status_code != 200:
                raise RuntimeError(f"GET {CARD} answered {answer.status_code}: {answer.text[:300]}")


def fixed_rate(ctx: Context, url: str, path: str, params: dict[str, Any], seconds: float) -> dict[str, Any]:
    count = max(1, int(RATE * seconds))
    job = OpenLoop(target="", call="bench.scenarios.card:http_get_call", params={"url": url, "path": path, **params},
                   channels=0, threads=8, rate=RATE, count=count, give_up_after=seconds * 1.5 + 5)
    parts = ctx.pool.run(job, timeout=seconds * 1.5 + 90)
    sent = [s for p in parts for s in p["sent"]]
    latencies = [(done - due) * 1000 for _, due, done, ok in sent if ok]
    return {"requests": count, "answered": len(latencies), "errors": sum(p["errors"] for p in parts),
            "error_sample": [e for p in parts for e in p["error_sample"]][:3],
            "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99)}


def run(ctx: Context) -> list[Row]:
    seconds = SECONDS[ctx.profile.name]
    services = start_production(ctx.processes, ctx.backends, workers=WORKERS, label="card",
                                services=tuple(entry.name for entry in registry.SERVICES))
    try:
        shop = make_shop(services.targets["membership"], services.targets["points"], ctx.profile.read_members)
        gateway = start_gateway(ctx.processes, ctx.backends, services, workers=WORKERS, label="card-gateway")
        try:
            url = gateway.targets["http"]
            tokens = buyer_tokens(url, shop)
            ctx.log(f"card: warming the caches with {len(tokens)} members")
            warm(url, shop, tokens)
            params = {"tokens": tokens, "query": {"shop_id": shop.shop_id}}
            ctx.log(f"card: {RATE:.0f}/s for {seconds:.0f} s, then /healthz as the floor")
            card = fixed_rate(ctx, url, CARD, params, seconds)
            floor = fixed_rate(ctx, url, "/healthz", params, seconds)
        finally:
            gateway.stop()
    finally:
        services.stop()
    measured = f"p50 {fmt_ms(card['p50_ms'])}, p99 {fmt_ms(card['p99_ms'])}"
    if card["errors"]:
        measured += f" ({card['errors']} errors: {card['error_sample'][:1]})"
    return [Row("card", f"GET {CARD} for members, {RATE:.0f}/s for {seconds:.0f} s, gateway and services "
                        f"{WORKERS} workers, warm caches", measured,
                f"/healthz p50 {fmt_ms(floor['p50_ms'])}, p99 {fmt_ms(floor['p99_ms'])}", None,
                f"p99 ≤ {TARGET_P99_MS:.0f} ms", card["p99_ms"] <= TARGET_P99_MS and not card["errors"],
                {"card": card, "floor": floor})]
