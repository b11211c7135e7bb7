"""The embedded ``Store``: SQLite through aiosqlite.

``SqliteStore`` keeps one long-lived aiosqlite connection (aiosqlite runs SQLite in its
own thread, so the event loop never waits on disk). WAL mode lets readers go on while a
worker writes. The schema carries a version (``PRAGMA user_version``) and is moved
forward by the ordered ``MIGRATIONS``; a database newer than this code is refused.

Every ``sqlite3`` error is translated here into ``StoreError``, so callers never see a
driver exception.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, closing, suppress
from pathlib import Path
from typing import Any

import aiosqlite

from ..errors import StoreError
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
from .outbox import FORGET_SETTLED, SqliteOutbox
from .schema import COPIED
from .schema import SQLITE_MIGRATIONS as MIGRATIONS

_TABLES = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"


def foreign_database(path: Path, tables: list[str]) -> str:
    """What to say of a database that holds tables vfe did not make."""
    original = " (the original service's database)" if "jobs" in tables else ""
    return (
        f"the database {path} holds tables vfe did not create{original}: "
        f"{', '.join(sorted(tables)[:5])}. vfe keeps its own database: move that file "
        "away, or set DATABASE_PATH to another file"
    )


def check_database(path: Path) -> None:
    """Before start-up: refuse (``StoreError``) a database made by something else, so the
    service never starts on it. Reads only; a missing file is fine (it will be made)."""
    if not path.exists():
        return
    try:
        with closing(sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)) as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = [str(r[0]) for r in db.execute(_TABLES)]
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the database {path}: {exc}") from exc
    if version == 0 and tables:
        raise StoreError(foreign_database(path, tables))


class SqliteStore(SqliteOutbox):
    """The embedded ``Store``: one aiosqlite connection to ``path`` (the webhook outbox's
    part is in ``outbox.py``)."""

    backend = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("database is not open")
        return self._db

    @asynccontextmanager
    async def _guard(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"database error while {what}") from exc
        except ValueError as exc:  # aiosqlite raises this on a closed connection
            raise StoreError(f"database unavailable while {what}") from exc

    @asynccontextmanager
    async def _transaction(self, what: str) -> AsyncIterator[None]:
        """Run the writes in the block as one transaction: committed together or not at all.

        Every coroutine shares the one connection and so its transaction: without the lock,
        one write's rollback would undo another's uncommitted rows, and one's commit would
        save another's half-done batch. Commit and rollback are shielded from cancellation.
        """
        async with self._guard(what), self._write_lock:
            try:
                yield
            except BaseException:
                if self._db is not None and self._db.in_transaction:
                    with suppress(sqlite3.Error, ValueError):
                        await asyncio.shield(self._db.rollback())
                raise
            await asyncio.shield(self.db.commit())

    async def _write(self, sql: str, params: Any = (), *, many: bool = False) -> int:
        """Run one statement and close its cursor at once; return the rows it changed.

        A cursor left for the garbage collector is finalized on the event-loop thread while
        aiosqlite's thread may reuse the same cached statement: under load that fails with
        ``InterfaceError: bad parameter or other API misuse``.
        """
        if many:
            cur = await self.db.executemany(sql, params)
        else:
            cur = await self.db.execute(sql, params)
        try:
            return cur.rowcount
        finally:
            await cur.close()

    async def open(self) -> None:
        async with self._guard("opening the database"):
            self._db = await aiosqlite.connect(self.path, timeout=30)
            try:
                for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
                    await self._write(f"PRAGMA {pragma}")
                await self._migrate()
                await self._end_leases()
            except BaseException:
                await self.close()  # else its worker thread outlives a failed start-up
                raise

    async def _migrate(self) -> None:
        async with self.db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if version == 0:
            async with self.db.execute(_TABLES) as cur:
                tables = [str(r[0]) for r in await cur.fetchall()]
            if tables:
                raise StoreError(foreign_database(self.path, tables))
        if version > len(MIGRATIONS):
            raise StoreError(
                f"database schema version {version} is newer than this vfe "
                f"(knows {len(MIGRATIONS)}); upgrade vfe or use another DATABASE_PATH"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            cur = await self.db.executescript(
                f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;"
            )
            await cur.close()

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def ping(self) -> bool:
        try:
            async with self._guard("checking the database"):
                async with self.db.execute("SELECT 1") as cur:
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
        async with self._transaction("creating a job"):
            if idempotency is not None:
                found = await self._idempotent(idempotency[0])
                if found is not None:
                    return found
            if copy_from is not None:
                async with self.db.execute(
                    "SELECT status FROM jobs WHERE id = ?", (copy_from,)
                ) as cur:
                    row = await cur.fetchone()
                if row is None or row[0] != JobStatus.COMPLETED.value:
                    raise ReuseGone(copy_from)
            await self._write(
                f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES ({', '.join('?' * len(values))})",
                values,
            )
            if idempotency is not None:
                await self._write(
                    "INSERT INTO idempotency (key, fingerprint, job_id, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (*idempotency, job.id, job.created_at),
                )
            if copy_from is not None:
                await self._write(
                    f"INSERT INTO frames ({FRAME_COLUMNS}) SELECT ?, {COPIED}, ?, quality "
                    "FROM frames WHERE job_id = ?",
                    (job.id, job.created_at, copy_from),
                )
                await self._write(
                    "INSERT INTO holds (job_id, key) SELECT ?, key FROM holds "
                    "WHERE job_id = ? AND key LIKE 'frames/%'",
                    (job.id, copy_from),
                )
            await self._hold(job.id, holds)
            await self._outbox(job)  # a job made finished (a reuse) is announced too
            if then is not None:
                await then(None)
        return None

    async def hold(self, job_id: str, blobs: Sequence[Blob]) -> bool:
        async with self._transaction("holding stored files"):
            async with self.db.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)) as cur:
                if await cur.fetchone() is None:
                    return False
            await self._hold(job_id, blobs)
        return True

    async def _hold(self, job_id: str, blobs: Sequence[Blob]) -> None:
        if blobs:
            await self._write(
                "INSERT INTO blobs (key, size) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET released_at = NULL",
                sorted(blobs),
                many=True,
            )
            await self._write(
                "INSERT OR IGNORE INTO holds (job_id, key) VALUES (?, ?)",
                [(job_id, key) for key, _ in blobs],
                many=True,
            )

    async def reserve(self, blobs: Sequence[Blob], until: float) -> None:
        if blobs:
            async with self._transaction("reserving stored files"):
                await self._write(
                    "INSERT INTO blobs (key, size, released_at) VALUES (?, ?, ?) "
                    + RESERVE_CONFLICT,
                    [(key, size, until) for key, size in sorted(blobs)],
                    many=True,
                )

    async def collect(self, remove: Remove, limit: int = 500) -> int:
        # Under the write lock: no hold commits until the objects are gone.
        async with self._transaction("removing unused files"):
            async with self.db.execute(
                "SELECT key FROM blobs WHERE released_at <= ? AND NOT EXISTS "
                "(SELECT 1 FROM holds WHERE holds.key = blobs.key) LIMIT ?",
                (time.time(), limit),
            ) as cur:
                keys = [str(r[0]) for r in await cur.fetchall()]
            if keys:
                await removal(remove, keys)
                gone = [(key,) for key in keys]
                await self._write("DELETE FROM blobs WHERE key = ?", gone, many=True)
        return len(keys)

    async def known(self, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        async with self._guard("looking up stored files"):
            for start in range(0, len(keys), 500):  # SQLite's bound on parameters
                batch = list(keys[start : start + 500])
                marks = ", ".join("?" * len(batch))
                async with self.db.execute(
                    f"SELECT key FROM blobs WHERE key IN ({marks})", batch
                ) as cur:
                    found.update(str(r[0]) for r in await cur.fetchall())
        return found

    async def find_reusable(self, reuse_key: str) -> Job | None:
        async with self._guard("looking for a job to reuse"):
            async with self.db.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE reuse_key = ? AND status = ? "
                "ORDER BY finished_at DESC LIMIT 1",
                (reuse_key, JobStatus.COMPLETED.value),
            ) as cur:
                row = await cur.fetchone()
        return job_from_row(row) if row else None

    async def find_idempotent(self, key: str) -> tuple[str, str] | None:
        async with self._guard("reading an idempotency key"):
            return await self._idempotent(key)

    async def _idempotent(self, key: str) -> tuple[str, str] | None:
        async with self.db.execute(
            "SELECT fingerprint, job_id FROM idempotency WHERE key = ?", (key,)
        ) as cur:
            row = await cur.fetchone()
        return (str(row[0]), str(row[1])) if row else None

    async def get_job(self, job_id: str) -> Job | None:
        async with self._guard("reading a job"):
            async with self.db.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)
            ) as cur:
                row = await cur.fetchone()
        return job_from_row(row) if row else None

    async def update_job(
        self, job_id: str, *, unless_finished: bool = True, **values: Any
    ) -> Job | None:
        checked(values, UPDATABLE)
        values.setdefault("updated_at", time.time())
        where = "id = ?"
        params: list[Any] = [job_id]
        if unless_finished:
            where += f" AND status NOT IN ({', '.join('?' * len(FINISHED))})"
            params.extend(FINISHED)
        async with self._transaction("updating a job"):
            return await self._update(values, where, params)

    async def _update(
        self, values: dict[str, Any], where: str, params: list[Any], also: str = ""
    ) -> Job | None:
        """``UPDATE jobs`` the row ``where`` picks (``also``: more assignments, as SQL;
        ``params[0]`` is the job's id); the job as it now is, or None."""
        assignments = ", ".join([*(f"{name} = ?" for name in values), *filter(None, [also])])
        sql = f"UPDATE jobs SET {assignments} WHERE {where}"
        # No RETURNING (SQLite 3.35+): the read that follows is inside the same transaction.
        if not await self._write(sql, [*map(db_value, values.values()), *params]):
            return None
        async with self.db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (params[0],)
        ) as cur:
            row = await cur.fetchone()
        job = job_from_row(row) if row else None
        if job is not None and "status" in values:  # a final status: its webhook with it
            await self._outbox(job)
        return job

    async def claim(self, job_id: str, now: float) -> Job | None:
        values = {"status": JobStatus.PROCESSING, "started_at": now, "finished_at": None,
                  "error_message": None, "updated_at": now}  # fmt: skip
        active = [JobStatus.PENDING.value, JobStatus.PROCESSING.value]
        async with self._transaction("claiming a job"):
            return await self._update(
                values, "id = ? AND status IN (?, ?)", [job_id, *active], "attempts = attempts + 1"
            )

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
        async with self._transaction("recording a run"):
            job = await self._update(
                values,
                "id = ? AND attempts = ? AND status = ?",
                [job_id, attempt, JobStatus.PROCESSING.value],
            )
            if job is None:
                return None
            await self._insert_frames(frames)
            if drop:
                await self._write(
                    "DELETE FROM frames WHERE job_id = ? AND idx = ?",
                    [(job_id, i) for i in drop],
                    many=True,
                )
        return job

    async def list_jobs(
        self,
        statuses: Sequence[JobStatus] = (),
        limit: int = 100,
        oldest_first: bool = False,
        before: tuple[float, str] | None = None,
    ) -> list[Job]:
        sql, params = jobs_query(statuses, limit, oldest_first, before, "?")
        async with self._guard("listing jobs"):
            async with self.db.execute(sql, params) as cur:
                rows = await cur.fetchall()
        return [job_from_row(r) for r in rows]

    async def delete_job(self, job_id: str) -> bool:
        async with self._transaction("deleting a job"):
            async with self.db.execute("SELECT key FROM holds WHERE job_id = ?", (job_id,)) as cur:
                keys = [str(r[0]) for r in await cur.fetchall()]
            deleted = await self._write("DELETE FROM jobs WHERE id = ?", (job_id,)) > 0
            await self._write(FORGET_SETTLED.format(p="?"), (job_id,))
            if keys:  # its holds went with it: mark what nothing holds now for collect
                now = time.time()
                await self._write(
                    "UPDATE blobs SET released_at = ? WHERE key = ? AND NOT EXISTS "
                    "(SELECT 1 FROM holds WHERE holds.key = blobs.key)",
                    [(now, key) for key in keys],
                    many=True,
                )
        return deleted

    async def add_frames(self, frames: Sequence[Frame]) -> None:
        if not frames:
            return
        async with self._transaction("saving frames"):
            await self._insert_frames(frames)

    async def _insert_frames(self, frames: Sequence[Frame]) -> None:
        if frames:
            await self._write(
                f"INSERT OR REPLACE INTO frames ({FRAME_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [frame_row(f) for f in frames],
                many=True,
            )

    async def list_frames(self, job_id: str, offset: int = 0, limit: int = 1000) -> list[Frame]:
        async with self._guard("listing frames"):
            async with self.db.execute(
                f"SELECT {FRAME_COLUMNS} FROM frames WHERE job_id = ? "
                "ORDER BY timestamp, idx LIMIT ? OFFSET ?",
                (job_id, limit, offset),
            ) as cur:
                rows = await cur.fetchall()
        return [frame_from_row(r) for r in rows]

    async def count_frames(self, job_id: str) -> int:
        async with self._guard("counting frames"):
            async with self.db.execute(
                "SELECT COUNT(*) FROM frames WHERE job_id = ?", (job_id,)
            ) as cur:
                row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def get_frame(self, job_id: str, filename: str) -> Frame | None:
        async with self._guard("reading a frame"):
            async with self.db.execute(
                f"SELECT {FRAME_COLUMNS} FROM frames WHERE job_id = ? AND filename = ?",
                (job_id, filename),
            ) as cur:
                row = await cur.fetchone()
        return frame_from_row(row) if row else None

    async def delete_frames(self, job_id: str, indexes: Sequence[int]) -> None:
        if not indexes:
            return
        async with self._transaction("deleting frames"):
            await self._write(
                "DELETE FROM frames WHERE job_id = ? AND idx = ?",
                [(job_id, i) for i in indexes],
                many=True,
            )

    async def recent_frames(
        self, since: float, job_id: str | None = None, limit: int = 500
    ) -> list[Frame]:
        sql = f"SELECT {FRAME_COLUMNS} FROM frames WHERE created_at >= ?"
        params: list[Any] = [since]
        if job_id is not None:
            sql += " AND job_id = ?"
            params.append(job_id)
        sql += " ORDER BY created_at DESC, idx DESC LIMIT ?"
        params.append(limit)
        async with self._guard("listing recent frames"):
            async with self.db.execute(sql, params) as cur:
                rows = await cur.fetchall()
        return [frame_from_row(r) for r in rows]
