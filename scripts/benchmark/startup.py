"""Start-up (issue 11): what starting vfe costs before it does any work, and what that
means for a short clip.

(a) ``import vfe.cli`` in a fresh interpreter: the median wall (and CPU) time of
``python -P -c "import vfe.cli"`` minus that of ``python -P -c pass``, with the interpreter
the vfe executable runs with (``-P``: the vfe it imports, not one in the working
directory); also the median ``-X importtime`` figure of ``vfe.cli``. The goal: at most a
quarter of ``IMPORT_BASELINE_S``, the time the issue measured.
(b) ``vfe extract`` on a 10 s 640x272 clip at interval 1 (``--quiet``) against the FFmpeg
one-liner of the main table (b). The goal: at most ``EXTRACT_GOAL`` times its wall time.
Beside it, the floor that CPU time sets: a run that uses C seconds of CPU on N cores
cannot take less than C/N seconds of wall time, however its parts overlap.

(c) The probe-first floor: a bare interpreter's start, vfe's ffprobe run for the frame
index, then the one-liner, one after another in a shell. vfe plans from the index before
FFmpeg starts, so a run like vfe's with no Python work and the one-liner as its FFmpeg
step takes this long; its ratio to the one-liner says whether the goal of (b) is in reach
for a probe-first run. (vfe may split a long decode between processes, which this does
not model; a 10 s clip at ``I=1`` is one process.)

Each round runs the five commands ``RUNS_PER_ROUND`` times, interleaved: one run of each
lasts well under a second, and a single run says little about a fixed cost.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .exactness import check_exact
from .methods import argv_for
from .rounds import Cell, count_images, show, warm_page_cache
from .runner import BenchError, measure, run_text
from .sampling import Sampling
from .videos import STARTUP_SPEC, Video, cached_video, probe

IMPORT_BASELINE_S = 0.55  # `import vfe.cli` when issue 11 was written (web stack and all)
IMPORT_GOAL = 0.25  # of the baseline: "at most a quarter of today's import time"
EXTRACT_GOAL = 1.5  # vfe extract's wall time over the one-liner's
RUNS_PER_ROUND = 5
SAMPLING = Sampling("I=1", interval=1.0)
IMPORT_CODE = "import vfe.cli"
IMPORT_LINE = re.compile(r"^import time:\s*\d+\s*\|\s*(\d+)\s*\|\s*vfe\.cli\s*$", re.MULTILINE)


def probe_first_argv(python: str, video: Video, out: Path) -> list[str]:
    """(c): ``python -c pass``, vfe's ffprobe of ``video``, then the one-liner into ``out``."""
    from vfe.probe import index_argv

    steps = [
        shlex.join([python, "-P", "-c", "pass"]),
        shlex.join(index_argv(video.path)) + " >/dev/null",
        shlex.join(argv_for("ffmpeg", video, SAMPLING, out, None)),
    ]
    return ["sh", "-c", " && ".join(steps)]


def _available_cpus() -> int:
    """The CPUs vfe's planner counts (affinity, bounded by a cgroup CPU quota)."""
    from vfe.planner import available_cpus

    return available_cpus()


def python_of(vfe: Path) -> str:
    """The interpreter ``vfe`` runs with: its ``#!`` line when that names a python (a
    console script's), else the ``python`` next to it."""
    try:
        with vfe.open("rb") as fh:
            first = fh.readline(4096).decode(errors="replace").strip()
    except OSError as exc:
        raise BenchError(f"cannot read {vfe}: {exc}") from exc
    named = first[2:].split()
    if first.startswith("#!") and len(named) == 1 and Path(named[0]).name.startswith("python"):
        return named[0]
    sibling = vfe.with_name("python")
    if not sibling.exists():
        raise BenchError(f"cannot tell which python runs {vfe}")
    return str(sibling)


def compile_vfe(vfe: Path) -> None:
    """Write the bytecode of the vfe package that ``vfe`` imports, as an installed vfe has
    it (pip compiles at install). An editable install under ``PYTHONDONTWRITEBYTECODE``
    would otherwise compile vfe's modules on every run: 0.06 s of CPU on a short clip, a
    cost that is the bench's, not vfe's. ``BenchError`` when it cannot."""
    code = (
        "import compileall, pathlib, sys, vfe; "
        "sys.exit(not compileall.compile_dir(pathlib.Path(vfe.__file__).parent, quiet=1))"
    )
    run_text([python_of(vfe), "-P", "-c", code], timeout=120)


