"""One job's FFmpeg processes: frames written and measured, and grey scans.

While FFmpeg writes frames, ``showinfo`` lines on stderr give the exact presentation time
of each frame it keeps (in output order), and every ``-progress`` block is a cue to look
for newly completed files. Each frame has a grey twin (``ffmpeg_argv.frames_argv``'s
``measure``) that is measured and removed; the frame is handed on as a ``Candidate``,
never before its file is whole. A scan (``ffmpeg_argv.scan_argv``) writes no files: the grey
pictures come on stdout, their times on stderr, and are paired in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

from . import ffmpeg, ffmpeg_argv
from .errors import ExtractionError
from .models import Mode
from .output import Output
from .planner import Group, Plan, Sampling, Strategy
from .planner import plan as make_plan
from .probe import FrameIndex, VideoInfo
from .quality import SIDE, Metrics, measure, preload, read_pgm
from .selection import Candidate, Scan, Window, scans

CandidatesCallback = Callable[[list[Candidate]], Awaitable[None]]
T = TypeVar("T")
GroupCandidates = Callable[[int, Sequence[Candidate]], Awaitable[None]]
ProgressCallback = Callable[[float], Awaitable[None]]  # share of the planned decoding done

_SHOWINFO = re.compile(r"\bn:\s*(\d+)\s+pts:\s*(-?\d+)\s+pts_time:(\S+)")
_TIME_BASE = re.compile(r"config in time_base:\s*(\d+)/(\d+)")
_SCAN_EVERY = 0.5  # seconds between scans for finished files when FFmpeg is quiet


def _lower_priority() -> None:
    """Run this thread at a lower CPU priority (Linux keeps one per thread)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), MEASURING_NICENESS)


# Measuring frames has a thread of its own, at a lower priority: in the shared default
# pool, every job's measuring would queue file work and health checks behind it, and at
# the loop's priority it would take the CPU the API needs to answer while jobs run.
MEASURING_NICENESS = 10
_MEASURING = ThreadPoolExecutor(
    max_workers=1, thread_name_prefix="vfe-measure", initializer=_lower_priority
)


def warm_up() -> asyncio.Future[None]:
    """Import numpy (about 0.1-0.2 s) on the measuring thread, ahead of the first frame's
    measuring, which queues behind it. Not awaited before FFmpeg starts: started and
    awaited there, it put the import in series with the whole FFmpeg run."""
    return asyncio.get_running_loop().run_in_executor(_MEASURING, preload)


