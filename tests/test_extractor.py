"""Extractor: exact frames of every mode and strategy, checked against a reference decode.

The reference is ffprobe decoding every frame (``best_effort_timestamp_time``), not our
packet index. For each target ``t`` the expected frame is the first frame whose time is
``>= t`` (exact decimals), written once under the latest target it answers; pixels are
compared with FFmpeg alone decoding that frame sequentially (``select=eq(n,N)``). Seek
plans are forced on small clips by planning with a large picture size (the cost model
then prices a process start at a frame or two); the extraction itself uses the real info.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import subprocess
import uuid
from bisect import bisect_left
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import patience, reference_frames, stored_frames
from vfe import planner, probe, runs
from vfe.errors import ExtractionError
from vfe.extractor import Extractor
from vfe.frames import FrameStore, frame_name
from vfe.models import Frame, ImageFormat, Mode
from vfe.output import Output
from vfe.planner import Sampling, Strategy
from vfe.runs import JobRuns, _Run
from vfe.storage import Storages
from vfe.storage.local import LocalStorage


def run_ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
        timeout=120,
    )


class Clips:
    """Clips this file needs beyond the shared ``media`` ones, made once per session."""

    def __init__(self, media: Any) -> None:
        self.media = media
        self.folder: Path = media.folder

    def _make(self, name: str, *args: str) -> Path:
        path = self.folder / name
        if not path.exists():
            run_ffmpeg(*args, str(path))
        return path

    def g10(self) -> Path:
        """4 s, 25 fps, a keyframe every 10 frames."""
        return self.media.clip("ext-g10.mp4", duration=4, gop=10)

    def ntsc(self) -> Path:
        """3 s at 29.97 fps, a keyframe every 15 frames."""
        return self.media.clip("ext-2997.mp4", duration=3, rate="30000/1001", gop=15)

    def vp9(self) -> Path:
        return self.media.clip("ext-vp9.webm", duration=3, codec="libvpx-vp9", gop=10)

    def bframes(self) -> Path:
        """B-frames (an edit list shifts the first pts), a keyframe every 25 frames."""
        return self.media.clip(
            "ext-bf.mp4", duration=4, gop=25, extra=("-preset", "veryfast", "-bf", "2")
        )

    def vfr(self) -> Path:
        """Jittered 25 fps for 1 s (gaps 53/53/14 ms), then 10 fps: variable frame rate."""
        expr = "(if(lt(N,25),N*0.04+0.013*mod(N,3),1+(N-25)*0.1))/TB"
        return self._make(
            "ext-vfr.mp4",
            "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=2",
            "-vf", f"settb=1/1000,setpts='{expr}'",
            "-fps_mode", "vfr", "-enc_time_base", "1/1000", "-video_track_timescale", "1000",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "8",
        )  # fmt: skip

    def rotated(self) -> Path:
        """The short-GOP clip with rotation metadata (portrait phone video)."""
        return self._make(
            "ext-rot90.mp4", "-i", str(self.g10()), "-c", "copy", "-metadata:s:v:0", "rotate=90"
        )

    def anamorphic(self, rotate: int = 0) -> Path:
        """The short-GOP clip with 4:3 pixels, as HDV has (320x240 coded, 427x240 shown),
        with rotation metadata too when asked."""
        wide = self._make(
            "ext-sar43.mp4", "-i", str(self.g10()), "-vf", "setsar=4/3", "-c:v", "libx264",
            "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "10",
        )  # fmt: skip
        if not rotate:
            return wide
        return self._make(f"ext-sar43-rot{rotate}.mp4", "-i", str(wide), "-c", "copy",
                          "-metadata:s:v:0", f"rotate={rotate}")  # fmt: skip

    def mpegts(self) -> Path:
        """The B-frame clip remuxed to MPEG-TS: the container starts at 1.4 s or so."""
        return self._make("ext-bf.ts", "-i", str(self.bframes()), "-c", "copy", "-f", "mpegts")

    def damaged(self) -> Path:
        """A faststart mp4 cut in half: the index is whole, so it probes, but data ends early."""
        path = self.folder / "ext-damaged.mp4"
        if not path.exists():
            whole = self.media.clip(
                "ext-faststart.mp4", duration=6, extra=("-movflags", "+faststart")
            ).read_bytes()
            path.write_bytes(whole[: len(whole) // 2])
        return path


@pytest.fixture(scope="session")
def clips(media: Any) -> Clips:
    return Clips(media)


def frame_times(path: Path) -> tuple[Decimal, ...]:
    """Every video frame's presentation time from a real decode, in presentation order."""
    return tuple(t for t, _ in reference_frames(path))


@dataclass
class Expected:
    index: int
    timestamp: float
    target_time: float
    frame_number: int  # position of the source frame in presentation order


def expected_frames(times: tuple[Decimal, ...], targets: tuple[float, ...]) -> list[Expected]:
    """Brute force: for each target the first frame at or after it; each frame once,
    under the latest target that maps to it."""
    by_frame: dict[int, int] = {}
    for k, target in enumerate(targets):
        n = bisect_left(times, Decimal(repr(target)))
        if n < len(times):
            by_frame[n] = k
    return [Expected(k, float(times[n]), targets[k], n) for n, k in sorted(by_frame.items())]


@dataclass
class Result:
    store: FrameStore
    job_id: str
    clip: Path
    info: probe.VideoInfo
    plan: planner.Plan
    written: int
    output: Output
    frames: list[Frame] = field(default_factory=list)
    batches: int = 0

    def path(self, frame: Frame) -> Path:
        return stored(self.store, frame)


