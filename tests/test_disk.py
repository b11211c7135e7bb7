"""Disk and retention: a nearly full disk refuses new jobs (507) and stops running ones
cleanly; RETENTION_HOURS deletes finished jobs with their files."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

from tests.conftest import AppClient, Media, place, stored_frames, wait_until_async
from vfe.settings import Settings

MIB = 1024 * 1024


def free_mib(path: Path) -> float:
    return shutil.disk_usage(path).free / MIB


def whole_objects(folder: Path) -> set[Path]:
    """The frame objects in ``folder``, each checked whole: its bytes hash to the SHA-256
    that names it."""
    found = stored_frames(folder)
    for path in found:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.stem, path
    return found


async def test_a_nearly_full_disk_refuses_new_jobs_with_507(
    make_client: Callable[[Settings], AppClient],
    make_settings: Callable[..., Settings],
    media: Media,
    tmp_path: Path,
) -> None:
    # A floor above what is free: the disk counts as full.
    floor = free_mib(tmp_path) + 1024
    settings = make_settings(MIN_FREE_DISK_MB=f"{floor:.0f}")
    name = place(media.standard(), settings.videos_base_path)
    async with make_client(settings) as app:
        res = await app.http.post("/video-job", json={"video_source": name})
        assert res.status_code == 507, res.text
        assert "MIN_FREE_DISK_MB" in res.json()["detail"]
        assert (await app.http.get("/jobs")).json()["count"] == 0
        ready = await app.http.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["disk"] is False
        health = await app.http.get("/health")  # it cannot take jobs: unhealthy
        assert health.status_code == 503 and health.json()["status"] == "unhealthy"
        assert health.json()["disk"]["ok"] is False
        assert health.json()["disk"]["min_free_mb"] == float(f"{floor:.0f}")


async def test_a_job_that_fills_the_disk_fails_cleanly_and_lists_only_whole_frames(
    make_client: Callable[[Settings], AppClient],
    make_settings: Callable[..., Settings],
    media: Media,
    tmp_path: Path,
) -> None:
    # PNG frames of 720p testsrc2 are about 100 KiB each: leave 8 MiB above the floor,
    # then let the job (300 frames, about 30 MiB) fill it for real.
    clip = media.slow()  # made first: its own writes must not count
    floor = free_mib(tmp_path) - 8
    settings = make_settings(MIN_FREE_DISK_MB=f"{floor:.3f}")
    name = place(clip, settings.videos_base_path)
    async with make_client(settings) as app:
        res = await app.http.post(
            "/video-job", json={"video_source": name, "interval": 0.1, "format": "png"}
        )
        assert res.status_code == 200, res.text
        job = await app.wait(res.json()["job_id"], 120)
        assert job["status"] == "failed", job
        assert "MIN_FREE_DISK_MB" in job["error_message"]
        assert 0 < job["processed_frames"] < job["total_frames"]
        frames = (await app.http.get(f"/frames/{job['job_id']}")).json()["frames"]
        assert len(frames) == job["processed_frames"]
        for frame in frames:  # every listed frame is whole on disk
            image = await app.http.get(frame["url"])
            assert image.status_code == 200
            assert len(image.content) == frame["size_bytes"]
            assert image.content.startswith(b"\x89PNG") and image.content.endswith(
                b"IEND\xaeB`\x82"
            )
        base = settings.frames_base_path
        temps = await asyncio.to_thread(lambda: list(base.rglob(".tmp-*")))
        assert temps == []  # no temp files
        assert not app.services.frames.work_dir(job["job_id"]).exists()
        # every object is whole, every listed frame's among them (a frame the run stored
        # but did not list stays held by the job until it is deleted)
        objects = await asyncio.to_thread(whole_objects, base)
        listed = {base / f["checksum"][:2] / f"{f['checksum']}.png" for f in frames}
        assert listed <= objects
        assert (await app.http.delete(f"/job/{job['job_id']}")).status_code == 200
        assert stored_frames(base) == set()  # all were the job's: none left behind
        # The service goes on: with room again, jobs run.
    roomy = make_settings(MIN_FREE_DISK_MB="1")
    async with make_client(roomy) as app:
        job_id = await app.submit(name, 10)
        assert (await app.wait(job_id))["status"] == "completed"


async def test_retention_deletes_finished_jobs_and_their_files(
    make_client: Callable[[Settings], AppClient],
    make_settings: Callable[..., Settings],
    media: Media,
) -> None:
    settings = make_settings(RETENTION_HOURS="0.0005")  # 1.8 s; swept every second
    name = place(media.standard(), settings.videos_base_path)
    async with make_client(settings) as app:
        job_id = await app.submit(name, 1)
        assert (await app.wait(job_id))["status"] == "completed"
        frames = (await app.http.get(f"/frames/{job_id}")).json()["frames"]
        objects = {p.stem for p in stored_frames(settings.frames_base_path)}
        assert len(frames) == 2 and objects == {f["checksum"] for f in frames}

        async def swept() -> bool:
            return (await app.http.get(f"/job-status/{job_id}")).status_code == 404

        await wait_until_async(swept, "the sweep to delete the job")
        # the sweep's delete removes the objects right after the rows
        await wait_until_async(
            lambda: stored_frames(settings.frames_base_path) == set(), "the objects to go"
        )


async def test_retention_keeps_unfinished_and_recent_jobs(client: AppClient, media: Media) -> None:
    name = place(media.standard(), client.settings.videos_base_path)
    done = await client.submit(name, 1)
    await client.wait(done)
    jobs = client.services.jobs
    assert await jobs.submissions.sweep(before=0) == 0  # nothing finished before 1970
    row = await client.services.store.get_job(done)
    assert await jobs.submissions.sweep(before=row.finished_at + 1) == 1
    assert await client.services.store.get_job(done) is None
