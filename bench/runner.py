"""What every scenario shares: the run's profile (full, quick, selftest), its context (backends,
client pool, processes), the result rows, and floor/subject pairs measured interleaved."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.load import ClosedLoop, LoadPool, LoadResult, median
from bench.stack import Backends, Processes


@dataclass(frozen=True)
class Profile:
    """How long and how big; `full` is what README's table shows."""

    name: str
    pairs: int  # floor/subject pairs per figure; the figure is their median
    warmup: float  # seconds of load before each measured window
    duration: float  # seconds measured per window
    read_members: int
    spend_members: int
    earn_rate: float  # orders per second
    earn_seconds: float
    earn_warmup: float  # seconds of orders at the same rate before the measured ones (not counted)
    earn_members: int
    drain_seconds: float  # how long to wait for the last earns after the orders stop


PROFILES = {
    "full": Profile("full", pairs=5, warmup=2, duration=6, read_members=200, spend_members=1000,
                    earn_rate=200, earn_seconds=60, earn_warmup=5, earn_members=500, drain_seconds=60),
    "quick": Profile("quick", pairs=2, warmup=1, duration=3, read_members=50, spend_members=200,
                     earn_rate=200, earn_seconds=10, earn_warmup=2, earn_members=100, drain_seconds=20),
    "selftest": Profile("selftest", pairs=1, warmup=0.3, duration=1, read_members=10, spend_members=20,
                        earn_rate=20, earn_seconds=1, earn_warmup=0.5, earn_members=10, drain_seconds=15),
}


@dataclass
class Row:
    """One line of the table. `ratio` is measured / floor (None where there is no floor);
    `met` says whether the target holds (None where there is none)."""

    scenario: str
    what: str
    measured: str
    floor: str
    ratio: float | None
    target: str
    met: bool | None
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Context:
    profile: Profile
    backends: Backends
    pool: LoadPool
    processes: Processes
    workdir: Path
    client_threads: int  # calls in flight per client process in closed-loop reads
    client: str  # "threads" (sync stubs) or "aio"
    log: Callable[[str], None]

    def closed_loop(self, target: str, call: str, params: dict[str, Any] | None = None, *,
                    threads: int | None = None) -> LoadResult:
        """Saturating load on `target` with the profile's warm-up and window; a connection per
        call in flight, so that they spread over the SO_REUSEPORT workers."""
        threads = threads or self.client_threads
        job = ClosedLoop(target=target, call=call, params=params or {}, channels=threads, threads=threads,
                         warmup=self.profile.warmup, duration=self.profile.duration, client=self.client)
        return self.pool.closed_loop(job)


@dataclass
class Pairs:
    """Floor and subject measured alternately; ratios per pair, medians over the pairs."""

    floors: list[Any] = field(default_factory=list)
    subjects: list[Any] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return median(self.ratios)


def interleave(pairs: int, floor: Callable[[], Any], subject: Callable[[], Any],
               value: Callable[[Any], float]) -> Pairs:
    """Runs floor then subject, then subject then floor, and so on, so that a drift of the machine
    weighs on both alike."""
    result = Pairs()
    for i in range(pairs):
        if i % 2 == 0:
            f, s = floor(), subject()
        else:
            s, f = subject(), floor()
        result.floors.append(f)
        result.subjects.append(s)
        fv, sv = value(f), value(s)
        result.ratios.append(sv / fv if fv > 0 else math.nan)
    return result


def load_summary(results: list[LoadResult]) -> dict[str, Any]:
    """The medians of several windows, and every window's figures for the JSON."""
    return {
        "rate": median([r.rate for r in results]),
        "p50_ms": median([r.percentile(50) * 1000 for r in results]),
        "p99_ms": median([r.percentile(99) * 1000 for r in results]),
        "errors": sum(r.errors for r in results),
        "error_sample": [e for r in results for e in r.error_sample][:3],
        # The load client's own cost: if it nears the server's, the client is what limits the rate.
        "client_cpu_us_per_call": median([r.client_cpu_per_call * 1e6 for r in results]),
        "windows": [{"rate": r.rate, "p50_ms": r.percentile(50) * 1000, "p99_ms": r.percentile(99) * 1000,
                     "errors": r.errors} for r in results],
    }


def fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}/s"


def fmt_ms(ms: float) -> str:
    if ms >= 10_000:
        return f"{ms / 1000:,.1f} s"
    return f"{ms:,.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
