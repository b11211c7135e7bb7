"""From a job spec and a probe: the exact target times and how to extract them.

For interval ``I`` the targets are ``k*I`` for every ``k`` with ``k*I < duration``. The
frame written for target ``t`` is the first frame whose presentation time is ``>= t``.
In one decode pass that is FFmpeg's ``select`` filter keeping a frame when it falls in a
later interval bucket ``floor(t/I)`` than the last frame kept: exact, and it never drifts,
because the bucket is computed from the frame's own timestamp, not from a frame count.

``EPSILON`` absorbs floating-point noise (``0.3/0.1 == 2.9999999999999996``); it is far
below any real frame spacing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .probe import VideoInfo

EPSILON = 1e-6


@dataclass(frozen=True)
class Plan:
    """How one job will be extracted."""

    interval: float
    duration: float
    total: int
    strategy: str = "select"

    @property
    def select_expr(self) -> str:
        i = repr(self.interval)
        bucket = f"floor((t+{EPSILON})/{i})"
        last = f"floor((prev_selected_t+{EPSILON})/{i})"
        return f"gte(t+{EPSILON},0)*(isnan(prev_selected_t)+gt({bucket},{last}))"

    def target_index(self, timestamp: float) -> int:
        """Index ``k`` of the latest target at or before ``timestamp``."""
        return max(0, math.floor((timestamp + EPSILON) / self.interval))

    def target_time(self, index: int) -> float:
        return round(index * self.interval, 6)

    def targets(self) -> list[float]:
        return [self.target_time(k) for k in range(self.total)]


def count_targets(interval: float, duration: float) -> int:
    """How many ``k >= 0`` have ``k*interval < duration``."""
    if duration <= 0:
        return 0
    return max(1, math.ceil(duration / interval - EPSILON))


def plan(interval: float, info: VideoInfo) -> Plan:
    """Plan an interval job on a probed video."""
    return Plan(
        interval=interval, duration=info.duration, total=count_targets(interval, info.duration)
    )
