"""The caches: the in-process LRU (unit level, on a controlled clock), RedisCache and its
near-cache against a real Redis (a write through one process's cache is seen by the next read
through another's), and the membership service answering GetTier correctly through a Redis
outage."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from loyalty.membership.v1 import membership_service_pb2 as mpb
from loyalty.membership.v1 import membership_service_pb2_grpc as mgrpc
from redis.crc import key_slot

from services.kit import cache as cache_module
from services.kit.cache import LocalCache, RedisCache, cache_key, invalidate_on_commit
from services.kit.config import Settings
from services.membership import server as membership_server
from services.membership.pii import PiiKeys
from services.membership.tiers import TIER_CODEC
from tests.backends import OwnRedis, wait_until
from tests.support.services import ADMIN_KEY, Authed, Backend, Shop, create_shop, start_service, stop_service

REDIS_URL = os.environ.get("LOYALTY_TEST_REDIS_URL", "")
REDIS_SERVER = os.environ.get("LOYALTY_TEST_REDIS_SERVER", "")
needs_redis = pytest.mark.skipif(not REDIS_URL, reason="needs Redis: run through scripts/test-backends.sh")
needs_redis_server = pytest.mark.skipif(
    not REDIS_SERVER, reason="needs a redis-server binary: run through scripts/test-backends.sh")


# ----- LocalCache ----------------------------------------------------------------------------------


class Clock:
    """Stands in for the cache module's `time`: monotonic() only moves when told to."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(cache_module, "time", clock)
    return clock


def test_local_cache_entry_expires_after_its_ttl(clock: Clock) -> None:
    cache = LocalCache()
    cache.set("short", b"1", ttl=5)
    cache.set("long", b"2", ttl=60)

    clock.advance(4.9)
    assert (cache.get("short"), cache.get("long")) == (b"1", b"2")
    clock.advance(0.2)
    assert (cache.get("short"), cache.get("long")) == (None, b"2")
    cache.set("short", b"3", ttl=5)  # setting again starts a new TTL
    clock.advance(4.9)
    assert cache.get("short") == b"3"


def test_local_cache_evicts_the_least_recently_used_entry_beyond_its_bound(clock: Clock) -> None:
    cache = LocalCache(max_entries=3)
    for key in ("a", "b", "c"):
        cache.set(key, key, ttl=60)
    assert cache.get("a") == "a"  # a is now the most recently used; b the least
    cache.set("c", "c2", ttl=60)  # overwriting an entry evicts nothing

    cache.set("d", "d", ttl=60)

    assert [cache.get(k) for k in ("a", "b", "c", "d")] == ["a", None, "c2", "d"]
    cache.set("e", "e", ttl=60)  # a, c, d were used in that order: a goes
    assert [cache.get(k) for k in ("a", "c", "d", "e")] == [None, "c2", "d", "e"]


def test_local_cache_delete_removes_the_given_keys_and_ignores_missing_ones(clock: Clock) -> None:
    cache = LocalCache()
    for key in ("a", "b", "c"):
        cache.set(key, key.encode(), ttl=60)

    cache.delete("a", "c", "never-set")
    cache.delete()

    assert [cache.get(k) for k in ("a", "b", "c")] == [None, b"b", None]


# ----- RedisCache on the shared Redis ----------------------------------------------------------


def test_cache_keys_carry_the_shop_as_a_hash_tag() -> None:
    key = cache_key("shop-1", "tier", "m", "member-9")
    assert key == "loyalty:{shop-1}:tier:m:member-9"
    # Redis Cluster hashes only the tag: every key of one shop lands in the same slot.
    assert key_slot(key.encode()) == key_slot(cache_key("shop-1", "tier", "b", "buyer-3").encode())
    assert key_slot(key.encode()) == key_slot(b"shop-1")


@pytest.fixture
def shared_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.mark.production
@needs_redis
def test_redis_cache_get_set_delete_round_trip(shared_redis: redis.Redis) -> None:
    cache = RedisCache(REDIS_URL)
    shop = f"shop-{uuid.uuid4().hex[:8]}"
    key, other = cache_key(shop, "tier", "m", "member-1"), cache_key(shop, "tier", "b", "buyer-1")
    assert cache.get(key) is None

    cache.set(key, b"member-1|2|2024-05-01T00:00:00", ttl=30)
    cache.set(other, b"x", ttl=30)

    assert cache.get(key) == b"member-1|2|2024-05-01T00:00:00"
    assert shared_redis.get(key) == b"member-1|2|2024-05-01T00:00:00"  # stored under the tagged key itself
    assert "{" + shop + "}" in key
    assert 0 < shared_redis.pttl(key) <= 30_000
    cache.delete(key, other, cache_key(shop, "never-set"))
    assert (cache.get(key), cache.get(other)) == (None, None)
    cache.client.close()


