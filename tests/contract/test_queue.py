"""The queue contract: one suite, run unchanged on the in-process queue and on
procrastinate over a real PostgreSQL (a new database per test). The runner here is a
stand-in for the worker side that records what it is given; the queues are real."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.conftest import wait_until_async
from vfe.errors import Unavailable
from vfe.queue import JobQueue, Stop
from vfe.queue.memory import MemoryQueue

MAX = 3


class Runner:
    """Records each job it runs; a job whose id starts with ``block`` runs until stopped."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.stopped: list[str] = []

    async def __call__(self, job_id: str) -> None:
        self.ran.append(job_id)
        if job_id.startswith(("block", "slow")):
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.stopped.append(job_id)
                if job_id.startswith("slow"):  # an FFmpeg that takes its time to stop
                    await asyncio.shield(asyncio.sleep(1.5))
                raise


@pytest.fixture(params=["memory", "procrastinate"])
async def make_queue(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[..., Any]]:
    """``await make_queue(runner)``: a started queue of the back-end under test (at most
    ``MAX`` waiting, two jobs at once); stopped and closed after the test."""
    opened: list[tuple[JobQueue, Any]] = []

    async def make(runner: Runner | None) -> JobQueue:
        store: Any = None
        queue: JobQueue
        if request.param == "memory":
            queue = MemoryQueue(MAX, 2, grace=0.0)
        else:
            from vfe.queue.procrastinate import ProcrastinateQueue, install_schema
            from vfe.store.postgres import PostgresStore

            store = PostgresStore(request.getfixturevalue("postgres_url"), pool_size=4)
            store.extra_schema = install_schema
            await store.open()
            queue = ProcrastinateQueue(store, MAX, 2, grace=0.0, stalled_after=3.0)
        await queue.start(runner)
        opened.append((queue, store))
        return queue

    yield make
    for queue, store in opened:
        await queue.stop()
        if store is not None:
            await store.close()


async def test_a_queued_job_is_run_by_id(make_queue: Callable[..., Any]) -> None:
    runner = Runner()
    queue = await make_queue(runner)
    await queue.enqueue("job-1")
    await queue.enqueue("job-2")
    await wait_until_async(lambda: sorted(runner.ran) == ["job-1", "job-2"], "both jobs to run")
    await wait_until_async(lambda: queue.running() == [], "the runs to end")
    assert await queue.depth() == 0


async def test_depth_counts_what_waits_and_a_full_queue_is_503(
    make_queue: Callable[..., Any],
) -> None:
    queue = await make_queue(None)  # queues only: nothing runs
    for n in range(MAX):
        await queue.enqueue(f"job-{n}")
    assert await queue.depth() == MAX
    with pytest.raises(Unavailable, match="queue is full") as refused:
        await queue.enqueue("one-too-many")
    assert refused.value.headers == {"Retry-After": "10"}
    assert await queue.depth() == MAX
    assert await queue.workers() == []


async def test_cancel_stops_a_running_job_and_waits_for_it(make_queue: Callable[..., Any]) -> None:
    runner = Runner()
    queue = await make_queue(runner)
    await queue.enqueue("block-1")
    await wait_until_async(lambda: queue.running() == ["block-1"], "the job to run")
    assert await queue.cancel("block-1") is Stop.STOPPED
    assert runner.stopped == ["block-1"]
    await wait_until_async(lambda: queue.running() == [], "the run to end")
    assert await queue.cancel("block-1") is Stop.NO_RUN  # nothing runs it any more
    assert await queue.cancel("never-queued") is Stop.NO_RUN


async def test_live_workers_are_seen(make_queue: Callable[..., Any]) -> None:
    queue = await make_queue(Runner())

    async def seen() -> bool:
        return len(await queue.workers()) == 1

    await wait_until_async(seen, "the worker to be seen")
    [worker] = await queue.workers()
    assert worker.running == 0 and worker.heartbeat > 0


async def test_stop_stops_running_jobs(make_queue: Callable[..., Any]) -> None:
    runner = Runner()
    queue = await make_queue(runner)
    await queue.enqueue("block-2")
    await wait_until_async(lambda: queue.running() == ["block-2"], "the job to run")
    await queue.stop()
    assert runner.stopped == ["block-2"]
    assert queue.running() == []


async def test_cancel_says_when_a_run_has_not_stopped_in_time(
    make_queue: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from vfe.queue import memory, procrastinate

    monkeypatch.setattr(memory, "STOP_WAIT", 0.3)  # fault: the waits end before the run
    monkeypatch.setattr(procrastinate, "CANCEL_WAIT", 0.3)
    runner = Runner()
    queue = await make_queue(runner)
    await queue.enqueue("slow-1")
    await wait_until_async(lambda: queue.running() == ["slow-1"], "the job to run")
    assert await queue.cancel("slow-1") is Stop.STILL_RUNNING
    await wait_until_async(lambda: queue.running() == [], "the run to end at last")
    assert runner.stopped == ["slow-1"]
