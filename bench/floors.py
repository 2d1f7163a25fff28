"""The database floors, measured on the same servers as the services: pgbench's simple-update
transaction on PostgreSQL and redis-benchmark's GET on Redis."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from urllib.parse import urlsplit

from bench.stack import Backends

PGBENCH_DB = "bench_pgbench"


def _pgbench() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"), key=lambda p: int(p.split("/")[4]))
    path = found[-1] if found else shutil.which("pgbench")
    if not path:
        raise RuntimeError("pgbench not found (it comes with the postgresql Debian package)")
    return path


class PgBench:
    """pgbench on a database of its own, initialised once."""

    def __init__(self, backends: Backends):
        params = backends.pg_params
        self.base = [_pgbench(), "-h", params["host"], "-p", params["port"], "-U", params["user"]]
        url = backends.create_database(PGBENCH_DB)
        self.dbname = url.rsplit("/", 1)[1]
        subprocess.run([*self.base, "-i", "-q", "-s", "1", self.dbname], check=True, capture_output=True,
                       timeout=300, env={**os.environ, "PGCONNECT_TIMEOUT": "10"})

    def simple_update(self, clients: int, seconds: float) -> float:
        """`pgbench -N` (simple update: one UPDATE, one SELECT, one INSERT per transaction): TPS."""
        done = subprocess.run([*self.base, "-N", "-n", "-c", str(clients), "-j", str(min(clients, 2)),
                               "-T", str(max(1, round(seconds))), self.dbname],
                              check=True, capture_output=True, text=True, timeout=seconds + 120)
        match = re.search(r"tps = ([\d.]+)", done.stdout)
        if not match:
            raise RuntimeError(f"pgbench printed no tps:\n{done.stdout}\n{done.stderr}")
        return float(match.group(1))


def redis_get(backends: Backends, *, requests: int, clients: int = 16) -> float:
    """redis-benchmark's GET: requests per second."""
    binary = shutil.which("redis-benchmark")
    if not binary:
        raise RuntimeError("redis-benchmark not found (it comes with the redis-tools / redis-server packages)")
    url = urlsplit(backends.redis_url)
    done = subprocess.run([binary, "-h", url.hostname or "127.0.0.1", "-p", str(url.port or 6379), "-t", "get",
                           "-n", str(requests), "-c", str(clients), "-q"],
                          check=True, capture_output=True, text=True, timeout=300)
    rates = re.findall(r"([\d.]+) requests per second", done.stdout)
    if not rates:
        raise RuntimeError(f"redis-benchmark printed no rate:\n{done.stdout}\n{done.stderr}")
    return float(rates[-1])
