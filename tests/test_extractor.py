"""Extractor: exact frames checked against an independent reference decode.

For every clip the reference is ffprobe's list of every frame's presentation time; the
expected frame for target ``k*I`` is the first frame whose time is ``>= k*I`` (computed
with exact decimals), and pixels are compared against FFmpeg decoding that frame alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import subprocess
import uuid
from bisect import bisect_left
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil
import pytest

from vfe import extractor, planner, probe
from vfe.errors import ExtractionError
from vfe.extractor import Extractor, _Run
from vfe.frames import FrameStore, frame_name
from vfe.models import Frame


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

    def vfr(self) -> Path:
        """Jittered 25 fps for 1 s (gaps 53/53/14 ms), then 10 fps: variable frame rate."""
        expr = "(if(lt(N,25),N*0.04+0.013*mod(N,3),1+(N-25)*0.1))/TB"
        return self._make(
            "ext-vfr.mp4",
            "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=2",
            "-vf", f"settb=1/1000,setpts='{expr}'",
            "-fps_mode", "vfr", "-enc_time_base", "1/1000", "-video_track_timescale", "1000",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        )  # fmt: skip

    def rotated(self) -> Path:
        """The 25 fps clip with rotation metadata (portrait phone video)."""
        return self._make(
            "ext-rot90.mp4",
            "-i", str(self.media.clip("ext-25.mp4")),
            "-c", "copy", "-metadata:s:v:0", "rotate=90",
        )  # fmt: skip

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


def frame_times(path: Path) -> list[Decimal]:
    """Every video frame's presentation time, in presentation order, from ffprobe."""
    out = subprocess.run(
        ["ffprobe", "-v", "quiet", "-select_streams", "v:0", "-show_frames",
         "-show_entries", "frame=best_effort_timestamp_time", "-of", "csv=p=0", str(path)],
        capture_output=True, check=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    times = sorted(Decimal(line.split(",")[0]) for line in out.splitlines() if line.strip())
    assert times, "the reference decode found no frames"
    return times


@dataclass
class Expected:
    index: int
    timestamp: float
    target_time: float
    frame_number: int  # position of the source frame in presentation order


def expected_frames(times: list[Decimal], interval: float, total: int) -> list[Expected]:
    """Brute force: for each target the first frame at or after it; each frame once,
    under the latest target that maps to it."""
    step = Decimal(repr(interval))
    by_frame: dict[int, int] = {}
    for k in range(total):
        n = bisect_left(times, step * k)
        if n < len(times):
            by_frame[n] = k
    return [
        Expected(k, float(times[n]), round(k * interval, 6), n) for n, k in sorted(by_frame.items())
    ]


@dataclass
class Result:
    store: FrameStore
    job_id: str
    info: probe.VideoInfo
    plan: planner.Plan
    written: int
    frames: list[Frame] = field(default_factory=list)
    batches: int = 0

    def path(self, frame: Frame) -> Path:
        return self.store.path(self.job_id, frame.filename)


async def extract(tmp_path: Path, clip: Path, interval: float) -> Result:
    store = FrameStore(tmp_path / "frames")
    job_id = str(uuid.uuid4())
    info = await probe.probe(clip)
    plan = planner.plan(interval, info)
    frames: list[Frame] = []
    batches = 0

    async def on_frames(batch: list[Frame]) -> None:
        nonlocal batches
        batches += 1
        for frame in batch:  # each reported file is whole at the moment it is reported
            data = store.path(job_id, frame.filename).read_bytes()
            assert len(data) == frame.size_bytes > 0
            assert hashlib.sha256(data).hexdigest() == frame.checksum
            assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"  # a whole JPEG
        frames.extend(batch)

    written = await Extractor(store).run(job_id, clip, info, plan, on_frames)
    assert not store.work_dir(job_id).exists()
    return Result(store, job_id, info, plan, written, frames, batches)


def check_exact(result: Result, clip: Path, interval: float) -> list[Expected]:
    want = expected_frames(frame_times(clip), interval, result.plan.total)
    got = result.frames
    assert [f.index for f in got] == [e.index for e in want]
    assert [f.target_time for f in got] == [e.target_time for e in want]
    assert [f.timestamp for f in got] == pytest.approx([e.timestamp for e in want], abs=1e-6)
    assert [f.filename for f in got] == [frame_name(e.index, e.timestamp) for e in want]
    assert result.written == len(want)
    on_disk = sorted(p.name for p in result.store.job_dir(result.job_id).iterdir())
    assert on_disk == sorted(f.filename for f in got)  # nothing else left behind
    for frame in got:
        assert frame.job_id == result.job_id
        assert frame.target_time <= frame.timestamp + 1e-9
    return want


def decode_reference(clip: Path, number: int, out: Path) -> bytes:
    """FFmpeg alone decodes frame ``number`` (presentation order) to a JPEG."""
    run_ffmpeg(
        "-i", f"file:{clip}", "-vf", rf"select=eq(n\,{number})",
        "-fps_mode", "passthrough", "-frames:v", "1", "-q:v", "2", "-f", "image2", str(out),
    )  # fmt: skip
    return out.read_bytes()


def check_pixels(
    result: Result, clip: Path, want: list[Expected], tmp_path: Path, picks: list[int]
) -> None:
    """Ours is byte-identical to the reference decode of the expected frame (the MJPEG
    encoder is deterministic for identical input), and differs from its neighbour
    (testsrc2 changes every frame), so identity is not an accident."""
    times = frame_times(clip)
    for pick in picks:
        frame, exp = result.frames[pick], want[pick]
        ours = result.path(frame).read_bytes()
        ref = decode_reference(clip, exp.frame_number, tmp_path / f"ref{pick}.jpg")
        assert ours == ref, f"frame {frame.filename} is not source frame {exp.frame_number}"
        neighbour = (
            exp.frame_number + 1 if exp.frame_number + 1 < len(times) else exp.frame_number - 1
        )
        other = decode_reference(clip, neighbour, tmp_path / f"nb{pick}.jpg")
        assert other != ours


def image_size(path: Path) -> tuple[int, int]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=width,height", "-of", "csv=p=0",
         str(path)],
        capture_output=True, check=True, text=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    width, height = out.split(",")[:2]
    return int(width), int(height)


