"""End-to-end behaviour of a real vfe server: SSE, cancel, crash and SIGTERM recovery,
Redis going away and coming back, the concurrency bound, and /health under load.

Each test starts ``python -m vfe serve`` in a subprocess (the ``live_server`` fixture)
with real FFmpeg and a real redis-server, and talks to it over TCP with httpx. SSE
streams are read line by line in a background thread, so a test can act (cancel, kill,
signal) while a stream is open and then check how the stream ended.

Servers run on the in-memory cache (the bare-machine default) unless a test asks for
Redis: the restart tests use a real redis-server too, since a cache that outlives the
server is where a stale "processing" answer would come from after a restart.
"""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis

from tests.conftest import (
    LiveServer,
    Media,
    RedisServer,
    patience,
    place,
    stored_frames,
    wait_until,
)
from tests.streams import SseReader

pytestmark = pytest.mark.live

FINISHED = ("completed", "failed", "cancelled")
HTTP_TIMEOUT = httpx.Timeout(30.0)


# --- helpers -------------------------------------------------------------------------------


class Api:
    """A small sync client for one server."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server

    @property
    def url(self) -> str:
        return self.server.url

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=HTTP_TIMEOUT, **kwargs)

    def submit(self, video_source: str, interval: float) -> str:
        """A path job; ``reuse`` off, so every job runs (the tests here submit one video
        with the same options again and watch each run)."""
        res = httpx.post(
            self.url + "/video-job",
            json={"video_source": video_source, "interval": interval, "reuse": False},
            timeout=HTTP_TIMEOUT,
        )
        assert res.status_code == 200, res.text
        body = res.json()
        assert body["status"] == "pending", body
        job_id: str = body["job_id"]
        return job_id

    def status(self, job_id: str) -> dict[str, Any]:
        res = self.get(f"/job-status/{job_id}")
        assert res.status_code == 200, res.text
        body: dict[str, Any] = res.json()
        return body

    def frames(self, job_id: str) -> dict[str, Any]:
        res = self.get(f"/frames/{job_id}", params={"limit": 10000})
        assert res.status_code == 200, res.text
        body: dict[str, Any] = res.json()
        return body

    def health(self) -> dict[str, Any]:
        res = self.get("/health")
        assert res.status_code == 200, res.text
        body: dict[str, Any] = res.json()
        return body

    def wait_running(self, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the job is processing and has listed at least one frame."""

        def running() -> dict[str, Any] | None:
            body = self.status(job_id)
            assert body["status"] not in FINISHED, f"job ended too soon: {body}"
            ok = body["status"] == "processing" and body["processed_frames"] > 0
            return body if ok else None

        result: dict[str, Any] = wait_until(running, "the job to be mid-run", within=timeout)
        return result

    def wait_finished(self, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            body = self.status(job_id)
            return body if body["status"] in FINISHED else None

        result: dict[str, Any] = wait_until(
            finished, f"job {job_id} to finish", within=timeout, every=0.1
        )
        return result


def job_processes(job_id: str) -> list[psutil.Process]:
    """Every process on the machine whose command line mentions the job."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if job_id in cmdline:
            found.append(proc)
    return found


def ffmpeg_children(server: LiveServer) -> list[psutil.Process]:
    assert server.proc is not None
    try:
        children = psutil.Process(server.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    alive = []
    for child in children:
        try:
            if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                if child.name().startswith("ff"):
                    alive.append(child)
        except psutil.NoSuchProcess:
            continue
    return alive


def frames_base(server: LiveServer) -> Path:
    """Where the server stores frame objects (``ab/<sha256>.jpg``) and its scratch."""
    return Path(server.env["FRAMES_BASE_PATH"])


def work_folders(server: LiveServer, job_id: str) -> list[Path]:
    """The job's work folders in every process's scratch folder
    (``FRAMES_BASE_PATH/.work/<process>/<job_id>``)."""
    return sorted((frames_base(server) / ".work").glob(f"*/{job_id}"))


def stored_object(server: LiveServer, frame: dict[str, Any]) -> Path:
    """The file that keeps a listed frame's bytes: named by its checksum."""
    checksum: str = frame["checksum"]
    ext = frame["filename"].rsplit(".", 1)[1]
    return frames_base(server) / checksum[:2] / f"{checksum}.{ext}"


def db_status(server: LiveServer, job_id: str) -> str | None:
    """The job's status as stored, read straight from SQLite (server stopped)."""
    db = server.env["DATABASE_PATH"]
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else str(row[0])


def check_frames_complete(api: Api, job_id: str) -> dict[str, Any]:
    """A finished job's frames: counted, unique, in order, each stored whole under its
    checksum, and exactly the objects stored (the server holds this job alone)."""
    job = api.status(job_id)
    assert job["status"] == "completed", job
    listing = api.frames(job_id)
    frames = listing["frames"]
    total = job["total_frames"]
    assert total > 0
    assert listing["total_count"] == total == job["processed_frames"] == len(frames)
    indexes = [f["index"] for f in frames]
    names = [f["filename"] for f in frames]
    stamps = [f["timestamp"] for f in frames]
    assert len(set(indexes)) == len(indexes), "duplicate frame index"
    assert len(set(names)) == len(names), "duplicate frame filename"
    assert len(set(stamps)) == len(stamps), "duplicate frame timestamp"
    assert indexes == list(range(total)), "frames missing or out of order"
    assert stamps == sorted(stamps)
    objects = set()
    for frame in frames:
        path = stored_object(api.server, frame)
        assert path.is_file(), f"frame {frame['index']} has no stored object"
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == frame["checksum"], f"{path} is not whole"
        assert len(data) == frame["size_bytes"], frame
        objects.add(path)
    # A re-run makes the same bytes as the run it replaces, so the same objects: nothing
    # stored is left unlisted (no stray object of a killed or stopped run).
    stored = stored_frames(frames_base(api.server))
    assert stored == objects, f"stored but not listed: {sorted(stored - objects)[:5]}"
    return job


def max_overlap(jobs: list[dict[str, Any]]) -> int:
    """The largest number of jobs whose [started_at, finished_at] spans overlap."""
    points: list[tuple[float, int]] = []
    for job in jobs:
        start = datetime.fromisoformat(job["started_at"].replace("Z", "+00:00")).timestamp()
        end = datetime.fromisoformat(job["finished_at"].replace("Z", "+00:00")).timestamp()
        points += [(start, 1), (end, -1)]
    running = peak = 0
    for _, step in sorted(points):  # at equal times an end (-1) sorts before a start
        running += step
        peak = max(peak, running)
    return peak


class HealthSampler:
    """Polls /health in a thread while a test runs; keeps every answer and its latency."""

    def __init__(self, url: str, every: float = 0.05) -> None:
        self.url = url
        self.every = every
        self.samples: list[tuple[float, int, dict[str, Any]]] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=HTTP_TIMEOUT) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    res = client.get(self.url + "/health")
                    self.samples.append((time.monotonic() - started, res.status_code, res.json()))
                except Exception as exc:
                    self.errors.append(exc)
                self._stop.wait(self.every)

    def __enter__(self) -> HealthSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    @property
    def running(self) -> list[int]:
        return [body["jobs"]["running"] for _, _, body in self.samples]


