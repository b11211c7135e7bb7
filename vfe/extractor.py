"""Runs one extraction plan into kept frames: the main pass, then what the job's choice asks.

The plan's processes write and measure frames (``runs.JobRuns``); a ``Keeper`` decides
which are kept, and kept frames are stored through the ``FrameSink`` and reported to
``on_frames``, never before they are whole. When ``reject`` refused frames, the stretch
after each is scanned and the first frame that passes is extracted exactly; ``best``
plans scan their window first and extract each stretch's best frame.

Knows nothing of HTTP, jobs or the database, so the CLI can use it as well as the workers.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .frames import FrameSink, frame_name
from .models import Frame, Output
from .planner import Plan, Strategy
from .probe import FrameIndex, VideoInfo
from .quality import Choice, preload
from .runs import JobRuns, ProgressCallback
from .selection import Candidate, Keeper, search_windows, stretch_windows

FramesCallback = Callable[[list[Frame]], Awaitable[None]]

__all__ = ["Extractor", "FramesCallback", "Outcome", "ProgressCallback"]


@dataclass
class Outcome:
    """What a run of a plan left: frames written, targets left without a frame (every
    frame in reach refused), near-duplicates dropped."""

    written: int = 0
    rejected: int = 0
    dropped: int = 0


class Extractor:
    """Extracts the frames of a plan from a local video into a ``FrameSink``."""

    def __init__(self, frames: FrameSink, measure: bool = True) -> None:
        self.frames = frames
        self.measure = measure  # False: frames without metrics (a benchmark's baseline)

    async def run(
        self,
        job_id: str,
        source: Path,
        info: VideoInfo,
        plan: Plan,
        on_frames: FramesCallback,
        output: Output | None = None,
        on_progress: ProgressCallback | None = None,
        run: str = "",
        *,
        index: FrameIndex | None = None,
        choice: Choice | None = None,
    ) -> Outcome:
        """Extract every frame of ``plan``, measure each, keep those ``choice`` keeps.

        ``run`` names this run's own work folder (its attempt number), so a run that
        outlives its lease never shares partial files with the one that replaced it.

        ``on_progress`` hears the share of the planned decoding done, for plans whose
        frames are not known ahead (scene and best modes); other plans count their frames.

        Each group of the plan is one FFmpeg process; up to ``plan.parallel`` run at once.
        Then, when ``choice`` rejected frames, the stretches after them are scanned (grey
        pictures only) and the substitutes extracted; ``best`` plans scan their window
        first and extract the frames chosen. ``index`` (the frame index) is needed for
        both. If a process fails, or the caller is cancelled, every process is stopped and
        reaped and the work folder removed; frames already reported stay, each whole.
        """
        output = output or Output()
        choice = choice or Choice()
        if (choice.reject or plan.strategy is Strategy.BEST) and index is None:
            raise ValueError("rejecting frames and best mode need the frame index")
        if (choice.selective or plan.strategy is Strategy.BEST) and not self.measure:
            raise ValueError("choosing frames needs their metrics")
        loading = asyncio.create_task(asyncio.to_thread(preload))  # numpy, while FFmpeg starts
        work = await self.frames.prepare(job_id, run)
        outcome = Outcome()
        ext = output.format.value

        async def keep(candidates: list[Candidate]) -> None:
            kept = await self.frames.finalize(
                job_id, [(c.file, frame_name(c.index, c.timestamp, ext)) for c in candidates]
            )
            batch = [
                Frame(
                    job_id=job_id,
                    index=c.index,
                    timestamp=c.timestamp,
                    target_time=c.target_time,
                    filename=frame_name(c.index, c.timestamp, ext),
                    size_bytes=k.size,
                    checksum=k.checksum,
                    width=k.dimensions[0] if k.dimensions else None,
                    height=k.dimensions[1] if k.dimensions else None,
                    created_at=time.time(),
                    metrics=c.metrics,
                    substituted=c.substituted,
                    stretch=c.stretch,
                    score=c.score,
                )
                for c, k in zip(candidates, kept, strict=True)
            ]
            outcome.written += len(batch)  # after the await: batches finish concurrently
            await on_frames(batch)

        job = JobRuns(job_id, source, info, output, work, self.measure)
        try:
            await loading
            keeper = Keeper(choice, len(plan.groups), keep)
            if plan.strategy is Strategy.BEST:
                assert index is not None
                await self._best(job, plan, index, choice, keeper, on_progress)
            else:
                await job.extract(plan, keeper.offer, keeper.group_done, on_progress)
                if keeper.waiting:
                    assert index is not None
                    await self._substitute(job, plan, index, choice, keeper)
        except BaseExceptionGroup as group_error:
            raise group_error.exceptions[0] from None
        finally:
            loading.cancel()
            await self.frames.discard_work(job_id, run)
        outcome.rejected, outcome.dropped = keeper.rejected, keeper.dropped
        return outcome

    async def _substitute(
        self, job: JobRuns, plan: Plan, index: FrameIndex, choice: Choice, keeper: Keeper
    ) -> None:
        """For each target whose frame was refused: scan the stretch after it, take the
        first frame that passes, extract that frame exactly; settle the target."""
        found = sorted(job.seen)  # every frame the main pass wrote, refused ones too

        def next_target(target: int) -> float | None:
            if plan.scene is not None:  # frames found, not planned: the next one found
                later = bisect.bisect_right(found, keeper.waiting[target].timestamp + 1e-6)
                return found[later] if later < len(found) else plan.end
            if target + 1 < len(plan.targets):
                return plan.targets[target + 1]
            return plan.end

        windows, empty = search_windows(keeper.waiting, next_target, index, choice.search)
        for target in empty:
            await keeper.settle(target, None)
        measured = await job.scan(windows, index, plan.parallel or 1)
        chosen: dict[float, tuple[int, float]] = {}  # frame time -> (target, its time)
        for window, frames in zip(windows, measured, strict=True):
            good = next((t for t, m in frames if choice.passes(m)), None)
            if good is None:
                await keeper.settle(window.owner, None)
            else:
                chosen[good] = (window.owner, keeper.waiting[window.owner].target_time)

        async def settle(_: int, candidates: Sequence[Candidate]) -> None:
            for c in candidates:
                target, target_time = _answering(chosen, c.timestamp)
                await keeper.settle(target, replace(c, index=target, target_time=target_time,
                                                    substituted=True))  # fmt: skip

        await job.extract_times(sorted(chosen), index, settle)
        for target in list(keeper.waiting):  # not written after all (a damaged stretch)
            await keeper.settle(target, None)

    async def _best(
        self,
        job: JobRuns,
        plan: Plan,
        index: FrameIndex,
        choice: Choice,
        keeper: Keeper,
        on_progress: ProgressCallback | None,
    ) -> None:
        """best mode: scan the window, keep the highest-scoring frame of each stretch (of
        those ``choice`` does not reject), extract them exactly."""
        assert plan.regular is not None
        start, step = plan.regular
        end = start + step * len(plan.targets)
        windows, _ = stretch_windows(start, end, len(plan.targets), index)
        measured = await job.scan(windows, index, plan.parallel or 1, on_progress,
                                  plan.decoded_frames)  # fmt: skip
        chosen: dict[float, tuple[int, float]] = {}
        scores: dict[float, float] = {}
        for window, frames in zip(windows, measured, strict=True):
            fit = [(choice.score(m), -t, t) for t, m in frames if choice.passes(m)]
            if not fit:
                keeper.rejected += bool(frames)
                continue
            score, _, best = max(fit)  # the earliest of equal scores
            chosen[best] = (window.owner, plan.targets[window.owner])
            scores[best] = score

        held: list[Candidate] = []

        async def offer(_: int, candidates: Sequence[Candidate]) -> None:
            labelled = []
            for c in candidates:
                stretch, stretch_start = _answering(chosen, c.timestamp)
                labelled.append(replace(
                    c, index=stretch, target_time=stretch_start, stretch=stretch,
                    score=scores[_nearest(scores, c.timestamp)],
                ))  # fmt: skip
            if choice.dedupe:  # the processes finish in any order; dedupe goes by time
                held.extend(labelled)
            else:
                await keeper.offer(0, labelled)

        await job.extract_times(sorted(chosen), index, offer)
        if held:
            await keeper.offer(0, sorted(held, key=lambda c: c.timestamp))
        await keeper.group_done(0)


def _nearest(times: dict[float, Any], timestamp: float) -> float:
    """The key of ``times`` nearest ``timestamp`` (a frame's time as FFmpeg printed it)."""
    return min(times, key=lambda t: abs(t - timestamp))


def _answering(chosen: dict[float, tuple[int, float]], timestamp: float) -> tuple[int, float]:
    return chosen[_nearest(chosen, timestamp)]
