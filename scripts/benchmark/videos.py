"""The videos to benchmark: test videos generated with lavfi and cached, the shared clips,
and what ffprobe says about each (stream facts, every frame's time, the keyframes)."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from . import ROOT
from .runner import FFMPEG_QUIET, BenchError, run_text

SHARED_MEDIA = ROOT.parent / "shared" / "media"
SHARED_CLIPS = ("sample.mp4", "sample2.mp4", "sample_long.mp4")
X264_PRESET = "veryfast"  # part of every generated H.264 file's name, so a change regenerates


@dataclass(frozen=True)
class Spec:
    """A test video generated with a lavfi source (``testsrc2`` at 30 fps unless told)
    and cached by file name."""

    key: str
    filename: str
    size: str
    seconds: int
    codec_args: tuple[str, ...]
    describe: str
    source: str = "testsrc2"  # a lavfi source, with its own options: "color=c=blue"
    rate: int = 30

    def lavfi(self) -> str:
        """The ``-f lavfi`` input: the source with size, rate and duration added."""
        joint = ":" if "=" in self.source else "="
        return f"{self.source}{joint}size={self.size}:rate={self.rate}:duration={self.seconds}"


def x264(gop: int) -> tuple[str, ...]:
    return ("-c:v", "libx264", "-preset", X264_PRESET, "-g", str(gop), "-pix_fmt", "yuv420p")


def minutes(seconds: int) -> str:
    """A length as the descriptions write it: ``3 min``, ``90 s``."""
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"


def h264_1080p(key: str, gop: int, seconds: int) -> Spec:
    """A 1080p30 libx264 test video with a keyframe every ``gop`` frames."""
    return Spec(
        key,
        f"h264_1080p30_gop{gop}_{seconds}s_{X264_PRESET}.mp4",
        "1920x1080",
        seconds,
        x264(gop),
        f"1080p30 H.264 {minutes(seconds)}, libx264 -preset {X264_PRESET} -g {gop}",
    )


SPECS = (
    h264_1080p("h264-gop250", 250, 180),
    h264_1080p("h264-gop30", 30, 180),
    Spec(
        "vp9",
        "vp9_720p30_60s_rt8.webm",
        "1280x720",
        60,
        ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "2M"),
        "720p30 VP9 1 min, libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 2M",
    ),
)
# The same video as h264-gop250 at a third of the length, for the memory-vs-length
# section; not in the main table unless named with --videos.
LENGTH_PAIR = (h264_1080p("h264-gop250-60s", 250, 60), SPECS[0])
# The short clip of issue 11 (10 s, 640x272) for the start-up section, where the fixed
# cost of starting vfe shows most; also not in the main table unless named.
STARTUP_SPEC = Spec(
    "startup",
    f"h264_640x272p30_gop250_10s_{X264_PRESET}.mp4",
    "640x272",
    10,
    x264(250),
    f"640x272 30 fps H.264 10 s, libx264 -preset {X264_PRESET} -g 250",
)
EXTRA_SPECS = (LENGTH_PAIR[0], STARTUP_SPEC)
# Issue 13's hostile upload for the probing section: 39 MB that state 3,000,000 frames
# (16x16, 1000 fps, 50 min, one keyframe every 10,000 frames). Not in the main table.
PROBING_SPEC = Spec(
    "tiny_3m",
    "tiny_3m.mp4",
    "16x16",
    3000,
    ("-c:v", "libx264", "-g", "10000", "-preset", "ultrafast"),
    "16x16 1000 fps H.264 50 min (3,000,000 frames) of blue, libx264 -preset ultrafast -g 10000",
    source="color=c=blue",
    rate=1000,
)
QUICK_SPEC = Spec(
    "quick",
    f"h264_360p30_gop250_10s_{X264_PRESET}.mp4",
    "640x360",
    10,
    x264(250),
    f"360p30 H.264 10 s, libx264 -preset {X264_PRESET} -g 250",
)


@dataclass
class Video:
    """A benchmarked file and what ffprobe says about its first video stream."""

    key: str
    path: Path
    origin: str
    codec: str = ""
    width: int = 0
    height: int = 0
    fps: float = 0.0
    duration: float = 0.0
    frame_times: list[float] = field(default_factory=list, repr=False)
    keyframes: list[int] = field(default_factory=list, repr=False)
    color_space: str | None = None  # the YUV matrix as tagged (None, "unknown": untagged)

    def gop_text(self) -> str:
        gaps = [b - a for a, b in zip(self.keyframes, self.keyframes[1:], strict=False)]
        if not gaps:
            return f"{len(self.keyframes)} keyframe(s)"
        typical = statistics.median(gaps)
        spread = "" if min(gaps) == max(gaps) else f" (min {min(gaps)}, max {max(gaps)})"
        secs = typical / self.fps if self.fps else 0.0
        return f"keyframe every {typical:g} frames = {secs:.2f} s{spread}"

    def summary(self) -> dict[str, Any]:
        gaps = [b - a for a, b in zip(self.keyframes, self.keyframes[1:], strict=False)]
        return {
            "key": self.key,
            "path": str(self.path),
            "origin": self.origin,
            "codec": self.codec,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "duration": self.duration,
            "frames": len(self.frame_times),
            "keyframes": len(self.keyframes),
            "keyframe_gap_frames": {
                "median": statistics.median(gaps) if gaps else None,
                "min": min(gaps, default=None),
                "max": max(gaps, default=None),
            },
        }


def generate(spec: Spec, dest: Path) -> None:
    """Encode ``spec`` to ``dest`` (via a ``.part`` file), printing progress as it goes."""
    part = dest.with_name(dest.name + ".part")
    container = "webm" if dest.suffix == ".webm" else "mp4"
    argv = [
        "ffmpeg",
        *FFMPEG_QUIET,
        "-y",
        "-progress",
        "pipe:1",
        "-nostats",
        "-f",
        "lavfi",
        "-i",
        spec.lavfi(),
        *spec.codec_args,
        "-f",
        container,
        str(part),
    ]
    print(f"generating {dest.name}: {spec.describe}", flush=True)
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stderr is not None
    errors: list[str] = []
    drain = threading.Thread(target=lambda: errors.extend(proc.stderr or []), daemon=True)
    drain.start()
    shown = -10
    for line in proc.stdout:
        if line.startswith("out_time_us=") and line[12:].strip().isdigit():
            percent = int(line[12:]) / 1e6 / spec.seconds * 100
            if percent >= shown + 10:
                shown = int(percent // 10 * 10)
                print(f"  {dest.name}: {shown}%", flush=True)
    code = proc.wait()
    drain.join()
    if code != 0:
        part.unlink(missing_ok=True)
        raise BenchError(f"generating {dest.name} failed: {''.join(errors[-5:]).strip()}")
    part.rename(dest)
    print(f"  {dest.name}: done", flush=True)


def probe(video: Video) -> Video:
    """Fill in stream facts and every frame's presentation time (from packets: cheap)."""
    info = json.loads(
        run_text(
            [
                "ffprobe",
                "-v",
                "error",
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream=codec_name,width,height,avg_frame_rate,r_frame_rate,duration,color_space"
                ":format=duration",
                "-of",
                "json",
                str(video.path),
            ]
        )
    )
    stream = info["streams"][0]
    video.codec = stream.get("codec_name", "?")
    video.width, video.height = int(stream["width"]), int(stream["height"])
    rate = stream.get("avg_frame_rate") or stream.get("r_frame_rate") or "0/1"
    video.fps = float(Fraction(rate)) if rate != "0/0" else 0.0
    video.duration = float(stream.get("duration") or info["format"]["duration"])
    video.color_space = stream.get("color_space")
    rows = run_text(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time,flags",
            "-of",
            "csv=p=0",
            str(video.path),
        ]
    )
    packets: list[tuple[float, bool]] = []
    for row in rows.splitlines():
        pts, _, flags = row.partition(",")
        if pts and pts != "N/A" and "D" not in flags:  # D: discarded by the demuxer
            packets.append((float(pts), "K" in flags))
    packets.sort()
    video.frame_times = [pts for pts, _ in packets]
    video.keyframes = [n for n, (_, key) in enumerate(packets) if key]
    return video


