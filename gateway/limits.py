"""Rate limits per shop and per buyer: a request over either answers 429 with Retry-After.

The strategy is the `limits` library's sliding window counter, the one of its three that behaves
like a token bucket of `burst` tokens refilled at `rate` per second: a burst of `burst` requests
passes at once, and then capacity comes back smoothly (the previous window's count fades out
linearly over the next window, `rate` requests a second) rather than all at once at a window's
edge (the fixed window, which also lets twice the burst through across an edge) or only as each
single old request ages out (the moving window, which also keeps one timestamp per request where
the counter keeps two integers per key). The window is `burst / rate` seconds (whole seconds, as
the library counts them; a burst smaller than one second's worth of the rate is raised to it).

The counters live in Redis when LOYALTY_REDIS_URL is set, so that every gateway process and
replica shares them; else in the process (the embedded default: one process). When Redis does
not answer, requests are let through rather than refused (a rate limit protects the services; it
must not become an outage of its own): the gateway logs it once, skips Redis for a few seconds,
and logs again when Redis is back."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import redis.asyncio
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError

from gateway.problems import Problem
from services.kit.config import GatewaySettings

log = logging.getLogger("loyalty.gateway")

REDIS_TIMEOUT_SECONDS = 0.25  # a limit check must not hold a request up for long
REDIS_PAUSE_SECONDS = 5.0  # after a failure, requests pass unchecked this long before Redis is tried again


def window(rate_per_second: float, burst: int) -> RateLimitItem:
    """`burst` requests at once, refilled at `rate_per_second`: `amount` requests per `multiples` seconds."""
    seconds = max(1, round(max(burst, 1) / rate_per_second))
    return RateLimitItemPerSecond(max(1, round(rate_per_second * seconds)), seconds, namespace="gateway")


@dataclass(frozen=True)
class Refusal:
    reason: str
    detail: str


SHOP = Refusal("SHOP_RATE_LIMITED", "the shop has made too many requests; try again later")
BUYER = Refusal("BUYER_RATE_LIMITED", "too many requests for this buyer; try again later")


class Limiter:
    """Checks one request against its shop's limit and, for a buyer's request, the buyer's."""

    def __init__(self, storage: Storage, shop: RateLimitItem, buyer: RateLimitItem,
                 pool: redis.asyncio.ConnectionPool | None = None):
        self._storage = storage
        self._pool = pool  # the Redis connections, closed at shutdown
        self._strategy = SlidingWindowCounterRateLimiter(storage)
        self.shop, self.buyer = shop, buyer
        self._paused_until = 0.0
        self._failing = False

    async def check(self, shop_id: str, buyer_id: str | None) -> None:
        """Counts the request; raises Problem 429 (with Retry-After) when it is over a limit.
        The buyer's limit is asked first, so that a buyer over theirs spends nothing of the shop's."""
        if self._paused_until and time.monotonic() < self._paused_until:
            return
        try:
            if buyer_id is not None and not await self._strategy.hit(self.buyer, "buyer", shop_id, buyer_id):
                await self._refuse(BUYER, self.buyer, "buyer", shop_id, buyer_id)
            if not await self._strategy.hit(self.shop, "shop", shop_id):
                await self._refuse(SHOP, self.shop, "shop", shop_id)
        except StorageError as exc:
            self._paused_until = time.monotonic() + REDIS_PAUSE_SECONDS
            if not self._failing:
                self._failing = True
                log.warning("rate limits are not checked: their store does not answer; requests pass unchecked "
                            "until it does", extra={"error": str(exc.storage_error)})
            return
        if self._failing:
            self._failing, self._paused_until = False, 0.0
            log.warning("rate limits are checked again: their store answers")

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.disconnect()

    async def _refuse(self, refusal: Refusal, item: RateLimitItem, *identifiers: str) -> None:
        counts = await self._storage.get_sliding_window(item.key_for(*identifiers), item.get_expiry())
        raise Problem(429, refusal.detail, reason=refusal.reason,
                      retry_after=math.ceil(wait_seconds(item, *counts)))


def wait_seconds(item: RateLimitItem, previous: int, previous_ttl: float, current: int, current_ttl: float) -> float:
    """How long until the window counter lets one more request through (Retry-After). The counter
    weighs the previous window by the part of the current one still to run, and a request passes
    while the weighted count is below the limit: so it passes again once the previous window's
    share has faded enough, or, when the current window alone is full, once that window has
    become the previous one and faded enough."""
    expiry, limit = item.get_expiry(), item.amount
    left = current_ttl - expiry if current else previous_ttl  # of the current window
    if current < limit and previous:
        return max(0.0, left - (limit - current) * expiry / previous)
    return left + expiry * (1 - limit / current) if current else 0.0


def build(settings: GatewaySettings) -> Limiter:
    """The limiter every request checks (app.state.limiter): in Redis when one is configured."""
    storage: Storage
    pool = None
    if settings.redis_url:
        pool = redis.asyncio.ConnectionPool.from_url(settings.redis_url, socket_timeout=REDIS_TIMEOUT_SECONDS,
                                                     socket_connect_timeout=REDIS_TIMEOUT_SECONDS)
        storage = RedisStorage("async+" + settings.redis_url, wrap_exceptions=True, implementation="redispy",
                               key_prefix="loyalty-gateway", connection_pool=pool)
    else:
        storage = MemoryStorage()
    return Limiter(storage, window(settings.shop_rate_per_second, settings.shop_burst),
                   window(settings.buyer_rate_per_second, settings.buyer_burst), pool)