@pytest.fixture
def serve(
    live_server: Callable[..., LiveServer], request: pytest.FixtureRequest
) -> Callable[..., Api]:
    """``serve(redis=False, **env)`` starts a server and returns its Api.

    With ``redis=True`` the server uses the test's redis-server, started on demand.
    """

    def start(redis: bool = False, **env: Any) -> Api:
        if redis:
            server: RedisServer = request.getfixturevalue("redis_server")
            env["REDIS_PORT"] = server.port
        return Api(live_server(**env))

    return start


# --- 1. SSE --------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_global_events_follow_every_job_from_snapshot_to_deleted(
    serve: Callable[..., Api], media: Media, videos: Path
) -> None:
    api = serve()
    name = place(media.standard(), videos)
    before = api.submit(name, 1.0)
    wait_until(lambda: api.status(before)["status"] == "completed", "the first job")
    stream = SseReader(f"{api.url}/events")
    assert stream.status_code == 200
    snapshot = stream.wait_for("snapshot")
    assert [j["job_id"] for j in snapshot["jobs"]] == [before]
    assert snapshot["jobs"][0]["status"] == "completed"

    def of(job_id: str) -> list[tuple[str, dict[str, Any]]]:
        return [(n, d) for n, d in stream.events if d.get("job_id") == job_id]

    job_id = api.submit(name, 0.04)  # as another client would: the list learns of it live
    wait_until(lambda: any(n == "done" for n, _ in of(job_id)), "done on /events", within=120)
    names = [n for n, _ in of(job_id)]
    assert names[0] == "created" and names[-1] == "done" and "status" in names
    assert "frame" not in stream.names  # frames stay on the job's own stream
    created = of(job_id)[0][1]
    assert created["status"] == "pending" and created["video_source"] == name
    done = of(job_id)[-1][1]
    assert done["status"] == "completed" and done["processed_frames"] == 50
    assert api.get(f"/job/{job_id}").status_code == 405  # only DELETE there
    assert httpx.delete(f"{api.url}/job/{job_id}", timeout=HTTP_TIMEOUT).status_code == 200
    wait_until(lambda: any(n == "deleted" for n, _ in of(job_id)), "deleted on /events")
    assert of(job_id)[-1] == ("deleted", {"job_id": job_id})
    assert stream.error is None and not stream.ended.is_set()  # it stays open


