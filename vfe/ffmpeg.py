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

Deliberate oddity: stderr runs at ``info`` level (with level tags) because the
``showinfo`` filter reports the real presentation time of each frame written there;
lines that are not showinfo lines feed the error tail.
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
from pathlib import Path
from typing import Any

from .errors import ExtractionError
from .options import ImageFormat
from .output import Output

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


async def version() -> str | None:
    """FFmpeg's version string, or None when FFmpeg is missing or broken."""
    try:
        async with asyncio.timeout(VERSION_TIMEOUT):
            done = await run([binary("ffmpeg"), "-hide_banner", "-version"])
    except (ExtractionError, TimeoutError):
        return None
    first = done.stdout.decode("utf-8", "replace").splitlines()[:1]
    if done.returncode != 0 or not first:
        return None
    parts = first[0].split()
    return parts[2] if len(parts) > 2 and parts[0] == "ffmpeg" else first[0]


GLOBAL_ARGS = (
    "-nostdin",
    "-hide_banner",
    "-loglevel",
    "level+info",
    "-progress",
    "pipe:1",
    "-nostats",
    "-stats_period",
    "0.5",
    "-y",
)


# HDR to SDR as an SDR player shows it: to linear light (1.0 = 100 nits, SDR's white),
# BT.2020 to BT.709 primaries, then Möbius: linear up to half of SDR white, highlights
# rolled off smoothly (Hable darkens SDR-range content by a third), no desaturation.
TONEMAP = {"tonemap": "mobius", "param": 0.5, "desat": 0}
NOMINAL_PEAK = 100  # nits of 1.0 in linear light


# The YUV range each lossy format is read with (JPEG: full, JFIF; WebP: limited); both
# are read with the BT.601 matrix.
YUV_RANGES = {ImageFormat.JPG: "pc", ImageFormat.WEBP: "tv"}


def tonemapped(stream: Any) -> Any:
    """``stream`` (tagged PQ or HLG) tone-mapped to SDR BT.709, limited range."""
    return (
        stream.filter("zscale", t="linear", npl=NOMINAL_PEAK)
        .filter("format", "gbrpf32le")
        .filter("zscale", p="bt709")
        .filter("tonemap", **TONEMAP)
        .filter("zscale", t="bt709", m="bt709", r="tv")
        .filter("format", "yuv420p")
    )


def _decoded(
    source: str,
    seek: float | None,
    threads: int | None,
    stop_at: float | None,
    keyframes_only: bool = False,
) -> Any:
    """The video of ``source`` as the filters see it: guarded input, the file's own times
    (``-copyts``), decoding from the keyframe at ``seek``, ended at ``stop_at``."""
    import ffmpeg as ffmpeg_python

    options: dict[str, Any] = {**INPUT_GUARDS, "copyts": None}
    if threads is not None:
        options["threads"] = threads
    if seek is not None:
        # A hair past the keyframe, so rounding to microseconds can never land before it.
        options.update(ss=f"{seek + 5e-7:.6f}", noaccurate_seek=None)
    if keyframes_only:
        options["skip_frame"] = "nokey"
    decoded = ffmpeg_python.input(f"file:{source}", **options).video
    if stop_at is not None:
        decoded = decoded.filter("trim", end=f"{stop_at:.6f}")
    return decoded


def _kept(decoded: Any, select_expr: str, matrix: str | None, tonemap: bool) -> Any:
    """The frames ``select_expr`` keeps, their times reported (``showinfo``), an untagged
    source's ``matrix`` stated, tone-mapped when asked (an HDR source): the pictures both
    the frames written and the quality scans start from."""
    stream = decoded.filter("select", select_expr).filter("showinfo")
    if matrix is not None:  # untagged: say what the conversions after this should assume
        stream = stream.filter("setparams", colorspace=matrix)
    if tonemap:  # the kept frames only: a cost per frame kept
        stream = tonemapped(stream)
    return stream


