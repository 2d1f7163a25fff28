"""Segments at the size of a big shop: `python -m services.segments seed-bench` loads a synthetic shop
(1,000,000 members in the full run, 200,000 quick) into the segments database of a production-shape
stack (`migrate`, then `serve` with 2 workers), then
- PreviewSegment's count of a three-condition rule (at least one trade within 180 days, no purchase
  within 30, tier 1 or above) over gRPC, against the same count by a hand-written SQL over the same
  tables, interleaved pairs, medians;
- ListSegmentMembers of a segment holding the whole shop, streamed to the end: time, members per
  second and the serving worker's memory (VmRSS sampled during the stream, less before it), against
  a server-side cursor over the same ids;
- RecomputeRfm of the shop, against its 30 s target ("not available" while the RPC answers
  UNIMPLEMENTED)."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
from loyalty.segments.v1 import rules_pb2
from loyalty.segments.v1 import segments_service_pb2 as pb
from loyalty.segments.v1 import segments_service_pb2_grpc as pb_grpc
from sqlalchemy import create_engine

from bench.fixtures import auth
from bench.load import median
from bench.runner import Context, Row, fmt_ms, fmt_rate, interleave
from bench.stack import ADMIN_KEY, ROOT, _clean_env, start_production
from services.kit.timeutil import utcnow

MEMBERS = {"full": 1_000_000, "quick": 200_000, "selftest": 2_000}
PREVIEW_PAIRS = {"full": 7, "quick": 5, "selftest": 1}
RFM_RUNS = {"full": 2, "quick": 2, "selftest": 1}
WORKERS = 2
SHOP = "bench-shop"
TARGET_RATIO = 1.5
TARGET_PREVIEW_MS = 1000.0
TARGET_RSS_MIB = 64.0
TARGET_RFM_S = 30.0

HAND_COUNT = """
SELECT count(*) FROM member_facts f
WHERE f.shop_id = %(shop)s AND f.left_at IS NULL AND f.tier_level >= 1
  AND (f.last_purchase_at IS NULL OR f.last_purchase_at < %(recent)s)
  AND EXISTS (SELECT 1 FROM member_orders o
              WHERE o.shop_id = f.shop_id AND o.member_id = f.member_id
                AND o.completed_at >= %(window)s AND NOT o.fully_refunded)
"""
HAND_MEMBERS = """
SELECT member_id FROM member_facts
WHERE shop_id = %(shop)s AND left_at IS NULL AND joined_at >= %(since)s
ORDER BY member_id
"""


def _condition(fact: int, op: int, values: list[int], window_days: int = 0) -> rules_pb2.Rule:
    return rules_pb2.Rule(condition=rules_pb2.Condition(fact=fact, op=op, values=values, window_days=window_days))


def three_conditions() -> rules_pb2.Rule:
    """Trades within 180 days ≥ 1 AND NOT (last purchase within 30 days) AND tier ≥ 1."""
    recent = rules_pb2.Rule()
    getattr(recent, "not").CopyFrom(_condition(rules_pb2.FACT_LAST_PURCHASE, rules_pb2.OPERATOR_WITHIN_DAYS, [30]))
    return rules_pb2.Rule(all=rules_pb2.RuleGroup(rules=[
        _condition(rules_pb2.FACT_TRADES, rules_pb2.OPERATOR_GE, [1], window_days=180), recent,
        _condition(rules_pb2.FACT_TIER_LEVEL, rules_pb2.OPERATOR_GE, [1])]))


def everyone() -> rules_pb2.Rule:
    """Joined within ten years: every member of the shop (who has not left)."""
    return _condition(rules_pb2.FACT_JOINED, rules_pb2.OPERATOR_WITHIN_DAYS, [3650])


# ----- the loader ---------------------------------------------------------------------------------


def seed(ctx: Context, db_url: str, members: int) -> dict[str, Any]:
    """`python -m services.segments seed-bench` into the stack's database, as an operator runs it."""
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "services.segments", "seed-bench", "--members", str(members),
                           "--shop", SHOP], cwd=ROOT, env=_clean_env(LOYALTY_SEGMENTS_DB_URL=db_url),
                          capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"seed-bench failed:\n{done.stderr[-2000:]}")
    line = done.stdout.strip().splitlines()[-1]
    orders = re.search(r"([\d,]+) orders", line)
    return {"seconds": time.monotonic() - began, "line": line,
            "orders": int(orders.group(1).replace(",", "")) if orders else None}


# ----- memory of the serving workers ----------------------------------------------------------------