@pytest.mark.production
@needs_redis
def test_redis_cache_entry_expires_after_its_ttl() -> None:
    cache = RedisCache(REDIS_URL)
    key = cache_key(f"shop-{uuid.uuid4().hex[:8]}", "short")
    cache.set(key, b"v", ttl=0.2)
    assert cache.get(key) == b"v"
    wait_until(lambda: cache.get(key) is None, "the entry expires", timeout=3.0)
    cache.client.close()


def _redis_gets(raw: redis.Redis) -> int:
    return raw.info("commandstats").get("cmdstat_get", {}).get("calls", 0)


class _Committed:
    """Stands for a unit of work whose transaction committed: runs after-commit work at once."""

    def __init__(self) -> None:
        self.fenced: set[str] = set()

    def after_commit(self, action: Callable[[], object]) -> None:
        action()


@pytest.mark.production
@needs_redis
def test_a_near_cached_value_is_served_without_asking_redis(shared_redis: redis.Redis) -> None:
    writer, reader = RedisCache(REDIS_URL), RedisCache(REDIS_URL)
    key = cache_key(f"shop-{uuid.uuid4().hex[:8]}", "tier", "m", "member-1")
    writer.add(key, b"v1", ttl=30)
    assert reader.get(key) == b"v1"
    gets = _redis_gets(shared_redis)
    assert [reader.get(key) for _ in range(20)] == [b"v1"] * 20
    assert _redis_gets(shared_redis) == gets
    writer.close()
    reader.close()


@pytest.mark.production
@needs_redis
def test_a_write_through_one_process_cache_is_seen_by_the_next_read_through_another() -> None:
    # Two caches with their own connections stand for two worker processes.
    writer, reader = RedisCache(REDIS_URL), RedisCache(REDIS_URL)
    key = cache_key(f"shop-{uuid.uuid4().hex[:8]}", "points", "balance", "member-1")
    for round_ in range(200):
        value = f"balance-{round_}".encode()
        writer.add(key, value, ttl=30)
        assert reader.get(key) == value and reader.get(key) == value  # read from redis, then near
        change = round_ % 3
        if change == 0:
            invalidate_on_commit(_Committed(), writer, [key])  # fence before, fence after commit
        elif change == 1:
            writer.delete(key)
        else:
            writer.fence(key)
        assert reader.get(key) is None
        writer.delete(key)
    writer.close()
    reader.close()


@pytest.mark.production
@needs_redis
def test_a_near_cached_value_lives_no_longer_than_in_redis() -> None:
    writer, reader = RedisCache(REDIS_URL), RedisCache(REDIS_URL)
    key = cache_key(f"shop-{uuid.uuid4().hex[:8]}", "points", "balance", "member-1")
    writer.add(key, b"until the next lot expires", ttl=0.3)
    assert reader.get(key) == b"until the next lot expires"
    time.sleep(0.35)
    assert reader.get(key) is None
    writer.close()
    reader.close()


# ----- Redis outages, on a redis-server of our own --------------------------------------------------


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    # Synced on every write: otherwise a stale entry could not outlive the outage, and a lost
    # invalidation would go unnoticed.
    server = OwnRedis(tmp_path, fsync_always=True)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.mark.production
@needs_redis_server
def test_redis_cache_serves_misses_while_redis_is_down_and_applies_invalidations_when_it_is_back(
    own_redis: OwnRedis,
) -> None:
    cache = RedisCache(own_redis.url, pause_seconds=0.2)
    cache.set("stale", b"old", ttl=60)
    cache.set("kept", b"kept", ttl=60)
    own_redis.kill()

    assert cache.get("kept") is None  # a miss, not an error
    cache.set("new", b"new", ttl=60)  # dropped, not an error
    cache.delete("stale")  # cannot be sent: kept for later
    own_redis.start()
    raw = own_redis.client()
    assert raw.get("stale") == b"old"  # the stale entry survived the restart

    wait_until(lambda: cache.get("kept") == b"kept", "the cache uses redis again")
    assert (raw.get("stale"), cache.get("stale"), cache.get("new")) == (None, None, None)
    raw.close()
    cache.client.close()


