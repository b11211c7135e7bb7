"""PostgresStore specifics on a real PostgreSQL: migrations under a lock, an unreachable
or restarted server; what every store does is in contract/test_store.py."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from tests.conftest import free_port
from tests.postgres import PostgresServer
from tests.records import make_job
from vfe.errors import StoreError, StoreUnavailable
from vfe.queue.procrastinate import install_schema
from vfe.store.postgres import CONNECT_TIMEOUT, MIGRATIONS, PostgresStore


async def test_processes_starting_at_once_migrate_once(postgres_url: str) -> None:
    stores = [PostgresStore(postgres_url, pool_size=2, extra_schema=install_schema)
              for _ in range(5)]  # fmt: skip
    await asyncio.gather(*(s.open() for s in stores))
    try:
        job = make_job()
        await stores[0].create_job(job)
        assert all([await s.get_job(job.id) == job for s in stores])
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT version FROM vfe_schema").fetchall() == [(len(MIGRATIONS),)]
        assert conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone() != (None,)


async def test_a_database_newer_than_this_vfe_is_refused(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    await store.open()
    await store.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE vfe_schema SET version = %s", (len(MIGRATIONS) + 1,))
    again = PostgresStore(postgres_url)
    with pytest.raises(StoreError, match="newer than this vfe"):
        await again.open()
    assert await again.ping() is False


async def test_an_unreachable_server_is_a_503_soon_naming_where_not_the_password() -> None:
    port = free_port()
    store = PostgresStore(f"postgresql://vfe:s3cret@127.0.0.1:{port}/none")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as refused:
        await store.open()
    assert refused.value.status == 503
    assert time.monotonic() - started < CONNECT_TIMEOUT + 5
    detail = str(refused.value.detail)
    assert f"PostgreSQL at 127.0.0.1:{port}/none did not accept a connection" in detail
    assert "DATABASE_URL" in detail and "s3cret" not in detail


async def test_a_restarted_server_is_used_again_without_reopening() -> None:
    server = PostgresServer(free_port())
    try:
        server.start()
        store = PostgresStore(server.create_database(), pool_size=2)
        await store.open()
        job = make_job()
        await store.create_job(job)
        await asyncio.to_thread(server.stop)  # ends every session, as a restart does
        with pytest.raises(StoreUnavailable):
            await store.get_job(job.id)
        assert await store.ping() is False
        await asyncio.to_thread(server.start)
        assert await store.get_job(job.id) == job  # fresh connections, same store
        await store.close()
    finally:
        server.remove()
