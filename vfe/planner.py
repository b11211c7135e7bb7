"""From a sampling rule and a probed video: the exact targets and the cheapest way to get them.

Targets are times on FFmpeg's timeline (the container start is 0). For each target ``t``
the frame written is the first frame whose presentation time is ``>= t``; when several
targets fall on one frame it is written once, under the index of the latest of them.

Which frame answers which target is known before anything is decoded: the frame index
(``probe.inspect``, packets only) lists every frame's time and the keyframes. The
plan then prices two strategies in frames to decode plus process start-ups:

- ``select``: one FFmpeg process seeks to the keyframe before the first frame needed and
  decodes straight through to the last, keeping the frames a ``select`` expression picks;
- ``seek``: one process per run of nearby targets, each seeking to the keyframe before its
  first frame and decoding only that far; runs whose keyframes are close are merged,
  because decoding on is cheaper than starting again. Processes run in parallel.

``keyframes`` mode decodes keyframes only (``-skip_frame nokey``). Every expression keys on
the frame's own timestamp, so nothing drifts. ``EPSILON`` absorbs floating-point noise
(``0.3/0.1 == 2.9999999999999996``); it is far below any real frame spacing.
"""

from __future__ import annotations

import bisect
import math
import os
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .errors import ExtractionError
from .models import Mode
from .probe import FrameIndex, VideoInfo

EPSILON = 1e-6
MAX_TARGETS = 1_000_000  # beyond this, planning alone would take seconds and much memory
DECODE_PIXELS_PER_SECOND = 1.0e9  # rough decode speed on the reference 2-core machine
PROCESS_START_SECONDS = 0.05  # an FFmpeg process: start, open, seek
SEEK_ADVANTAGE = 0.8  # seek must be clearly cheaper: many processes cost more than counted


class Strategy(StrEnum):
    SELECT = "select"
    SEEK = "seek"
    KEYFRAMES = "keyframes"


@dataclass(frozen=True)
class Sampling:
    """A job's sampling rule: the mode, its parameter, and an optional window and cap."""

    mode: Mode = Mode.INTERVAL
    interval: float = 5.0
    fps: float | None = None
    count: int | None = None
    timestamps: tuple[float, ...] = ()
    start: float = 0.0
    end: float | None = None
    max_frames: int | None = None


@dataclass(frozen=True)
class Group:
    """The work of one FFmpeg process: where it seeks and which targets it answers."""

    seek: float | None  # keyframe time to seek to; None decodes from the start
    targets: tuple[int, ...]  # positions in Plan.targets
    frames: int  # distinct frames it writes (it stops after them)
    decoded: int  # frames it decodes


@dataclass(frozen=True)
class Plan:
    """How one job will be extracted."""

    targets: tuple[float, ...]
    strategy: Strategy
    groups: tuple[Group, ...]
    total: int  # distinct frames that will be written
    decoded_frames: int
    estimated_seconds: float
    duration: float
    regular: tuple[float, float] | None = None  # (start, step): targets are start + k*step
    parallel: int = 1
    skipped_targets: int = 0  # targets after the last frame: no frame answers them

    def target_index(self, timestamp: float) -> int:
        """Index of the latest target at or before ``timestamp`` (a frame's own time)."""
        if self.regular is not None:
            start, step = self.regular
            k = math.floor((timestamp - start + EPSILON) / step)
            return min(max(0, k), len(self.targets) - 1)
        return max(0, bisect.bisect_right(self.targets, timestamp + EPSILON) - 1)

    def target_time(self, index: int) -> float:
        return self.targets[index]

    def select_expr(self, group: Group, offset: float = 0.0) -> str:
        """FFmpeg ``select`` expression keeping the first frame at or after each target of
        ``group``; ``offset`` is added to target times (the filter's timeline)."""
        if self.strategy is Strategy.KEYFRAMES:
            first = self.targets[group.targets[0]] + offset
            # ``key`` too: some decoders (VP9) ignore -skip_frame and pass every frame on.
            return f"gte(t+{EPSILON},{first!r})*key"
        if self.regular is not None and self.strategy is Strategy.SELECT:
            start, step = self.regular
            origin = start + offset
            # A frame past the last target's bucket still answers it when no frame lies in
            # that bucket: buckets are clamped to the last target, never cut off.
            top = len(self.targets) - 1
            bucket = f"min(floor((t-{origin!r}+{EPSILON})/{step!r}),{top})"
            last = f"min(floor((prev_selected_t-{origin!r}+{EPSILON})/{step!r}),{top})"
            return f"gte(t+{EPSILON},{origin!r})*(isnan(prev_selected_t)+gt({bucket},{last}))"
        terms = [
            f"gte(t+{EPSILON},{self.targets[i] + offset!r})"
            f"*(isnan(prev_t)+lt(prev_t+{EPSILON},{self.targets[i] + offset!r}))"
            for i in group.targets
        ]
        return f"gt({_balanced_sum(terms)},0)"

    def describe(self) -> dict[str, Any]:
        """What the plan chose, for the job record and the CLI."""
        return {
            "strategy": self.strategy.value,
            "targets": len(self.targets),
            "frames": self.total,
            "processes": len(self.groups),
            "parallel": self.parallel,
            "decoded_frames": self.decoded_frames,
            "estimated_seconds": round(self.estimated_seconds, 3),
            "skipped_targets": self.skipped_targets,
        }