async def test_25fps_half_second_is_exact(media: Any, tmp_path: Path) -> None:
    clip = media.clip("ext-25.mp4")
    result = await extract(tmp_path, clip, 0.5)
    want = check_exact(result, clip, 0.5)
    assert [f.timestamp for f in result.frames] == [0.0, 0.52, 1.0, 1.52]
    assert [f.target_time for f in result.frames] == [0.0, 0.5, 1.0, 1.5]
    assert [f.filename for f in result.frames][:2] == ["000000_0.000.jpg", "000001_0.520.jpg"]
    for frame in result.frames:
        assert abs(frame.timestamp - frame.target_time) < 1 / 25
        assert (frame.width, frame.height) == (320, 240)
        assert image_size(result.path(frame)) == (320, 240)
    check_pixels(result, clip, want, tmp_path, [0, 1, 3])


async def test_25fps_one_second(media: Any, tmp_path: Path) -> None:
    clip = media.clip("ext-25-4s.mp4", duration=4)
    result = await extract(tmp_path, clip, 1.0)
    want = check_exact(result, clip, 1.0)
    assert [f.timestamp for f in result.frames] == [0.0, 1.0, 2.0, 3.0]
    assert [f.index for f in result.frames] == [0, 1, 2, 3]
    check_pixels(result, clip, want, tmp_path, [2])


async def test_ntsc_29_97_is_exact_and_does_not_drift(media: Any, tmp_path: Path) -> None:
    clip = media.clip("ext-2997.mp4", duration=3, rate="30000/1001")
    result = await extract(tmp_path, clip, 0.25)
    want = check_exact(result, clip, 0.25)
    assert len(result.frames) == 12
    for frame in result.frames:
        assert abs(frame.timestamp - frame.target_time) < 1001 / 30000
    # 0.25 s is 7.49 frames: the first frame at or after it is frame 8 (0.266933 s)
    assert result.frames[1].timestamp == pytest.approx(8 * 1001 / 30000, abs=1e-6)
    check_pixels(result, clip, want, tmp_path, [1, 11])


async def test_variable_frame_rate_is_exact(clips: Clips, tmp_path: Path) -> None:
    clip = clips.vfr()
    times = frame_times(clip)
    gaps = {round(float(b - a), 3) for a, b in itertools.pairwise(times)}
    assert len(gaps) >= 3  # really variable
    result = await extract(tmp_path, clip, 0.1)
    want = check_exact(result, clip, 0.1)
    # target 0.1 falls between 0.053 and 0.106: the frame shown at 0.1 is written
    assert result.frames[1].timestamp == 0.106
    assert result.frames[1].target_time == 0.1
    # in the 10 fps part some frames sit a millisecond before a target (1.399 < 1.4):
    # that target takes the next frame and the next target shares it, written once
    assert len(result.frames) < result.plan.total
    assert len({f.timestamp for f in result.frames}) == len(result.frames)
    check_pixels(result, clip, want, tmp_path, [1, 4, len(want) - 1])


