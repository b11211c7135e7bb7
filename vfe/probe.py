"""ffprobe: what a video is (duration, frame rate, size, rotation, codec) before extraction.

One ffprobe call per file, JSON output. Failures become ``ExtractionError`` with a message
a person can act on ("not a video", "no video stream"), never ffprobe's raw output with
server paths in it.
"""

from __future__ import annotations

import asyncio
import json
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
    duration = finite_or_none(stream.get("duration")) or finite_or_none(fmt.get("duration"))
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
    )


async def probe(path: Path) -> VideoInfo:
    """Run ffprobe on ``path`` (a local file) and return what it found."""
    argv = [
        ffmpeg.binary("ffprobe"),
        "-hide_banner",
        "-loglevel",
        "error",
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        f"file:{path}",  # the file protocol only, whatever the name looks like
    ]
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            done = await ffmpeg.run(argv)
    except TimeoutError:
        raise ExtractionError("reading the video's details took too long") from None
    try:
        document = json.loads(done.stdout or b"{}")
    except json.JSONDecodeError:
        document = {}
    if done.returncode != 0 or not document.get("format"):
        raise ExtractionError("the file is not a video FFmpeg can read")
    return parse(document)