def frame_store(tmp_path: Path) -> FrameStore:
    """The service's frame store on a folder, for a job that is always there."""
    base = tmp_path / "frames"

    async def hold(job_id: str, blobs: Any) -> bool:
        return True

    return FrameStore(Storages(LocalStorage(base), LocalStorage(tmp_path / "sources")), base, hold)


def stored(store: FrameStore, frame: Frame) -> Path:
    """The file that keeps a frame's bytes."""
    path = store.local_file(frame)
    assert path is not None
    return path


MAGIC = {
    ImageFormat.JPG: lambda d: d[:2] == b"\xff\xd8" and d[-2:] == b"\xff\xd9",
    ImageFormat.PNG: lambda d: d[:8] == b"\x89PNG\r\n\x1a\n" and d[-8:-4] == b"IEND",
    ImageFormat.WEBP: lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP",
}


async def make_plan(
    clip: Path, sampling: Sampling, strategy: Strategy | None = None, huge: bool = False
) -> tuple[probe.VideoInfo, planner.Plan]:
    info, index = await probe.inspect(clip)
    priced = info
    if huge or strategy in (Strategy.SEEK, Strategy.MIXED, Strategy.SCENE):
        # priced as 8K: a process start costs about a frame decode, so seeking pays and
        # a select pass is cut into one piece per CPU
        priced = dataclasses.replace(info, width=7680, height=4320)
    plan = planner.plan(
        sampling, priced, index, cpus=2, memory_mib=1e9 if priced is not info else None
    )
    if strategy is not None:
        assert plan.strategy is strategy, plan.describe()
    return info, plan


async def extract(
    tmp_path: Path,
    clip: Path,
    sampling: Sampling | float,
    strategy: Strategy | None = None,
    output: Output | None = None,
    huge: bool = False,
) -> Result:
    if not isinstance(sampling, Sampling):
        sampling = Sampling(interval=sampling)
    output = output or Output()
    store = frame_store(tmp_path)
    job_id = str(uuid.uuid4())
    info, plan = await make_plan(clip, sampling, strategy, huge)
    frames: list[Frame] = []
    batches = 0

    async def on_frames(batch: list[Frame]) -> None:
        nonlocal batches
        batches += 1
        for frame in batch:  # each reported file is whole at the moment it is reported
            data = stored(store, frame).read_bytes()
            assert len(data) == frame.size_bytes > 0
            assert hashlib.sha256(data).hexdigest() == frame.checksum
            assert MAGIC[output.format](data), frame.filename  # a whole image of the format
        frames.extend(batch)

    written = (await Extractor(store).run(job_id, clip, info, plan, on_frames, output)).written
    assert not store.work_dir(job_id).exists()
    frames.sort(key=lambda f: f.index)  # seek groups finish in any order
    return Result(store, job_id, clip, info, plan, written, output, frames, batches)


def check_exact(result: Result) -> list[Expected]:
    want = expected_frames(frame_times(result.clip), result.plan.targets)
    got = result.frames
    assert [f.index for f in got] == [e.index for e in want]
    assert [f.target_time for f in got] == [e.target_time for e in want]
    assert [f.timestamp for f in got] == pytest.approx([e.timestamp for e in want], abs=1e-6)
    ext = result.output.format.value
    assert [f.filename for f in got] == [frame_name(f.index, f.timestamp, ext) for f in got]
    assert result.written == len(want) == result.plan.total
    kept = {p.name for p in stored_frames(result.store.base)}
    assert kept == {f"{f.checksum}.{ext}" for f in got}  # nothing else left behind
    assert list(result.store.scratch.iterdir()) == []
    for frame in got:
        assert frame.job_id == result.job_id
        assert frame.target_time <= frame.timestamp + 1e-6
    return want


def decode_reference(clip: Path, number: int, out: Path) -> bytes:
    """FFmpeg alone decodes frame ``number`` (presentation order, sequentially) to a JPEG."""
    run_ffmpeg(
        "-i", f"file:{clip}", "-vf", rf"select=eq(n\,{number})",
        "-fps_mode", "passthrough", "-frames:v", "1", "-q:v", "2", "-f", "image2", str(out),
    )  # fmt: skip
    return out.read_bytes()


def check_pixels(result: Result, want: list[Expected], tmp_path: Path, picks: list[int]) -> None:
    """Ours is byte-identical to the sequential reference decode of the expected frame
    (the MJPEG encoder is deterministic for identical input; a frame decoded after a seek
    is the same picture), and differs from its neighbour (testsrc2 changes every frame),
    so identity is not an accident."""
    count = len(frame_times(result.clip))
    for pick in picks:
        frame, exp = result.frames[pick], want[pick]
        ours = result.path(frame).read_bytes()
        ref = decode_reference(result.clip, exp.frame_number, tmp_path / f"ref{pick}.jpg")
        assert ours == ref, f"frame {frame.filename} is not source frame {exp.frame_number}"
        n = exp.frame_number
        other = decode_reference(
            result.clip, n + 1 if n + 1 < count else n - 1, tmp_path / "nb.jpg"
        )
        assert other != ours


def image_size(path: Path) -> tuple[int, int]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=width,height", "-of", "csv=p=0",
         str(path)],
        capture_output=True, check=True, text=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    width, height = out.split(",")[:2]
    return int(width), int(height)