@pytest.mark.timeout(240)
def test_sse_streams_progress_frames_and_done_then_closes(
    serve: Callable[..., Api], media: Media, videos: Path
) -> None:
    api = serve()
    # 30 s of 720p: the job runs for seconds, so the stream sees progress events (one a
    # second) however fast the probe (now made at submit) and the planning are.
    name = place(media.slow(), videos)
    job_id = api.submit(name, 0.1)
    stream = SseReader(f"{api.url}/job-status/{job_id}/events")
    assert stream.status_code == 200

    stream.wait_for("done", 120)
    stream.wait_ended()  # the server closes the stream after the final event
    assert stream.error is None, f"stream did not end cleanly: {stream.error!r}"

    names = stream.names
    assert names[0] == "snapshot"
    assert names[-1] == "done"
    assert names.count("done") == 1
    assert "progress" in names
    snapshot = stream.of("snapshot")[0]
    assert snapshot["job_id"] == job_id

    done = stream.of("done")[0]
    total = done["total_frames"]
    assert done["status"] == "completed"
    assert total == done["processed_frames"] == 300

    progress = stream.of("progress")
    assert all(p["total_frames"] == total for p in progress)
    counts = [p["processed_frames"] for p in progress]
    assert counts == sorted(counts), "processed_frames went down"

    frames = stream.of("frame")
    seen = [f["index"] for f in frames]
    assert len(seen) == len(set(seen)), "a frame was announced twice"
    # Subscribed before the snapshot was read: every frame after it arrives as an event.
    missing = set(range(snapshot["processed_frames"], total)) - set(seen)
    assert not missing, f"frame events missing: {sorted(missing)[:10]}"
    assert len(frames) >= total // 2, "the stream attached too late to test frame events"
    listed = {f["filename"]: f for f in api.frames(job_id)["frames"]}
    for frame in frames:
        assert frame["job_id"] == job_id
        assert listed[frame["filename"]]["url"] == frame["url"]
        assert frame["url"] == f"/frames/{job_id}/{frame['filename']}"

    # A finished job: snapshot and its final event, then the stream closes by itself.
    again = SseReader(f"{api.url}/job-status/{job_id}/events")
    again.wait_ended()
    assert again.error is None, repr(again.error)
    assert again.status_code == 200
    assert again.names == ["snapshot", "done"]
    assert again.of("snapshot")[0]["status"] == "completed"

    # Unknown and malformed ids.
    for bad in ("2f1e4a8e-0d4b-4bd8-9a3e-5f3a1c1c0b7e", "not-a-job"):
        res = api.get(f"/job-status/{bad}/events")
        assert res.status_code == 404, res.text
        assert res.json() == {"detail": "Job not found"}


