"""Redis GET through redis-benchmark: what a cached read's Redis round trip costs at best."""

from __future__ import annotations

from bench.floors import redis_get
from bench.runner import Context, Row, fmt_rate

REQUESTS = {"full": 200_000, "quick": 50_000, "selftest": 5_000}


def run(ctx: Context) -> list[Row]:
    ctx.backends.flush_redis()
    rates = [redis_get(ctx.backends, requests=REQUESTS[ctx.profile.name]) for _ in range(ctx.profile.pairs)]
    rate = sorted(rates)[len(rates) // 2]
    return [Row("redis", "Redis GET (redis-benchmark, 16 clients)", fmt_rate(rate), "—", None,
                "reference for cached reads", None, {"rate": rate, "runs": rates})]