# --- interval mode on assorted clips ----------------------------------------------------


async def test_25fps_half_second_is_exact(media: Any, tmp_path: Path) -> None:
    clip = media.clip("ext-25.mp4")
    result = await extract(tmp_path, clip, 0.5)
    assert result.plan.strategy is Strategy.SELECT
    want = check_exact(result)
    assert [f.timestamp for f in result.frames] == [0.0, 0.52, 1.0, 1.52]
    assert [f.target_time for f in result.frames] == [0.0, 0.5, 1.0, 1.5]
    assert [f.filename for f in result.frames][:2] == ["000000_0.000.jpg", "000001_0.520.jpg"]
    for frame in result.frames:
        assert abs(frame.timestamp - frame.target_time) < 1 / 25
        assert (frame.width, frame.height) == (320, 240)
        assert image_size(result.path(frame)) == (320, 240)
    check_pixels(result, want, tmp_path, [0, 1, 3])


async def test_ntsc_29_97_is_exact_and_does_not_drift(clips: Clips, tmp_path: Path) -> None:
    result = await extract(tmp_path, clips.ntsc(), 0.25)
    want = check_exact(result)
    assert len(result.frames) == 12
    for frame in result.frames:
        assert abs(frame.timestamp - frame.target_time) < 1001 / 30000
    # 0.25 s is 7.49 frames: the first frame at or after it is frame 8 (0.266933 s)
    assert result.frames[1].timestamp == pytest.approx(8 * 1001 / 30000, abs=1e-6)
    check_pixels(result, want, tmp_path, [1, 11])


async def test_variable_frame_rate_is_exact(clips: Clips, tmp_path: Path) -> None:
    clip = clips.vfr()
    gaps = {round(float(b - a), 3) for a, b in itertools.pairwise(frame_times(clip))}
    assert len(gaps) >= 3  # really variable
    result = await extract(tmp_path, clip, 0.1)
    want = check_exact(result)
    # target 0.1 falls between 0.053 and 0.106: the frame shown at 0.1 is written
    assert result.frames[1].timestamp == 0.106
    assert result.frames[1].target_time == 0.1
    # in the 10 fps part some frames sit a millisecond before a target (1.399 < 1.4):
    # that target takes the next frame and the next target shares it, written once
    assert len(result.frames) < len(result.plan.targets)
    assert len({f.timestamp for f in result.frames}) == len(result.frames)
    check_pixels(result, want, tmp_path, [1, 4, len(want) - 1])


def combing(image: Path) -> float:
    """How woven a picture looks: each line's distance from the mean of its neighbours,
    over the distance between lines two apart (about 0.5 for a whole picture; over 1 when
    two fields of a moving scene are woven together)."""
    import numpy as np

    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(image), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        capture_output=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    width, height = image_size(image)
    grey = np.frombuffer(raw, np.uint8).reshape(height, width).astype(float)
    near = np.abs(grey[1:-1] - (grey[:-2] + grey[2:]) / 2).mean()
    return float(near / max(np.abs(grey[2:] - grey[:-2]).mean(), 1e-9))


async def test_interlaced_frames_are_shown_as_a_player_shows_them(
    clips: Clips, tmp_path: Path
) -> None:
    """Two fields woven into each frame (25i MPEG-2, top field first): a frame comes out
    as its first field, not combed; the same frames, at the same times."""
    clip = clips._make(
        "ext-interlaced.ts", "-f", "lavfi", "-i",
        "testsrc2=size=720x576:rate=50,tinterlace=interleave_top,fieldorder=tff", "-t", "2",
        "-c:v", "mpeg2video", "-flags", "+ilme+ildct", "-top", "1", "-b:v", "6M",
    )  # fmt: skip
    result = await extract(tmp_path, clip, Sampling(mode=Mode.TIMESTAMPS, timestamps=(0.52, 1.2)))
    assert result.info.interlaced
    want = check_exact(result)
    # each process's input ends at the frame after its last (the deinterlacer lets a
    # frame go only when the next one comes), not at the end of the video
    runs = JobRuns(clip, result.info, Output(), tmp_path)
    for group in result.plan.groups:
        assert group.until is not None
        assert runs._stop_at(result.plan, group) == group.until + result.info.container_start
    progressive = JobRuns(clip, dataclasses.replace(result.info, interlaced=False), Output(),
                          tmp_path)  # fmt: skip
    assert progressive._stop_at(result.plan, result.plan.groups[0]) is None
    for frame, expected in zip(result.frames, want, strict=True):
        woven = decode_reference(clip, expected.frame_number, tmp_path / "woven.jpg")
        (tmp_path / "woven.jpg").write_bytes(woven)
        assert combing(tmp_path / "woven.jpg") > 1.0  # FFmpeg's plain decode: combed
        assert combing(result.path(frame)) < 0.7


async def test_rotated_clip_comes_out_upright(clips: Clips, tmp_path: Path) -> None:
    result = await extract(tmp_path, clips.rotated(), 0.5)
    assert result.info.rotation in (90, 270)
    want = check_exact(result)
    for frame in result.frames:
        assert (frame.width, frame.height) == (240, 320)
    assert image_size(result.path(result.frames[0])) == (240, 320)
    check_pixels(result, want, tmp_path, [1])  # the reference autorotates too


def pixel_aspect(path: Path) -> str:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=sample_aspect_ratio", "-of",
         "csv=p=0", str(path)],
        capture_output=True, check=True, text=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    return out


