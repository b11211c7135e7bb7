"""Which measured frames a job keeps: rejects and their substitutes, near-duplicates, and
the stretches of ``best`` mode. Pure bookkeeping; the extractor runs FFmpeg for it.

A frame that ``reject`` refuses leaves its target waiting; when the process that wrote
it ends, the extractor looks for a substitute in the stretch after it
(``search_windows``) and settles the target with the substitute or with nothing.
Dedupe compares each frame with the last one kept *in time order*: the plan's processes
run at once, so with dedupe a frame is decided only when every frame before it is (those
of the processes before its own, and any waiting target), and until then its file waits
in the run's work folder.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .probe import FrameIndex
from .quality import Choice, Metrics

EPSILON = 1e-6


@dataclass(frozen=True)
class Candidate:
    """A frame FFmpeg wrote and vfe measured, not yet kept."""

    index: int  # the job's target it answers (best mode: its stretch)
    timestamp: float
    target_time: float
    file: Path
    metrics: Metrics | None  # None: not measured (a benchmark's baseline)
    substituted: bool = False
    stretch: int | None = None
    score: float | None = None


Keep = Callable[[list[Candidate]], Awaitable[None]]


@dataclass
class _Entry:
    candidate: Candidate | None
    waiting: bool = False  # rejected: its substitute is not known yet


def discard(candidates: Sequence[Candidate]) -> None:
    """Remove the files of frames not kept."""
    for candidate in candidates:
        with contextlib.suppress(OSError):
            os.unlink(candidate.file)


class Keeper:
    """Decides, in time order where it matters, which candidates are kept; ``keep`` stores
    and reports them. ``rejected`` counts targets left without a frame, ``dropped`` the
    near-duplicates."""

    def __init__(self, choice: Choice, groups: int, keep: Keep) -> None:
        self.choice = choice
        self.keep = keep
        self.rejected = 0
        self.dropped = 0
        self.waiting: dict[int, Candidate] = {}  # target -> its refused frame
        self._entries: list[list[_Entry]] = [[] for _ in range(max(1, groups))]
        self._done = [False] * max(1, groups)
        self._at = (0, 0)  # the first undecided entry: (group, position)
        self._by_target: dict[int, _Entry] = {}
        self._last: Metrics | None = None  # the last frame kept, in time order
        self._group_of: dict[int, int] = {}  # waiting target -> the process it came from

    def waiting_in(self, group: int) -> list[int]:
        """The waiting targets whose refused frames process ``group`` wrote."""
        return [t for t in self.waiting if self._group_of.get(t) == group]

    async def offer(
        self, group: int, candidates: Sequence[Candidate], checked: bool = False
    ) -> None:
        """Frames of one process, in time order; ``checked``: chosen by a scan that
        applied ``reject`` already (they are kept as they are)."""
        now: list[Candidate] = []
        refused: list[Candidate] = []
        for candidate in candidates:
            entry = _Entry(candidate)
            metrics = candidate.metrics
            if not checked and metrics is not None and not self.choice.passes(metrics):
                self.waiting[candidate.index] = candidate
                self._group_of[candidate.index] = group
                refused.append(candidate)
                entry = _Entry(None, waiting=True)
                self._by_target[candidate.index] = entry
            if self.choice.dedupe:
                self._entries[group].append(entry)
            elif entry.candidate is not None:
                now.append(entry.candidate)
        if refused:
            await asyncio.to_thread(discard, refused)
        if self.choice.dedupe:
            now = self._advance()
        if now:
            await self.keep(now)

    async def group_done(self, group: int) -> None:
        """Every frame of process ``group`` was offered."""
        self._done[group] = True
        if self.choice.dedupe and (now := self._advance()):
            await self.keep(now)

    async def settle(self, target: int, substitute: Candidate | None) -> None:
        """A waiting target gets its substitute, or nothing (counted in ``rejected``)."""
        self.waiting.pop(target, None)
        if substitute is None:
            self.rejected += 1
        entry = self._by_target.pop(target, None)
        if not self.choice.dedupe or entry is None:
            if substitute is not None:
                await self.keep([substitute])
            return
        entry.candidate, entry.waiting = substitute, False
        if now := self._advance():
            await self.keep(now)

    def _advance(self) -> list[Candidate]:
        """Decide the entries from the first undecided one on, in time order, up to one
        not known yet; the near-duplicates among them are dropped."""
        kept: list[Candidate] = []
        dropped: list[Candidate] = []
        group, position = self._at
        while group < len(self._entries):
            entries = self._entries[group]
            if position >= len(entries):
                if not self._done[group]:
                    break
                entries.clear()  # decided: free them
                group, position = group + 1, 0
                continue
            entry = entries[position]
            if entry.waiting:
                break
            candidate = entry.candidate
            if candidate is not None:
                if candidate.metrics is not None and self.choice.repeats(
                    candidate.metrics, self._last
                ):
                    dropped.append(candidate)
                else:
                    kept.append(candidate)
                    self._last = candidate.metrics
            position += 1
        self._at = (group, position)
        self.dropped += len(dropped)
        discard(dropped)  # a few files at a time: not worth a thread
        return kept


@dataclass(frozen=True)
class Window:
    """Frames to scan: those whose times lie in [``first``, ``last``] (from the index)."""

    first: float
    last: float
    owner: int  # the target it searches for (best mode: the stretch)


def search_windows(
    waiting: dict[int, Candidate],
    next_target: Callable[[int], float | None],
    index: FrameIndex,
    search: float,
) -> tuple[list[Window], list[int]]:
    """For each waiting target, the frames after its refused one, up to ``search`` s after
    the target and before the next target; and the targets with no such frame."""
    windows: list[Window] = []
    empty: list[int] = []
    for target, refused in sorted(waiting.items()):
        limit = refused.target_time + search + EPSILON
        following = next_target(target)
        lo = bisect.bisect_right(index.times, refused.timestamp + EPSILON)
        hi = bisect.bisect_right(index.times, limit)
        if following is not None:
            hi = min(hi, bisect.bisect_left(index.times, following - EPSILON))
        if lo >= hi:
            empty.append(target)
        else:
            windows.append(Window(index.times[lo], index.times[hi - 1], target))
    return windows, empty


def stretch_windows(
    start: float, end: float, count: int, index: FrameIndex
) -> tuple[list[Window], list[float]]:
    """best mode: ``count`` equal stretches of [``start``, ``end``), each as the window of
    its frames (a stretch without a frame has none), and each stretch's start."""
    step = (end - start) / count
    starts = [start + k * step for k in range(count)]
    windows = []
    for k, lo_time in enumerate(starts):
        hi_time = start + (k + 1) * step if k + 1 < count else end
        lo = bisect.bisect_left(index.times, lo_time - EPSILON)
        hi = bisect.bisect_left(index.times, hi_time - EPSILON)
        if lo < hi:
            windows.append(Window(index.times[lo], index.times[hi - 1], k))
    return windows, starts


