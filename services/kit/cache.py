"""Cache-aside for hot reads: an in-process LRU with TTL, or Redis with an in-process near-cache
in front of it. Keys carry the shop as a Redis Cluster hash tag. Redis unavailable means slower,
not broken: reads miss, and deletes that could not be sent are retried once Redis answers again.

A write fences its keys before it commits and deletes them after: while fenced, reads miss and
cannot fill the cache, so a value read before the commit is never served after it. Readers fill
with add() (only where nothing, not even a fence, is)."""

from __future__ import annotations

import logging
import select
import threading
import time
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Protocol

import redis

if TYPE_CHECKING:
    from services.kit.storage import UnitOfWork

log = logging.getLogger("loyalty.cache")


KEY_PREFIX = "loyalty:"


def cache_key(shop_id: str, *parts: str) -> str:
    return KEY_PREFIX + "{" + shop_id + "}:" + ":".join(parts)


FENCE_SECONDS = 5.0  # how long a fence outlives a writer that never got to lift it
AFTER_COMMIT_FENCE_SECONDS = 0.5  # after a commit: longer than a read between database and cache
_FENCE = b"\x00fence"


class Cache(Protocol):
    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl: float) -> None: ...

    def add(self, key: str, value: bytes, ttl: float) -> None:
        """Stores the value unless the key holds anything (a value or a fence)."""

    def fence(self, *keys: str, seconds: float = FENCE_SECONDS) -> None:
        """For `seconds` (or until deleted) the keys read as missing and add() skips them."""

    def delete(self, *keys: str) -> None: ...


def invalidate_on_commit(uow: UnitOfWork, cache: Cache, keys: list[str]) -> None:
    """Fences the keys now, and once the transaction committed fences them again for a moment
    (AFTER_COMMIT_FENCE_SECONDS): a reader that read the database before the commit but fills
    the cache after it finds the fence and leaves the cache empty."""
    for i in range(0, len(keys), 1000):
        cache.fence(*keys[i : i + 1000])
    uow.after_commit(lambda: [cache.fence(*keys[i : i + 1000], seconds=AFTER_COMMIT_FENCE_SECONDS)
                              for i in range(0, len(keys), 1000)])


