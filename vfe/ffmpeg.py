"""The only module that starts processes: FFmpeg and ffprobe as asyncio subprocesses.

Discipline (see STYLE.md): argv lists, never a shell; every pipe opened is read
continuously (a pipe nobody reads deadlocks the child); each child starts in a new
session so its whole process group can be signalled; stopping is terminate, a bounded
wait, kill, and always ``await proc.wait()``, also when the caller is cancelled.

FFmpeg never outlives the process that started it, however that process ends (a
SIGKILLed worker's FFmpeg would otherwise go on writing frames for a job that runs again
elsewhere): where util-linux's ``setpriv`` is found (every Debian has it), FFmpeg is
started through ``setpriv --pdeathsig KILL``, which sets ``PR_SET_PDEATHSIG`` and then
becomes FFmpeg itself (same process, no shell).

The argv of the runs that decode a video are built in ``vfe.ffmpeg_argv``.

Deliberate oddity: stderr runs at ``info`` level (with level tags,
``ffmpeg_argv.GLOBAL_ARGS``) because the ``showinfo`` filter reports the real
presentation time of each frame written there; lines that are not showinfo lines feed
the error tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import ExtractionError

STOP_GRACE_SECONDS = 1.0
VERSION_TIMEOUT = 10.0
READ_CHUNK = 64 * 1024
MAX_LINE = 256 * 1024

# What FFmpeg may open and which container readers it may use, for every input: local
# files only (a crafted playlist or a reference movie cannot reach other files, hosts or
# devices), and the demuxers of real video files (no playlists, concat lists, image
# sequences or raw devices).
PROTOCOLS = "file"
DEMUXERS = (
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,mpeg,mpegvideo,flv,asf,ogg,mxf,ivf,"
    "h264,hevc,m4v,gif,dv,nut,yuv4mpegpipe"
)
INPUT_GUARDS: dict[str, str] = {"protocol_whitelist": PROTOCOLS, "format_whitelist": DEMUXERS}

ProgressCallback = Callable[[dict[str, str]], None]
LineCallback = Callable[[str], bool]


@functools.cache
def death_guard() -> tuple[str, ...]:
    """The argv prefix that makes a child die with its parent, if this system has one."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or not sys.platform.startswith("linux"):
        return ()
    return (setpriv, "--pdeathsig", "KILL", "--")


def binary(name: str) -> str:
    """Full path of ``ffmpeg`` or ``ffprobe``; ``ExtractionError`` if it is not installed."""
    found = shutil.which(name)
    if found is None:
        raise ExtractionError(f"{name} is not installed on the server")
    return found


def installed() -> bool:
    """Whether both ``ffmpeg`` and ``ffprobe`` are on the PATH."""
    return all(shutil.which(name) for name in ("ffmpeg", "ffprobe"))


@dataclass
class Completed:
    """A finished process: exit code, captured stdout, and the last stderr lines."""

    returncode: int
    stdout: bytes
    stderr_tail: list[str]

    def error_text(self) -> str:
        return "; ".join(line for line in self.stderr_tail if line)[-1000:]


async def _read_lines(stream: asyncio.StreamReader, on_line: Callable[[str], None]) -> None:
    """Call ``on_line`` for each line of ``stream`` until EOF; over-long lines are cut."""
    pending = b""
    skipping = False  # inside a line longer than MAX_LINE whose start was already sent
    while chunk := await stream.read(READ_CHUNK):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            if skipping:
                skipping = False
                continue
            on_line(_decode(raw))
        if len(pending) > MAX_LINE:
            if not skipping:
                on_line(_decode(pending))
            skipping = True
            pending = b""
    if pending and not skipping:
        on_line(_decode(pending))


def _decode(raw: bytes) -> str:
    return raw[:MAX_LINE].decode("utf-8", "replace").rstrip("\r")


async def stop_process(proc: asyncio.subprocess.Process, grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop ``proc``'s process group: SIGTERM, wait ``grace`` s, SIGKILL, then reap it.

    Safe to call on a process that already exited. Waits at most about ``grace`` + 1 s.
    """
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


class LineReader:
    """A process whose stdout is read line by line *in the calling thread* (run it from a
    worker thread), so a reader with a lot to parse never holds the event loop. ``stop``
    may be called from any thread: it kills the process group, as does the reader's own
    time limit. stderr is discarded (callers say what failed)."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.timed_out = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopped = False
        self._lock = threading.Lock()

    def run(self, on_line: Callable[[bytes], bool], timeout: float) -> int:
        """Feed each stdout line to ``on_line`` until EOF or until it returns False (the
        process is then stopped); returns the exit code (negative when killed). A line
        over ``MAX_LINE`` bytes is cut there and the rest of it dropped."""
        with self._lock:
            if self._stopped:
                return -signal.SIGKILL
            try:
                self._proc = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL, start_new_session=True,
                )  # fmt: skip
            except OSError as exc:
                raise ExtractionError(f"could not start {os.path.basename(self.argv[0])}") from exc
        proc = self._proc
        assert proc.stdout is not None
        timer = threading.Timer(timeout, self._time_out)
        timer.start()
        skipping = False  # inside a line longer than MAX_LINE: its rest is dropped
        try:
            while line := proc.stdout.readline(MAX_LINE):
                whole = line.endswith(b"\n")
                if skipping:
                    skipping = not whole
                    continue
                skipping = not whole and len(line) >= MAX_LINE
                if not on_line(line):
                    self.stop()
                    break
        except BaseException:
            self.stop()  # the reader failed: the process must not outlive it
            raise
        finally:
            timer.cancel()
            proc.stdout.close()
            proc.wait()
        return proc.returncode

    def _time_out(self) -> None:
        self.timed_out = True
        self.stop()

    def stop(self) -> None:
        """Kill the process group (nothing of a reader's work is worth a grace period)."""
        with self._lock:
            self._stopped = True
            if self._proc is not None and self._proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self._proc.pid, signal.SIGKILL)


