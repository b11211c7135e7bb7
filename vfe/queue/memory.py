"""The embedded ``JobQueue``: a bounded ``asyncio.Queue`` of job ids and worker tasks.

``MAX_CONCURRENT_JOBS`` worker tasks take ids from the queue; each job runs as its own
task (so it can be cancelled without touching its worker). A full queue is a 503 with
``Retry-After``, never a wait. Jobs recovered at start-up (``restore``) go in before new
ones and may exceed the bound for a while: nothing accepted is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..errors import Unavailable
from . import RunAgain, Runner, Stop, WorkerInfo

log = logging.getLogger("vfe.jobs")

STOP_WAIT = 5.0  # seconds to wait for a stopped job task to write its final status
AGAIN_AFTER = 1.0  # seconds before a run that lost the database is queued again


class MemoryQueue:
    """Jobs queued and run in this process."""

    backend = "memory"

    def __init__(self, max_size: int, concurrency: int, grace: float) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=max_size)
        self.concurrency = concurrency
        self.grace = grace
        self.tasks: dict[str, asyncio.Task[None]] = {}  # job id -> its running task
        self.peak_running = 0
        self._runner: Runner | None = None
        self._workers: set[asyncio.Task[None]] = set()
        self._backlog = 0  # restored jobs not yet in the queue; they go before new ones
        self._restoring: asyncio.Task[None] | None = None
        self._draining: asyncio.Future[None] | None = None
        self._later: set[asyncio.Task[None]] = set()  # runs to queue again after a pause

    async def start(self, runner: Runner | None) -> None:
        self._runner = runner
        if runner is not None:
            for n in range(self.concurrency):
                self._workers.add(asyncio.create_task(self._work(), name=f"vfe-worker-{n}"))

    def restore(self, job_ids: list[str]) -> None:
        """Queue again, in this order and before new jobs, what a previous run left."""
        if job_ids:
            self._backlog += len(job_ids)
            self._restoring = asyncio.create_task(self._put_all(job_ids))

    async def _put_all(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            await self.queue.put(job_id)  # waits for room: recovery may exceed the bound
            self._backlog -= 1

    async def enqueue(self, job_id: str, connection: Any = None) -> None:
        if self.queue.qsize() + self._backlog >= self.queue.maxsize:
            raise Unavailable(
                f"the job queue is full ({self.queue.maxsize} waiting); try again later",
                headers={"Retry-After": "10"},
            )
        self.queue.put_nowait(job_id)

    async def cancel(self, job_id: str) -> Stop:
        """Cancel the job's task and wait (at most ``STOP_WAIT`` s) for it to end; a
        queued id stays queued, and its run finds the job finished and skips it."""
        task = self.tasks.get(job_id)
        if task is None:
            return Stop.NO_RUN
        task.cancel()
        await asyncio.wait([task], timeout=STOP_WAIT)
        return Stop.STOPPED if task.done() else Stop.STILL_RUNNING

    async def _again(self, job_id: str) -> None:
        """Queue a job again after a pause (its run could not reach the database)."""
        await asyncio.sleep(AGAIN_AFTER)
        await self.queue.put(job_id)

    def running(self) -> list[str]:
        return list(self.tasks)

    async def depth(self) -> int:
        return self.queue.qsize()

    async def workers(self) -> list[WorkerInfo]:
        return self.live()

    def live(self) -> list[WorkerInfo]:
        """This process, while its workers run (not when it only queues)."""
        if not self._workers:
            return []
        return [WorkerInfo("embedded", time.time(), len(self.tasks))]

    def begin_shutdown(self) -> None:
        if self._draining is None:
            self._draining = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        if self.tasks:
            await asyncio.wait(list(self.tasks.values()), timeout=self.grace)

    async def stop(self) -> None:
        """After the shutdown grace (if one began), cancel running jobs, wait for them to
        record their status (bounded), then end the workers."""
        if self._draining is not None:
            await asyncio.wait([self._draining])
        for task in list(self.tasks.values()):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks.values()), timeout=STOP_WAIT)
        others = [*self._workers, *self._later, *filter(None, [self._restoring])]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        self._workers.clear()

    async def _work(self) -> None:
        assert self._runner is not None
        while True:
            job_id = await self.queue.get()
            try:
                if self._draining is not None:
                    continue  # shutting down: it stays pending for the next start
                task = asyncio.create_task(self._runner(job_id), name=f"vfe-job-{job_id}")
                self.tasks[job_id] = task
                self.peak_running = max(self.peak_running, len(self.tasks))
                try:
                    await asyncio.wait([task])  # returns however the job task ends
                    failure = None if task.cancelled() else task.exception()
                    if isinstance(failure, RunAgain):
                        later = asyncio.create_task(self._again(job_id))
                        self._later.add(later)
                        later.add_done_callback(self._later.discard)
                    elif failure is not None:
                        log.error("job task failed", exc_info=failure)
                except asyncio.CancelledError:
                    # This worker is being stopped; stop the job and let it record that.
                    task.cancel()
                    await asyncio.wait([task], timeout=STOP_WAIT)
                    raise
                finally:
                    self.tasks.pop(job_id, None)
            finally:
                self.queue.task_done()