# --- 2. cancel -----------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_cancel_running_job_stops_ffmpeg_and_removes_everything(
    serve: Callable[..., Api], media: Media, videos: Path
) -> None:
    api = serve()
    name = place(media.slow(), videos)
    job_id = api.submit(name, 0.04)
    stream = SseReader(f"{api.url}/job-status/{job_id}/events")
    api.wait_running(job_id)
    base = frames_base(api.server)
    # mid-run both kinds of files are there: its run's work folder, and stored frames
    assert work_folders(api.server, job_id), "the run has no work folder"
    assert stored_frames(base), "no frame object stored before the cancel"
    running = ffmpeg_children(api.server)
    assert any(job_id in " ".join(p.cmdline()) for p in running), "no FFmpeg ran for the job"

    started = time.monotonic()
    res = httpx.delete(f"{api.url}/job/{job_id}", timeout=HTTP_TIMEOUT)
    took = time.monotonic() - started
    assert res.status_code == 200, res.text
    assert res.json()["status"] == "cancelled"
    assert took < 3.0, f"cancel took {took:.2f} s"

    # Checked at once: DELETE returns only after FFmpeg is reaped and the files are gone
    # (its work folder, and every object no other job holds: here, every object).
    assert job_processes(job_id) == []
    assert ffmpeg_children(api.server) == []
    assert work_folders(api.server, job_id) == []
    assert stored_frames(base) == set()
    assert api.get(f"/job-status/{job_id}").status_code == 404
    assert api.get(f"/frames/{job_id}").status_code == 404

    stream.wait_ended()
    assert stream.error is None, repr(stream.error)
    assert stream.names[-1] == "cancelled"
    assert "done" not in stream.names

    # Nothing comes back later (no late writer recreating a folder, an object or the
    # job): the quiet second is what is tested, so it is a fixed sleep.
    time.sleep(1.0)
    assert work_folders(api.server, job_id) == []
    assert stored_frames(base) == set()
    assert job_processes(job_id) == []
    assert api.get(f"/job-status/{job_id}").status_code == 404
    assert api.health()["jobs"]["running"] == 0


# --- 3. crash recovery ---------------------------------------------------------------------


@pytest.mark.timeout(360)
def test_crash_mid_job_then_restart_completes_without_duplicates(
    serve: Callable[..., Api], media: Media, videos: Path
) -> None:
    api = serve(redis=True)
    name = place(media.slow(), videos)
    # 300 frames of 720p: killed far from the end, and run about twice (the orphan below
    # finishes it, then the restart runs it again), so no more frames than that.
    job_id = api.submit(name, 0.1)
    api.wait_running(job_id)
    listed_before = wait_until(lambda: api.frames(job_id)["total_count"], "frames to be listed")
    assert listed_before > 0
    work = work_folders(api.server, job_id)
    assert work, "the run has no work folder"

    api.server.kill()  # SIGKILL: no shutdown code runs
    assert db_status(api.server, job_id) == "processing"
    # nothing removed the killed process's scratch: the next start has to
    assert all(folder.is_dir() for folder in work)
    # The orphaned FFmpeg outlives the server: it ignores SIGPIPE, so its writes to the
    # closed pipes fail quietly and it decodes on to the end of its part of the video.
    # Restart once it has gone (up to a whole run of the job on a busy machine).
    wait_until(lambda: not job_processes(job_id), "the orphaned FFmpeg to exit", within=120)

    api.server.start()
    job = api.wait_finished(job_id)
    assert job["status"] == "completed", job
    assert job["attempts"] == 2, job
    assert job["error_message"] is None
    assert check_frames_complete(api, job_id)["total_frames"] == 300
    # the killed process's scratch (its partial frames) went at the start; the new
    # run's work folder went when it completed
    assert not any(folder.parent.exists() for folder in work)
    assert work_folders(api.server, job_id) == []


# --- 4. Redis goes away and comes back -----------------------------------------------------


