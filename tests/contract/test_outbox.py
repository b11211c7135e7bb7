"""The store contract, webhook outbox: run unchanged on every back-end. A job's final
status write keeps its webhook in the same transaction; attempts are claimed under a
lease, settled under their attempt number, and claimed again when a lease runs out."""

from __future__ import annotations

import asyncio
import time

from tests.records import make_job
from vfe.models import DeliveryStatus, Job, JobStatus
from vfe.store import Store

URL = "https://receiver.example/hook"
LEASE = 30.0


def hooked(status: JobStatus = JobStatus.PENDING, url: str | None = URL, **kw: object) -> Job:
    options = {"mode": "interval"} if url is None else {"mode": "interval", "webhook_url": url}
    return make_job(status=status, options=options, created_at=time.time(), **kw)


async def test_each_final_status_write_keeps_one_webhook(store: Store) -> None:
    cancelled, ran, reused = hooked(), hooked(), hooked(JobStatus.COMPLETED)
    for job in (cancelled, ran, reused):
        await store.create_job(job)
    assert await store.get_delivery(cancelled.id) is None  # not ended yet
    assert await store.update_job(cancelled.id, status=JobStatus.CANCELLED) is not None
    claimed = await store.claim(ran.id, time.time())
    assert claimed is not None
    assert await store.record(ran.id, claimed.attempts, processed_frames=3) is not None
    assert await store.get_delivery(ran.id) is None  # a write that does not end the job
    assert await store.record(
        ran.id, claimed.attempts, status=JobStatus.FAILED, error_message="boom"
    )
    for job, status in ((cancelled, "cancelled"), (ran, "failed"), (reused, "completed")):
        delivery = await store.get_delivery(job.id)
        assert delivery is not None
        assert (delivery.url, delivery.status, delivery.attempts) == (URL, "pending", 0)
        assert delivery.job.id == job.id and delivery.job.status == status  # as it ended
        assert delivery.job.options == job.options
    failed = await store.get_delivery(ran.id)
    assert failed is not None and failed.job.error_message == "boom"
    # a later write to the finished job keeps the first webhook, once
    await store.update_job(ran.id, unless_finished=False, status=JobStatus.COMPLETED)
    again = await store.get_delivery(ran.id)
    assert again is not None and again.job.status is JobStatus.FAILED


async def test_webhook_url_default_and_none(store: Store) -> None:
    plain, own = hooked(url=None), hooked(url="https://own.example/")
    for job in (plain, own):
        await store.create_job(job)
        await store.update_job(job.id, status=JobStatus.CANCELLED)
    assert await store.get_delivery(plain.id) is None  # no URL, no default: nothing
    store.webhook_url = "https://default.example/"
    later = hooked(url=None)
    await store.create_job(later)
    await store.update_job(later.id, status=JobStatus.CANCELLED)
    got = await store.get_delivery(later.id)
    assert got is not None and got.url == "https://default.example/"
    mine = await store.get_delivery(own.id)
    assert mine is not None and mine.url == "https://own.example/"  # its own wins


async def test_claims_lease_and_fence(store: Store) -> None:
    job = hooked(JobStatus.COMPLETED)
    await store.create_job(job)
    assert await store.delete_job(job.id)  # the webhook outlives its job
    now = time.time()
    first = await store.claim_delivery(now, LEASE)
    assert first is not None and first.job_id == job.id and first.attempts == 1
    assert await store.claim_delivery(now, LEASE) is None  # leased
    assert await store.next_delivery() == now + LEASE
    # the lease runs out (its process died): claimed again, a new attempt
    second = await store.claim_delivery(now + LEASE + 1, LEASE)
    assert second is not None and second.attempts == 2
    late = await store.settle_delivery(
        job.id, 1, DeliveryStatus.DELIVERED, due_at=now, delivered_at=now
    )
    assert late is False  # the dead attempt's outcome is refused
    retry = now + 100
    pending = DeliveryStatus.PENDING
    assert await store.settle_delivery(job.id, 2, pending, due_at=retry, last_error="503")
    assert await store.claim_delivery(now + LEASE + 2, LEASE) is None  # not due yet
    assert await store.next_delivery() == retry
    third = await store.claim_delivery(retry, LEASE)
    assert third is not None and third.attempts == 3 and third.last_error == "503"
    assert await store.settle_delivery(
        job.id, 3, DeliveryStatus.DELIVERED, due_at=retry, delivered_at=retry + 1
    )
    done = await store.get_delivery(job.id)
    assert done is not None and done.status is DeliveryStatus.DELIVERED
    assert done.delivered_at == retry + 1
    assert await store.claim_delivery(retry + 10**6, LEASE) is None
    assert await store.next_delivery() is None
    assert not await store.settle_delivery(job.id, 3, pending, due_at=retry)  # settled


async def test_concurrent_claims_take_each_attempt_once(store: Store) -> None:
    jobs = [hooked(JobStatus.COMPLETED) for _ in range(12)]
    for job in jobs:
        await store.create_job(job)
    now = time.time()
    got = await asyncio.gather(*(store.claim_delivery(now, LEASE) for _ in range(20)))
    claimed = [d.job_id for d in got if d is not None]
    assert sorted(claimed) == sorted(j.id for j in jobs)  # each once, none twice


async def test_a_released_attempt_is_claimed_again_under_its_number(store: Store) -> None:
    job = hooked(JobStatus.FAILED)
    await store.create_job(job)
    now = time.time()
    first = await store.claim_delivery(now, LEASE)
    assert first is not None and first.attempts == 1
    assert not await store.release_delivery(job.id, 2)  # not the current attempt
    assert await store.release_delivery(job.id, 1)
    again = await store.claim_delivery(now, LEASE)  # at once: no lease, still due
    assert again is not None and again.attempts == 1
    pending = DeliveryStatus.PENDING
    assert await store.settle_delivery(job.id, 1, DeliveryStatus.DELIVERED, due_at=now)
    assert not await store.release_delivery(job.id, 1)  # settled: nothing to give back
    done = await store.get_delivery(job.id)
    assert done is not None and done.status is not pending and done.attempts == 1
