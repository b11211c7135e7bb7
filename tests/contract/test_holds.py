"""The store's part in stored objects: holds, collect and reuse, on every back-end.

An object is removed only when no job holds it, and a hold that races a collect waits
for it, so an object held again is always written after it was removed."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from tests.records import make_frame, make_job
from vfe.models import JobStatus
from vfe.quality import Metrics
from vfe.store import ReuseGone, Store

A, B, C = "frames/aa/aaaa.jpg", "frames/bb/bbbb.jpg", "sources/cccc"
METRICS = Metrics(
    brightness=0.4, contrast=0.2, sharpness=640.0, black=0.0, phash="00ff00ff00ff00ff"
)


class Removed:
    """A ``remove`` for ``collect`` that notes what it was asked to remove."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    async def __call__(self, keys: list[str]) -> None:
        self.keys.extend(keys)


async def collect_all(store: Store) -> list[str]:
    removed = Removed()
    while await store.collect(removed):
        pass
    return sorted(removed.keys)


async def test_an_object_goes_when_the_last_job_that_holds_it_goes(store: Store) -> None:
    first, second = make_job(), make_job()
    await store.create_job(first, holds=[(C, 100)])
    await store.create_job(second)
    assert await store.hold(first.id, [(A, 10), (B, 20)]) is True
    assert await store.hold(second.id, [(A, 10)]) is True
    assert await store.hold(second.id, [(A, 10)]) is True  # twice: still one hold
    assert await collect_all(store) == []  # everything is held
    await store.delete_job(first.id)
    assert await collect_all(store) == [B, C]  # A is still the second job's
    await store.delete_job(second.id)
    assert await collect_all(store) == [A]
    assert await collect_all(store) == []  # and its row went with it


async def test_a_hold_for_a_job_that_is_gone_holds_nothing(store: Store) -> None:
    job = make_job()
    assert await store.hold(job.id, [(A, 10)]) is False
    await store.create_job(job)
    await store.hold(job.id, [(A, 10)])
    await store.delete_job(job.id)
    assert await store.hold(job.id, [(B, 10)]) is False
    assert await collect_all(store) == [A]


async def test_a_hold_racing_a_collect_waits_until_the_object_is_removed(store: Store) -> None:
    old, new = make_job(), make_job()
    await store.create_job(old, holds=[(A, 10)])
    await store.create_job(new)
    await store.delete_job(old.id)
    removing, release = asyncio.Event(), asyncio.Event()
    removed: list[str] = []

    async def slow_remove(keys: list[str]) -> None:
        removing.set()
        await release.wait()
        removed.extend(keys)

    collector = asyncio.create_task(store.collect(slow_remove))
    await removing.wait()
    holder = asyncio.create_task(store.hold(new.id, [(A, 10)]))
    done, _ = await asyncio.wait([holder], timeout=0.3)
    assert not done  # it waits for the removal: its object is written after it
    release.set()
    assert await collector == 1 and removed == [A]
    assert await holder is True
    assert await collect_all(store) == []  # held again: stays


async def test_a_failed_removal_keeps_the_objects_for_the_next_collect(store: Store) -> None:
    job = make_job()
    await store.create_job(job, holds=[(A, 10)])
    await store.delete_job(job.id)

    async def failing(keys: list[str]) -> None:
        raise OSError("the bucket is away")

    with pytest.raises(OSError):
        await store.collect(failing)
    assert await collect_all(store) == [A]


async def test_a_reused_job_takes_the_frames_and_holds_of_the_completed_one(store: Store) -> None:
    done = make_job(status=JobStatus.COMPLETED, reuse_key="k1", finished_at=1500.0)
    await store.create_job(done, holds=[(C, 100)])
    frames = [make_frame(done.id, i, filename=f"{i:06d}_{i}.000.jpg") for i in range(3)]
    frames[1] = dataclasses.replace(frames[1], metrics=METRICS, substituted=True)
    await store.add_frames(frames)
    await store.hold(done.id, [(A, 10), (B, 20)])
    found = await store.find_reusable("k1")
    assert found is not None and found.id == done.id
    assert await store.find_reusable("other") is None
    copy = make_job(status=JobStatus.COMPLETED, reuse_key="k1", created_at=3000.0)
    assert await store.create_job(copy, copy_from=done.id) is None
    got = await store.list_frames(copy.id)
    assert got == [dataclasses.replace(f, job_id=copy.id, created_at=3000.0) for f in frames]
    await store.delete_job(done.id)
    assert await collect_all(store) == [C]  # the source is not the copy's; the frames are
    await store.delete_job(copy.id)
    assert await collect_all(store) == [A, B]


async def test_reuse_of_a_job_that_is_gone_or_unfinished_records_nothing(store: Store) -> None:
    running = make_job(status=JobStatus.PROCESSING, reuse_key="k2")
    await store.create_job(running)
    assert await store.find_reusable("k2") is None  # only completed jobs are reused
    for source in (running.id, make_job().id):
        copy = make_job(status=JobStatus.COMPLETED)
        with pytest.raises(ReuseGone):
            await store.create_job(copy, copy_from=source)
        assert await store.get_job(copy.id) is None


async def test_the_newest_completed_job_is_the_one_reused(store: Store) -> None:
    older = make_job(status=JobStatus.COMPLETED, reuse_key="k3", finished_at=100.0)
    newer = make_job(status=JobStatus.COMPLETED, reuse_key="k3", finished_at=200.0)
    failed = make_job(status=JobStatus.FAILED, reuse_key="k3", finished_at=300.0)
    for job in (older, newer, failed):
        await store.create_job(job)
    found = await store.find_reusable("k3")
    assert found is not None and found.id == newer.id and found.reuse_key == "k3"


async def test_a_reserved_object_waits_for_its_hold_or_for_its_lease(store: Store) -> None:
    now = time.time()
    await store.reserve([(C, 100)], until=now + 3600)  # a submit storing its source
    assert await collect_all(store) == []  # not yet: the lease runs
    job = make_job()
    await store.create_job(job, holds=[(C, 100)])  # the hold takes over
    await store.reserve([(C, 100)], until=now - 1)  # a reserve never releases a held one
    await store.delete_job(job.id)
    assert await collect_all(store) == [C]
    await store.reserve([(A, 10)], until=now - 1)  # a submit that failed: lease over
    await store.reserve([(B, 10)], until=now + 3600)
    await store.reserve([(B, 10)], until=now - 1)  # the later of the two times wins
    assert await collect_all(store) == [A]


async def test_two_jobs_deleted_at_once_free_what_they_shared(store: Store) -> None:
    first, second = make_job(), make_job()
    for job in (first, second):
        await store.create_job(job, holds=[(A, 10), (B, 10)])
    await asyncio.gather(store.delete_job(first.id), store.delete_job(second.id))
    assert await collect_all(store) == [A, B]


async def test_known_names_the_keys_with_a_row(store: Store) -> None:
    job = make_job()
    await store.create_job(job, holds=[(A, 10)])
    await store.reserve([(C, 5)], until=time.time() + 60)
    assert await store.known([A, B, C]) == {A, C}
    assert await store.known([]) == set()
    many = [f"frames/00/{n:064x}.jpg" for n in range(1200)]  # past SQLite's bound a query
    await store.reserve([(key, 1) for key in many[::2]], until=time.time() + 60)
    assert await store.known(many) == set(many[::2])
