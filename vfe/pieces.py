"""Cutting a plan's work into pieces: the stretches one FFmpeg process decodes.

A stretch (``Run``) goes from a keyframe to the last frame it must write. ``seek_runs``
groups nearby targets into stretches, merging one into the stretch before it when
decoding on costs less than a new process; ``split`` cuts the largest stretch at a
keyframe until there is one per CPU and none holds clearly more than its share. Costs
are counted in frames decoded, a process start priced as ``start_frames`` frames.
Positions are indexes into the frame index's times (``probe.FrameIndex``).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

BALANCE = 1.25  # a piece may hold this much more than an even share of the work


@dataclass
class Run:
    """A stretch decoded by one process: from keyframe position ``key`` to its last
    target's frame; ``frames_at[i]`` is the frame position answering ``targets[i]``."""

    key: int
    targets: list[int]
    frames_at: list[int]
    frames: int = 0  # distinct frames written

    def add(self, target: int, frame: int) -> None:
        if not self.frames_at or frame != self.frames_at[-1]:
            self.frames += 1
        self.targets.append(target)
        self.frames_at.append(frame)

    @property
    def last(self) -> int:
        return self.frames_at[-1]

    @property
    def decoded(self) -> int:
        return self.last - self.key + 1


def cost(runs: list[Run], start_frames: float) -> float:
    return sum(start_frames + r.decoded for r in runs)


def key_position(key_positions: list[int], frame: int) -> int:
    """Frame position of the latest keyframe at or before frame position ``frame``."""
    i = bisect.bisect_right(key_positions, frame)
    return key_positions[i - 1] if i else 0


def inner_keys(run: Run, key_positions: list[int]) -> list[int]:
    """Keyframe positions inside ``run`` after the one it starts from."""
    lo = bisect.bisect_right(key_positions, run.key)
    hi = bisect.bisect_right(key_positions, run.last)
    return key_positions[lo:hi]


def split(runs: list[Run], key_positions: list[int], pieces: int, start_frames: float) -> list[Run]:
    """Cut the largest of ``runs`` at a keyframe, again and again, while there are fewer
    than ``pieces`` (one per CPU) or it holds clearly more than its share of the work,
    and it can be cut.

    A cut costs a process start and saves only waiting, so each piece must decode at
    least a few process starts' worth of frames. A piece starts at the keyframe before its
    first target's frame; no frame is decoded by two pieces. The order stays by time.
    """
    result = list(runs)
    minimum = 4 * start_frames
    while True:
        largest = max(result, key=lambda r: r.decoded)
        share = sum(r.decoded for r in result) / pieces
        if len(result) >= pieces and largest.decoded <= BALANCE * share:
            break
        best: tuple[int, int] | None = None  # (larger half's decoding, where to cut)
        frames_at = largest.frames_at
        for key in inner_keys(largest, key_positions):  # priced in O(log n) each
            cut = bisect.bisect_left(frames_at, key)
            if cut == 0 or cut == len(frames_at):
                continue
            left = frames_at[cut - 1] - largest.key + 1
            right = frames_at[-1] - key_position(key_positions, frames_at[cut]) + 1
            if min(left, right) >= minimum and (best is None or max(left, right) < best[0]):
                best = (max(left, right), cut)
        if best is None:
            break
        cut = best[1]
        halves = (
            Run(largest.key, [], []),
            Run(key_position(key_positions, frames_at[cut]), [], []),
        )
        for n, (target, frame) in enumerate(zip(largest.targets, frames_at, strict=True)):
            halves[n >= cut].add(target, frame)
        at = result.index(largest)
        result[at : at + 1] = halves
    return result


def seek_runs(
    answered: list[tuple[int, int]], key_positions: list[int], start_frames: float
) -> list[Run]:
    """Group answered targets into seek runs, merging a run into the previous one when
    decoding on from it costs less than a new process."""
    runs: list[Run] = []
    for target, frame in answered:
        key = key_position(key_positions, frame)
        if runs:
            run = runs[-1]
            if key <= run.last or (frame - run.last) <= start_frames + (frame - key):
                run.add(target, frame)
                continue
        runs.append(Run(key=key, targets=[], frames_at=[]))
        runs[-1].add(target, frame)
    return runs
