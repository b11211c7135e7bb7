"""The results: one table per video on stdout, and every round's numbers as JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any

from .exactness import expected_targets
from .memory import (
    DENSITY,
    GROWTH_LIMIT,
    LIMIT_MB,
    LIMIT_MIB,
    LengthRow,
    median_peak,
    requirement_met,
)
from .methods import LETTER, METHODS, Method
from .probing import (
    ANSWER_GOAL_S,
    LIVE_GOAL_S,
    PEAK_LIMIT_MB,
    PEAK_LIMIT_MIB,
    RETURN_LIMIT_MB,
    RETURN_LIMIT_MIB,
    UPLOADS,
    Probing,
)
from .rounds import SKIPPED, Cell
from .runner import HAVE_PSUTIL, last_line, run_text
from .sampling import SAMPLINGS, Sampling
from .startup import EXTRACT_GOAL, IMPORT_BASELINE_S, IMPORT_GOAL, SAMPLING, Startup
from .videos import X264_PRESET, Video


def ratio(a: dict[str, float] | None, b: dict[str, float] | None, key: str) -> float | None:
    if a is None or b is None or b[key] <= 0:
        return None
    return a[key] / b[key]


def exact_text(cell: Cell | None) -> tuple[str, dict[str, Any] | None]:
    """The worst round's exactness as ``N/M`` (plus the pixel sample), and its record."""
    checked = [run.exact for run in cell.good() if run.exact] if cell else []
    if not checked:
        return "n/a", None
    worst = min(checked, key=lambda e: e["exact"] - max(e["expected"], e["written"]))
    if worst["verified"] == 0 and worst["written"]:
        text = f"?/{worst['expected']} (no target_time)"
    else:
        text = f"{worst['exact']}/{max(worst['expected'], worst['written'])}"
    pixels = checked[0].get("pixels")
    if pixels and "error" in pixels:
        text += " px error"
    elif pixels:
        text += f" px {pixels['matched']}/{pixels['sampled']}"
        if pixels["tied"]:
            text += f" ({pixels['tied']} tied)"  # neighbouring frames look the same
    return text, worst


def print_table(video: Video, rows: dict[str, dict[Method, Cell]], decode: Cell) -> None:
    notes: list[str] = []

    def block(cell: Cell | None) -> str:
        if cell is None or cell.skipped_because == SKIPPED:
            return f"{'-':^20}"
        median, error = cell.median(), cell.error()
        if median is None:
            note = error or "no runs"
            if note not in notes:
                notes.append(note)
            return f"{f'n/a (error: [{notes.index(note) + 1}])':^20}"
        return f"{median['wall_s']:6.2f} {median['cpu_s']:6.2f} {median['peak_mib']:6.0f}"

    def pair(a: dict[str, float] | None, b: dict[str, float] | None) -> str:
        wall, cpu = ratio(a, b, "wall_s"), ratio(a, b, "cpu_s")
        return f"{wall:.2f}/{cpu:.2f}" if wall is not None and cpu is not None else "n/a"

    print()
    print(
        f"== {video.key}: {video.path.name} - {video.width}x{video.height} {video.codec} "
        f"{video.fps:g} fps {video.duration:g} s, {len(video.frame_times)} frames, "
        f"{video.gop_text()}"
    )
    print(f"   {video.origin}")
    heads = " | ".join(f"{f'{m} ({LETTER[m]})':^20}" for m in METHODS)
    print(f"{'sampling':<9} {'targets':>7} | {heads} | {'a/b':>9} {'a/c':>9} {'a/d':>9} | exact")
    units = " | ".join(f"{'wall s  cpu s    MiB':^20}" for _ in METHODS)
    print(f"{'':<9} {'':>7} | {units} | {'wall/cpu':>9} {'wall/cpu':>9} {'wall/cpu':>9} |")
    for sampling in SAMPLINGS:
        cells = rows[sampling.label]
        targets = expected_targets(video, sampling)
        count = len(targets) if targets is not None else sampling.count
        a = cells["vfe"].median() if "vfe" in cells else None
        b = cells["ffmpeg"].median() if "ffmpeg" in cells else None
        c = cells["opencv"].median() if "opencv" in cells else None
        blocks = " | ".join(block(decode if m == "decode" else cells.get(m)) for m in METHODS)
        ratios = f"{pair(a, b):>9} {pair(a, c):>9} {pair(a, decode.median()):>9}"
        exact = exact_text(cells.get("vfe"))[0]
        print(f"{sampling.label:<9} {count:>7} | {blocks} | {ratios} | {exact}")
    for n, note in enumerate(notes, 1):
        print(f"   [{n}] {note}")


