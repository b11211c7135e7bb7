"""Reading a video at submit is bounded: a small file claiming tens of thousands of frames
is refused past MAX_FRAMES_PER_VIDEO, whether its header states the count (MP4) or only
its packets tell (Matroska), while the server stays responsive. Against a real server."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, Media, place, run_ffmpeg, wait_until

pytestmark = pytest.mark.live
LIVE_BOUND = 2.0  # s: what /health/live may take on a busy CI machine (0.3 s measured idle)


def dense_clips(media: Media) -> tuple[Path, Path]:
    """30,000 frames of 16x16 at 1000 fps: 30 s, a few hundred KB; as MP4 (its header
    states the count) and as Matroska (only its packets tell)."""
    mp4 = media.folder / "dense-30k.mp4"
    mkv = media.folder / "dense-30k.mkv"
    if not mp4.exists():
        run_ffmpeg("-f", "lavfi", "-i", "color=c=blue:s=16x16:r=1000", "-t", "30", "-c:v",
                   "libx264", "-g", "10000", "-preset", "ultrafast", str(mp4))  # fmt: skip
    if not mkv.exists():
        run_ffmpeg("-i", str(mp4), "-c", "copy", str(mkv))
    return mp4, mkv


def test_many_frame_uploads_are_refused_fast_and_the_server_stays_live(
    live_server: Callable[..., LiveServer], media: Media
) -> None:
    server = live_server(MAX_FRAMES_PER_VIDEO=10000, MAX_CONCURRENT_PROBES=2)
    mp4, mkv = dense_clips(media)

    def upload(path: Path) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        with path.open("rb") as handle:
            res = httpx.post(f"{server.url}/video-job", files={"file": (path.name, handle)},
                             timeout=120)  # fmt: skip
        return res, time.monotonic() - started

    worst_live = 0.0
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        uploads = [pool.submit(upload, p) for p in (mp4, mkv, mkv, mp4)]
        while not all(u.done() for u in uploads):
            started = time.monotonic()
            assert httpx.get(f"{server.url}/health/live", timeout=30).status_code == 200
            worst_live = max(worst_live, time.monotonic() - started)
    for future in uploads:
        res, _ = future.result()
        assert res.status_code == 422, res.text
        (error,) = res.json()["detail"]
        assert error["loc"] == ["body", "file"]
        assert "MAX_FRAMES_PER_VIDEO" in error["msg"] and "more than 10000 frames" in error["msg"]
    assert worst_live < LIVE_BOUND, worst_live
    stored = Path(server.env["UPLOADS_PATH"])
    assert list(stored.iterdir()) == []  # refused uploads leave no file


def test_under_the_limit_the_same_video_is_accepted_and_runs(
    live_server: Callable[..., LiveServer], media: Media, videos: Path
) -> None:
    server = live_server(MAX_FRAMES_PER_VIDEO=30000)
    _, mkv = dense_clips(media)
    res = httpx.post(f"{server.url}/video-job", timeout=120,
                     json={"video_source": place(mkv, videos), "count": 3})  # fmt: skip
    assert res.status_code == 200, res.text
    job_id = res.json()["job_id"]
    job = wait_until(lambda: server.finished(job_id), "the job", within=120)
    assert job["status"] == "completed" and job["processed_frames"] == 3, job
