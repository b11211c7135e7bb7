"""Job lifecycle in-process: recovery after a crash, re-runs that replace frames,
timeouts, cancellation of queued jobs, shutdown, the queue bound, concurrency, and the
progress of scene jobs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    AppClient,
    Media,
    patience,
    place,
    run_ffmpeg,
    stored_frames,
    wait_until_async,
)
from vfe.errors import ExtractionError, StoreError
from vfe.events import Event
from vfe.extractor import Extractor
from vfe.models import Frame, Job, JobStatus, SourceType
from vfe.queue import Stop
from vfe.settings import Settings
from vfe.storage import frame_key
from vfe.store.sqlite import SqliteStore


async def _seed(
    settings: Settings, job: Job, frames: list[Frame], held: list[Path] | None = None
) -> None:
    """Write rows the way a crashed earlier process would have left them: ``held``, the
    objects its run had stored (``stored``), held by the job."""
    settings.ensure_dirs()
    store = SqliteStore(settings.database_path)
    await store.open()
    try:
        await store.create_job(job)
        await store.add_frames(frames)
        blobs = [(frame_key(p.stem, p.suffix[1:]), p.stat().st_size) for p in held or []]
        assert await store.hold(job.id, blobs)
    finally:
        await store.close()


def stored(settings: Settings, data: bytes, ext: str = "jpg") -> Path:
    """Store ``data`` where the service keeps a frame's bytes: under its SHA-256."""
    checksum = hashlib.sha256(data).hexdigest()
    path = settings.frames_base_path / checksum[:2] / f"{checksum}.{ext}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def dead_scratch(settings: Settings, job_id: str) -> Path:
    """The work folder a killed process left (its lock went with it), with a partial
    frame of the job's run in it."""
    scratch = settings.frames_base_path / ".work" / uuid.uuid4().hex
    run = scratch / job_id / "1"
    run.mkdir(parents=True)
    (scratch / ".lock").write_bytes(b"")
    (run / "g0000_000002.jpg").write_bytes(b"half")
    return scratch


def whole(settings: Settings, frames: list[Frame]) -> set[Path]:
    """The files that keep ``frames``' bytes, each checked whole: there, of the frame's
    size, and hashing to its checksum."""
    paths = set()
    for frame in frames:
        ext = frame.filename.rsplit(".", 1)[1]
        path = settings.frames_base_path / frame.checksum[:2] / f"{frame.checksum}.{ext}"
        data = path.read_bytes()
        assert len(data) == frame.size_bytes, frame.filename
        assert hashlib.sha256(data).hexdigest() == frame.checksum, frame.filename
        paths.add(path)
    return paths


async def listed_objects(client: AppClient, job_id: str) -> set[Path]:
    """The files of the job's listed frames, each checked whole."""
    frames = await client.services.store.list_frames(job_id, 0, 10**6)
    return whole(client.settings, frames)


async def processing(client: AppClient, job_id: str) -> bool:
    body = (await client.http.get(f"/job-status/{job_id}")).json()
    return bool(body["status"] == "processing")


def _job(source: Path, status: JobStatus, interval: float = 0.5, **extra: Any) -> Job:
    now = time.time()
    return Job(
        id=str(uuid.uuid4()),
        status=status,
        video_source=source.name,
        source_type=SourceType.PATH,
        source_path=str(source),
        interval=interval,
        created_at=now,
        updated_at=now,
        **extra,
    )


