"""Runs one extraction plan into kept frames: the main pass, then what the job's choice asks.

The plan's processes write and measure frames (``runs.JobRuns``); a ``Keeper`` decides
which are kept, and kept frames are stored through the ``FrameSink`` and reported to
``on_frames``, never before they are whole. When ``reject`` refused frames, the stretch
after each is scanned and the first frame that passes is extracted exactly; ``best``
plans scan their window first and extract each stretch's best frame.

Knows nothing of HTTP, jobs or the database, so the CLI can use it as well as the workers.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Generic, TypeVar

from .frames import FrameSink, frame_name
from .models import Frame
from .output import Output
from .planner import Plan, Strategy
from .probe import FrameIndex, VideoInfo
from .quality import Choice, Metrics
from .runs import JobRuns, ProgressCallback, warm_up
from .selection import Candidate, Keeper, Window, search_windows, stretch_windows

FramesCallback = Callable[[list[Frame]], Awaitable[None]]
T = TypeVar("T")

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
        loading = warm_up()  # numpy, while FFmpeg starts; the first frame waits for it
        work = await self.frames.prepare(job_id, run)
        outcome = Outcome()
        ext = output.format.value

        async def keep(candidates: list[Candidate]) -> None:
            names = [frame_name(c.index, c.timestamp, ext) for c in candidates]
            kept = await self.frames.finalize(
                job_id, [(c.file, name) for c, name in zip(candidates, names, strict=True)]
            )
            batch = [
                Frame(
                    job_id=job_id,
                    index=c.index,
                    timestamp=c.timestamp,
                    target_time=c.target_time,
                    filename=name,
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
                for c, name, k in zip(candidates, names, kept, strict=True)
            ]
            outcome.written += len(batch)  # after the await: batches finish concurrently
            await on_frames(batch)

        job = JobRuns(source, info, output, work, self.measure)
        try:
            keeper = Keeper(choice, len(plan.groups), keep)
            if plan.strategy is Strategy.BEST:
                assert index is not None
                await self._best(job, plan, index, choice, keeper, on_progress)
            else:

                async def group_done(group: int) -> None:
                    """A process is done: its refused targets get their substitutes now,
                    in its slot (one more process at a time), not after the whole pass."""
                    await keeper.group_done(group)
                    if targets := keeper.waiting_in(group):
                        assert index is not None
                        await self._substitute(job, plan, index, choice, keeper, targets, 1)

                await job.extract(plan, keeper.offer, group_done, on_progress)
        except BaseExceptionGroup as group_error:
            raise group_error.exceptions[0] from None
        finally:
            loading.cancel()
            await self.frames.discard_work(job_id, run)
        outcome.rejected, outcome.dropped = keeper.rejected, keeper.dropped
        return outcome

    async def _substitute(
        self,
        job: JobRuns,
        plan: Plan,
        index: FrameIndex,
        choice: Choice,
        keeper: Keeper,
        targets: list[int],
        processes: int,
    ) -> None:
        """For each of ``targets``, whose frames were refused: scan the stretch after it,
        take the first frame that passes, extract that frame exactly; settle the target.
        Runs at most ``processes`` FFmpeg processes at once."""
        waiting = {target: keeper.waiting[target] for target in targets}
        # scene mode: every frame the main pass wrote, refused ones too (one process)
        found = sorted(job.seen) if plan.scene is not None else []

        def next_target(target: int) -> float | None:
            if plan.scene is not None:  # frames found, not planned: the next one found
                later = bisect.bisect_right(found, waiting[target].timestamp + 1e-6)
                return found[later] if later < len(found) else plan.end
            if target + 1 < len(plan.targets):
                return plan.targets[target + 1]
            return plan.window_end  # never past the window asked for

        windows, empty = search_windows(waiting, next_target, index, choice.search)
        for target in empty:
            await keeper.settle(target, None)
        good: dict[int, float] = {}  # target -> the first passing frame's time

        def on_measured(window: Window, timestamp: float, metrics: Metrics) -> None:
            owner = window.owner
            if choice.passes(metrics) and timestamp < good.get(owner, math.inf):
                good[owner] = timestamp

        await job.scan(windows, index, processes, on_measured)
        for window in windows:
            if window.owner not in good:
                await keeper.settle(window.owner, None)
        chosen = _Chosen({t: (target, waiting[target].target_time) for target, t in good.items()})

        async def settle(_: int, candidates: Sequence[Candidate]) -> None:
            for c in candidates:
                target, target_time = chosen.find(c.timestamp)
                await keeper.settle(target, replace(c, index=target, target_time=target_time,
                                                    substituted=True))  # fmt: skip

        await job.extract_times(sorted(good.values()), index, settle, processes)
        for target in good:
            if target in keeper.waiting:  # not written after all (a damaged stretch)
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
        those ``choice`` does not reject), extract them exactly. Only each stretch's best
        so far is kept while scanning, whatever the length of the video."""
        if plan.regular is None or not plan.targets:
            return  # no stretch: nothing to scan
        start, step = plan.regular
        end = start + step * len(plan.targets)
        windows, _ = stretch_windows(start, end, len(plan.targets), index)
        best: dict[int, tuple[float, float, float]] = {}  # stretch -> (score, -time, time)
        scanned: set[int] = set()

        def on_measured(window: Window, timestamp: float, metrics: Metrics) -> None:
            scanned.add(window.owner)
            if choice.passes(metrics):
                entry = (choice.score(metrics), -timestamp, timestamp)  # earliest of equals
                if window.owner not in best or entry > best[window.owner]:
                    best[window.owner] = entry

        await job.scan(windows, index, plan.parallel or 1, on_measured, on_progress,
                       plan.decoded_frames)  # fmt: skip
        keeper.rejected += len(scanned - set(best))  # stretches where nothing passed
        chosen = _Chosen({t: (k, plan.targets[k], score) for k, (score, _, t) in best.items()})
        held: list[Candidate] = []

        async def offer(_: int, candidates: Sequence[Candidate]) -> None:
            labelled = []
            for c in candidates:
                stretch, stretch_start, score = chosen.find(c.timestamp)
                labelled.append(replace(c, index=stretch, target_time=stretch_start,
                                        stretch=stretch, score=score))  # fmt: skip
            if choice.dedupe:  # the processes finish in any order; dedupe goes by time
                held.extend(labelled)
            else:
                await keeper.offer(0, labelled, checked=True)

        await job.extract_times(sorted(chosen.times), index, offer)
        if held:
            await keeper.offer(0, sorted(held, key=lambda c: c.timestamp), checked=True)
        await keeper.group_done(0)


class _Chosen(Generic[T]):
    """Frames chosen by a scan, by time: each extracted frame finds its own by the time
    FFmpeg printed (the same pts as the scan's; the nearest, should rounding differ)."""

    def __init__(self, by_time: dict[float, T]) -> None:
        self.by_time = by_time
        self.times = sorted(by_time)

    def find(self, timestamp: float) -> T:
        at = bisect.bisect_left(self.times, timestamp)
        near = min(self.times[max(0, at - 1) : at + 1], key=lambda t: abs(t - timestamp))
        return self.by_time[near]