def frames_argv(
    source: str,
    select_expr: str,
    pattern: str,
    output: Output,
    *,
    seek: float | None = None,
    max_frames: int | None = None,
    keyframes_only: bool = False,
    threads: int | None = None,
    stop_at: float | None = None,
    count_decoded: bool = False,
    hdr: bool = False,
    measure: str | None = None,
    matrix: str | None = None,
) -> list[str]:
    """argv that decodes ``source`` and writes the frames ``select_expr`` keeps.

    Timestamps are kept as they are in the file (``-copyts``), seeking or not, so the
    expression and ``showinfo`` share one timeline. With ``seek``, decoding starts at the
    keyframe at or before it (``-noaccurate_seek``: nothing is dropped before ``select``
    sees it). Frames go to ``pattern`` (an image2 ``%06d`` pattern numbered from 0), each
    written under a temp name and renamed when complete; ``showinfo`` reports each kept
    frame's presentation time on stderr in output order. FFmpeg stops after
    ``max_frames``. Rotation metadata is applied (FFmpeg's default autorotate). ``threads``
    caps the threads of the decoder, the filters and the encoders alike (``threads_args``).
    ``stop_at`` (filter timeline) ends decoding there. ``count_decoded`` adds a first,
    null output fed every decoded frame, so ``-progress`` counts decoded frames (``frame=``)
    when the frames kept are few and not known ahead (scene mode). ``hdr`` (a PQ or HLG
    source) has the frames tone-mapped to SDR, unless ``output.tonemap`` is off.
    ``measure`` (an image2 pattern like ``pattern``'s, ``.pgm``) adds a second output of
    the same frames, numbered alike: each as ``quality.SIDE`` square full-range grey, for
    its metrics, taken before the output resize. ``matrix`` is the YUV matrix of an
    untagged source (``VideoInfo.assumed_matrix``). JPEG and WebP frames are written in
    BT.601 YUV, which is how every decoder reads them; the source's matrix (BT.709 for HD)
    is converted to it, or their colours would shift.
    """
    import ffmpeg as ffmpeg_python  # the argv / filter-graph builder, loaded on first use

    decoded = _decoded(source, seek, threads, stop_at, keyframes_only)
    counter = None
    if count_decoded:
        branches = decoded.split()
        decoded = branches[0]
        counter = ffmpeg_python.output(branches[1], "-", f="null", **{"c:v": "wrapped_avframe"})
    stream = _kept(decoded, select_expr, matrix, hdr and output.tonemap)
    grey = None
    if measure is not None:
        branches = stream.split()
        stream = branches[0]
        grey = ffmpeg_python.output(
            greyscale(branches[1]), measure, f="image2", start_number=0, atomic_writing=1,
            fps_mode="passthrough",
            **({} if max_frames is None else {"frames:v": max_frames}),
            **({} if threads is None else {"threads": threads}),
        )  # fmt: skip
    if output.width or output.height:
        width = f"min(iw,{output.width})" if output.width else "-1"
        height = f"min(ih,{output.height})" if output.height else "-1"
        fit = "decrease" if output.width and output.height else "disable"
        stream = stream.filter("scale", width, height, force_original_aspect_ratio=fit)
    if output.format in YUV_RANGES:
        stream = stream.filter(
            "scale", out_color_matrix="bt601", out_range=YUV_RANGES[output.format]
        )
    encode: dict[str, Any] = {}
    if output.format is ImageFormat.JPG:
        encode["q:v"] = 2 if output.quality is None else jpeg_qscale(output.quality)
    elif output.format is ImageFormat.WEBP:
        encode.update({"c:v": "libwebp", "quality": output.quality or 90})
    if max_frames is not None:
        encode["frames:v"] = max_frames
    if threads is not None:
        encode["threads"] = threads
    out = ffmpeg_python.output(
        stream,
        pattern,
        f="image2",
        start_number=0,
        atomic_writing=1,
        fps_mode="passthrough",
        **encode,
    )
    if grey is not None:
        out = ffmpeg_python.merge_outputs(out, grey)
    if counter is not None:  # first: -progress reports the first output's frame count
        out = ffmpeg_python.merge_outputs(counter, out)
    return [binary("ffmpeg"), *GLOBAL_ARGS, *threads_args(threads), *ffmpeg_python.get_args(out)]


def threads_args(threads: int | None) -> tuple[str, ...]:
    """The global option that caps the filter graph's threads at ``threads`` (the decoder's
    and each encoder's are capped by their own ``-threads``). The planner runs one
    single-threaded process per CPU; a filter or encoder left to choose starts a thread
    per CPU, each with its own buffers: at 1080p the BT.601 conversion and the JPEG
    encoder held 29 MB more per process, and took 20% more CPU."""
    return () if threads is None else ("-filter_complex_threads", str(threads))


def greyscale(stream: Any) -> Any:
    """``stream`` as the picture the quality metrics read: ``quality.SIDE`` square, area
    averaged, full-range grey (``format=gray`` expands limited-range luma)."""
    from .quality import SIDE

    return stream.filter("scale", SIDE, SIDE, flags="area").filter("format", "gray")


SCAN_ARGS = ("-nostdin", "-hide_banner", "-loglevel", "level+info", "-nostats", "-y")


def scan_argv(
    source: str,
    select_expr: str,
    *,
    seek: float | None = None,
    stop_at: float | None = None,
    threads: int | None = None,
    hdr: bool = False,
    tonemap: bool = True,
    matrix: str | None = None,
) -> list[str]:
    """argv that decodes ``source`` and writes each frame ``select_expr`` keeps to stdout
    as raw grey (``greyscale``), with its time on stderr (``showinfo``): the pictures the
    quality metrics read, without encoding a frame. Seeking, ``-copyts`` and ``stop_at``
    as in ``frames_argv``; tone mapping and an untagged ``matrix`` too, so the metrics
    match the frames written."""
    import ffmpeg as ffmpeg_python

    stream = _kept(_decoded(source, seek, threads, stop_at), select_expr, matrix, hdr and tonemap)
    out = ffmpeg_python.output(
        greyscale(stream), "pipe:1", f="rawvideo", pix_fmt="gray", fps_mode="passthrough"
    )
    return [binary("ffmpeg"), *SCAN_ARGS, *threads_args(threads), *ffmpeg_python.get_args(out)]


MAX_INLINE_GRAPH = 32 * 1024  # Linux refuses a single argument over 128 KiB


async def spill_long_graph(argv: list[str], script: Path) -> list[str]:
    """``argv`` with a filter graph too long for one argument moved into ``script``
    (``-filter_complex_script``), e.g. the select expression of thousands of timestamps."""
    if "-filter_complex" not in argv:
        return argv
    at = argv.index("-filter_complex")
    graph = argv[at + 1]
    if len(graph) <= MAX_INLINE_GRAPH:
        return argv
    await asyncio.to_thread(script.write_text, graph)
    return [*argv[:at], "-filter_complex_script", str(script), *argv[at + 2 :]]


def jpeg_qscale(quality: int) -> int:
    """Quality 1-100 as FFmpeg's JPEG qscale (2 best, 31 worst)."""
    return round(2 + (100 - min(100, max(1, quality))) * 29 / 99)
