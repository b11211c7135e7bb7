"""Frame quality (issue 16): what the per-frame metrics cost a dense job, and what
``reject`` costs on a clean video.

Runs in this process with vfe's own engine, the one every job and ``vfe extract`` use:
``vfe.extractor.Extractor`` into a ``FolderFrames`` folder, on the 1080p30 H.264 GOP-250
60 s video of the memory section (``LENGTH_PAIR[0]``). The video is probed and the plan
made before the clock starts: only ``Extractor.run`` is timed, so the fixed costs every
job pays alike (start-up, probing, planning) do not dilute the ratios. (This is the vfe
this interpreter imports, not ``--vfe``.)

(1) Metrics: a dense job, fps 10 (600 of the video's 1800 frames), measured
(``Extractor(frames)``, what every job does: FFmpeg writes each frame's 256x256 grey
twin, numpy measures it) against not (``Extractor(frames, measure=False)``: no grey twin,
no metrics; a baseline that exists only for this benchmark). Goal: wall time with / without
at most ``METRICS_GOAL``. The same for every frame of the first ``EVERY_SECONDS`` (fps 30,
300 frames: the densest job there is), held to the same goal.
(2) ``reject`` on a clean video: a sparser job, interval 1 (60 frames), both
measured, with ``reject`` black, blurry and flat at the default thresholds against no
``reject``. Goal: at most ``REJECT_GOAL``. The video must be clean for that to mean what
it says: every reject run must refuse and substitute nothing (both counted and shown), and
the metrics of every frame measured in the section are checked against the same tests.

Each round runs every pair once, the two runs one after the other, in turn in both orders
(odd rounds baseline first, even rounds the other first), so machine load and drift weigh
on both alike; an untimed warm-up job goes first (numpy's import, the probe cache, the
page cache). Wall time is ``perf_counter`` around ``Extractor.run``; CPU time is split
into this process's (vfe's Python: the event loop, numpy's metrics, file handling) and
its reaped children's (FFmpeg), from ``getrusage``. The ratios are of the medians; the
median of the rounds' own ratios (each round's pair ran back to back) is shown too.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import statistics
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .rounds import warm_page_cache
from .runner import BenchError
from .scale import fmt
from .videos import LENGTH_PAIR, Video, cached_video, probe

if TYPE_CHECKING:
    from vfe.models import Frame
    from vfe.planner import Plan, Sampling
    from vfe.probe import FrameIndex, VideoInfo
    from vfe.quality import Choice, Metrics

SPEC = LENGTH_PAIR[0]  # 1080p30 H.264 GOP 250, 60 s
METRICS_GOAL = 1.10  # "metrics add at most 10% to a dense job's time"
REJECT_GOAL = 1.05  # "reject on a clean video costs at most 5% more than without it"
EVERY_SECONDS = 10.0  # the every-frame job's window: [0, EVERY_SECONDS)


@dataclass
class Timed:
    """One measured ``Extractor.run``."""

    round: int
    wall_s: float = 0.0
    vfe_cpu_s: float = 0.0  # this process: vfe's Python (loop, metrics, files)
    ffmpeg_cpu_s: float = 0.0  # its reaped children: FFmpeg
    written: int = 0
    rejected: int = 0  # targets left without a frame
    substituted: int = 0  # frames written in place of a refused one
    error: str | None = None

    @property
    def cpu_s(self) -> float:
        return self.vfe_cpu_s + self.ffmpeg_cpu_s


@dataclass
class Side:
    """Every round of one way of running a job."""

    label: str
    measure: bool
    reject: bool
    runs: list[Timed] = field(default_factory=list)

    def good(self) -> list[Timed]:
        return [run for run in self.runs if run.error is None]

    def median(self, key: str) -> float | None:
        good = self.good()
        return statistics.median(getattr(run, key) for run in good) if good else None

    def error(self) -> str | None:
        if self.good():
            return None
        return next((run.error for run in self.runs if run.error), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "measure": self.measure,
            "reject": self.reject,
            "median": {
                key: self.median(key)
                for key in ("wall_s", "cpu_s", "vfe_cpu_s", "ffmpeg_cpu_s", "written")
            },
            "error": self.error(),
            "runs": [asdict(run) | {"cpu_s": run.cpu_s} for run in self.runs],
        }


@dataclass
class Pair:
    """A job run two ways: the baseline, and the way whose cost is measured."""

    key: str
    label: str  # in the lines of each run
    what: str  # the table's first column
    job: str  # the sampling, in words
    goal: float
    base: Side
    test: Side

    def ratio(self, key: str = "wall_s") -> float | None:
        base, test = self.base.median(key), self.test.median(key)
        return None if base is None or test is None or base <= 0 else test / base

    def round_ratios(self) -> list[float]:
        """Each round's wall time ratio, test over base (rounds where both ran)."""
        base = {run.round: run.wall_s for run in self.base.good()}
        return [
            run.wall_s / base[run.round] for run in self.test.good() if base.get(run.round, 0) > 0
        ]

    def paired(self) -> float | None:
        ratios = self.round_ratios()
        return statistics.median(ratios) if ratios else None

    def met(self) -> bool | None:
        ratio = self.ratio()
        return None if ratio is None else ratio <= self.goal

    def added_ms(self, key: str) -> float | None:
        """What the tested way adds to CPU time ``key``, in ms per frame written (medians)."""
        base, test, frames = (
            self.base.median(key),
            self.test.median(key),
            self.test.median("written"),
        )
        return None if base is None or test is None or not frames else 1000 * (test - base) / frames

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "goal_ratio": self.goal,
            "baseline": self.base.to_json(),
            "with": self.test.to_json(),
            "ratio_wall": self.ratio(),
            "ratio_cpu": self.ratio("cpu_s"),
            "ratio_vfe_cpu": self.ratio("vfe_cpu_s"),
            "ratio_ffmpeg_cpu": self.ratio("ffmpeg_cpu_s"),
            "round_ratios_wall": self.round_ratios(),
            "median_round_ratio_wall": self.paired(),
            "added_ms_per_frame": {
                "vfe_cpu": self.added_ms("vfe_cpu_s"),
                "ffmpeg_cpu": self.added_ms("ffmpeg_cpu_s"),
            },
            "met": self.met(),
        }


