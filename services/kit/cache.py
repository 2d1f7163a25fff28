"""Cache-aside for hot reads: an in-process LRU with TTL, or Redis with an in-process near-cache
in front of it. Keys carry the shop as a Redis Cluster hash tag. Redis unavailable means slower,
not broken: reads miss, and deletes that could not be sent are retried once Redis answers again.

A write fences its keys before it commits and deletes them after: while fenced, reads miss and
cannot fill the cache, so a value read before the commit is never served after it. Readers fill
with add() (only where nothing, not even a fence, is)."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Protocol

import redis

from services.kit.near_cache import NearCache

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
    the cache after it finds the fence and leaves the cache empty. A key this transaction fenced
    already is not fenced again."""
    keys = [k for k in dict.fromkeys(keys) if k not in uow.fenced]
    if not keys:
        return
    uow.fenced.update(keys)
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
        self.near = NearCache(self.client, prefix=KEY_PREFIX, max_entries=near_entries) if near_entries else None
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
                if len(keys) == 1:  # a member's write, most often: one command costs less than a pipeline
                    self.client.set(keys[0], _FENCE, px=int(seconds * 1000))
                    return
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