async def _off_loop(work: Callable[[], T]) -> T:
    """Run ``work`` (measuring) on the measuring threads."""
    return await asyncio.get_running_loop().run_in_executor(_MEASURING, work)


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
        measure: bool = True,
    ) -> None:
        super().__init__(offset)
        self.measure = measure  # FFmpeg writes each frame's grey twin too
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
            if f"{produced}.{self.ext}" not in names or (
                self.measure and f"{produced}.pgm" not in names
            ):
                break
            timestamp = self.timestamp(seq)
            index = seq if self.scene else self.plan.target_index(timestamp)
            ready.append((index, timestamp, self.work / f"{produced}.{self.ext}",
                          self.work / f"{produced}.pgm"))  # fmt: skip
        if not ready:
            return
        metrics: list[Metrics | None] = [None] * len(ready)
        if self.measure:
            greys = [grey for *_, grey in ready]
            metrics = [*await _off_loop(functools.partial(_measure, greys))]
        # a scene's frame, or a keyframe found by its flag (its target is its decode
        # time), answers itself
        itself = self.scene or self.plan.by_key
        batch = [
            Candidate(
                index=index,
                timestamp=timestamp,
                target_time=timestamp if itself else self.plan.target_time(index),
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
    """One scan process: grey pictures on stdout, their times on stderr; each picture is
    measured once its time is known, then dropped."""

    def __init__(self, offset: float) -> None:
        super().__init__(offset)
        self.pictures: deque[bytes] = deque()
        self.measured = 0  # pictures measured so far

    def on_picture(self, picture: bytes) -> None:
        self.pictures.append(picture)
        self.wakeup.set()

    async def measure_ready(self) -> list[tuple[float, Metrics]]:
        """The (time, metrics) of the pictures whose time is known, in order (measured in a
        thread: numpy works off the loop)."""
        ready = min(len(self.pictures), len(self.times) - self.measured)
        if ready <= 0:
            return []
        pictures = [self.pictures.popleft() for _ in range(ready)]
        metrics = await _off_loop(lambda: [measure(p) for p in pictures])
        first, self.measured = self.measured, self.measured + ready
        return [(self.timestamp(first + n), m) for n, m in enumerate(metrics)]


class JobRuns:
    """One job's extraction: the video, the output, the work folder, its processes."""

    def __init__(
        self, source: Path, info: VideoInfo, output: Output, work: Path, measure: bool = True
    ) -> None:
        self.measure = measure
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
                if on_group_done is not None:  # in the slot: what it runs counts in it
                    await on_group_done(number)

        async with asyncio.TaskGroup() as tasks:
            for number, group in enumerate(plan.groups):
                tasks.create_task(one(number, group))

    async def extract_times(
        self,
        times: list[float],
        index: FrameIndex,
        on_candidates: Callable[[int, Sequence[Candidate]], Awaitable[None]],
        processes: int | None = None,
    ) -> None:
        """Extract the frames at exactly ``times`` (frames' own times), with at most
        ``processes`` FFmpeg processes at once (default: one per CPU)."""
        if not times:
            return
        sampling = Sampling(mode=Mode.TIMESTAMPS, timestamps=tuple(times))
        plan = await asyncio.to_thread(make_plan, sampling, self.info, index, processes)
        await self.extract(plan, on_candidates)

    def _stop_at(self, plan: Plan, group: Group) -> float | None:
        """Where a group's input ends on the filters' timeline: the scene window's end;
        for an interlaced source the frame after its last (``Group.until``), so the
        deinterlacer lets its last frame go; else nowhere (``-frames:v`` stops it)."""
        if plan.end is not None:
            return plan.end + self.offset
        if self.info.interlaced and group.until is not None:
            return group.until + self.offset
        return None

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

        argv = ffmpeg_argv.frames_argv(
            str(self.source),
            plan.select_expr(group, self.offset),
            str(self.work / f"{prefix}%06d.{ext}"),
            self.output,
            seek=group.seek,  # -ss counts from the container start, -copyts or not
            max_frames=group.frames or None,  # scene mode: a cap, if any
            keyframes_only=plan.strategy is Strategy.KEYFRAMES,
            threads=plan.threads,
            stop_at=self._stop_at(plan, group),
            count_decoded=scene,
            hdr=self.info.hdr,
            matrix=self.info.assumed_matrix,
            squared=self.info.squared,
            interlaced=self.info.interlaced,
            measure=str(self.work / f"{prefix}%06d.pgm") if self.measure else None,
        )
        argv = await ffmpeg_argv.spill_long_graph(argv, self.work / f"{prefix}graph.txt")
        state = _Run(self.work, plan, group, prefix, ext, self.offset, seen,
                     on_progress if scene else None, self.measure)  # fmt: skip
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
        on_measured: Callable[[Window, float, Metrics], None],
        on_progress: ProgressCallback | None = None,
        planned: int = 0,
    ) -> None:
        """Measure every frame in ``windows``: ``on_measured(window, time, metrics)`` hears
        each, in time order within a process (the processes run at once). Nothing of a
        frame is kept here, so a scan of hours of video holds only what the caller keeps."""
        slots = asyncio.Semaphore(max(1, parallel))
        runs = scans(windows, index, max(1, parallel))
        decoded = [0] * len(runs)
        last_report = 0.0
        number_of_pass = self.passes
        self.passes += 1

        async def report() -> None:
            nonlocal last_report
            if on_progress is not None and time.monotonic() - last_report >= _SCAN_EVERY:
                last_report = time.monotonic()
                await on_progress(min(1.0, sum(decoded) / max(1, planned)))

        def hand_on(scan: Scan, measured: list[tuple[float, Metrics]]) -> None:
            for timestamp, metrics in measured:
                window = scan.window_of(timestamp)
                if window is not None:
                    on_measured(window, timestamp, metrics)

        async def one(number: int, scan: Scan) -> None:
            async with slots:
                state = _Scanning(self.offset)
                argv = ffmpeg_argv.scan_argv(
                    str(self.source), scan.select_expr(self.offset), seek=scan.seek,
                    stop_at=None if scan.stop_at is None else scan.stop_at + self.offset,
                    threads=1 if parallel > 1 else None, hdr=self.info.hdr,
                    tonemap=self.output.tonemap, matrix=self.info.assumed_matrix,
                    squared=self.info.squared, interlaced=self.info.interlaced,
                )  # fmt: skip
                argv = await ffmpeg_argv.spill_long_graph(
                    argv, self.work / f"s{number_of_pass}_{number:04d}_graph.txt"
                )
                runner = asyncio.create_task(ffmpeg.run(
                    argv, on_line=state.on_line, on_picture=state.on_picture,
                    picture_size=SIDE * SIDE,
                ))  # fmt: skip
                try:
                    while not runner.done():
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(_SCAN_EVERY):
                                await asyncio.wait([runner])
                        hand_on(scan, await state.measure_ready())
                        decoded[number] = state.measured
                        await report()
                    done = runner.result()
                    hand_on(scan, await state.measure_ready())
                finally:
                    runner.cancel()
                    await asyncio.gather(runner, return_exceptions=True)
            self._check(done, state, False, "")

        async with asyncio.TaskGroup() as tasks:
            for number, scan in enumerate(runs):
                tasks.create_task(one(number, scan))


def _scrub(detail: str, private: list[str]) -> str:
    """FFmpeg's error text, cut short, with server paths taken out."""
    for path in private:
        detail = detail.replace(f"file:{path}", "video").replace(path, "video")
    return detail[:300] or "unknown error"
