"""Storyboards: sprite sheets, a WebVTT track and a JSON manifest of a job's frames.

In-process app, real FFmpeg, generated clips. The track is read with a strict parser of
its own; each tile is decoded out of its sheet and compared with a downscale of the frame
the track lists for it (PSNR); sheets are measured from their JPEG headers and decoded."""

from __future__ import annotations

import io
import itertools
import json
import re
import subprocess
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import AppClient, Media, place, run_ffmpeg
from tests.records import make_job
from tests.test_stored_frames import Bucket, image
from vfe.cli import main
from vfe.frames import image_size
from vfe.models import JobStatus
from vfe.settings import Settings
from vfe.storyboard import MAX_GRID, MAX_SIDE, layout

CUE_TIME = r"(\d{2}):([0-5]\d):([0-5]\d)\.(\d{3})"
CUE = re.compile(rf"^{CUE_TIME} --> {CUE_TIME}$")
TARGET = re.compile(r"^(\S+)#xywh=(\d+),(\d+),(\d+),(\d+)$")


def parse_vtt(text: str) -> list[tuple[float, float, str, tuple[int, int, int, int]]]:
    """Cues of a storyboard track, strictly: the header, then blocks of a timing line and
    a ``URL#xywh=`` line, each block followed by a blank line; anything else fails."""
    lines = text.split("\n")
    assert lines[:2] == ["WEBVTT", ""], lines[:2]
    cues = []
    at = 2
    while at < len(lines) and lines[at] != "":
        timing, target, blank = lines[at : at + 3]
        assert blank == "", f"no blank line after the cue at line {at + 1}"
        times = CUE.match(timing)
        box = TARGET.match(target)
        assert times and box, (timing, target)
        h1, m1, s1, ms1, h2, m2, s2, ms2 = (int(g) for g in times.groups())
        start = h1 * 3600 + m1 * 60 + s1 + ms1 / 1000
        end = h2 * 3600 + m2 * 60 + s2 + ms2 / 1000
        xywh = (int(box[2]), int(box[3]), int(box[4]), int(box[5]))
        cues.append((start, end, box[1], xywh))
        at += 3
    assert all(line == "" for line in lines[at:]), "text after the last cue"
    return cues


