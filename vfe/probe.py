"""ffprobe: what a video is (duration, frame rate, size, rotation, codec) before extraction.

One ffprobe call per file, JSON output. Failures become ``ExtractionError`` with a message
a person can act on ("not a video", "no video stream"), never ffprobe's raw output with
server paths in it.
"""

from __future__ import annotations

import asyncio
import bisect
import json
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from . import ffmpeg
from .errors import ExtractionError
from .models import finite_or_none

PROBE_TIMEOUT = 30.0


@dataclass(frozen=True)
class VideoInfo:
    """Facts about a video's first video stream, as displayed (rotation applied)."""

    duration: float
    fps: float | None
    width: int
    height: int
    rotation: int
    codec: str
    pix_fmt: str | None
    start_time: float
    container_start: float = 0.0  # FFmpeg shifts every timestamp by this (format start)
    time_base: str | None = None  # the video stream's, e.g. "1/15360"
    has_b_frames: int = 0  # frames are decoded out of presentation order when > 0
    own_duration: bool = True  # False: the duration is the container's (maybe audio's)


def _rate(value: Any) -> float | None:
    try:
        rate = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        return None
    return float(rate) if rate > 0 else None


def _rotation(stream: dict[str, Any]) -> int:
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            return round(float(side["rotation"])) % 360
    rotate = (stream.get("tags") or {}).get("rotate")
    return int(rotate) % 360 if rotate and str(rotate).lstrip("-").isdigit() else 0


def _on_time_base(seconds: Any, time_base: Any) -> float:
    """ffprobe prints the start with 6 decimals (1.466667 for 132000/90000); snap it to
    the stream's time base so frame times shifted by it come out exact (never -3e-7)."""
    start = finite_or_none(seconds) or 0.0
    try:
        base = Fraction(str(time_base))
    except (ValueError, ZeroDivisionError):
        return start
    if base <= 0:
        return start
    return float(round(Fraction(str(start)) / base) * base)


def parse(document: dict[str, Any]) -> VideoInfo:
    """Turn ffprobe's JSON into ``VideoInfo``; ``ExtractionError`` if there is no video."""
    streams = [
        s
        for s in document.get("streams") or []
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]
    if not streams:
        raise ExtractionError("the file has no video stream")
    stream = streams[0]
    width, height = int(stream.get("width") or 0), int(stream.get("height") or 0)
    if width <= 0 or height <= 0:
        raise ExtractionError("the video stream has no picture size; the file may be damaged")
    fmt = document.get("format") or {}
    own = finite_or_none(stream.get("duration"))
    duration = own or finite_or_none(fmt.get("duration"))
    if not duration or duration <= 0:
        raise ExtractionError("cannot tell how long the video is; the file may be truncated")
    rotation = _rotation(stream)
    if rotation in (90, 270):
        width, height = height, width
    return VideoInfo(
        duration=duration,
        fps=_rate(stream.get("avg_frame_rate")) or _rate(stream.get("r_frame_rate")),
        width=width,
        height=height,
        rotation=rotation,
        codec=str(stream.get("codec_name") or "unknown"),
        pix_fmt=stream.get("pix_fmt"),
        start_time=finite_or_none(stream.get("start_time")) or 0.0,
        container_start=_on_time_base(fmt.get("start_time"), stream.get("time_base")),
        time_base=stream.get("time_base"),
        has_b_frames=int(stream.get("has_b_frames") or 0),
        own_duration=own is not None,
    )


async def _ffprobe(path: Path, *sections: str, limit: float) -> dict[str, Any]:
    """ffprobe's JSON about ``path`` (the file protocol only, whatever the name looks
    like) for ``sections``; ``ExtractionError`` when it is not a video or takes over
    ``limit`` seconds."""
    guards = [arg for name, value in ffmpeg.INPUT_GUARDS.items() for arg in (f"-{name}", value)]
    argv = [ffmpeg.binary("ffprobe"), "-hide_banner", "-loglevel", "error", *guards, *sections,
            "-of", "json=c=1", f"file:{path}"]  # fmt: skip
    try:
        async with asyncio.timeout(limit):
            done = await ffmpeg.run(argv)
    except TimeoutError:
        raise ExtractionError("reading the video's details took too long") from None
    try:
        document = await asyncio.to_thread(json.loads, done.stdout or b"{}")
    except json.JSONDecodeError:
        document = {}
    if done.returncode != 0 or not isinstance(document, dict) or not document.get("format"):
        raise ExtractionError("the file is not a video FFmpeg can read")
    return document


async def probe(path: Path) -> VideoInfo:
    """Run ffprobe on ``path`` (a local file) and return what it found."""
    return parse(await _ffprobe(path, "-show_format", "-show_streams", limit=PROBE_TIMEOUT))


