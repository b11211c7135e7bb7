"""From a sampling rule and a probed video: the exact targets and the cheapest way to get them.

Targets are times on FFmpeg's timeline (the container start is 0). For each target ``t``
the frame written is the first frame whose presentation time is ``>= t``; when several
targets fall on one frame it is written once, under the index of the latest of them.

Which frame answers which target is known before anything is decoded: the frame index
(``probe.inspect``, packets only) lists every frame's time and the keyframes. The
plan then prices two ways in frames to decode plus process start-ups:

- ``select``: decode straight through from the keyframe before the first frame needed to
  the last, keeping the frames a ``select`` expression picks;
- runs: one stretch per run of nearby targets, each seeking to the keyframe before its
  first frame and decoding only that far; runs whose keyframes are close are merged,
  because decoding on is cheaper than starting again. The plan is ``seek`` when every run
  stays within one GOP, ``mixed`` when some decode through dense stretches while others
  seek to isolated targets (a mix by region).

Either way the stretches are then cut at keyframes until there is one per CPU, and the
pieces run as parallel FFmpeg processes with one decoding thread each: no frame is decoded
twice, and on two cores two single-threaded decoders beat FFmpeg's own frame threading by
20-35%. ``keyframes`` mode decodes keyframes only (``-skip_frame nokey``). Every expression
keys on the frame's own timestamp, so nothing drifts. ``EPSILON`` absorbs floating-point
noise (``0.3/0.1 == 2.9999999999999996``); it is far below any real frame spacing.
"""

from __future__ import annotations

import bisect
import math
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from .errors import ExtractionError
from .models import DEFAULT_MIN_GAP, DEFAULT_SCENE_THRESHOLD, Mode
from .pieces import Run, cost, inner_keys, key_position, seek_runs, split
from .probe import FrameIndex, VideoInfo

EPSILON = 1e-6
MAX_TARGETS = 1_000_000  # beyond this, planning alone would take seconds and much memory
DECODE_PIXELS_PER_SECOND = 1.0e9  # rough decode speed on the reference 2-core machine
PROCESS_START_SECONDS = 0.05  # an FFmpeg process: start, open, seek
SEEK_ADVANTAGE = 0.8  # seek must be clearly cheaper: many processes cost more than counted
FFMPEG_MEMORY_MIB = 200.0  # a job's FFmpeg processes together, so a 1080p job stays < 300 MB


def process_mib(width: int, height: int) -> float:
    """Peak memory (RSS) of one single-threaded FFmpeg decoding, measuring and encoding
    frames of this size (measured on H.264: 76 MiB at 720p, 102 MiB at 1080p)."""
    return 56.0 + 22.0 * width * height / 2**20


class Strategy(StrEnum):
    SELECT = "select"
    SEEK = "seek"
    MIXED = "mixed"
    KEYFRAMES = "keyframes"
    SCENE = "scene"
    BEST = "best"