def row_json(
    video: Video, sampling: Sampling, cells: dict[Method, Cell], decode: Cell
) -> dict[str, Any]:
    a = cells["vfe"].median() if "vfe" in cells else None
    others: dict[str, dict[str, float] | None] = {
        "a/b": cells["ffmpeg"].median() if "ffmpeg" in cells else None,
        "a/c": cells["opencv"].median() if "opencv" in cells else None,
        "a/d": decode.median(),
    }
    targets = expected_targets(video, sampling)
    return {
        "sampling": sampling.label,
        "interval": sampling.interval,
        "count": sampling.count,
        "expected_frames": len(targets) if targets is not None else sampling.count,
        "methods": {method: cell.to_json() for method, cell in cells.items()},
        "ratios": {
            name: {"wall": ratio(a, other, "wall_s"), "cpu": ratio(a, other, "cpu_s")}
            for name, other in others.items()
        },
        "exact": exact_text(cells.get("vfe"))[1],
    }


def yes_no(flag: bool | None) -> str:
    return "n/a" if flag is None else "yes" if flag else "no"


def seconds(video: Video) -> str:
    return f"{video.duration:.0f} s"


def print_lengths(videos: tuple[Video, Video], rows: list[LengthRow], rounds: int) -> None:
    """The memory-vs-length table: one row per sampling, the verdicts at the end."""
    short, long = videos
    notes: list[str] = []

    def peak(cell: Cell) -> str:
        median = median_peak(cell)
        if median is None:
            note = cell.error() or "no runs"
            if note not in notes:
                notes.append(note)
            return f"{f'n/a [{notes.index(note) + 1}]':>11}"
        worst = max(run.peak_mib for run in cell.good())
        return f"{median:4.0f} ({worst:4.0f})"

    print()
    print(
        f"== memory vs length: vfe extract on {short.key} ({seconds(short)}) and {long.key} "
        f"({seconds(long)}) - {long.width}x{long.height} {long.codec} {long.fps:g} fps, "
        f"{long.gop_text()}"
    )
    print(
        f"   peak MiB of vfe and its FFmpeg children (summed RSS), median (max) of {rounds} "
        f"round(s); limit {LIMIT_MB} MB = {LIMIT_MIB:.1f} MiB, judged on the max"
    )
    lengths = f"{seconds(long)}/{seconds(short)}"
    print(
        f"{'sampling':<14} {'targets':>8} | {seconds(short) + ' MiB':>11} "
        f"{seconds(long) + ' MiB':>11} {lengths.replace(' ', ''):>9} | "
        f"{f'< {LIMIT_MB} MB':<9} grows"
    )
    for row in rows:
        label = f"{row.sampling.label} ({DENSITY.get(row.sampling.label, '?')})"
        targets = "/".join(str(len(expected_targets(v, row.sampling) or [])) for v in videos)
        ratio = row.ratio()
        print(
            f"{label:<14} {targets:>8} | {peak(row.short)} {peak(row.long)} "
            f"{f'{ratio:.2f}' if ratio is not None else 'n/a':>9} | "
            f"{yes_no(row.under_limit()):<9} {yes_no(row.grows())}"
        )
    for n, note in enumerate(notes, 1):
        print(f"   [{n}] {note}")
    met = requirement_met(rows)
    verdict = "not measured" if met is None else "met" if met else "NOT met"
    print(
        f"   requirement (peak under {LIMIT_MB} MB, not growing > {GROWTH_LIMIT - 1:.0%} "
        f"with length): {verdict}"
    )


def lengths_json(videos: tuple[Video, Video], rows: list[LengthRow]) -> dict[str, Any]:
    return {
        "limit_mb": LIMIT_MB,
        "limit_mib": LIMIT_MIB,
        "growth_limit": GROWTH_LIMIT,
        "videos": [video.summary() for video in videos],
        "rows": [
            {
                "sampling": row.sampling.label,
                "interval": row.sampling.interval,
                "expected_frames": [len(expected_targets(v, row.sampling) or []) for v in videos],
                "short": row.short.to_json(),
                "long": row.long.to_json(),
                "peak_mib": dict(zip(("short", "long"), row.peaks(), strict=True)),
                "worst_peak_mib": row.worst(),
                "ratio_long_short": row.ratio(),
                "under_limit": row.under_limit(),
                "grows": row.grows(),
            }
            for row in rows
        ],
        "requirement_met": requirement_met(rows),
    }