async def test_jobs_left_processing_are_run_again_replacing_frames(
    make_client: Any, settings: Settings, media: Media, videos: Path
) -> None:
    source = videos / place(media.standard(), videos)
    job = _job(source, JobStatus.PROCESSING, total_frames=4, processed_frames=3, attempts=1)
    earlier, held = [], []
    for index, name in [(0, "000000_0.000.jpg"), (1, "000001_0.520.jpg"), (7, "000007_3.500.jpg")]:
        path = stored(settings, f"partial {index} from the crashed run".encode())
        held.append(path)
        earlier.append(Frame(job.id, index, index / 2, index / 2, name, path.stat().st_size,
                             path.stem, None, None, 1.0))  # fmt: skip
    scratch = dead_scratch(settings, job.id)
    await _seed(settings, job, earlier, held)

    async with make_client(settings) as client:
        done = await client.wait(job.id)
        listing = (await client.http.get(f"/frames/{job.id}")).json()
        objects = await listed_objects(client, job.id)
        assert done["status"] == "completed"
        assert done["attempts"] == 2
        assert done["total_frames"] == done["processed_frames"] == listing["total_count"] == 4
        names = [f["filename"] for f in listing["frames"]]  # stale frame 7 gone
        assert names == ["000000_0.000.jpg", "000001_0.520.jpg", "000002_1.000.jpg",
                         "000003_1.520.jpg"]  # fmt: skip
        assert {f["checksum"] for f in listing["frames"]}.isdisjoint(p.stem for p in held)
        assert len(objects) == 4  # every listed frame's object is there and whole
        assert all(p.read_bytes()[:3] == b"\xff\xd8\xff" for p in objects)
        assert not scratch.exists()  # the dead process's partial frame went at the start
        # the crashed run's objects stay held by the job until it is deleted
        assert stored_frames(settings.frames_base_path) == objects | set(held)
        assert (await client.http.delete(f"/job/{job.id}")).status_code == 200
        assert stored_frames(settings.frames_base_path) == set()


async def test_pending_jobs_are_queued_at_start(
    make_client: Any, settings: Settings, media: Media, videos: Path
) -> None:
    source = videos / place(media.standard(), videos)
    jobs = [_job(source, JobStatus.PENDING, interval=1) for _ in range(3)]
    for job in jobs:
        await _seed(settings, job, [])
    async with make_client(settings) as client:
        for job in jobs:
            assert (await client.wait(job.id))["status"] == "completed"


async def test_processed_frames_never_decrease_on_a_rerun(
    make_client: Any, settings: Settings, media: Media, videos: Path
) -> None:
    source = videos / place(media.standard(), videos)
    job = _job(source, JobStatus.PROCESSING, total_frames=4, processed_frames=3)
    await _seed(settings, job, [])
    seen: list[int] = []
    async with make_client(settings) as client:
        sub = client.services.bus.subscribe(job.id)
        await client.wait(job.id)
        limit = patience(30)
        while not sub.closed and (event := await asyncio.wait_for(sub.get(), limit)) is not None:
            if "processed_frames" in event.data:
                seen.append(event.data["processed_frames"])
            if event.type == "done":
                break
    assert seen == sorted(seen)
    assert seen[-1] == 4
    assert min(seen) >= 3


async def test_job_timeout_fails_the_job_and_stops_ffmpeg(
    make_client: Any, make_settings: Any, media: Media, videos: Path
) -> None:
    settings = make_settings(JOB_TIMEOUT_SECONDS="1")
    name = place(media.slow(), videos)
    async with make_client(settings) as client:
        job_id = await client.submit(name, 0.04)
        done = await client.wait(job_id)
        assert done["status"] == "failed"
        assert done["error_message"] == "the job took longer than 1 s"
        assert not client.services.frames.work_dir(job_id).exists()
        listed = (await client.http.get(f"/frames/{job_id}")).json()["frames"]
        objects = await listed_objects(client, job_id)  # what was listed before is whole
        assert len(objects) == len({f["checksum"] for f in listed})
        assert list(settings.frames_base_path.rglob(".tmp-*")) == []


async def test_source_removed_before_the_run_fails_clearly(
    make_client: Any, settings: Settings, media: Media, videos: Path
) -> None:
    source = videos / place(media.standard(), videos, "vanishing.mp4")
    job = _job(source, JobStatus.PENDING)
    await _seed(settings, job, [])
    source.unlink()
    async with make_client(settings) as client:
        done = await client.wait(job.id)
    assert done["status"] == "failed"
    assert done["error_message"] == "the video file is no longer there"