@pytest.mark.timeout(300)
def test_redis_outage_keeps_serving_and_reconnects(
    live_server: Callable[..., LiveServer],
    redis_server: RedisServer,
    media: Media,
    videos: Path,
) -> None:
    api = Api(live_server(REDIS_PORT=redis_server.port))  # REDIS_RETRY_SECONDS is 0.5
    health = api.health()
    assert health["cache"]["backend"] == "redis"
    assert health["cache"]["redis"] == "connected"

    name = place(media.slow(), videos)
    job_id = api.submit(name, 0.2)  # 150 frames: seconds of work with Redis gone
    api.wait_running(job_id)
    cached_in_redis(api, redis_server, job_id)

    redis_server.stop()
    latencies: dict[str, float] = {}
    requests = 0
    job: dict[str, Any] = {}
    deadline = time.monotonic() + patience(120)
    while time.monotonic() < deadline:
        for path in (
            f"/job-status/{job_id}",
            f"/frames/{job_id}",
            "/dashboard/recent-frames",
            f"/dashboard/recent-frames?job_id={job_id}",
        ):
            started = time.monotonic()
            res = api.get(path)
            took = time.monotonic() - started
            latencies[path] = max(latencies.get(path, 0.0), took)
            requests += 1
            assert res.status_code == 200, f"{path}: {res.status_code} {res.text}"
            if path.startswith("/job-status"):
                job = res.json()
        if job.get("status") in FINISHED:
            break
        time.sleep(0.1)
    assert job.get("status") == "completed", job
    assert requests >= 8, "the job ended before the outage was exercised"
    check_frames_complete(api, job_id)
    recent = api.get("/dashboard/recent-frames", params={"job_id": job_id, "limit": 1000})
    assert recent.status_code == 200
    assert recent.json()["total_count"] > 0

    health = api.health()
    assert health["status"] == "healthy"
    assert health["cache"]["backend"] == "memory"

    redis_server.start()
    wait_until(lambda: api.health()["cache"]["backend"] == "redis", "cache back on Redis")
    assert api.status(job_id)["status"] == "completed"  # nothing stale served from Redis
    cached_in_redis(api, redis_server, job_id)

    # Without Redis a request may wait for one failed connect (1 s), never much longer.
    slow = {path: round(took, 2) for path, took in latencies.items() if took > 2.0}
    assert not slow, f"requests were slow while Redis was down ({requests} made): {slow}"


def cached_in_redis(api: Api, redis_server: RedisServer, job_id: str) -> None:
    """A status answer lands in Redis (running jobs invalidate it often, hence the retry)."""
    raw = redis.Redis(port=redis_server.port)
    try:

        def cached() -> bool:
            api.status(job_id)
            return bool(raw.exists(f"vfe:job:{job_id}"))

        wait_until(cached, "the job status to be cached in Redis")
    finally:
        raw.close()


# --- 5. concurrency bound ------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_at_most_max_concurrent_jobs_run_together(
    serve: Callable[..., Api], media: Media, videos: Path
) -> None:
    limit = 2
    api = serve(MAX_CONCURRENT_JOBS=limit)
    name = place(media.long(), videos)
    with HealthSampler(api.url) as sampler:
        with ThreadPoolExecutor(8) as pool:
            job_ids = list(pool.map(lambda _: api.submit(name, 0.2), range(8)))
        assert len(set(job_ids)) == 8
        jobs = [api.wait_finished(job_id) for job_id in job_ids]
    assert [job["status"] for job in jobs] == ["completed"] * 8, jobs
    assert all(job["processed_frames"] == job["total_frames"] == 100 for job in jobs)

    assert max_overlap(jobs) == limit, "jobs ran beyond the bound, or never side by side"
    assert sampler.samples, sampler.errors
    assert max(sampler.running) <= limit
    assert limit in sampler.running
    assert all(body["jobs"]["max_concurrent"] == limit for _, _, body in sampler.samples)


# --- 6. /health under load -----------------------------------------------------------------


