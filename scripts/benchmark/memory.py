"""Memory vs length: vfe's peak memory (vfe plus its FFmpeg children, as in the main table)
on the same 1080p30 H.264 GOP-250 video at 60 s and 180 s, for a dense and a sparse
sampling. The requirement: the peak stays under ``LIMIT_MB`` and does not grow with length
(the long video's median peak at most ``GROWTH_LIMIT`` times the short one's)."""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path

from .methods import argv_for
from .rounds import Cell, count_images, show, warm_page_cache
from .runner import measure
from .sampling import Sampling
from .videos import LENGTH_PAIR, Video, cached_video, probe

LIMIT_MB = 300  # decimal megabytes, as the requirement says: 286.1 MiB
LIMIT_MIB = LIMIT_MB * 1e6 / 2**20
GROWTH_LIMIT = 1.10  # "grows" when the long video's peak is more than 10% above the short's
LENGTH_SAMPLINGS = (
    Sampling("I=1", interval=1.0),  # dense: every second, one select pass cut per CPU
    # sparse: the same six seeks on either length. (I=30 would be 2 frames on the short
    # video and 6 on the long one: the two seeking processes would rarely overlap on the
    # short one, and the peak would "grow" with the work, not with the length.)
    Sampling("count=6", count=6),
)
DENSITY = {"I=1": "dense", "count=6": "sparse"}


def median_peak(cell: Cell) -> float | None:
    median = cell.median()
    return median["peak_mib"] if median else None


@dataclass
class LengthRow:
    """One sampling on the short and the long video."""

    sampling: Sampling
    short: Cell
    long: Cell

    def peaks(self) -> tuple[float | None, float | None]:
        """Median peak MiB on the short and the long video (None when every run failed)."""
        return median_peak(self.short), median_peak(self.long)

    def worst(self) -> float | None:
        """The largest peak MiB of any good run on either video."""
        if not self.short.good() or not self.long.good():
            return None
        return max(run.peak_mib for run in (*self.short.good(), *self.long.good()))

    def ratio(self) -> float | None:
        short, long = self.peaks()
        return long / short if short and long is not None else None

    def under_limit(self) -> bool | None:
        """Whether every round on both videos stayed under ``LIMIT_MB``."""
        worst = self.worst()
        return worst < LIMIT_MIB if worst is not None else None

    def grows(self) -> bool | None:
        ratio = self.ratio()
        return ratio > GROWTH_LIMIT if ratio is not None else None


def length_videos(cache: Path) -> tuple[Video, Video]:
    """The short and the long video, generated into ``cache/videos`` when missing."""
    short, long = (probe(cached_video(spec, cache)) for spec in LENGTH_PAIR)
    return short, long


def bench_lengths(
    videos: tuple[Video, Video], args: argparse.Namespace, cache: Path
) -> list[LengthRow]:
    """Run vfe on both videos for every sampling, interleaved within each round."""
    out, log = cache / "out" / "memory", cache / "out" / "log"
    log.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        LengthRow(
            sampling,
            Cell(argv_for("vfe", videos[0], sampling, out, None, args.vfe)),
            Cell(argv_for("vfe", videos[1], sampling, out, None, args.vfe)),
        )
        for sampling in LENGTH_SAMPLINGS
    ]
    for video in videos:
        warm_page_cache(video.path)
    for round_no in range(1, args.rounds + 1):
        for row in rows:
            for video, cell in zip(videos, (row.short, row.long), strict=True):
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                run = measure(cell.argv, round_no, log, args.timeout)
                run.frames_written = count_images(out)
                cell.runs.append(run)
                show(video, round_no, "vfe", row.sampling.label, run)
    shutil.rmtree(cache / "out", ignore_errors=True)
    return rows


def requirement_met(rows: list[LengthRow]) -> bool | None:
    """Under the limit and not growing on every row; None when a row has no result."""
    verdicts = [(row.under_limit(), row.grows()) for row in rows]
    if any(under is None or grows is None for under, grows in verdicts):
        return None
    return all(under and not grows for under, grows in verdicts)