async def test_a_file_replaced_between_submit_and_run_fails_the_job_clearly(
    make_client: Any, make_settings: Any, media: Media, videos: Path
) -> None:
    """The request was checked against the file as submitted; a different video in its
    place (longer, here) would give frames nobody asked for, so the run refuses it."""
    name = place(media.standard(), videos, "replaced.mp4")
    async with make_client(make_settings(MAX_CONCURRENT_JOBS="1")) as client:
        blocker = await client.submit(place(media.slow(), videos), 0.04)  # runs first
        job_id = await client.submit(name, 1)
        pending = (await client.http.get(f"/job-status/{job_id}")).json()
        assert pending["status"] == "pending" and pending["duration"] > 0  # known at once
        assert pending["total_frames"] == 2 and pending["processed_frames"] == 0  # 2 s at 1
        (videos / name).unlink()  # a new file, not the cached clip written over
        shutil.copyfile(media.long(), videos / name)
        assert (await client.http.delete(f"/job/{blocker}")).status_code == 200
        done = await client.wait(job_id)
    assert done["status"] == "failed" and done["processed_frames"] == 0
    was = f"it was {pending['duration']:g} s, {pending['fps']:g} fps, h264, it is 20 s"
    assert done["error_message"].startswith(f"the video file changed after the job was "
                                             f"submitted ({was}")  # fmt: skip


def test_a_length_a_few_ms_off_is_the_same_video() -> None:
    """A job accepted by a version that took a Matroska file's length from its container
    (a few ms off its frames' end) still runs; a length a second off does not."""
    from tests.records import make_job
    from vfe.probe import VideoInfo
    from vfe.worker import _check_unchanged

    job = make_job(duration=10.023, fps=25.0, codec="h264")
    _check_unchanged(job, VideoInfo(10.0, 25.0, 640, 360, 0, "h264", "yuv420p", 0.0))
    with pytest.raises(ExtractionError, match="changed after the job was submitted"):
        _check_unchanged(job, VideoInfo(11.0, 25.0, 640, 360, 0, "h264", "yuv420p", 0.0))


