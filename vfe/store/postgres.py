"""The scaled-out ``Store``: PostgreSQL through psycopg 3 and a psycopg-pool connection pool.

Connections are in autocommit mode; every multi-statement write is one explicit
transaction. Each connection is checked as it leaves the pool, so after a PostgreSQL
restart the first request gets a fresh connection instead of a dead one; while the server
is down, a request waits at most ``CONNECT_TIMEOUT`` seconds and gets ``StoreUnavailable``
(503). The schema version is kept in ``vfe_schema``; ``MIGRATIONS`` move it forward under
an advisory lock, so several processes starting at once migrate once. The same lock's
transaction also installs the queue's schema (``extra_schema``), when a queue asks for it.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..errors import StoreError, StoreUnavailable
from ..models import Frame, Job, JobStatus
from . import (
    FINISHED,
    FRAME_COLUMNS,
    JOB_COLUMNS,
    JOB_FIELDS,
    RESERVE_CONFLICT,
    RUN_WRITABLE,
    UPDATABLE,
    Blob,
    Remove,
    ReuseGone,
    Then,
    checked,
    db_value,
    frame_from_row,
    frame_row,
    job_from_row,
    jobs_query,
    removal,
)
from .outbox import FORGET_SETTLED, PostgresOutbox
from .schema import COPIED
from .schema import POSTGRES_MIGRATIONS as MIGRATIONS

CONNECT_TIMEOUT = 5.0  # seconds a request waits for a connection before a 503
MIGRATION_LOCK = 0x76666500  # pg_advisory_xact_lock key: "vfe" and a zero

Cursor = psycopg.AsyncCursor[Any]
ExtraSchema = Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]


def where(url: str) -> str:
    """``host:port/dbname`` of a connection string, without its user or password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "DATABASE_URL"
    host = parts.get("host") or os.environ.get("PGHOST") or "the local socket"
    port = parts.get("port") or os.environ.get("PGPORT") or 5432
    return f"{host}:{port}/{parts.get('dbname') or ''}"


