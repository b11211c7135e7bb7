"""Running subprocesses: helpers to completion, and measured runs (wall, CPU, peak memory).

A measured run waits in ``os.wait4`` for exact wall time and rusage while a thread samples
the process tree's summed RSS with psutil every ``SAMPLE_PERIOD`` seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import psutil  # type: ignore[import-untyped]  # psutil ships no stubs; used untyped
except ImportError:  # only a test extra of vfe; without it peak memory is ru_maxrss
    psutil = None

HAVE_PSUTIL = psutil is not None  # recorded in the JSON: peak memory is ru_maxrss without it
SAMPLE_PERIOD = 0.02
FFMPEG_QUIET = ("-nostdin", "-hide_banner", "-loglevel", "error")


class BenchError(Exception):
    """A step of the benchmark failed; the message is shown in place of a result."""


@dataclass
class Run:
    """One measured subprocess."""

    round: int
    wall_s: float
    cpu_s: float
    user_s: float
    sys_s: float
    peak_mib: float
    max_single_rss_mib: float
    exit_code: int
    frames_written: int = 0
    error: str | None = None
    exact: dict[str, Any] | None = None


def run_text(argv: Sequence[str], timeout: float = 600) -> str:
    """Run a helper command to completion and return its stdout; raise BenchError."""
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"{argv[0]}: {exc}") from exc
    if done.returncode != 0:
        raise BenchError(last_line(done.stderr) or f"{argv[0]} exited {done.returncode}")
    return done.stdout


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def tree_rss(proc: Any) -> int:
    """Summed RSS of ``proc`` and its live descendants (shared pages count once per process)."""
    return tree_usage(proc)[0]


def tree_usage(proc: Any) -> tuple[int, int]:
    """``tree_rss`` and how many descendants of ``proc`` it counted."""
    total = descendants = 0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            continue  # it exited between listing and reading
        descendants += member is not proc
    return int(total), descendants


def process(pid: int) -> Any:
    """A psutil handle on process ``pid`` for ``tree_rss``; BenchError without psutil."""
    if psutil is None:
        raise BenchError("psutil is not installed: the memory of a process tree is unknown")
    try:
        return psutil.Process(pid)
    except psutil.Error as exc:
        raise BenchError(f"process {pid}: {exc}") from exc


def measure(argv: Sequence[str], round_no: int, log: Path, timeout: float) -> Run:
    """Run ``argv`` with output to ``log``; block until it exits or ``timeout`` passes.

    The main thread waits in ``os.wait4`` (exact wall time and the rusage of the child
    plus the descendants it waited for); a thread samples the tree's RSS meanwhile. On
    timeout the whole process group is killed, then still reaped.
    """
    started = time.perf_counter()
    with log.open("wb") as out:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return Run(round_no, 0, 0, 0, 0, 0, 0, -1, error=f"{argv[0]}: {exc}")
    peak = 0
    finished = threading.Event()

    def sample() -> None:
        nonlocal peak
        tracked = psutil.Process(proc.pid) if psutil else None
        while not finished.wait(SAMPLE_PERIOD):
            if tracked is not None:
                peak = max(peak, tree_rss(tracked))
            if time.perf_counter() - started > timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    finished.set()
    sampler.join()
    proc.returncode = code = os.waitstatus_to_exitcode(status)  # tell Popen it was reaped
    single = usage.ru_maxrss * 1024  # kilobytes on Linux
    run = Run(
        round=round_no,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        peak_mib=max(peak, single) / 2**20,
        max_single_rss_mib=single / 2**20,
        exit_code=code,
    )
    if code != 0:
        reason = "timed out" if wall > timeout else f"exit {code}"
        detail = last_line(log.read_text(errors="replace"))
        run.error = f"{reason}: {detail}" if detail else reason
    return run
