"""What a benchmark runs against: the PostgreSQL and Redis servers (started by
scripts/test-backends.sh, as for `make test`), fresh databases on them, the services in
production shape (`migrate`, then `serve` with N workers), the HTTP gateway in front of them,
the embedded suite, and the no-op floor server. Every process started here is stopped by
`Processes.stop_all`, whatever happens."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
ADMIN_KEY = "admin_bench_" + uuid.uuid4().hex
AUTH_SECRET = "bench-secret-" + uuid.uuid4().hex
PII_KEY = base64.b64encode(os.urandom(32)).decode()
GATEWAY_TOKEN_KEY = "bench-token-key-" + uuid.uuid4().hex
SERVICES = ("membership", "points")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without the caller's LOYALTY_* settings, so only ours apply."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")}
    env.update(extra)
    return env


class Processes:
    """The processes a run started. Each leads its own session, so stopping it stops the worker
    processes it forked too."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.running: list[subprocess.Popen] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, grace: float = 5.0) -> None:
        """SIGTERM (a graceful stop), then SIGKILL to its whole process group after `grace`."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self.running)):
            self.stop(proc)

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


@dataclass
class Backends:
    """The PostgreSQL and Redis servers every scenario shares; each stack gets fresh databases."""

    pg_url: str
    redis_url: str
    created: list[str] = field(default_factory=list)

    @classmethod
    def from_env(cls) -> Backends:
        pg, redis_url = os.environ.get("LOYALTY_TEST_PG_URL"), os.environ.get("LOYALTY_TEST_REDIS_URL")
        if not (pg and redis_url):
            sys.exit("bench: needs LOYALTY_TEST_PG_URL and LOYALTY_TEST_REDIS_URL; run it through `make bench`, "
                     "which starts PostgreSQL and Redis")
        return cls(pg, redis_url)

    def create_database(self, prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self._admin(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.pg_url.rsplit("/", 1)[0] + "/" + name

    def drop_databases(self) -> None:
        for name in self.created:
            with contextlib.suppress(Exception):
                self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()

    def flush_redis(self) -> None:
        """Streams and consumer groups are named per service, so each stack starts on an empty Redis."""
        client = redis.Redis.from_url(self.redis_url)
        client.flushall()
        client.close()

    @property
    def pg_params(self) -> dict[str, str]:
        """Host, port, user and database of the PostgreSQL URL, for pgbench."""
        url = self.pg_url.split("://", 1)[1]
        user, rest = url.split("@", 1)
        hostport, dbname = rest.split("/", 1)
        host, port = hostport.rsplit(":", 1)
        return {"host": host, "port": port, "user": user, "dbname": dbname}

    def _admin(self, statement: str) -> None:
        engine = create_engine(self.pg_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(statement))
        finally:
            engine.dispose()


def health_status(target: str, timeout: float = 1.0) -> int:
    """The health Check's status over a fresh connection (so over a random worker), -1 on error."""
    with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout).status
        except grpc.RpcError:
            return -1