@pytest.mark.timeout(300)
def test_health_answers_quickly_while_five_jobs_run(
    serve: Callable[..., Api], media: Media, videos: Path
) -> None:
    api = serve(MAX_CONCURRENT_JOBS=5)
    name = place(media.long(), videos)
    with HealthSampler(api.url, every=0.02) as sampler:
        # all at once: one after the other, a busy machine could finish the first job
        # before the fifth was in (each submit probes the video)
        with ThreadPoolExecutor(5) as pool:
            job_ids = list(pool.map(lambda _: api.submit(name, 0.04), range(5)))
        jobs = [api.wait_finished(job_id) for job_id in job_ids]
    assert [job["status"] for job in jobs] == ["completed"] * 5
    assert not sampler.errors, sampler.errors
    assert len(sampler.samples) >= 10
    assert all(code == 200 for _, code, _ in sampler.samples)
    assert 5 in sampler.running, f"never saw five jobs running: {sorted(set(sampler.running))}"
    busy = [took for took, _, body in sampler.samples if body["jobs"]["running"] > 0]
    assert busy
    assert max(busy) < 1.0, f"/health took {max(busy):.2f} s while jobs ran"


# --- 7. SIGTERM with a running job and an open stream --------------------------------------


@pytest.mark.timeout(300)
def test_sigterm_lets_a_running_job_finish_within_the_grace_and_takes_no_new_one(
    serve: Callable[..., Api], media: Media, videos: Path
) -> None:
    grace = patience(60)  # far longer than the job, even on a busy machine
    api = serve(SHUTDOWN_GRACE_SECONDS=grace, MAX_CONCURRENT_JOBS=1)
    name = place(media.slow(), videos)
    running = api.submit(name, 0.5)  # 60 frames of 720p: a few seconds
    queued = api.submit(name, 1)
    api.wait_running(running)
    started = time.monotonic()
    code = api.server.stop(signal.SIGTERM, timeout=grace + 30)
    took = time.monotonic() - started
    assert code in (0, -signal.SIGTERM), code
    assert took < grace, f"the server took {took:.1f} s to stop"
    assert db_status(api.server, running) == "completed"  # finished inside the grace
    assert db_status(api.server, queued) == "pending"  # not started while stopping
    api.server.start()
    assert api.wait_finished(queued)["status"] == "completed"


@pytest.mark.timeout(300)
def test_sigterm_mid_job_ends_stream_and_job_resumes_after_restart(
    serve: Callable[..., Api], media: Media, videos: Path
) -> None:
    # A grace period far shorter than the job: it must be stopped and left pending.
    api = serve(redis=True, SHUTDOWN_GRACE_SECONDS=1)
    name = place(media.slow(), videos)
    job_id = api.submit(name, 0.04)
    stream = SseReader(f"{api.url}/job-status/{job_id}/events")
    api.wait_running(job_id)
    stream.wait_for("frame")
    work = work_folders(api.server, job_id)
    assert work, "the run has no work folder"

    started = time.monotonic()
    code = api.server.stop(signal.SIGTERM)
    took = time.monotonic() - started
    # bounded: the grace (1 s), then FFmpeg stops (about 1 s); the rest is slack for a
    # loaded CI box. The event stream ends at the signal, not after the grace.
    assert took < 8.0, f"the server took {took:.1f} s to stop"
    # uvicorn re-raises the signal it caught once it has shut down cleanly.
    assert code in (0, -signal.SIGTERM), code
    assert "vfe stopped" in api.server.log.read_text(), "the lifespan shutdown did not run"
    stream.wait_ended()
    assert stream.ended_at is not None and stream.ended_at - started < 3.0
    # Ended by the server like a finished job's stream, not cut off mid-response.
    assert stream.error is None, f"stream cut off: {stream.error!r}"
    assert not {"done", "failed", "cancelled"} & set(stream.names), stream.names
    assert db_status(api.server, job_id) == "pending"
    assert job_processes(job_id) == []
    # the stopped process removed its scratch folder, the run's partial frames with it
    assert not any(folder.parent.exists() for folder in work)
    assert work_folders(api.server, job_id) == []

    api.server.start()
    job = api.wait_finished(job_id)
    assert job["status"] == "completed", job
    assert job["attempts"] == 2
    assert check_frames_complete(api, job_id)["total_frames"] == 750
    assert work_folders(api.server, job_id) == []