def print_startup(result: Startup) -> None:
    """The start-up table: ``import vfe.cli`` against the issue's time, and ``vfe extract``
    on the short clip against the one-liner, each with its goal."""
    video, cost = result.video, result.import_cost()
    bare = result.bare.median()

    def cells(median: dict[str, float] | None) -> str:
        if median is None:
            return f"{'n/a':^20}"
        return f"{median['wall_s']:6.2f} {median['cpu_s']:6.2f} {median['peak_mib']:6.0f}"

    def number(value: float | None, width: int = 4) -> str:
        return f"{value:.2f}" if value is not None else f"{'n/a':>{width}}"

    runs = len(result.vfe.runs)
    print()
    print(
        f"== start-up: import vfe.cli, and vfe extract on {video.key}: {video.path.name} - "
        f"{video.width}x{video.height} {video.codec} {video.fps:g} fps {video.duration:g} s"
    )
    print(
        f"   medians of {runs} runs; {result.python}; python -c pass takes "
        f"{number(bare['wall_s'] if bare else None)} s wall"
    )
    print(
        f"{'measure':<20} | {'vfe (a)':^20} | {'baseline':^20} | {'a/base':>9} | "
        f"{'goal':<7} | {'met':<3} | exact"
    )
    units = f"{'wall s  cpu s    MiB':^20}"
    print(f"{'':<20} | {units} | {units} | {'wall/cpu':>9} | {'':<7} | {'':<3} |")
    imported = result.imported.median()
    if cost is None or imported is None:
        mine = cells(None)
    else:
        mine = f"{cost['wall_s']:6.3f} {cost['cpu_s']:6.3f} {imported['peak_mib']:6.0f}"
    print(
        f"{'import vfe.cli':<20} | {mine} | {IMPORT_BASELINE_S:6.2f} {'(issue 11)':>13} | "
        f"{number(result.import_ratio()) + '/n/a':>9} | {f'<= {IMPORT_GOAL:g}':<7} | "
        f"{yes_no(result.import_met()):<3} |"
    )
    ratios = result.extract_ratios()
    print(
        f"{f'extract {SAMPLING.label} --quiet':<20} | {cells(result.vfe.median())} | "
        f"{cells(result.ffmpeg.median())} | "
        f"{number(ratios['wall']) + '/' + number(ratios['cpu']):>9} | "
        f"{f'<= {EXTRACT_GOAL:g}':<7} | {yes_no(result.extract_met()):<3} | "
        f"{exact_text(result.vfe)[0]}"
    )
    print(
        "   import: wall and CPU s over `python -c pass` (MiB: the whole process); "
        f"-X importtime says {number(result.importtime_s(), 0)} s; "
        "extract: baseline is the FFmpeg one-liner (b)"
    )
    floor = result.cpu_floor()
    if floor is not None:
        print(
            f"   CPU floor: vfe used {floor['cpu_s']:.2f} s of CPU on "
            f"{result.cores} core(s), so no overlap of its parts brings its wall time under "
            f"{floor['wall_s']:.2f} s, {floor['ratio']:.2f}x the one-liner's"
        )
    first = result.probe_first.median()
    if first is not None:
        print(
            f"   probe-first floor: python -c pass, vfe's ffprobe, then the one-liner, one "
            f"after another: {first['wall_s']:.2f} s wall, "
            f"{number(result.probe_first_ratio())}x the one-liner's (vfe reads the frame "
            "index before FFmpeg starts)"
        )
    runs_of = {
        "pass": result.bare,
        "import": result.imported,
        "vfe": result.vfe,
        "ffmpeg": result.ffmpeg,
        "probe-first": result.probe_first,
    }
    for name, cell in runs_of.items():
        if cell.median() is None:
            print(f"   {name}: n/a (error: {cell.error() or 'no runs'})")


def startup_json(result: Startup) -> dict[str, Any]:
    return {
        "video": result.video.summary(),
        "python": result.python,
        "runs": len(result.vfe.runs),
        "import": {
            "pass": result.bare.to_json(),
            "import": result.imported.to_json(),
            "seconds": result.import_cost(),
            "importtime_s": result.importtime_s(),
            "importtime_runs_s": result.importtime,
            "baseline_s": IMPORT_BASELINE_S,
            "ratio": result.import_ratio(),
            "goal_ratio": IMPORT_GOAL,
            "met": result.import_met(),
        },
        "extract": {
            "sampling": SAMPLING.label,
            "vfe": result.vfe.to_json(),
            "ffmpeg": result.ffmpeg.to_json(),
            "ratios": result.extract_ratios(),
            "goal_ratio": EXTRACT_GOAL,
            "met": result.extract_met(),
            "exact": exact_text(result.vfe)[1],
            "cores": result.cores,
            "cpu_floor": result.cpu_floor(),
            "probe_first": result.probe_first.to_json(),
            "probe_first_ratio": result.probe_first_ratio(),
        },
    }


