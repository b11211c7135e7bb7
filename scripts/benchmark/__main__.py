"""Command line: ``scripts/bench`` runs ``python -m benchmark``; see the package docstring."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from . import ROOT
from .memory import LengthRow, bench_lengths, length_videos
from .methods import VFE, Method, opencv_python
from .probing import UPLOADS, bench_probing, probing_inputs
from .quality import QualityBench, bench_quality, print_quality, quality_json
from .report import (
    environment,
    lengths_json,
    print_lengths,
    print_probing,
    print_startup,
    print_table,
    probing_json,
    row_json,
    startup_json,
    write_json,
)
from .rounds import SKIPPED, Cell, bench_video
from .runner import BenchError
from .sampling import SAMPLINGS
from .scale import Scale, bench_scale, print_scale, scale_json
from .startup import Startup, bench_startup, compile_vfe, startup_inputs
from .storage import StorageBench, bench_storage, print_storage, storage_json
from .videos import (
    EXTRA_SPECS,
    LENGTH_PAIR,
    QUICK_SPEC,
    SHARED_CLIPS,
    SPECS,
    X264_PRESET,
    Video,
    collect_videos,
)

# The sections after the main tables, each with --only-NAME and --skip NAME.
SECTIONS = {
    "startup": "the start-up section (no main tables)",
    "memory": "the memory-vs-length section (no main tables)",
    "probing": "the bounded-probing section (no main tables); --rounds rounds of three "
    "uploads at once, each on a fresh server",
    "scale": "the scale-out section (no main tables): embedded against PostgreSQL with API "
    "and worker processes",
    "storage": "the storage section (no main tables): S3 (SeaweedFS) against the local "
    "folder, result reuse and storage growth",
    "quality": "the frame-quality section (no main tables): what the per-frame metrics cost "
    "a dense job and what reject costs on a clean video",
}
LONG_SECTIONS = {"memory", "probing", "scale", "storage", "quality"}  # not in a --quick run
SKIPPABLE = {*("vfe", "ffmpeg", "opencv", "decode", "exact", "pixels"), *SECTIONS}
Table = tuple[Video, dict[str, dict[Method, Cell]], Cell]
Measured = TypeVar("Measured")  # what a section's bench returns


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    keys = ", ".join(
        [spec.key for spec in (*SPECS, *EXTRA_SPECS, QUICK_SPEC)]
        + [Path(n).stem for n in SHARED_CLIPS]
    )
    short, long = (spec.key for spec in LENGTH_PAIR)
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Benchmark `vfe extract` against an FFmpeg one-liner, an OpenCV loop "
        "and a pure decode, and check that vfe's frames are exact. Medians of --rounds "
        "rounds; ratios < 1 mean vfe is faster. After the tables, a start-up section "
        "times `import vfe.cli` and `vfe extract` on a 10 s clip against the one-liner, "
        f"a memory-vs-length section runs vfe on {short} and {long} (the same video "
        "at 60 s and 180 s), a probing section uploads a 39 MB video that states "
        "3,000,000 frames (and a Matroska copy) three times at once to a real `vfe serve`, "
        "a scale-out section runs the same jobs embedded and on PostgreSQL with API and "
        "worker processes, a storage section runs jobs on an S3 bucket (SeaweedFS) "
        "and on the local folder and times result reuse, and a quality section times "
        "jobs with and without the per-frame metrics and with and without reject.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: only the shared clips (else a short generated clip), 1 round, "
        "the start-up section, no memory-vs-length, probing, scale-out or storage section "
        "(the probing clip alone takes about 70 s of CPU to make the first time)",
    )
    parser.add_argument(
        "--videos", metavar="KEYS", help=f"comma-separated videos to run ({keys}) or file paths"
    )
    parser.add_argument(
        "--rounds", type=int, metavar="N", help="rounds per measurement (default 3; 1 with --quick)"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=ROOT / "bench-cache",
        metavar="DIR",
        help="generated videos, the OpenCV virtualenv and scratch output (default: bench-cache/)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="where to write every round's numbers (default: CACHE/results.json)",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="WHAT",
        help="leave out vfe, ffmpeg, opencv, decode, exact, pixels, startup (the start-up "
        "section), memory (the memory-vs-length section), probing (the bounded-probing "
        "section), scale (the scale-out section), storage (the storage section) or quality "
        "(the frame-quality section); repeat or comma-separate",
    )
    only = parser.add_mutually_exclusive_group()
    for name, what in SECTIONS.items():
        only.add_argument(f"--only-{name}", action="store_true", help=f"run only {what}")
    parser.add_argument(
        "--vfe",
        type=Path,
        default=VFE,
        metavar="PATH",
        help="the vfe executable to benchmark (default: .venv/bin/vfe)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800,
        metavar="SECONDS",
        help="kill a single run after this long (default 1800)",
    )
    args = parser.parse_args(argv)
    args.skip = {part.strip() for item in args.skip for part in item.split(",") if part.strip()}
    unknown = args.skip - SKIPPABLE
    if unknown:
        parser.error(f"--skip: unknown {', '.join(sorted(unknown))}")
    for name in SECTIONS:
        if getattr(args, f"only_{name}") and args.videos:
            parser.error(f"--only-{name} runs no main table: drop --videos")
        if getattr(args, f"only_{name}") and name in args.skip:
            parser.error(f"--only-{name} and --skip {name} leave nothing to run")
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    args.cache = args.cache.resolve()
    args.json = (args.json or args.cache / "results.json").resolve()
    return args


def section_skipped(args: argparse.Namespace, name: str) -> str | None:
    """Why the section ``name`` does not run, or None when it does."""
    only = next((other for other in SECTIONS if getattr(args, f"only_{other}")), None)
    if only is not None:
        return None if only == name else f"skipped (--only-{only})"
    if name in args.skip:
        return SKIPPED
    if args.quick and name in LONG_SECTIONS:
        return f"skipped (--quick; run it with --only-{name})"
    return None


def bench_tables(
    videos: list[Video],
    args: argparse.Namespace,
    opencv: Path | None,
    opencv_error: str,
    report: dict[str, Any],
) -> list[Table]:
    """Run the main table of every video, saving the JSON after each one."""
    tables: list[Table] = []
    for video in videos:
        print(f"\n-- {video.key}: {video.path}", flush=True)
        rows, decode = bench_video(video, args, args.cache, opencv, opencv_error)
        tables.append((video, rows, decode))
        report["videos"].append(
            {
                **video.summary(),
                "decode": decode.to_json(),
                "rows": [row_json(video, s, rows[s.label], decode) for s in SAMPLINGS],
            }
        )
        write_json(args.json, report)  # after every video, so a long run keeps its results
    return tables


def print_legend() -> None:
    print(
        "\ncells: median wall s, CPU s (user+sys, children included), peak MiB (summed RSS "
        "of the process tree); ratios: (a) over (b)/(c)/(d), wall/cpu, < 1 = vfe faster;"
    )
    print(
        "exact: vfe frames that are the first frame at or after their target / expected; "
        "px: sampled frames whose pixels match that frame best (PSNR vs neighbours)"
    )


def run_section(
    report: dict[str, Any],
    key: str,
    title: str,
    bench: Callable[[], Measured],
    to_json: Callable[[Measured], dict[str, Any]],
) -> Measured | None:
    """Run a section that needs servers of its own; a failure to start them marks it
    failed in the report (and on stderr) instead of ending the bench."""
    try:
        measured = bench()
    except BenchError as exc:
        print(f"bench: {title}: {exc}", file=sys.stderr)
        report[key] = {"skipped": f"failed: {exc}"}
        return None
    report[key] = to_json(measured)
    return measured


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is not on PATH", file=sys.stderr)
            return 2
    args.cache.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    skipped, startup_skip = section_skipped(args, "memory"), section_skipped(args, "startup")
    probing_skip, scale_skip = section_skipped(args, "probing"), section_skipped(args, "scale")
    storage_skip = section_skipped(args, "storage")
    quality_skip = section_skipped(args, "quality")
    try:
        only = any(getattr(args, f"only_{name}") for name in SECTIONS)
        videos = [] if only else collect_videos(args, args.cache)
        lengths = length_videos(args.cache) if skipped is None else None
        short_clip = startup_inputs(args) if startup_skip is None else None
        probing = probing_inputs(args.cache) if probing_skip is None else None
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    try:
        compile_vfe(args.vfe)
    except BenchError as exc:
        print(f"bench: vfe's bytecode not written ({exc}); its runs compile it", file=sys.stderr)
    opencv, opencv_error = None, SKIPPED
    if "opencv" not in args.skip and videos:
        try:
            opencv = opencv_python(args.cache)
        except BenchError as exc:
            opencv_error = f"OpenCV virtualenv: {exc}"
            print(f"bench: {opencv_error}; the OpenCV column is n/a", flush=True)
    print(
        f"test videos: testsrc2, libx264 -preset {X264_PRESET}; VP9 -deadline realtime "
        f"-cpu-used 8; rounds: {args.rounds}; cpus: {os.cpu_count()}",
        flush=True,
    )
    report: dict[str, Any] = {
        "schema": 1,
        "started": started,
        "finished": None,
        "environment": environment(args, opencv),
        "videos": [],
        "startup": {"skipped": startup_skip},
        "memory_vs_length": {"skipped": skipped},
        "probing": {"skipped": probing_skip},
        "scale": {"skipped": scale_skip},
        "storage": {"skipped": storage_skip},
        "quality": {"skipped": quality_skip},
    }
    startup: Startup | None = None
    if short_clip is not None:  # first: it takes seconds, the tables take minutes
        print(f"\n-- start-up: import vfe.cli; vfe extract on {short_clip[0].path}", flush=True)
        startup = bench_startup(short_clip, args)
        report["startup"] = startup_json(startup)
        write_json(args.json, report)
    tables = bench_tables(videos, args, opencv, opencv_error, report)
    length_rows: list[LengthRow] = []
    if lengths is not None:
        print(f"\n-- memory vs length: {lengths[0].path.name}, {lengths[1].path.name}", flush=True)
        length_rows = bench_lengths(lengths, args, args.cache)
        report["memory_vs_length"] = lengths_json(lengths, length_rows)
        write_json(args.json, report)
    if probing is not None:
        names = ", ".join(row.video.path.name for row in probing)
        print(f"\n-- bounded probing: {UPLOADS} uploads at once of {names}", flush=True)
        report["probing"] = probing_json(bench_probing(probing, args))
    scale: Scale | None = None
    if scale_skip is None:
        print("\n-- scale-out: embedded against PostgreSQL, API and workers", flush=True)
        scale = run_section(report, "scale", "scale-out", lambda: bench_scale(args), scale_json)
        write_json(args.json, report)
    found: StorageBench | None = None
    if storage_skip is None:
        print("\n-- storage: S3 (SeaweedFS) against the local folder, reuse", flush=True)
        found = run_section(report, "storage", "storage", lambda: bench_storage(args), storage_json)
        write_json(args.json, report)
    quality: QualityBench | None = None
    if quality_skip is None:
        print(
            "\n-- quality: per-frame metrics and reject, vfe's Extractor in this process",
            flush=True,
        )
        quality = run_section(
            report, "quality", "quality", lambda: bench_quality(args), quality_json
        )
    report["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    write_json(args.json, report)
    for video, rows, decode in tables:
        print_table(video, rows, decode)
    if startup is not None:
        print_startup(startup)
    else:
        print(f"\n== start-up: {startup_skip}")
    if lengths is not None:
        print_lengths(lengths, length_rows, args.rounds)
    else:
        print(f"\n== memory vs length: {skipped}")
    if probing is not None:
        print_probing(probing, args.rounds)
    else:
        print(f"\n== bounded probing: {probing_skip}")
    if scale is not None:
        print_scale(scale)
    else:
        print(f"\n== scale-out: {report['scale']['skipped']}")
    if found is not None:
        print_storage(found)
    else:
        print(f"\n== storage: {report['storage']['skipped']}")
    if quality is not None:
        print_quality(quality)
    else:
        print(f"\n== quality: {report['quality']['skipped']}")
    if tables or startup is not None:
        print_legend()
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
