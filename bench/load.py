"""The load client: a few long-lived client processes (spawned once), each with its own
connections and threads, so that calls spread over the SO_REUSEPORT workers and the client's
own GIL is not the bottleneck. Floors and subjects run through the same client.

A call is named by "module:function"; the function takes (channel, params, slot) and returns a
one-argument callable doing one call for a sequence number (given an aio channel, closed loops
await what it returns), so scenarios add their own calls."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import multiprocessing
import signal
import statistics
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

CallFactory = Callable[[grpc.Channel, dict[str, Any], int], Callable[[int], object]]
# Called by a job once it is set up (connected, imports done): tells the runner, and returns the
# wall-clock time at which every client process starts together (None: the run was called off).
WaitStart = Callable[[], float | None]
MAX_CALLS_PER_THREAD = 5_000_000  # a bound besides time, in case a clock misbehaves


class CallFailed(Exception):
    """A call answered with an error, for calls that are not gRPC (HTTP calls raise it): counted
    as an error like a failed RPC."""


def noop_call(channel: grpc.Channel, _params: dict[str, Any], _slot: int) -> Callable[[int], object]:
    """The floor: the standard health Check."""
    check = health_pb2_grpc.HealthStub(channel).Check
    request = health_pb2.HealthCheckRequest()
    return lambda _n: check(request, timeout=10)


def _factory(name: str) -> CallFactory:
    module, function = name.split(":")
    return getattr(importlib.import_module(module), function)


def _channels(target: str, count: int) -> list[grpc.Channel]:
    # A local subchannel pool gives each channel its own connection, hence its own worker.
    channels = [grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(count)]
    for channel in channels:
        grpc.channel_ready_future(channel).result(timeout=15)
    return channels


@dataclass(frozen=True)
class ClosedLoop:
    """Each thread calls again as soon as its call returns: throughput at saturation."""

    target: str
    call: str
    params: dict[str, Any]
    channels: int  # per client process
    threads: int  # per client process: calls in flight
    warmup: float
    duration: float

    client: str = "threads"  # or "aio": one event loop per process instead of a thread per call in flight

    def execute(self, index: int, _clients: int, wait_start: WaitStart) -> dict[str, Any]:
        slots = [index * self.threads + t for t in range(self.threads)]
        ran = asyncio.run(self._aio(slots, wait_start)) if self.client == "aio" else self._threads(slots, wait_start)
        if ran is None:
            return {}
        window, cpu = ran
        merged = array("d", itertools.chain.from_iterable(window.latencies))
        return {"latencies": merged.tobytes(), "errors": len(window.errors), "error_sample": window.errors[:3],
                "cpu_s": cpu, "calls_made": sum(window.made)}

    def _window(self, start_at: float) -> _Window:
        return _Window(start_at + self.warmup, start_at + self.warmup + self.duration, self.threads)

    def _threads(self, slots: list[int], wait_start: WaitStart) -> tuple[_Window, float] | None:
        """A thread per call in flight; the window and the CPU seconds it took."""
        channels = _channels(self.target, self.channels)
        try:
            make = _factory(self.call)
            calls = [make(channels[i % len(channels)], self.params, slot) for i, slot in enumerate(slots)]
            start_at = wait_start()
            if start_at is None:
                return None
            window = self._window(start_at)

            def loop(i: int) -> None:
                for n in range(MAX_CALLS_PER_THREAD):
                    begin, ok = time.time(), True
                    try:
                        calls[i](n)
                    except grpc.RpcError as exc:
                        ok = False
                        window.errors.append(f"{exc.code().name}: {exc.details()}")
                    if not window.note(i, n, begin, ok):
                        return

            threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(len(calls))]
            _sleep_until(start_at)
            cpu = time.process_time()
            for t in threads:
                t.start()
            for t in threads:
                t.join(self.warmup + self.duration + 60)
            return window, time.process_time() - cpu
        finally:
            for channel in channels:
                channel.close()

    async def _aio(self, slots: list[int], wait_start: WaitStart) -> tuple[_Window, float] | None:
        """One event loop for every call in flight; the window and the CPU seconds it took."""
        channels = [grpc.aio.insecure_channel(self.target, options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(self.channels)]
        try:
            for channel in channels:
                await asyncio.wait_for(channel.channel_ready(), 15)
            make = _factory(self.call)
            # The same call factories: on an aio channel their stubs return awaitables.
            calls = [make(channels[i % len(channels)], self.params, slot) for i, slot in enumerate(slots)]
            start_at = wait_start()
            if start_at is None:
                return None
            window = self._window(start_at)

            async def loop(i: int) -> None:
                for n in range(MAX_CALLS_PER_THREAD):
                    begin, ok = time.time(), True
                    try:
                        await calls[i](n)
                    except grpc.RpcError as exc:
                        ok = False
                        window.errors.append(f"{exc.code().name}: {exc.details()}")
                    if not window.note(i, n, begin, ok):
                        return

            await asyncio.sleep(max(0.0, start_at - time.time()))
            cpu = time.process_time()
            await asyncio.wait_for(asyncio.gather(*(loop(i) for i in range(len(calls)))),
                                   self.warmup + self.duration + 60)
            return window, time.process_time() - cpu
        finally:
            for channel in channels:
                await channel.close()


class _Window:
    """The measured window of a closed loop: latencies of the answers that arrive in it."""

    def __init__(self, measure_from: float, end: float, slots: int):
        self.measure_from, self.end = measure_from, end
        self.latencies = [array("d") for _ in range(slots)]
        self.made = [0] * slots
        self.errors: list[str] = []

    def note(self, slot: int, n: int, begin: float, ok: bool) -> bool:
        """Records one call; False once the window has closed."""
        done = time.time()
        self.made[slot] = n + 1
        if done >= self.end:
            return False
        # Failed calls are counted apart: only answers count as throughput.
        if ok and done >= self.measure_from:
            self.latencies[slot].append(done - begin)
        return True


@dataclass(frozen=True)
class OpenLoop:
    """Calls at a fixed total rate, whatever the answers' latency (as orders arrive at a sale);
    numbers n ≡ index (mod clients) are this process's, each due at start + n / rate."""

    target: str
    call: str
    params: dict[str, Any]
    channels: int
    threads: int
    rate: float
    count: int
    give_up_after: float  # seconds after start: calls not sent by then are not sent

    def execute(self, index: int, clients: int, wait_start: WaitStart) -> dict[str, Any]:
        # No gRPC target: the calls reach their server themselves (HTTP, named in params).
        channels = _channels(self.target, self.channels) if self.target else []
        try:
            make = _factory(self.call)
            calls = [make(channels[t % len(channels)] if channels else None, self.params, index * self.threads + t)
                     for t in range(self.threads)]
            start_at = wait_start()
            return {} if start_at is None else self._send(calls, index, clients, start_at)
        finally:
            for channel in channels:
                channel.close()

    def _send(self, calls: list[Callable[[int], object]], index: int, clients: int,
              start_at: float) -> dict[str, Any]:
        numbers = iter(range(index, self.count, clients))
        lock = threading.Lock()
        sent: list[tuple[int, float, float, bool]] = []  # number, due, done (wall clock), ok
        errors: list[str] = []
        give_up = start_at + self.give_up_after

        def loop(call: Callable[[int], object]) -> None:
            while True:
                with lock:
                    n = next(numbers, None)
                if n is None:
                    return
                due = start_at + n / self.rate
                if due > give_up or time.time() > give_up:
                    return
                _sleep_until(due)
                ok = True
                try:
                    call(n)
                except grpc.RpcError as exc:
                    ok = False
                    errors.append(f"{exc.code().name}: {exc.details()}")
                except CallFailed as exc:
                    ok = False
                    errors.append(str(exc))
                sent.append((n, due, time.time(), ok))

        _sleep_until(start_at)
        threads = [threading.Thread(target=loop, args=(c,), daemon=True) for c in calls]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.give_up_after + 60)
        return {"sent": sent, "errors": len(errors), "error_sample": errors[:3]}