async def test_rotated_clip_comes_out_upright(clips: Clips, tmp_path: Path) -> None:
    clip = clips.rotated()
    result = await extract(tmp_path, clip, 0.5)
    assert result.info.rotation in (90, 270)
    want = check_exact(result, clip, 0.5)
    for frame in result.frames:
        assert (frame.width, frame.height) == (240, 320)
        assert image_size(result.path(frame)) == (240, 320)
    check_pixels(result, clip, want, tmp_path, [1])  # the reference autorotates too


async def test_vp9_webm(media: Any, tmp_path: Path) -> None:
    clip = media.clip("ext-vp9.webm", codec="libvpx-vp9")
    result = await extract(tmp_path, clip, 0.3)
    assert result.info.codec == "vp9"
    want = check_exact(result, clip, 0.3)
    assert len(want) == 7
    assert [f.timestamp for f in result.frames][:3] == pytest.approx([0.0, 0.32, 0.6])
    check_pixels(result, clip, want, tmp_path, [1, 6])


async def test_odd_size(media: Any, tmp_path: Path) -> None:
    clip = media.clip(
        "ext-odd.mp4",
        duration=1,
        size="322x242",
        extra=("-vf", "format=yuv444p,crop=321:241:0:0", "-pix_fmt", "yuv444p"),
    )
    result = await extract(tmp_path, clip, 0.4)
    check_exact(result, clip, 0.4)
    assert image_size(result.path(result.frames[0])) == (321, 241)


async def test_interval_longer_than_video_gives_the_first_frame(media: Any, tmp_path: Path) -> None:
    clip = media.clip("ext-25.mp4")
    result = await extract(tmp_path, clip, 60.0)
    assert result.plan.total == 1
    check_exact(result, clip, 60.0)
    assert [(f.index, f.timestamp, f.filename) for f in result.frames] == [
        (0, 0.0, "000000_0.000.jpg")
    ]


async def test_interval_below_frame_spacing_writes_each_frame_once(
    media: Any, tmp_path: Path
) -> None:
    clip = media.clip("ext-25.mp4")
    result = await extract(tmp_path, clip, 0.015)  # ~2.7 targets per frame
    want = check_exact(result, clip, 0.015)
    times = frame_times(clip)
    assert result.plan.total > len(times)
    # every source frame is the answer to some target, and is written exactly once
    assert len(result.frames) == len(times) == 50
    assert len({f.timestamp for f in result.frames}) == 50
    assert len({f.checksum for f in result.frames}) == 50
    for frame in result.frames:  # the index is the latest target the frame answers
        assert frame.index == int(Decimal(repr(frame.timestamp)) / Decimal("0.015"))
    check_pixels(result, clip, want, tmp_path, [7])


async def test_frames_arrive_in_several_batches_of_whole_files(media: Any, tmp_path: Path) -> None:
    clip = media.long()
    result = await extract(tmp_path, clip, 0.2)
    check_exact(result, clip, 0.2)
    assert result.written == 100
    assert result.batches >= 2  # reported while FFmpeg runs, not all at the end
    assert [f.index for f in result.frames] == sorted(f.index for f in result.frames)


async def test_damaged_file_that_probes_raises_without_paths(clips: Clips, tmp_path: Path) -> None:
    clip = clips.damaged()
    info = await probe.probe(clip)  # the index is intact
    assert info.duration == pytest.approx(6.0, abs=0.1)
    store = FrameStore(tmp_path / "frames")
    job_id = str(uuid.uuid4())
    reported: list[Frame] = []

    async def on_frames(batch: list[Frame]) -> None:
        reported.extend(batch)

    with pytest.raises(ExtractionError) as caught:
        await Extractor(store).run(job_id, clip, info, planner.plan(0.5, info), on_frames)
    message = str(caught.value)
    assert "ends early or is damaged" in message
    assert f"of {planner.plan(0.5, info).total} frames" in message
    assert str(tmp_path) not in message and str(clip.parent) not in message
    assert "/" not in message.split("(", 1)[1]
    assert 0 < len(reported) < planner.plan(0.5, info).total
    assert not store.work_dir(job_id).exists()
    for frame in reported:  # what was reported before the failure is whole
        assert store.path(job_id, frame.filename).stat().st_size == frame.size_bytes


