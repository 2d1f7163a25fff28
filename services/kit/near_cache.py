"""A near-cache in front of Redis: values read from Redis kept in the process until Redis's
server-assisted invalidation (CLIENT TRACKING, broadcast mode) says they changed, so a cached
read rarely leaves the process and a write in any process is seen by the next read in this one.
Used by cache.RedisCache."""

from __future__ import annotations

import logging
import select
import threading
import time
import weakref

import redis

log = logging.getLogger("loyalty.cache")


class NearCache:
    """The values this process last read from Redis, kept until Redis says they changed.

    A dedicated RESP3 connection has CLIENT TRACKING on in broadcast mode for every key under
    `prefix`, so Redis pushes an invalidation for each write, delete or expiry of such a key,
    by any process. Every lookup first applies the invalidations already received (one poll of
    that socket when there are none): a write that returned in one process is seen by the next
    read in any other, since Redis sends the invalidation before the writer can commit. A value
    read from Redis is kept only if no invalidation of its key arrived meanwhile, and only until
    its Redis TTL. While the tracking connection is down nothing is served from here."""

    def __init__(self, client: redis.Redis, *, prefix: str, max_entries: int, drain_seconds: float = 1.0):
        self._client = client
        self._prefix = prefix
        self._max = max_entries
        self._values: dict[str, tuple[float, bytes]] = {}  # key -> (monotonic expiry, value)
        self._filling: dict[str, object] = {}  # key -> token of the read in flight
        self._lock = threading.Lock()
        self._conn: redis.Connection | None = None
        self._poll = select.poll()
        self._local = threading.local()  # each thread's poll object (one may not be shared)
        self._draining = False
        self._stopped = threading.Event()
        # Applies invalidations while no call does, so an idle process never lets them pile up.
        self_ref = weakref.ref(self)
        threading.Thread(target=_drain_periodically, args=(self_ref, self._stopped, drain_seconds),
                         name="near-cache", daemon=True).start()

    def connect(self) -> bool:
        """Opens the tracking connection (with an empty cache); False if Redis does not answer."""
        kwargs = dict(self._client.connection_pool.connection_kwargs)
        kwargs["protocol"] = 3
        conn = redis.Connection(**kwargs)
        try:
            conn.connect()
            conn._parser.set_invalidation_push_handler(self._invalidated)
            conn.send_command("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", self._prefix)
            conn.read_response()
        except redis.RedisError:
            conn.disconnect()
            return False
        with self._lock:
            self._values.clear()
            self._filling.clear()
            self._conn = conn
            self._poll = select.poll()
            self._poll.register(conn._sock.fileno(), select.POLLIN)
            return self._drain(poll=False)  # pushes may have come in with the reply

    @property
    def live(self) -> bool:
        return self._conn is not None

    def close(self) -> None:
        self._stopped.set()
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        """Forgets everything (under the lock): invalidations may have been missed."""
        if self._conn is not None:
            self._conn.disconnect()
            self._conn = None
        self._values.clear()
        self._filling.clear()

    def _invalidated(self, push: list) -> None:
        keys = push[1]
        if keys is None:  # FLUSHDB / FLUSHALL
            self._values.clear()
            self._filling.clear()
            return
        for key in keys:
            key = key.decode() if isinstance(key, bytes) else key
            self._values.pop(key, None)
            self._filling.pop(key, None)

    def _drain(self, *, poll: bool = True) -> bool:
        """Applies the invalidations received (under the lock); False if tracking is down."""
        conn = self._conn
        if conn is None:
            return False
        # Each drain ends with the parser's buffer empty, so nothing new is waiting unless the
        # socket has data: one poll() instead of redis-py's non-blocking read attempt.
        if poll and not self._poll.poll(0):
            return True
        self._draining = True  # lookups without the lock wait for it (see get)
        try:
            while conn.can_read(timeout=0):
                # Data is waiting: a message is never left half-read (that would desynchronise it).
                conn.read_response(push_request=True, timeout=1.0)
        except (redis.RedisError, OSError) as exc:
            log.warning("near-cache invalidations lost (%s); reading through to redis", exc)
            self._drop()
            return False
        finally:
            self._draining = False
        return True

    def _waiting(self, conn: redis.Connection) -> bool:
        """Whether invalidations may be waiting on the socket, asked without the lock."""
        local = self._local
        if getattr(local, "conn", None) is not conn:
            local.poll = select.poll()
            local.poll.register(conn._sock.fileno(), select.POLLIN)
            local.conn = conn
        return bool(local.poll.poll(0))

    def drain(self) -> bool:
        with self._lock:
            return self._drain()

    def get(self, key: str) -> bytes | None:
        # The lock only when invalidations are waiting or being applied: a thread holding it
        # while poll() releases the GIL would otherwise queue every other lookup behind it. The
        # socket is polled before the flag is read, and a drain sets the flag before it reads
        # the socket, so a lookup never misses an invalidation that has arrived.
        conn = self._conn
        if conn is None:
            return None
        if self._waiting(conn) or self._draining:
            with self._lock:
                if not self._drain():
                    return None
        entry = self._values.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            return None
        return entry[1]

    def begin_fill(self, key: str) -> object | None:
        """A token for a read from Redis about to start, or None if tracking is down."""
        token = object()
        with self._lock:
            if not self._drain():
                return None
            self._filling[key] = token
        return token

    def end_fill(self, key: str, token: object, value: bytes | None, ttl_ms: int) -> None:
        """Keeps the value read (None: there was none) unless its key was invalidated since
        begin_fill()."""
        with self._lock:
            self._drain()  # a lost connection empties _filling: nothing is kept then
            if self._filling.get(key) is not token:
                return  # invalidated meanwhile, or a later read of the key took over
            del self._filling[key]
            if value is None:
                return
            if ttl_ms == -1:  # no expiry in Redis: still re-read now and then
                ttl_ms = 60_000
            if ttl_ms <= 0:
                return
            self._values[key] = (time.monotonic() + ttl_ms / 1000, value)
            if len(self._values) > self._max:
                del self._values[next(iter(self._values))]  # the oldest fill goes first

    def forget(self, keys: tuple[str, ...]) -> None:
        """This process's own writes leave its near-cache at once, before Redis's push arrives."""
        with self._lock:
            for key in keys:
                self._values.pop(key, None)
                self._filling.pop(key, None)


def _drain_periodically(ref: weakref.ref, stopped: threading.Event, seconds: float) -> None:
    while not stopped.wait(seconds):
        near = ref()
        if near is None:
            return
        near.drain()
        del near