async def run(
    argv: Sequence[str],
    *,
    on_progress: ProgressCallback | None = None,
    on_line: LineCallback | None = None,
    tail_lines: int = 50,
    on_picture: Callable[[bytes], None] | None = None,
    picture_size: int = 0,
) -> Completed:
    """Run ``argv`` to the end, feeding ``-progress`` blocks and stderr lines to callbacks.

    stdout is parsed as ``key=value`` progress blocks when ``on_progress`` is given and
    captured otherwise; with ``on_picture``, stdout is raw pictures instead, each
    ``picture_size`` bytes, handed over one by one (a cut last one is dropped). Each
    stderr line goes to ``on_line``; lines it does not consume (returns False) are kept,
    the last ``tail_lines`` of them, for error messages. If the caller is cancelled, the
    process group is stopped before the cancellation propagates, so no child outlives its
    job.
    """
    guard = death_guard()
    if guard and shutil.which(argv[0]) is None:  # through setpriv, exec would fail later
        raise ExtractionError(f"could not start {os.path.basename(argv[0])}")
    try:
        proc = await asyncio.create_subprocess_exec(
            *guard,
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise ExtractionError(f"could not start {os.path.basename(argv[0])}") from exc
    assert proc.stdout is not None and proc.stderr is not None
    tail: deque[str] = deque(maxlen=tail_lines)
    captured: list[bytes] = []
    block: dict[str, str] = {}

    def stderr_line(line: str) -> None:
        if on_line is None or not on_line(line):
            tail.append(line)

    def stdout_line(line: str) -> None:
        if on_progress is None:
            captured.append(line.encode() + b"\n")
            return
        key, sep, value = line.partition("=")
        if not sep:
            return
        block[key.strip()] = value.strip()
        if key.strip() == "progress":
            on_progress(dict(block))
            block.clear()

    async def pictures(stream: asyncio.StreamReader) -> None:
        assert on_picture is not None
        while True:
            try:
                on_picture(await stream.readexactly(picture_size))
            except asyncio.IncompleteReadError:
                return

    out = _read_lines(proc.stdout, stdout_line) if on_picture is None else pictures(proc.stdout)
    readers = asyncio.gather(out, _read_lines(proc.stderr, stderr_line))
    try:
        await readers
        await proc.wait()
    except BaseException:
        readers.cancel()
        await asyncio.shield(stop_process(proc))
        with contextlib.suppress(BaseException):
            await readers
        raise
    return Completed(proc.returncode or 0, b"".join(captured), list(tail))


_LEVEL_TAG = re.compile(r"^(?:\[[^\]]*@ 0x[0-9a-f]+\] )*\[(\w+)\] ?")


def strip_level(line: str) -> tuple[str, str]:
    """Split ``[ctx @ 0x..] [error] text`` into (``error``, ``text``)."""
    match = _LEVEL_TAG.match(line)
    if not match:
        return "", line
    return match.group(1), line[match.end() :]


_VERSIONS: dict[tuple[str, int, int], str] = {}  # (path, mtime, size) of a binary: its version


async def version() -> str | None:
    """FFmpeg's version string, or None when FFmpeg is missing or broken. Asked once per
    binary file in a process (every app start asks; the test suite starts hundreds)."""
    try:
        path = binary("ffmpeg")
        stat = os.stat(path)
    except (ExtractionError, OSError):
        return None
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key in _VERSIONS:
        return _VERSIONS[key]
    try:
        async with asyncio.timeout(VERSION_TIMEOUT):
            done = await run([path, "-hide_banner", "-version"])
    except (ExtractionError, TimeoutError):
        return None
    first = done.stdout.decode("utf-8", "replace").splitlines()[:1]
    if done.returncode != 0 or not first:
        return None
    parts = first[0].split()
    _VERSIONS[key] = parts[2] if len(parts) > 2 and parts[0] == "ffmpeg" else first[0]
    return _VERSIONS[key]