@dataclass(frozen=True)
class Sampling:
    """A job's sampling rule: the mode, its parameter, and an optional window and cap."""

    mode: Mode = Mode.INTERVAL
    interval: float = 5.0
    fps: float | None = None
    count: int | None = None
    timestamps: tuple[float, ...] = ()
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD
    min_gap: float = DEFAULT_MIN_GAP
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
    # the time of the frame after its last (None: the video's end): where its input may
    # end, which an interlaced source needs (its deinterlacer holds a frame back until
    # the next kept one or the end, so -frames:v alone would decode on to the end)
    until: float | None = None


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
    threads: int | None = None  # decoding threads per process; None lets FFmpeg choose
    scene: tuple[float, float, float, float | None] | None = None  # threshold, gap, window
    window_end: float | None = None  # the window's end asked for, if any (timeline seconds)
    # keyframes mode on an index of decode times with B-frames: the frames kept are the
    # decoded keyframes (FFmpeg's ``key``), each answering the latest target before it
    by_key: bool = False

    def target_index(self, timestamp: float) -> int:
        """Index of the latest target at or before ``timestamp`` (a frame's own time)."""
        if self.regular is not None:
            start, step = self.regular
            k = math.floor((timestamp - start + EPSILON) / step)
            return min(max(0, k), len(self.targets) - 1)
        return max(0, bisect.bisect_right(self.targets, timestamp + EPSILON) - 1)

    def target_time(self, index: int) -> float:
        return self.targets[index]

    @property
    def end(self) -> float | None:
        """Scene mode: the window's end, where decoding stops (None: the video's end)."""
        return self.scene[3] if self.scene else None

    def select_expr(self, group: Group, offset: float = 0.0) -> str:
        """FFmpeg ``select`` expression keeping the first frame at or after each target of
        ``group``; ``offset`` is added to target times (the filter's timeline)."""
        if self.scene is not None:
            threshold, gap, start, end = self.scene
            # the window's first frame starts the first scene; then every frame that differs
            # enough from the one before it, at least ``gap`` after the last one kept
            expr = (
                f"gte(t+{EPSILON},{start + offset!r})*(isnan(prev_selected_t)+"
                f"gt(scene,{threshold!r})*gte(t-prev_selected_t+{EPSILON},{gap!r}))"
            )
            return expr if end is None else f"{expr}*lt(t+{EPSILON},{end + offset!r})"
        if self.strategy is Strategy.KEYFRAMES or self.by_key:
            first = self.targets[group.targets[0]] + offset
            # ``key`` too: some decoders (VP9) ignore -skip_frame and pass every frame on.
            return f"gte(t+{EPSILON},{first!r})*key"
        first = self.targets[group.targets[0]] + offset
        if self.regular is not None:
            start, step = self.regular
            origin = start + offset
            # A frame past the last target's bucket still answers it when no frame lies in
            # that bucket: buckets are clamped to the last target, never cut off. A group's
            # targets are consecutive, so the buckets need only its first target as a floor.
            top = len(self.targets) - 1
            bucket = f"min(floor((t-{origin!r}+{EPSILON})/{step!r}),{top})"
            last = f"min(floor((prev_selected_t-{origin!r}+{EPSILON})/{step!r}),{top})"
            return f"gte(t+{EPSILON},{first!r})*(isnan(prev_selected_t)+gt({bucket},{last}))"
        times = [self.targets[i] + offset for i in group.targets]
        # a frame without a time (t NaN) would fall through every branch: keep none
        return f"if(lt(t+{EPSILON},{first!r})+isnan(t),0,{_search(times, 0, len(times))})"

    def describe(self) -> dict[str, Any]:
        """What the plan chose, for the job record and the CLI."""
        return {
            "strategy": self.strategy.value,
            "targets": len(self.targets),
            "frames": self.total,
            "processes": len(self.groups),
            "parallel": self.parallel,
            "threads": self.threads,
            "decoded_frames": self.decoded_frames,
            "estimated_seconds": round(self.estimated_seconds, 3),
            "skipped_targets": self.skipped_targets,
        }


def _search(times: list[float], lo: int, hi: int) -> str:
    """Keep a frame when a target lies in (prev_t, t]: branch on ``t`` down to the latest
    target at or before it (``if`` evaluates one branch), so a frame costs O(log n)
    comparisons, not one per target. The caller has checked ``t >= times[lo]``."""
    if hi - lo == 1:
        return f"isnan(prev_t)+lt(prev_t+{EPSILON},{times[lo]!r})"
    mid = (lo + hi) // 2
    left, right = _search(times, lo, mid), _search(times, mid, hi)
    return f"if(lt(t+{EPSILON},{times[mid]!r}),{left},{right})"


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
    if span <= 0 or sampling.mode is Mode.SCENE:  # scene: found while decoding
        return [], None
    if sampling.mode in (Mode.INTERVAL, Mode.FPS, Mode.COUNT, Mode.BEST):
        if sampling.mode in (Mode.COUNT, Mode.BEST):
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


