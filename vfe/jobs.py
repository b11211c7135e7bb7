"""Job lifecycle: the bounded queue, the worker pool, cancellation and recovery.

``JobManager`` owns a bounded ``asyncio.Queue`` of job ids and ``MAX_CONCURRENT_JOBS``
worker tasks; each job runs as its own task (so it can be cancelled without touching its
worker) under a semaphore and a timeout. Every status write that ends a run is shielded
from cancellation, so no job is ever left ``processing`` by a cancel, a timeout or a crash
of the extraction code. A job a crash did leave behind (``pending`` or ``processing`` in
the store) is queued again at start-up; its re-run replaces frames by index, never
duplicates them, and ``processed_frames`` never goes down.

Why a job stopped is told apart: a user's ``DELETE`` ends it ``cancelled``; a shutdown
puts it back to ``pending`` so the next start runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Awaitable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .cache import RECENT_GENERATION, WORST_CALL_SECONDS, FallbackCache, job_key
from .errors import (
    BadRequest,
    Conflict,
    ExtractionError,
    InsufficientStorage,
    NotFound,
    StoreError,
    Unavailable,
    ValidationFailed,
    VfeError,
)
from .events import TERMINAL_EVENTS, Event, EventBus
from .extractor import Extractor
from .frames import FrameStore
from .metrics import Metrics
from .models import (
    Frame,
    Job,
    JobSpec,
    JobStatus,
    Mode,
    SourceType,
    output_from,
)
from .planner import plan as make_plan
from .planner import sampling_from
from .probe import TooManyFrames, inspect, probe
from .settings import Settings
from .store import Store
from .views import Deleted, FrameView, JobView

log = logging.getLogger("vfe.jobs")

PROGRESS_EVERY = 1.0  # seconds between progress events of one job
RETENTION_SWEEP_SECONDS = 300.0  # at most this long between retention sweeps
STOP_WAIT = 5.0  # seconds to wait for a cancelled job task to write its final status
# After a delete, when to drop its cache entries once more: later than any read that
# raced the delete can still be storing (its cache get and set may each wait this long).
REINVALIDATE_AFTER = 2 * WORST_CALL_SECONDS + 0.5
_USER = "user"
_SHUTDOWN = "shutdown"


def _limit(loc: list[str], message: str) -> ValidationFailed:
    return ValidationFailed.one(loc, message, "limit_exceeded")


class _Gone(Exception):
    """The job was finished or deleted by someone else while this run went on."""


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
    ) -> None:
        self.settings = settings
        self.store = store
        self.cache = cache
        self.bus = bus
        self.frames = frames
        self.metrics = metrics if metrics is not None else Metrics()
        self.extractor = Extractor(frames)
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=settings.max_queue_size)
        self.running: dict[str, asyncio.Task[None]] = {}
        self.peak_running = 0
        self.accepting = False
        self._slots = asyncio.Semaphore(settings.max_concurrent_jobs)
        self._probes = asyncio.Semaphore(settings.max_concurrent_probes)
        self._headers = asyncio.Lock()
        self._emptier: asyncio.Future[None] | None = None
        self._workers: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stop_reason: dict[str, str] = {}
        self._backlog = 0  # recovered jobs not yet in the queue; they go before new ones
        self._deleting: dict[str, bool] = {}  # job id -> a final event was published
        self._draining: asyncio.Future[None] | None = None  # running jobs' shutdown grace

    # --- life of the manager -------------------------------------------------------------

    async def start(self) -> None:
        """Start the workers and queue again every job a previous run left unfinished."""
        for n in range(self.settings.max_concurrent_jobs):
            self._workers.add(asyncio.create_task(self._worker(), name=f"vfe-worker-{n}"))
        unfinished = await self.store.list_jobs(
            (JobStatus.PENDING, JobStatus.PROCESSING), limit=1_000_000, oldest_first=True
        )
        for job in unfinished:
            if job.status is JobStatus.PROCESSING:
                await self.store.update_job(job.id, status=JobStatus.PENDING)
                log.info("recovered job left processing", extra={"job_id": job.id})
        self.accepting = True
        self._empty_trash()  # what a stop left of earlier deletes
        if self.settings.retention_hours > 0:
            self._spawn(self._retention())
        if unfinished:
            self._backlog = len(unfinished)
            self._spawn(self._requeue([j.id for j in unfinished]))

    def _empty_trash(self) -> None:
        """Empty the trash in the background, one emptier at a time (it loops until the
        trash is gone, so what is discarded meanwhile goes too)."""
        if self._emptier is None or self._emptier.done():
            self._emptier = asyncio.ensure_future(self.frames.empty_trash())
            self._tasks.add(self._emptier)
            self._emptier.add_done_callback(self._tasks.discard)

    async def _retention(self) -> None:
        """Delete finished jobs (and their files) older than RETENTION_HOURS, now and then."""
        keep = self.settings.retention_hours * 3600
        every = min(RETENTION_SWEEP_SECONDS, max(1.0, keep / 4))
        while True:
            try:
                await self.sweep(time.time() - keep)
            except Exception:
                log.exception("retention sweep failed")
            await asyncio.sleep(every)

    async def sweep(self, before: float) -> int:
        """Delete the finished jobs that finished before ``before``; return how many."""
        finished = [s for s in JobStatus if s.finished]
        removed = 0
        for job in await self.store.list_jobs(finished, limit=10_000, oldest_first=True):
            if (job.finished_at or job.updated_at) < before:
                with contextlib.suppress(NotFound):
                    await self.delete(job.id)
                    removed += 1
        if removed:
            log.info("retention removed %d finished jobs", removed)
        return removed

    async def _requeue(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            await self.queue.put(job_id)  # waits for room: recovery may exceed the bound
            self._backlog -= 1

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def begin_shutdown(self) -> None:
        """SIGTERM: take no more jobs and start no queued one (they stay ``pending``);
        running jobs get ``SHUTDOWN_GRACE_SECONDS`` to finish before ``stop`` stops them."""
        self.accepting = False
        if self._draining is None:
            self._draining = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        jobs = list(self.running.values())
        if jobs:
            await asyncio.wait(jobs, timeout=self.settings.shutdown_grace_seconds)

    async def stop(self, grace: float = STOP_WAIT) -> None:
        """Stop taking jobs, stop running ones (back to ``pending``), end the workers.

        After ``begin_shutdown`` it first waits for the running jobs' grace period to end.
        Waits at most about ``grace`` seconds for running jobs to record their status.
        """
        self.accepting = False
        if self._draining is not None:
            await asyncio.wait([self._draining])
        for job_id, task in list(self.running.items()):
            self._stop_reason.setdefault(job_id, _SHUTDOWN)
            task.cancel()
        jobs = list(self.running.values())
        if jobs:
            await asyncio.wait(jobs, timeout=grace)
        for task in [*self._workers, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._workers, *self._tasks, return_exceptions=True)
        self._workers.clear()

    # --- submit, cancel, delete --------------------------------------------------------

    async def disk_ok(self) -> bool:
        """Whether the disk under FRAMES_BASE_PATH has MIN_FREE_DISK_MB free."""
        return await self.frames.free_bytes() >= self.settings.min_free_disk_bytes

    async def check_disk(self) -> None:
        """``InsufficientStorage`` (507) when the frames' disk is below its floor."""
        if not await self.disk_ok():
            raise InsufficientStorage(
                "the server's disk for frames is nearly full (less free than "
                f"MIN_FREE_DISK_MB, {self.settings.min_free_disk_mb:g} MiB); try again later"
            )

    async def admit(self, spec: JobSpec, source: Path, field: str | None = None) -> None:
        """Refuse, before a job is recorded, what would only fail later: a file FFmpeg
        cannot read as a video (``BadRequest``, naming ``field``: ``video_source`` or, for
        an upload, ``file``), a video longer or larger than the limits, a window that
        starts past the end or catches no frame, or a job that would write more than
        ``MAX_FRAMES_PER_JOB`` frames (``ValidationFailed``). The probe is cached, so the
        run does not pay for it twice."""
        field = field or "video_source"
        limits = self.settings
        await self.check_disk()
        where = ["body", field]
        try:
            # Headers one at a time: ffprobe holds a whole MP4 sample table (200 MB for
            # millions of samples) while it reads one; they take a tenth of a second.
            async with self._headers:
                stated = (await probe(source)).frames  # no packet read
            if stated is not None and stated > limits.max_frames_per_video:
                raise TooManyFrames(limits.max_frames_per_video)
            async with self._probes:  # bounded apart from jobs: none of this is a job yet
                info, index = await inspect(source, limits.max_frames_per_video)
        except TooManyFrames as exc:
            most = f"this server reads at most {exc.count} a video (MAX_FRAMES_PER_VIDEO)"
            raise _limit(where, f"the video has more than {exc.count} frames; {most}") from None
        except ExtractionError as exc:
            raise BadRequest(f"{field}: {exc.detail}") from None
        if info.duration > limits.max_video_duration_seconds:
            raise _limit(where, f"the video lasts {info.duration:.0f} s; this server takes "
                         f"at most {limits.max_video_duration_seconds:g} s "
                         "(MAX_VIDEO_DURATION_SECONDS)")  # fmt: skip
        if info.width * info.height > limits.max_frame_pixels:
            raise _limit(where, f"the video is {info.width}x{info.height}; this server takes "
                         f"at most {limits.max_frame_pixels} pixels a frame "
                         "(MAX_FRAME_PIXELS)")  # fmt: skip
        if spec.start >= info.duration:
            past = f"start ({spec.start:g} s) is at or past the end of the video"
            raise ValidationFailed.one(["body", "start"], f"{past} ({info.duration:.3f} s)")
        sampling = sampling_from(spec.options(), spec.interval)
        if sampling.mode is Mode.SCENE:
            return  # its frames are found while decoding; the run caps them
        plan = await asyncio.to_thread(make_plan, sampling, info, index)
        if plan.total == 0:
            nothing = (f"no frame of the video falls on what this asks for (the video lasts "
                       f"{info.duration:.3f} s): check the times, start and end")  # fmt: skip
            raise ValidationFailed.one(["body", sampling.mode.value], nothing)
        if plan.total > limits.max_frames_per_job:
            raise _limit(["body", sampling.mode.value], f"the job would write {plan.total} "
                         f"frames; this server writes at most {limits.max_frames_per_job} "
                         "a job (MAX_FRAMES_PER_JOB): sample less often, narrow start/end, "
                         "or set max_frames")  # fmt: skip

    async def submit(
        self,
        spec: JobSpec,
        source_type: SourceType,
        source_path: Path,
        idempotency: tuple[str, str] | None = None,
    ) -> tuple[Job, bool]:
        """Record a job and queue it; ``Unavailable`` (503) when the queue is full. Returns
        the job and whether this call made it.

        With ``idempotency`` (key, request fingerprint): when the key already made a job
        (also by a request racing this one), that job is returned and nothing new is
        recorded, or ``Conflict`` (409) when it was made by a different request.
        """
        if not self.accepting:
            raise Unavailable("the service is shutting down; try again shortly")
        if self.queue.qsize() + self._backlog >= self.queue.maxsize:
            raise Unavailable(
                f"the job queue is full ({self.queue.maxsize} waiting); try again later",
                headers={"Retry-After": "10"},
            )
        now = time.time()
        job = Job(
            id=str(uuid.uuid4()),
            status=JobStatus.PENDING,
            video_source=spec.video_source,
            source_type=source_type,
            source_path=str(source_path),
            interval=spec.interval,
            options=spec.options(),
            created_at=now,
            updated_at=now,
        )
        earlier = await self.store.create_job(job, idempotency)
        if earlier is not None:
            return await self.idempotent(earlier, idempotency), False
        try:
            self.queue.put_nowait(job.id)
        except asyncio.QueueFull:
            await self.store.delete_job(job.id)
            raise Unavailable(
                "the job queue is full; try again later", headers={"Retry-After": "10"}
            ) from None
        self._publish("created", job)
        self.metrics.job_submitted()
        return job, True

    async def idempotent(
        self, earlier: tuple[str, str], idempotency: tuple[str, str] | None
    ) -> Job:
        """The job an Idempotency-Key made, if this request is the same one; else 409."""
        fingerprint, job_id = earlier
        job = await self.store.get_job(job_id)
        if idempotency is None or fingerprint != idempotency[1] or job is None:
            raise Conflict(
                "this Idempotency-Key was used with a different request; "
                "use a new key for a new job"
            )
        return job

    async def delete(self, job_id: str) -> Job:
        """Cancel ``job_id`` if it is queued or running, then remove it and its files.

        Returns the job as it was before the call.

        Waits for a running job's FFmpeg to stop (at most about ``STOP_WAIT`` seconds).
        """
        job = await self.store.get_job(job_id)
        if job is None:
            raise NotFound("Job not found")
        was_active = not job.status.finished
        self._deleting[job_id] = False
        try:
            task = self.running.get(job_id)
            if task is not None:
                self._stop_reason[job_id] = _USER
                task.cancel()
                await asyncio.wait([task], timeout=STOP_WAIT)
                self._stop_reason.pop(job_id, None)
            elif was_active:
                cancelled = await self.store.update_job(
                    job_id, status=JobStatus.CANCELLED, finished_at=time.time()
                )
                if cancelled is not None:  # None: its run finished it meanwhile
                    self.metrics.job_finished(JobStatus.CANCELLED, None)  # it never ran
            # The folder first (a rename: its files go in the background), then the rows: a
            # stop in between leaves a job without files, never files without a job (a
            # frames folder with no job may be someone else's, so nothing sweeps those).
            await self.frames.discard(job_id)
            self._empty_trash()
            await self.store.delete_job(job_id)
            if job.source_type.owned:  # an upload or a download: the service's own copy
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(Path(job.source_path).unlink, True)
            await self._invalidate(job_id)
            # A status read that raced this delete may cache the job again just after the
            # invalidation above: drop it once more when such a read has surely finished.
            self._spawn(self._invalidate_later(job_id))
        finally:
            announced = self._deleting.pop(job_id, False)  # a racing twin may have taken it
        if was_active and not announced:
            # Its run had not started (or recorded nothing): streams still need an end.
            self._publish("cancelled", replace(job, status=JobStatus.CANCELLED))
        self.bus.publish(
            Event("deleted", job_id, Deleted(job_id=job_id).model_dump())
        )  # for the job list
        return job

    # --- workers -------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            job_id = await self.queue.get()
            try:
                async with self._slots:
                    if self._draining is not None:
                        continue  # shutting down: it stays pending for the next start
                    task = asyncio.create_task(self._execute(job_id), name=f"vfe-job-{job_id}")
                    self.running[job_id] = task
                    self.peak_running = max(self.peak_running, len(self.running))
                    try:
                        await asyncio.wait([task])  # returns however the job task ends
                        if not task.cancelled() and task.exception() is not None:
                            log.error("job task failed", exc_info=task.exception())
                    except asyncio.CancelledError:
                        # This worker is being stopped; stop the job and let it record that.
                        self._stop_reason.setdefault(job_id, _SHUTDOWN)
                        task.cancel()
                        await asyncio.wait([task], timeout=STOP_WAIT)
                        raise
                    finally:
                        self.running.pop(job_id, None)
            finally:
                self.queue.task_done()

    async def _execute(self, job_id: str) -> None:
        """Run one job to a final status; never raises except to propagate a cancel."""
        try:
            job = await self.store.get_job(job_id)
            if job is None or job.status.finished:
                return
            async with asyncio.timeout(self.settings.job_timeout_seconds):
                await self._extract(job)
        except asyncio.CancelledError:
            reason = self._stop_reason.pop(job_id, _SHUTDOWN)
            if reason == _USER:
                await self._settle(job_id, JobStatus.CANCELLED, None, "cancelled")
            else:
                await self._settle(job_id, JobStatus.PENDING, None, "status")
            raise
        except _Gone:
            return
        except TimeoutError:
            limit = self.settings.job_timeout_seconds
            await self._settle(
                job_id, JobStatus.FAILED, f"the job took longer than {limit:g} s", "failed"
            )
        except VfeError as exc:
            if not isinstance(exc, ExtractionError):  # ours, not the video's: keep the cause
                log.error("job failed", exc_info=exc, extra={"job_id": job_id})
            await self._prune(job_id)
            await self._settle(job_id, JobStatus.FAILED, str(exc.detail), "failed")
        except Exception:
            log.exception("job crashed", extra={"job_id": job_id})
            await self._settle(
                job_id, JobStatus.FAILED, "internal error while extracting frames", "failed"
            )
        finally:
            self._stop_reason.pop(job_id, None)

    async def _prune(self, job_id: str) -> None:
        """Remove the frame files a failed run wrote but never listed (a piece finishing
        a frame as another failed): on a full disk every byte counts."""
        with contextlib.suppress(StoreError, OSError):
            listed = {f.filename for f in await self.store.list_frames(job_id, 0, 10**9)}
            written = await self.frames.names(job_id)
            await self.frames.remove(job_id, sorted(set(written) - listed))

    async def _settle(
        self, job_id: str, status: JobStatus, error: str | None, event: str, **values: Any
    ) -> None:
        """Write a run's final status and announce it, all shielded from cancellation.

        The one path every run ends by (completed, failed, cancelled, back to pending), so
        a cancel arriving mid-write can never record a status without its event.
        """

        async def write_and_announce() -> None:
            values.update(status=status, error_message=error)
            if status.finished:
                values["finished_at"] = time.time()
            if status is JobStatus.CANCELLED:
                await self.frames.discard_work(job_id)
            job = await self.store.update_job(job_id, **values)
            await self._invalidate(job_id)
            if job is not None:
                log.info("job %s", status.value, extra={"job_id": job_id, "error": error})
                if status.finished:
                    ran = None if job.started_at is None else values["finished_at"] - job.started_at
                    self.metrics.job_finished(status, ran)
                self._publish(event, job)

        try:
            await asyncio.shield(write_and_announce())
        except StoreError:
            log.exception("could not record job status", extra={"job_id": job_id})

    async def _extract(self, job: Job) -> None:
        started = await self.store.update_job(
            job.id,
            status=JobStatus.PROCESSING,
            started_at=time.time(),
            finished_at=None,
            error_message=None,
            attempts=job.attempts + 1,
        )
        if started is None:
            return  # cancelled or deleted meanwhile
        job = started
        await self._invalidate(job.id)
        self._publish("status", job)
        source = Path(job.source_path)
        try:
            exists = await asyncio.to_thread(source.is_file)
        except OSError:
            exists = False
        if not exists:
            raise ExtractionError("the video file is no longer there")
        info, index = await inspect(source, self.settings.max_frames_per_video)
        sampling = sampling_from(job.options, job.interval)
        if sampling.mode is Mode.SCENE:  # frames found, not planned: cap them here
            cap = min(sampling.max_frames or math.inf, self.settings.max_frames_per_job)
            sampling = replace(sampling, max_frames=int(cap))
        plan = await asyncio.to_thread(make_plan, sampling, info, index)  # CPU, off the loop
        scene = plan.scene is not None  # frames found while decoding, not planned
        job = await self._update(
            job.id,
            plan=plan.describe(),
            total_frames=max(plan.total, job.processed_frames),
            progress=(job.progress or 0.0) if scene else None,  # a retry never goes back
            duration=info.duration,
            fps=info.fps,
            width=info.width,
            height=info.height,
            codec=info.codec,
        )
        self._publish("progress", job)
        before = {f.index: f.filename for f in await self.store.list_frames(job.id, 0, 10**9)}
        produced: set[int] = set()
        last_progress = time.monotonic()

        async def on_frames(batch: list[Frame]) -> None:
            nonlocal job, last_progress
            if not await self.disk_ok():  # these frames are whole; stop before more
                raise ExtractionError(
                    "the server's disk for frames ran nearly full (below MIN_FREE_DISK_MB); "
                    "the job stopped"
                )
            await self.store.add_frames(batch)
            self.metrics.frames_added(len(batch))
            produced.update(f.index for f in batch)
            processed = max(job.processed_frames, len(produced))
            counts = {"processed_frames": processed}
            if scene:  # the frames found so far are all the frames known
                counts["total_frames"] = max(job.total_frames, processed)
            job = await self._update(job.id, **counts)
            for frame in batch:
                self.bus.publish(
                    Event("frame", job.id, FrameView.of(frame).model_dump(mode="json"))
                )
            # scene jobs announce progress with their decoding (on_progress), not here
            if not scene and time.monotonic() - last_progress >= PROGRESS_EVERY:
                last_progress = time.monotonic()
                self._publish("progress", job)

        async def on_progress(share: float) -> None:
            nonlocal job, last_progress
            if time.monotonic() - last_progress >= PROGRESS_EVERY:
                last_progress = time.monotonic()
                job = await self._update(job.id, progress=max(job.progress or 0.0, share))
                self._publish("progress", job)

        output = output_from(job.options)
        written = await self.extractor.run(
            job.id, source, info, plan, on_frames, output, on_progress
        )
        stale = sorted(set(before) - produced)
        if stale:  # frames of an earlier attempt this run did not produce again
            await self.store.delete_frames(job.id, stale)
            await self.frames.remove(job.id, [before[i] for i in stale])
        count = await self.store.count_frames(job.id)
        log.info("extracted %d frames", written, extra={"job_id": job.id})
        done: dict[str, Any] = {"total_frames": count, "processed_frames": count}
        if scene:
            done["progress"] = 1.0
        await self._settle(job.id, JobStatus.COMPLETED, None, "done", **done)

    async def _update(self, job_id: str, **values: Any) -> Job:
        job = await self.store.update_job(job_id, **values)
        if job is None:
            raise _Gone  # the job was cancelled or deleted meanwhile
        await self._invalidate(job_id)
        return job

    async def _invalidate(self, job_id: str) -> None:
        """Drop the job's cached status and every cached recent-frames answer."""
        await self.cache.delete(job_key(job_id))
        await self.cache.incr(RECENT_GENERATION)

    async def _invalidate_later(self, job_id: str) -> None:
        await asyncio.sleep(REINVALIDATE_AFTER)
        await self._invalidate(job_id)

    def _publish(self, event: str, job: Job) -> None:
        if event in TERMINAL_EVENTS and job.id in self._deleting:
            self._deleting[job.id] = True
        view = JobView.of(job, time.time()).model_dump(mode="json")
        self.bus.publish(Event(event, job.id, view))

    @property
    def queue_depth(self) -> int:
        return self.queue.qsize()
