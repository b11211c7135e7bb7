"""Jobs, wired: the submit side, the worker side and the queue between them.

``JobManager`` is what the app holds: it builds the worker side (``worker.JobRunner``:
claim, plan, extract, settle), the submit side (``submit.Submissions``: admit, submit,
idempotency, delete, retention) and the queue, and starts and stops them in order.
Callers use the side they need: ``jobs.submissions`` (the API) and ``jobs.runner``.

Embedded (SQLite, ``MemoryQueue``): one process owns the database, so at start-up every
job a previous run left ``pending`` or ``processing`` is queued again (``processing``
ones back to ``pending`` first); its re-run replaces frames by index. Why a job stopped
is told apart by its status: a user's ``DELETE`` writes ``cancelled`` before it stops the
run; a shutdown leaves it ``processing`` and the run puts it back to ``pending``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from .cache import FallbackCache
from .errors import StoreError
from .events import EventBus
from .frames import FrameStore
from .metrics import Metrics
from .models import JobStatus
from .queue import JobQueue, WorkerInfo, make_queue
from .queue.memory import MemoryQueue
from .settings import Settings
from .store import Store
from .submit import Submissions
from .worker import JobRunner

log = logging.getLogger("vfe.jobs")

LOOK_EVERY = 5.0  # seconds between looks at a shared queue, for /metrics


class JobManager:
    """Queues, runs, cancels and recovers jobs."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        cache: FallbackCache,
        bus: EventBus,
        frames: FrameStore,
        metrics: Metrics | None = None,
        queue: JobQueue | None = None,
        run_jobs: bool = True,
        serve_api: bool = True,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics if metrics is not None else Metrics()
        self.runner = JobRunner(settings, store, cache, bus, frames, self.metrics)
        self.queue = queue if queue is not None else make_queue(settings, store)
        self.run_jobs = run_jobs  # False: `vfe serve --api-only` queues jobs, runs none
        self.serve_api = serve_api  # False: `vfe worker`, which leaves retention to the API
        self.seen = QueueView()
        self._looking: asyncio.Task[None] | None = None
        self.submissions = Submissions(settings, store, self.queue, self.runner, frames)

    # --- life of the manager -------------------------------------------------------------

    async def start(self) -> None:
        """Start the queue (and its workers, unless API-only); embedded, also queue again
        every job a previous run left. In PostgreSQL, leases do that: a job is run again
        only when the worker holding it has stopped heartbeating."""
        if isinstance(self.queue, MemoryQueue):
            unfinished = await self.store.list_jobs(
                (JobStatus.PENDING, JobStatus.PROCESSING), limit=1_000_000, oldest_first=True
            )
            for job in unfinished:
                if job.status is JobStatus.PROCESSING:
                    await self.store.update_job(job.id, status=JobStatus.PENDING)
                    log.info("recovered job left processing", extra={"job_id": job.id})
            self.queue.restore([j.id for j in unfinished])
        await self.queue.start(self.runner.run if self.run_jobs else None)
        self.submissions.start(sweeps=self.serve_api)
        if not isinstance(self.queue, MemoryQueue):
            self._looking = asyncio.create_task(self._keep_looking(), name="vfe-queue-look")

    def begin_shutdown(self) -> None:
        """SIGTERM: take no more jobs and start no queued one (they stay ``pending``);
        running jobs get ``SHUTDOWN_GRACE_SECONDS`` to finish before ``stop`` stops them."""
        self.submissions.accepting = False
        self.queue.begin_shutdown()

    async def stop(self) -> None:
        """Stop taking jobs, stop running ones (back to ``pending``), end the workers.
        After ``begin_shutdown`` it first waits for the running jobs' grace period."""
        self.submissions.accepting = False
        if self._looking is not None:
            self._looking.cancel()
            await asyncio.gather(self._looking, return_exceptions=True)
        await self.queue.stop()
        await self.submissions.stop()

    # --- what health and metrics read ----------------------------------------------------

    async def disk_ok(self) -> bool:
        return await self.runner.disk_ok()

    @property
    def running(self) -> list[str]:
        """Ids of the jobs this process runs now."""
        return self.queue.running()

    async def look(self) -> QueueView:
        """The queue's depth and live workers now (the last ones seen, should the database
        not answer); also what /metrics shows until the next look."""
        with contextlib.suppress(StoreError):
            self.seen = QueueView(await self.queue.depth(), await self.queue.workers())
        return self.seen

    async def _keep_looking(self) -> None:
        """PostgreSQL: refresh ``seen`` now and then, for /metrics (scraped synchronously)."""
        while True:
            await self.look()
            await asyncio.sleep(LOOK_EVERY)

    @property
    def peak_running(self) -> int:
        return self.queue.peak_running if isinstance(self.queue, MemoryQueue) else 0

    @property
    def queue_depth(self) -> int:
        if isinstance(self.queue, MemoryQueue):
            return self.queue.queue.qsize()
        return self.seen.depth

    @property
    def live_workers(self) -> list[WorkerInfo]:
        """Embedded: this process, when it runs jobs; else the workers last seen."""
        if isinstance(self.queue, MemoryQueue):
            return self.queue.live()
        return self.seen.workers

    @property
    def backends(self) -> tuple[str, str]:
        """(database, queue) back-ends."""
        return self.store.backend, self.queue.backend


@dataclass(frozen=True)
class QueueView:
    """The queue as last seen: jobs waiting, and the live workers."""

    depth: int = 0
    workers: list[WorkerInfo] = field(default_factory=list)

    @property
    def last_heartbeat(self) -> float | None:
        return max((w.heartbeat for w in self.workers), default=None)
