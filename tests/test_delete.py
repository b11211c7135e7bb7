"""DELETE /job/{job_id} answers at once and removes the job's files in the background, and
a delete cut short by a stop finishes on the next start. Real server, real files."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, Media, place, wait_until

pytestmark = pytest.mark.live
MANY = 20_000  # files put beside the frames: a folder slow to remove file by file


def finished_job(server: LiveServer, name: str) -> str:
    res = httpx.post(f"{server.url}/video-job", json={"video_source": name, "interval": 0.5},
                     timeout=60)  # fmt: skip
    job_id: str = res.json()["job_id"]
    job = wait_until(lambda: server.finished(job_id), "the job", within=120)
    assert job["status"] == "completed", job
    return job_id


def crowd(folder: Path) -> None:
    for n in range(MANY):
        (folder / f"extra-{n:06d}.bin").write_bytes(b"x")


def test_delete_answers_before_the_files_are_gone_and_they_go(
    live_server: Callable[..., LiveServer], media: Media, videos: Path, tmp_path: Path
) -> None:
    server = live_server()
    frames = tmp_path / "runtime" / "frames"
    job_id = finished_job(server, place(media.standard(), videos))
    crowd(frames / job_id)
    res = httpx.delete(f"{server.url}/job/{job_id}", timeout=60)
    assert res.status_code == 200
    assert not (frames / job_id).exists()  # out of sight at once
    assert httpx.get(f"{server.url}/job-status/{job_id}", timeout=30).status_code == 404
    assert httpx.get(f"{server.url}/frames/{job_id}", timeout=30).status_code == 404
    wait_until(lambda: not (frames / ".trash").exists(), "the trash to be emptied", within=120)


def test_a_delete_cut_short_finishes_at_the_next_start(
    live_server: Callable[..., LiveServer], media: Media, videos: Path, tmp_path: Path
) -> None:
    server = live_server()
    frames = tmp_path / "runtime" / "frames"
    job_id = finished_job(server, place(media.standard(), videos))
    crowd(frames / job_id)
    assert httpx.delete(f"{server.url}/job/{job_id}", timeout=60).status_code == 200
    server.kill()  # while (most likely) the files are still being removed
    foreign = frames / str(uuid.uuid4())  # a folder no job of this database made
    foreign.mkdir()
    (foreign / "000000_0.000.jpg").write_bytes(b"\xff\xd8")
    kept = finished_job(again := live_server(), place(media.standard(), videos))
    wait_until(lambda: not (frames / ".trash").exists(), "the trash to be emptied", within=120)
    assert (foreign / "000000_0.000.jpg").is_file()  # maybe another service's: never swept
    assert (frames / kept).is_dir()  # a job that has its row keeps its frames
    listed = httpx.get(f"{again.url}/frames/{kept}", timeout=30).json()["frames"]
    assert listed and all((frames / kept / f["filename"]).is_file() for f in listed)


def test_two_deletes_of_one_job_at_once_answer_200_and_404(
    live_server: Callable[..., LiveServer], media: Media, videos: Path
) -> None:
    import concurrent.futures

    server = live_server()
    body = {"video_source": place(media.slow(), videos), "interval": 0.1}
    res = httpx.post(f"{server.url}/video-job", json=body, timeout=60)
    job_id = res.json()["job_id"]
    wait_until(lambda: httpx.get(f"{server.url}/job-status/{job_id}", timeout=30).json()
               ["status"] == "processing", "the job to run")  # fmt: skip
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: httpx.delete(f"{server.url}/job/{job_id}",
                                                       timeout=60), range(2)))  # fmt: skip
    assert sorted(a.status_code for a in answers) in ([200, 200], [200, 404]), answers
    assert httpx.get(f"{server.url}/job-status/{job_id}", timeout=30).status_code == 404
