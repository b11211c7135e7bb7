"""The store contract: one suite, run unchanged on every back-end (SQLite in a temporary
file, PostgreSQL on the session's real server, a new database per test)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import pytest

from tests.records import make_frame, make_job
from vfe.errors import StoreError
from vfe.models import Job, JobStatus, SourceType
from vfe.quality import Metrics
from vfe.store import Store


async def test_store_answers_and_names_its_backend(store: Store) -> None:
    assert await store.ping() is True
    assert store.backend in ("sqlite", "postgresql")


# --- jobs -------------------------------------------------------------------------------


async def test_create_and_get_job_round_trip(store: Store) -> None:
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


async def test_duplicate_job_id_is_a_store_error(store: Store) -> None:
    job = make_job()
    await store.create_job(job)
    with pytest.raises(StoreError, match="creating a job"):
        await store.create_job(job)


async def test_update_job_sets_values_and_stamps_updated_at(store: Store) -> None:
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


async def test_progress_round_trips(store: Store) -> None:
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


async def test_update_job_explicit_updated_at_wins(store: Store) -> None:
    job = make_job()
    await store.create_job(job)
    updated = await store.update_job(job.id, updated_at=4242.0, codec="vp9")
    assert updated is not None and updated.updated_at == 4242.0 and updated.codec == "vp9"


@pytest.mark.parametrize("status", [s for s in JobStatus if s.finished])
async def test_update_job_leaves_a_finished_job_unchanged(store: Store, status: JobStatus) -> None:
    job = make_job(status=status, processed_frames=7)
    await store.create_job(job)
    assert await store.update_job(job.id, status=JobStatus.PROCESSING, processed_frames=1) is None
    assert await store.get_job(job.id) == job


async def test_update_job_unless_finished_false_may_move_a_finished_job(
    store: Store,
) -> None:
    job = make_job(status=JobStatus.FAILED)
    await store.create_job(job)
    updated = await store.update_job(
        job.id, unless_finished=False, status=JobStatus.PENDING, attempts=1
    )
    assert updated is not None and updated.status is JobStatus.PENDING and updated.attempts == 1


async def test_update_missing_job_returns_none(store: Store) -> None:
    assert await store.update_job(str(uuid.uuid4()), processed_frames=1) is None


@pytest.mark.parametrize("column", ["id", "created_at", "nope", "status; DROP TABLE jobs"])
async def test_update_job_refuses_unknown_or_fixed_columns(store: Store, column: str) -> None:
    job = make_job()
    await store.create_job(job)
    with pytest.raises(ValueError, match="not job columns"):
        await store.update_job(job.id, **{column: "x"})
    assert await store.get_job(job.id) == job


async def test_list_jobs_orders_filters_and_limits(store: Store) -> None:
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


async def test_list_jobs_pages_by_created_at_then_id_ties_included(store: Store) -> None:
    """Five jobs, three made in the same instant: pages of two, each after the last job of
    the page before, hold every job once, newest first (ties by id, highest first); a job
    made meanwhile, newer than the first page, shifts nothing."""
    made = [make_job(created_at=t) for t in (10.0, 20.0, 20.0, 20.0, 30.0)]
    for job in made:
        await store.create_job(job)
    order = sorted(made, key=lambda j: (j.created_at, j.id), reverse=True)
    pages, before = [], None
    while page := await store.list_jobs(limit=2, before=before):
        pages.append([j.id for j in page])
        before = (page[-1].created_at, page[-1].id)
        if len(pages) == 1:
            await store.create_job(make_job(created_at=40.0))
    assert pages == [[j.id for j in order[i : i + 2]] for i in (0, 2, 4)]
    failed = make_job(created_at=15.0, status=JobStatus.FAILED)
    await store.create_job(failed)
    assert [j.id for j in await store.list_jobs([JobStatus.FAILED], before=(20.0, ""))] == [
        failed.id
    ]


async def test_delete_job_cascades_to_its_frames_only(store: Store) -> None:
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


async def test_frames_need_an_existing_job(store: Store) -> None:
    with pytest.raises(StoreError, match="saving frames"):
        await store.add_frames([make_frame(str(uuid.uuid4()), 0)])


# --- frames -----------------------------------------------------------------------------


@pytest.fixture
async def job(store: Store) -> Job:
    created = make_job()
    await store.create_job(created)
    return created


async def test_add_frames_replaces_by_index_never_duplicates(store: Store, job: Job) -> None:
    await store.add_frames([make_frame(job.id, 0), make_frame(job.id, 1)])
    replacement = make_frame(job.id, 1, checksum="new", size_bytes=999)
    await store.add_frames([replacement])
    await store.add_frames([replacement])  # a retried batch is harmless too
    assert await store.count_frames(job.id) == 2
    frames = await store.list_frames(job.id)
    assert [f.index for f in frames] == [0, 1]
    assert frames[1] == replacement


async def test_add_no_frames_is_a_no_op(store: Store, job: Job) -> None:
    await store.add_frames([])
    assert await store.count_frames(job.id) == 0


async def test_add_frames_is_one_transaction(store: Store, job: Job) -> None:
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


async def test_same_file_name_under_another_index_replaces_the_row(store: Store, job: Job) -> None:
    # frames_by_job_name is unique; INSERT OR REPLACE resolves that conflict too.
    first = make_frame(job.id, 4)
    clash = make_frame(job.id, 5, filename=first.filename)
    await store.add_frames([first])
    await store.add_frames([clash])
    assert await store.list_frames(job.id) == [clash]


async def test_list_frames_order_offset_limit(store: Store, job: Job) -> None:
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


async def test_count_frames_is_per_job(store: Store, job: Job) -> None:
    other = make_job()
    await store.create_job(other)
    await store.add_frames([make_frame(job.id, i) for i in range(4)])
    await store.add_frames([make_frame(other.id, 0)])
    assert await store.count_frames(job.id) == 4
    assert await store.count_frames(other.id) == 1
    assert await store.count_frames(str(uuid.uuid4())) == 0


async def test_a_frame_keeps_its_metrics_and_how_it_was_chosen(store: Store, job: Job) -> None:
    metrics = Metrics(brightness=0.5, contrast=0.25, sharpness=812.5, black=0.01,
                      phash="8c1d3e164e0eabf1")  # fmt: skip
    frames = [
        make_frame(job.id, 0),  # made before metrics: none
        make_frame(job.id, 1, metrics=metrics),
        make_frame(job.id, 2, metrics=metrics, substituted=True, target_time=1.5),
        make_frame(job.id, 3, metrics=metrics, stretch=3, score=0.731),
    ]
    await store.add_frames(frames)
    assert await store.list_frames(job.id) == frames
    assert await store.get_frame(job.id, frames[3].filename) == frames[3]
    assert (await store.recent_frames(0.0, job.id))[0] == frames[3]


async def test_get_frame_by_file_name(store: Store, job: Job) -> None:
    frame = make_frame(job.id, 7, 14.0)
    await store.add_frames([frame, make_frame(job.id, 8, 16.0)])
    assert await store.get_frame(job.id, "000007_14.000.jpg") == frame
    assert await store.get_frame(job.id, "000009_18.000.jpg") is None
    assert await store.get_frame(str(uuid.uuid4()), "000007_14.000.jpg") is None


async def test_delete_frames_by_index(store: Store, job: Job) -> None:
    other = make_job()
    await store.create_job(other)
    await store.add_frames([make_frame(job.id, i) for i in range(5)])
    await store.add_frames([make_frame(other.id, 1)])
    await store.delete_frames(job.id, [1, 3, 99])
    assert [f.index for f in await store.list_frames(job.id)] == [0, 2, 4]
    assert await store.count_frames(other.id) == 1  # same index, other job: kept
    await store.delete_frames(job.id, [])
    assert await store.count_frames(job.id) == 3


async def test_recent_frames_since_newest_first_and_limit(store: Store, job: Job) -> None:
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


async def test_recent_frames_same_time_breaks_tie_by_index(store: Store, job: Job) -> None:
    await store.add_frames([make_frame(job.id, i, created_at=500.0) for i in (1, 0, 2)])
    assert [f.index for f in await store.recent_frames(0.0)] == [2, 1, 0]


@pytest.mark.parametrize("pattern", ["%", "_", "%%", "*", "' OR 1=1 --"])
async def test_recent_frames_job_id_is_matched_literally(
    store: Store, job: Job, pattern: str
) -> None:
    await store.add_frames([make_frame(job.id, i, created_at=100.0) for i in range(3)])
    assert await store.recent_frames(0.0, job_id=pattern) == []
    assert len(await store.recent_frames(0.0, job_id=job.id)) == 3


# --- after close --------------------------------------------------------------------


async def test_every_call_after_close_is_a_store_error(store: Store) -> None:
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


# --- idempotency ------------------------------------------------------------------------


async def test_one_idempotency_key_makes_one_job_even_when_requests_race(store: Store) -> None:
    jobs = [make_job() for _ in range(8)]
    answers = await asyncio.gather(*(store.create_job(j, ("key-1", "print-1")) for j in jobs))
    made = [j for j, answer in zip(jobs, answers, strict=True) if answer is None]
    assert len(made) == 1
    assert all(a == ("print-1", made[0].id) for a in answers if a is not None)
    assert [j.id for j in await store.list_jobs()] == [made[0].id]
    assert await store.find_idempotent("key-1") == ("print-1", made[0].id)
    assert await store.find_idempotent("key-2") is None
    await store.delete_job(made[0].id)  # the key goes with its job
    assert await store.find_idempotent("key-1") is None


# --- runs: claim and fenced writes ------------------------------------------------------


async def test_claim_starts_a_run_with_the_next_attempt(store: Store) -> None:
    job = make_job(error_message="old", finished_at=None)
    await store.create_job(job)
    first = await store.claim(job.id, 5000.0)
    assert first is not None and first.status is JobStatus.PROCESSING
    assert (first.attempts, first.started_at, first.error_message) == (1, 5000.0, None)
    again = await store.claim(job.id, 6000.0)  # a stalled run is claimed again
    assert again is not None and again.attempts == 2
    assert await store.claim(str(uuid.uuid4()), 1.0) is None


@pytest.mark.parametrize("status", [s for s in JobStatus if s.finished])
async def test_a_finished_job_cannot_be_claimed(store: Store, status: JobStatus) -> None:
    job = make_job(status=status)
    await store.create_job(job)
    assert await store.claim(job.id, 1.0) is None
    assert await store.get_job(job.id) == job


async def test_concurrent_claims_each_get_their_own_attempt(store: Store) -> None:
    job = make_job()
    await store.create_job(job)
    claimed = await asyncio.gather(*(store.claim(job.id, 1.0) for _ in range(6)))
    assert sorted(j.attempts for j in claimed if j is not None) == [1, 2, 3, 4, 5, 6]


async def test_record_writes_values_frames_and_drops_together(store: Store) -> None:
    job = make_job()
    await store.create_job(job)
    run = await store.claim(job.id, 1.0)
    assert run is not None
    await store.record(job.id, run.attempts, frames=[make_frame(job.id, i) for i in range(3)])
    done = await store.record(
        job.id,
        run.attempts,
        frames=[make_frame(job.id, 3), make_frame(job.id, 1, checksum="again")],
        drop=[0, 2],
        status=JobStatus.COMPLETED,
        processed_frames=2,
        finished_at=9.0,
    )
    assert done is not None and done.status is JobStatus.COMPLETED
    assert (done.processed_frames, done.finished_at) == (2, 9.0)
    frames = await store.list_frames(job.id)
    assert [(f.index, f.checksum) for f in frames] == [(1, "again"), (3, "sum3")]
    assert await store.get_job(job.id) == done


async def test_a_run_claimed_again_writes_nothing_more(store: Store) -> None:
    job = make_job()
    await store.create_job(job)
    stale = await store.claim(job.id, 1.0)
    fresh = await store.claim(job.id, 2.0)
    assert stale is not None and fresh is not None
    refused = await store.record(
        job.id, stale.attempts, frames=[make_frame(job.id, 0)], status=JobStatus.COMPLETED
    )
    assert refused is None
    assert await store.count_frames(job.id) == 0
    now = await store.get_job(job.id)
    assert now is not None and now.status is JobStatus.PROCESSING and now.attempts == 2
    assert await store.record(job.id, fresh.attempts, processed_frames=1) is not None


@pytest.mark.parametrize("ending", ["cancelled", "deleted", "pending"])
async def test_a_run_whose_job_was_stopped_writes_nothing(store: Store, ending: str) -> None:
    job = make_job()
    await store.create_job(job)
    run = await store.claim(job.id, 1.0)
    assert run is not None
    await store.record(job.id, run.attempts, frames=[make_frame(job.id, 0)])
    if ending == "deleted":
        await store.delete_job(job.id)
    else:  # a user's cancel, or a shutdown putting it back in the queue
        await store.update_job(job.id, status=JobStatus(ending))
    late = await store.record(
        job.id, run.attempts, frames=[make_frame(job.id, 1)], drop=[0], processed_frames=2
    )
    assert late is None
    assert [f.index for f in await store.list_frames(job.id)] == (
        [] if ending == "deleted" else [0]
    )


async def test_a_refused_or_failed_record_leaves_no_frame_behind(store: Store) -> None:
    job = make_job()
    await store.create_job(job)
    run = await store.claim(job.id, 1.0)
    assert run is not None
    bad = make_frame(job.id, 2, checksum=None)  # breaks NOT NULL: the whole write fails
    with pytest.raises(StoreError, match="recording a run"):
        await store.record(job.id, run.attempts, frames=[make_frame(job.id, 1), bad],
                           status=JobStatus.COMPLETED)  # fmt: skip
    after = await store.get_job(job.id)
    assert after is not None and after.status is JobStatus.PROCESSING
    assert await store.count_frames(job.id) == 0


@pytest.mark.parametrize("column", ["attempts", "started_at", "id", "created_at"])
async def test_record_refuses_columns_a_run_does_not_own(store: Store, column: str) -> None:
    job = make_job()
    await store.create_job(job)
    with pytest.raises(ValueError, match="not job columns"):
        await store.record(job.id, 1, **{column: 1})
