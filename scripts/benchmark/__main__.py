"""Command line: ``scripts/bench`` runs ``python -m benchmark``; see the package docstring."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import ROOT
from .memory import LengthRow, bench_lengths, length_videos
from .methods import VFE, Method, opencv_python
from .probing import UPLOADS, bench_probing, probing_inputs
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
from .startup import Startup, bench_startup, startup_inputs
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

SKIPPABLE = {
    *("vfe", "ffmpeg", "opencv", "decode", "exact", "pixels"),
    *("memory", "startup", "probing"),
}
Table = tuple[Video, dict[str, dict[Method, Cell]], Cell]


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
        "at 60 s and 180 s), and a probing section uploads a 39 MB video that states "
        "3,000,000 frames (and a Matroska copy) three times at once to a real `vfe serve`.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: only the shared clips (else a short generated clip), 1 round, "
        "the start-up section, no memory-vs-length or probing section (the probing clip "
        "alone takes about 70 s of CPU to make the first time)",
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
        "section), memory (the memory-vs-length section) or probing (the bounded-probing "
        "section); repeat or comma-separate",
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument(
        "--only-memory",
        action="store_true",
        help="run only the memory-vs-length section (no main tables)",
    )
    only.add_argument(
        "--only-startup",
        action="store_true",
        help="run only the start-up section (no main tables)",
    )
    only.add_argument(
        "--only-probing",
        action="store_true",
        help="run only the bounded-probing section (no main tables); --rounds rounds of "
        "three uploads at once, each on a fresh server",
    )
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
    if args.only_memory and args.videos:
        parser.error("--only-memory runs no main table: drop --videos")
    if args.only_memory and "memory" in args.skip:
        parser.error("--only-memory and --skip memory leave nothing to run")
    if args.only_startup and args.videos:
        parser.error("--only-startup runs no main table: drop --videos")
    if args.only_startup and "startup" in args.skip:
        parser.error("--only-startup and --skip startup leave nothing to run")
    if args.only_probing and args.videos:
        parser.error("--only-probing runs no main table: drop --videos")
    if args.only_probing and "probing" in args.skip:
        parser.error("--only-probing and --skip probing leave nothing to run")
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    args.cache = args.cache.resolve()
    args.json = (args.json or args.cache / "results.json").resolve()
    return args


def memory_skipped(args: argparse.Namespace) -> str | None:
    """Why the memory-vs-length section does not run, or None when it does."""
    if args.only_memory:
        return None
    if args.only_startup or args.only_probing:
        return f"skipped (--only-{'startup' if args.only_startup else 'probing'})"
    if "memory" in args.skip:
        return SKIPPED
    if args.quick:
        return "skipped (--quick; run it with --only-memory)"
    return None


def startup_skipped(args: argparse.Namespace) -> str | None:
    """Why the start-up section does not run, or None when it does."""
    if args.only_memory or args.only_probing:
        return f"skipped (--only-{'memory' if args.only_memory else 'probing'})"
    if "startup" in args.skip:
        return SKIPPED
    return None


def probing_skipped(args: argparse.Namespace) -> str | None:
    """Why the bounded-probing section does not run, or None when it does."""
    if args.only_probing:
        return None
    if args.only_memory or args.only_startup:
        return f"skipped (--only-{'memory' if args.only_memory else 'startup'})"
    if "probing" in args.skip:
        return SKIPPED
    if args.quick:
        return "skipped (--quick; run it with --only-probing)"
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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is not on PATH", file=sys.stderr)
            return 2
    args.cache.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    skipped, startup_skip = memory_skipped(args), startup_skipped(args)
    probing_skip = probing_skipped(args)
    try:
        only = args.only_memory or args.only_startup or args.only_probing
        videos = [] if only else collect_videos(args, args.cache)
        lengths = length_videos(args.cache) if skipped is None else None
        short_clip = startup_inputs(args) if startup_skip is None else None
        probing = probing_inputs(args.cache) if probing_skip is None else None
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
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
    if tables or startup is not None:
        print_legend()
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