@pytest.mark.parametrize(("rotate", "shown"), [(0, (427, 240)), (90, (240, 427))])
async def test_non_square_pixels_come_out_as_they_display(
    clips: Clips, tmp_path: Path, rotate: int, shown: tuple[int, int]
) -> None:
    """4:3 pixels (HDV, PAL and NTSC DV have others) are shown wider than coded: frames
    are that shape, with square pixels, so no viewer stretches them again."""
    result = await extract(tmp_path, clips.anamorphic(rotate), 1.0)
    assert (result.info.width, result.info.height, result.info.sar) == (*shown, Fraction(4, 3))
    check_exact(result)
    assert {(f.width, f.height) for f in result.frames} == {shown}
    first = result.path(result.frames[0])
    assert image_size(first) == shown and pixel_aspect(first) == "1:1"
    boxed = await extract(tmp_path / "boxed", clips.anamorphic(rotate), 2.0,
                          output=Output(width=160, height=160))  # fmt: skip
    assert {(f.width, f.height) for f in boxed.frames} == {(160, 90) if rotate == 0 else (90, 160)}


async def test_vp9_webm(clips: Clips, tmp_path: Path) -> None:
    result = await extract(tmp_path, clips.vp9(), 0.3)
    assert result.info.codec == "vp9"
    want = check_exact(result)
    assert len(want) == 10
    assert [f.timestamp for f in result.frames][:3] == pytest.approx([0.0, 0.32, 0.6])
    check_pixels(result, want, tmp_path, [1, 9])


async def test_odd_size(media: Any, tmp_path: Path) -> None:
    clip = media.clip(
        "ext-odd.mp4",
        duration=1,
        size="322x242",
        extra=("-vf", "format=yuv444p,crop=321:241:0:0", "-pix_fmt", "yuv444p"),
    )
    result = await extract(tmp_path, clip, 0.4)
    check_exact(result)
    assert image_size(result.path(result.frames[0])) == (321, 241)
    assert (result.frames[0].width, result.frames[0].height) == (321, 241)


async def test_interval_longer_than_video_gives_the_first_frame(media: Any, tmp_path: Path) -> None:
    result = await extract(tmp_path, media.clip("ext-25.mp4"), 60.0)
    assert result.plan.total == 1
    check_exact(result)
    assert [(f.index, f.timestamp, f.filename) for f in result.frames] == [
        (0, 0.0, "000000_0.000.jpg")
    ]


async def test_interval_below_frame_spacing_writes_each_frame_once(
    media: Any, tmp_path: Path
) -> None:
    clip = media.clip("ext-25.mp4")
    result = await extract(tmp_path, clip, 0.015)  # ~2.7 targets per frame
    want = check_exact(result)
    assert len(result.plan.targets) > len(frame_times(clip))
    # every source frame is the answer to some target, and is written exactly once
    assert len(result.frames) == len(frame_times(clip)) == 50
    assert len({f.checksum for f in result.frames}) == 50
    for frame in result.frames:  # the index is the latest target the frame answers
        assert frame.index == int(Decimal(repr(frame.timestamp)) / Decimal("0.015"))
    check_pixels(result, want, tmp_path, [7])


async def test_frames_arrive_in_several_batches_of_whole_files(media: Any, tmp_path: Path) -> None:
    result = await extract(tmp_path, media.long(), 0.2)
    check_exact(result)
    assert result.written == 100
    assert result.batches >= 2  # reported while FFmpeg runs, not all at the end


# --- every mode, every strategy -----------------------------------------------------------

STAMPS = (0.1, 0.13, 1.7, 1.71, 2.5, 2.93, 9.0)  # 9.0 is after the end: not a target
SEEK, SELECT, MIXED, KEYFRAMES = Strategy.SEEK, Strategy.SELECT, Strategy.MIXED, Strategy.KEYFRAMES
CASES = [  # (clip, sampling, strategy, priced as 8K: select passes cut into pieces)
    ("g10", Sampling(interval=1.6), SEEK, True),
    ("g10", Sampling(interval=0.3, start=0.5, end=2.9, max_frames=6), SELECT, False),
    ("g10", Sampling(mode=Mode.COUNT, count=100, end=1.0), SELECT, True),
    ("g10", Sampling(mode=Mode.KEYFRAMES, start=0.5, end=3.0, max_frames=3), KEYFRAMES, False),
    ("ntsc", Sampling(mode=Mode.FPS, fps=3, start=0.7, end=2.5, max_frames=5), SELECT, False),
    ("ntsc", Sampling(mode=Mode.TIMESTAMPS, timestamps=STAMPS), SEEK, True),
    ("ntsc", Sampling(mode=Mode.KEYFRAMES), KEYFRAMES, False),
    ("vfr", Sampling(mode=Mode.COUNT, count=7, start=0.2), MIXED, True),
    ("vfr", Sampling(mode=Mode.TIMESTAMPS, timestamps=STAMPS, end=2.0), SELECT, False),
    ("vfr", Sampling(mode=Mode.FPS, fps=2.5), SELECT, True),
    ("rotated", Sampling(mode=Mode.TIMESTAMPS, timestamps=STAMPS, start=1.0), SEEK, True),
    ("vp9", Sampling(mode=Mode.COUNT, count=4, start=0.3, end=2.9), SEEK, True),
    ("vp9", Sampling(mode=Mode.KEYFRAMES, start=0.5, max_frames=2), KEYFRAMES, False),
    ("bframes", Sampling(interval=1.1, start=0.2), SEEK, True),
    ("mpegts", Sampling(interval=0.7, start=0.1, end=3.5), SELECT, True),
    ("mpegts", Sampling(mode=Mode.TIMESTAMPS, timestamps=STAMPS), SEEK, True),
    # B-frames: keyframes are planned as ordinary targets (-skip_frame could reorder them)
    ("mpegts", Sampling(mode=Mode.KEYFRAMES), SELECT, False),
]