def _sleep_until(when: float) -> None:
    delay = when - time.time()
    if delay > 0:
        time.sleep(delay)


def _client_main(conn: Connection, index: int, clients: int) -> None:
    # Ctrl-C reaches the whole process group; the runner stops its clients itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def wait_start() -> float | None:
        conn.send(("ready", None))
        return conn.recv()

    while True:
        try:
            job = conn.recv()
        except EOFError:  # the runner is gone
            return
        if job is None:
            return
        try:
            conn.send(("ok", job.execute(index, clients, wait_start)))
        except Exception as exc:  # reported to the runner, which fails the scenario
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


@dataclass
class LoadResult:
    """What the client processes saw over the measured window, summed."""

    calls: int
    duration: float
    latencies: list[float]
    errors: int
    error_sample: list[str] = field(default_factory=list)
    client_cpu_per_call: float = 0.0  # seconds of the client processes' CPU per call made

    @property
    def rate(self) -> float:
        return self.calls / self.duration

    def percentile(self, p: float) -> float:
        return percentile(self.latencies, p)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class LoadPool:
    """`clients` client processes (spawned: gRPC does not survive a fork), reused for every job."""

    def __init__(self, clients: int):
        self.clients = clients
        self._conns: list[Connection] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        self._start()

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        clients = self.clients
        for index in range(clients):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_client_main, args=(child, index, clients), daemon=True,
                               name=f"bench-client-{index}")
            proc.start()
            self._conns.append(parent)
            self._procs.append(proc)

    def run(self, job: ClosedLoop | OpenLoop, timeout: float) -> list[dict[str, Any]]:
        """Runs `job` on every client process, started together once all are set up; their
        results, in process order."""
        try:
            return self._run(job, timeout)
        except Exception:
            # A client that timed out or died leaves the pipes out of step: start afresh.
            self.close()
            self._start()
            raise

    def _run(self, job: ClosedLoop | OpenLoop, timeout: float) -> list[dict[str, Any]]:
        for conn in self._conns:
            conn.send(job)
        ready = [self._receive(conn, 60) for conn in self._conns]
        start_at = None if any(status != "ready" for status, _ in ready) else time.time() + 0.2
        for conn, (status, _) in zip(self._conns, ready, strict=True):
            if status == "ready":
                conn.send(start_at)
        deadline = time.monotonic() + timeout
        done = [self._receive(conn, deadline - time.monotonic()) if status == "ready" else (status, value)
                for conn, (status, value) in zip(self._conns, ready, strict=True)]
        failures = [value for status, value in done if status != "ok"]
        if failures:
            raise RuntimeError(f"client process failed: {failures[0]}")
        return [value for _, value in done]

    @staticmethod
    def _receive(conn: Connection, timeout: float) -> tuple[str, Any]:
        if not conn.poll(max(0.0, timeout)):
            raise TimeoutError(f"a client process did not answer within {timeout:.0f} s")
        return conn.recv()

    def closed_loop(self, job: ClosedLoop) -> LoadResult:
        parts = self.run(job, timeout=job.warmup + job.duration + 90)
        latencies: list[float] = []
        for part in parts:
            sample = array("d")
            sample.frombytes(part["latencies"])
            latencies.extend(sample)
        made = sum(p["calls_made"] for p in parts)
        return LoadResult(calls=len(latencies), duration=job.duration, latencies=latencies,
                          errors=sum(p["errors"] for p in parts),
                          error_sample=[e for p in parts for e in p["error_sample"]][:3],
                          client_cpu_per_call=sum(p["cpu_s"] for p in parts) / made if made else 0.0)

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for proc in self._procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        self._conns, self._procs = [], []


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
