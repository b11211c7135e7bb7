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


async def test_deliveries_of_many_jobs_at_once(store: Store) -> None:
    hooked_one, plain, running = hooked(), hooked(url=None), hooked()
    for job in (hooked_one, plain, running):
        await store.create_job(job)
    for job in (hooked_one, plain):
        await store.update_job(job.id, status=JobStatus.CANCELLED)
    ids = [hooked_one.id, plain.id, running.id, "no-such-job"]
    found = await store.get_deliveries(ids)
    assert found == {hooked_one.id: await store.get_delivery(hooked_one.id)}
    assert found[hooked_one.id].job.status is JobStatus.CANCELLED
    assert await store.get_deliveries([]) == {}


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


async def test_a_webhook_goes_with_its_job_once_settled(store: Store) -> None:
    # deleted while its webhook is pending (cancelled by the delete): still delivered
    early = hooked(JobStatus.CANCELLED)
    await store.create_job(early)
    assert await store.delete_job(early.id)
    waiting = await store.get_delivery(early.id)
    assert waiting is not None and waiting.status is DeliveryStatus.PENDING
    now = time.time()
    first = await store.claim_delivery(now, LEASE)
    assert first is not None and first.job_id == early.id
    pending = DeliveryStatus.PENDING
    assert await store.settle_delivery(early.id, 1, pending, due_at=now, last_error="503")
    assert await store.get_delivery(early.id) is not None  # to be tried again: kept
    second = await store.claim_delivery(now, LEASE)
    assert second is not None and second.attempts == 2
    delivered = DeliveryStatus.DELIVERED
    assert await store.settle_delivery(early.id, 2, delivered, due_at=now, delivered_at=now)
    assert await store.get_delivery(early.id) is None  # settled, and its job is gone
    # settled while its job is there: kept, for the job's status; then deleted with it
    late = hooked(JobStatus.COMPLETED)
    await store.create_job(late)
    now = time.time()
    claimed = await store.claim_delivery(now, LEASE)
    assert claimed is not None and claimed.job_id == late.id
    assert await store.settle_delivery(late.id, 1, DeliveryStatus.GONE, due_at=now)
    kept = await store.get_delivery(late.id)
    assert kept is not None and kept.status is DeliveryStatus.GONE
    assert await store.delete_job(late.id)
    assert await store.get_delivery(late.id) is None
    assert await store.next_delivery() is None


async def test_a_failed_or_gone_webhook_is_sent_again_from_attempt_one(store: Store) -> None:
    job = hooked(JobStatus.COMPLETED)
    await store.create_job(job)
    assert await store.resend_delivery(job.id, time.time()) is None  # pending: not again
    now = time.time()
    first = await store.claim_delivery(now, LEASE)
    assert first is not None and first.attempts == 1
    gone = DeliveryStatus.GONE
    assert await store.settle_delivery(job.id, 1, gone, due_at=now, last_error="410")
    later = now + 50
    again = await store.resend_delivery(job.id, later)
    assert again is not None and again.status is DeliveryStatus.PENDING
    assert (again.attempts, again.due_at, again.last_error) == (0, later, "410")
    assert again.job == first.job  # the same body
    assert await store.next_delivery() == later
    assert await store.claim_delivery(later - 1, LEASE) is None  # not due before
    second = await store.claim_delivery(later, LEASE)
    assert second is not None and second.attempts == 1
    delivered = DeliveryStatus.DELIVERED
    assert await store.settle_delivery(job.id, 1, delivered, due_at=later, delivered_at=later)
    assert await store.resend_delivery(job.id, later) is None  # delivered: not again
    assert await store.resend_delivery("no-such-job", later) is None


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