def decode(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    """An image as an RGB array (when ``size`` is given, scaled to it by averaging the
    RGB pixels over each area: the picture's downscale as it is seen)."""
    scale = ["-vf", f"format=rgb24,scale={size[0]}:{size[1]}:flags=area"] if size else []
    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", "pipe:0", *scale,
         "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
        input=data, capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    width, height = size or image_size(data) or (0, 0)
    assert len(out) == width * height * 3
    return np.frombuffer(out, np.uint8).reshape(height, width, 3)


def decode_all(pictures: list[bytes], size: tuple[int, int], folder: Path) -> np.ndarray:
    """Images (of one format) as RGB arrays downscaled as ``decode`` does: one FFmpeg."""
    for i, data in enumerate(pictures):
        (folder / f"{i:06d}.img").write_bytes(data)
    width, height = size
    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "image2", "-c:v", "mjpeg",
         "-i", str(folder / "%06d.img"), "-vf", f"format=rgb24,scale={width}:{height}:flags=area",
         "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    assert len(out) == len(pictures) * width * height * 3
    return np.frombuffer(out, np.uint8).reshape(len(pictures), height, width, 3)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


async def get(app: AppClient, url: str) -> httpx.Response:
    res = await app.http.get(url)
    assert res.status_code == 200, res.text
    return res


async def storyboard_job(app: AppClient, name: str, **fields: Any) -> str:
    res = await app.http.post("/video-job", json={"video_source": name, "storyboard": True,
                                                  **fields})  # fmt: skip
    assert res.status_code == 200, res.text
    job_id: str = res.json()["job_id"]
    done = await app.wait(job_id)
    assert done["status"] == "completed", done
    return job_id


async def check_storyboard(
    app: AppClient, job_id: str, window_end: float, tiles: int, compare: int = 0
) -> dict[str, Any]:
    """Check a job's track and manifest against its frames and sheets; compare the
    pixels of every ``compare``-th tile (0: none). Returns the manifest."""
    folder = app.settings.frames_base_path.parent / f"compare-{job_id}"
    folder.mkdir()
    frames = (await get(app, f"/frames/{job_id}")).json()["frames"]
    cues = parse_vtt((await get(app, f"/job/{job_id}/storyboard.vtt")).text)
    board = (await get(app, f"/job/{job_id}/storyboard.json")).json()
    assert len(cues) == len(frames) == tiles == board["tile_count"]
    # cue starts are the frames' own times; each ends where the next starts; the last at
    # the window's end: ordered, and no gap from the first frame to the end
    for cue, frame in zip(cues, frames, strict=True):
        assert cue[0] == pytest.approx(frame["timestamp"], abs=0.0005)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(cues))
    assert all(start < end for start, end, *_ in cues)
    assert cues[-1][1] == pytest.approx(window_end, abs=0.0005)
    sheets: dict[str, np.ndarray] = {}
    for sheet in board["sheets"]:
        data = await image(app, sheet)
        width, height = image_size(data) or (0, 0)
        assert (width, height) == (sheet["width"], sheet["height"])
        assert width <= MAX_SIDE and height <= MAX_SIDE
        assert sheet["columns"] <= MAX_GRID and sheet["rows"] <= MAX_GRID
        sheets[sheet["url"]] = decode(data)
    assert board["sheet_count"] == len(sheets)
    compared = list(range(0, len(frames), compare)) if compare else []
    pictures = [await image(app, frames[i]) for i in compared]
    size = (board["tile_width"], board["tile_height"])
    references = (dict(zip(compared, decode_all(pictures, size, folder), strict=True))
                  if compared else {})  # fmt: skip
    for i, ((_, _, url, (x, y, w, h)), tile) in enumerate(zip(cues, board["tiles"], strict=True)):
        assert (tile["url"], tile["x"], tile["y"], tile["w"], tile["h"]) == (url, x, y, w, h)
        assert tile["frame"] == frames[i]["filename"] and tile["index"] == i
        assert tile["start"] == frames[i]["timestamp"] and (w, h) == size
        picture = sheets[url]  # a sheet the manifest lists
        assert x + w <= picture.shape[1] and y + h <= picture.shape[0], (i, x, y, w, h)
        if i in references:
            assert psnr(picture[y : y + h, x : x + w], references[i]) > 30, f"tile {i}"
    return dict(board)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[AppClient]:
    async with AppClient(settings) as client:
        yield client


@pytest.fixture(scope="module")
def two_minutes(media: Media) -> Path:
    """A 2-minute clip, 320x180 at 5 fps (600 frames; about a second to make)."""
    return media.clip("two-minutes.mp4", duration=120, rate="5", size="320x180")


async def test_a_two_minute_video_at_count_100(
    app: AppClient, two_minutes: Path, videos: Path
) -> None:
    job_id = await storyboard_job(app, place(two_minutes, videos), mode="count", count=100)
    board = await check_storyboard(app, job_id, 120.0, 100, compare=1)
    assert (board["tile_width"], board["tile_height"]) == (160, 90)
    assert (board["columns"], board["rows"], board["sheet_count"]) == (10, 10, 1)
    assert board["end"] == 120.0 and board["vtt"] == f"/job/{job_id}/storyboard.vtt"
    job = (await get(app, f"/job-status/{job_id}")).json()
    assert job["options"]["storyboard"] is True and job["options"]["storyboard_width"] == 160
    # in the zip: the sheets, and a track and a manifest that name them as zip entries
    archive = zipfile.ZipFile(io.BytesIO((await get(app, f"/job/{job_id}/frames.zip")).content))
    names = archive.namelist()
    assert names[-4:] == ["frames.json", "storyboard-0.jpg", "storyboard.vtt", "storyboard.json"]
    assert archive.read("storyboard-0.jpg") == await image(app, board["sheets"][0])
    zipped = parse_vtt(archive.read("storyboard.vtt").decode())
    assert {url for _, _, url, _ in zipped} == {"storyboard-0.jpg"}
    listed = json.loads(archive.read("storyboard.json"))
    assert listed["tiles"][5]["url"] == "storyboard-0.jpg" and listed["vtt"] == "storyboard.vtt"
    assert all(t["frame"] in names for t in listed["tiles"])


