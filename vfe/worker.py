"""The worker side of jobs: claim, plan, extract, settle. Used by the embedded pool and by
``vfe worker``; it knows nothing of HTTP or of how jobs are queued.

A run claims its job (``processing``, the next attempt number) and from then on writes
only through the store's fence (``Store.record``): progress, frames and the final status
are written only while the job is still ``processing`` under this attempt. When a write is
refused (the job was cancelled, deleted, or claimed again after this worker was taken for
dead) the run stops at once and writes nothing more. Frames are recorded one batch behind
FFmpeg, so the last batch commits in the same transaction as the final status; a re-run
replaces frames by index and drops those it did not produce again, and
``processed_frames`` never goes down.

A run ends by ``_settle``, shielded from cancellation: completed, failed, or (stopped by a
shutdown) back to ``pending`` for the next start. A cancel by a user is written by the
submit side before it stops the run, so the run's own ending is then refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import replace
from typing import Any

from . import storyboard
from .cache import RECENT_GENERATION, FallbackCache, job_key
from .errors import (
    ExtractionError,
    StorageUnavailable,
    StoreError,
    StoreUnavailable,
    VfeError,
)
from .events import Event, EventBus
from .extractor import Extractor
from .frames import FrameStore, Gone
from .metrics import Metrics
from .models import Frame, Job, JobStatus, Mode
from .output import output_from
from .planner import Strategy, sampling_from
from .planner import plan as make_plan
from .probe import VideoInfo, inspect
from .quality import choice_from
from .queue import RunAgain
from .settings import Settings
from .store import Store
from .views import FrameView, JobView

log = logging.getLogger("vfe.jobs")

PROGRESS_EVERY = 1.0  # seconds between progress events of one job
STORAGE_TRIES = 5  # runs of a job (for any reason) after which losing the store fails it
STORAGE_WAIT = 60.0  # seconds a run that lost the object store waits for it to answer again


class JobRunner:
    """Runs one job at a time per call of ``run``; many calls may run at once."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        cache: FallbackCache,
        bus: EventBus,
        frames: FrameStore,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self.cache = cache
        self.bus = bus
        self.frames = frames
        self.metrics = metrics
        self.extractor = Extractor(frames)

    async def disk_ok(self) -> bool:
        """Whether the disk under FRAMES_BASE_PATH has MIN_FREE_DISK_MB free."""
        return await self.frames.free_bytes() >= self.settings.min_free_disk_bytes

    async def run(self, job_id: str) -> None:
        """Run one job to a final status; never raises except to propagate a cancel, or
        ``RunAgain`` when the database went away meanwhile."""
        now = time.time()
        try:
            job = await self.store.claim(job_id, now)
        except asyncio.CancelledError:  # the claim may have committed all the same
            await asyncio.shield(self._unclaim(job_id, now))
            raise
        except StoreError:  # the database is away or busy: not the job's fault
            log.warning("could not claim a job", extra={"job_id": job_id}, exc_info=True)
            raise RunAgain from None
        if job is None:
            return  # finished, cancelled or deleted before it started
        try:
            await self._run(job)
        finally:  # this run's scratch (a copy of its source) goes, however it ended
            await asyncio.shield(self.frames.discard_run(job_id, str(job.attempts)))

    async def _run(self, job: Job) -> None:
        job_id, attempt = job.id, job.attempts
        try:
            async with asyncio.timeout(self.settings.job_timeout_seconds):
                await self._extract(job)
        except asyncio.CancelledError:
            # a shutdown: back to the queue (a user's cancel was written first: refused)
            await self._settle(job_id, attempt, JobStatus.PENDING, None, "status")
            raise
        except Gone:
            return
        except StoreUnavailable:  # the database is away: not the job's fault, run it again
            log.warning("the database went away during a run", extra={"job_id": job_id})
            raise RunAgain from None
        except StorageUnavailable as exc:  # the bucket is away: wait for it, run again
            log.warning("the object store failed during a run", extra={"job_id": job_id})
            back = await self._storage_back()
            if back and attempt < STORAGE_TRIES:
                raise RunAgain from None
            why = f"gave up after {attempt} runs" if back else (
                f"it did not answer again within {STORAGE_WAIT:g} s")  # fmt: skip
            await self._settle(job_id, attempt, JobStatus.FAILED, f"{exc.detail} ({why})", "failed")
        except TimeoutError:
            limit = self.settings.job_timeout_seconds
            await self._settle(
                job_id, attempt, JobStatus.FAILED, f"the job took longer than {limit:g} s",
                "failed",
            )  # fmt: skip
        except VfeError as exc:
            if not isinstance(exc, ExtractionError):  # ours, not the video's: keep the cause
                log.error("job failed", exc_info=exc, extra={"job_id": job_id})
            await self._settle(job_id, attempt, JobStatus.FAILED, str(exc.detail), "failed")
        except Exception:
            log.exception("job crashed", extra={"job_id": job_id})
            await self._settle(
                job_id, attempt, JobStatus.FAILED, "internal error while extracting frames",
                "failed",
            )  # fmt: skip

    async def _unclaim(self, job_id: str, claimed_at: float) -> None:
        """A stop arrived during the claim: if the claim was written (it is this run's
        when its start time is ``claimed_at``), put the job back to ``pending``."""
        with contextlib.suppress(StoreError):
            job = await self.store.get_job(job_id)
            if job is not None and job.status is JobStatus.PROCESSING:
                if job.started_at == claimed_at:
                    await self.store.record(job_id, job.attempts, status=JobStatus.PENDING)

    async def _settle(
        self,
        job_id: str,
        attempt: int,
        status: JobStatus,
        error: str | None,
        event: str,
        frames: list[Frame] | None = None,
        **values: Any,
    ) -> None:
        """Write a run's final status (with its last ``frames``) and announce it, all
        shielded from cancellation, so a cancel arriving mid-write can never record a
        status without its event."""

        async def write_and_announce() -> None:
            values.update(status=status, error_message=error)
            if status.finished:
                values["finished_at"] = time.time()
            job = await self.store.record(job_id, attempt, frames=frames or [], **values)
            await self.invalidate(job_id)
            if job is None:
                return  # cancelled, deleted or claimed again: not this run's to end
            if status.finished:  # what runs before this one left behind
                await self.frames.discard_work(job_id)
            self.metrics.frames_added(len(frames or []))
            log.info("job %s", status.value, extra={"job_id": job_id, "error": error})
            for frame in frames or []:
                self._frame_event(frame)
            if status.finished:
                ran = None if job.started_at is None else values["finished_at"] - job.started_at
                self.metrics.job_finished(status, ran)
            self.publish(event, job)

        try:
            await asyncio.shield(write_and_announce())
        except StoreUnavailable:
            if status is JobStatus.PENDING:  # a shutdown: the queue has it anyway
                return
            raise RunAgain from None  # unrecorded: the job runs again when it is back
        except StoreError:
            log.exception("could not record job status", extra={"job_id": job_id})

    async def _storage_back(self) -> bool:
        """Wait until the object store answers again (checked every 1 to 5 s), for up to
        ``STORAGE_WAIT`` s: a blip of a few seconds must not use up a job's runs, which
        its own retries (3 within 10 s a request) can do in under a second."""
        deadline = time.monotonic() + STORAGE_WAIT
        pause = 1.0
        while not await self.frames.storages.ping():
            if time.monotonic() + pause > deadline:
                return False
            await asyncio.sleep(pause)
            pause = min(5.0, pause * 2)
        return True

    async def _extract(self, job: Job) -> None:
        attempt = job.attempts
        await self.invalidate(job.id)
        self.publish("status", job)
        try:
            source = await self.frames.local_source(job.id, job.source_path, str(attempt))
            exists = await asyncio.to_thread(source.is_file)
        except OSError:
            exists = False
        if not exists:
            raise ExtractionError("the video file is no longer there")
        info, index = await inspect(source, self.settings.max_frames_per_video)
        _check_unchanged(job, info)
        sampling = sampling_from(job.options, job.interval)
        if sampling.mode is Mode.SCENE:  # frames found, not planned: cap them here
            cap = min(sampling.max_frames or math.inf, self.settings.max_frames_per_job)
            sampling = replace(sampling, max_frames=int(cap))
        plan = await asyncio.to_thread(make_plan, sampling, info, index)  # CPU, off the loop
        scene = plan.scene is not None  # frames found while decoding, not planned
        decoding = scene or plan.strategy is Strategy.BEST  # progress: the decoding done
        job = await self._record(
            job.id,
            attempt,
            plan=plan.describe(),
            total_frames=max(plan.total, job.processed_frames),
            progress=(job.progress or 0.0) if decoding else None,  # a retry never goes back
            **info.facts(),
        )
        self.publish("progress", job)
        before = {f.index for f in await self.store.list_frames(job.id, 0, 10**9)}
        produced: set[int] = set()
        made: dict[int, Frame] = {}  # this run's frames by index: a storyboard's tiles
        held: list[Frame] = []  # the latest batch: recorded with the next, or with the end
        last_progress = time.monotonic()

        async def on_frames(batch: list[Frame]) -> None:
            nonlocal job, last_progress, held
            if not await self.disk_ok():  # these frames are whole; stop before more
                raise ExtractionError(
                    "the server's disk for frames ran nearly full (below MIN_FREE_DISK_MB); "
                    "the job stopped"
                )
            ready, held = held, list(batch)
            produced.update(f.index for f in batch)
            made.update((f.index, f) for f in batch)
            processed = max(job.processed_frames, len(produced) - len(held))
            counts = {"processed_frames": processed}
            if scene:  # the frames found so far are all the frames known
                counts["total_frames"] = max(job.total_frames, processed)
            job = await self._record(job.id, attempt, frames=ready, **counts)
            self.metrics.frames_added(len(ready))
            for frame in ready:
                self._frame_event(frame)
            # scene and best jobs announce progress with their decoding (on_progress)
            if not decoding and time.monotonic() - last_progress >= PROGRESS_EVERY:
                last_progress = time.monotonic()
                self.publish("progress", job)

        async def on_progress(share: float) -> None:
            nonlocal job, last_progress
            if time.monotonic() - last_progress >= PROGRESS_EVERY:
                last_progress = time.monotonic()
                progress = max(job.progress or 0.0, share)
                job = await self._record(job.id, attempt, progress=progress)
                self.publish("progress", job)

        output = output_from(job.options)
        choice = choice_from(job.options)
        outcome = await self.extractor.run(
            job.id, source, info, plan, on_frames, output, on_progress, run=str(attempt),
            index=index, choice=choice,
        )  # fmt: skip
        stale = sorted(set(before) - produced)
        if stale:  # frames of an earlier attempt this run did not produce again
            job = await self._record(job.id, attempt, drop=stale)
        log.info("extracted %d frames", outcome.written, extra={"job_id": job.id})
        count = len(produced)  # every frame listed now: the earlier ones were replaced
        done: dict[str, Any] = {"total_frames": count, "processed_frames": count}
        if decoding:
            done["progress"] = 1.0
        if outcome.rejected or outcome.dropped or choice.selective:
            done["plan"] = {**plan.describe(), "rejected_targets": outcome.rejected,
                            "dropped_duplicates": outcome.dropped}  # fmt: skip
        if job.options.get("storyboard") and made:  # from the frames as stored
            end = storyboard.window_end(index.end, info.duration, plan.window_end)
            board = await storyboard.make(
                self.frames, job.id, str(attempt), storyboard.in_time_order(list(made.values())),
                self.frames.local_copy, int(job.options["storyboard_width"]), end,
            )  # fmt: skip
            done["plan"] = {**done.get("plan", job.plan or {}), "storyboard": board.as_dict()}
        await self._settle(job.id, attempt, JobStatus.COMPLETED, None, "done", held, **done)

    async def _record(self, job_id: str, attempt: int, **values: Any) -> Job:
        """A fenced write of this run; ``Gone`` when it is refused."""
        job = await self.store.record(job_id, attempt, **values)
        if job is None:
            raise Gone  # cancelled, deleted or claimed again meanwhile
        await self.invalidate(job_id)
        return job

    async def invalidate(self, job_id: str) -> None:
        """Drop the job's cached status and every cached recent-frames answer."""
        await self.cache.delete(job_key(job_id))
        await self.cache.incr(RECENT_GENERATION)

    def _frame_event(self, frame: Frame) -> None:
        self.bus.publish(Event("frame", frame.job_id, FrameView.of(frame).model_dump(mode="json")))

    def publish(self, event: str, job: Job) -> None:
        view = JobView.of(job, time.time()).model_dump(mode="json")
        self.bus.publish(Event(event, job.id, view))


SAME_LENGTH = 0.1  # seconds two probes of one video's length may differ by


def _check_unchanged(job: Job, info: VideoInfo) -> None:
    """``ExtractionError`` when the video is not the one the job was accepted for: a file
    of the videos folder replaced between submit and run (its length, frame rate or codec
    differ from what submit probed). Its request was checked against the old file, so its
    frames would not be what was asked for, or none at all."""
    if job.duration is None:  # accepted by a version that stored no facts: nothing to hold
        return
    was, now = (job.duration, job.fps, job.codec), (info.duration, info.fps, info.codec)
    # lengths within a tenth of a second are the same video (a version before this one
    # took a Matroska file's length from its container, a few ms off its frames' end)
    same_length = abs(job.duration - info.duration) < SAME_LENGTH
    if not same_length or was[1:] != now[1:]:
        raise ExtractionError(
            f"the video file changed after the job was submitted (it was {_facts(*was)}, it "
            f"is {_facts(*now)} now); submit the job again for the new file"
        )


def _facts(duration: float, fps: float | None, codec: str | None) -> str:
    rate = f", {fps:g} fps" if fps else ""
    return f"{duration:g} s{rate}, {codec}"
