"""How often frames are taken: one ``Sampling`` per row of the table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sampling:
    """One row of the table: every ``interval`` seconds, or ``count`` frames in all."""

    label: str
    interval: float | None = None
    count: int | None = None

    def seconds_between(self, duration: float) -> float:
        return self.interval if self.interval is not None else duration / (self.count or 1)


SAMPLINGS = (
    Sampling("I=0.5", interval=0.5),
    Sampling("I=1", interval=1.0),
    Sampling("I=5", interval=5.0),
    Sampling("I=30", interval=30.0),
    Sampling("count=10", count=10),
)