async def test_small_tiles_and_many_frames_take_several_sheets_the_last_one_short(
    app: AppClient, two_minutes: Path, videos: Path
) -> None:
    name = place(two_minutes, videos)
    job_id = await storyboard_job(app, name, count=250, storyboard_width=32, end=100)
    board = await check_storyboard(app, job_id, 100.0, 250, compare=7)
    assert (board["tile_width"], board["tile_height"]) == (32, 18)
    assert [(s["columns"], s["rows"]) for s in board["sheets"]] == [(10, 10), (10, 10), (10, 5)]
    assert [(s["width"], s["height"]) for s in board["sheets"]] == [(320, 180)] * 2 + [(320, 90)]


async def test_wide_tiles_keep_sheets_within_4096_px(
    app: AppClient, two_minutes: Path, videos: Path
) -> None:
    name = place(two_minutes, videos)
    job_id = await storyboard_job(app, name, count=30, storyboard_width=1024, end=30)
    board = await check_storyboard(app, job_id, 30.0, 30, compare=5)
    assert (board["tile_width"], board["tile_height"]) == (1024, 576)
    assert (board["columns"], board["rows"], board["sheet_count"]) == (4, 7, 2)
    assert (board["sheets"][0]["width"], board["sheets"][0]["height"]) == (4096, 4032)
    assert (board["sheets"][1]["columns"], board["sheets"][1]["rows"]) == (2, 1)


async def test_a_portrait_video_has_tall_tiles(app: AppClient, media: Media, videos: Path) -> None:
    # stored landscape with a 90 degree rotation: displayed (and extracted) portrait
    landscape = media.clip("storyboard-landscape.mp4", duration=8, rate="10", size="320x180")
    clip = landscape.with_name("storyboard-rotated.mp4")
    if not clip.exists():
        run_ffmpeg("-i", str(landscape), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(clip))
    job_id = await storyboard_job(app, place(clip, videos), interval=0.1)
    board = await check_storyboard(app, job_id, 8.0, 80, compare=9)
    assert (board["tile_width"], board["tile_height"]) == (160, 284)
    assert (board["columns"], board["rows"]) == (10, 10)
    assert board["sheets"][0]["height"] <= MAX_SIDE and board["sheet_count"] == 1


async def test_a_scene_job_ends_its_track_at_the_window_end(
    app: AppClient, media: Media, videos: Path
) -> None:
    """Scene mode finds its frames as it goes; its last cue still ends where the window
    asked for ends (3.1 s, before the 4 s video's end), as in every other mode."""
    name = place(media.cuts(), videos)
    job_id = await storyboard_job(app, name, mode="scene", scene_threshold=0.3, min_gap=0,
                                  end=3.1)  # fmt: skip
    board = await check_storyboard(app, job_id, 3.1, 4, compare=1)  # 0, 1.2, 2.0, 3.0
    assert board["end"] == 3.1


def test_layout_bounds() -> None:
    very_tall = layout(30, 160, 16, 1000)  # a tile taller than a sheet may be
    assert very_tall.tile_height == MAX_SIDE and very_tall.rows == 1
    assert very_tall.tile_width * very_tall.columns <= MAX_SIDE
    assert [very_tall.place(i) for i in (0, 9, 10)] == [(0, 0, 0), (0, 9 * 66, 0), (1, 0, 0)]


