"""Caching: the ``Cache`` protocol, Redis and in-memory back-ends, and the fallback.

``FallbackCache`` is what the service uses. It prefers Redis; when a Redis call fails it
switches to the bounded in-memory LRU at once (the failing call is answered from memory,
so no request fails), and tries Redis again at most every ``retry_seconds``. Each switch
clears the back-end being switched to, because invalidations made while it was not in
use never reached it: a stale job status must never be served.

Values are strings (JSON); keys share the ``vfe:`` prefix.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger("vfe.cache")
PREFIX = "vfe:"
REDIS_TIMEOUT = 1.0  # seconds, to connect and for each reply
REDIS_ATTEMPTS = 2  # one retry: a pooled connection may be stale after a Redis restart
WORST_CALL_SECONDS = REDIS_TIMEOUT * REDIS_ATTEMPTS  # longest one cache call can wait


@dataclass
class CacheStats:
    hits: dict[str, int] = field(default_factory=lambda: {"redis": 0, "memory": 0})
    misses: dict[str, int] = field(default_factory=lambda: {"redis": 0, "memory": 0})


class Cache(Protocol):
    """A string key-value cache with per-key TTL."""

    name: str

    async def get(self, key: str) -> str | None: ...
    async def set(self, key: str, value: str, ttl: float) -> None: ...
    async def delete(self, *keys: str) -> None: ...
    async def incr(self, key: str) -> int: ...
    async def clear(self) -> None: ...
    async def close(self) -> None: ...


class MemoryCache:
    """An in-process LRU bounded by ``max_bytes`` with a TTL per key."""

    name = "memory"

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[float, str, int]] = OrderedDict()
        self._bytes = 0

    @staticmethod
    def _size(key: str, value: str) -> int:
        return sys.getsizeof(key) + sys.getsizeof(value)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def _drop(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._bytes -= item[2]

    async def get(self, key: str) -> str | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, value, _ = item
        if expires <= time.monotonic():
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return value

    async def set(self, key: str, value: str, ttl: float) -> None:
        self._drop(key)
        size = self._size(key, value)
        if size > self.max_bytes:
            return  # larger than the whole cache: not worth evicting everything for
        self._items[key] = (time.monotonic() + ttl, value, size)
        self._bytes += size
        while self._bytes > self.max_bytes:
            oldest = next(iter(self._items))
            self._drop(oldest)

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._drop(key)

    async def incr(self, key: str) -> int:
        """Add one to the counter at ``key`` (0 when absent); counters do not expire."""
        value = int(await self.get(key) or 0) + 1
        await self.set(key, str(value), math.inf)
        return value

    async def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    async def close(self) -> None:
        await self.clear()


class RedisCache:
    """``redis.asyncio`` back-end; every call may raise ``RedisError`` or ``OSError``."""

    name = "redis"

    def __init__(self, host: str, port: int, db: int) -> None:
        self.where = f"{host}:{port}"
        self.client = aioredis.Redis(
            host=host,
            port=port,
            db=db,
            socket_timeout=REDIS_TIMEOUT,
            socket_connect_timeout=REDIS_TIMEOUT,
            # One immediate retry (a pooled connection may be stale after a restart), no
            # backoff: redis-py's default backs off for seconds before the failover.
            retry=Retry(NoBackoff(), REDIS_ATTEMPTS - 1),
            decode_responses=True,
        )

    async def ping(self) -> None:
        await self.client.ping()

    async def get(self, key: str) -> str | None:
        value = await self.client.get(key)
        return None if value is None else str(value)

    async def set(self, key: str, value: str, ttl: float) -> None:
        await self.client.set(key, value, px=max(1, int(ttl * 1000)))

    async def delete(self, *keys: str) -> None:
        if keys:
            await self.client.unlink(*keys)

    async def delete_prefix(self, prefix: str) -> None:
        batch: list[str] = []
        async for key in self.client.scan_iter(match=f"{prefix}*", count=500):
            batch.append(str(key))
            if len(batch) >= 500:
                await self.client.unlink(*batch)
                batch.clear()
        if batch:
            await self.client.unlink(*batch)

    async def incr(self, key: str) -> int:
        return int(await self.client.incr(key))

    async def clear(self) -> None:
        await self.delete_prefix(PREFIX)

    async def close(self) -> None:
        await self.client.aclose()


_REDIS_FAILURES = (RedisError, OSError, TimeoutError)


class FallbackCache:
    """Redis when it answers, memory when it does not; never raises to the caller."""

    def __init__(
        self, redis: RedisCache | None, memory: MemoryCache, retry_seconds: float = 5.0
    ) -> None:
        self.redis = redis
        self.memory = memory
        self.retry_seconds = retry_seconds
        self.stats = CacheStats()
        self._using_redis = False
        self._next_try = 0.0
        self._told_down = False  # the log said Redis does not answer; say it once
        self.last_error: str | None = None

    @property
    def name(self) -> str:
        """The back-end in use right now: ``redis`` or ``memory``."""
        return "redis" if self._using_redis else "memory"

    async def connect(self) -> None:
        """Try Redis now (start-up); fall back to memory quietly if it does not answer."""
        self._next_try = 0.0
        await self.refresh()

    async def refresh(self) -> str:
        """While on memory, try Redis if the retry interval has passed. Returns the name.

        Waits at most about ``WORST_CALL_SECONDS`` twice (a ping, then clearing stale keys).
        """
        if self.redis is None or self._using_redis:
            return self.name
        now = time.monotonic()
        if now < self._next_try:
            return self.name
        self._next_try = now + self.retry_seconds
        try:
            await self.redis.ping()
            await self.redis.clear()  # invalidations made meanwhile never reached it
        except _REDIS_FAILURES as exc:
            self.last_error = type(exc).__name__
            if not self._told_down:
                self._told_down = True
                log.info(
                    "Redis at %s does not answer (%s); caching in memory, trying it again "
                    "every %g s", self.redis.where, self.last_error, self.retry_seconds,
                )  # fmt: skip
            return self.name
        self._using_redis = True
        self.last_error = None
        if self._told_down:
            log.info("Redis at %s answers again; caching there", self.redis.where)
        self._told_down = False
        return self.name

    async def check(self) -> str:
        """Find out which back-end works now (``/health``): ping Redis if in use, else
        ``refresh``. Returns the name; waits at most about ``WORST_CALL_SECONDS``."""
        if self._using_redis and self.redis is not None:
            try:
                await self.redis.ping()
            except _REDIS_FAILURES as exc:
                await self._fail_over(exc)
            return self.name
        return await self.refresh()

    async def _fail_over(self, exc: BaseException) -> None:
        self.last_error = type(exc).__name__
        where = self.redis.where if self.redis is not None else "?"
        log.warning(
            "Redis at %s stopped answering (%s); caching in memory until it is back",
            where, self.last_error,
        )  # fmt: skip
        self._told_down = True
        self._using_redis = False
        self._next_try = time.monotonic() + self.retry_seconds
        await self.memory.clear()  # invalidations made meanwhile went to Redis only

    async def get(self, key: str) -> str | None:
        await self.refresh()
        if self._using_redis and self.redis is not None:
            try:
                value = await self.redis.get(key)
            except _REDIS_FAILURES as exc:
                await self._fail_over(exc)
            else:
                self._count("redis", value is not None)
                return value
        value = await self.memory.get(key)
        self._count("memory", value is not None)
        return value

    def _count(self, backend: str, hit: bool) -> None:
        table = self.stats.hits if hit else self.stats.misses
        table[backend] += 1

    async def set(self, key: str, value: str, ttl: float) -> None:
        if self._using_redis and self.redis is not None:
            try:
                await self.redis.set(key, value, ttl)
                return
            except _REDIS_FAILURES as exc:
                await self._fail_over(exc)
        await self.memory.set(key, value, ttl)

    async def delete(self, *keys: str) -> None:
        if self._using_redis and self.redis is not None:
            try:
                await self.redis.delete(*keys)
                return
            except _REDIS_FAILURES as exc:
                await self._fail_over(exc)
        await self.memory.delete(*keys)

    async def incr(self, key: str) -> int:
        if self._using_redis and self.redis is not None:
            try:
                return await self.redis.incr(key)
            except _REDIS_FAILURES as exc:
                await self._fail_over(exc)
        return await self.memory.incr(key)

    async def close(self) -> None:
        await self.memory.close()
        if self.redis is not None:
            try:
                await self.redis.close()
            except _REDIS_FAILURES:  # closing a dead connection: nothing left to release
                pass


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


RECENT_PREFIX = f"{PREFIX}recent:"
# Bumped whenever frames change: recent-frames keys carry it, so one INCR invalidates them
# all (a SCAN for them would cost time in proportion to everything stored in Redis).
RECENT_GENERATION = f"{PREFIX}recent-generation"


def recent_key(generation: str, since_minutes: float, limit: int, job_id: str | None) -> str:
    return f"{RECENT_PREFIX}{generation}:{since_minutes!r}:{limit}:{job_id or ''}"
