"""Spend at saturation with 8 calls in flight, each with a fresh request id, over the funded
members of one shop, against pgbench's simple-update transaction with 8 clients."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import grpc
from loyalty.points.v1 import points_service_pb2 as ppb
from loyalty.points.v1 import points_service_pb2_grpc as pgrpc

from bench.fixtures import auth, fund, make_shop
from bench.floors import PgBench
from bench.load import LoadResult
from bench.runner import Context, Row, fmt_ms, fmt_rate, interleave, load_summary
from bench.stack import start_production

TARGET = 0.50
IN_FLIGHT = 8
WORKERS = 2
FUNDS = 1_000_000  # far more than a run spends, one point at a time


def spend_call(channel: grpc.Channel, params: dict[str, Any], slot: int) -> Callable[[int], object]:
    stub, metadata = pgrpc.PointsServiceStub(channel), auth(params["key"])
    shop_id, members, window = params["shop_id"], params["member_ids"], params["window"]

    def call(n: int) -> object:
        # Slots walk the members from different places, so two calls rarely wait on one account.
        member = members[(n * 131 + slot * 61) % len(members)]
        return stub.Spend(ppb.SpendRequest(request_id=f"{window}-{slot}-{n}", shop_id=shop_id, member_id=member,
                                           points=1), metadata=metadata, timeout=30)

    return call


def run(ctx: Context) -> list[Row]:
    pgbench = PgBench(ctx.backends)
    stack = start_production(ctx.processes, ctx.backends, workers=WORKERS, label="spend")
    try:
        shop = make_shop(stack.targets["membership"], stack.targets["points"], ctx.profile.spend_members)
        ctx.log(f"spend: funding {len(shop.member_ids)} members")
        fund(stack.targets["points"], shop, FUNDS)
        threads = max(1, IN_FLIGHT // ctx.pool.clients)
        in_flight = threads * ctx.pool.clients

        def subject() -> LoadResult:
            # A fresh window id each time, so that no request id repeats and no answer is a replay.
            params = {"shop_id": shop.shop_id, "key": shop.key, "member_ids": shop.member_ids,
                      "window": uuid.uuid4().hex[:12]}
            return ctx.closed_loop(stack.targets["points"], "bench.scenarios.spend:spend_call", params,
                                   threads=threads)

        ctx.log(f"spend: Spend against pgbench -N, {ctx.profile.pairs} pairs")
        pairs = interleave(ctx.profile.pairs,
                           lambda: pgbench.simple_update(IN_FLIGHT, ctx.profile.duration), subject,
                           lambda r: r if isinstance(r, float) else r.rate)
    finally:
        stack.stop()
    spends = load_summary(pairs.subjects)
    tps = sorted(pairs.floors)[len(pairs.floors) // 2]
    measured = f"{fmt_rate(spends['rate'])}, p99 {fmt_ms(spends['p99_ms'])}"
    if spends["errors"]:
        measured += f" ({spends['errors']} errors: {spends['error_sample'][0]})"
    return [Row("spend", f"Spend, unique request ids, {len(shop.member_ids):,} funded members, {in_flight} in flight, "
                         f"{WORKERS} workers", measured, f"pgbench -N, {IN_FLIGHT} clients: {tps:,.0f} TPS",
                pairs.ratio, f"≥ {TARGET:.2f}", pairs.ratio >= TARGET,
                {"subject": spends, "pgbench_tps": pairs.floors, "ratios": pairs.ratios})]
