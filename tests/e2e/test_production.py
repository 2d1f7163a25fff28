"""The production shape: `python -m services.membership serve` with several worker processes on
PostgreSQL + Redis, health gated on `migrate`, and a graceful SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loyalty.membership.v1 import membership_service_pb2 as pb
from loyalty.membership.v1 import membership_service_pb2_grpc as pb_grpc
from sqlalchemy import create_engine, text

from tests.conftest import ADMIN_KEY, AUTH_SECRET, PII_KEY, Authed
from tests.e2e.test_readme import free_port

ROOT = Path(__file__).resolve().parents[2]



@pytest.fixture
def production_env() -> dict[str, str]:
    pg, redis_url = os.environ.get("LOYALTY_TEST_PG_URL"), os.environ.get("LOYALTY_TEST_REDIS_URL")
    if not (pg and redis_url):
        pytest.skip("needs the PostgreSQL and Redis servers that `make test` starts")
    name = "membership_prod_" + uuid.uuid4().hex[:8]
    admin = create_engine(pg, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}_keys"'))  # the key store, a database of its own
    admin.dispose()
    return {
        **os.environ,
        "LOYALTY_MEMBERSHIP_DB_URL": pg.rsplit("/", 1)[0] + "/" + name,
        "LOYALTY_MEMBERSHIP_KEYS_DB_URL": pg.rsplit("/", 1)[0] + "/" + name + "_keys",
        "LOYALTY_REDIS_URL": redis_url,
        "LOYALTY_ADMIN_KEY": ADMIN_KEY,
        "LOYALTY_AUTH_SECRET": AUTH_SECRET.decode(),
        "LOYALTY_PII_KEY": PII_KEY,
        "LOYALTY_MEMBERSHIP_PORT": str(free_port()),
        "LOYALTY_HOST": "127.0.0.1",
        "LOYALTY_WORKERS": "2",
        "LOYALTY_GRACE_SECONDS": "5",
        "LOYALTY_LOG_LEVEL": "WARNING",
    }


def health(channel: grpc.Channel) -> int:
    try:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1).status
    except grpc.RpcError:
        return -1


def wait_for(predicate: Callable[[], object], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


@pytest.mark.production
def test_workers_serve_after_migrate_and_stop_gracefully(production_env: dict[str, str]) -> None:
    port = production_env["LOYALTY_MEMBERSHIP_PORT"]
    serve = subprocess.Popen([sys.executable, "-m", "services.membership", "serve"], cwd=ROOT, env=production_env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        wait_for(lambda: health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING)
        subprocess.run([sys.executable, "-m", "services.membership", "migrate"], cwd=ROOT, env=production_env,
                       check=True, capture_output=True, timeout=60)
        wait_for(lambda: all(health(grpc.insecure_channel(f"127.0.0.1:{port}")) == 1 for _ in range(6)))

        admin = Authed(pb_grpc.MembershipServiceStub(channel), ADMIN_KEY)
        shop_id = "prod-" + uuid.uuid4().hex[:8]
        key = admin.CreateProgram(pb.CreateProgramRequest(request_id="p", shop_id=shop_id, name="Prod")).api_key
        api = Authed(pb_grpc.MembershipServiceStub(channel), key)
        member = api.JoinMember(pb.JoinMemberRequest(request_id="j", shop_id=shop_id, buyer_id="b", join_channel=1))
        api.RecordOrder(pb.RecordOrderRequest(shop_id=shop_id, order_id="o", buyer_id="b", amount_fen=100_000))
        api.CompleteOrder(pb.CompleteOrderRequest(shop_id=shop_id, order_id="o"))
        # Fresh connections land on either worker; each sees the same tier through Redis.
        for _ in range(6):
            with grpc.insecure_channel(f"127.0.0.1:{port}") as fresh:
                tier = Authed(pb_grpc.MembershipServiceStub(fresh), key).GetTier(
                    pb.GetTierRequest(shop_id=shop_id, member_id=member.member_id))
                assert tier.tier.code == "silver"

        # SIGTERM while a call is in flight: an export streaming 2,001 members (more than flow control
        # lets the server send ahead), read slowly. The servers stop taking new calls, but the export
        # runs to its end before the process exits.
        for batch in range(2):
            api.ImportMembers(pb.ImportMembersRequest(request_id=f"i{batch}", shop_id=shop_id, members=[
                pb.ImportedMember(buyer_id=f"imported-{batch}-{i}") for i in range(1000)]))
        stream = api.ExportMembers(pb.ExportMembersRequest(shop_id=shop_id))
        first = next(stream)
        serve.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        rest = []
        for member in stream:
            rest.append(member)
            time.sleep(0.0005)
        assert len(rest) + 1 == 2001 and first.member_id
        out, _ = serve.communicate(timeout=30)
        assert serve.returncode == 0, out
        assert "Traceback" not in out
    finally:
        channel.close()
        if serve.poll() is None:
            serve.kill()


def test_points_cron_commands_run_against_a_migrated_database(tmp_path: Path) -> None:
    env = {**os.environ, "LOYALTY_POINTS_DB_URL": f"sqlite:///{tmp_path / 'points.db'}",
           "LOYALTY_ADMIN_KEY": ADMIN_KEY, "LOYALTY_AUTH_SECRET": AUTH_SECRET.decode(), "LOYALTY_PII_KEY": PII_KEY,
           "LOYALTY_REDIS_URL": ""}

    def run(command: str) -> str:
        done = subprocess.run([sys.executable, "-m", "services.points", command], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stderr

    run("migrate")
    assert "expired 0 points in 0 lots of 0 members" in run("expire")
    assert "settled 0 daily pools" in run("settle-pools")
