"""Runs one extraction plan: FFmpeg writes frames, this turns them into finished frames.

While FFmpeg runs, ``showinfo`` lines on stderr give the exact presentation time of each
frame it keeps (in output order), and every ``-progress`` block is a cue to look for newly
completed files. Complete files are handed to the ``FrameSink`` in batches (hashed and
stored, or renamed into a folder) and then to ``on_frames``; a frame is never reported
before it is kept whole.

Knows nothing of HTTP, jobs or the database, so the CLI can use it as well as the workers.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import os
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from . import ffmpeg
from .errors import ExtractionError
from .frames import FrameSink, frame_name
from .models import Frame, Mode, Output
from .planner import Group, Plan, Sampling, Strategy
from .planner import plan as make_plan
from .probe import FrameIndex, VideoInfo
from .quality import SIDE, Choice, Metrics, measure, preload, read_pgm
from .selection import Candidate, Keeper, Scan, Window, scans, search_windows, stretch_windows

FramesCallback = Callable[[list[Frame]], Awaitable[None]]
CandidatesCallback = Callable[[list[Candidate]], Awaitable[None]]
ProgressCallback = Callable[[float], Awaitable[None]]  # share of the planned decoding done

_SHOWINFO = re.compile(r"\bn:\s*(\d+)\s+pts:\s*(-?\d+)\s+pts_time:(\S+)")
_TIME_BASE = re.compile(r"config in time_base:\s*(\d+)/(\d+)")
_SCAN_EVERY = 0.5  # seconds between scans for finished files when FFmpeg is quiet


class _Decode:
    """What one FFmpeg process reports on stderr: each kept frame's time (``showinfo``,
    in output order) and the errors."""

    def __init__(self, offset: float) -> None:
        self.offset = offset  # filter timeline minus FFmpeg's usual one (the container start)
        self.time_base: Fraction | None = None
        self.times: list[float] = []
        self.errors: list[str] = []
        self.wakeup = asyncio.Event()

    def on_line(self, line: str) -> bool:
        level, text = ffmpeg.strip_level(line)
        if "showinfo" in line:
            match = _SHOWINFO.search(text)
            if match:
                self._add_time(int(match.group(2)), match.group(3))
                self.wakeup.set()
            elif base := _TIME_BASE.search(text):
                if int(base.group(2)) > 0:
                    self.time_base = Fraction(int(base.group(1)), int(base.group(2)))
            return True
        if level in ("error", "fatal", "panic"):
            self.errors.append(text)
            return False
        return level not in ("warning", "")

    def _add_time(self, pts: int, pts_time: str) -> None:
        seconds = float(pts * self.time_base) if self.time_base is not None else float(pts_time)
        self.times.append(seconds - self.offset)

    def timestamp(self, seq: int) -> float:
        """The ``seq``-th kept frame's time, to the microsecond."""
        return max(0.0, round(self.times[seq], 6)) + 0.0  # never "-0.000"