@pytest.mark.parametrize(
    ("name", "sampling", "strategy", "huge"),
    CASES,
    ids=[
        f"{n}-{s.mode.value}-{st.value}{'-8k' if h else ''}-{i}"
        for i, (n, s, st, h) in enumerate(CASES)
    ],
)
async def test_every_mode_and_strategy_is_exact(
    clips: Clips, tmp_path: Path, name: str, sampling: Sampling, strategy: Strategy, huge: bool
) -> None:
    clip = getattr(clips, name)()
    result = await extract(tmp_path, clip, sampling, strategy, huge=huge)
    want = check_exact(result)
    assert want, "the case writes frames"
    groups = result.plan.groups
    if strategy is not KEYFRAMES and huge:  # one piece per CPU, one decoding thread each
        assert len(groups) > 1 and result.plan.parallel == 2 and result.plan.threads == 1
        assert any(g.seek for g in groups)
        # pieces are disjoint stretches in time order: nothing is decoded twice
        assert [t for g in groups for t in g.targets] == sorted(
            t for g in groups for t in g.targets
        )
    else:
        assert len(groups) == 1 and result.plan.threads is None
    if sampling.max_frames is not None:
        assert len(result.plan.targets) <= sampling.max_frames
    window_end = sampling.end if sampling.end is not None else result.info.duration
    assert all(sampling.start <= t < window_end for t in result.plan.targets)
    if sampling.mode is Mode.KEYFRAMES:  # every keyframe answers itself
        assert [f.timestamp for f in result.frames] == pytest.approx(result.plan.targets)
    check_pixels(result, want, tmp_path, [len(want) - 1])


async def test_seek_frames_equal_sequentially_decoded_frames(clips: Clips, tmp_path: Path) -> None:
    # targets just past a keyframe and just before the next: decoded after a seek
    result = await extract(
        tmp_path, clips.g10(), Sampling(mode=Mode.TIMESTAMPS, timestamps=(1.23, 2.75, 3.6)),
        Strategy.SEEK,
    )  # fmt: skip
    assert [g.seek for g in result.plan.groups] == [1.2, 2.4, 3.6]
    want = check_exact(result)
    assert [f.timestamp for f in result.frames] == [1.24, 2.76, 3.6]
    check_pixels(result, want, tmp_path, [0, 1, 2])


async def test_keyframes_of_an_avi_with_b_frames_are_found_by_their_flag(
    clips: Clips, tmp_path: Path
) -> None:
    """AVI keeps no presentation times: the index lists decode times, which run ahead of
    the shown ones by the reordering, so each keyframe is listed two frames early (a P
    frame's time). The frames kept are then the decoded keyframes, each its own target."""
    clip = clips.folder / "ext-bf.avi"
    if not clip.exists():
        run_ffmpeg("-i", str(clips.bframes()), "-c", "copy", str(clip))
    result = await extract(tmp_path, clip, Sampling(mode=Mode.KEYFRAMES))
    assert result.plan.by_key and result.plan.strategy is not Strategy.KEYFRAMES
    decoded = reference_frames(clip)
    keys = [float(t) for t, key in decoded if key]
    assert len(keys) >= 3 and not set(keys) & set(result.plan.targets)  # listed early
    assert [f.timestamp for f in result.frames] == pytest.approx(keys, abs=1e-6)
    assert [f.target_time for f in result.frames] == [f.timestamp for f in result.frames]
    assert [f.index for f in result.frames] == list(range(len(keys)))
    assert result.written == len(keys) == result.plan.total
    times = [float(t) for t, _ in decoded]
    for frame in (result.frames[1], result.frames[-1]):  # the very picture FFmpeg shows
        number = min(range(len(times)), key=lambda n: abs(times[n] - frame.timestamp))
        ref = decode_reference(clip, number, tmp_path / "ref.jpg")
        assert result.path(frame).read_bytes() == ref, frame.filename


async def test_targets_after_the_last_frame_are_skipped(clips: Clips, tmp_path: Path) -> None:
    clip = clips.g10()  # frames up to 3.96 s; the container says 4.0 s
    s = Sampling(mode=Mode.TIMESTAMPS, timestamps=(1.0, 3.95, 3.97, 3.99))
    result = await extract(tmp_path, clip, s)
    assert result.plan.skipped_targets == 2 and result.plan.total == 2
    check_exact(result)
    assert [(f.index, f.timestamp) for f in result.frames] == [(0, 1.0), (1, 3.96)]


async def test_mpegts_with_a_container_start_is_on_ffmpegs_timeline(
    clips: Clips, tmp_path: Path
) -> None:
    clip = clips.mpegts()
    result = await extract(tmp_path, clip, 1.0)
    assert result.info.container_start > 1.0  # -copyts keeps it; vfe subtracts it
    check_exact(result)
    assert [f.timestamp for f in result.frames] == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=1e-6)


# --- scene mode -------------------------------------------------------------------------