@dataclass(frozen=True)
class FrameIndex:
    """Every frame's presentation time and which are keyframes, from packets alone.

    Times are on FFmpeg's timeline (the container start shifted to 0), sorted. Reading
    packets costs a demux of the file, no decoding: tens of milliseconds for minutes of
    video. Packets the demuxer marks to be discarded (edit lists) are left out.
    """

    times: tuple[float, ...]
    keyframes: tuple[float, ...]
    end: float | None = None  # where the last frame ends (its time plus its duration)

    def first_at_or_after(self, target: float) -> int | None:
        """Position in ``times`` of the first frame at or after ``target``, if any."""
        i = bisect.bisect_left(self.times, target - EPSILON)
        return i if i < len(self.times) else None

    def keyframe_at_or_before(self, time: float) -> float:
        """The latest keyframe at or before ``time`` (the first frame if there is none)."""
        i = bisect.bisect_right(self.keyframes, time + EPSILON)
        if i == 0:
            return self.times[0] if self.times else 0.0
        return self.keyframes[i - 1]

    @property
    def variable_rate(self) -> bool:
        """True when frame spacing varies by more than a tenth of a frame."""
        gaps = [b - a for a, b in zip(self.times, self.times[1:], strict=False)]
        if len(gaps) < 2:
            return False
        return max(gaps) - min(gaps) > 0.1 * (sum(gaps) / len(gaps))


EPSILON = 1e-6
_CACHE: OrderedDict[tuple[str, int, int], tuple[VideoInfo, FrameIndex]] = OrderedDict()
_CACHE_FRAMES = 2_000_000  # frame times, about 64 MB: nine hours of 60 fps, or many short videos


async def inspect(path: Path) -> tuple[VideoInfo, FrameIndex]:
    """What the video is (as ``probe``) and its frame index, from one ffprobe run.

    Cached per file (by path, size and modification time), least recently used first out
    once the cached indexes hold more than ``_CACHE_FRAMES`` frames. Raises ``ExtractionError``
    for a file that is not a video, has no video stream, or was cut short.
    """
    key = await _cache_key(path)
    cached = _CACHE.get(key)
    if cached is not None:
        _CACHE.move_to_end(key)
        return cached
    document = await _ffprobe(
        path,
        "-select_streams",
        "V:0",  # the first video stream that is not cover art
        "-show_format",
        "-show_streams",
        "-show_entries",
        "packet=pts,dts,duration,flags",
        limit=PROBE_TIMEOUT * 10,
    )
    info = parse(document)
    rows = [
        (str(p.get("pts", "")), str(p.get("dts", "")), str(p.get("duration", "")),
         str(p.get("flags", "")))
        for p in document.get("packets") or []
    ]  # fmt: skip
    index = await asyncio.to_thread(_index, rows, info)
    check_complete(info, index)
    result = (info, index)
    _CACHE[key] = result
    held = sum(len(i.times) for _, i in _CACHE.values())
    while held > _CACHE_FRAMES and len(_CACHE) > 1:  # the newest stays, however long
        _, (_, dropped) = _CACHE.popitem(last=False)
        held -= len(dropped.times)
    return result


async def _cache_key(path: Path) -> tuple[str, int, int]:
    stat = await asyncio.to_thread(path.stat)
    return (str(path), stat.st_size, stat.st_mtime_ns)


TRUNCATION_SLACK = 0.5  # seconds the frames may end before the stated duration


def check_complete(info: VideoInfo, index: FrameIndex) -> None:
    """``ExtractionError`` when the frames stop well before the duration the file states:
    a file cut short whose index survived (a "faststart" MP4 cut in half)."""
    if not index.times:
        raise ExtractionError("the video has no frames; the file may be truncated or damaged")
    end = index.end if index.end is not None else index.times[-1]
    if info.own_duration and end < info.duration - TRUNCATION_SLACK:
        raise ExtractionError(
            f"the video ends early or is damaged: its frames stop at {end:.3f} s "
            f"of {info.duration:.3f} s"
        )


def _index(rows: Iterable[tuple[str, str, str, str]], info: VideoInfo) -> FrameIndex:
    """The index of packet rows ``(pts, dts, duration, flags)``, in stream time base units."""
    base = Fraction(info.time_base) if info.time_base else None
    shift = Fraction(str(info.container_start))
    times: list[float] = []
    keys: list[float] = []
    end: Fraction | None = None
    for pts, dts, duration, flags in rows:
        if "D" in flags:
            continue
        stamp = pts if pts not in ("", "N/A") else dts
        if stamp in ("", "N/A") or base is None:
            continue
        start = int(stamp) * base - shift
        seconds = float(start)
        times.append(seconds)
        if "K" in flags:
            keys.append(seconds)
        if duration.isdigit():
            finish = start + int(duration) * base
            end = finish if end is None or finish > end else end
    times.sort()
    keys.sort()
    return FrameIndex(tuple(times), tuple(keys), None if end is None else float(end))