def print_probing(rows: list[Probing], rounds: int) -> None:
    """The bounded-probing table: one row per file, the worst round against each goal."""

    def value(number: float | None, spec: str) -> str:
        return "n/a" if number is None else format(number, spec)

    print()
    print(
        f"== bounded probing: {UPLOADS} uploads at once to a fresh vfe serve, "
        f"{rounds} round(s); worst round shown, answers of every round counted"
    )
    for row in rows:
        stated = row.header_frames
        print(
            f"   {row.video.path.name}: {row.size_mb:.1f} MB, its header states "
            f"{f'{stated} frames' if stated is not None else 'no frame count'}"
        )
    print(
        f"   MiB: summed RSS of the server and its children, sampled every 50 ms; "
        f"{PEAK_LIMIT_MB} MB = {PEAK_LIMIT_MIB:.1f} MiB, {RETURN_LIMIT_MB} MB = "
        f"{RETURN_LIMIT_MIB:.1f} MiB"
    )
    print(
        f"{'file':<12} {'answers':<9} | {'slowest s':>9} met | {'peak MiB':>8} met | "
        f"{'live s':>6} met | {'after-before MiB':>16} met"
    )
    print(
        f"{'goal':<12} {'':<9} | {f'<= {ANSWER_GOAL_S:g}':>9}     | "
        f"{f'< {PEAK_LIMIT_MIB:.1f}':>8}     | {f'<= {LIVE_GOAL_S:g}':>6}     | "
        f"{f'<= {RETURN_LIMIT_MIB:.1f}':>16}"
    )
    for row in rows:
        met = row.met()
        print(
            f"{row.video.path.name:<12} {row.answers_text():<9} | "
            f"{value(row.slowest_s(), '.2f'):>9} {yes_no(met['answer']):<3} | "
            f"{value(row.peak_mib(), '.0f'):>8} {yes_no(met['peak']):<3} | "
            f"{value(row.live_worst_s(), '.3f'):>6} {yes_no(met['live']):<3} | "
            f"{value(row.growth_mib(), '+.0f'):>16} {yes_no(met['return']):<3}"
        )
    for row in rows:
        name = row.video.path.name
        if row.error:
            print(f"   {name}: {row.error}")
        details = sorted({a.detail for a in row.answers()})
        for detail in details:
            print(f"   {name} answered: {detail}")
        for trial in row.trials:
            failed = f", {trial.live_failures} failed" if trial.live_failures else ""
            stop = trial.server_stop
            exited = f"; vfe serve stopped: {stop}" if stop != "clean" else ""
            print(
                f"   {name} round {trial.round}: {trial.before_mib:.0f} MiB before, peak "
                f"{trial.peak_mib:.0f} with at most {trial.most_children} child process(es), "
                f"{trial.after_mib:.0f} after (settled in {trial.settle_s:.1f} s); "
                f"{trial.live_polls} /health/live polls{failed}{exited}"
            )
    for row in rows:
        verdict = {None: "not measured", True: "met", False: "NOT met"}[row.all_met()]
        print(f"   goals on {row.video.path.name}: {verdict}")


def probing_json(rows: list[Probing]) -> dict[str, Any]:
    return {
        "uploads_at_once": UPLOADS,
        "goals": {
            "answer_s": ANSWER_GOAL_S,
            "peak_mb": PEAK_LIMIT_MB,
            "peak_mib": PEAK_LIMIT_MIB,
            "live_s": LIVE_GOAL_S,
            "return_mb": RETURN_LIMIT_MB,
            "return_mib": RETURN_LIMIT_MIB,
        },
        "rows": [row.to_json() for row in rows],
    }


def environment(args: argparse.Namespace, opencv: Path | None) -> dict[str, Any]:
    ffmpeg_version = last_line(run_text(["ffmpeg", "-version"]).splitlines()[0])
    cv = None
    if opencv is not None:
        cv = run_text([str(opencv), "-c", "import cv2; print(cv2.__version__)"]).strip()
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "ffmpeg": ffmpeg_version,
        "opencv": cv,
        "psutil": HAVE_PSUTIL,
        "x264_preset": X264_PRESET,
        "rounds": args.rounds,
        "quick": args.quick,
        "skip": sorted(args.skip),
        "only_memory": args.only_memory,
        "only_startup": args.only_startup,
        "only_probing": args.only_probing,
        "timeout_s": args.timeout,
        "vfe": str(args.vfe),
    }


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    part.replace(path)
