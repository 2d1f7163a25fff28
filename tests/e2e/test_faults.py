"""Services in production shape (`python -m services.<svc> serve`, one worker) under faults, on a
PostgreSQL and a Redis of the test's own that it stops and restarts: calls answer UNAVAILABLE
(never INTERNAL) while PostgreSQL is away and succeed again once it is back, health follows the
database, an outage logs a few lines, `status` reports consumer lag, and an idle service uses
next to no CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loyalty.membership.v1 import membership_service_pb2 as pb
from loyalty.membership.v1 import membership_service_pb2_grpc as pb_grpc
from sqlalchemy import create_engine, text

from tests.backends import OwnPostgres, OwnRedis, free_port, postgres_bin, wait_until
from tests.conftest import ADMIN_KEY, AUTH_SECRET, PII_KEY, Authed, failure_of
from tests.integration.test_overload import retry_delay

ROOT = Path(__file__).resolve().parents[2]
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
pytestmark = [
    pytest.mark.production,
    pytest.mark.skipif(not os.environ.get("LOYALTY_TEST_REDIS_SERVER") or postgres_bin() is None,
                       reason="needs PostgreSQL and redis-server binaries: run through scripts/test-backends.sh"),
]


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def new_database(pg: OwnPostgres) -> str:
    name = "faults_" + uuid.uuid4().hex[:8]
    engine = create_engine(pg.url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return pg.url.rsplit("/", 1)[0] + "/" + name


def production_env(pg: OwnPostgres, redis_url: str) -> dict[str, str]:
    env = {**os.environ, "LOYALTY_REDIS_URL": redis_url, "LOYALTY_ADMIN_KEY": ADMIN_KEY,
           "LOYALTY_AUTH_SECRET": AUTH_SECRET.decode(), "LOYALTY_PII_KEY": PII_KEY, "LOYALTY_HOST": "127.0.0.1",
           "LOYALTY_WORKERS": "1", "LOYALTY_GRACE_SECONDS": "2", "LOYALTY_LOG_LEVEL": "WARNING",
           "LOYALTY_ACCESS_LOG": "0", "LOYALTY_AUTO_MIGRATE": "1"}
    for service in ("membership", "points"):
        env[f"LOYALTY_{service.upper()}_DB_URL"] = new_database(pg)
        env[f"LOYALTY_{service.upper()}_PORT"] = str(free_port())
    env["LOYALTY_MEMBERSHIP_KEYS_DB_URL"] = new_database(pg)  # membership's key store, a database of its own
    return env


class Served:
    """`python -m services.<name> serve`, its log kept in a file."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self._log = log_path.open("a")
        self.process = subprocess.Popen([sys.executable, "-m", f"services.{name}", "serve"], cwd=ROOT, env=env,
                                        stdout=self._log, stderr=subprocess.STDOUT)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{env[f'LOYALTY_{name.upper()}_PORT']}")
        wait_until(lambda: self.health() == SERVING, f"{name} serves", timeout=60)

    def health(self) -> int:
        assert self.process.poll() is None, self.log_path.read_text()
        try:
            return health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=1).status
        except grpc.RpcError:
            return -1

    def lines(self) -> list[str]:
        return self.log_path.read_text().splitlines()

    def stop(self) -> None:
        self.channel.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


class Load(threading.Thread):
    """Calls `call` about a hundred times a second, recording each outcome's code and duration."""

    def __init__(self, call: Callable[[int], object]):
        super().__init__(daemon=True)
        self.call = call
        self.outcomes: list[tuple[str, float]] = []
        self._stopped = threading.Event()

    def run(self) -> None:
        i = 0
        while not self._stopped.is_set():
            started = time.monotonic()
            try:
                self.call(i)
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name
            self.outcomes.append((code, time.monotonic() - started))
            i += 1
            self._stopped.wait(0.01)

    def count(self, code: str) -> int:
        return sum(1 for c, _ in list(self.outcomes) if c == code)

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=30)