SCENES = [  # the cuts clip: red 0-1.2, testsrc2 1.2-2.0, blue 2.0-3.0, bars 3.0-3.2, white
    (Sampling(mode=Mode.SCENE), [0.0, 1.2, 3.0]),  # 2.0 and 3.2 are within 1 s of a cut kept
    (Sampling(mode=Mode.SCENE, min_gap=0.0), [0.0, 1.2, 2.0, 3.0, 3.2]),
    (Sampling(mode=Mode.SCENE, min_gap=0.5), [0.0, 1.2, 2.0, 3.0]),
    (Sampling(mode=Mode.SCENE, start=1.5, end=3.1), [1.52, 3.0]),  # 2.0: 0.48 s after 1.52
    (Sampling(mode=Mode.SCENE, start=1.5, end=2.9, min_gap=0.2), [1.52, 2.0]),
    (Sampling(mode=Mode.SCENE, max_frames=2), [0.0, 1.2]),
]


@pytest.mark.parametrize(("sampling", "times"), SCENES, ids=[str(i) for i in range(len(SCENES))])
async def test_scene_mode_writes_the_first_frame_of_each_shot(
    media: Any, tmp_path: Path, sampling: Sampling, times: list[float]
) -> None:
    clip = media.cuts()
    store = frame_store(tmp_path)
    info, plan = await make_plan(clip, sampling, Strategy.SCENE)
    job_id = str(uuid.uuid4())
    frames: list[Frame] = []
    shares: list[float] = []

    async def on_frames(batch: list[Frame]) -> None:
        frames.extend(batch)

    async def on_progress(share: float) -> None:
        shares.append(share)

    outcome = await Extractor(store).run(job_id, clip, info, plan, on_frames, None, on_progress)
    written = outcome.written
    assert written == len(frames) == len(times)
    assert [f.timestamp for f in frames] == pytest.approx(times, abs=1e-6)
    assert [f.index for f in frames] == list(range(len(times)))
    assert [f.target_time for f in frames] == [f.timestamp for f in frames]
    assert shares and shares == sorted(shares) and 0 < shares[-1] <= 1.0
    reference = [t for t, _ in reference_frames(clip)]
    for frame in frames:  # each is the very frame decoded at its time
        number = reference.index(Decimal(repr(frame.timestamp)).quantize(reference[0]))
        ref = decode_reference(clip, number, tmp_path / "ref.jpg")
        assert stored(store, frame).read_bytes() == ref, frame.filename


# --- output options -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "size"),
    [
        (Output(format=ImageFormat.PNG), (320, 240)),
        (Output(format=ImageFormat.WEBP, quality=50), (320, 240)),
        (Output(width=160), (160, 120)),
        (Output(height=60, format=ImageFormat.PNG), (80, 60)),
        (Output(width=100, height=100, format=ImageFormat.WEBP), (100, 75)),  # fit inside
        (Output(width=1000, height=1000), (320, 240)),  # never upscaled
        (Output(width=4000), (320, 240)),
    ],
    ids=["png", "webp", "width", "height", "box", "no-upscale-box", "no-upscale-width"],
)
async def test_output_formats_and_sizes(
    clips: Clips, tmp_path: Path, output: Output, size: tuple[int, int]
) -> None:
    result = await extract(tmp_path, clips.g10(), 1.5, output=output)
    check_exact(result)  # the same frames, whatever the output
    for frame in result.frames:
        assert frame.filename.endswith(f".{output.format.value}")
        assert (frame.width, frame.height) == size  # read from the image header
        assert image_size(result.path(frame)) == size


async def test_rotated_output_fits_the_upright_picture(clips: Clips, tmp_path: Path) -> None:
    result = await extract(tmp_path, clips.rotated(), 2.0, output=Output(width=120, height=120))
    assert {(f.width, f.height) for f in result.frames} == {(90, 120)}


async def test_quality_maps_to_file_size(clips: Clips, tmp_path: Path) -> None:
    sizes = {}
    for fmt, quality in itertools.product((ImageFormat.JPG, ImageFormat.WEBP), (5, 95)):
        result = await extract(
            tmp_path / f"{fmt}{quality}", clips.g10(), 2.0, output=Output(fmt, quality)
        )
        check_exact(result)
        sizes[fmt, quality] = sum(f.size_bytes for f in result.frames)
    assert sizes[ImageFormat.JPG, 5] < sizes[ImageFormat.JPG, 95] / 2
    assert sizes[ImageFormat.WEBP, 5] < sizes[ImageFormat.WEBP, 95] / 2
    # the default JPEG (qscale 2) is what quality 100 maps to
    best = await extract(tmp_path / "best", clips.g10(), 2.0, output=Output(quality=100))
    default = await extract(tmp_path / "default", clips.g10(), 2.0)
    assert [f.checksum for f in best.frames] == [f.checksum for f in default.frames]


# --- failures and cancellation ------------------------------------------------------------


async def test_truncated_file_fails_before_extraction(clips: Clips, tmp_path: Path) -> None:
    clip = clips.damaged()  # a faststart mp4 cut in half
    info = await probe.probe(clip)  # the index is intact: it says 6 s
    assert info.duration == pytest.approx(6.0, abs=0.1)
    with pytest.raises(ExtractionError) as raised:
        await probe.inspect(clip)  # but the packets stop half-way
    message = str(raised.value.detail)
    assert message.startswith("the video ends early or is damaged: its frames stop at")
    assert str(tmp_path) not in message