async def test_unexpected_crash_in_extraction_fails_the_job_without_leaking(
    client: AppClient, media: Media, videos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("/secret/path exploded")  # fault injection: a bug in our code

    monkeypatch.setattr(Extractor, "run", broken)
    job_id = await client.submit(place(media.standard(), videos), 1)
    done = await client.wait(job_id)
    assert done["status"] == "failed"
    assert done["error_message"] == "internal error while extracting frames"
    assert (await client.http.get("/health")).status_code == 200


async def test_cancel_a_queued_job(
    make_client: Any, make_settings: Any, media: Media, videos: Path
) -> None:
    settings = make_settings(MAX_CONCURRENT_JOBS="1")
    long_name = place(media.slow(), videos)
    async with make_client(settings) as client:
        running = await client.submit(long_name, 0.04)
        queued = await client.submit(long_name, 1)
        sub = client.services.bus.subscribe(queued)
        res = await client.http.delete(f"/job/{queued}")
        assert res.status_code == 200
        assert res.json()["status"] == "cancelled"
        event = await asyncio.wait_for(sub.get(), patience(30))
        assert event is not None and event.type == "cancelled"
        assert (await client.http.get(f"/job-status/{queued}")).status_code == 404

        async def frames_listed() -> bool:
            return bool((await client.http.get(f"/job-status/{running}")).json()
                        ["processed_frames"])  # fmt: skip

        await wait_until_async(frames_listed, "the running job to list frames")
        assert stored_frames(settings.frames_base_path)
        res = await client.http.delete(f"/job/{running}")
        assert res.status_code == 200 and res.json()["status"] == "cancelled"
        assert stored_frames(settings.frames_base_path) == set()  # its objects went with it
        assert not client.services.frames.work_dir(running).exists()
        # the cancelled run has ended (the worker may already hold the next queue entry)
        task = client.services.jobs.queue.tasks.get(running)
        assert task is None or task.done()


async def test_delete_right_after_submit_always_ends_the_stream(
    client: AppClient, media: Media, videos: Path
) -> None:
    """A delete can land between a worker taking the job and its run starting."""
    name = place(media.standard(), videos)
    for _ in range(5):
        sub = client.services.bus.subscribe(None)
        job_id = await client.submit(name, 1)
        assert (await client.http.delete(f"/job/{job_id}")).status_code == 200
        finals = []
        while (event := await asyncio.wait_for(sub.get(), patience(30))) is not None:
            if event.job_id == job_id and event.type in ("done", "failed", "cancelled"):
                finals.append(event.type)
                break
        sub.close()
        assert finals == ["cancelled"]
        assert client.services.jobs.running == []


async def test_cancel_a_running_job_publishes_cancelled(
    client: AppClient, media: Media, videos: Path, settings: Settings
) -> None:
    job_id = await client.submit(place(media.slow(), videos), 0.04)
    sub = client.services.bus.subscribe(job_id)

    async def frames_listed() -> bool:
        return bool((await client.http.get(f"/job-status/{job_id}")).json()["processed_frames"])

    await wait_until_async(frames_listed, "the job to list frames")
    assert stored_frames(settings.frames_base_path)
    started = time.monotonic()
    res = await client.http.delete(f"/job/{job_id}")
    assert time.monotonic() - started < 3
    assert res.json() == {
        "job_id": job_id,
        "status": "cancelled",
        "message": f"Job {job_id} cancelled and cleaned up successfully",
    }
    events: list[Event] = []
    while (event := await asyncio.wait_for(sub.get(), patience(30))) is not None:
        events.append(event)
        if event.type == "cancelled":
            break
    assert events[-1].type == "cancelled"
    assert stored_frames(settings.frames_base_path) == set()
    assert not client.services.frames.work_dir(job_id).exists()


async def test_shutdown_puts_a_running_job_back_to_pending(
    make_client: Any, settings: Settings, media: Media, videos: Path
) -> None:
    name = place(media.slow(), videos)
    client = make_client(settings)
    async with client:
        job_id = await client.submit(name, 0.04)
        await wait_until_async(lambda: processing(client, job_id), "the job to start")
        frames = client.services.frames
        await wait_until_async(frames.work_dir(job_id).exists, "the run to work")
    store = SqliteStore(settings.database_path)
    await store.open()
    try:
        job = await store.get_job(job_id)
        listed = await store.list_frames(job_id, 0, 10**6)
    finally:
        await store.close()
    assert job is not None and job.status is JobStatus.PENDING
    assert not frames.scratch.exists()  # the run's partial frames went with the process
    whole(settings, listed)  # what it listed stays, whole, for the next run to replace


async def test_full_queue_is_503_with_retry_after(
    make_client: Any, make_settings: Any, media: Media, videos: Path
) -> None:
    settings = make_settings(MAX_CONCURRENT_JOBS="1", MAX_QUEUE_SIZE="1")
    name = place(media.slow(), videos)
    async with make_client(settings) as client:
        first = await client.submit(name, 0.04)
        await wait_until_async(lambda: processing(client, first), "the first job to start")
        await client.submit(name, 1)  # waits in the queue
        res = await client.http.post("/video-job", json={"video_source": name, "interval": 1})
        assert res.status_code == 503
        assert res.headers["retry-after"] == "10"
        assert "queue is full" in res.json()["detail"]
        assert (await client.http.get("/jobs")).json()["count"] == 2  # nothing half-made


async def test_eight_jobs_never_exceed_the_concurrency_bound(
    make_client: Any, make_settings: Any, media: Media, videos: Path
) -> None:
    settings = make_settings(MAX_CONCURRENT_JOBS="3")
    name = place(media.clip("eight.mp4", duration=3), videos)
    async with make_client(settings) as client:
        ids = await asyncio.gather(*(client.submit(name, 0.2, reuse=False) for _ in range(8)))
        results = [await client.wait(job_id) for job_id in ids]
        assert client.services.jobs.peak_running <= 3
    assert [r["status"] for r in results] == ["completed"] * 8
    assert all(r["processed_frames"] == 15 for r in results)


async def test_finished_status_never_moves(client: AppClient, media: Media, videos: Path) -> None:
    job_id = await client.submit(place(media.standard(), videos), 1)
    await client.wait(job_id)
    store = client.services.store
    assert await store.update_job(job_id, status=JobStatus.PROCESSING) is None
    job = await store.get_job(job_id)
    assert job is not None and job.status is JobStatus.COMPLETED


async def test_submit_is_refused_while_shutting_down(
    client: AppClient, media: Media, videos: Path
) -> None:
    client.services.jobs.submissions.accepting = False
    res = await client.http.post(
        "/video-job", json={"video_source": place(media.standard(), videos)}
    )
    assert res.status_code == 503
    assert "shutting down" in res.json()["detail"]
    health = await client.http.get("/health")
    assert health.status_code == 503


async def test_a_status_read_racing_a_delete_cannot_keep_the_job_alive(
    client: AppClient, media: Media, videos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vfe import submit
    from vfe.cache import job_key

    monkeypatch.setattr(submit, "REINVALIDATE_AFTER", 0.3)

    job_id = await client.submit(place(media.standard(), videos), 1)
    view = await client.wait(job_id)
    assert (await client.http.delete(f"/job/{job_id}")).status_code == 200
    # A reader that fetched the job just before the delete stores it just after:
    await client.services.cache.set(job_key(job_id), json.dumps(view), 3600)
    assert (await client.http.get(f"/job-status/{job_id}")).status_code == 200  # the race

    async def gone() -> bool:
        return (await client.http.get(f"/job-status/{job_id}")).status_code == 404

    # invalidated again REINVALIDATE_AFTER (0.3 s) after the delete, not after the hour
    await wait_until_async(gone, "the stale cache entry to be dropped")


async def test_unfinished_job_status_is_cached_briefly(
    make_client: Any, make_settings: Any, media: Media, videos: Path
) -> None:
    from vfe.cache import job_key

    settings = make_settings(MAX_CONCURRENT_JOBS="1")
    async with make_client(settings) as client:
        running = await client.submit(place(media.slow(), videos), 0.04)
        body = (await client.http.get(f"/job-status/{running}")).json()
        assert body["status"] in ("pending", "processing")
        expires, _, _ = client.services.cache.memory._items[job_key(running)]
        assert expires - time.monotonic() <= 2.0
        await client.http.delete(f"/job/{running}")
        done = await client.submit(place(media.standard(), videos), 1)
        await client.wait(done)
        expires, _, _ = client.services.cache.memory._items[job_key(done)]
        assert expires - time.monotonic() > 3000


# --- scene jobs: frames found while decoding, progress by decoding ----------------------

LONG_CUTS_SHOTS = 16  # each 5 s of testsrc2 then 1 s of red


def long_cuts(media: Media) -> Path:
    """96 s of 1280x720 with a hard cut every few seconds: testsrc2 5 s, red 1 s, sixteen
    times. Decoding it takes a second or more, so FFmpeg reports its progress (every 0.5 s)
    while the job runs, and scene frames are found all along. One 6 s pair is encoded and
    copied sixteen times (FFmpeg's concat demuxer): a tenth of the time of encoding 96 s."""
    path = media.folder / "long-cuts-720p.mp4"
    if not path.exists():
        pair = media.folder / "long-cuts-pair-720p.mp4"
        graph = "testsrc2=s=1280x720:r=25:d=5[t];color=c=red:s=1280x720:r=25:d=1[r];[t][r]concat"
        run_ffmpeg(
            "-f", "lavfi", "-i", graph, "-c:v", "libx264", "-preset", "ultrafast",
            "-pix_fmt", "yuv420p", str(pair),
        )  # fmt: skip
        listing = media.folder / "long-cuts.txt"
        listing.write_text(f"file '{pair}'\n" * LONG_CUTS_SHOTS)
        run_ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(path))
    return path


# the first frame, then both cuts of every red shot (each 1 s after the frame before it)
LONG_CUTS = sorted([6.0 * n + 5 for n in range(LONG_CUTS_SHOTS)] +
                   [6.0 * n for n in range(LONG_CUTS_SHOTS)])  # fmt: skip


async def test_scene_job_progress_rises_from_0_to_1(
    client: AppClient, media: Media, videos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its events' percent and the stored progress start at 0, only rise, and end at
    100% / 1.0, moving while the frames keep coming, with progress events throttled;
    the frames found so far are its total while it runs. (One job for all of it: a
    scene job over long_cuts takes seconds.)"""
    from vfe import worker

    monkeypatch.setattr(worker, "PROGRESS_EVERY", 0.4)  # FFmpeg reports every 0.5 s
    name = place(long_cuts(media), videos)
    sub = client.services.bus.subscribe(None)  # before the submit: miss no event
    res = await client.http.post("/video-job", json={"video_source": name, "mode": "scene"})
    assert res.status_code == 200, res.text
    job_id = res.json()["job_id"]
    store = client.services.store
    stored: list[float] = []

    async def record_stored_progress() -> None:
        while True:
            job = await store.get_job(job_id)
            assert job is not None
            if job.progress is not None:
                stored.append(job.progress)
            if job.status.finished:
                return
            await asyncio.sleep(0.02)

    recording = asyncio.create_task(record_stored_progress())
    events: list[Event] = []
    while (event := await asyncio.wait_for(sub.get(), patience(120))) is not None:
        if event.job_id == job_id:
            events.append(event)
            if event.type in ("done", "failed", "cancelled"):
                break
    sub.close()
    await asyncio.wait_for(recording, patience(30))
    assert events[-1].type == "done", events[-1]

    views = [e.data for e in events if e.type in ("status", "progress", "done")]
    percents = [view["percent"] for view in views]
    assert percents == sorted(percents), percents
    assert percents[-1] == 100.0
    progress = [e.data for e in events if e.type == "progress"]
    assert progress[0]["percent"] == 0.0  # planned: nothing decoded yet
    assert progress[0]["plan"]["strategy"] == "scene"
    assert len(progress) >= 3  # the job ran through several throttle periods
    assert any(0 < p["percent"] < 100 for p in progress), [p["percent"] for p in progress]
    # the frames found so far are all the frames known: total grows with them
    assert all(p["total_frames"] == p["processed_frames"] for p in progress)
    totals = [p["total_frames"] for p in progress]
    assert totals == sorted(totals)
    found = [e.data["timestamp"] for e in events if e.type == "frame"]
    assert found == pytest.approx(LONG_CUTS, abs=1e-9)
    done = events[-1].data
    assert done["total_frames"] == done["processed_frames"] == len(LONG_CUTS)

    # the stored progress, read while it ran: from below 1 up to 1.0, never down
    assert stored == sorted(stored)
    assert stored[0] < 1.0 and stored[-1] == 1.0
    assert all(0.0 <= p <= 1.0 for p in stored)
    final = await store.get_job(job_id)
    assert final is not None and final.status is JobStatus.COMPLETED and final.progress == 1.0
    view = (await client.http.get(f"/job-status/{job_id}")).json()
    assert view["percent"] == 100.0
    assert view["total_frames"] == view["processed_frames"] == len(LONG_CUTS)


async def test_jobs_of_other_modes_have_no_progress(
    client: AppClient, media: Media, videos: Path
) -> None:
    job_id = await client.submit(place(media.cuts(), videos), 1)
    assert (await client.wait(job_id))["percent"] == 100.0
    job = await client.services.store.get_job(job_id)
    assert job is not None and job.progress is None


async def test_scene_job_left_processing_is_run_again_replacing_frames(
    make_client: Any, settings: Settings, media: Media, videos: Path
) -> None:
    source = videos / place(media.cuts(), videos)
    options = {"mode": "scene", "min_gap": 0.0, "start": 0.0, "format": "jpg"}
    job = _job(source, JobStatus.PROCESSING, interval=5.0, total_frames=9, processed_frames=3,
               attempts=1, options=options, progress=0.4)  # fmt: skip
    earlier, held = [], []
    for index, name in [(0, "000000_0.000.jpg"), (1, "000001_1.200.jpg"), (8, "000008_3.800.jpg")]:
        path = stored(settings, f"partial {index} from the crashed run".encode())
        held.append(path)
        earlier.append(Frame(job.id, index, 0.0, 0.0, name, path.stat().st_size, path.stem,
                             None, None, 1.0))  # fmt: skip
    scratch = dead_scratch(settings, job.id)
    await _seed(settings, job, earlier, held)

    async with make_client(settings) as client:
        done = await client.wait(job.id)
        listing = (await client.http.get(f"/frames/{job.id}")).json()
        row = await client.services.store.get_job(job.id)
        objects = await listed_objects(client, job.id)
        assert done["status"] == "completed"
        assert done["attempts"] == 2
        assert done["percent"] == 100.0
        assert row is not None and row.progress == 1.0
        expected = Media.CUTS_NO_GAP
        assert done["total_frames"] == done["processed_frames"] == listing["total_count"] == 5
        assert [f["timestamp"] for f in listing["frames"]] == pytest.approx(expected, abs=1e-9)
        names = [f"{i:06d}_{t:.3f}.jpg" for i, t in enumerate(expected)]
        assert [f["filename"] for f in listing["frames"]] == names  # stale frame 8 gone
        assert {f["checksum"] for f in listing["frames"]}.isdisjoint(p.stem for p in held)
        assert len(objects) == 5  # every listed frame's object is there and whole
        assert not scratch.exists()
        assert stored_frames(settings.frames_base_path) == objects | set(held)
        assert (await client.http.delete(f"/job/{job.id}")).status_code == 200
        assert stored_frames(settings.frames_base_path) == set()


async def test_a_claim_that_cannot_reach_the_database_runs_the_job_later(
    client: AppClient, media: Media, videos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = client.services.store
    claim = store.claim
    failures: list[str] = []

    async def flaky_claim(job_id: str, now: float) -> Any:
        if not failures:  # fault: the first claim finds the database busy
            failures.append(job_id)
            raise StoreError("database is locked")
        return await claim(job_id, now)

    monkeypatch.setattr(store, "claim", flaky_claim)
    job_id = await client.submit(place(media.standard(), videos), 1)
    done = await client.wait(job_id)
    assert failures == [job_id]
    assert done["status"] == "completed" and done["attempts"] == 1


async def test_delete_keeps_the_files_while_a_cancelled_run_has_not_stopped(
    client: AppClient, media: Media, videos: Path, settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    job_id = await client.submit(place(media.standard(), videos), 0.5)
    await client.wait(job_id)
    objects = await listed_objects(client, job_id)
    assert len(objects) == 4
    queue = client.services.jobs.queue
    cancel = queue.cancel

    async def stuck(job: str) -> Stop:  # fault: the run does not stop within the wait
        await cancel(job)
        return Stop.STILL_RUNNING

    monkeypatch.setattr(queue, "cancel", stuck)
    res = await client.http.delete(f"/job/{job_id}")
    assert res.status_code == 503 and res.headers["Retry-After"] == "5"
    assert "has not stopped yet" in res.json()["detail"]
    assert stored_frames(settings.frames_base_path) == objects  # nothing removed under a run
    assert await listed_objects(client, job_id) == objects  # each still whole
    assert (await client.http.get(f"/job-status/{job_id}")).status_code == 200
    monkeypatch.setattr(queue, "cancel", cancel)  # the run has stopped at last
    assert (await client.http.delete(f"/job/{job_id}")).status_code == 200
    assert (await client.http.get(f"/job-status/{job_id}")).status_code == 404
    assert stored_frames(settings.frames_base_path) == set()