def new_shop(channel: grpc.Channel) -> tuple[str, Authed]:
    admin = Authed(pb_grpc.MembershipServiceStub(channel), ADMIN_KEY)
    shop_id = "faults-" + uuid.uuid4().hex[:8]
    key = admin.CreateProgram(pb.CreateProgramRequest(request_id=uuid.uuid4().hex, shop_id=shop_id, name="F")).api_key
    return shop_id, Authed(pb_grpc.MembershipServiceStub(channel), key)


def joiner(shop_id: str, api: Authed) -> Callable[[int], object]:
    def join(_: int) -> object:
        return api.JoinMember(pb.JoinMemberRequest(request_id=uuid.uuid4().hex, shop_id=shop_id,
                                                   buyer_id=uuid.uuid4().hex, join_channel=1))
    return join


def test_postgres_away_answers_unavailable_and_the_service_recovers_by_itself(
    own_postgres: OwnPostgres, own_redis: OwnRedis, tmp_path: Path
) -> None:
    membership = Served("membership", production_env(own_postgres, own_redis.url), tmp_path / "membership.log")
    load = None
    try:
        shop_id, api = new_shop(membership.channel)
        join = joiner(shop_id, api)
        load = Load(join)
        load.start()
        wait_until(lambda: load.count("OK") >= 5, "calls succeed")
        logged_before = len(membership.lines())

        own_postgres.stop()
        wait_until(lambda: membership.health() == NOT_SERVING, "health says NOT_SERVING", timeout=5)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            join(0)
        took = time.monotonic() - started
        failure = failure_of(caught.value)
        assert (failure.code, failure.reason, failure.domain) == (
            grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE", "membership.loyalty")
        assert retry_delay(caught.value) > 0 and took < 0.5  # known away: refused at once
        time.sleep(3)

        own_postgres.start()
        wait_until(lambda: membership.health() == SERVING, "health says SERVING again", timeout=10)
        recovered = load.count("OK")
        wait_until(lambda: load.count("OK") >= recovered + 5, "calls succeed again")
        join(0)
        load.stop()

        codes = {code for code, _ in load.outcomes}
        assert codes == {"OK", "UNAVAILABLE"}, codes  # never INTERNAL
        assert max(took for code, took in load.outcomes if code == "UNAVAILABLE") < 2.5  # bounded retry
        outage_log = membership.lines()[logged_before:]
        assert len(outage_log) <= 6, outage_log
        assert any("unavailable" in line for line in outage_log) and any("is back" in line for line in outage_log)
        assert not any("Traceback" in line or '"ERROR"' in line for line in outage_log), outage_log
    finally:
        if load is not None:
            load.stop()
        membership.stop()


def test_the_key_store_away_turns_health_not_serving_and_calls_unavailable(
    own_postgres: OwnPostgres, own_redis: OwnRedis, tmp_path: Path
) -> None:
    keys_postgres = OwnPostgres()  # membership's key store on a server of its own, stopped alone
    membership = None
    try:
        keys_postgres.start()
        env = production_env(own_postgres, own_redis.url)
        env["LOYALTY_MEMBERSHIP_KEYS_DB_URL"] = new_database(keys_postgres)
        membership = Served("membership", env, tmp_path / "membership.log")
        shop_id, api = new_shop(membership.channel)
        join = joiner(shop_id, api)
        join(0)

        keys_postgres.stop()
        wait_until(lambda: membership.health() == NOT_SERVING, "health says NOT_SERVING", timeout=5)
        with pytest.raises(grpc.RpcError) as caught:
            join(1)  # a join makes the buyer's data key
        failure = failure_of(caught.value)
        assert (failure.code, failure.reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
        report, code = status("membership", env)
        assert (code, report["health"], report["database"]) == (1, "NOT_SERVING", "unreachable")

        keys_postgres.start()
        wait_until(lambda: membership.health() == SERVING, "health says SERVING again", timeout=10)
        join(2)
        assert status("membership", env)[0]["database"] == "reachable"
    finally:
        if membership is not None:
            membership.stop()
        keys_postgres.destroy()


def test_redis_stopped_under_load_fails_no_call_loses_no_event_and_logs_a_few_lines(
    own_postgres: OwnPostgres, own_redis: OwnRedis, tmp_path: Path
) -> None:
    membership = Served("membership", production_env(own_postgres, own_redis.url), tmp_path / "membership.log")
    load = None
    try:
        shop_id, api = new_shop(membership.channel)
        member_id = api.JoinMember(pb.JoinMemberRequest(request_id="first", shop_id=shop_id, buyer_id="b",
                                                        join_channel=1)).member_id
        join = joiner(shop_id, api)

        def join_and_read(i: int) -> object:
            if i % 2:
                return api.GetTier(pb.GetTierRequest(shop_id=shop_id, member_id=member_id))
            return join(i)

        load = Load(join_and_read)
        load.start()
        wait_until(lambda: load.count("OK") >= 10, "calls succeed")
        logged_before = len(membership.lines())

        own_redis.stop()
        time.sleep(5)
        own_redis.start()
        time.sleep(1)
        load.stop()

        assert {code for code, _ in load.outcomes} == {"OK"}
        joins = 1 + sum(1 for i, (code, _) in enumerate(load.outcomes) if i % 2 == 0)
        redis_client = own_redis.client()
        wait_until(lambda: redis_client.xlen("loyalty.membership.v1") >= joins + 1,
                   "every event is published once redis is back", timeout=30)
        redis_client.close()
        outage_log = membership.lines()[logged_before:]
        assert len(outage_log) <= 8, outage_log
        assert not any("Traceback" in line for line in outage_log), outage_log
        # The relay and membership's consumer (of points' stream) back off while the bus is away,
        # each on its own schedule (a handful of tries over these seconds), however many commits
        # wake the relay meanwhile.
        (back,) = [json.loads(line) for line in outage_log if "redis bus is back" in line]
        assert back["failures"] <= 24 < joins / 4, back
    finally:
        if load is not None:
            load.stop()
        membership.stop()


def status(service: str, env: dict[str, str]) -> tuple[dict, int]:
    done = subprocess.run([sys.executable, "-m", f"services.{service}", "status"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    return json.loads(done.stdout), done.returncode


def test_status_reports_health_database_and_how_far_each_consumer_group_is_behind(
    own_postgres: OwnPostgres, own_redis: OwnRedis, tmp_path: Path
) -> None:
    env = production_env(own_postgres, own_redis.url)
    Served("points", env, tmp_path / "points.log").stop()  # its consumer group exists, nobody reads it
    membership = Served("membership", env, tmp_path / "membership.log")
    try:
        shop_id, api = new_shop(membership.channel)
        join = joiner(shop_id, api)
        for i in range(3):
            join(i)
        redis_client = own_redis.client()
        wait_until(lambda: redis_client.xlen("loyalty.membership.v1") >= 4, "the events are published")
        published = redis_client.xlen("loyalty.membership.v1")
        redis_client.close()
        time.sleep(1)

        report, code = status("points", env)
        assert code == 1 and report["health"] == "UNREACHABLE"
        assert (report["database"], report["schema"]) == ("reachable", "current")
        (lag,) = report["consumers"]
        assert lag["stream"] == "loyalty.membership.v1" and lag["events_behind"] == published
        assert lag["seconds_behind"] >= 1

        points = Served("points", env, tmp_path / "points.log")
        try:
            wait_until(lambda: status("points", env)[0]["consumers"][0]["events_behind"] == 0,
                       "points caught up", timeout=30)
            report, code = status("points", env)
            assert code == 0 and report["health"] == "SERVING"
            assert report["consumers"][0]["seconds_behind"] == 0
        finally:
            points.stop()
    finally:
        membership.stop()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_an_idle_service_uses_next_to_no_cpu(own_postgres: OwnPostgres, own_redis: OwnRedis, tmp_path: Path) -> None:
    # Points is the busiest when idle: relay, consumer, heartbeat and health watcher all run.
    points = Served("points", production_env(own_postgres, own_redis.url), tmp_path / "points.log")
    try:
        time.sleep(2)
        before = cpu_seconds(points.process.pid)
        time.sleep(5)
        used = cpu_seconds(points.process.pid) - before
        assert used < 0.25, f"{used:.2f} CPU seconds in 5 s of idling"
    finally:
        points.stop()
