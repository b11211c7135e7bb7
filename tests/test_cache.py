"""MemoryCache, RedisCache against a real redis-server, and the FallbackCache between them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.conftest import RedisServer, free_port, wait_until_async
from vfe.cache import (
    PREFIX,
    RECENT_PREFIX,
    FallbackCache,
    MemoryCache,
    RedisCache,
    job_key,
    recent_key,
)

# --- MemoryCache ------------------------------------------------------------------------


def entry_size(key: str, value: str) -> int:
    return MemoryCache._size(key, value)


async def test_memory_get_set_and_miss() -> None:
    cache = MemoryCache(10_000)
    assert await cache.get("vfe:a") is None
    await cache.set("vfe:a", "1", 60)
    assert await cache.get("vfe:a") == "1"
    await cache.set("vfe:a", "2", 60)  # overwrite, accounted once
    assert await cache.get("vfe:a") == "2"
    assert len(cache) == 1
    assert cache.size_bytes == entry_size("vfe:a", "2")


async def test_memory_lru_evicts_least_recently_used_by_byte_bound() -> None:
    one = entry_size("vfe:k1", "x" * 50)
    cache = MemoryCache(3 * one)
    for name in ("vfe:k1", "vfe:k2", "vfe:k3"):
        await cache.set(name, "x" * 50, 60)
    assert len(cache) == 3 and cache.size_bytes == 3 * one
    assert await cache.get("vfe:k1") is not None  # k1 is now the most recent; k2 the oldest
    await cache.set("vfe:k4", "x" * 50, 60)
    assert await cache.get("vfe:k2") is None
    assert [await cache.get(k) for k in ("vfe:k1", "vfe:k3", "vfe:k4")] == ["x" * 50] * 3
    assert cache.size_bytes == 3 * one <= cache.max_bytes


async def test_memory_a_big_value_evicts_as_many_as_needed() -> None:
    small = entry_size("vfe:s1", "a")
    cache = MemoryCache(small * 4)
    for i in range(4):
        await cache.set(f"vfe:s{i}", "a", 60)
    big_value = "b" * (small * 4 - entry_size("vfe:big", "") - 8)
    await cache.set("vfe:big", big_value, 60)
    assert await cache.get("vfe:big") == big_value
    assert cache.size_bytes <= cache.max_bytes
    assert len(cache) == 1  # every small entry had to go


async def test_memory_oversize_value_is_not_stored_and_evicts_nothing() -> None:
    cache = MemoryCache(500)
    await cache.set("vfe:keep", "small", 60)
    await cache.set("vfe:huge", "y" * 1000, 60)
    assert await cache.get("vfe:huge") is None
    assert await cache.get("vfe:keep") == "small"
    assert len(cache) == 1


async def test_memory_oversize_overwrite_drops_the_old_value() -> None:
    cache = MemoryCache(500)
    await cache.set("vfe:k", "old", 60)
    await cache.set("vfe:k", "z" * 1000, 60)
    # The old value must not survive an overwrite that could not be stored.
    assert await cache.get("vfe:k") is None
    assert cache.size_bytes == 0


async def test_memory_ttl_expiry() -> None:
    cache = MemoryCache(10_000)
    await cache.set("vfe:gone", "1", 0)  # already expired
    await cache.set("vfe:short", "2", 0.05)
    await cache.set("vfe:long", "3", 60)
    assert await cache.get("vfe:gone") is None
    assert len(cache) == 2  # the expired entry was dropped when read
    await asyncio.sleep(0.1)  # outlive the 0.05 s TTL: the time passing is what is tested
    assert await cache.get("vfe:short") is None
    assert await cache.get("vfe:long") == "3"
    assert len(cache) == 1
    assert cache.size_bytes == entry_size("vfe:long", "3")


async def test_memory_delete() -> None:
    cache = MemoryCache(100_000)
    for key in ("vfe:job:1", "vfe:job:2", "vfe:recent:5:", "vfe:recent:5:abc", "other"):
        await cache.set(key, "v", 60)
    await cache.delete("vfe:job:1", "vfe:job:missing")
    assert await cache.get("vfe:job:1") is None
    assert await cache.get("vfe:job:2") == "v"
    await cache.delete()  # nothing to delete
    await cache.delete("vfe:recent:5:", "vfe:recent:5:abc")
    assert await cache.get("vfe:recent:5:") is None
    assert await cache.get("vfe:recent:5:abc") is None
    assert await cache.get("vfe:job:2") == "v"
    assert await cache.get("other") == "v"
    assert cache.size_bytes == entry_size("vfe:job:2", "v") + entry_size("other", "v")
    await cache.close()  # close clears
    assert len(cache) == 0 and cache.size_bytes == 0


def test_keys() -> None:
    assert job_key("abc") == "vfe:job:abc"
    assert recent_key("0", 5, 100, None) == "vfe:recent:0:5:100:"
    assert recent_key("3", 2.5, 10, "j") == "vfe:recent:3:2.5:10:j"
    # distinct values never share a key (a %g format once mixed 100000.1 and 100000.4)
    assert recent_key("0", 100000.1, 1, None) != recent_key("0", 100000.4, 1, None)
    assert job_key("x").startswith(PREFIX) and RECENT_PREFIX.startswith(PREFIX)


# --- RedisCache (real redis-server) -----------------------------------------------------


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A plain client on the test server, to look behind the cache's back."""
    client = aioredis.Redis(host="127.0.0.1", port=redis_server.port, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def rcache(redis_server: RedisServer) -> AsyncIterator[RedisCache]:
    cache = RedisCache("127.0.0.1", redis_server.port, 0)
    yield cache
    await cache.close()


async def test_redis_get_set_with_ttl(rcache: RedisCache, raw: aioredis.Redis) -> None:
    await rcache.ping()
    assert await rcache.get("vfe:a") is None
    await rcache.set("vfe:a", "hello", 30)
    assert await rcache.get("vfe:a") == "hello"
    pttl = await raw.pttl("vfe:a")
    assert 0 < pttl <= 30_000
    await rcache.set("vfe:tiny", "x", 0)  # at least 1 ms, never "no expiry"
    assert await raw.pttl("vfe:tiny") in (-2, 0, 1)  # gone or about to be


async def test_redis_delete_and_delete_prefix(rcache: RedisCache, raw: aioredis.Redis) -> None:
    # More than one SCAN/UNLINK batch of 500.
    async with raw.pipeline(transaction=False) as pipe:
        for i in range(1203):
            pipe.set(f"vfe:recent:{i}", "v")
        await pipe.execute()
    await raw.set("vfe:job:1", "j1")
    await raw.set("vfe:job:2", "j2")
    await raw.set("unrelated", "u")

    await rcache.delete("vfe:job:1")
    await rcache.delete()  # no keys: no call
    assert await raw.get("vfe:job:1") is None
    await rcache.delete_prefix(RECENT_PREFIX)
    assert await raw.keys("vfe:recent:*") == []
    assert await raw.get("vfe:job:2") == "j2"

    await rcache.clear()  # clears only vfe's keys
    assert await raw.keys("vfe:*") == []
    assert await raw.get("unrelated") == "u"


# --- FallbackCache ----------------------------------------------------------------------


@pytest.fixture
async def make_fallback() -> AsyncIterator[Callable[..., Awaitable[FallbackCache]]]:
    made: list[FallbackCache] = []

    async def make(port: int | None, retry_seconds: float = 5.0, **kw: Any) -> FallbackCache:
        redis = None if port is None else RedisCache("127.0.0.1", port, 0, **kw)
        cache = FallbackCache(redis, MemoryCache(1_000_000), retry_seconds=retry_seconds)
        made.append(cache)
        await cache.connect()
        return cache

    yield make
    for cache in made:
        await cache.close()


async def test_fallback_starts_on_redis_and_clears_stale_keys(
    redis_server: RedisServer, raw: aioredis.Redis, make_fallback: Any
) -> None:
    await raw.set("vfe:job:stale", "old status")
    await raw.set("unrelated", "u")
    cache = await make_fallback(redis_server.port)
    assert cache.name == "redis"
    assert cache.last_error is None
    assert await cache.get("vfe:job:stale") is None
    assert await raw.get("unrelated") == "u"
    await cache.set("vfe:job:1", "v1", 60)
    assert await raw.get("vfe:job:1") == "v1"  # really in Redis
    assert len(cache.memory) == 0
    await cache.delete("vfe:job:1")
    assert await raw.get("vfe:job:1") is None
    await cache.set("vfe:recent:5:", "r", 60)
    await cache.delete("vfe:recent:5:")
    assert await raw.get("vfe:recent:5:") is None


async def test_fallback_starts_on_memory_when_redis_does_not_answer(make_fallback: Any) -> None:
    cache = await make_fallback(free_port())  # nothing listens there
    assert cache.name == "memory"
    assert cache.last_error == "ConnectionError"
    await cache.set("vfe:a", "1", 60)
    assert await cache.get("vfe:a") == "1"
    await cache.delete("vfe:a")
    assert await cache.get("vfe:a") is None
    await cache.set("vfe:recent:1:", "r", 60)
    await cache.delete("vfe:recent:1:")
    assert await cache.get("vfe:recent:1:") is None
    assert cache.stats.hits == {"redis": 0, "memory": 1}
    assert cache.stats.misses == {"redis": 0, "memory": 2}


async def test_fallback_without_redis_is_memory_only(make_fallback: Any) -> None:
    cache = await make_fallback(None)
    assert cache.name == "memory"
    assert await cache.refresh() == "memory"
    await cache.set("vfe:a", "1", 60)
    assert await cache.get("vfe:a") == "1"
    assert cache.last_error is None


async def op_get(cache: FallbackCache) -> None:
    assert await cache.get("vfe:job:1") is None  # memory was cleared on the switch


async def op_set(cache: FallbackCache) -> None:
    await cache.set("vfe:job:1", "new", 60)
    assert await cache.memory.get("vfe:job:1") == "new"


async def op_delete(cache: FallbackCache) -> None:
    await cache.delete("vfe:job:1")
    assert await cache.memory.get("vfe:job:1") is None


async def op_incr(cache: FallbackCache) -> None:
    assert await cache.incr("vfe:gen") == 1  # a fresh counter in memory


async def op_check(cache: FallbackCache) -> None:
    assert await cache.check() == "memory"


@pytest.mark.parametrize("first_call", [op_get, op_set, op_delete, op_incr, op_check])
async def test_redis_dies_mid_use_every_call_fails_over_without_raising(
    redis_server: RedisServer,
    make_fallback: Any,
    first_call: Callable[[FallbackCache], Awaitable[None]],
) -> None:
    cache = await make_fallback(redis_server.port, retry_seconds=60)
    await cache.set("vfe:job:1", "v1", 60)
    assert await cache.get("vfe:job:1") == "v1"
    # Something put in memory earlier must not be served after the switch.
    await cache.memory.set("vfe:job:1", "stale", 60)
    redis_server.stop()

    await first_call(cache)  # answered from memory, no exception
    assert cache.name == "memory"
    assert cache.last_error is not None

    # And the cache goes on working from memory.
    await cache.set("vfe:job:2", "v2", 60)
    assert await cache.get("vfe:job:2") == "v2"
    await cache.delete("vfe:job:2")
    assert await cache.get("vfe:job:2") is None
    assert cache.name == "memory"


async def test_redis_back_after_retry_seconds_with_stale_keys_cleared(
    redis_server: RedisServer, make_fallback: Any
) -> None:
    retry = 1.0
    cache = await make_fallback(redis_server.port, retry_seconds=retry)
    await cache.set("vfe:job:1", "v1", 60)
    redis_server.stop()
    before = time.monotonic()
    assert await cache.get("vfe:job:1") is None  # the fail-over happens in here
    after = time.monotonic()
    assert cache.name == "memory"
    await cache.set("vfe:job:1", "from-memory", 60)

    redis_server.start()  # same port
    raw = aioredis.Redis(host="127.0.0.1", port=redis_server.port, decode_responses=True)
    try:
        # An invalidation made while on memory never reached Redis: simulate what it
        # missed with a key written behind the cache's back.
        await raw.set("vfe:job:stale", "old")
        await raw.set("unrelated", "u")
        if time.monotonic() - before < retry * 0.8:
            # Before retry_seconds the cache does not even try.
            assert await cache.refresh() == "memory"
            assert await raw.get("vfe:job:stale") == "old"
        # out the retry interval (a sleep never ends early, so no load can make it short)
        await asyncio.sleep(max(0.0, after + retry - time.monotonic()) + 0.05)
        assert await cache.refresh() == "redis"
        assert cache.name == "redis"
        assert cache.last_error is None
        assert await raw.get("vfe:job:stale") is None
        assert await raw.get("unrelated") == "u"
        assert await cache.get("vfe:job:stale") is None
        await cache.set("vfe:job:1", "v2", 60)
        assert await raw.get("vfe:job:1") == "v2"
    finally:
        await raw.aclose()


async def test_switch_to_memory_clears_memory(
    redis_server: RedisServer, make_fallback: Any
) -> None:
    """A value written to memory, then superseded while on Redis, is never served."""
    redis_server.stop()
    cache = await make_fallback(redis_server.port, retry_seconds=0.2)
    assert cache.name == "memory"
    await cache.set("vfe:job:1", "pending", 60)
    redis_server.start()
    await asyncio.sleep(0.25)  # out the 0.2 s retry interval (Redis answers: start waited)
    assert await cache.refresh() == "redis"
    await cache.set("vfe:job:1", "completed", 60)  # goes to Redis only
    redis_server.stop()
    assert await cache.get("vfe:job:1") is None  # not the stale "pending"
    assert cache.name == "memory"


async def test_refresh_while_redis_still_down_stays_on_memory(
    redis_server: RedisServer, make_fallback: Any
) -> None:
    redis_server.stop()
    cache = await make_fallback(redis_server.port, retry_seconds=0.1)
    await asyncio.sleep(0.15)  # out the 0.1 s retry interval, so refresh does try Redis
    assert await cache.refresh() == "memory"
    assert cache.last_error == "ConnectionError"


async def test_stats_count_hits_and_misses_per_backend(
    redis_server: RedisServer, make_fallback: Any
) -> None:
    cache = await make_fallback(redis_server.port, retry_seconds=60)
    assert await cache.get("vfe:a") is None
    await cache.set("vfe:a", "1", 60)
    assert await cache.get("vfe:a") == "1"
    assert await cache.get("vfe:a") == "1"
    assert cache.stats.hits == {"redis": 2, "memory": 0}
    assert cache.stats.misses == {"redis": 1, "memory": 0}

    redis_server.stop()
    assert await cache.get("vfe:a") is None  # fails over: a memory miss
    await cache.set("vfe:b", "2", 60)
    assert await cache.get("vfe:b") == "2"
    assert cache.stats.hits == {"redis": 2, "memory": 1}
    assert cache.stats.misses == {"redis": 1, "memory": 1}


async def test_close_with_redis_gone_does_not_raise(
    redis_server: RedisServer, make_fallback: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = await make_fallback(redis_server.port)
    await cache.set("vfe:a", "1", 60)
    await cache.memory.set("vfe:m", "1", 60)
    assert cache.redis is not None

    async def broken_close(*args: Any, **kwargs: Any) -> None:
        # A failure while releasing the pool cannot be produced on demand: inject it.
        raise RedisConnectionError("connection reset")

    real_close = cache.redis.client.aclose
    monkeypatch.setattr(cache.redis.client, "aclose", broken_close)
    await cache.close()
    assert len(cache.memory) == 0
    monkeypatch.undo()
    await real_close()


async def test_incr_counts_on_each_backend(
    redis_server: RedisServer, raw: aioredis.Redis, make_fallback: Any
) -> None:
    memory = MemoryCache(10_000)
    assert [await memory.incr("vfe:n") for _ in range(3)] == [1, 2, 3]
    cache = await make_fallback(redis_server.port)
    assert [await cache.incr("vfe:n") for _ in range(2)] == [1, 2]
    assert await raw.get("vfe:n") == "2"
    assert await raw.ttl("vfe:n") == -1  # a counter does not expire


async def test_check_sees_redis_die_without_waiting_for_a_cache_call(
    redis_server: RedisServer, make_fallback: Any
) -> None:
    cache = await make_fallback(redis_server.port, retry_seconds=0.1)
    assert await cache.check() == "redis"
    redis_server.stop()
    assert await cache.check() == "memory"
    redis_server.start()
    await asyncio.sleep(0.15)  # out the 0.1 s retry interval (Redis answers: start waited)
    assert await cache.check() == "redis"


async def test_redis_going_and_coming_back_is_logged_once_each(
    redis_server: RedisServer, make_fallback: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vfe.cache")
    cache = await make_fallback(redis_server.port, retry_seconds=0.2)
    assert cache.name == "redis"
    redis_server.stop()
    await cache.get("vfe:job:1")  # the fail-over
    # Three retry intervals while it is still down: it tries again each time and says
    # nothing more (a span of time is what is tested here, not a wait for something).
    quiet_until = time.monotonic() + 0.6
    while time.monotonic() < quiet_until:
        assert await cache.refresh() == "memory"
        await asyncio.sleep(0.05)
    redis_server.start()

    async def back() -> bool:
        return await cache.refresh() == "redis"

    await wait_until_async(back, "Redis to come back")
    said = [r.getMessage() for r in caplog.records if r.name == "vfe.cache"]
    assert len([m for m in said if "stopped answering" in m]) == 1, said
    assert len([m for m in said if "answers again" in m]) == 1, said
    assert not [m for m in said if "does not answer" in m], said  # the fail-over said it
    levels = {r.levelname for r in caplog.records if "stopped answering" in r.getMessage()}
    assert levels == {"WARNING"}
