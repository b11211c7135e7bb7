"""The scaled-out layout for real: ``vfe serve --api-only`` and ``vfe worker`` processes on
one real PostgreSQL database (a new one per test), sharing one frames folder, or (the
S3 case) an S3 bucket on a real SeaweedFS and no folder at all.

Each process is a real uvicorn in a subprocess; workers are SIGKILLed for real. Streams
are read in a background thread, as in test_live.py.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import (
    LiveServer,
    Media,
    free_port,
    patience,
    place,
    stored_frames,
    wait_until,
)
from tests.postgres import PostgresServer
from tests.streams import SseReader

pytestmark = pytest.mark.live

TIMEOUT = httpx.Timeout(30.0)
STALLED = "3"  # seconds: a SIGKILLed worker's job runs again soon after


@pytest.fixture
def cluster(live_server: Callable[..., LiveServer], postgres_url: str) -> Callable[..., LiveServer]:
    """``cluster("worker")`` or ``cluster("serve", "--api-only")``: a process of the
    scaled-out layout on this test's database."""

    def start(*command: str, **env: Any) -> LiveServer:
        env.setdefault("STALLED_AFTER_SECONDS", STALLED)
        return live_server(*command, DATABASE_URL=postgres_url, **env)

    return start


def submit(api: LiveServer, name: str, interval: float) -> str:
    """A path job; ``reuse`` off, so every job runs."""
    body = {"video_source": name, "interval": interval, "reuse": False}
    res = httpx.post(f"{api.url}/video-job", json=body, timeout=TIMEOUT)
    assert res.status_code == 200, res.text
    job_id: str = res.json()["job_id"]
    return job_id


