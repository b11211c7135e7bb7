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
import os
import re
import time
from collections.abc import Awaitable, Callable
from fractions import Fraction
from pathlib import Path

from . import ffmpeg
from .errors import ExtractionError
from .frames import FrameSink, frame_name
from .models import Frame, Output
from .planner import Group, Plan, Strategy
from .probe import VideoInfo

FramesCallback = Callable[[list[Frame]], Awaitable[None]]
ProgressCallback = Callable[[float], Awaitable[None]]  # share of the planned decoding done

_SHOWINFO = re.compile(r"\bn:\s*(\d+)\s+pts:\s*(-?\d+)\s+pts_time:(\S+)")
_TIME_BASE = re.compile(r"config in time_base:\s*(\d+)/(\d+)")
_SCAN_EVERY = 0.5  # seconds between scans for finished files when FFmpeg is quiet


class _Run:
    """One FFmpeg run: what it is for, the timestamps seen, the files finished."""

    def __init__(
        self,
        frames: FrameSink,
        job_id: str,
        work: Path,
        plan: Plan,
        group: Group,
        prefix: str,
        ext: str,
        offset: float,
        on_frames: FramesCallback,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.frames = frames
        self.job_id = job_id
        self.work = work
        self.plan = plan
        self.group = group
        self.prefix = prefix
        self.ext = ext
        self.offset = offset  # filter timeline minus FFmpeg's usual one (the container start)
        self.on_frames = on_frames
        self.on_decoded = on_progress
        self.scene = plan.scene is not None  # frames numbered as found, each its own target
        self.decoded = 0  # frames decoded so far, when FFmpeg counts them (scene mode)
        self.reported = 0
        self.time_base: Fraction | None = None
        self.times: list[float] = []
        self.finished = 0
        self.errors: list[str] = []
        self.wakeup = asyncio.Event()
        self.ffmpeg_done = False

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
        """Finalize every complete file whose timestamp is known, in order."""
        names = set(await asyncio.to_thread(os.listdir, self.work))
        ready: list[tuple[int, float, str, Path]] = []  # index, time, frame name, file
        for seq in range(self.finished, len(self.times)):
            produced = f"{self.prefix}{seq:06d}.{self.ext}"
            if produced not in names:
                break
            timestamp = max(0.0, round(self.times[seq], 6)) + 0.0  # never "-0.000"
            index = seq if self.scene else self.plan.target_index(timestamp)
            ready.append((index, timestamp, frame_name(index, timestamp, self.ext),
                          self.work / produced))  # fmt: skip
        if not ready:
            return
        kept = await self.frames.finalize(self.job_id, [(file, name) for *_, name, file in ready])
        batch = [
            Frame(
                job_id=self.job_id,
                index=index,
                timestamp=timestamp,
                target_time=timestamp if self.scene else self.plan.target_time(index),
                filename=name,
                size_bytes=k.size,
                checksum=k.checksum,
                width=k.dimensions[0] if k.dimensions else None,
                height=k.dimensions[1] if k.dimensions else None,
                created_at=time.time(),
            )
            for (index, timestamp, name, _), k in zip(ready, kept, strict=True)
        ]
        self.finished += len(batch)
        await self.on_frames(batch)


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
    ) -> int:
        """Extract every frame of ``plan``; return how many were written.

        ``run`` names this run's own work folder (its attempt number), so a run that
        outlives its lease never shares partial files with the one that replaced it.

        ``on_progress`` hears the share of the planned decoding done, for plans whose
        frames are not known ahead (scene mode); other plans count their frames.

        Each group of the plan is one FFmpeg process; up to ``plan.parallel`` run at once.
        If one fails, or the caller is cancelled, every process is stopped and reaped and
        the work folder removed; frames already reported stay, each a complete file.
        """
        output = output or Output()
        work = await self.frames.prepare(job_id, run)
        slots = asyncio.Semaphore(plan.parallel)
        written = 0

        async def one(number: int, group: Group) -> None:
            nonlocal written
            async with slots:
                count = await self._run_group(
                    job_id, source, info, plan, group, f"g{number:04d}_", work, output, on_frames,
                    on_progress,
                )  # fmt: skip
            written += count  # after the await: groups finish concurrently

        try:
            async with asyncio.TaskGroup() as tasks:
                for number, group in enumerate(plan.groups):
                    tasks.create_task(one(number, group))
        except BaseExceptionGroup as group_error:
            raise group_error.exceptions[0] from None
        finally:
            await self.frames.discard_work(job_id, run)
        return written

    async def _run_group(
        self,
        job_id: str,
        source: Path,
        info: VideoInfo,
        plan: Plan,
        group: Group,
        prefix: str,
        work: Path,
        output: Output,
        on_frames: FramesCallback,
        on_progress: ProgressCallback | None,
    ) -> int:
        """Run one FFmpeg process of the plan, finalizing its frames as they complete."""
        offset = info.container_start  # -copyts: the filters see the file's own times
        scene = plan.scene is not None
        argv = ffmpeg.frames_argv(
            str(source),
            plan.select_expr(group, offset),
            str(work / f"{prefix}%06d.{output.format.value}"),
            output,
            seek=group.seek,  # -ss counts from the container start, -copyts or not
            max_frames=group.frames or None,  # scene mode: a cap, if any
            keyframes_only=plan.strategy is Strategy.KEYFRAMES,
            threads=plan.threads,
            stop_at=None if plan.end is None else plan.end + offset,
            count_decoded=scene,
            hdr=info.hdr,
        )
        argv = await ffmpeg.spill_long_graph(argv, work / f"{prefix}graph.txt")
        state = _Run(
            self.frames, job_id, work, plan, group, prefix, output.format.value, offset, on_frames,
            on_progress if scene else None,
        )  # fmt: skip
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
        private = [str(source), str(work)]
        if done.returncode != 0:
            detail = _scrub(state.errors[-1] if state.errors else done.error_text(), private)
            raise ExtractionError(f"FFmpeg could not decode the video: {detail}")
        if state.errors and state.finished < group.frames and not scene:
            raise ExtractionError(
                f"the video ends early or is damaged: got {state.finished} of {group.frames} "
                f"frames ({_scrub(state.errors[-1], private)})"
            )
        return state.finished


def _scrub(detail: str, private: list[str]) -> str:
    """FFmpeg's error text, cut short, with server paths taken out."""
    for path in private:
        detail = detail.replace(f"file:{path}", "video").replace(path, "video")
    return detail[:300] or "unknown error"
