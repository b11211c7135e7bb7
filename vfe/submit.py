"""The submit side of jobs: locate the video, admit, submit or reuse, idempotency,
delete and retention. Used by the API; it queues jobs and stops them through the
``JobQueue`` and never runs one itself.

``locate`` finds a new job's video and what identifies its content. ``submit`` stores an
upload or a download under its SHA-256 and records the job, its hold on that source and
its queue entry in one transaction; ``reuse`` completes a job at once with the frames of a
completed job of the same source and options. ``delete`` first writes ``cancelled`` (so
the job's run, wherever it is, has every later write refused), then has the queue stop
the run and waits for it, and only then removes the job's rows and holds and collects the
stored objects no job holds any more: nothing is removed under a run that still writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import vfe

from . import fetch, webhooks
from .cache import WORST_CALL_SECONDS
from .errors import (
    BadRequest,
    Conflict,
    ExtractionError,
    InsufficientStorage,
    NotFound,
    StorageUnavailable,
    Unavailable,
    ValidationFailed,
)
from .events import Event
from .frames import FrameStore
from .models import Job, JobSpec, JobStatus, Mode, SourceType
from .planner import NAMED_BY, nothing_planned, sampling_from
from .planner import plan as make_plan
from .probe import TooManyFrames, inspect, probe
from .queue import JobQueue, Stop
from .settings import Settings
from .sources import Upload, resolve_local
from .storage import source_key
from .store import ReuseGone, Store
from .views import Deleted
from .worker import JobRunner

log = logging.getLogger("vfe.jobs")

RETENTION_SWEEP_SECONDS = 300.0  # at most this long between retention sweeps
COLLECT_BATCH = 500  # stored objects removed in one transaction
COLLECT_WAIT = 5.0  # seconds a DELETE waits for its files to go before it answers
COLLECT_EVERY = 300.0  # seconds between collects without deletes (e.g. failed submits)
SOURCE_LEASE = 3 * 3600.0  # seconds a new job's stored source waits for its hold
ORPHANS_EVERY = 6 * 3600.0  # seconds between looks for stored files no job knows
# After a delete, when to drop its cache entries once more: later than any read that
# raced the delete can still be storing (its cache get and set may each wait this long).
REINVALIDATE_AFTER = 2 * WORST_CALL_SECONDS + 0.5


@dataclass(frozen=True)
class Source:
    """Where a new job's video is: its type, a local file, and what identifies its content
    for reuse. ``digest`` (the SHA-256 of its bytes) and ``size`` are set for an upload or a
    download, which are stored under their digest."""

    type: SourceType
    path: Path
    identity: str
    digest: str | None = None
    size: int = 0


async def locate(settings: Settings, spec: JobSpec, upload: Upload | None) -> Source:
    """Where the job's video is: the upload, a download of the URL, or a local path; and
    what identifies its content (the SHA-256 of the bytes, or for a path the file's
    resolved path, size, modification and change times (ns) and inode: a file changed in
    place is a new source). First, a webhook the server cannot send is refused (422)."""
    await webhooks.check_job(settings, spec)
    if upload is not None and upload.path is not None:
        digest = upload.digest.hexdigest()
        return Source(SourceType.UPLOAD, upload.path, f"sha256:{digest}", digest, upload.size)
    if fetch.is_url(spec.video_source):
        if not settings.allow_url_sources:
            raise BadRequest(
                "URL sources are turned off on this server (ALLOW_URL_SOURCES); "
                "give a path inside the videos folder or upload the file"
            )
        url = fetch.check_url(spec.video_source)
        got = await fetch.download(
            url,
            settings.uploads_path,
            max_bytes=settings.max_download_bytes,
            timeout=settings.url_timeout_seconds,
            policy=settings.allow_private_urls,
        )
        return Source(SourceType.URL, got.path, f"sha256:{got.sha256}", got.sha256, got.size)
    path = await asyncio.to_thread(resolve_local, spec.video_source, settings.videos_base_path)
    try:
        stat = await asyncio.to_thread(path.stat)
    except OSError:
        raise BadRequest(f"video_source: the file {spec.video_source} cannot be read") from None
    # ctime too: a rewrite in place that keeps the modification time (rsync -t) is new
    identity = f"file:{path}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}:{stat.st_ino}"
    return Source(SourceType.PATH, path, identity)


def _limit(loc: list[str], message: str) -> ValidationFailed:
    return ValidationFailed.one(loc, message, "limit_exceeded")


class Submissions:
    """Takes jobs in, and takes them out again."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        queue: JobQueue,
        runner: JobRunner,
        frames: FrameStore,
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.runner = runner  # for its cache invalidation, events and disk check
        self.frames = frames
        self.accepting = False
        self._probes = asyncio.Semaphore(settings.max_concurrent_probes)
        self._headers = asyncio.Lock()
        self._collector: asyncio.Future[None] | None = None
        self._collect_again = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- life ----------------------------------------------------------------------------

    def start(self, sweeps: bool = True) -> None:
        """Take jobs; with ``sweeps`` (a process that serves the API) also remove stored
        objects no job holds (what a stop left of earlier deletes, sources of submits
        that failed) now and then, and delete jobs past RETENTION_HOURS."""
        self.accepting = True
        if sweeps:
            self._spawn(self._sweeps())

    async def stop(self) -> None:
        self.accepting = False
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def collect(self) -> asyncio.Future[None]:
        """Remove, in the background, the stored objects no job holds any longer; one
        collector at a time, which goes on until none is left, and once more when asked
        again meanwhile (so what a delete released while it ran goes too). Returns the
        collector, for a caller that waits for it."""
        if self._collector is None or self._collector.done():
            self._collector = asyncio.ensure_future(self._collect())
            self._tasks.add(self._collector)
            self._collector.add_done_callback(self._tasks.discard)
        else:
            self._collect_again = True
        return self._collector

    async def _collect(self) -> None:
        try:
            again = True
            while again:
                self._collect_again = False
                while await self.store.collect(self.frames.storages.remove, COLLECT_BATCH):
                    pass
                again = self._collect_again
        except Exception:  # the next delete or sweep tries again
            log.warning("could not remove unused stored files yet", exc_info=True)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sweeps(self) -> None:
        """Now and then: delete finished jobs (and their files) older than
        RETENTION_HOURS, if set, and remove what no job holds."""
        keep = self.settings.retention_hours * 3600
        every = min(RETENTION_SWEEP_SECONDS, max(1.0, keep / 4)) if keep else COLLECT_EVERY
        orphans_due = 0.0
        while True:
            if keep:
                try:
                    await self.sweep(time.time() - keep)
                except Exception:
                    log.exception("retention sweep failed")
            if time.monotonic() >= orphans_due:
                orphans_due = time.monotonic() + ORPHANS_EVERY
                try:
                    await self.release_orphans()
                except Exception:
                    log.warning("could not look for stray stored files", exc_info=True)
            await asyncio.wait([self.collect()])
            await asyncio.sleep(every)

    async def release_orphans(self) -> int:
        """Mark for ``collect`` the stored objects the database has no row of (a run
        taken for dead that stored a frame after its job was deleted): released now, as
        a ``reserve`` that ended, so collect removes them unless a job holds one by then.
        How many."""
        storages = self.frames.storages
        found = 0
        batch: list[str] = []

        async def release() -> int:
            unknown = sorted(set(batch) - await self.store.known(batch))
            blobs = []
            for key in unknown:
                storage, name = storages.route(key)
                if (info := await storage.head(name)) is not None:
                    blobs.append((key, info.size))
            await self.store.reserve(blobs, time.time())
            batch.clear()
            return len(blobs)

        async for key in storages.stored():
            batch.append(key)
            if len(batch) == COLLECT_BATCH:
                found += await release()
        if batch:
            found += await release()
        if found:
            log.warning("found %d stored files no job knows; they will be removed", found)
        return found

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

    # --- admit and submit ----------------------------------------------------------------

    async def check_disk(self) -> None:
        """``InsufficientStorage`` (507) when the frames' disk is below its floor."""
        if not await self.runner.disk_ok():
            raise InsufficientStorage(
                "the server's disk for frames is nearly full (less free than "
                f"MIN_FREE_DISK_MB, {self.settings.min_free_disk_mb:g} MiB); try again later"
            )

    async def admit(self, spec: JobSpec, source: Path, field: str | None = None) -> dict[str, Any]:
        """Refuse, before a job is recorded, what would only fail later: a file FFmpeg
        cannot read as a video (``BadRequest``, naming ``field``: ``video_source`` or, for
        an upload, ``file``), a video longer or larger than the limits, a window that
        starts past the end or catches no frame, or a job that would write more than
        ``MAX_FRAMES_PER_JOB`` frames (``ValidationFailed``). The probe is cached, so the
        run does not pay for it twice. Returns the video's facts and the frames planned,
        for the job (its status shows them while it waits; its run checks the facts)."""
        field = field or "video_source"
        limits = self.settings
        await self.check_disk()
        if not await self.frames.storages.ping():
            raise StorageUnavailable(
                "the storage for frames and videos cannot be reached (STORAGE_URL); the job "
                "was not taken: try again shortly"
            )
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
        sampling = sampling_from(spec.options(), spec.interval)
        plan = None
        if sampling.mode is not Mode.SCENE and sampling.start < info.duration:
            plan = await asyncio.to_thread(make_plan, sampling, info, index)
        nothing = nothing_planned(sampling, info, plan)
        if nothing is not None:
            raise ValidationFailed.one(["body", nothing[0]], nothing[1])
        if plan is None:
            return info.facts()  # scene: its frames are found while decoding; the run caps them
        field = NAMED_BY.get(sampling.mode, sampling.mode)
        if plan.total > limits.max_frames_per_job:
            raise _limit(["body", field], f"the job would write {plan.total} "
                         f"frames; this server writes at most {limits.max_frames_per_job} "
                         "a job (MAX_FRAMES_PER_JOB): sample less often, narrow start/end, "
                         "or set max_frames")  # fmt: skip
        return {**info.facts(), "total_frames": plan.total}

    async def submit(
        self,
        spec: JobSpec,
        source: Source,
        idempotency: tuple[str, str] | None = None,
        video: dict[str, Any] | None = None,
    ) -> tuple[Job, bool]:
        """Record a job and queue it, in one transaction; ``Unavailable`` (503) when the
        queue is full or the service is stopping. Returns the job and whether this call
        made it; ``video``, the facts ``admit`` found, is stored with it. An upload or a
        download is stored first (once per content: its key is its SHA-256) and held by
        the job; the caller removes its own copy afterwards.

        With ``idempotency`` (key, request fingerprint): when the key already made a job
        (also by a request racing this one), that job is returned and nothing new is
        recorded, or ``Conflict`` (409) when it was made by a different request.
        """
        if not self.accepting:
            raise Unavailable("the service is shutting down; try again shortly")
        holds: list[tuple[str, int]] = []
        source_path = str(source.path)
        if source.digest is not None:  # the service's own copy: into storage
            key = source_key(source.digest)
            holds.append((key, source.size))
            # kept from a collect until the job's hold (or, if the job is never
            # recorded, removed after the lease)
            await self.store.reserve(holds, time.time() + SOURCE_LEASE)
            storage, name = self.frames.storages.route(key)
            await storage.put_file(name, source.path)
            source_path = key
        job = self._new_job(
            spec, source, self.reuse_key(spec, source), time.time(), source_path=source_path,
            **(video or {}),
        )  # fmt: skip

        async def enqueue(connection: Any) -> None:
            await self.queue.enqueue(job.id, connection)

        earlier = await self.store.create_job(job, idempotency, enqueue, holds=holds)
        if earlier is not None:
            return await self.idempotent(earlier, idempotency), False
        self.runner.publish("created", job)
        self.runner.metrics.job_submitted()
        return job, True

    @staticmethod
    def _new_job(spec: JobSpec, source: Source, reuse_key: str, now: float, **values: Any) -> Job:
        """A new job of ``spec`` on ``source``, made at ``now`` (``pending`` unless
        ``values`` say otherwise)."""
        values.setdefault("status", JobStatus.PENDING)
        return Job(
            id=str(uuid.uuid4()),
            video_source=spec.video_source,
            source_type=source.type,
            interval=spec.interval,
            options=spec.options(),
            created_at=now,
            updated_at=now,
            reuse_key=reuse_key,
            **values,
        )

    def reuse_key(self, spec: JobSpec, source: Source) -> str:
        """The job's reuse key: its source's identity and options, with what else shapes
        its frames here (this vfe's version and frames revision, and the cap on a scene job's
        frames)."""
        made_by = (f"vfe {vfe.__version__} frames {vfe.FRAMES_REVISION}; "
                   f"MAX_FRAMES_PER_JOB {self.settings.max_frames_per_job}")  # fmt: skip
        return spec.reuse_key(f"{source.identity}; {made_by}")

    async def reuse(
        self, spec: JobSpec, source: Source, idempotency: tuple[str, str] | None = None
    ) -> tuple[Job, bool] | None:
        """Complete a job at once with the frames of the newest completed job of the same
        reuse key (same source content, same sampling and output options); None when
        there is none (or it was deleted meanwhile). Returns the job and whether this
        call made it, as ``submit`` does."""
        if not self.accepting:
            raise Unavailable("the service is shutting down; try again shortly")
        reuse_key = self.reuse_key(spec, source)
        earlier = await self.store.find_reusable(reuse_key)
        if earlier is None:
            return None
        now = time.time()
        job = self._new_job(
            spec,
            source,
            reuse_key,
            now,
            status=JobStatus.COMPLETED,
            source_path=earlier.source_path,  # never read: the job does not run
            total_frames=earlier.total_frames,
            processed_frames=earlier.processed_frames,
            started_at=now,
            finished_at=now,
            duration=earlier.duration,
            fps=earlier.fps,
            width=earlier.width,
            height=earlier.height,
            codec=earlier.codec,
            plan={**(earlier.plan or {}), "strategy": "reused", "reused_from": earlier.id},
            progress=earlier.progress,
        )
        try:
            found = await self.store.create_job(job, idempotency, copy_from=earlier.id)
        except ReuseGone:
            return None
        if found is not None:
            return await self.idempotent(found, idempotency), False
        await self.runner.invalidate(job.id)  # its frames are recent frames too
        metrics = self.runner.metrics
        metrics.job_submitted()
        metrics.job_finished(JobStatus.COMPLETED, 0.0)
        self.runner.publish("created", job)
        self.runner.publish("done", job)
        log.info("job completed with the frames of %s", earlier.id, extra={"job_id": job.id})
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

    # --- delete --------------------------------------------------------------------------

    async def delete(self, job_id: str) -> Job:
        """Cancel ``job_id`` if it is queued or running, then remove it and its files.

        Returns the job as it was before the call. Waits for a running job's FFmpeg to
        stop (bounded by the queue's cancel).
        """
        job = await self.store.get_job(job_id)
        if job is None:
            raise NotFound("Job not found")
        cancelled = None
        if not job.status.finished:
            cancelled = await self.store.update_job(
                job_id, status=JobStatus.CANCELLED, finished_at=time.time()
            )
            if cancelled is not None:  # None: its run finished it meanwhile
                await self.runner.invalidate(job_id)
                running = job.status is JobStatus.PROCESSING and job.started_at is not None
                ran = time.time() - job.started_at if running and job.started_at else None
                self.runner.metrics.job_finished(JobStatus.CANCELLED, ran)
        # Its run's writes are refused from now on; wait for it to end before its files go.
        stop = await self.queue.cancel(job_id)
        if cancelled is not None:  # after the run's last event, so it is the stream's last
            self.runner.publish("cancelled", cancelled)
        if stop is Stop.STILL_RUNNING:
            raise Unavailable(
                "the job is cancelled, but its run has not stopped yet; send DELETE again "
                "shortly to remove it",
                headers={"Retry-After": "5"},
            )
        # The rows and the job's holds go in one transaction; then the objects no other
        # job holds are removed in the background (a stop in between leaves them to the
        # next start's collect).
        await self.store.delete_job(job_id)
        # Most deletes free their files before the answer; a huge job goes on after it.
        await asyncio.wait([self.collect()], timeout=COLLECT_WAIT)
        if job.source_type.owned and Path(job.source_path).is_absolute():
            with contextlib.suppress(OSError):  # an upload kept before sources were stored
                await asyncio.to_thread(Path(job.source_path).unlink, True)
        await self.runner.invalidate(job_id)
        # A status read that raced this delete may cache the job again just after the
        # invalidation above: drop it once more when such a read has surely finished.
        self._spawn(self._invalidate_later(job_id))
        self.runner.bus.publish(
            Event("deleted", job_id, Deleted(job_id=job_id).model_dump())
        )  # for the job list
        return job

    async def _invalidate_later(self, job_id: str) -> None:
        await asyncio.sleep(REINVALIDATE_AFTER)
        await self.runner.invalidate(job_id)