def _children(parent: int) -> list[int]:
    """The processes whose parent is `parent` (the forked workers of `serve`)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


def _status_kib(pid: int, key: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


class MemoryWatch:
    """VmRSS of each worker every 50 ms while a call runs: the largest growth over its value before."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.before = {p: _status_kib(p, "VmRSS") for p in pids}
        self.hwm_before = {p: _status_kib(p, "VmHWM") for p in pids}
        self.peak = dict(self.before)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for p in self.pids:
                with contextlib.suppress(OSError):
                    self.peak[p] = max(self.peak[p], _status_kib(p, "VmRSS"))

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        growth = {p: self.peak[p] - self.before[p] for p in self.pids}
        worker = max(growth, key=lambda p: growth[p])
        return {"growth_mib": growth[worker] / 1024, "rss_before_mib": self.before[worker] / 1024,
                "rss_peak_mib": self.peak[worker] / 1024, "hwm_before_mib": self.hwm_before[worker] / 1024,
                "hwm_after_mib": _status_kib(worker, "VmHWM") / 1024,
                "workers": {str(p): {"before_mib": self.before[p] / 1024, "peak_mib": self.peak[p] / 1024}
                            for p in self.pids}}


# ----- the measurements ------------------------------------------------------------------------------


def measure_preview(ctx: Context, stub: pb_grpc.SegmentsServiceStub, raw: Any, pairs: int) -> dict[str, Any]:
    request = pb.PreviewSegmentRequest(shop_id=SHOP, rule=three_conditions())
    counts: dict[str, list[int]] = {"grpc": [], "sql": []}

    def subject() -> float:
        began = time.perf_counter()
        answer = stub.PreviewSegment(request, metadata=auth(ADMIN_KEY), timeout=120)
        took = time.perf_counter() - began
        counts["grpc"].append(answer.count)
        return took

    def floor() -> float:
        now = utcnow()
        began = time.perf_counter()
        with raw.cursor() as cursor:
            cursor.execute(HAND_COUNT, {"shop": SHOP, "recent": now - timedelta(days=30),
                                        "window": now - timedelta(days=180)})
            counts["sql"].append(cursor.fetchone()[0])
        raw.rollback()
        return time.perf_counter() - began

    subject(), floor()  # a first pass of each reads the tables into the buffers
    result = interleave(pairs, floor, subject, lambda seconds: seconds)
    return {"grpc_ms": median(result.subjects) * 1000, "sql_ms": median(result.floors) * 1000,
            "ratio": result.ratio, "ratios": result.ratios, "grpc_runs_ms": [s * 1000 for s in result.subjects],
            "sql_runs_ms": [f * 1000 for f in result.floors], "count": counts["grpc"][-1],
            "counts_match": counts["grpc"][-1] == counts["sql"][-1], "sql_count": counts["sql"][-1]}


def measure_stream(ctx: Context, stub: pb_grpc.SegmentsServiceStub, raw: Any, parent: int) -> dict[str, Any]:
    made = stub.CreateSegment(pb.CreateSegmentRequest(
        request_id="bench-everyone-" + uuid.uuid4().hex[:8], shop_id=SHOP,
        segment=pb.Segment(name="全部会员 bench", description="every member of the shop", rule=everyone())),
        metadata=auth(ADMIN_KEY), timeout=30)
    request = pb.ListSegmentMembersRequest(shop_id=SHOP, segment_id=made.segment_id)
    workers = _children(parent) or [parent]
    with MemoryWatch(workers) as watch:
        began = time.perf_counter()
        streamed = sum(1 for _ in stub.ListSegmentMembers(request, metadata=auth(ADMIN_KEY), timeout=1800))
        took = time.perf_counter() - began
    memory = watch.summary()
    # The floor: the same ids through a server-side cursor, 1000 at a time, in this process.
    began = time.perf_counter()
    with raw.cursor(name="bench_members") as cursor:
        cursor.itersize = 1000
        cursor.execute(HAND_MEMBERS, {"shop": SHOP, "since": utcnow() - timedelta(days=3650)})
        fetched = sum(1 for _ in cursor)
    raw.rollback()
    floor = time.perf_counter() - began
    return {"members": streamed, "seconds": took, "rate": streamed / took if took else 0.0,
            "floor_members": fetched, "floor_seconds": floor, "floor_rate": fetched / floor if floor else 0.0,
            **memory}


def rfm_implemented() -> bool:
    """Whether this checkout's service answers RecomputeRfm (the generated base answers an error)."""
    from services.segments.api import SegmentsApi

    return SegmentsApi.RecomputeRfm is not pb_grpc.SegmentsServiceServicer.RecomputeRfm