def cached_video(spec: Spec, cache: Path) -> Video:
    """``spec``'s file in ``cache/videos`` (generated when missing), not yet probed."""
    dest = cache / "videos" / spec.filename
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        generate(spec, dest)
    return Video(spec.key, dest, f"generated: {spec.describe}")


def remuxed(video: Video, container: str, suffix: str) -> Video:
    """``video`` copied stream for stream (``-c copy``) into ``container``, next to it
    with ``suffix``; made when missing. Not yet probed."""
    dest = video.path.with_suffix(suffix)
    if not dest.is_file():
        part = dest.with_name(dest.name + ".part")
        print(f"remuxing {video.path.name} to {dest.name}", flush=True)
        argv = ["ffmpeg", *FFMPEG_QUIET, "-y", "-i", str(video.path), "-c", "copy"]
        try:
            run_text([*argv, "-f", container, str(part)])
        except BenchError:
            part.unlink(missing_ok=True)
            raise
        part.rename(dest)
    origin = f"{video.origin}; ffmpeg -c copy to {container}"
    return Video(f"{video.key}-{suffix.lstrip('.')}", dest, origin)


def collect_videos(args: argparse.Namespace, cache: Path) -> list[Video]:
    """The videos to run, generating missing test videos into ``cache/videos``."""
    shared = [
        Video(Path(name).stem, SHARED_MEDIA / name, "shared")
        for name in SHARED_CLIPS
        if (SHARED_MEDIA / name).is_file()
    ]
    specs = {spec.key: spec for spec in (*SPECS, *EXTRA_SPECS, QUICK_SPEC)}
    if args.videos:
        keys = [key.strip() for key in args.videos.split(",") if key.strip()]
    elif args.quick:
        keys = [video.key for video in shared] or [QUICK_SPEC.key]
    else:
        keys = [spec.key for spec in SPECS] + [video.key for video in shared]
    known = {video.key: video for video in shared}
    chosen: list[Video] = []
    for key in keys:
        if key in known:
            chosen.append(known[key])
        elif key in specs:
            chosen.append(cached_video(specs[key], cache))
        elif Path(key).is_file():
            chosen.append(Video(Path(key).stem, Path(key).resolve(), "file"))
        else:
            choices = ", ".join([*specs, *known])
            raise BenchError(f"unknown video {key!r}: use one of {choices}, or a file path")
    return [probe(video) for video in chosen]
