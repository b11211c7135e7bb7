"""SqliteStore against a real SQLite file in ``tmp_path``."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.conftest import wait_until_async
from vfe.errors import StoreError
from vfe.models import Frame, Job, JobStatus, SourceType
from vfe.store import MIGRATIONS, SqliteStore, Store


def make_job(
    created_at: float = 1000.0, status: JobStatus = JobStatus.PENDING, **kw: object
) -> Job:
    values: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "status": status,
        "video_source": "clip.mp4",
        "source_type": SourceType.PATH,
        "source_path": "/srv/videos/clip.mp4",
        "interval": 1.5,
        "created_at": created_at,
        "updated_at": created_at,
    }
    values.update(kw)
    return Job(**values)  # type: ignore[arg-type]


def make_frame(
    job_id: str,
    index: int,
    timestamp: float | None = None,
    created_at: float = 2000.0,
    **kw: object,
) -> Frame:
    ts = float(index) if timestamp is None else timestamp
    values: dict[str, object] = {
        "job_id": job_id,
        "index": index,
        "timestamp": ts,
        "target_time": ts,
        "filename": f"{index:06d}_{ts:.3f}.jpg",
        "size_bytes": 100 + index,
        "checksum": f"sum{index}",
        "width": 320,
        "height": 240,
        "created_at": created_at,
    }
    values.update(kw)
    return Frame(**values)  # type: ignore[arg-type]


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


async def test_sqlite_store_satisfies_the_protocol(store: SqliteStore) -> None:
    as_protocol: Store = store
    assert await as_protocol.ping() is True


# --- jobs -------------------------------------------------------------------------------


async def test_create_and_get_job_round_trip(store: SqliteStore) -> None:
    job = make_job(
        status=JobStatus.PROCESSING,
        source_type=SourceType.UPLOAD,
        total_frames=10,
        processed_frames=4,
        started_at=1001.0,
        duration=12.5,
        fps=25.0,
        width=320,
        height=240,
        codec="h264",
        attempts=2,
        error_message="boom",
    )
    await store.create_job(job)
    got = await store.get_job(job.id)
    assert got == job
    assert got is not None and got.status is JobStatus.PROCESSING
    assert got.source_type is SourceType.UPLOAD
    assert await store.get_job(str(uuid.uuid4())) is None


async def test_duplicate_job_id_is_a_store_error(store: SqliteStore) -> None:
    job = make_job()
    await store.create_job(job)
    with pytest.raises(StoreError, match="creating a job") as info:
        await store.create_job(job)
    assert isinstance(info.value.__cause__, sqlite3.IntegrityError)


async def test_update_job_sets_values_and_stamps_updated_at(store: SqliteStore) -> None:
    job = make_job()
    await store.create_job(job)
    before = time.time()
    updated = await store.update_job(job.id, status=JobStatus.PROCESSING, processed_frames=3)
    assert updated is not None
    assert updated.status is JobStatus.PROCESSING
    assert updated.processed_frames == 3
    assert updated.updated_at >= before
    assert updated.created_at == job.created_at
    assert await store.get_job(job.id) == updated


async def test_progress_round_trips(store: SqliteStore) -> None:
    job = make_job(options={"mode": "scene"})
    await store.create_job(job)
    fresh = await store.get_job(job.id)
    assert fresh is not None and fresh.progress is None
    for value in (0.0, 0.375, 1.0):
        updated = await store.update_job(job.id, progress=value)
        assert updated is not None and updated.progress == value
        got = await store.get_job(job.id)
        assert got is not None and got.progress == value
        assert got == updated
    cleared = await store.update_job(job.id, progress=None)
    assert cleared is not None and cleared.progress is None
    created = make_job(status=JobStatus.PROCESSING, progress=0.625)
    await store.create_job(created)
    assert await store.get_job(created.id) == created
    [listed] = [j for j in await store.list_jobs() if j.id == created.id]
    assert listed.progress == 0.625


async def test_update_job_explicit_updated_at_wins(store: SqliteStore) -> None:
    job = make_job()
    await store.create_job(job)
    updated = await store.update_job(job.id, updated_at=4242.0, codec="vp9")
    assert updated is not None and updated.updated_at == 4242.0 and updated.codec == "vp9"


@pytest.mark.parametrize("status", [s for s in JobStatus if s.finished])
async def test_update_job_leaves_a_finished_job_unchanged(
    store: SqliteStore, status: JobStatus
) -> None:
    job = make_job(status=status, processed_frames=7)
    await store.create_job(job)
    assert await store.update_job(job.id, status=JobStatus.PROCESSING, processed_frames=1) is None
    assert await store.get_job(job.id) == job


async def test_update_job_unless_finished_false_may_move_a_finished_job(
    store: SqliteStore,
) -> None:
    job = make_job(status=JobStatus.FAILED)
    await store.create_job(job)
    updated = await store.update_job(
        job.id, unless_finished=False, status=JobStatus.PENDING, attempts=1
    )
    assert updated is not None and updated.status is JobStatus.PENDING and updated.attempts == 1


async def test_update_missing_job_returns_none(store: SqliteStore) -> None:
    assert await store.update_job(str(uuid.uuid4()), processed_frames=1) is None


@pytest.mark.parametrize("column", ["id", "created_at", "nope", "status; DROP TABLE jobs"])
async def test_update_job_refuses_unknown_or_fixed_columns(store: SqliteStore, column: str) -> None:
    job = make_job()
    await store.create_job(job)
    with pytest.raises(ValueError, match="not job columns"):
        await store.update_job(job.id, **{column: "x"})
    assert await store.get_job(job.id) == job


async def test_list_jobs_orders_filters_and_limits(store: SqliteStore) -> None:
    jobs = [
        make_job(created_at=30.0, status=JobStatus.PENDING),
        make_job(created_at=10.0, status=JobStatus.COMPLETED),
        make_job(created_at=20.0, status=JobStatus.PROCESSING),
        make_job(created_at=40.0, status=JobStatus.FAILED),
    ]
    for job in jobs:
        await store.create_job(job)
    newest_first = [j.created_at for j in await store.list_jobs()]
    assert newest_first == [40.0, 30.0, 20.0, 10.0]
    oldest_first = [j.created_at for j in await store.list_jobs(oldest_first=True)]
    assert oldest_first == [10.0, 20.0, 30.0, 40.0]
    assert [j.created_at for j in await store.list_jobs(limit=2)] == [40.0, 30.0]
    active = await store.list_jobs([JobStatus.PENDING, JobStatus.PROCESSING], oldest_first=True)
    assert [(j.created_at, j.status) for j in active] == [
        (20.0, JobStatus.PROCESSING),
        (30.0, JobStatus.PENDING),
    ]
    assert await store.list_jobs([JobStatus.CANCELLED]) == []


async def test_delete_job_cascades_to_its_frames_only(store: SqliteStore) -> None:
    doomed, kept = make_job(), make_job()
    await store.create_job(doomed)
    await store.create_job(kept)
    await store.add_frames([make_frame(doomed.id, i) for i in range(3)])
    await store.add_frames([make_frame(kept.id, i) for i in range(2)])

    assert await store.delete_job(doomed.id) is True
    assert await store.get_job(doomed.id) is None
    assert await store.count_frames(doomed.id) == 0
    assert await store.list_frames(doomed.id) == []
    assert await store.count_frames(kept.id) == 2
    assert await store.delete_job(doomed.id) is False


async def test_frames_need_an_existing_job(store: SqliteStore) -> None:
    with pytest.raises(StoreError, match="saving frames") as info:
        await store.add_frames([make_frame(str(uuid.uuid4()), 0)])
    assert isinstance(info.value.__cause__, sqlite3.IntegrityError)


# --- frames -----------------------------------------------------------------------------


@pytest.fixture
async def job(store: SqliteStore) -> Job:
    created = make_job()
    await store.create_job(created)
    return created


async def test_add_frames_replaces_by_index_never_duplicates(store: SqliteStore, job: Job) -> None:
    await store.add_frames([make_frame(job.id, 0), make_frame(job.id, 1)])
    replacement = make_frame(job.id, 1, checksum="new", size_bytes=999)
    await store.add_frames([replacement])
    await store.add_frames([replacement])  # a retried batch is harmless too
    assert await store.count_frames(job.id) == 2
    frames = await store.list_frames(job.id)
    assert [f.index for f in frames] == [0, 1]
    assert frames[1] == replacement


async def test_add_no_frames_is_a_no_op(store: SqliteStore, job: Job) -> None:
    await store.add_frames([])
    assert await store.count_frames(job.id) == 0


async def test_add_frames_is_one_transaction(store: SqliteStore, job: Job) -> None:
    # A row that breaks a NOT NULL constraint fails the batch: nothing of it may be left
    # behind, neither visible now nor committed later by the next write.
    bad = make_frame(job.id, 5, timestamp=5.0, checksum=None)
    with pytest.raises(StoreError, match="saving frames"):
        await store.add_frames([make_frame(job.id, 3), make_frame(job.id, 4), bad])
    assert await store.count_frames(job.id) == 0
    await store.update_job(job.id, processed_frames=1)  # another write commits
    assert await store.count_frames(job.id) == 0
    await store.add_frames([make_frame(job.id, 3)])  # and the store still works
    assert await store.count_frames(job.id) == 1


async def test_same_file_name_under_another_index_replaces_the_row(
    store: SqliteStore, job: Job
) -> None:
    # frames_by_job_name is unique; INSERT OR REPLACE resolves that conflict too.
    first = make_frame(job.id, 4)
    clash = make_frame(job.id, 5, filename=first.filename)
    await store.add_frames([first])
    await store.add_frames([clash])
    assert await store.list_frames(job.id) == [clash]


async def test_list_frames_order_offset_limit(store: SqliteStore, job: Job) -> None:
    # Inserted out of order; index 3 and 4 share a timestamp (index breaks the tie).
    frames = [
        make_frame(job.id, 2, 2.0),
        make_frame(job.id, 4, 3.0, filename="000004_3.000.jpg"),
        make_frame(job.id, 0, 0.0),
        make_frame(job.id, 3, 3.0),
        make_frame(job.id, 1, 1.0),
    ]
    await store.add_frames(frames)
    assert [f.index for f in await store.list_frames(job.id)] == [0, 1, 2, 3, 4]
    assert [f.index for f in await store.list_frames(job.id, offset=1, limit=2)] == [1, 2]
    assert [f.index for f in await store.list_frames(job.id, offset=4)] == [4]
    assert await store.list_frames(job.id, offset=5) == []
    assert await store.list_frames(job.id, limit=0) == []
    assert await store.list_frames(str(uuid.uuid4())) == []


async def test_count_frames_is_per_job(store: SqliteStore, job: Job) -> None:
    other = make_job()
    await store.create_job(other)
    await store.add_frames([make_frame(job.id, i) for i in range(4)])
    await store.add_frames([make_frame(other.id, 0)])
    assert await store.count_frames(job.id) == 4
    assert await store.count_frames(other.id) == 1
    assert await store.count_frames(str(uuid.uuid4())) == 0


async def test_get_frame_by_file_name(store: SqliteStore, job: Job) -> None:
    frame = make_frame(job.id, 7, 14.0)
    await store.add_frames([frame, make_frame(job.id, 8, 16.0)])
    assert await store.get_frame(job.id, "000007_14.000.jpg") == frame
    assert await store.get_frame(job.id, "000009_18.000.jpg") is None
    assert await store.get_frame(str(uuid.uuid4()), "000007_14.000.jpg") is None


async def test_delete_frames_by_index(store: SqliteStore, job: Job) -> None:
    other = make_job()
    await store.create_job(other)
    await store.add_frames([make_frame(job.id, i) for i in range(5)])
    await store.add_frames([make_frame(other.id, 1)])
    await store.delete_frames(job.id, [1, 3, 99])
    assert [f.index for f in await store.list_frames(job.id)] == [0, 2, 4]
    assert await store.count_frames(other.id) == 1  # same index, other job: kept
    await store.delete_frames(job.id, [])
    assert await store.count_frames(job.id) == 3


async def test_recent_frames_since_newest_first_and_limit(store: SqliteStore, job: Job) -> None:
    other = make_job()
    await store.create_job(other)
    await store.add_frames(
        [
            make_frame(job.id, 0, created_at=100.0),
            make_frame(job.id, 1, created_at=200.0),
            make_frame(job.id, 2, created_at=300.0),
        ]
    )
    await store.add_frames([make_frame(other.id, 0, created_at=250.0)])
    recent = await store.recent_frames(200.0)  # "at or after"
    assert [(f.job_id, f.created_at) for f in recent] == [
        (job.id, 300.0),
        (other.id, 250.0),
        (job.id, 200.0),
    ]
    assert [f.created_at for f in await store.recent_frames(0.0, limit=2)] == [300.0, 250.0]
    assert await store.recent_frames(301.0) == []
    only_job = await store.recent_frames(0.0, job_id=job.id)
    assert [f.index for f in only_job] == [2, 1, 0]


async def test_recent_frames_same_time_breaks_tie_by_index(store: SqliteStore, job: Job) -> None:
    await store.add_frames([make_frame(job.id, i, created_at=500.0) for i in (1, 0, 2)])
    assert [f.index for f in await store.recent_frames(0.0)] == [2, 1, 0]


@pytest.mark.parametrize("pattern", ["%", "_", "%%", "*", "' OR 1=1 --"])
async def test_recent_frames_job_id_is_matched_literally(
    store: SqliteStore, job: Job, pattern: str
) -> None:
    await store.add_frames([make_frame(job.id, i, created_at=100.0) for i in range(3)])
    assert await store.recent_frames(0.0, job_id=pattern) == []
    assert len(await store.recent_frames(0.0, job_id=job.id)) == 3


# --- after close ------------------------------------------------------------------------


async def test_every_call_after_close_is_a_store_error(db_path: Path) -> None:
    store = SqliteStore(db_path)
    await store.open()
    job = make_job()
    await store.create_job(job)
    await store.close()
    await store.close()  # idempotent
    assert await store.ping() is False
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.create_job(make_job()),
        lambda: store.get_job(job.id),
        lambda: store.update_job(job.id, processed_frames=1),
        lambda: store.list_jobs(),
        lambda: store.delete_job(job.id),
        lambda: store.add_frames([make_frame(job.id, 0)]),
        lambda: store.list_frames(job.id),
        lambda: store.count_frames(job.id),
        lambda: store.get_frame(job.id, "000000_0.000.jpg"),
        lambda: store.delete_frames(job.id, [0]),
        lambda: store.recent_frames(0.0),
    ]
    for call in calls:
        with pytest.raises(StoreError, match="not open"):
            await call()


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
