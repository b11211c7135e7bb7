"""Disk and retention: a nearly full disk refuses new jobs (507) and stops running ones
cleanly; RETENTION_HOURS deletes finished jobs with their files."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path

from tests.conftest import AppClient, Media, place, wait_until_async
from vfe.settings import Settings

MIB = 1024 * 1024


def free_mib(path: Path) -> float:
    return shutil.disk_usage(path).free / MIB


async def test_a_nearly_full_disk_refuses_new_jobs_with_507(
    make_client: Callable[[Settings], AppClient],
    make_settings: Callable[..., Settings],
    media: Media,
    tmp_path: Path,
):
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
        health = (await app.http.get("/health")).json()
        assert health["disk"]["min_free_mb"] == float(f"{floor:.0f}")


async def test_a_job_that_fills_the_disk_fails_cleanly_and_lists_only_whole_frames(
    make_client: Callable[[Settings], AppClient],
    make_settings: Callable[..., Settings],
    media: Media,
    tmp_path: Path,
):
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
        job_dir = settings.frames_base_path / job["job_id"]
        leftovers = await asyncio.to_thread(lambda: [p.name for p in job_dir.rglob("*")])
        assert sorted(leftovers) == sorted(f["filename"] for f in frames)  # no temp files
        # The service goes on: with room again, jobs run.
    roomy = make_settings(MIN_FREE_DISK_MB="1")
    async with make_client(roomy) as app:
        job_id = await app.submit(name, 10)
        assert (await app.wait(job_id))["status"] == "completed"


async def test_retention_deletes_finished_jobs_and_their_files(
    make_client: Callable[[Settings], AppClient],
    make_settings: Callable[..., Settings],
    media: Media,
):
    settings = make_settings(RETENTION_HOURS="0.0005")  # 1.8 s; swept every second
    name = place(media.standard(), settings.videos_base_path)
    async with make_client(settings) as app:
        job_id = await app.submit(name, 1)
        assert (await app.wait(job_id))["status"] == "completed"
        assert (settings.frames_base_path / job_id).is_dir()

        async def swept() -> bool:
            return (await app.http.get(f"/job-status/{job_id}")).status_code == 404

        await wait_until_async(swept, "the sweep to delete the job")
        assert not (settings.frames_base_path / job_id).exists()


async def test_retention_keeps_unfinished_and_recent_jobs(client: AppClient, media: Media):
    name = place(media.standard(), client.settings.videos_base_path)
    done = await client.submit(name, 1)
    await client.wait(done)
    jobs = client.services.jobs
    assert await jobs.submissions.sweep(before=0) == 0  # nothing finished before 1970
    row = await client.services.store.get_job(done)
    assert await jobs.submissions.sweep(before=row.finished_at + 1) == 1
    assert await client.services.store.get_job(done) is None