def measure_rfm(stub: pb_grpc.SegmentsServiceStub, runs: int) -> dict[str, Any]:
    if not rfm_implemented():
        return {"available": False, "detail": "SegmentsApi has no RecomputeRfm"}
    times, scored = [], 0
    for i in range(runs):
        began = time.perf_counter()
        try:
            answer = stub.RecomputeRfm(pb.RecomputeRfmRequest(request_id=f"bench-rfm-{uuid.uuid4().hex[:8]}-{i}",
                                                              shop_id=SHOP), metadata=auth(ADMIN_KEY), timeout=600)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return {"available": False, "detail": exc.details()}
            raise
        times.append(time.perf_counter() - began)
        scored = answer.scored_members
    return {"available": True, "seconds": median(times), "runs": times, "scored_members": scored}


def run(ctx: Context) -> list[Row]:
    name = ctx.profile.name
    members = MEMBERS[name]
    stack = start_production(ctx.processes, ctx.backends, workers=WORKERS, label="segments", services=("segments",))
    try:
        db_url = stack.db_urls["segments"]
        ctx.log(f"segments: seed-bench --members {members:,}")
        seeded = seed(ctx, db_url, members)
        ctx.log(f"segments: {seeded['line']}")
        engine = create_engine(db_url)
        raw = engine.raw_connection()
        try:
            with grpc.insecure_channel(stack.targets["segments"]) as channel:
                stub = pb_grpc.SegmentsServiceStub(channel)
                ctx.log(f"segments: PreviewSegment against hand-written SQL, {PREVIEW_PAIRS[name]} pairs")
                preview = measure_preview(ctx, stub, raw, PREVIEW_PAIRS[name])
                ctx.log("segments: ListSegmentMembers of the whole shop")
                stream = measure_stream(ctx, stub, raw, stack.procs[0].pid)
                ctx.log("segments: RecomputeRfm")
                rfm = measure_rfm(stub, RFM_RUNS[name])
        finally:
            raw.close()
            engine.dispose()
    finally:
        stack.stop()
    return rows(members, seeded, preview, stream, rfm)


def rows(members: int, seeded: dict[str, Any], preview: dict[str, Any], stream: dict[str, Any],
         rfm: dict[str, Any]) -> list[Row]:
    shop = f"{members:,} members"
    orders = f", {seeded['orders']:,} orders" if seeded.get("orders") else ""
    found = [Row("segments", f"seed-bench: {shop}{orders} into PostgreSQL (COPY, then VACUUM ANALYZE)",
                 f"{seeded['seconds']:,.0f} s", "—", None, "—", None, {"seed": seeded})]
    measured = f"{fmt_ms(preview['grpc_ms'])} (count {preview['count']:,})"
    if not preview["counts_match"]:
        measured += f" (hand SQL counted {preview['sql_count']:,})"
    met = preview["ratio"] <= TARGET_RATIO and preview["grpc_ms"] <= TARGET_PREVIEW_MS and preview["counts_match"]
    found.append(Row("segments", f"PreviewSegment count, 3 conditions (trades in 180 days ≥ 1, no purchase in "
                                 f"30 days, tier ≥ 1), {shop}", measured,
                     f"hand-written SQL: {fmt_ms(preview['sql_ms'])}", preview["ratio"],
                     f"≤ {TARGET_RATIO}× and ≤ {TARGET_PREVIEW_MS / 1000:.0f} s", met, {"preview": preview}))
    found.append(Row("segments", f"ListSegmentMembers, the whole shop streamed ({stream['members']:,} members), "
                                 f"{WORKERS} workers",
                     f"{stream['seconds']:,.1f} s, {fmt_rate(stream['rate'])}, worker RSS "
                     f"+{stream['growth_mib']:.1f} MiB (of {stream['rss_before_mib']:.0f} MiB)",
                     f"server-side cursor, same ids: {stream['floor_seconds']:,.1f} s, "
                     f"{fmt_rate(stream['floor_rate'])}",
                     stream["seconds"] / stream["floor_seconds"] if stream["floor_seconds"] else None,
                     f"flat memory: RSS growth ≤ {TARGET_RSS_MIB:.0f} MiB",
                     stream["growth_mib"] <= TARGET_RSS_MIB and stream["members"] == stream["floor_members"],
                     {"stream": stream}))
    if rfm["available"]:
        found.append(Row("segments", f"RecomputeRfm, {shop} ({rfm['scored_members']:,} scored)",
                         f"{rfm['seconds']:,.1f} s", "—", None, f"≤ {TARGET_RFM_S:.0f} s",
                         rfm["seconds"] <= TARGET_RFM_S, {"rfm": rfm}))
    else:
        found.append(Row("segments", f"RecomputeRfm, {shop}", "not available (not implemented in this build)", "—",
                         None, f"≤ {TARGET_RFM_S:.0f} s", None, {"rfm": rfm}))
    return found