class PostgresStore(PostgresOutbox):
    """A ``Store`` on PostgreSQL: a pool of at most ``pool_size`` connections to ``url``
    (the webhook outbox's part is in ``outbox.py``)."""

    backend = "postgresql"

    def __init__(
        self, url: str, pool_size: int = 10, extra_schema: ExtraSchema | None = None
    ) -> None:
        self.url = url
        self.extra_schema = extra_schema
        self._pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max(1, pool_size),
            open=False,
            timeout=CONNECT_TIMEOUT,
            # Give up a reconnection attempt after this long, so its backoff never grows
            # past it: the next request starts a fresh one (1 s apart), and a restarted
            # PostgreSQL is used again within seconds, not after a backoff of minutes.
            reconnect_timeout=CONNECT_TIMEOUT,
            kwargs={"connect_timeout": int(CONNECT_TIMEOUT)},
            configure=_autocommit,  # not in kwargs: procrastinate adds its own autocommit
            check=AsyncConnectionPool.check_connection,
            name="vfe",
        )
        self._open = False

    @property
    def pool(self) -> AsyncConnectionPool:
        """The connection pool (the queue shares it)."""
        return self._pool

    @asynccontextmanager
    async def _guard(self, what: str) -> AsyncIterator[None]:
        if not self._open:
            raise StoreError("database is not open")
        try:
            yield
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise StoreUnavailable(
                f"the database cannot be reached while {what}; try again shortly"
            ) from exc
        except psycopg.Error as exc:
            raise StoreError(f"database error while {what}") from exc

    @asynccontextmanager
    async def _cursor(self, what: str, *, transaction: bool = False) -> AsyncIterator[Cursor]:
        """A cursor on a pooled connection; with ``transaction`` its statements commit
        together or not at all."""
        async with self._guard(what), self._pool.connection() as conn:
            if transaction:
                async with conn.transaction(), conn.cursor() as cur:
                    yield cur
            else:
                async with conn.cursor() as cur:
                    yield cur

    async def open(self) -> None:
        """Connect and move the schema forward (``StoreUnavailable`` if the server does
        not answer within ``CONNECT_TIMEOUT``)."""
        self._open = True
        try:
            try:
                await self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
            except PoolTimeout as exc:
                raise StoreUnavailable(
                    f"PostgreSQL at {where(self.url)} did not accept a connection within "
                    f"{CONNECT_TIMEOUT:g} s (the log's warnings say why): check that it "
                    "runs and that DATABASE_URL names it, its user and its password"
                ) from exc
            async with self._guard("opening the database"):
                await self._migrate()
        except BaseException:
            await self.close()
            raise

    async def _migrate(self) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute("CREATE TABLE IF NOT EXISTS vfe_schema (version INTEGER NOT NULL)")
            cur = await conn.execute("SELECT version FROM vfe_schema")
            row = await cur.fetchone()
            version = int(row[0]) if row else 0
            if row is None:
                await conn.execute("INSERT INTO vfe_schema (version) VALUES (0)")
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"database schema version {version} is newer than this vfe "
                    f"(knows {len(MIGRATIONS)}); upgrade vfe or use another DATABASE_URL"
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                await conn.execute(script)
                await conn.execute("UPDATE vfe_schema SET version = %s", (number,))
            if self.extra_schema is not None:
                await self.extra_schema(conn)

    async def close(self) -> None:
        if self._open:
            self._open = False
            await self._pool.close()

    async def ping(self) -> bool:
        try:
            async with self._cursor("checking the database") as cur:
                await cur.execute("SELECT 1")
                return (await cur.fetchone()) is not None
        except StoreError:
            return False

    async def create_job(
        self,
        job: Job,
        idempotency: tuple[str, str] | None = None,
        then: Then | None = None,
        *,
        holds: Sequence[Blob] = (),
        copy_from: str | None = None,
    ) -> tuple[str, str] | None:
        values = [db_value(getattr(job, c)) for c in JOB_FIELDS]
        if idempotency is not None and (found := await self.find_idempotent(idempotency[0])):
            return found
        async with self._guard("creating a job"), self._pool.connection() as conn:
            try:
                async with conn.transaction(), conn.cursor() as cur:
                    if copy_from is not None:  # kept from a delete until this commits
                        await cur.execute(
                            "SELECT status FROM jobs WHERE id = %s FOR SHARE", (copy_from,)
                        )
                        row = await cur.fetchone()
                        if row is None or row[0] != JobStatus.COMPLETED.value:
                            raise ReuseGone(copy_from)
                    marks = ", ".join(["%s"] * len(values))
                    await cur.execute(f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES ({marks})", values)
                    if idempotency is not None:
                        await cur.execute(
                            "INSERT INTO idempotency (key, fingerprint, job_id, created_at) "
                            "VALUES (%s, %s, %s, %s) ON CONFLICT (key) DO NOTHING RETURNING key",
                            (*idempotency, job.id, job.created_at),
                        )
                        if await cur.fetchone() is None:
                            raise _KeyTaken
                    if copy_from is not None:
                        await cur.execute(
                            f"INSERT INTO frames ({FRAME_COLUMNS}) SELECT %s, {COPIED}, %s, "
                            "quality FROM frames WHERE job_id = %s",
                            (job.id, job.created_at, copy_from),
                        )
                        await cur.execute(
                            "INSERT INTO holds (job_id, key) SELECT %s, key FROM holds "
                            "WHERE job_id = %s AND key LIKE 'frames/%%'",
                            (job.id, copy_from),
                        )
                    await self._hold(cur, job.id, holds)
                    await self._outbox(cur, job)  # a job made finished (a reuse) too
                    if then is not None:
                        await then(conn)
            except _KeyTaken:
                return await self._idempotent(conn, idempotency[0])  # type: ignore[index]
        return None

    async def hold(self, job_id: str, blobs: Sequence[Blob]) -> bool:
        async with self._cursor("holding stored files", transaction=True) as cur:
            # the job's row is kept from a delete until this commits
            await cur.execute("SELECT 1 FROM jobs WHERE id = %s FOR SHARE", (job_id,))
            if await cur.fetchone() is None:
                return False
            await self._hold(cur, job_id, blobs)
        return True

    @staticmethod
    async def _hold(cur: Cursor, job_id: str, blobs: Sequence[Blob]) -> None:
        if blobs:
            # In key order, so two holds of the same objects never wait on each other in a
            # circle; each waits while a collect removes the object, then makes it anew.
            await cur.executemany(
                "INSERT INTO blobs (key, size) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET released_at = NULL",
                sorted(blobs),
            )
            await cur.executemany(
                "INSERT INTO holds (job_id, key) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                [(job_id, key) for key, _ in blobs],
            )

    async def reserve(self, blobs: Sequence[Blob], until: float) -> None:
        if blobs:
            async with self._cursor("reserving stored files", transaction=True) as cur:
                await cur.executemany(
                    f"INSERT INTO blobs (key, size, released_at) VALUES (%s, %s, %s) "
                    f"{RESERVE_CONFLICT}",
                    [(key, size, until) for key, size in sorted(blobs)],
                )

    async def collect(self, remove: Remove, limit: int = 500) -> int:
        async with self._cursor("removing unused files", transaction=True) as cur:
            await cur.execute(
                "SELECT key FROM blobs WHERE released_at <= %s ORDER BY released_at "
                "LIMIT %s FOR UPDATE SKIP LOCKED",
                (time.time(), limit),
            )
            keys = [str(r[0]) for r in await cur.fetchall()]
            if not keys:
                return 0
            # A new statement sees the holds committed since the release: those stay.
            await cur.execute("SELECT DISTINCT key FROM holds WHERE key = ANY(%s)", (keys,))
            used = [str(r[0]) for r in await cur.fetchall()]
            if used:
                await cur.execute(
                    "UPDATE blobs SET released_at = NULL WHERE key = ANY(%s)", (used,)
                )
            free = sorted(set(keys) - set(used))
            if free:
                await removal(remove, free)
                await cur.execute("DELETE FROM blobs WHERE key = ANY(%s)", (free,))
        return len(keys)  # looked at: the caller goes on until none is left

    async def known(self, keys: Sequence[str]) -> set[str]:
        async with self._cursor("looking up stored files") as cur:
            await cur.execute("SELECT key FROM blobs WHERE key = ANY(%s)", (list(keys),))
            return {str(r[0]) for r in await cur.fetchall()}

    async def find_reusable(self, reuse_key: str) -> Job | None:
        async with self._cursor("looking for a job to reuse") as cur:
            await cur.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE reuse_key = %s AND status = %s "
                "ORDER BY finished_at DESC LIMIT 1",
                (reuse_key, JobStatus.COMPLETED.value),
            )
            row = await cur.fetchone()
        return job_from_row(row) if row else None

    async def find_idempotent(self, key: str) -> tuple[str, str] | None:
        async with self._guard("reading an idempotency key"), self._pool.connection() as conn:
            return await self._idempotent(conn, key)

    @staticmethod
    async def _idempotent(conn: psycopg.AsyncConnection[Any], key: str) -> tuple[str, str] | None:
        cur = await conn.execute(
            "SELECT fingerprint, job_id FROM idempotency WHERE key = %s", (key,)
        )
        row = await cur.fetchone()
        return (str(row[0]), str(row[1])) if row else None

    async def get_job(self, job_id: str) -> Job | None:
        async with self._cursor("reading a job") as cur:
            await cur.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = %s", (job_id,))
            row = await cur.fetchone()
        return job_from_row(row) if row else None

    async def _update(
        self, cur: Cursor, values: dict[str, Any], where: str, params: list[Any], also: str = ""
    ) -> Job | None:
        """``UPDATE jobs`` the row ``where`` picks (``also``: more assignments, as SQL);
        the job as it now is, or None."""
        assignments = ", ".join([*(f"{name} = %s" for name in values), *filter(None, [also])])
        await cur.execute(
            f"UPDATE jobs SET {assignments} WHERE {where} RETURNING {JOB_COLUMNS}",
            [*map(db_value, values.values()), *params],
        )
        row = await cur.fetchone()
        job = job_from_row(row) if row else None
        if job is not None and "status" in values:  # a final status: its webhook with it
            await self._outbox(cur, job)
        return job

    async def update_job(
        self, job_id: str, *, unless_finished: bool = True, **values: Any
    ) -> Job | None:
        checked(values, UPDATABLE)
        values.setdefault("updated_at", time.time())
        where = "id = %s"
        params: list[Any] = [job_id]
        if unless_finished:
            where += " AND NOT (status = ANY(%s))"
            params.append(list(FINISHED))
        async with self._cursor("updating a job", transaction=True) as cur:
            return await self._update(cur, values, where, params)

    async def claim(self, job_id: str, now: float) -> Job | None:
        values = {"status": JobStatus.PROCESSING, "started_at": now, "finished_at": None,
                  "error_message": None, "updated_at": now}  # fmt: skip
        active = [JobStatus.PENDING.value, JobStatus.PROCESSING.value]
        async with self._cursor("claiming a job") as cur:
            return await self._update(
                cur, values, "id = %s AND status = ANY(%s)", [job_id, active],
                "attempts = attempts + 1",
            )  # fmt: skip

    async def record(
        self,
        job_id: str,
        attempt: int,
        *,
        frames: Sequence[Frame] = (),
        drop: Sequence[int] = (),
        **values: Any,
    ) -> Job | None:
        checked(values, RUN_WRITABLE)
        values.setdefault("updated_at", time.time())
        async with self._cursor("recording a run", transaction=True) as cur:
            job = await self._update(
                cur,
                values,
                "id = %s AND attempts = %s AND status = %s",
                [job_id, attempt, JobStatus.PROCESSING.value],
            )
            if job is None:
                return None
            await self._insert_frames(cur, frames)
            if drop:
                await cur.execute(
                    "DELETE FROM frames WHERE job_id = %s AND idx = ANY(%s)", (job_id, list(drop))
                )
        return job

    async def list_jobs(
        self,
        statuses: Sequence[JobStatus] = (),
        limit: int = 100,
        oldest_first: bool = False,
        before: tuple[float, str] | None = None,
    ) -> list[Job]:
        sql, params = jobs_query(statuses, limit, oldest_first, before, "%s")
        async with self._cursor("listing jobs") as cur:
            await cur.execute(sql, params)
            rows = await cur.fetchall()
        return [job_from_row(r) for r in rows]

    async def delete_job(self, job_id: str) -> bool:
        async with self._cursor("deleting a job", transaction=True) as cur:
            # the row first: a reuse copying this job's frames finishes before it
            await cur.execute("SELECT 1 FROM jobs WHERE id = %s FOR UPDATE", (job_id,))
            await cur.execute("DELETE FROM holds WHERE job_id = %s RETURNING key", (job_id,))
            keys = sorted(str(r[0]) for r in await cur.fetchall())
            await cur.execute("DELETE FROM jobs WHERE id = %s", (job_id,))
            deleted = cur.rowcount > 0
            # Wait for an attempt being settled: its outcome decides whether the webhook goes
            # (a settle that saw the job still here has left a settled row for this delete).
            await cur.execute("SELECT 1 FROM webhooks WHERE job_id = %s FOR UPDATE", (job_id,))
            await cur.execute(FORGET_SETTLED.format(p="%s"), (job_id,))
            if keys:
                # Marked whether or not another job still holds them: a delete racing this
                # one would not see these holds go (read committed), and both would skip
                # the key for good. collect checks the holds again and keeps held ones.
                await cur.execute(
                    "UPDATE blobs SET released_at = %s WHERE key = ANY(%s) AND released_at IS NULL",
                    (time.time(), keys),
                )
        return deleted

    async def add_frames(self, frames: Sequence[Frame]) -> None:
        if not frames:
            return
        async with self._cursor("saving frames", transaction=True) as cur:
            await self._insert_frames(cur, frames)

    @staticmethod
    async def _insert_frames(cur: Cursor, frames: Sequence[Frame]) -> None:
        if not frames:
            return
        for job_id in {f.job_id for f in frames}:  # as SQLite's INSERT OR REPLACE does
            mine = [f for f in frames if f.job_id == job_id]
            await cur.execute(
                "DELETE FROM frames WHERE job_id = %s AND (idx = ANY(%s) OR filename = ANY(%s))",
                (job_id, [f.index for f in mine], [f.filename for f in mine]),
            )
        await cur.executemany(
            f"INSERT INTO frames ({FRAME_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            [frame_row(f) for f in frames],
        )

    async def list_frames(self, job_id: str, offset: int = 0, limit: int = 1000) -> list[Frame]:
        async with self._cursor("listing frames") as cur:
            await cur.execute(
                f"SELECT {FRAME_COLUMNS} FROM frames WHERE job_id = %s "
                "ORDER BY timestamp, idx LIMIT %s OFFSET %s",
                (job_id, limit, offset),
            )
            rows = await cur.fetchall()
        return [frame_from_row(r) for r in rows]

    async def count_frames(self, job_id: str) -> int:
        async with self._cursor("counting frames") as cur:
            await cur.execute("SELECT COUNT(*) FROM frames WHERE job_id = %s", (job_id,))
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def get_frame(self, job_id: str, filename: str) -> Frame | None:
        async with self._cursor("reading a frame") as cur:
            await cur.execute(
                f"SELECT {FRAME_COLUMNS} FROM frames WHERE job_id = %s AND filename = %s",
                (job_id, filename),
            )
            row = await cur.fetchone()
        return frame_from_row(row) if row else None

    async def delete_frames(self, job_id: str, indexes: Sequence[int]) -> None:
        if indexes:
            async with self._cursor("deleting frames") as cur:
                await cur.execute(
                    "DELETE FROM frames WHERE job_id = %s AND idx = ANY(%s)",
                    (job_id, list(indexes)),
                )

    async def recent_frames(
        self, since: float, job_id: str | None = None, limit: int = 500
    ) -> list[Frame]:
        sql = f"SELECT {FRAME_COLUMNS} FROM frames WHERE created_at >= %s"
        params: list[Any] = [since]
        if job_id is not None:
            sql += " AND job_id = %s"
            params.append(job_id)
        sql += " ORDER BY created_at DESC, idx DESC LIMIT %s"
        params.append(limit)
        async with self._cursor("listing recent frames") as cur:
            await cur.execute(sql, params)
            rows = await cur.fetchall()
        return [frame_from_row(r) for r in rows]


async def _autocommit(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.set_autocommit(True)


class _KeyTaken(Exception):
    """The Idempotency-Key was recorded by a racing request: roll this job back."""
