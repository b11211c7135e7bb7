"""DELETE /job/{job_id} removes the job's rows at once and the stored objects no other job
holds, also for a job of very many; a delete cut short by a stop finishes on the next
start. Real server, real files."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, Media, place, stored_frames, wait_until
from vfe.models import Frame, Job, JobStatus, SourceType
from vfe.storage import frame_key
from vfe.store.sqlite import SqliteStore

pytestmark = pytest.mark.live
MANY = 20_000  # frame objects one job holds: many batches for the collector


def finished_job(server: LiveServer, name: str, interval: float = 0.5) -> str:
    res = httpx.post(f"{server.url}/video-job", json={"video_source": name,
                     "interval": interval}, timeout=60)  # fmt: skip
    job_id: str = res.json()["job_id"]
    job = wait_until(lambda: server.finished(job_id), "the job", within=120)
    assert job["status"] == "completed", job
    return job_id


def listed(server: LiveServer, job_id: str) -> list[dict[str, Any]]:
    res = httpx.get(f"{server.url}/frames/{job_id}", timeout=30)
    assert res.status_code == 200, res.text
    frames: list[dict[str, Any]] = res.json()["frames"]
    return frames


def whole_objects(frames_base: Path, frames: list[dict[str, Any]]) -> set[Path]:
    """The files that keep the listed ``frames``, each checked whole (its bytes hash to
    the frame's checksum)."""
    paths = set()
    for frame in frames:
        checksum = frame["checksum"]
        path = frames_base / checksum[:2] / f"{checksum}.{frame['filename'].rsplit('.', 1)[1]}"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == checksum, frame
        paths.add(path)
    return paths


def store_object(frames_base: Path, data: bytes) -> Path:
    checksum = hashlib.sha256(data).hexdigest()
    path = frames_base / checksum[:2] / f"{checksum}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def seed(database: Path, frames_base: Path, count: int, shared: int) -> tuple[str, set[Path]]:
    """Before the server starts: a completed job of ``count`` frames, each stored by its
    SHA-256 and held by the job, as its run left them; and another completed job that
    holds the first ``shared`` of those objects too. The first job's id, and the shared
    objects."""
    paths = [store_object(frames_base, f"frame {n}".encode()) for n in range(count)]
    now = time.time()

    def job() -> Job:
        return Job(id=str(uuid.uuid4()), status=JobStatus.COMPLETED, video_source="clip.mp4",
                   source_type=SourceType.PATH, source_path="/srv/videos/clip.mp4",
                   interval=0.1, created_at=now, updated_at=now, finished_at=now)  # fmt: skip

    def rows(job_id: str, objects: list[Path]) -> list[Frame]:
        return [Frame(job_id, n, n / 10, n / 10, f"{n:06d}_{n / 10:.3f}.jpg",
                      p.stat().st_size, p.stem, None, None, now)
                for n, p in enumerate(objects)]  # fmt: skip

    async def write() -> str:
        database.parent.mkdir(parents=True, exist_ok=True)
        store = SqliteStore(database)
        await store.open()
        try:
            big, other = job(), job()
            for made, objects in ((big, paths), (other, paths[:shared])):
                await store.create_job(made)
                await store.add_frames(rows(made.id, objects))
                blobs = [(frame_key(p.stem, "jpg"), p.stat().st_size) for p in objects]
                assert await store.hold(made.id, blobs)
        finally:
            await store.close()
        return big.id

    return asyncio.run(write()), set(paths[:shared])


def test_a_delete_of_a_job_with_many_objects_removes_all_it_alone_held(
    live_server: Callable[..., LiveServer], media: Media, videos: Path, tmp_path: Path
) -> None:
    runtime = tmp_path / "runtime"
    frames = runtime / "frames"
    big, shared = seed(runtime / "db" / "metadata.db", frames, MANY, shared=3)
    server = live_server()
    kept = finished_job(server, place(media.standard(), videos))
    kept_objects = whole_objects(frames, listed(server, kept))
    res = httpx.get(f"{server.url}/frames/{big}", params={"limit": 1}, timeout=30)
    assert res.json()["total_count"] == MANY
    res = httpx.delete(f"{server.url}/job/{big}", timeout=60)
    assert res.status_code == 200
    assert httpx.get(f"{server.url}/job-status/{big}", timeout=30).status_code == 404  # at once
    assert httpx.get(f"{server.url}/frames/{big}", timeout=30).status_code == 404
    # what it alone held goes (a delete waits a few seconds for that; a huge one goes on
    # after the answer); what other jobs hold stays
    wait_until(lambda: stored_frames(frames) == shared | kept_objects, "the objects to go",
               within=120)  # fmt: skip
    assert whole_objects(frames, listed(server, kept)) == kept_objects


def test_a_delete_cut_short_finishes_at_the_next_start(
    live_server: Callable[..., LiveServer], media: Media, videos: Path, tmp_path: Path
) -> None:
    runtime = tmp_path / "runtime"
    frames = runtime / "frames"
    server = live_server()
    name = place(media.standard(), videos)
    gone = finished_job(server, name, 0.5)
    kept = finished_job(server, name, 1.0)  # other options: its own run (may share bytes)
    gone_objects = whole_objects(frames, listed(server, gone))
    kept_objects = whole_objects(frames, listed(server, kept))
    server.kill()

    async def delete_rows() -> None:
        """A delete's transaction committed, then the process stopped before its collect
        removed anything: the rows and holds are gone, the objects are not."""
        store = SqliteStore(runtime / "db" / "metadata.db")
        await store.open()
        try:
            assert await store.delete_job(gone)
        finally:
            await store.close()

    asyncio.run(delete_rows())
    alone = gone_objects - kept_objects
    assert alone and stored_frames(frames) == gone_objects | kept_objects
    min(alone).unlink()  # and a collect cut short after it removed some: no error later
    # and one a run taken for dead stored after its job's rows went: no row names it
    stray = store_object(frames, b"an object no row of this database names")
    again = live_server()
    wait_until(lambda: stored_frames(frames) == kept_objects,
               "the next start to remove what the delete left", within=120)  # fmt: skip
    assert not stray.exists()
    assert httpx.get(f"{again.url}/job-status/{gone}", timeout=30).status_code == 404
    assert whole_objects(frames, listed(again, kept)) == kept_objects  # its frames stay
    assert len(list((frames / ".work").iterdir())) == 1  # the killed process's scratch went


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