def wait_serving(target: str, proc: subprocess.Popen, processes: Processes, name: str, timeout: float = 90) -> None:
    """Until several fresh connections in a row (so every worker, very likely) answer SERVING."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{processes.log_tail(name)}")
        if all(health_status(target) == health_pb2.HealthCheckResponse.SERVING for _ in range(8)):
            return
        time.sleep(0.3)
    raise RuntimeError(f"{name} did not answer SERVING within {timeout:.0f} s:\n{processes.log_tail(name)}")


@dataclass
class Stack:
    """Running servers, by name: their loopback addresses."""

    targets: dict[str, str]
    procs: list[subprocess.Popen]
    processes: Processes
    db_urls: dict[str, str] = field(default_factory=dict)  # each service's database, for a loader

    def stop(self) -> None:
        for proc in self.procs:
            self.processes.stop(proc)


def start_production(processes: Processes, backends: Backends, *, workers: int, label: str,
                     services: tuple[str, ...] = SERVICES) -> Stack:
    """The services as production runs them: own databases, Redis, `migrate`, then `serve`."""
    backends.flush_redis()
    env = _clean_env(
        LOYALTY_REDIS_URL=backends.redis_url, LOYALTY_ADMIN_KEY=ADMIN_KEY, LOYALTY_AUTH_SECRET=AUTH_SECRET,
        LOYALTY_PII_KEY=PII_KEY, LOYALTY_HOST="127.0.0.1", LOYALTY_WORKERS=str(workers), LOYALTY_GRACE_SECONDS="2",
        LOYALTY_DATA_DIR=str(processes.logs / "data"),
    )
    targets: dict[str, str] = {}
    for name in services:
        env[f"LOYALTY_{name.upper()}_DB_URL"] = backends.create_database(f"bench_{name}")
        if name == "membership":  # its data keys live in a database of their own
            env["LOYALTY_MEMBERSHIP_KEYS_DB_URL"] = backends.create_database("bench_membership_keys")
        port = free_port()
        env[f"LOYALTY_{name.upper()}_PORT"] = str(port)
        targets[name] = f"127.0.0.1:{port}"
    stack = Stack(targets, [], processes, {name: env[f"LOYALTY_{name.upper()}_DB_URL"] for name in services})
    try:
        for name in services:
            migrate = subprocess.run([sys.executable, "-m", f"services.{name}", "migrate"], cwd=ROOT, env=env,
                                     capture_output=True, text=True, timeout=180)
            if migrate.returncode != 0:
                raise RuntimeError(f"{name} migrate failed:\n{migrate.stderr[-2000:]}")
            stack.procs.append(processes.start(f"{label}-{name}", [sys.executable, "-m", f"services.{name}", "serve"],
                                               env))
        for name, proc in zip(services, stack.procs, strict=True):
            wait_serving(targets[name], proc, processes, f"{label}-{name}")
    except BaseException:
        stack.stop()
        raise
    return stack


def start_embedded(processes: Processes, *, label: str) -> Stack:
    """`python -m services.suite run`: every service in one process on SQLite, without the demo shop."""
    ports = {name: free_port() for name in SERVICES}
    env = _clean_env(
        LOYALTY_DATA_DIR=str(processes.logs / f"{label}-data"), LOYALTY_HOST="127.0.0.1", LOYALTY_GRACE_SECONDS="2",
        LOYALTY_ADMIN_KEY=ADMIN_KEY,
        LOYALTY_AUTH_SECRET=AUTH_SECRET, LOYALTY_PII_KEY=PII_KEY,
        **{f"LOYALTY_{name.upper()}_PORT": str(port) for name, port in ports.items()},
    )
    proc = processes.start(label, [sys.executable, "-m", "services.suite", "run", "--no-seed"], env)
    stack = Stack({name: f"127.0.0.1:{port}" for name, port in ports.items()}, [proc], processes)
    try:
        for target in stack.targets.values():
            wait_serving(target, proc, processes, label)
    except BaseException:
        stack.stop()
        raise
    return stack


def start_noop(processes: Processes, *, workers: int, label: str) -> Stack:
    """The floor server, with as many workers as the services it is compared with."""
    port = free_port()
    env = _clean_env(LOYALTY_WORKERS=str(workers))
    proc = processes.start(label, [sys.executable, "-m", "bench.noop", str(port)], env)
    stack = Stack({"noop": f"127.0.0.1:{port}"}, [proc], processes)
    try:
        wait_serving(stack.targets["noop"], proc, processes, label)
    except BaseException:
        stack.stop()
        raise
    return stack


def start_gateway(processes: Processes, backends: Backends, services: Stack, *, workers: int, label: str) -> Stack:
    """`python -m gateway serve` in front of `services` (rate limits in the run's Redis), once its
    readiness probe answers: target "http" is its base URL."""
    port = free_port()
    env = _clean_env(
        LOYALTY_AUTH_SECRET=AUTH_SECRET, LOYALTY_GATEWAY_TOKEN_KEY=GATEWAY_TOKEN_KEY,
        LOYALTY_REDIS_URL=backends.redis_url, LOYALTY_HOST="127.0.0.1", LOYALTY_GATEWAY_PORT=str(port),
        LOYALTY_GATEWAY_WORKERS=str(workers),
        # The card's speed, not the limits, is measured: limits stay on (their Redis round trip is
        # part of every request), high enough that the load's few buyers are never refused.
        LOYALTY_GATEWAY_BUYER_RATE="100000", LOYALTY_GATEWAY_SHOP_RATE="1000000",
        LOYALTY_ACCESS_LOG="0",  # uvicorn's line per request; the services' access logs stay sampled
        LOYALTY_DATA_DIR=str(processes.logs / "data"),
        **{f"LOYALTY_{name.upper()}_ADDR": target for name, target in services.targets.items()},
    )
    proc = processes.start(label, [sys.executable, "-m", "gateway", "serve"], env)
    stack = Stack({"http": f"http://127.0.0.1:{port}"}, [proc], processes)
    try:
        wait_http_ready(stack.targets["http"] + "/readyz", proc, processes, label)
    except BaseException:
        stack.stop()
        raise
    return stack


def wait_http_ready(url: str, proc: subprocess.Popen, processes: Processes, name: str, timeout: float = 60) -> None:
    """Until several requests in a row (so every worker, very likely) answer 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{processes.log_tail(name)}")
        if all(_http_ok(url) for _ in range(8)):
            return
        time.sleep(0.3)
    raise RuntimeError(f"{name} was not ready within {timeout:.0f} s:\n{processes.log_tail(name)}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return answer.status == 200
    except OSError:  # refused, or an error status (HTTPError is an OSError)
        return False
