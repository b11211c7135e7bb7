"""ffprobe: what a video is (duration, frame rate, size, rotation, codec) before extraction.

One ffprobe call per file, JSON output. Failures become ``ExtractionError`` with a message
a person can act on ("not a video", "no video stream"), never ffprobe's raw output with
server paths in it.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import math
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from . import ffmpeg
from .errors import ExtractionError

PROBE_TIMEOUT = 30.0


HDR_TRANSFERS = frozenset({"smpte2084", "arib-std-b67"})


@dataclass(frozen=True)
class VideoInfo:
    """Facts about a video's first video stream, as displayed: rotation applied, and
    non-square pixels (``sar``, width over height of one pixel, as coded) made square by
    widening or narrowing the picture, as players do (1440x1080 at 4:3 shows 1920x1080)."""

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
    frames: int | None = None  # as the container's header states it, when it does
    color_transfer: str | None = None  # as tagged, e.g. "bt709", "smpte2084" (PQ)
    color_space: str | None = None  # the YUV matrix as tagged, e.g. "bt709", "smpte170m"
    sar: Fraction = Fraction(1)  # a coded pixel's width over its height (1: square)
    interlaced: bool = False  # its fields are stored woven (ffprobe's field_order tt/bb/tb/bt)

    @property
    def hdr(self) -> bool:
        """Whether the video is tagged HDR: PQ (``smpte2084``) or HLG (``arib-std-b67``)."""
        return self.color_transfer in HDR_TRANSFERS

    @property
    def assumed_matrix(self) -> str | None:
        """The YUV matrix to read this video with when it is untagged (``assumed_matrix``)."""
        return assumed_matrix(self.color_space, self.width, self.height, self.rotation, self.sar)

    def facts(self) -> dict[str, Any]:
        """What a job stores of its video (its status shows them, its run checks them)."""
        return {"duration": self.duration, "fps": self.fps, "width": self.width,
                "height": self.height, "codec": self.codec}  # fmt: skip

    @property
    def squared(self) -> tuple[int, int] | None:
        """The displayed width and height the frames are scaled to when the pixels are
        not square (``sar``); None when they are."""
        return None if self.sar == 1 else (self.width, self.height)


def assumed_matrix(
    color_space: str | None, width: int, height: int, rotation: int, sar: Fraction = Fraction(1)
) -> str | None:
    """The YUV matrix to read an untagged video with, as players do (mpv, browsers):
    BT.709 from 1280 px wide or over 576 lines as coded (before ``rotation`` and ``sar``,
    the displayed size being ``width`` x ``height``), else BT.601; None when it is tagged."""
    if color_space not in (None, "", "unknown", "unspecified"):
        return None
    if rotation in (90, 270):
        width, height = height, width
    width = round(width / sar)
    return "bt709" if width >= 1280 or height > 576 else "smpte170m"


def _sar(value: Any) -> Fraction:
    """ffprobe's ``sample_aspect_ratio`` ("4:3"); 1 when absent, unknown ("0:1") or absurd
    (beyond 1:8 to 8:1, which no real video has)."""
    try:
        sar = Fraction(str(value).replace(":", "/"))
    except (ValueError, ZeroDivisionError):
        return Fraction(1)
    return sar if Fraction(1, 8) <= sar <= 8 else Fraction(1)


def finite_or_none(value: Any) -> float | None:
    """``value`` as a finite float (ffprobe writes numbers as text), else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _rate(value: Any) -> float | None:
    try:
        rate = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        return None
    return float(rate) if rate > 0 else None


def _count(value: Any) -> int | None:
    text = str(value or "")
    return int(text) if text.isdigit() and int(text) > 0 else None


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


INTERLACED = frozenset({"tt", "bb", "tb", "bt"})  # field orders of interlaced video
RAW_STREAMS = {"h264": "H.264", "hevc": "HEVC"}  # demuxers of streams with no timestamps


def parse(document: dict[str, Any], need_duration: bool = True) -> VideoInfo:
    """Turn ffprobe's JSON into ``VideoInfo``; ``ExtractionError`` if there is no video.
    Without ``need_duration`` a file that states no duration gets 0.0, for the caller to
    fill from the frame index (``_IndexReader``: a raw MPEG-4 or MPEG-2 stream)."""
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
        if need_duration:
            raise ExtractionError(_no_duration(fmt))
        duration = 0.0
    sar = _sar(stream.get("sample_aspect_ratio"))
    width = max(1, round(width * sar))  # the lines stay; each is as wide as it shows
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
        frames=_count(stream.get("nb_frames")),
        color_transfer=stream.get("color_transfer"),
        color_space=stream.get("color_space"),
        sar=sar,
        interlaced=stream.get("field_order") in INTERLACED,
    )