@dataclass(frozen=True)
class Scan:
    """One FFmpeg process of a scan: where it seeks, the windows it decodes (in time
    order), how many frames it decodes, where it stops (None: at the video's end), and
    the stretches of frames it keeps: windows with no frame between them are joined, so
    best mode's thousands of adjacent stretches make one term of the expression."""

    seek: float | None
    windows: tuple[Window, ...]
    decoded: int
    stop_at: float | None = None
    ranges: tuple[tuple[float, float], ...] = ()

    def select_expr(self, offset: float) -> str:
        spans = self.ranges or tuple((w.first, w.last) for w in self.windows)
        terms = "+".join(
            f"between(t,{first + offset - EPSILON!r},{last + offset + EPSILON!r})"
            for first, last in spans
        )
        return f"gt({terms},0)"

    @functools.cached_property
    def _firsts(self) -> list[float]:
        return [w.first for w in self.windows]

    def window_of(self, timestamp: float) -> Window | None:
        """The window a scanned frame lies in, by its time as FFmpeg printed it."""
        at = bisect.bisect_right(self._firsts, timestamp + 1e-4) - 1
        if at >= 0 and timestamp <= self.windows[at].last + 1e-4:
            return self.windows[at]
        return None


def scans(windows: Sequence[Window], index: FrameIndex, pieces: int) -> list[Scan]:
    """The windows as processes: one stretch of decoding per run of windows that follow
    each other with no frame between them or whose keyframes overlap (decoding on beats
    seeking again), up to a share of the work each; a window longer than a share is cut
    at keyframes into ``pieces``. Windows stay in time order."""
    if not windows:
        return []
    total = sum(_frames(w, index) for w in windows)
    share = max(1, total // max(1, pieces))
    cut: list[Window] = []
    for window in sorted(windows, key=lambda w: w.first):
        cut.extend(_cut(window, index, share))
    result: list[list[Window]] = [[cut[0]]]
    size = _frames(cut[0], index)
    for window in cut[1:]:
        previous = result[-1][-1]
        key = index.keyframe_at_or_before(window.first)
        frames = _frames(window, index)
        adjacent = bisect.bisect_right(index.times, previous.last + EPSILON) == (
            bisect.bisect_left(index.times, window.first - EPSILON)
        )
        skips = key > previous.last + EPSILON and not adjacent  # frames a seek would skip
        if window.owner == previous.owner or skips or size + frames > share:
            result.append([window])
            size = frames
        else:
            result[-1].append(window)
            size += frames
    return [_scan(group, index) for group in result]


def _frames(window: Window, index: FrameIndex) -> int:
    lo = bisect.bisect_left(index.times, window.first - EPSILON)
    hi = bisect.bisect_right(index.times, window.last + EPSILON)
    return hi - lo


def _cut(window: Window, index: FrameIndex, share: int) -> list[Window]:
    """``window`` cut at keyframes into pieces of about ``share`` frames."""
    if _frames(window, index) <= share:
        return [window]
    lo = bisect.bisect_left(index.times, window.first - EPSILON)
    hi = bisect.bisect_right(index.times, window.last + EPSILON)
    pieces: list[Window] = []
    start = lo
    keys = [k for k in index.keyframes if window.first + EPSILON < k <= window.last + EPSILON]
    for key in keys:
        at = bisect.bisect_left(index.times, key - EPSILON)
        if at - start >= share and hi - at >= share // 2:
            pieces.append(replace(window, first=index.times[start], last=index.times[at - 1]))
            start = at
    pieces.append(replace(window, first=index.times[start], last=index.times[hi - 1]))
    return pieces


def _scan(windows: list[Window], index: FrameIndex) -> Scan:
    key = index.keyframe_at_or_before(windows[0].first)
    lo = bisect.bisect_left(index.times, key - EPSILON)
    hi = bisect.bisect_right(index.times, windows[-1].last + EPSILON)
    first = index.times[0] if index.times else 0.0
    # Halfway to the frame after the last one wanted: FFmpeg's trim rounds its end to the
    # stream's time base (1/12800 s for 25 fps H.264), so an end a hair past the last
    # frame's time rounds onto it and that frame is dropped.
    stop = (index.times[hi - 1] + index.times[hi]) / 2 if hi < len(index.times) else None
    ranges: list[tuple[float, float]] = []
    for window in windows:
        if ranges and bisect.bisect_right(index.times, ranges[-1][1] + EPSILON) == (
            bisect.bisect_left(index.times, window.first - EPSILON)
        ):  # no frame between the last range and this window: one range
            ranges[-1] = (ranges[-1][0], window.last)
        else:
            ranges.append((window.first, window.last))
    return Scan(seek=key if key > first else None, windows=tuple(windows), decoded=hi - lo,
                stop_at=stop, ranges=tuple(ranges))  # fmt: skip
