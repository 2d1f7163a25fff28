"""Cached reads at saturation: GetTier (membership) and GetBalance (points) in production shape
with 1 and 2 workers, each against the no-op RPC with as many workers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.membership.v1 import membership_service_pb2_grpc as mgrpc
from loyalty.points.v1 import points_service_pb2 as ppb
from loyalty.points.v1 import points_service_pb2_grpc as pgrpc

from bench.fixtures import Shop, auth, make_shop
from bench.runner import Context, Row, fmt_ms, fmt_rate, interleave, load_summary
from bench.stack import Stack, start_noop, start_production

TARGET = 0.70
NOOP = "bench.load:noop_call"


def get_tier_call(channel: grpc.Channel, params: dict[str, Any], slot: int) -> Callable[[int], object]:
    stub, metadata = mgrpc.MembershipServiceStub(channel), auth(params["key"])
    requests = [mpb.GetTierRequest(shop_id=params["shop_id"], member_id=m) for m in params["member_ids"]]
    return lambda n: stub.GetTier(requests[(n + slot * 7) % len(requests)], metadata=metadata, timeout=10)


def get_balance_call(channel: grpc.Channel, params: dict[str, Any], slot: int) -> Callable[[int], object]:
    stub, metadata = pgrpc.PointsServiceStub(channel), auth(params["key"])
    requests = [ppb.GetBalanceRequest(shop_id=params["shop_id"], member_id=m) for m in params["member_ids"]]
    return lambda n: stub.GetBalance(requests[(n + slot * 7) % len(requests)], metadata=metadata, timeout=10)


READS = (("GetTier", "membership", "bench.scenarios.reads:get_tier_call"),
         ("GetBalance", "points", "bench.scenarios.reads:get_balance_call"))


def measure_reads(ctx: Context, *, noop: str, stack: Stack, shop: Shop, label: str, scenario: str) -> list[Row]:
    """Each read against the no-op floor, interleaved; the windows' warm-up fills the caches.
    `label` names the row, with {method} where the method's name goes."""
    params = {"shop_id": shop.shop_id, "key": shop.key, "member_ids": shop.member_ids}
    rows = []
    for method, service, call in READS:
        what = label.format(method=method)
        ctx.log(f"{what} against the no-op floor, {ctx.profile.pairs} pairs")
        pairs = interleave(ctx.profile.pairs, lambda: ctx.closed_loop(noop, NOOP),
                           lambda service=service, call=call: ctx.closed_loop(stack.targets[service], call, params),
                           lambda r: r.rate)
        subject, floor = load_summary(pairs.subjects), load_summary(pairs.floors)
        measured = f"{fmt_rate(subject['rate'])}, p99 {fmt_ms(subject['p99_ms'])}"
        if subject["errors"]:
            measured += f" ({subject['errors']} errors)"
        rows.append(Row(scenario, what, measured,
                        f"no-op RPC {fmt_rate(floor['rate'])}, p99 {fmt_ms(floor['p99_ms'])}", pairs.ratio,
                        f"≥ {TARGET:.2f}", pairs.ratio >= TARGET,
                        {"subject": subject, "floor": floor, "ratios": pairs.ratios}))
    return rows


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for workers in (1, 2):
        label = f"cached {{method}}, {workers} worker{'s' if workers > 1 else ''}"
        noop = start_noop(ctx.processes, workers=workers, label=f"noop-{workers}w")
        try:
            stack = start_production(ctx.processes, ctx.backends, workers=workers, label=f"reads-{workers}w")
            try:
                shop = make_shop(stack.targets["membership"], stack.targets["points"], ctx.profile.read_members)
                rows += measure_reads(ctx, noop=noop.targets["noop"], stack=stack, shop=shop, label=label,
                                      scenario="reads")
            finally:
                stack.stop()
        finally:
            noop.stop()
    return rows