def _no_duration(fmt: dict[str, Any]) -> str:
    """Why a video with no duration is refused: a raw H.264/HEVC stream carries no
    timestamps at all (FFmpeg makes some up as it decodes); anything else is cut short."""
    raw = RAW_STREAMS.get(str(fmt.get("format_name")))
    if raw is not None:
        return (f"the file is a raw {raw} stream, with no container and no timestamps, so no "
                "frame has a time; put it in a container first (ffmpeg -i FILE -c copy "
                "FILE.mp4), then submit that")  # fmt: skip
    return "cannot tell how long the video is; the file may be truncated"


def _argv(path: Path, *sections: str) -> list[str]:
    """ffprobe's argv for ``sections`` of ``path``, as compact JSON, reading through the
    file protocol only (whatever the name looks like) and real containers only."""
    guards = [arg for name, value in ffmpeg.INPUT_GUARDS.items() for arg in (f"-{name}", value)]
    return [ffmpeg.binary("ffprobe"), "-hide_banner", "-loglevel", "error", *guards, *sections,
            "-of", "json=c=1", f"file:{path}"]  # fmt: skip


async def _ffprobe(path: Path, *sections: str, limit: float) -> dict[str, Any]:
    """ffprobe's JSON about ``path`` for ``sections``; ``ExtractionError`` when it is not
    a video or takes over ``limit`` seconds."""
    argv = _argv(path, *sections)
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
    """Run ffprobe on ``path`` (a local file) and return what its headers say: quick,
    since no packet is read (``inspect`` reads them all). A file that states no duration
    has 0.0 here: ``inspect`` takes it from the frames (a WebM from a browser's
    MediaRecorder states none)."""
    document = await _ffprobe(path, "-show_format", "-show_streams", limit=PROBE_TIMEOUT)
    return parse(document, need_duration=False)


@dataclass(frozen=True)
class FrameIndex:
    """Every frame's presentation time and which are keyframes, from packets alone.

    Times are on FFmpeg's timeline (the container start shifted to 0), sorted. Reading
    packets costs a demux of the file, no decoding: tens of milliseconds for minutes of
    video. Packets the demuxer marks to be discarded (edit lists) are left out.
    """

    times: Sequence[float]  # an ``array("d")`` when read from a file: 8 bytes a frame
    keyframes: Sequence[float]
    end: float | None = None  # where the last frame ends (its time plus its duration)
    # Some packet had no presentation time (AVI, raw MPEG-2), so its decode time stands
    # in: with B-frames the times are the right ones, but a keyframe is shown later than
    # the time it is listed at (by the reordering), so keyframes are picked by FFmpeg's
    # own flag as they are decoded (``Plan.by_key``).
    decode_times: bool = False

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
        times = self.times
        if len(times) < 3:
            return False
        low = high = times[1] - times[0]
        for a, b in itertools.pairwise(times):
            gap = b - a
            low, high = min(low, gap), max(high, gap)
        mean = (times[-1] - times[0]) / (len(times) - 1)
        return high - low > 0.1 * mean


EPSILON = 1e-6
_CACHE: OrderedDict[tuple[str, int, int], tuple[VideoInfo, FrameIndex]] = OrderedDict()
_CACHE_FRAMES = 2_000_000  # frame times, about 16 MB: nine hours of 60 fps, or many short videos


class TooManyFrames(ExtractionError):
    """The video has more frames than the limit it was read with (``count`` so far)."""

    def __init__(self, count: int) -> None:
        super().__init__(f"the video has more than {count} frames")
        self.count = count


# Index reads hold a thread for as long as ffprobe runs: their own pool, so they never
# take the threads that file work and health checks use (threads start on first use).
_READERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="vfe-index")
INDEX_ARGS = ("-select_streams", "V:0",  # the first video stream that is not cover art
              "-show_entries", "packet=pts,dts,duration,flags",
              "-show_format", "-show_streams")  # fmt: skip


def index_argv(path: Path) -> list[str]:
    """ffprobe's argv for the details and frame index of ``path`` (what ``inspect`` runs)."""
    return _argv(path, *INDEX_ARGS)


async def inspect(path: Path, max_frames: int | None = None) -> tuple[VideoInfo, FrameIndex]:
    """What the video is (as ``probe``) and its frame index, from one ffprobe run.

    ffprobe's output is read as it comes, in a worker thread, into compact arrays (about
    9 bytes a frame), so neither memory nor the event loop pays for a long index; past
    ``max_frames`` frames ffprobe is stopped and ``TooManyFrames`` raised at once.
    Cached per file (by path, size and modification time), least recently used first out
    once the cached indexes hold more than ``_CACHE_FRAMES`` frames. Raises
    ``ExtractionError`` for a file that is not a video, has no video stream, or was cut
    short. If the caller is cancelled, ffprobe is killed.
    """
    key = await _cache_key(path)
    cached = _CACHE.get(key)
    if cached is not None:
        if max_frames is not None and len(cached[1].times) > max_frames:
            raise TooManyFrames(max_frames)
        _CACHE.move_to_end(key)
        return cached
    reader = _IndexReader(ffmpeg.LineReader(index_argv(path)), max_frames)
    try:
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(_READERS, reader.read)
    except asyncio.CancelledError:
        reader.process.stop()  # the thread then sees the end of the output and returns
        raise
    _CACHE[key] = result
    held = sum(len(i.times) for _, i in _CACHE.values())
    while held > _CACHE_FRAMES and len(_CACHE) > 1:  # the newest stays, however long
        _, (_, dropped) = _CACHE.popitem(last=False)
        held -= len(dropped.times)
    return result