def plan(
    sampling: Sampling,
    info: VideoInfo,
    index: FrameIndex,
    cpus: int | None = None,
    memory_mib: float | None = None,
) -> Plan:
    """Plan a job: its targets, the frames that answer them, and the cheaper strategy.

    ``cpus`` (default: those this process may use) and ``memory_mib`` (default
    ``FFMPEG_MEMORY_MIB``) bound how many FFmpeg processes run at once."""
    targets, regular = targets_for(sampling, info, index)
    frame_seconds = max(1, info.width * info.height) / DECODE_PIXELS_PER_SECOND
    start_frames = PROCESS_START_SECONDS / frame_seconds  # a process start, in frame decodes
    answered: list[tuple[int, int]] = []  # (target position, frame position)
    for i, target in enumerate(targets):
        frame = index.first_at_or_after(target)
        if frame is not None:
            answered.append((i, frame))
    if sampling.mode is Mode.SCENE:
        return _scene_plan(sampling, info, index, frame_seconds)
    if sampling.mode is Mode.BEST:
        return _best_plan(targets, regular, info, index, frame_seconds,
                          _slots(info, cpus, memory_mib), sampling.end)  # fmt: skip
    skipped = len(targets) - len(answered)
    total = len({f for _, f in answered})
    common: dict[str, Any] = {
        "targets": tuple(targets),
        "total": total,
        "duration": info.duration,
        "regular": regular,
        "skipped_targets": skipped,
        "window_end": sampling.end,
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
            until=_until(index, answered[-1][1], by_key=False),
        )
        seconds = PROCESS_START_SECONDS + total * frame_seconds
        return Plan(strategy=Strategy.KEYFRAMES, groups=(group,), decoded_frames=total,
                    estimated_seconds=seconds, **common)  # fmt: skip

    key_positions = [index.first_at_or_after(k) or 0 for k in index.keyframes] or [0]
    slots = _slots(info, cpus, memory_mib)
    whole = Run(key=key_position(key_positions, answered[0][1]), targets=[], frames_at=[])
    for target, frame in answered:
        whole.add(target, frame)
    select_runs = split([whole], key_positions, slots, start_frames)
    select_cost = cost(select_runs, start_frames)

    runs = seek_runs(answered, key_positions, start_frames)
    strategy = Strategy.SELECT
    if len(runs) > 1:
        pieces = split(runs, key_positions, slots, start_frames)
        if cost(pieces, start_frames) < SEEK_ADVANTAGE * select_cost:
            spans_gops = any(inner_keys(r, key_positions) for r in runs)
            strategy = Strategy.MIXED if spans_gops else Strategy.SEEK
            select_runs = pieces
    by_key = sampling.mode is Mode.KEYFRAMES and index.decode_times  # (B-frames, here)
    groups = tuple(
        Group(
            seek=_seek_point(index, run.frames_at[0]),
            targets=tuple(run.targets),
            frames=run.frames,
            decoded=run.decoded,
            until=_until(index, run.frames_at[-1], by_key),
        )
        for run in select_runs
    )
    parallel = min(slots, len(groups))
    decoded = sum(r.decoded for r in select_runs)
    work = [start_frames + r.decoded for r in select_runs]
    seconds = max(sum(work) / parallel, max(work)) * frame_seconds
    return Plan(strategy=strategy, groups=groups, decoded_frames=decoded,
                estimated_seconds=seconds, parallel=parallel,
                threads=1 if parallel > 1 else None,  # the memory model is single-threaded
                by_key=by_key, **common)  # fmt: skip


def _scene_plan(
    sampling: Sampling, info: VideoInfo, index: FrameIndex, frame_seconds: float
) -> Plan:
    """Scene mode: one process decodes the whole window (each frame is scored against the
    one before it, so it cannot be cut); its frames are found, not planned."""
    start = max(0.0, sampling.start)
    end = sampling.end if sampling.end is not None and index.times else None
    first = index.first_at_or_after(start)
    stop = len(index.times) if end is None else bisect.bisect_left(index.times, end - EPSILON)
    scene = (sampling.scene_threshold, sampling.min_gap, start, end)
    common: dict[str, Any] = {"targets": (), "total": 0, "duration": info.duration,
                              "strategy": Strategy.SCENE, "scene": scene,
                              "window_end": sampling.end}  # fmt: skip
    if first is None or first >= stop:
        return Plan(groups=(), decoded_frames=0, estimated_seconds=0.0, **common)
    key = index.first_at_or_after(index.keyframe_at_or_before(index.times[first])) or 0
    decoded = stop - key
    group = Group(_seek_point(index, first), (), sampling.max_frames or 0, decoded)
    seconds = PROCESS_START_SECONDS + decoded * frame_seconds
    return Plan(groups=(group,), decoded_frames=decoded, estimated_seconds=seconds, **common)


