"""SqliteStore specifics (schema, migrations, its one connection) against a real SQLite file;
what every store does is in contract/test_store.py."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import wait_until_async
from tests.records import make_frame, make_job
from vfe.errors import StoreError
from vfe.models import Job, JobStatus, SourceType
from vfe.store import jobs_query
from vfe.store.sqlite import MIGRATIONS, SqliteStore


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "meta.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(db_path)
    await opened.open()
    yield opened
    await opened.close()


def user_version(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        version: int = con.execute("PRAGMA user_version").fetchone()[0]
        return version
    finally:
        con.close()


# --- schema, migrations, open/close ---------------------------------------------------


async def test_open_creates_schema_at_current_version(store: SqliteStore, db_path: Path) -> None:
    assert user_version(db_path) == len(MIGRATIONS)
    con = sqlite3.connect(db_path)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        indexes = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    finally:
        con.close()
    assert {"jobs", "frames"} <= tables
    assert {"jobs_by_status", "frames_by_job_time", "frames_by_job_name"} <= indexes


async def test_wal_mode_and_foreign_keys_are_on(store: SqliteStore, db_path: Path) -> None:
    async with store.db.execute("PRAGMA journal_mode") as cur:
        assert (await cur.fetchone())[0] == "wal"  # type: ignore[index]
    async with store.db.execute("PRAGMA foreign_keys") as cur:
        assert (await cur.fetchone())[0] == 1  # type: ignore[index]
    # WAL is a property of the file: another connection sees it too.
    con = sqlite3.connect(db_path)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        con.close()


async def test_reopen_keeps_data_and_does_not_migrate_again(db_path: Path) -> None:
    first = SqliteStore(db_path)
    await first.open()
    job = make_job()
    await first.create_job(job)
    await first.close()

    second = SqliteStore(db_path)
    await second.open()  # would fail with "table jobs already exists" if migrated again
    try:
        assert await second.get_job(job.id) == job
        assert user_version(db_path) == len(MIGRATIONS)
    finally:
        await second.close()


def make_database_at(path: Path, version: int) -> None:
    """A database as vfe left it at schema ``version``: the first migrations only."""
    con = sqlite3.connect(path)
    try:
        for script in MIGRATIONS[:version]:
            con.executescript(script)
        con.execute(f"PRAGMA user_version = {version}")
        con.commit()
    finally:
        con.close()


def job_columns(path: Path) -> list[str]:
    con = sqlite3.connect(path)
    try:
        return [row[1] for row in con.execute("PRAGMA table_info(jobs)")]
    finally:
        con.close()


async def test_migration_3_adds_progress_and_keeps_the_jobs(db_path: Path) -> None:
    make_database_at(db_path, 2)
    assert "progress" not in job_columns(db_path)
    con = sqlite3.connect(db_path)
    try:
        con.execute(
            "INSERT INTO jobs (id, status, video_source, source_type, source_path, interval, "
            "created_at, updated_at, total_frames, processed_frames, finished_at, duration, "
            "codec, attempts, options, plan) "
            "VALUES ('a3c6a1f0-0000-4000-8000-000000000001', 'completed', 'old.mp4', 'path', "
            "'/srv/videos/old.mp4', 2.5, 100.0, 150.0, 4, 4, 150.0, 10.0, 'h264', 1, "
            '\'{"mode": "fps", "fps": 0.4}\', \'{"strategy": "select"}\')'
        )
        con.execute(
            "INSERT INTO frames VALUES ('a3c6a1f0-0000-4000-8000-000000000001', 0, 0.0, 0.0, "
            "'000000_0.000.jpg', 99, 'sum0', 320, 240, 110.0)"
        )
        con.execute(
            "INSERT INTO jobs (id, status, video_source, source_type, source_path, interval, "
            "created_at, updated_at) VALUES ('a3c6a1f0-0000-4000-8000-000000000002', "
            "'pending', 'new.mp4', 'upload', '/srv/uploads/x.mp4', 5.0, 200.0, 200.0)"
        )
        con.commit()
    finally:
        con.close()

    store = SqliteStore(db_path)
    await store.open()
    try:
        assert user_version(db_path) == len(MIGRATIONS)
        assert "progress" in job_columns(db_path)
        done = await store.get_job("a3c6a1f0-0000-4000-8000-000000000001")
        assert done == Job(
            id="a3c6a1f0-0000-4000-8000-000000000001",
            status=JobStatus.COMPLETED,
            video_source="old.mp4",
            source_type=SourceType.PATH,
            source_path="/srv/videos/old.mp4",
            interval=2.5,
            created_at=100.0,
            updated_at=150.0,
            total_frames=4,
            processed_frames=4,
            finished_at=150.0,
            duration=10.0,
            codec="h264",
            attempts=1,
            options={"mode": "fps", "fps": 0.4},
            plan={"strategy": "select"},
            progress=None,
        )
        pending = await store.get_job("a3c6a1f0-0000-4000-8000-000000000002")
        assert pending is not None and pending.progress is None
        assert pending.options == {} and pending.plan is None
        assert [j.id for j in await store.list_jobs(oldest_first=True)] == [done.id, pending.id]
        assert [f.filename for f in await store.list_frames(done.id)] == ["000000_0.000.jpg"]
        # and the upgraded table takes the new column
        updated = await store.update_job(pending.id, progress=0.5)
        assert updated is not None and updated.progress == 0.5
    finally:
        await store.close()


async def test_migration_8_drops_settled_webhooks_of_deleted_jobs(db_path: Path) -> None:
    make_database_at(db_path, 7)
    con = sqlite3.connect(db_path)
    try:
        con.execute(
            "INSERT INTO jobs (id, status, video_source, source_type, source_path, interval, "
            "created_at, updated_at) VALUES ('kept-job', 'completed', 'a.mp4', 'path', "
            "'/srv/videos/a.mp4', 1.0, 100.0, 100.0)"
        )
        con.executemany(
            "INSERT INTO webhooks (job_id, url, job, status, due_at, created_at) "
            "VALUES (?, 'https://h.example/', '{}', ?, 100.0, 100.0)",
            [("kept-job", "delivered"), ("deleted-delivered", "delivered"),
             ("deleted-failed", "failed"), ("deleted-pending", "pending")],
        )  # fmt: skip
        con.commit()
    finally:
        con.close()
    store = SqliteStore(db_path)
    await store.open()
    await store.close()
    assert user_version(db_path) == len(MIGRATIONS)
    con = sqlite3.connect(db_path)
    try:
        left = [row[0] for row in con.execute("SELECT job_id FROM webhooks ORDER BY job_id")]
    finally:
        con.close()
    assert left == ["deleted-pending", "kept-job"]  # a pending one is still to be delivered


async def test_database_at_version_1_is_migrated_to_the_last_version(db_path: Path) -> None:
    make_database_at(db_path, 1)
    store = SqliteStore(db_path)
    await store.open()
    try:
        assert user_version(db_path) == len(MIGRATIONS)
        job = make_job(options={"mode": "scene"}, progress=0.25)
        await store.create_job(job)
        assert await store.get_job(job.id) == job
    finally:
        await store.close()


async def test_database_newer_than_code_is_refused(db_path: Path) -> None:
    con = sqlite3.connect(db_path)
    con.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    con.close()
    store = SqliteStore(db_path)
    with pytest.raises(StoreError, match="newer than this vfe"):
        await store.open()
    # The half-opened connection was closed, not leaked; the file was not touched.
    assert store._db is None
    assert await store.ping() is False
    assert user_version(db_path) == len(MIGRATIONS) + 1
    await store.close()  # closing again is harmless


async def test_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database file at all" * 100)
    store = SqliteStore(path)
    with pytest.raises(StoreError) as info:
        await store.open()
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    assert store._db is None


async def settle_aiosqlite_threads() -> None:
    """Wait for aiosqlite worker threads to end.

    When ``aiosqlite.connect`` fails it stops its worker thread with a future nobody
    awaits; if the test's loop closes first, the thread raises "Event loop is closed".
    """
    await wait_until_async(
        lambda: not any("_connection_worker_thread" in t.name for t in threading.enumerate()),
        "the aiosqlite worker thread to stop",
        every=0.01,
    )


async def test_missing_folder_is_a_store_error(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "no" / "such" / "dir" / "meta.db")
    with pytest.raises(StoreError, match="opening the database") as info:
        await store.open()
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    assert await store.ping() is False
    await settle_aiosqlite_threads()


# --- after close ------------------------------------------------------------------------


async def test_connection_closed_underneath_is_a_store_error(db_path: Path) -> None:
    """aiosqlite raises ValueError on a closed connection; the store translates it."""
    store = SqliteStore(db_path)
    await store.open()
    job = make_job()
    await store.create_job(job)
    await store.db.close()  # the connection dies while the store still holds it
    assert await store.ping() is False
    with pytest.raises(StoreError, match="unavailable while reading a job"):
        await store.get_job(job.id)
    with pytest.raises(StoreError, match="unavailable"):
        await store.update_job(job.id, processed_frames=2)
    await store.close()


async def test_a_failing_write_never_undoes_a_concurrent_one(store: SqliteStore) -> None:
    """Writers share one connection; a rollback must only undo its own statements."""
    job = make_job()
    await store.create_job(job)
    good = [make_frame(job.id, i) for i in range(50)]
    orphan = [make_frame(str(uuid.uuid4()), i) for i in range(50)]  # no such job: FK fails
    for _ in range(20):
        results = await asyncio.gather(
            store.add_frames(good), store.add_frames(orphan), return_exceptions=True
        )
        assert results[0] is None
        assert isinstance(results[1], StoreError)
        assert await store.count_frames(job.id) == 50
    assert not store.db.in_transaction


@pytest.mark.parametrize("statuses", [(), (JobStatus.FAILED,)])
async def test_a_page_of_jobs_starts_its_index_range_at_the_cursor(
    store: SqliteStore, db_path: Path, statuses: tuple[JobStatus, ...]
) -> None:
    """``list_jobs`` after a cursor searches an index from there (``created_at<``), and
    never reads every older job to sort them (a ``SCAN``, or a ``TEMP B-TREE FOR ORDER
    BY``; ``FOR RIGHT PART OF ORDER BY`` sorts the ids of one ``created_at`` only)."""
    sql, params = jobs_query(statuses, 50, False, (1000.0, str(uuid.uuid4())), "?")
    with sqlite3.connect(db_path) as conn:
        plan = " | ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "SEARCH jobs USING INDEX" in plan and "created_at<" in plan, plan
    assert "SCAN jobs" not in plan and "TEMP B-TREE FOR ORDER BY" not in plan, plan