class _IndexReader:
    """Reads ffprobe's compact JSON (``json=c=1``: one packet a line, packets first) as a
    stream: packets into arrays of stamps, the streams and format kept as text to parse
    once they have all come. Runs in a worker thread."""

    def __init__(self, process: ffmpeg.LineReader, max_frames: int | None) -> None:
        self.process = process
        self.max_frames = max_frames
        self.stamps = array("q")  # each packet's pts (its dts when it has none), time base
        self.keys = array("q")
        self.decode_times = False  # some packet had a dts and no pts
        self.last_end: int | None = None  # the latest stamp + duration
        self.rest: list[bytes] = []  # everything after the packets
        self.in_packets = False
        self.after_packets = False
        self.too_many = False
        self.partial: list[bytes] = []  # a packet printed over several lines (side data)
        self.depth = 0

    def read(self) -> tuple[VideoInfo, FrameIndex]:
        try:
            code = self.process.run(self.line, PROBE_TIMEOUT * 10)
        except ValueError:  # a line that is not what ffprobe writes (cut, or crafted)
            raise ExtractionError("the file is not a video FFmpeg can read") from None
        if self.too_many:
            assert self.max_frames is not None
            raise TooManyFrames(self.max_frames)
        if self.process.timed_out:
            raise ExtractionError("reading the video's details took too long")
        try:
            document = json.loads(b"{" + b"".join(self.rest)) if self.after_packets else {}
        except json.JSONDecodeError:
            document = {}
        if code != 0 or not isinstance(document, dict) or not document.get("format"):
            raise ExtractionError("the file is not a video FFmpeg can read")
        info = parse(document, need_duration=False)
        index = self.index(info)
        if not info.own_duration and index.end is not None and index.end > 0:
            # the container's duration may be the audio's, or count a start offset (a
            # Matroska file starting at 5 s states 9 s for 4 s of video): the frames' own
            # end is the video's length; a file that states none gets it this way too
            info = replace(info, duration=index.end)
        if info.duration <= 0:
            raise ExtractionError(_no_duration(document.get("format") or {}))
        check_complete(info, index)
        return info, index

    def line(self, raw: bytes) -> bool:
        """One line of output; False stops ffprobe (over the frame limit)."""
        if self.after_packets:
            self.rest.append(raw)
            return True
        text = raw.strip()
        if not self.in_packets:
            if text.startswith(b'"packets"'):
                self.in_packets = True
            elif text.startswith(b'"streams"'):  # no packets section at all
                self.after_packets = True
                self.rest.append(raw)
            return True
        if self.depth or text.startswith(b"{"):
            self.partial.append(text)
            self.depth += text.count(b"{") - text.count(b"}")
            if self.depth > 0:
                return True  # the packet goes on (its side data) on the next lines
            whole, self.partial, self.depth = b"".join(self.partial), [], 0
            return self.packet(json.loads(whole.rstrip(b",")))
        self.after_packets = text.startswith(b"]")
        return True

    def packet(self, packet: dict[str, Any]) -> bool:
        flags = str(packet.get("flags", ""))
        if "D" in flags:
            return True  # to be discarded (edit lists): never shown
        stamp = packet.get("pts")
        if not isinstance(stamp, int):
            stamp = packet.get("dts")
            if not isinstance(stamp, int):
                return True
            self.decode_times = True
        if self.max_frames is not None and len(self.stamps) >= self.max_frames:
            self.too_many = True
            return False
        self.stamps.append(stamp)
        if "K" in flags:
            self.keys.append(stamp)
        duration = packet.get("duration")
        if isinstance(duration, int) and duration >= 0:
            finish = stamp + duration
            self.last_end = finish if self.last_end is None else max(self.last_end, finish)
        return True

    def index(self, info: VideoInfo) -> FrameIndex:
        """The stamps as seconds on FFmpeg's timeline (the container start shifted to 0),
        each exactly ``float(stamp * time_base - start)``, sorted."""
        if not info.time_base or not self.stamps:
            return FrameIndex(array("d"), array("d"))
        base, shift = Fraction(info.time_base), Fraction(str(info.container_start))
        scale = base.numerator * shift.denominator
        offset = shift.numerator * base.denominator
        whole = base.denominator * shift.denominator

        def seconds(stamp: int) -> float:  # int / int: correctly rounded, as float(Fraction)
            return (stamp * scale - offset) / whole

        times = array("d", sorted(map(seconds, self.stamps)))
        keys = array("d", sorted(map(seconds, self.keys)))
        end = None if self.last_end is None else seconds(self.last_end)
        return FrameIndex(times, keys, end, self.decode_times)


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
