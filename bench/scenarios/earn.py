"""OrderCompleted → earn visible: orders arrive at a fixed rate (RecordOrder, then CompleteOrder
on membership) while a reader follows the points stream for the PointsEarned of each order.
Latency is from CompleteOrder's answer to the event on the stream; the backlog is the orders
completed but not yet earned, sampled over the measured window. The orders of the first
`earn_warmup` seconds (connections opening, statements being prepared, caches filling) are sent
at the same rate, without a pause, but not counted."""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import redis
from google.protobuf.message import DecodeError
from loyalty.common.v1 import envelope_pb2
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.membership.v1 import membership_service_pb2_grpc as mgrpc
from loyalty.points.v1 import events_pb2

from bench.fixtures import auth, make_shop
from bench.load import OpenLoop, percentile
from bench.runner import Context, Row, fmt_ms
from bench.stack import start_production

STREAM = "loyalty.points.v1"
EARNED = "loyalty.points.v1.PointsEarned"
WORKERS = 2
TARGET_P99_MS = 200.0
ORDER_FEN = 10_000  # 100 yuan: earns at every tier


def order_call(channel: grpc.Channel, params: dict[str, Any], _slot: int) -> Callable[[int], object]:
    stub, metadata = mgrpc.MembershipServiceStub(channel), auth(params["key"])
    shop_id, buyers, prefix = params["shop_id"], params["buyer_ids"], params["prefix"]

    def call(n: int) -> object:
        order_id = f"{prefix}-{n}"
        stub.RecordOrder(mpb.RecordOrderRequest(shop_id=shop_id, order_id=order_id, buyer_id=buyers[n % len(buyers)],
                                                amount_fen=ORDER_FEN), metadata=metadata, timeout=30)
        return stub.CompleteOrder(mpb.CompleteOrderRequest(shop_id=shop_id, order_id=order_id), metadata=metadata,
                                  timeout=30)

    return call


class EarnReader(threading.Thread):
    """Follows the points stream (plain XREAD: no consumer group, so the services do not see it)
    and notes when each order's PointsEarned appeared."""

    def __init__(self, redis_url: str, prefix: str, time_limit: float):
        super().__init__(name="earn-reader", daemon=True)
        self.client = redis.Redis.from_url(redis_url)
        self.prefix, self.deadline = prefix + "-", time.monotonic() + time_limit
        self.seen: dict[str, float] = {}
        self.stopping = threading.Event()
        last = self.client.xrevrange(STREAM, count=1)
        self.position = last[0][0] if last else b"0-0"

    def run(self) -> None:
        while not self.stopping.is_set() and time.monotonic() < self.deadline:
            reply = self.client.xread({STREAM: self.position}, count=1000, block=200)
            now = time.time()
            for _stream, entries in reply or ():
                for message_id, fields in entries:
                    self.position = message_id
                    for value in fields.values():
                        self._note(value, now)

    def _note(self, raw: bytes, now: float) -> None:
        envelope = envelope_pb2.EventEnvelope()
        try:
            envelope.ParseFromString(raw)
        except DecodeError:  # a field that is not an envelope: not an event
            return
        if envelope.type != EARNED:
            return
        earned = events_pb2.PointsEarned()
        envelope.payload.Unpack(earned)
        if earned.order_id.startswith(self.prefix):
            self.seen.setdefault(earned.order_id, now)

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)
        self.client.close()


def backlog_series(completed: list[float], earned: list[float], start: float, end: float,
                   step: float = 0.5) -> list[tuple[float, int]]:
    """(seconds since start, orders completed but not yet earned) every `step` over [start, end]."""
    completed, earned = sorted(completed), sorted(earned)
    series, i, j, t = [], 0, 0, start
    while t <= end:
        while i < len(completed) and completed[i] <= t:
            i += 1
        while j < len(earned) and earned[j] <= t:
            j += 1
        series.append((round(t - start, 3), i - j))
        t += step
    return series