def _slots(info: VideoInfo, cpus: int | None, memory_mib: float | None) -> int:
    """How many FFmpeg processes may run at once: one per CPU (``cpus``, default those
    this process may use), no more than the memory budget holds (``memory_mib``,
    default ``FFMPEG_MEMORY_MIB``)."""
    cpus = max(1, cpus or available_cpus())
    budget = FFMPEG_MEMORY_MIB if memory_mib is None else memory_mib
    return max(1, min(cpus, int(budget // process_mib(info.width, info.height))))


def _best_plan(
    targets: list[float],
    regular: tuple[float, float] | None,
    info: VideoInfo,
    index: FrameIndex,
    frame_seconds: float,
    parallel: int,
    window_end: float | None,
) -> Plan:
    """best mode: every frame of the window is scanned (grey pictures, no encoding), then
    the best of each stretch is extracted; ``targets`` are the stretches' starts."""
    common: dict[str, Any] = {"targets": tuple(targets), "duration": info.duration,
                              "strategy": Strategy.BEST, "regular": regular,
                              "window_end": window_end}  # fmt: skip
    if not targets or regular is None:
        return Plan(groups=(), total=0, decoded_frames=0, estimated_seconds=0.0, **common)
    start, step = regular
    end = start + step * len(targets)
    lo = bisect.bisect_left(index.times, start - EPSILON)
    hi = bisect.bisect_left(index.times, end - EPSILON)
    stretches = {min(len(targets) - 1, int((t - start + EPSILON) // step))
                 for t in index.times[lo:hi]}  # fmt: skip
    decoded = hi - lo
    seconds = (decoded / parallel + 2 * len(stretches)) * frame_seconds
    return Plan(groups=(), total=len(stretches), decoded_frames=decoded,
                estimated_seconds=seconds, parallel=parallel, **common)  # fmt: skip


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may use: those it may run on, bounded by a container's CPU
    quota (cgroup v2 ``cpu.max``, e.g. ``docker --cpus 2`` or a Kubernetes limit)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = cgroup.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota: the affinity count stands
    return cpus


def _until(index: FrameIndex, frame: int, by_key: bool) -> float | None:
    """``Group.until`` for a group whose last frame is at position ``frame``: the next
    frame's time; with ``by_key`` (keyframes listed at decode times, shown a little
    later) the next keyframe's. None when there is none."""
    if by_key:
        i = bisect.bisect_right(index.keyframes, index.times[frame] + EPSILON)
        return index.keyframes[i] if i < len(index.keyframes) else None
    return index.times[frame + 1] if frame + 1 < len(index.times) else None


def _seek_point(index: FrameIndex, frame: int) -> float | None:
    """Where to seek to decode frame position ``frame``: its keyframe, or None for 0."""
    key = index.keyframe_at_or_before(index.times[frame])
    return key if key > (index.times[0] if index.times else 0.0) else None


def nothing_planned(
    sampling: Sampling, info: VideoInfo, plan: Plan | None
) -> tuple[str, str] | None:
    """Why a job of ``sampling`` on this video would make no frame, as the field to blame
    and a message (the server's 422, ``vfe extract``'s refusal); None when it makes some.
    ``plan`` is None in scene mode, whose frames are found while decoding."""
    if sampling.start >= info.duration:
        past = f"start ({sampling.start:g} s) is at or past the end of the video"
        return "start", f"{past} ({info.duration:.3f} s)"
    if plan is None or plan.total:
        return None
    windowed = sampling.start > 0 or sampling.end is not None
    field = "start" if windowed else NAMED_BY.get(sampling.mode, sampling.mode.value)
    return field, (f"no frame of the video falls on what this asks for (the video lasts "
                   f"{info.duration:.3f} s): check the times, start and end")  # fmt: skip


NAMED_BY = {Mode.BEST: "count", Mode.KEYFRAMES: "mode"}  # the field a mode's frames are asked by


def sampling_from(options: dict[str, Any], interval: float) -> Sampling:
    """The ``Sampling`` of a stored job (its options, as ``JobSpec`` validated them)."""
    return Sampling(
        mode=Mode(options.get("mode") or Mode.INTERVAL),
        interval=float(options.get("interval") or interval),
        fps=options.get("fps"),
        count=options.get("count"),
        timestamps=tuple(options.get("timestamps") or ()),
        scene_threshold=float(options.get("scene_threshold") or DEFAULT_SCENE_THRESHOLD),
        min_gap=float(DEFAULT_MIN_GAP if options.get("min_gap") is None else options["min_gap"]),
        start=float(options.get("start") or 0.0),
        end=options.get("end"),
        max_frames=options.get("max_frames"),
    )