class LocalCache:
    """Bounded, TTL'd, thread-safe; for one process (the embedded default, and per-process
    memos of any value)."""

    def __init__(self, max_entries: int = 100_000):
        self._data: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries

    def get(self, key: str) -> Any:
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            if entry[0] < time.monotonic():
                del self._data[key]
                return None
            if entry[1] is _FENCE:
                return None
            self._data.move_to_end(key)
            return entry[1]

    def set(self, key: str, value: Any, ttl: float) -> None:
        with self._lock:
            self._store(key, value, ttl)

    def _store(self, key: str, value: Any, ttl: float) -> None:
        self._data[key] = (time.monotonic() + ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def add(self, key: str, value: Any, ttl: float) -> None:
        with self._lock:
            entry = self._data.get(key)
            if entry is not None and entry[0] >= time.monotonic():
                return
            self._store(key, value, ttl)

    def fence(self, *keys: str, seconds: float = FENCE_SECONDS) -> None:
        with self._lock:
            for key in keys:
                self._store(key, _FENCE, seconds)

    def delete(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._data.pop(key, None)


class NearCache:
    """The values this process last read from Redis, kept until Redis says they changed.

    A dedicated RESP3 connection has CLIENT TRACKING on in broadcast mode for every key under
    KEY_PREFIX, so Redis pushes an invalidation for each write, delete or expiry of such a key,
    by any process. Every lookup first applies the invalidations already received (one poll of
    that socket when there are none): a write that returned in one process is seen by the next
    read in any other, since Redis sends the invalidation before the writer can commit. A value
    read from Redis is kept only if no invalidation of its key arrived meanwhile, and only until
    its Redis TTL. While the tracking connection is down nothing is served from here."""

    def __init__(self, client: redis.Redis, *, max_entries: int, drain_seconds: float = 1.0):
        self._client = client
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
            conn.send_command("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", KEY_PREFIX)
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


class RedisCache:
    """Shared by every process and replica. After a failure it stops asking Redis for a short
    while, so an outage costs one timeout, not one per call. Keys under KEY_PREFIX are also kept
    in a NearCache of `near_entries` values (0 turns it off)."""

    def __init__(
        self, url: str, *, timeout: float = 0.1, pause_seconds: float = 2.0, max_pending_deletes: int = 100_000,
        near_entries: int = 50_000,
    ):
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._pause_seconds = pause_seconds
        self._down_until = 0.0
        self._pending_deletes: set[str] = set()
        self._max_pending = max_pending_deletes
        self._lock = threading.Lock()
        self.near = NearCache(self.client, max_entries=near_entries) if near_entries else None
        self._near_retry_at = 0.0

    def close(self) -> None:
        if self.near is not None:
            self.near.close()
        self.client.close()

    def _near(self, key: str) -> NearCache | None:
        """The near-cache if it serves this key now (reconnecting it after a pause if it is down)."""
        near = self.near
        if near is None or not key.startswith(KEY_PREFIX):
            return None
        if not near.live:
            now = time.monotonic()
            if now < self._near_retry_at:
                return None
            self._near_retry_at = now + self._pause_seconds
            if not near.connect():
                return None
        return near

    def _available(self) -> bool:
        if self._down_until == 0.0:
            return True
        if time.monotonic() < self._down_until:
            return False
        return self._flush_pending_deletes()

    def _failed(self, exc: Exception) -> None:
        if self._down_until == 0.0:
            log.warning("redis cache unavailable (%s); serving from the database", exc)
        self._down_until = time.monotonic() + self._pause_seconds

    def _flush_pending_deletes(self) -> bool:
        """Sends the deletes that could not be sent (or pings); True once Redis took them all."""
        flushed = 0
        while True:
            with self._lock:
                keys = list(self._pending_deletes)[:1000]
            try:
                if keys:
                    self.client.delete(*keys)
                else:
                    self.client.ping()
            except redis.RedisError as exc:
                self._failed(exc)
                return False
            flushed += len(keys)
            with self._lock:
                self._pending_deletes.difference_update(keys)
                if not self._pending_deletes:
                    self._down_until = 0.0
                    break
        log.warning("redis cache is back; %d stale keys invalidated", flushed)
        return True

    def get(self, key: str) -> bytes | None:
        if not self._available():
            return None
        near = self._near(key)
        token = None
        if near is not None:
            value = near.get(key)
            if value is not None:
                return value
            token = near.begin_fill(key)
        value, ttl_ms = None, 0
        try:
            if token is None:
                value = self.client.get(key)
            else:
                pipe = self.client.pipeline(transaction=False)
                value, ttl_ms = pipe.get(key).pttl(key).execute()
        except redis.RedisError as exc:
            self._failed(exc)
        if value == _FENCE:
            value = None
        if token is not None:
            near.end_fill(key, token, value, ttl_ms)
        return value

    def add(self, key: str, value: bytes, ttl: float) -> None:
        if not self._available():
            return
        try:
            self.client.set(key, value, px=int(ttl * 1000), nx=True)
        except redis.RedisError as exc:
            self._failed(exc)

    def fence(self, *keys: str, seconds: float = FENCE_SECONDS) -> None:
        if not keys:
            return
        if self.near is not None:
            self.near.forget(keys)
        if self._available():
            try:
                pipe = self.client.pipeline(transaction=False)
                for key in keys:
                    pipe.set(key, _FENCE, px=int(seconds * 1000))
                pipe.execute()
                return
            except redis.RedisError as exc:
                self._failed(exc)
        self._keep_for_later(keys)

    def set(self, key: str, value: bytes, ttl: float) -> None:
        if self.near is not None:
            self.near.forget((key,))
        if not self._available():
            return
        try:
            self.client.set(key, value, px=int(ttl * 1000))
        except redis.RedisError as exc:
            self._failed(exc)

    def delete(self, *keys: str) -> None:
        if not keys:
            return
        if self.near is not None:
            self.near.forget(keys)
        if self._available():
            try:
                self.client.delete(*keys)
                return
            except redis.RedisError as exc:
                self._failed(exc)
        self._keep_for_later(keys)

    def _keep_for_later(self, keys: tuple[str, ...]) -> None:
        """Keys that could not be invalidated: deleted once Redis answers again."""
        with self._lock:
            if len(self._pending_deletes) + len(keys) > self._max_pending:
                log.error("too many invalidations pending while redis is down; entries may be stale until their TTL")
                return
            self._pending_deletes.update(keys)
            recovered = self._down_until == 0.0
        if recovered:  # a flush finished meanwhile: send these now rather than at the next outage
            self._flush_pending_deletes()


def make_cache(redis_url: str, *, near_entries: int = 50_000) -> Cache:
    """Redis (with a near-cache of `near_entries` values, 0 for none) if configured, else local."""
    return RedisCache(redis_url, near_entries=near_entries) if redis_url else LocalCache()
