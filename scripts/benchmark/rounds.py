"""The rounds over one video: every method on every sampling, interleaved within each
round, one child at a time; ``Cell`` holds one method's runs on one row."""

from __future__ import annotations

import argparse
import shutil
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .exactness import check_exact, check_pixels
from .methods import METHODS, Method, argv_for
from .runner import BenchError, Run, measure
from .sampling import SAMPLINGS
from .videos import Video

SKIPPED = "skipped (--skip)"


@dataclass
class Cell:
    """All rounds of one method on one row (or, for decode, on one video)."""

    argv: list[str]
    runs: list[Run] = field(default_factory=list)
    skipped_because: str | None = None

    def good(self) -> list[Run]:
        return [run for run in self.runs if run.error is None]

    def median(self) -> dict[str, float] | None:
        good = self.good()
        if not good:
            return None
        return {
            "wall_s": statistics.median(run.wall_s for run in good),
            "cpu_s": statistics.median(run.cpu_s for run in good),
            "peak_mib": statistics.median(run.peak_mib for run in good),
        }

    def error(self) -> str | None:
        if self.skipped_because:
            return self.skipped_because
        if self.good():
            return None
        return next((run.error for run in self.runs if run.error), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "argv": self.argv,
            "median": self.median(),
            "error": self.error(),
            "runs": [asdict(run) for run in self.runs],
        }


def count_images(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.suffix in {".jpg", ".png", ".webp"})


def bench_video(
    video: Video, args: argparse.Namespace, cache: Path, opencv: Path | None, opencv_error: str
) -> tuple[dict[str, dict[Method, Cell]], Cell]:
    """Run every round of every method on ``video``; print one line per run."""
    out, work, log = cache / "out" / "frames", cache / "out" / "reference", cache / "out" / "log"
    methods: list[Method] = [m for m in METHODS if m != "decode" and m not in args.skip]
    log.parent.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[Method, Cell]] = {}
    for sampling in SAMPLINGS:
        rows[sampling.label] = {}
        for method in methods:
            argv = argv_for(method, video, sampling, out, opencv or Path("python"), args.vfe)
            rows[sampling.label][method] = Cell(argv)
            if method == "opencv" and opencv is None:
                rows[sampling.label][method].skipped_because = opencv_error
    decode = Cell(argv_for("decode", video, SAMPLINGS[0], out, None))
    if "decode" in args.skip:
        decode.skipped_because = SKIPPED
    warm_page_cache(video.path)
    for round_no in range(1, args.rounds + 1):
        if decode.skipped_because is None:
            decode.runs.append(measure(decode.argv, round_no, log, args.timeout))
            show(video, round_no, "decode", "(all)", decode.runs[-1])
        for sampling in SAMPLINGS:
            for method, cell in rows[sampling.label].items():
                if cell.skipped_because:
                    continue
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                run = measure(cell.argv, round_no, log, args.timeout)
                run.frames_written = count_images(out)
                if method == "vfe" and run.error is None and "exact" not in args.skip:
                    run.exact = check_exact(video, sampling, out)
                    if round_no == 1 and "pixels" not in args.skip:
                        try:
                            run.exact["pixels"] = check_pixels(video, out, work)
                        except BenchError as exc:
                            run.exact["pixels"] = {"error": str(exc)}
                cell.runs.append(run)
                show(video, round_no, method, sampling.label, run)
    shutil.rmtree(cache / "out", ignore_errors=True)
    return rows, decode


def warm_page_cache(path: Path) -> None:
    """Read the file once so no method pays for the first read from disk."""
    with path.open("rb") as fh:
        while fh.read(8 * 1024 * 1024):
            pass


def show(video: Video, round_no: int, method: str, label: str, run: Run) -> None:
    what = f"  [{video.key} r{round_no}] {label:<8} {method:<6}"
    if run.error:
        print(f"{what} n/a (error: {run.error})", flush=True)
    else:
        print(
            f"{what} {run.wall_s:7.2f} s wall {run.cpu_s:7.2f} s cpu "
            f"{run.peak_mib:6.0f} MiB {run.frames_written:5d} frames",
            flush=True,
        )