def status(api: LiveServer, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{api.url}/job-status/{job_id}", timeout=TIMEOUT).json()
    return body


def ffmpeg_children(server: LiveServer) -> list[psutil.Process]:
    assert server.proc is not None
    return [p for p in psutil.Process(server.proc.pid).children(recursive=True)
            if p.name() == "ffmpeg"]  # fmt: skip


def gone(processes: list[psutil.Process]) -> bool:
    """Whether none of them still runs (a zombie waiting to be reaped has stopped)."""
    for proc in processes:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


def test_a_job_waits_for_a_worker_and_its_events_reach_the_api(
    cluster: Callable[..., LiveServer], media: Media, videos: Path
) -> None:
    api = cluster("serve", "--api-only")
    job_id = submit(api, place(media.long(), videos), 1.0)
    health = httpx.get(f"{api.url}/health", timeout=TIMEOUT).json()
    assert status(api, job_id)["status"] == "pending"  # nobody runs jobs yet
    stream = SseReader(f"{api.url}/job-status/{job_id}/events")
    worker = cluster("worker")
    done = wait_until(lambda: (s := status(api, job_id))["status"] == "completed" and s,
                      "the worker to complete the job")  # fmt: skip
    stream.wait_ended()
    names = stream.names
    assert names[-1] == "done" and names.count("done") == 1
    assert {"progress", "frame"} <= set(names)
    frames = httpx.get(f"{api.url}/frames/{job_id}", timeout=TIMEOUT).json()["frames"]
    assert [round(f["timestamp"], 3) for f in frames] == [float(t) for t in range(20)]
    assert done["total_frames"] == done["processed_frames"] == 20
    streamed = {data["filename"] for data in stream.of("frame")}
    assert streamed == {f["filename"] for f in frames}
    assert health["status"] in ("healthy", "unhealthy")
    assert worker.proc is not None and worker.proc.poll() is None


def test_delete_on_the_api_stops_the_run_on_a_worker(
    cluster: Callable[..., LiveServer], media: Media, videos: Path, tmp_path: Path
) -> None:
    api = cluster("serve", "--api-only")
    worker = cluster("worker")
    job_id = submit(api, place(media.slow(), videos), 0.04)
    wait_until(lambda: status(api, job_id)["processed_frames"] > 0, "the job to list frames")
    running = ffmpeg_children(worker)
    assert running
    started = time.monotonic()
    res = httpx.delete(f"{api.url}/job/{job_id}", timeout=TIMEOUT)
    assert res.status_code == 200 and res.json()["status"] == "cancelled"
    wait_until(lambda: gone(running), "the worker's FFmpeg to stop", within=2)
    assert time.monotonic() - started < patience(2) + 1
    assert httpx.get(f"{api.url}/job-status/{job_id}", timeout=TIMEOUT).status_code == 404
    frames = tmp_path / "runtime" / "frames"  # the folder every process shares
    assert stored_frames(frames) == set()  # its frames went with it
    assert not list(frames.glob(f".work/*/{job_id}"))  # and the run's scratch


def upload(api: LiveServer, video: Path, interval: float) -> str:
    """Send ``video`` as an upload; ``reuse`` off, so every job runs."""
    res = httpx.post(
        f"{api.url}/video-job", files={"file": (video.name, video.read_bytes(), "video/mp4")},
        data={"interval": str(interval), "reuse": "false"}, timeout=TIMEOUT,
    )  # fmt: skip
    assert res.status_code == 200, res.text
    job_id: str = res.json()["job_id"]
    return job_id


def own_folders(tmp_path: Path) -> dict[str, str]:
    """Settings that give a process folders of its own: it shares nothing on disk."""
    folder = tmp_path / f"own-{uuid.uuid4().hex[:8]}"
    return {"FRAMES_BASE_PATH": str(folder / "frames"), "UPLOADS_PATH": str(folder / "uploads"),
            "VIDEOS_BASE_PATH": str(folder / "videos")}  # fmt: skip


@pytest.mark.parametrize("storage", ["folder", "s3"])
def test_thirty_jobs_on_three_workers_one_killed_each_completes_once(
    cluster: Callable[..., LiveServer],
    media: Media,
    videos: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    storage: str,
) -> None:
    """On a shared folder with path sources; and on S3 with uploads and no folder shared
    by any two processes (every byte a worker needs comes from the bucket)."""
    env: dict[str, str] = {}
    if storage == "s3":
        server: Any = request.getfixturevalue("s3_server")
        env = server.vfe_env(f"scale-{uuid.uuid4().hex[:8]}")
    mine = own_folders if storage == "s3" else lambda _: {}
    api = cluster("serve", "--api-only", **env, **mine(tmp_path))
    workers = [
        cluster("worker", MAX_CONCURRENT_JOBS="2", **env, **mine(tmp_path)) for _ in range(3)
    ]
    everything = SseReader(f"{api.url}/events")
    if storage == "s3":
        jobs = {upload(api, media.long() if n % 10 == 0 else media.standard(), 0.5):
                (40 if n % 10 == 0 else 4) for n in range(30)}  # fmt: skip
    else:
        short, long = place(media.standard(), videos), place(media.long(), videos)
        jobs = {submit(api, long if n % 10 == 0 else short, 0.5): (40 if n % 10 == 0 else 4)
                for n in range(30)}  # fmt: skip
    # kill a worker in the middle of a long job, FFmpeg and all
    victim = wait_until(lambda: next((w for w in workers if ffmpeg_children(w)), None),
                        "a worker to run FFmpeg")  # fmt: skip
    orphans = ffmpeg_children(victim)
    victim.kill()
    wait_until(lambda: gone(orphans), "the killed worker's FFmpeg to stop", within=2)

    def all_finished() -> bool:
        return all(status(api, j)["status"] in ("completed", "failed", "cancelled") for j in jobs)

    wait_until(all_finished, "every job to finish", within=240)
    for job_id, expected in jobs.items():
        body = status(api, job_id)
        assert body["status"] == "completed", body
        assert body["total_frames"] == body["processed_frames"] == expected
        frames = httpx.get(f"{api.url}/frames/{job_id}", timeout=TIMEOUT).json()["frames"]
        assert len(frames) == expected == len({f["index"] for f in frames})
        for frame in frames:  # every listed frame is whole
            image = httpx.get(f"{api.url}{frame['url']}", timeout=TIMEOUT)
            assert image.status_code == 200 and len(image.content) == frame["file_size"]
    deadline = time.monotonic() + patience(10)
    while time.monotonic() < deadline:  # the last `done` events may still be on their way
        done = Counter(d["job_id"] for d in everything.of("done"))
        if all(done[j] >= 1 for j in jobs):
            break
        time.sleep(0.1)
    assert all(done[j] == 1 for j in jobs), done


def test_sigterm_on_a_worker_mid_job_loses_nothing(
    cluster: Callable[..., LiveServer], media: Media, videos: Path
) -> None:
    api = cluster("serve", "--api-only")
    first = cluster("worker", SHUTDOWN_GRACE_SECONDS="0.5")
    job_id = submit(api, place(media.slow(), videos), 0.04)
    wait_until(lambda: status(api, job_id)["processed_frames"] > 0, "the job to list frames")
    assert first.stop() in (0, -signal.SIGTERM)  # the grace ends before the job does
    after = status(api, job_id)
    assert after["status"] in ("pending", "completed"), after
    cluster("worker")
    done = wait_until(lambda: (s := status(api, job_id))["status"] == "completed" and s,
                      "another worker to finish the job", within=240)  # fmt: skip
    frames = httpx.get(f"{api.url}/frames/{job_id}", timeout=TIMEOUT).json()["frames"]
    assert done["total_frames"] == len(frames) == len({f["index"] for f in frames}) == 750


def test_two_api_processes_give_the_same_answers(
    cluster: Callable[..., LiveServer], media: Media, videos: Path
) -> None:
    one, two = cluster("serve", "--api-only"), cluster("serve", "--api-only")
    cluster("worker")
    job_id = submit(one, place(media.standard(), videos), 0.4)
    assert status(two, job_id)["status"] in ("pending", "processing", "completed")
    wait_until(lambda: status(one, job_id)["status"] == "completed", "the job to complete")
    # the second process had cached the job unfinished: the job's events dropped that
    wait_until(lambda: status(two, job_id)["status"] == "completed", "the second to agree",
               within=5)  # fmt: skip
    for path in (f"/job-status/{job_id}", f"/frames/{job_id}", "/jobs"):
        a = httpx.get(one.url + path, timeout=TIMEOUT).json()
        b = httpx.get(two.url + path, timeout=TIMEOUT).json()
        for body in (a, b):
            body.pop("elapsed_seconds", None)
        assert a == b, path
    assert httpx.delete(f"{two.url}/job/{job_id}", timeout=TIMEOUT).status_code == 200
    wait_until(lambda: httpx.get(f"{one.url}/job-status/{job_id}", timeout=TIMEOUT).status_code
               == 404, "the first to forget the job", within=5)  # fmt: skip


@pytest.mark.timeout(300)
def test_postgresql_restarting_mid_run_is_503_meanwhile_and_every_job_finishes(
    live_server: Callable[..., LiveServer], media: Media, videos: Path
) -> None:
    server = PostgresServer(free_port())
    started: list[LiveServer] = []
    try:
        server.start()
        url = server.create_database()
        env = {"DATABASE_URL": url, "STALLED_AFTER_SECONDS": STALLED}
        api = live_server("serve", "--api-only", **env)
        started.append(api)
        started.append(live_server("worker", **env))
        name = place(media.long(), videos)
        jobs = [submit(api, name, 0.5) for _ in range(4)]
        wait_until(lambda: status(api, jobs[0])["processed_frames"] > 0, "a job to run")
        server.stop()
        answers = [
            httpx.get(f"{api.url}/job-status/{jobs[-1]}", timeout=TIMEOUT),
            httpx.post(f"{api.url}/video-job", json={"video_source": name}, timeout=TIMEOUT),
            httpx.get(f"{api.url}/jobs", timeout=TIMEOUT),
            httpx.get(f"{api.url}/health", timeout=TIMEOUT),
        ]
        for res in answers:
            assert res.status_code == 503, (res.request.url, res.status_code, res.text)
            assert res.json()["detail" if "detail" in res.json() else "status"]
        server.start()

        def finished() -> bool:
            return all(status(api, j)["status"] == "completed" for j in jobs)

        wait_until(finished, "every job to complete after the restart", within=240)
        for job_id in jobs:
            frames = httpx.get(f"{api.url}/frames/{job_id}", timeout=TIMEOUT).json()["frames"]
            assert len(frames) == len({f["index"] for f in frames}) == 40
    finally:
        try:
            for process in started:  # before their database goes, which each would wait for
                if process.proc is not None:
                    process.stop()
        finally:
            server.remove()