class _Run(_Decode):
    """One FFmpeg run writing frames: what it is for, the timestamps seen, the files
    finished, measured and handed on as candidates."""

    def __init__(
        self,
        work: Path,
        plan: Plan,
        group: Group,
        prefix: str,
        ext: str,
        offset: float,
        on_candidates: CandidatesCallback,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        super().__init__(offset)
        self.work = work
        self.plan = plan
        self.group = group
        self.prefix = prefix
        self.ext = ext
        self.on_candidates = on_candidates
        self.on_decoded = on_progress
        self.scene = plan.scene is not None  # frames numbered as found, each its own target
        self.decoded = 0  # frames decoded so far, when FFmpeg counts them (scene mode)
        self.reported = 0
        self.finished = 0
        self.ffmpeg_done = False

    def on_progress(self, block: dict[str, str]) -> None:
        if self.on_decoded is not None and block.get("frame", "").isdigit():
            self.decoded = int(block["frame"])
        self.wakeup.set()

    async def collect(self) -> None:
        """Finalize frames as FFmpeg completes them, until it has exited."""
        while not self.ffmpeg_done:
            try:
                async with asyncio.timeout(_SCAN_EVERY):
                    await self.wakeup.wait()
            except TimeoutError:
                pass
            self.wakeup.clear()
            await self.finish_ready()
            if self.on_decoded is not None and self.decoded > self.reported:
                self.reported = self.decoded
                await self.on_decoded(min(1.0, self.decoded / max(1, self.group.decoded)))

    async def finish_ready(self) -> None:
        """Measure and hand on every complete file (and its grey twin) whose timestamp is
        known, in order."""
        names = set(await asyncio.to_thread(os.listdir, self.work))
        ready: list[tuple[int, float, Path, Path]] = []  # index, time, frame file, grey file
        for seq in range(self.finished, len(self.times)):
            produced = f"{self.prefix}{seq:06d}"
            if f"{produced}.{self.ext}" not in names or f"{produced}.pgm" not in names:
                break
            timestamp = self.timestamp(seq)
            index = seq if self.scene else self.plan.target_index(timestamp)
            ready.append((index, timestamp, self.work / f"{produced}.{self.ext}",
                          self.work / f"{produced}.pgm"))  # fmt: skip
        if not ready:
            return
        metrics = await asyncio.to_thread(_measure, [grey for *_, grey in ready])
        batch = [
            Candidate(
                index=index,
                timestamp=timestamp,
                target_time=timestamp if self.scene else self.plan.target_time(index),
                file=file,
                metrics=m,
            )
            for (index, timestamp, file, _), m in zip(ready, metrics, strict=True)
        ]
        self.finished += len(batch)
        await self.on_candidates(batch)


def _measure(greys: list[Path]) -> list[Metrics]:
    """The metrics of FFmpeg's grey pictures; the files are used up."""
    found = []
    for grey in greys:
        found.append(measure(read_pgm(grey)))
        grey.unlink()
    return found


class _Scanning(_Decode):
    """One scan process: grey pictures on stdout, their times on stderr."""

    def __init__(self, offset: float) -> None:
        super().__init__(offset)
        self.pictures: list[bytes] = []
        self.measured: list[tuple[float, Metrics]] = []

    def on_picture(self, picture: bytes) -> None:
        self.pictures.append(picture)
        self.wakeup.set()

    async def measure_ready(self) -> None:
        """Measure the pictures whose time is known (in a thread: numpy works off the loop)."""
        ready = min(len(self.pictures), len(self.times)) - len(self.measured)
        if ready <= 0:
            return
        done = len(self.measured)
        pictures = self.pictures[done : done + ready]
        metrics = await asyncio.to_thread(lambda: [measure(p) for p in pictures])
        for seq, found in enumerate(metrics, start=done):
            self.pictures[seq] = b""  # measured: free it
            self.measured.append((self.timestamp(seq), found))


@dataclass
class Outcome:
    """What a run of a plan left: frames written, targets left without a frame (every
    frame in reach refused), near-duplicates dropped."""

    written: int = 0
    rejected: int = 0
    dropped: int = 0


class Extractor:
    """Extracts the frames of a plan from a local video into a ``FrameSink``."""

    def __init__(self, frames: FrameSink) -> None:
        self.frames = frames

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

        job = _Job(self, job_id, source, info, output, work)
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
        self, job: _Job, plan: Plan, index: FrameIndex, choice: Choice, keeper: Keeper
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
        job: _Job,
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

        async def offer(_: int, candidates: Sequence[Candidate]) -> None:
            labelled = []
            for c in candidates:
                stretch, stretch_start = _answering(chosen, c.timestamp)
                labelled.append(replace(
                    c, index=stretch, target_time=stretch_start, stretch=stretch,
                    score=scores[_nearest(scores, c.timestamp)],
                ))  # fmt: skip
            await keeper.offer(0, labelled)

        await job.extract_times(sorted(chosen), index, offer)
        await keeper.group_done(0)


def _nearest(times: dict[float, Any], timestamp: float) -> float:
    """The key of ``times`` nearest ``timestamp`` (a frame's time as FFmpeg printed it)."""
    return min(times, key=lambda t: abs(t - timestamp))


def _answering(chosen: dict[float, tuple[int, float]], timestamp: float) -> tuple[int, float]:
    return chosen[_nearest(chosen, timestamp)]


class _Job:
    """One job's extraction: the video, the output, the work folder, its processes."""

    def __init__(
        self, extractor: Extractor, job_id: str, source: Path, info: VideoInfo, output: Output,
        work: Path,
    ) -> None:  # fmt: skip
        self.extractor = extractor
        self.job_id = job_id
        self.source = source
        self.info = info
        self.output = output
        self.work = work
        self.offset = info.container_start  # -copyts: the filters see the file's own times
        self.passes = 0
        self.seen: list[float] = []  # times of every frame written (scene: the next one)

    async def extract(
        self,
        plan: Plan,
        on_candidates: Callable[[int, Sequence[Candidate]], Awaitable[None]],
        on_group_done: Callable[[int], Awaitable[None]] | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        """Run the plan's groups, up to ``plan.parallel`` at once."""
        slots = asyncio.Semaphore(plan.parallel)
        run_number = self.passes
        self.passes += 1

        async def one(number: int, group: Group) -> None:
            async with slots:
                await self._run_group(
                    plan, group, f"p{run_number}g{number:04d}_", on_progress,
                    functools.partial(on_candidates, number),
                )  # fmt: skip
            if on_group_done is not None:
                await on_group_done(number)

        async with asyncio.TaskGroup() as tasks:
            for number, group in enumerate(plan.groups):
                tasks.create_task(one(number, group))

    async def extract_times(
        self,
        times: list[float],
        index: FrameIndex,
        on_candidates: Callable[[int, Sequence[Candidate]], Awaitable[None]],
    ) -> None:
        """Extract the frames at exactly ``times`` (frames' own times)."""
        if not times:
            return
        sampling = Sampling(mode=Mode.TIMESTAMPS, timestamps=tuple(times))
        plan = await asyncio.to_thread(make_plan, sampling, self.info, index)
        await self.extract(plan, on_candidates)

    async def _run_group(
        self,
        plan: Plan,
        group: Group,
        prefix: str,
        on_progress: ProgressCallback | None,
        on_candidates: CandidatesCallback,
    ) -> None:
        """Run one FFmpeg process of the plan, handing its frames on as they complete."""
        scene = plan.scene is not None
        ext = self.output.format.value

        async def seen(candidates: list[Candidate]) -> None:
            self.seen.extend(c.timestamp for c in candidates)
            await on_candidates(candidates)

        argv = ffmpeg.frames_argv(
            str(self.source),
            plan.select_expr(group, self.offset),
            str(self.work / f"{prefix}%06d.{ext}"),
            self.output,
            seek=group.seek,  # -ss counts from the container start, -copyts or not
            max_frames=group.frames or None,  # scene mode: a cap, if any
            keyframes_only=plan.strategy is Strategy.KEYFRAMES,
            threads=plan.threads,
            stop_at=None if plan.end is None else plan.end + self.offset,
            count_decoded=scene,
            hdr=self.info.hdr,
            measure=str(self.work / f"{prefix}%06d.pgm"),
        )
        argv = await ffmpeg.spill_long_graph(argv, self.work / f"{prefix}graph.txt")
        state = _Run(self.work, plan, group, prefix, ext, self.offset, seen,
                     on_progress if scene else None)  # fmt: skip
        runner = asyncio.create_task(
            ffmpeg.run(argv, on_progress=state.on_progress, on_line=state.on_line)
        )
        collector = asyncio.create_task(state.collect())
        try:
            await asyncio.wait([runner, collector], return_when=asyncio.FIRST_COMPLETED)
            if collector.done():  # it only ends by failing: stop FFmpeg and report that
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
                collector.result()
            done = runner.result()
            state.ffmpeg_done = True  # the collector ends after its current batch
            state.wakeup.set()
            await collector
            await state.finish_ready()
        finally:
            for task in (runner, collector):
                task.cancel()
            await asyncio.gather(runner, collector, return_exceptions=True)
        self._check(done, state, state.finished < group.frames and not scene,
                    f"got {state.finished} of {group.frames} frames")  # fmt: skip

    def _check(self, done: ffmpeg.Completed, state: _Decode, short: bool, what: str) -> None:
        private = [str(self.source), str(self.work)]
        if done.returncode != 0:
            detail = _scrub(state.errors[-1] if state.errors else done.error_text(), private)
            raise ExtractionError(f"FFmpeg could not decode the video: {detail}")
        if state.errors and short:
            raise ExtractionError(
                f"the video ends early or is damaged: {what} ({_scrub(state.errors[-1], private)})"
            )

    async def scan(
        self,
        windows: Sequence[Window],
        index: FrameIndex,
        parallel: int,
        on_progress: ProgressCallback | None = None,
        planned: int = 0,
    ) -> list[list[tuple[float, Metrics]]]:
        """The metrics of every frame in each window: (time, metrics) in time order."""
        found: list[list[tuple[float, Metrics]]] = [[] for _ in windows]
        slots = asyncio.Semaphore(max(1, parallel))
        runs = scans(windows, index, max(1, parallel))
        owners = {w.owner: n for n, w in enumerate(windows)}
        decoded = [0] * len(runs)
        last_report = 0.0

        async def report() -> None:
            nonlocal last_report
            if on_progress is not None and time.monotonic() - last_report >= _SCAN_EVERY:
                last_report = time.monotonic()
                await on_progress(min(1.0, sum(decoded) / max(1, planned)))

        async def one(number: int, scan: Scan) -> None:
            async with slots:
                state = _Scanning(self.offset)
                argv = ffmpeg.scan_argv(
                    str(self.source), scan.select_expr(self.offset), seek=scan.seek,
                    stop_at=scan.stop_at + self.offset, threads=1 if parallel > 1 else None,
                    hdr=self.info.hdr, tonemap=self.output.tonemap,
                )  # fmt: skip
                runner = asyncio.create_task(ffmpeg.run(
                    argv, on_line=state.on_line, on_picture=state.on_picture,
                    picture_size=SIDE * SIDE,
                ))  # fmt: skip
                try:
                    while not runner.done():
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(_SCAN_EVERY):
                                await asyncio.wait([runner])
                        await state.measure_ready()
                        decoded[number] = len(state.measured)
                        await report()
                    done = runner.result()
                    await state.measure_ready()
                finally:
                    runner.cancel()
                    await asyncio.gather(runner, return_exceptions=True)
            self._check(done, state, False, "")
            for timestamp, metrics in state.measured:
                for window in scan.windows:
                    if window.first - 1e-4 <= timestamp <= window.last + 1e-4:
                        found[owners[window.owner]].append((timestamp, metrics))
                        break

        async with asyncio.TaskGroup() as tasks:
            for number, scan in enumerate(runs):
                tasks.create_task(one(number, scan))
        for frames in found:
            frames.sort()
        return found


def _scrub(detail: str, private: list[str]) -> str:
    """FFmpeg's error text, cut short, with server paths taken out."""
    for path in private:
        detail = detail.replace(f"file:{path}", "video").replace(path, "video")
    return detail[:300] or "unknown error"
