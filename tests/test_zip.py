"""GET /job/{job_id}/frames.zip is made while it is sent: unread downloads cost no disk, a
cut one leaves nothing behind, and the zip read to its end holds every frame. Against a
real server, with real clients that stop reading and a real SIGKILL."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, Media, place, wait_until

pytestmark = pytest.mark.live


def disk_used(folder: Path) -> int:
    """Bytes in every file under ``folder`` (the frames, and anything staged beside them)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def finished_job(server: LiveServer, name: str, interval: float) -> str:
    res = httpx.post(f"{server.url}/video-job", json={"video_source": name,
                     "interval": interval, "format": "png"}, timeout=60)  # fmt: skip
    assert res.status_code == 200, res.text
    job_id: str = res.json()["job_id"]
    status = wait_until(lambda: server.finished(job_id), "the job", within=240)
    assert status["status"] == "completed", status
    return job_id


@pytest.fixture
def big_job(
    live_server: Callable[..., LiveServer], media: Media, videos: Path, tmp_path: Path
) -> Iterator[tuple[LiveServer, str, Path]]:
    server = live_server()
    job_id = finished_job(server, place(media.slow(), videos), 0.5)  # 60 PNG frames of 720p
    yield server, job_id, tmp_path / "runtime"


def test_unread_downloads_use_no_disk_and_a_full_one_holds_every_frame(
    big_job: tuple[LiveServer, str, Path],
) -> None:
    server, job_id, runtime = big_job
    frames = httpx.get(f"{server.url}/frames/{job_id}", timeout=30).json()["frames"]
    total = sum(f["size_bytes"] for f in frames)
    assert len(frames) == 60 and total > 8 * 1024 * 1024  # large enough to notice
    before = disk_used(runtime)
    url = f"{server.url}/job/{job_id}/frames.zip"
    with ExitStack() as open_streams:
        for _ in range(6):  # six clients that read the first bytes, then nothing more
            client = open_streams.enter_context(httpx.Client(timeout=60))
            res = open_streams.enter_context(client.stream("GET", url))
            assert res.status_code == 200
            first = next(res.iter_raw(4096))
            assert first.startswith(b"PK\x03\x04")
        # Each server-side stream is now mid-zip; a staged copy would be on disk already.
        assert disk_used(runtime) - before < 1024 * 1024, "a download staged its zip on disk"
        assert httpx.get(f"{server.url}/health/live", timeout=30).status_code == 200
    full = httpx.get(url, timeout=120)
    assert full.status_code == 200
    with zipfile.ZipFile(io.BytesIO(full.content)) as archive:
        assert archive.testzip() is None  # every CRC checks
        assert archive.namelist() == [*(f["filename"] for f in frames), "frames.json"]
        for frame in frames[:: len(frames) // 6]:
            image = httpx.get(f"{server.url}{frame['url']}", timeout=30).content
            assert archive.read(frame["filename"]) == image
    assert disk_used(runtime) - before < 1024 * 1024


def test_a_download_cut_by_sigkill_leaves_nothing(
    big_job: tuple[LiveServer, str, Path],
) -> None:
    server, job_id, runtime = big_job
    files_before = {p for p in runtime.rglob("*") if p.is_file() and "logs" not in p.parts}
    with (
        httpx.Client(timeout=60) as client,
        client.stream("GET", f"{server.url}/job/{job_id}/frames.zip") as res,
    ):
        next(res.iter_raw(4096))
        server.kill()  # mid-download
    files_after = {p for p in runtime.rglob("*") if p.is_file() and "logs" not in p.parts}
    leftovers = {p for p in files_after - files_before if not p.name.endswith(("-wal", "-shm"))}
    assert leftovers == set(), leftovers


def test_zips_staged_by_older_versions_are_swept_at_start(
    live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    spool = tmp_path / "runtime" / "frames" / ".zips"
    spool.mkdir(parents=True)
    (spool / f"{os.getpid()}-old.zip").write_bytes(b"PK" + b"\0" * 4096)
    live_server()
    assert not spool.exists()