@dataclass
class Clean:
    """The metrics of every frame measured in the section, against ``reject``'s tests."""

    frames: int = 0
    refused: int = 0  # frames that ``reject`` black, blurry or flat would refuse
    min_sharpness: float | None = None
    min_contrast: float | None = None
    max_black: float | None = None

    def add(self, metrics: Metrics, choice: Choice) -> None:
        self.frames += 1
        self.refused += bool(choice.defects(metrics))
        if self.min_sharpness is None or metrics.sharpness < self.min_sharpness:
            self.min_sharpness = metrics.sharpness
        if self.min_contrast is None or metrics.contrast < self.min_contrast:
            self.min_contrast = metrics.contrast
        if self.max_black is None or metrics.black > self.max_black:
            self.max_black = metrics.black


@dataclass
class QualityBench:
    """The section's results."""

    video: Video
    rounds: int = 0
    pairs: list[Pair] = field(default_factory=list)
    clean: Clean = field(default_factory=Clean)
    thresholds: dict[str, float] = field(default_factory=dict)

    def reject_pair(self) -> Pair:
        return next(pair for pair in self.pairs if pair.key == "reject")

    def clean_video(self) -> bool | None:
        """Whether nothing was refused or substituted anywhere (None: nothing measured)."""
        runs = self.reject_pair().test.good()
        if not runs or not self.clean.frames:
            return None
        return not self.clean.refused and not any(r.rejected or r.substituted for r in runs)