async def test_ffmpeg_failure_message_hides_server_paths(media: Any, tmp_path: Path) -> None:
    # a real fault: the file disappears between the probe and the extraction
    source = tmp_path / "secret-folder" / "gone.mp4"
    source.parent.mkdir()
    source.write_bytes(media.clip("ext-25.mp4").read_bytes())
    info = await probe.probe(source)
    source.unlink()
    store = FrameStore(tmp_path / "frames")
    job_id = str(uuid.uuid4())

    async def on_frames(batch: list[Frame]) -> None:
        raise AssertionError("no frame can be written")

    with pytest.raises(ExtractionError) as caught:
        await Extractor(store).run(job_id, source, info, planner.plan(1, info), on_frames)
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


async def test_cancel_mid_run_stops_ffmpeg_and_cleans_up(media: Any, tmp_path: Path) -> None:
    clip = media.long()
    info = await probe.probe(clip)
    plan = planner.plan(0.04, info)  # every frame: a long run
    store = FrameStore(tmp_path / "frames")
    job_id = str(uuid.uuid4())
    first_batch = asyncio.Event()
    seen_pids: list[int] = []
    reported: list[Frame] = []

    async def on_frames(batch: list[Frame]) -> None:
        reported.extend(batch)
        seen_pids.extend(p.pid for p in ffmpeg_children())
        first_batch.set()

    task = asyncio.create_task(Extractor(store).run(job_id, clip, info, plan, on_frames))
    async with asyncio.timeout(30):
        await first_batch.wait()
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen_pids, "FFmpeg was running when the first batch came"
    assert ffmpeg_children() == []
    for pid in seen_pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not store.work_dir(job_id).exists()
    assert 0 < len(reported) < plan.total
    for frame in reported:  # frames already reported stay, each whole
        data = store.path(job_id, frame.filename).read_bytes()
        assert hashlib.sha256(data).hexdigest() == frame.checksum


async def test_failing_callback_stops_ffmpeg_and_propagates(media: Any, tmp_path: Path) -> None:
    clip = media.long()
    info = await probe.probe(clip)
    store = FrameStore(tmp_path / "frames")
    job_id = str(uuid.uuid4())

    class Full(Exception):
        pass

    async def on_frames(batch: list[Frame]) -> None:
        raise Full("the store refused the batch")

    with pytest.raises(Full):
        await Extractor(store).run(job_id, clip, info, planner.plan(0.04, info), on_frames)
    assert ffmpeg_children() == []
    assert not store.work_dir(job_id).exists()


async def test_run_state_reads_showinfo_and_sorts_other_lines(tmp_path: Path) -> None:
    async def ignore(batch: list[Frame]) -> None:
        raise AssertionError("no frames expected")

    info = probe.VideoInfo(2.0, 25.0, 320, 240, 0, "h264", "yuv420p", 0.0)
    state = _Run(
        FrameStore(tmp_path), str(uuid.uuid4()), tmp_path, info, planner.plan(1, info), ignore
    )
    ctx = "[Parsed_showinfo_1 @ 0x55d0c0a0b0c0] "
    assert state.on_line(ctx + "[info] config in time_base: 0/0, frame_rate: 25/1")
    assert state.time_base is None  # a zero time base is ignored
    # before a time base is known, pts_time is used as printed
    assert state.on_line(ctx + "[info] n:   0 pts:      7 pts_time:0.5    duration: 1")
    assert state.on_line(ctx + "[info] config in time_base: 1/30000, frame_rate: 30000/1001")
    # then the exact pts * time_base, not the rounded pts_time text
    assert state.on_line(ctx + "[info] n:   1 pts:  16016 pts_time:0.533867 duration: 1001")
    assert state.on_line(ctx + "[info] something else from showinfo")
    assert state.times == [0.5, 16016 / 30000]
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
    monkeypatch.setattr(extractor, "_SCAN_EVERY", 0.001)
    clip = media.long()
    result = await extract(tmp_path, clip, 6.0)
    check_exact(result, clip, 6.0)
    assert [f.timestamp for f in result.frames] == [0.0, 6.0, 12.0, 18.0]