async def test_file_damaged_after_planning_raises_without_paths(
    clips: Clips, tmp_path: Path
) -> None:
    # a real fault: the file is cut short between the plan and the extraction
    source = tmp_path / "secret-folder" / "video.mp4"
    source.parent.mkdir()
    whole = clips.media.clip("ext-faststart.mp4", duration=6, extra=("-movflags", "+faststart"))
    source.write_bytes(whole.read_bytes())
    info, plan = await make_plan(source, Sampling(interval=0.5))
    assert plan.total == 12
    source.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    store = frame_store(tmp_path)
    job_id = str(uuid.uuid4())
    reported: list[Frame] = []

    async def on_frames(batch: list[Frame]) -> None:
        reported.extend(batch)

    with pytest.raises(ExtractionError) as caught:
        await Extractor(store).run(job_id, source, info, plan, on_frames)
    message = str(caught.value)
    assert "ends early or is damaged" in message
    assert f"of {plan.total} frames" in message
    assert str(tmp_path) not in message and "secret-folder" not in message
    assert "/" not in message.split("(", 1)[1]
    assert 0 < len(reported) < plan.total
    assert not store.work_dir(job_id).exists()
    for frame in reported:  # what was reported before the failure is whole
        assert stored(store, frame).stat().st_size == frame.size_bytes


async def test_ffmpeg_failure_message_hides_server_paths(media: Any, tmp_path: Path) -> None:
    # a real fault: the file disappears between the probe and the extraction
    source = tmp_path / "secret-folder" / "gone.mp4"
    source.parent.mkdir()
    source.write_bytes(media.clip("ext-25.mp4").read_bytes())
    info, plan = await make_plan(source, Sampling(interval=1.0))
    source.unlink()
    store = frame_store(tmp_path)
    job_id = str(uuid.uuid4())

    async def on_frames(batch: list[Frame]) -> None:
        raise AssertionError("no frame can be written")

    with pytest.raises(ExtractionError) as caught:
        await Extractor(store).run(job_id, source, info, plan, on_frames)
    message = str(caught.value)
    assert message.startswith("FFmpeg could not decode the video: ")
    assert "No such file" in message
    assert "secret-folder" not in message and str(tmp_path) not in message
    assert not store.work_dir(job_id).exists()


def ffmpeg_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "ffmpeg" in child.name() and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.mark.parametrize("parallel", [False, True], ids=["one-process", "two-processes"])
async def test_cancel_mid_run_stops_ffmpeg_and_cleans_up(
    media: Any, tmp_path: Path, parallel: bool
) -> None:
    clip = media.long()
    sampling = Sampling(mode=Mode.TIMESTAMPS, timestamps=(0.0, 5.0, 10.0, 15.0)) if parallel \
        else Sampling(interval=0.04)  # fmt: skip
    info, plan = await make_plan(clip, sampling, huge=parallel)
    assert len(plan.groups) == (2 if parallel else 1) and plan.parallel == len(plan.groups)
    store = frame_store(tmp_path)
    job_id = str(uuid.uuid4())
    first_batch = asyncio.Event()
    seen_pids: list[int] = []
    reported: list[Frame] = []

    async def on_frames(batch: list[Frame]) -> None:
        reported.extend(batch)
        seen_pids.extend(p.pid for p in ffmpeg_children())
        first_batch.set()
        await asyncio.sleep(3600)  # a slow consumer: cancelled while FFmpeg may still run

    task = asyncio.create_task(Extractor(store).run(job_id, clip, info, plan, on_frames))
    async with asyncio.timeout(patience(60)):
        await first_batch.wait()
    assert not task.done(), task.exception() if task.done() and not task.cancelled() else ""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    if not parallel:
        assert seen_pids, "FFmpeg was running when the first batch came"
    assert ffmpeg_children() == []
    for pid in seen_pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not store.work_dir(job_id).exists()
    assert len(reported) > 0
    if not parallel:  # 500 frames: the cancel lands long before the end
        assert len(reported) < plan.total
    # (the parallel plan is 2 groups of 2 frames run at once: all 4 may be reported first)
    for frame in reported:  # frames already reported stay, each whole
        data = stored(store, frame).read_bytes()
        assert hashlib.sha256(data).hexdigest() == frame.checksum


async def test_failing_callback_stops_ffmpeg_and_propagates(media: Any, tmp_path: Path) -> None:
    clip = media.long()
    info, plan = await make_plan(clip, Sampling(interval=0.04))
    store = frame_store(tmp_path)
    job_id = str(uuid.uuid4())

    class Full(Exception):
        pass

    async def on_frames(batch: list[Frame]) -> None:
        raise Full("the store refused the batch")

    with pytest.raises(Full):
        await Extractor(store).run(job_id, clip, info, plan, on_frames)
    assert ffmpeg_children() == []
    assert not store.work_dir(job_id).exists()