async def test_404s_say_why(app: AppClient, media: Media, videos: Path) -> None:
    unknown = str(uuid.uuid4())
    for path in ("storyboard.vtt", "storyboard.json", "storyboard/0.jpg"):
        res = await app.http.get(f"/job/{unknown}/{path}")
        assert res.status_code == 404 and res.json() == {"detail": "Job not found"}
        assert (await app.http.get(f"/job/not-a-uuid/{path}")).status_code == 404
    name = place(media.standard(), videos)
    plain = await app.submit(name, 0.5)
    assert (await app.wait(plain))["status"] == "completed"
    res = await app.http.get(f"/job/{plain}/storyboard.vtt")
    assert res.status_code == 404 and "storyboard: true" in res.json()["detail"]
    waiting = make_job(status=JobStatus.PROCESSING, options={"storyboard": True})
    await app.services.store.create_job(waiting)
    res = await app.http.get(f"/job/{waiting.id}/storyboard.json")
    assert res.status_code == 404 and "made when the job completes" in res.json()["detail"]
    done = await storyboard_job(app, name, interval=0.5)
    assert (await app.http.get(f"/job/{done}/storyboard/0.jpg")).status_code == 200
    res = await app.http.get(f"/job/{done}/storyboard/1.jpg")
    assert res.status_code == 404 and "0.jpg to 0.jpg" in res.json()["detail"]
    for bad in ("x.jpg", "0.png", "-1.jpg", "1234567.jpg", "0.jpg/"):
        assert (await app.http.get(f"/job/{done}/storyboard/{bad}")).status_code == 404
    res = await app.http.post("/video-job", json={"video_source": name, "storyboard": True,
                                                  "storyboard_width": 8})  # fmt: skip
    assert res.status_code == 422 and res.json()["detail"][0]["loc"] == ["body", "storyboard_width"]
    document = (await get(app, "/openapi.json")).json()
    for path in ("storyboard.vtt", "storyboard.json", "storyboard/{n}.jpg"):
        assert f"/job/{{job_id}}/{path}" in document["paths"]


async def test_sheets_are_stored_reused_and_deleted_like_frames(
    storage_settings: Settings, media: Media, videos: Path
) -> None:
    async with AppClient(storage_settings) as app:
        bucket = Bucket(storage_settings)
        name = place(media.standard(), videos)
        first = await storyboard_job(app, name, interval=0.25, storyboard_width=64)
        board = await check_storyboard(app, first, 2.0, 8, compare=1)
        sheet = await image(app, board["sheets"][0])
        stored = await bucket.objects()
        assert len(stored) == 9  # 8 frames and the sheet, each once
        again = await storyboard_job(app, name, interval=0.25, storyboard_width=64)
        job = (await get(app, f"/job-status/{again}")).json()
        assert job["plan"]["strategy"] == "reused"
        reused = (await check_storyboard(app, again, 2.0, 8))["sheets"][0]
        assert await image(app, reused) == sheet
        assert (await app.http.delete(f"/job/{first}")).status_code == 200
        await app.services.jobs.submissions.collect()
        assert await image(app, reused) == sheet  # the reused job holds it still
        assert (await app.http.delete(f"/job/{again}")).status_code == 200
        await app.services.jobs.submissions.collect()
        assert await bucket.objects() == {}


def test_vfe_extract_writes_the_storyboard(media: Media, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    argv = ["extract", str(media.standard()), "--interval", "0.2", "--storyboard",
            "--storyboard-width", "80", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    frames = json.loads((out / "frames.json").read_text())
    cues = parse_vtt((out / "storyboard.vtt").read_text())
    board = json.loads((out / "storyboard.json").read_text())
    assert len(cues) == len(frames) == 10 and board["tile_count"] == 10
    assert [c[0] for c in cues] == [round(f["timestamp"], 3) for f in frames]
    assert cues[-1][1] == 2.0 and {c[2] for c in cues} == {"storyboard-0.jpg"}
    sheet = decode((out / "storyboard-0.jpg").read_bytes())
    assert sheet.shape == (60, 800, 3)  # 10 tiles of 80x60 in a row
    for (_, _, _, (x, y, w, h)), frame in zip(cues, frames, strict=True):
        reference = decode((out / frame["filename"]).read_bytes(), (w, h))
        assert psnr(sheet[y : y + h, x : x + w], reference) > 30
    assert not (out / ".vfe-work").exists()