@pytest.mark.production
@needs_redis_server
def test_the_near_cache_serves_nothing_it_may_have_missed_an_invalidation_for(own_redis: OwnRedis) -> None:
    writer = RedisCache(own_redis.url, pause_seconds=0.2)
    reader = RedisCache(own_redis.url, pause_seconds=0.2)
    key, other = cache_key("shop-1", "tier", "m", "member-1"), cache_key("shop-1", "tier", "m", "member-2")
    writer.add(key, b"old", ttl=60)
    assert reader.get(key) == b"old"  # now in the reader's near-cache
    own_redis.kill()

    assert reader.get(key) is None  # slower, not stale
    writer.delete(key)  # cannot be sent: kept for later
    own_redis.start()
    raw = own_redis.client()
    assert raw.get(key) == b"old"  # the stale entry survived the restart

    def writer_back() -> bool:
        writer.add(other, b"x", ttl=60)
        return writer.get(other) == b"x"

    wait_until(writer_back, "the writer uses redis again and sends what it kept")
    wait_until(lambda: reader.get(other) == b"x", "the reader uses redis again")
    assert (raw.get(key), reader.get(key)) == (None, None)
    raw.close()
    writer.close()
    reader.close()


@pytest.fixture
def postgres_backend(backend: Backend) -> Backend:
    if backend.name != "postgres":
        pytest.skip("RedisCache is the cache of the PostgreSQL + Redis backend")
    return backend


def _tier_level(shop: Shop, request: mpb.GetTierRequest) -> int:
    return shop.api.GetTier(request).tier.level


def _cached_level(raw: redis.Redis, key: str) -> int | None:
    value = raw.get(key)
    return None if value is None else TIER_CODEC.decode(value).level


@pytest.mark.production
@needs_redis_server
def test_membership_service_keeps_serving_get_tier_with_redis_stopped(
    postgres_backend: Backend, settings: Settings, own_redis: OwnRedis,
) -> None:
    service = start_service(membership_server, postgres_backend, settings, cache=RedisCache(own_redis.url))
    try:
        shop = create_shop(service, Authed(mgrpc.MembershipServiceStub(service.channel), ADMIN_KEY))
        buyer_id = f"buyer-{uuid.uuid4().hex[:8]}"
        member = shop.api.JoinMember(mpb.JoinMemberRequest(
            request_id=uuid.uuid4().hex, shop_id=shop.shop_id, buyer_id=buyer_id, join_channel=1))
        by_member = mpb.GetTierRequest(shop_id=shop.shop_id, member_id=member.member_id)
        by_buyer = mpb.GetTierRequest(shop_id=shop.shop_id, buyer_id=buyer_id)
        keys = [cache_key(shop.shop_id, "tier", "m", member.member_id),
                cache_key(shop.shop_id, "tier", "b", PiiKeys(settings.pii_key).buyer_hash(shop.shop_id, buyer_id))]

        # Warm the cache through both lookups.
        assert (_tier_level(shop, by_member), _tier_level(shop, by_buyer)) == (0, 0)
        raw = own_redis.client()
        assert [_cached_level(raw, k) for k in keys] == [0, 0]
        raw.close()

        own_redis.kill()
        assert (_tier_level(shop, by_member), _tier_level(shop, by_buyer)) == (0, 0)

        set_tier = shop.api.SetTier(mpb.SetTierRequest(
            request_id=uuid.uuid4().hex, shop_id=shop.shop_id, member_id=member.member_id, tier_level=3,
            reason="goodwill after a lost parcel", operator="ops-1"))
        assert (set_tier.from_level, set_tier.tier.level) == (0, 3)
        for _ in range(3):
            assert (_tier_level(shop, by_member), _tier_level(shop, by_buyer)) == (3, 3)

        own_redis.start()
        raw = own_redis.client()
        # The entries cached before the outage came back with Redis: only the invalidations kept
        # while it was down can keep them from being served.
        assert [_cached_level(raw, k) for k in keys] == [0, 0]

        def cache_rewarmed_with_new_level() -> bool:
            # Every answer on the way must be right, before and after the cache resumes.
            assert (_tier_level(shop, by_member), _tier_level(shop, by_buyer)) == (3, 3)
            return [_cached_level(raw, k) for k in keys] == [3, 3]

        wait_until(cache_rewarmed_with_new_level, "the cache holds the new tier again")
        assert (_tier_level(shop, by_member), _tier_level(shop, by_buyer)) == (3, 3)
        raw.close()
    finally:
        stop_service(service)
        service.cache.client.close()