def cpu_seconds() -> tuple[float, float]:
    """User+sys seconds of this process (every thread) and of its reaped children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def samplings() -> tuple[Sampling, Sampling, Sampling]:
    """The jobs of the pairs, in order: fps 10; every frame of the first ``EVERY_SECONDS``;
    interval 1 (vfe's ``Sampling``, imported on use)."""
    from vfe.models import Mode
    from vfe.planner import Sampling

    return (
        Sampling(mode=Mode.FPS, fps=10.0),
        Sampling(mode=Mode.FPS, fps=30.0, end=EVERY_SECONDS),
        Sampling(mode=Mode.INTERVAL, interval=1.0),
    )


def make_pairs() -> list[Pair]:
    every = f"every frame of 0-{EVERY_SECONDS:g} s (fps 30)"
    return [
        Pair("metrics_dense", "fps=10", "(1) metrics", "fps 10", METRICS_GOAL,
             Side("without metrics", measure=False, reject=False),
             Side("with metrics", measure=True, reject=False)),
        Pair("metrics_every", "every", "(1) metrics, densest", every, METRICS_GOAL,
             Side("without metrics", measure=False, reject=False),
             Side("with metrics", measure=True, reject=False)),
        Pair("reject", "I=1", "(2) reject black, blurry, flat", "interval 1", REJECT_GOAL,
             Side("metrics, no reject", measure=True, reject=False),
             Side("metrics + reject", measure=True, reject=True)),
    ]  # fmt: skip


class Engine:
    """vfe's extractor on one video, probed once."""

    def __init__(self, video: Path, out: Path) -> None:
        from vfe.quality import Choice, Defect

        self.video = video
        self.out = out
        self.reject = Choice(reject=frozenset({Defect.BLACK, Defect.BLURRY, Defect.FLAT}))
        self.plain = Choice()
        self.info: VideoInfo | None = None
        self.index: FrameIndex | None = None

    async def plan(self, sampling: Sampling) -> Plan:
        """``sampling``'s plan (``BenchError`` when vfe cannot probe or plan the video)."""
        from vfe.errors import VfeError
        from vfe.planner import plan as make_plan
        from vfe.probe import inspect

        try:
            if self.info is None or self.index is None:
                self.info, self.index = await inspect(self.video)
            return make_plan(sampling, self.info, self.index)
        except VfeError as exc:
            raise BenchError(f"vfe cannot plan {self.video.name}: {exc}") from exc

    async def run(self, plan: Plan, side: Side, round_no: int, clean: Clean) -> Timed:
        """One timed ``Extractor.run`` into a fresh folder, removed afterwards."""
        from vfe.extractor import Extractor
        from vfe.frames import FolderFrames

        assert self.info is not None and self.index is not None
        shutil.rmtree(self.out, ignore_errors=True)
        self.out.mkdir(parents=True)
        frames = FolderFrames(self.out)
        kept: list[Frame] = []

        async def on_frames(batch: list[Frame]) -> None:
            kept.extend(batch)

        timed = Timed(round_no)
        choice = self.reject if side.reject else self.plain
        own, children = cpu_seconds()
        started = time.perf_counter()
        try:
            outcome = await Extractor(frames, measure=side.measure).run(
                str(uuid.uuid4()), self.video, self.info, plan, on_frames,
                index=self.index, choice=choice,
            )  # fmt: skip
        except Exception as exc:  # recorded in place of the run's numbers, as a failed child's
            timed.error = f"{type(exc).__name__}: {exc}"
        else:
            timed.rejected = outcome.rejected
        timed.wall_s = time.perf_counter() - started
        own_after, children_after = cpu_seconds()
        timed.vfe_cpu_s, timed.ffmpeg_cpu_s = own_after - own, children_after - children
        timed.written = len(kept)
        timed.substituted = sum(1 for frame in kept if frame.substituted)
        if timed.error is None and timed.written != plan.total - timed.rejected:
            timed.error = f"wrote {timed.written} of {plan.total} frames, {timed.rejected} rejected"
        for frame in kept:
            if frame.metrics is not None:
                clean.add(frame.metrics, self.reject)
        shutil.rmtree(self.out, ignore_errors=True)  # the frames and FolderFrames' scratch
        return timed


def show(label: str, side: Side, round_no: int, run: Timed) -> None:
    what = f"  [quality r{round_no}] {label:<11} {side.label:<18}"
    if run.error:
        print(f"{what} n/a (error: {run.error})", flush=True)
        return
    print(
        f"{what} {run.wall_s:7.2f} s wall {run.vfe_cpu_s:6.2f} s vfe cpu "
        f"{run.ffmpeg_cpu_s:7.2f} s ffmpeg cpu {run.written:5d} frames "
        f"({run.rejected} rejected, {run.substituted} substituted)",
        flush=True,
    )


async def measure_all(found: QualityBench, args: argparse.Namespace, engine: Engine) -> None:
    """The warm-up job, then every round: each pair back to back, in turn in both orders."""
    from vfe.planner import Sampling

    plans = [await engine.plan(sampling) for sampling in samplings()]
    warm = await engine.plan(Sampling(interval=30.0))
    warm_up = Side("warm-up", measure=True, reject=False)
    show("I=30", warm_up, 0, await engine.run(warm, warm_up, 0, Clean()))
    for round_no in range(1, args.rounds + 1):
        for pair, plan in zip(found.pairs, plans, strict=True):
            sides = (pair.base, pair.test) if round_no % 2 else (pair.test, pair.base)
            for side in sides:
                run = await engine.run(plan, side, round_no, found.clean)
                side.runs.append(run)
                show(pair.label, side, round_no, run)
        found.rounds = round_no


def bench_quality(args: argparse.Namespace) -> QualityBench:
    """Run the section (the video is generated into the cache when missing)."""
    from vfe.quality import DEFAULT_BLACK_THRESHOLD, DEFAULT_BLUR_THRESHOLD, DEFAULT_FLAT_THRESHOLD

    video = probe(cached_video(SPEC, args.cache))
    warm_page_cache(video.path)
    found = QualityBench(video, pairs=make_pairs())
    found.thresholds = {
        "black": DEFAULT_BLACK_THRESHOLD,
        "blur": DEFAULT_BLUR_THRESHOLD,
        "flat": DEFAULT_FLAT_THRESHOLD,
    }
    out = args.cache / "out" / "quality"
    try:
        asyncio.run(measure_all(found, args, Engine(video.path, out)))
    finally:
        shutil.rmtree(args.cache / "out", ignore_errors=True)
    return found


def quality_json(found: QualityBench) -> dict[str, Any]:
    clean = found.clean
    return {
        "video": found.video.summary(),
        "rounds": found.rounds,
        "timed": "Extractor.run only (probe and plan before the clock)",
        "pairs": {pair.key: pair.to_json() for pair in found.pairs},
        "clean": {
            "frames_measured": clean.frames,
            "would_refuse": clean.refused,
            "min_sharpness": clean.min_sharpness,
            "min_contrast": clean.min_contrast,
            "max_black": clean.max_black,
            "thresholds": found.thresholds,
            "clean": found.clean_video(),
        },
    }


def print_quality(found: QualityBench) -> None:
    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("yes" if ok else "NO")

    def cells(side: Side) -> str:
        wall, vfe, ffmpeg = (side.median(k) for k in ("wall_s", "vfe_cpu_s", "ffmpeg_cpu_s"))
        if wall is None:
            return f"n/a ({side.error() or 'no runs'})"
        return f"{fmt(wall, '.2f')} / {fmt(vfe, '.2f')} + {fmt(ffmpeg, '.2f')}"

    video = found.video
    print(
        f"\n== quality: vfe's Extractor in this process on {video.key}: {video.path.name} - "
        f"{video.width}x{video.height} {video.codec} {video.fps:g} fps {video.duration:g} s, "
        f"{len(video.frame_times)} frames; {found.rounds} round(s)"
    )
    print(
        "   Extractor.run only (probed and planned before the clock); medians; cells: wall s "
        "/ cpu s of vfe's Python + of FFmpeg; ratios: with / baseline"
    )
    print(
        "| measure | job | frames | baseline | wall / python + ffmpeg cpu | with | "
        "wall / python + ffmpeg cpu | ratio wall | ratio cpu | rounds' own ratios | goal "
        "| met |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for pair in found.pairs:
        frames = pair.test.median("written") or pair.base.median("written")
        rounds = " ".join(f"{r:.2f}" for r in pair.round_ratios()) or "n/a"
        print(
            f"| {pair.what} | {pair.job} | {fmt(frames, '.0f')} | {pair.base.label} | "
            f"{cells(pair.base)} | {pair.test.label} | {cells(pair.test)} | "
            f"{fmt(pair.ratio(), '.3f')} | {fmt(pair.ratio('cpu_s'), '.3f')} | {rounds} | "
            f"<= {pair.goal:g} | {verdict(pair.met())} |"
        )
    for pair in (pair for pair in found.pairs if pair.test.measure != pair.base.measure):
        vfe, ffmpeg = pair.added_ms("vfe_cpu_s"), pair.added_ms("ffmpeg_cpu_s")
        print(
            f"   {pair.what}, {pair.job}: {pair.test.label} adds {fmt(vfe, '+.2f')} ms of vfe's "
            f"Python and {fmt(ffmpeg, '+.2f')} ms of FFmpeg CPU a frame written (medians)"
        )
    runs = found.reject_pair().test.runs
    counts = ", ".join(
        f"r{run.round} {run.rejected}/{run.substituted}" for run in runs if run.error is None
    )
    clean, limits = found.clean, found.thresholds
    print(
        f"   reject runs, rejected/substituted: {counts or 'n/a'}; the {clean.frames} frames "
        f"measured in the section: min sharpness {fmt(clean.min_sharpness, '.1f')} (blurry "
        f"< {limits['blur']:g}), min contrast {fmt(clean.min_contrast, '.3f')} (flat < "
        f"{limits['flat']:g}), max black share {fmt(clean.max_black, '.3f')} (black >= "
        f"{limits['black']:g}); {clean.refused} would be refused"
    )
    state = found.clean_video()
    print(
        "   the video is clean (nothing refused, nothing substituted): "
        + {None: "not measured", True: "yes", False: "NO: (2) does not measure a clean video"}[
            state
        ]
    )