def slope(series: list[tuple[float, int]]) -> float:
    """Least-squares growth of the backlog, per second."""
    if len(series) < 2:
        return 0.0
    xs, ys = [x for x, _ in series], [y for _, y in series]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def run(ctx: Context) -> list[Row]:
    profile = ctx.profile
    count = max(1, int(profile.earn_rate * profile.earn_seconds))
    warmup = int(profile.earn_rate * profile.earn_warmup)
    stack = start_production(ctx.processes, ctx.backends, workers=WORKERS, label="earn")
    try:
        shop = make_shop(stack.targets["membership"], stack.targets["points"], profile.earn_members)
        prefix = "o" + uuid.uuid4().hex[:8]
        give_up = (profile.earn_warmup + profile.earn_seconds) * 1.5 + 5
        reader = EarnReader(ctx.backends.redis_url, prefix, give_up + profile.drain_seconds + 30)
        reader.start()
        try:
            ctx.log(f"earn: {warmup} + {count} orders at {profile.earn_rate:.0f}/s (the first {warmup} not counted)")
            job = OpenLoop(target=stack.targets["membership"], call="bench.scenarios.earn:order_call",
                           params={"shop_id": shop.shop_id, "key": shop.key, "buyer_ids": shop.buyer_ids,
                                   "prefix": prefix},
                           channels=4, threads=16, rate=profile.earn_rate, count=warmup + count,
                           give_up_after=give_up)
            parts = ctx.pool.run(job, timeout=give_up + 90)
            sent = [s for p in parts for s in p["sent"] if s[0] >= warmup]
            done = {f"{prefix}-{n}": at for n, _due, at, ok in sent if ok}
            drain_until = time.monotonic() + profile.drain_seconds
            while time.monotonic() < drain_until and not all(o in reader.seen for o in done):
                time.sleep(0.2)
        finally:
            reader.stop()
    finally:
        stack.stop()
    errors = sum(p["errors"] for p in parts)
    seen = {o: at for o, at in reader.seen.items() if o in done}
    latencies = [(seen[o] - at) * 1000 if o in seen else math.inf for o, at in done.items()]
    missing = sum(1 for v in latencies if v == math.inf)
    start = min((due for _, due, _, _ in sent), default=0.0)
    send_end = max(done.values(), default=start)
    series = backlog_series(list(done.values()), list(seen.values()), start, send_end)
    growth = slope(series)
    grows = growth > max(1.0, 0.05 * profile.earn_rate)
    window = send_end - start
    achieved = len(done) / window if window > 0 else 0.0
    # How fast points kept up while orders arrived (a backlog drains afterwards at its own pace).
    earn_rate = sum(1 for at in seen.values() if at <= send_end) / window if window > 0 else 0.0
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    late = [max(0.0, at - due) for _, due, at, _ in sent]

    def show(ms: float) -> str:
        return f"> {profile.drain_seconds:.0f} s" if ms == math.inf else fmt_ms(ms)

    backlog = f"grows {growth:+,.0f}/s" if grows else "steady"
    measured = (f"p50 {show(p50)}, p99 {show(p99)}; {achieved:,.0f} orders/s completed, {earn_rate:,.0f}/s earned "
                f"meanwhile; backlog {backlog} ({series[-1][1] if series else 0} at the end)")
    if missing:
        measured += f"; {missing} of {len(done)} not earned {profile.drain_seconds:.0f} s after"
    if errors:
        measured += f"; {errors} order calls failed ({parts[0]['error_sample'][:1] or parts[-1]['error_sample'][:1]})"
    met = p99 <= TARGET_P99_MS and not grows and not missing and not errors
    what = (f"OrderCompleted → earn visible, {profile.earn_rate:,.0f} orders/s for {profile.earn_seconds:.0f} s "
            f"(after {profile.earn_warmup:.0f} s of warm-up), {WORKERS} workers")
    return [Row("earn", what, measured, "—", None, f"p99 ≤ {TARGET_P99_MS:.0f} ms, no backlog", met,
                {"orders": count, "warmup_orders": warmup, "completed": len(done), "earned": len(seen),
                 "errors": errors, "p50_ms": p50, "p99_ms": p99, "achieved_rate": achieved, "earn_rate": earn_rate,
                 "backlog_growth_per_s": growth, "backlog_series": series, "send_lag_p99_s": percentile(late, 99)})]