def _balanced_sum(terms: list[str]) -> str:
    """``(a+b)+(c+d)``: FFmpeg's expression parser fails on a flat sum of ~100 terms."""
    while len(terms) > 1:
        paired = [f"({a}+{b})" for a, b in zip(terms[0::2], terms[1::2], strict=False)]
        terms = paired + ([terms[-1]] if len(terms) % 2 else [])
    return terms[0]


def count_targets(interval: float, duration: float) -> int:
    """How many ``k >= 0`` have ``k*interval < duration``."""
    if duration <= 0:
        return 0
    return max(1, math.ceil(duration / interval - EPSILON))


def targets_for(
    sampling: Sampling, info: VideoInfo, index: FrameIndex
) -> tuple[list[float], tuple[float, float] | None]:
    """The sorted target times of ``sampling`` on this video, and (start, step) if regular."""
    start = max(0.0, sampling.start)
    duration = info.duration
    if not info.own_duration and index.end is not None:
        duration = index.end  # the container's duration may be the audio's
    end = duration if sampling.end is None else min(sampling.end, duration)
    span = end - start
    targets: list[float]
    regular: tuple[float, float] | None = None
    if span <= 0:
        return [], None
    if sampling.mode in (Mode.INTERVAL, Mode.FPS, Mode.COUNT):
        if sampling.mode is Mode.COUNT:
            n = max(1, sampling.count or 1)
            step = span / n
        else:
            step = 1.0 / sampling.fps if sampling.mode is Mode.FPS and sampling.fps else 0.0
            step = step or sampling.interval
            n = count_targets(step, span)
        if sampling.max_frames is not None:
            n = min(n, sampling.max_frames)
        if n > MAX_TARGETS:
            raise ExtractionError(
                f"that asks for {n} frame times (at most {MAX_TARGETS}); "
                "use a larger interval, a smaller fps or count, or max_frames"
            )
        targets = [round(start + k * step, 9) for k in range(n)]
        regular = (start, step)
    elif sampling.mode is Mode.TIMESTAMPS:
        targets = sorted({t for t in sampling.timestamps if start <= t < end})
    else:
        targets = [t for t in index.keyframes if start - EPSILON <= t < end]
    if sampling.max_frames is not None:
        targets = targets[: sampling.max_frames]
    return targets, regular