async def test_run_state_reads_showinfo_and_sorts_other_lines(tmp_path: Path) -> None:
    async def ignore(batch: list[Frame]) -> None:
        raise AssertionError("no frames expected")

    info = probe.VideoInfo(2.0, 25.0, 320, 240, 0, "h264", "yuv420p", 0.0)
    index = probe.FrameIndex(tuple(n / 25 for n in range(50)), (0.0,))
    plan = planner.plan(Sampling(interval=1.0), info, index)
    state = _Run(tmp_path, plan, plan.groups[0], "g0000_", "jpg", 0.25, ignore)
    ctx = "[Parsed_showinfo_1 @ 0x55d0c0a0b0c0] "
    assert state.on_line(ctx + "[info] config in time_base: 0/0, frame_rate: 25/1")
    assert state.time_base is None  # a zero time base is ignored
    # before a time base is known, pts_time is used as printed (minus the offset)
    assert state.on_line(ctx + "[info] n:   0 pts:      7 pts_time:0.5    duration: 1")
    assert state.on_line(ctx + "[info] config in time_base: 1/30000, frame_rate: 30000/1001")
    # then the exact pts * time_base, not the rounded pts_time text
    assert state.on_line(ctx + "[info] n:   1 pts:  16016 pts_time:0.533867 duration: 1001")
    assert state.on_line(ctx + "[info] something else from showinfo")
    assert state.times == [0.25, 16016 / 30000 - 0.25]
    assert state.wakeup.is_set()
    assert not state.on_line("[mov,mp4 @ 0x1] [error] stream 0, offset 0x10: partial file")
    assert state.errors == ["stream 0, offset 0x10: partial file"]
    assert not state.on_line("[h264 @ 0x2] [warning] a warning is kept for the tail")
    assert not state.on_line("a line without a level")
    assert state.on_line("[info] Stream mapping: consumed, not an error")
    assert state.errors == ["stream 0, offset 0x10: partial file"]


async def test_quiet_ffmpeg_is_still_collected_by_periodic_scans(
    media: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # scan far more often than FFmpeg reports, so scans also run on the timer
    monkeypatch.setattr(runs, "_SCAN_EVERY", 0.001)
    result = await extract(tmp_path, media.long(), 6.0)
    check_exact(result)
    assert [f.timestamp for f in result.frames] == [0.0, 6.0, 12.0, 18.0]


async def test_thousands_of_timestamps_in_one_pass(media: Any, tmp_path: Path) -> None:
    """A select expression too deep for a flat sum and too long for one argument."""
    clip = media.clip("ext-many.mp4", duration=4)
    stamps = tuple(round(i * 0.0021, 4) for i in range(1800))  # several per frame
    info, plan = await make_plan(clip, Sampling(mode=Mode.TIMESTAMPS, timestamps=stamps))
    assert len(plan.targets) == 1800
    store = frame_store(tmp_path)
    got: list[Frame] = []

    async def on_frames(batch: list[Frame]) -> None:
        got.extend(batch)

    written = (await Extractor(store).run(str(uuid.uuid4()), clip, info, plan, on_frames)).written
    assert written == plan.total == len(got) == 96  # every frame up to 3.80 s, once each
    times = sorted(f.timestamp for f in got)
    assert times == pytest.approx([k * 0.04 for k in range(96)], abs=1e-9)


# --- files found by review: odd starts, open GOPs, audio longer than video ---------------


async def test_ts_whose_start_ffprobe_rounds_is_exact_from_zero(media: Any, tmp_path: Path) -> None:
    """132000/90000 s prints as 1.466667: the start must be snapped, not taken as printed."""
    mp4 = media.clip("rv-30bf.mp4", duration=3, rate="30", extra=("-bf", "2"))
    ts = tmp_path / "rv-30bf.ts"
    await asyncio.to_thread(run_ffmpeg, "-i", str(mp4), "-c", "copy", "-f", "mpegts", str(ts))
    result = await extract(tmp_path, ts, 1.0)
    assert [f.filename for f in result.frames][:1] == ["000000_0.000.jpg"]
    check_exact(result)


async def test_keyframes_of_an_open_gop_stream_with_b_frames(media: Any, tmp_path: Path) -> None:
    clip = media.clip("rv-opengop.mp4", duration=4, rate="30",
                      extra=("-bf", "3", "-g", "30", "-x264-params", "open_gop=1"))  # fmt: skip
    info, plan = await make_plan(clip, Sampling(mode=Mode.KEYFRAMES))
    assert info.has_b_frames > 0
    assert plan.strategy is not Strategy.KEYFRAMES  # -skip_frame would reorder them
    store = frame_store(tmp_path)
    got: list[Frame] = []

    async def on_frames(batch: list[Frame]) -> None:
        got.extend(batch)

    await Extractor(store).run(str(uuid.uuid4()), clip, info, plan, on_frames)
    keys = [float(t) for t, key in reference_frames(clip) if key]
    assert sorted(f.timestamp for f in got) == pytest.approx(keys, abs=1e-6)


async def test_mkv_with_audio_longer_than_video_is_not_damaged(media: Any, tmp_path: Path) -> None:
    clip = tmp_path / "av.mkv"
    await asyncio.to_thread(
        run_ffmpeg, "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=2",
        "-f", "lavfi", "-i", "sine=duration=4", "-c:v", "libx264", "-preset", "ultrafast",
        "-c:a", "libopus", str(clip),
    )  # fmt: skip
    info, _ = await probe.inspect(clip)
    # the container states the audio's 4 s; the video's own length is where its frames end
    assert not info.own_duration and info.duration == pytest.approx(2.0, abs=0.05)
    _, plan = await make_plan(clip, Sampling(mode=Mode.COUNT, count=4))
    assert plan.targets == pytest.approx((0.0, 0.5, 1.0, 1.5), abs=0.02)  # over the video
    result = await extract(tmp_path, clip, 1.0)
    assert len(result.frames) == 2  # targets 0 and 1 s; the video ends before 2 s
    check_exact(result)