def import_seconds(python: str) -> float | None:
    """``vfe.cli``'s cumulative time from one ``python -X importtime`` run, or None."""
    try:
        done = subprocess.run(
            [python, "-P", "-X", "importtime", "-c", IMPORT_CODE],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = IMPORT_LINE.search(done.stderr)
    return int(found[1]) / 1e6 if done.returncode == 0 and found else None


@dataclass
class Startup:
    """Every run of the start-up section."""

    video: Video
    python: str
    bare: Cell  # python -c pass
    imported: Cell  # python -c "import vfe.cli"
    vfe: Cell
    ffmpeg: Cell
    probe_first: Cell  # (c)
    importtime: list[float] = field(default_factory=list)
    cores: int = field(default_factory=_available_cpus)

    def import_cost(self) -> dict[str, float] | None:
        """Median wall and CPU seconds of the import over a bare interpreter's."""
        bare, imported = self.bare.median(), self.imported.median()
        if bare is None or imported is None:
            return None
        return {key: imported[key] - bare[key] for key in ("wall_s", "cpu_s")}

    def importtime_s(self) -> float | None:
        return statistics.median(self.importtime) if self.importtime else None

    def import_ratio(self) -> float | None:
        cost = self.import_cost()
        return cost["wall_s"] / IMPORT_BASELINE_S if cost is not None else None

    def import_met(self) -> bool | None:
        ratio = self.import_ratio()
        return ratio <= IMPORT_GOAL if ratio is not None else None

    def extract_ratios(self) -> dict[str, float | None]:
        a, b = self.vfe.median(), self.ffmpeg.median()
        return {
            key.removesuffix("_s"): a[key] / b[key] if a and b and b[key] > 0 else None
            for key in ("wall_s", "cpu_s")
        }

    def cpu_floor(self) -> dict[str, float] | None:
        """vfe's median CPU seconds over the cores it may use: no wall time below it is
        possible; and that floor over the one-liner's wall time."""
        a, b = self.vfe.median(), self.ffmpeg.median()
        if a is None or b is None or b["wall_s"] <= 0:
            return None
        floor = a["cpu_s"] / self.cores
        return {"cpu_s": a["cpu_s"], "wall_s": floor, "ratio": floor / b["wall_s"]}

    def probe_first_ratio(self) -> float | None:
        """(c)'s median wall time over the one-liner's."""
        a, b = self.probe_first.median(), self.ffmpeg.median()
        return a["wall_s"] / b["wall_s"] if a and b and b["wall_s"] > 0 else None

    def extract_met(self) -> bool | None:
        wall = self.extract_ratios()["wall"]
        return wall <= EXTRACT_GOAL if wall is not None else None


def startup_inputs(args: argparse.Namespace) -> tuple[Video, str]:
    """The start-up clip (generated into the cache when missing) and the python of vfe;
    ``BenchError`` when either cannot be had."""
    return probe(cached_video(STARTUP_SPEC, args.cache)), python_of(args.vfe)


def bench_startup(inputs: tuple[Video, str], args: argparse.Namespace) -> Startup:
    """Run the five commands ``RUNS_PER_ROUND`` times a round, interleaved."""
    video, python = inputs
    cache = args.cache
    out, log = cache / "out" / "startup", cache / "out" / "log"
    log.parent.mkdir(parents=True, exist_ok=True)
    result = Startup(
        video,
        python,
        bare=Cell([python, "-P", "-c", "pass"]),
        imported=Cell([python, "-P", "-c", IMPORT_CODE]),
        vfe=Cell(argv_for("vfe", video, SAMPLING, out, None, args.vfe)),
        ffmpeg=Cell(argv_for("ffmpeg", video, SAMPLING, out, None)),
        probe_first=Cell(probe_first_argv(python, video, out)),
    )
    warm_page_cache(video.path)
    for round_no in range(1, args.rounds + 1):
        for _ in range(RUNS_PER_ROUND):
            for label, cell in (("pass", result.bare), ("import", result.imported)):
                cell.runs.append(measure(cell.argv, round_no, log, args.timeout))
                show(video, round_no, "python", label, cell.runs[-1])
            extracts = {"vfe": result.vfe, "ffmpeg": result.ffmpeg, "probe": result.probe_first}
            for method, cell in extracts.items():
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                run = measure(cell.argv, round_no, log, args.timeout)
                run.frames_written = count_images(out)
                if method == "vfe" and run.error is None and "exact" not in args.skip:
                    run.exact = check_exact(video, SAMPLING, out)
                cell.runs.append(run)
                show(video, round_no, method, SAMPLING.label, run)
            seconds = import_seconds(python)
            if seconds is not None:
                result.importtime.append(seconds)
    shutil.rmtree(cache / "out", ignore_errors=True)
    return result