def plan(sampling: Sampling, info: VideoInfo, index: FrameIndex, cpus: int | None = None) -> Plan:
    """Plan a job: its targets, the frames that answer them, and the cheaper strategy."""
    targets, regular = targets_for(sampling, info, index)
    frame_seconds = max(1, info.width * info.height) / DECODE_PIXELS_PER_SECOND
    start_frames = PROCESS_START_SECONDS / frame_seconds  # a process start, in frame decodes
    answered: list[tuple[int, int]] = []  # (target position, frame position)
    for i, target in enumerate(targets):
        frame = index.first_at_or_after(target)
        if frame is not None:
            answered.append((i, frame))
    skipped = len(targets) - len(answered)
    total = len({f for _, f in answered})
    common: dict[str, Any] = {
        "targets": tuple(targets),
        "total": total,
        "duration": info.duration,
        "regular": regular,
        "skipped_targets": skipped,
    }
    if not answered:
        return Plan(strategy=Strategy.SELECT, groups=(), decoded_frames=0,
                    estimated_seconds=0.0, **common)  # fmt: skip
    if sampling.mode is Mode.KEYFRAMES and not info.has_b_frames:
        # -skip_frame nokey is safe only when frames decode in presentation order: with
        # B-frames (open GOPs) keyframes come out of order and the encoder refuses them,
        # so then the keyframes are planned like any other targets.
        group = Group(
            seek=_seek_point(index, answered[0][1]),
            targets=tuple(i for i, _ in answered),
            frames=total,
            decoded=total,
        )
        seconds = PROCESS_START_SECONDS + total * frame_seconds
        return Plan(strategy=Strategy.KEYFRAMES, groups=(group,), decoded_frames=total,
                    estimated_seconds=seconds, **common)  # fmt: skip

    key_positions = [index.first_at_or_after(k) or 0 for k in index.keyframes] or [0]
    first_key = _key_position(key_positions, answered[0][1])
    select_decoded = answered[-1][1] - first_key + 1
    select_group = Group(
        seek=_seek_point(index, answered[0][1]),
        targets=tuple(i for i, _ in answered),
        frames=total,
        decoded=select_decoded,
    )
    select_cost = start_frames + select_decoded

    runs = _seek_runs(answered, key_positions, start_frames)
    seek_decoded = sum(r.decoded for r in runs)
    parallel = max(1, min(cpus or os.cpu_count() or 1, len(runs)))
    seek_cost = len(runs) * start_frames + seek_decoded
    if len(runs) > 1 and seek_cost < SEEK_ADVANTAGE * select_cost:
        groups = tuple(
            Group(index.times[r.key], tuple(r.targets), r.frames, r.decoded) for r in runs
        )
        seconds = seek_cost * frame_seconds / parallel
        return Plan(strategy=Strategy.SEEK, groups=groups, decoded_frames=seek_decoded,
                    estimated_seconds=seconds, parallel=parallel, **common)  # fmt: skip
    return Plan(strategy=Strategy.SELECT, groups=(select_group,), decoded_frames=select_decoded,
                estimated_seconds=select_cost * frame_seconds, **common)  # fmt: skip


@dataclass
class _Run:
    key: int  # frame position of the keyframe it seeks to
    targets: list[int]
    last: int  # frame position of its last frame
    frames: int

    @property
    def decoded(self) -> int:
        return self.last - self.key + 1


def _key_position(key_positions: list[int], frame: int) -> int:
    """Frame position of the latest keyframe at or before frame position ``frame``."""
    i = bisect.bisect_right(key_positions, frame)
    return key_positions[i - 1] if i else 0


def _seek_point(index: FrameIndex, frame: int) -> float | None:
    """Where to seek to decode frame position ``frame``: its keyframe, or None for 0."""
    key = index.keyframe_at_or_before(index.times[frame])
    return key if key > (index.times[0] if index.times else 0.0) else None


def _seek_runs(
    answered: list[tuple[int, int]], key_positions: list[int], start_frames: float
) -> list[_Run]:
    """Group answered targets into seek runs, merging a run into the previous one when
    decoding on from it costs less than a new process."""
    runs: list[_Run] = []
    for target, frame in answered:
        key = _key_position(key_positions, frame)
        if runs:
            run = runs[-1]
            if frame == run.last:  # the same frame answers this target too
                run.targets.append(target)
                continue
            if key <= run.last or (frame - run.last) <= start_frames + (frame - key):
                run.targets.append(target)
                run.last = frame
                run.frames += 1
                continue
        runs.append(_Run(key=key, targets=[target], last=frame, frames=1))
    return runs


def sampling_from(options: dict[str, Any], interval: float) -> Sampling:
    """The ``Sampling`` of a stored job (its options, as ``JobSpec`` validated them)."""
    return Sampling(
        mode=Mode(options.get("mode") or Mode.INTERVAL),
        interval=float(options.get("interval") or interval),
        fps=options.get("fps"),
        count=options.get("count"),
        timestamps=tuple(options.get("timestamps") or ()),
        start=float(options.get("start") or 0.0),
        end=options.get("end"),
        max_frames=options.get("max_frames"),
    )
