"""Admission on a real server: with every admitted call stuck on a database lock, the health
check still answers at once, calls beyond the bound are refused at once with UNAVAILABLE and a
retry delay, and the stuck calls finish once the lock goes."""

from __future__ import annotations

import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from loyalty.membership.v1 import membership_service_pb2 as pb
from loyalty.membership.v1 import membership_service_pb2_grpc as pb_grpc

from services.kit.config import Settings
from services.membership import server as membership_server
from tests.conftest import ADMIN_KEY, Authed, Backend, create_shop, failure_of, start_service, stop_service


def retry_delay(error: grpc.RpcError) -> float:
    for detail in rpc_status.from_call(error).details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    return 0.0


def test_health_answers_and_excess_calls_are_refused_at_once_while_admitted_calls_are_stuck(
    settings: Settings, tmp_path: Path
) -> None:
    service = start_service(membership_server, Backend("sqlite", "", "", tmp_path), settings)
    try:
        shop = create_shop(service, Authed(pb_grpc.MembershipServiceStub(service.channel), ADMIN_KEY))

        def join(_: int) -> tuple[str, float, float]:
            started = time.monotonic()
            try:
                shop.api.JoinMember(pb.JoinMemberRequest(request_id=uuid.uuid4().hex, shop_id=shop.shop_id,
                                                         buyer_id=uuid.uuid4().hex, join_channel=1))
                return "OK", time.monotonic() - started, 0.0
            except grpc.RpcError as exc:
                failure = failure_of(exc)
                return f"{failure.code.name}/{failure.reason}", time.monotonic() - started, retry_delay(exc)

        # Another writer holds SQLite's write lock: every join blocks inside the database.
        lock = sqlite3.connect(service.running.app.db.url.removeprefix("sqlite:///"), isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        try:
            with ThreadPoolExecutor(40) as pool:
                calls = [pool.submit(join, i) for i in range(40)]
                time.sleep(1.5)
                started = time.monotonic()
                answer = health_pb2_grpc.HealthStub(service.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                health_took = time.monotonic() - started
                refused_early = [c.result() for c in calls if c.done()]
                lock.execute("ROLLBACK")
                results = [c.result() for c in calls]
        finally:
            lock.close()

        assert answer.status == health_pb2.HealthCheckResponse.SERVING and health_took < 0.5
        # Admitted: as many calls as the server runs at once; they finish once the lock goes.
        assert sum(1 for code, _, _ in results if code == "OK") == settings.threads
        refused = [r for r in results if r[0] != "OK"]
        assert refused and {code for code, _, _ in refused} == {"UNAVAILABLE/OVERLOADED"}
        assert all(delay > 0 for _, _, delay in refused)
        assert len(refused_early) == len(refused)  # answered before the lock went, not queued behind it
        assert max(took for _, took, _ in refused) < 1.5  # at once, or after a short wait for a turn
        assert join(0)[0] == "OK"  # and the service is itself again
    finally:
        stop_service(service)
