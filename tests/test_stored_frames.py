"""Frames stored once by their SHA-256, result reuse, and the API on an S3 bucket.

Each test runs the app in-process on a local folder and on a real S3-compatible server
(SeaweedFS, a prefix of its bucket per test) and looks at what the storage holds."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import time
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import obstore
import pytest
from obstore.store import S3Store

import vfe
from tests.conftest import AppClient, Media, patience, place, stored_frames, wait_until_async
from vfe.settings import Settings


class Bucket:
    """What a storage holds, read behind vfe's back: the folder, or the bucket's prefix."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: S3Store | None = None
        if settings.s3:
            _, _, rest = settings.storage_url.partition("s3://")
            bucket, _, prefix = rest.partition("/")
            self.store = S3Store(
                bucket, prefix=prefix, endpoint=settings.s3_endpoint_url,
                access_key_id=settings.aws_access_key_id,
                secret_access_key=settings.aws_secret_access_key.get_secret_value(),
                region="us-east-1", client_options={"allow_http": True},
            )  # fmt: skip

    async def objects(self, kind: str = "frames") -> dict[str, int]:
        """Each stored object of ``kind`` (frames or sources): its name and size."""
        if self.store is not None:
            found: dict[str, int] = {}
            async for batch in obstore.list(self.store, prefix=f"{kind}/"):
                found.update({str(m["path"]).rsplit("/", 1)[1]: int(m["size"]) for m in batch})
            return found
        if kind == "frames":
            files = stored_frames(self.settings.frames_base_path)
        else:
            files = {p for p in self.settings.uploads_path.iterdir() if len(p.name) == 64}
        return {p.name: p.stat().st_size for p in files}

    async def total(self, kind: str = "frames") -> int:
        return sum((await self.objects(kind)).values())


@pytest.fixture
async def app(storage_settings: Settings) -> AsyncIterator[AppClient]:
    async with AppClient(storage_settings) as client:
        yield client


async def post(client: AppClient, **fields: Any) -> dict[str, Any]:
    res = await client.http.post("/video-job", json=fields)
    assert res.status_code == 200, res.text
    body: dict[str, Any] = res.json()
    return body


async def frames_of(client: AppClient, job_id: str) -> list[dict[str, Any]]:
    res = await client.http.get(f"/frames/{job_id}")
    assert res.status_code == 200, res.text
    frames: list[dict[str, Any]] = res.json()["frames"]
    return frames


async def image(client: AppClient, frame: dict[str, Any]) -> bytes:
    """A frame's bytes as a client gets them (following a presigned redirect)."""
    res = await client.http.get(frame["url"])
    if res.status_code == 307:
        async with httpx.AsyncClient() as outside:
            res = await outside.get(res.headers["location"])
    assert res.status_code == 200, res.text
    return res.content


async def test_the_same_job_again_completes_at_once_with_the_same_frames(
    app: AppClient, media: Media, videos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = Bucket(app.settings)
    name = place(media.standard(), videos)
    first = await post(app, video_source=name, interval=0.5)
    done = await app.wait(first["job_id"])
    assert done["status"] == "completed"
    before = await bucket.total()
    assert before > 0
    again = await post(app, video_source=name, interval=0.5)
    assert again["status"] == "completed"  # in the submit's own answer: nothing ran
    job = (await app.http.get(f"/job-status/{again['job_id']}")).json()
    assert job["plan"]["strategy"] == "reused"
    assert job["plan"]["reused_from"] == first["job_id"]
    assert job["percent"] == 100.0 and job["total_frames"] == done["total_frames"]
    ours, theirs = await frames_of(app, again["job_id"]), await frames_of(app, first["job_id"])
    assert [(f["filename"], f["checksum"]) for f in ours] == [
        (f["filename"], f["checksum"]) for f in theirs
    ]
    for frame in ours:
        assert hashlib.sha256(await image(app, frame)).hexdigest() == frame["checksum"]
    assert await bucket.total() < before * 1.02  # nothing stored twice
    # reuse: false extracts afresh, and the same bytes are still stored once
    fresh = await post(app, video_source=name, interval=0.5, reuse=False)
    assert fresh["status"] == "pending"
    redone = await app.wait(fresh["job_id"])
    assert redone["status"] == "completed" and redone["plan"]["strategy"] != "reused"
    assert [f["checksum"] for f in await frames_of(app, fresh["job_id"])] == [
        f["checksum"] for f in theirs
    ]
    assert await bucket.total() == before
    # frames made another way (a new frames revision, the same version) are not reused
    monkeypatch.setattr(vfe, "FRAMES_REVISION", vfe.FRAMES_REVISION + 1)
    newer = await post(app, video_source=name, interval=0.5)
    assert newer["status"] == "pending"
    assert (await app.wait(newer["job_id"]))["plan"]["strategy"] != "reused"


async def test_other_options_on_the_same_video_share_identical_frames(
    app: AppClient, media: Media, videos: Path
) -> None:
    bucket = Bucket(app.settings)
    name = place(media.standard(), videos)
    one = await post(app, video_source=name, interval=1)
    half = await post(app, video_source=name, interval=0.5)
    for job in (one, half):
        assert (await app.wait(job["job_id"]))["status"] == "completed"
    a, b = await frames_of(app, one["job_id"]), await frames_of(app, half["job_id"])
    assert (
        not (await app.http.get(f"/job-status/{half['job_id']}")).json()["plan"]["strategy"]
        == "reused"
    )
    shared = {f["checksum"] for f in a} & {f["checksum"] for f in b}
    assert len(shared) == len(a) > 0  # every whole second is also a half second
    stored = await bucket.objects()
    assert sorted(n.split(".")[0] for n in stored) == sorted({f["checksum"] for f in a + b})
    # deleting one leaves the other whole; deleting both frees every byte
    assert (await app.http.delete(f"/job/{one['job_id']}")).status_code == 200
    for frame in b:
        assert hashlib.sha256(await image(app, frame)).hexdigest() == frame["checksum"]
    assert sorted(n.split(".")[0] for n in await bucket.objects()) == sorted(
        {f["checksum"] for f in b}
    )
    assert (await app.http.delete(f"/job/{half['job_id']}")).status_code == 200
    assert await bucket.objects() == {}


async def test_a_file_changed_in_place_is_not_mistaken_for_the_old_one(
    app: AppClient, media: Media, videos: Path
) -> None:
    target = videos / "changing.mp4"
    target.write_bytes(media.standard().read_bytes())
    first = await post(app, video_source="changing.mp4", interval=1)
    await app.wait(first["job_id"])
    target.write_bytes(media.clip("other.mp4", duration=3, rate="25").read_bytes())
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    second = await post(app, video_source="changing.mp4", interval=1)
    assert second["status"] == "pending"  # a new video: extracted, not reused
    assert (await app.wait(second["job_id"]))["status"] == "completed"
    # rewritten in place with its old modification time kept (rsync -t --inplace): its
    # change time still moves, so it is not taken for the video of the second job
    stat = target.stat()
    with target.open("r+b") as fh:
        data = fh.read()
        fh.seek(0)
        fh.write(data)  # same bytes, same size, same inode
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = target.stat()
    assert (after.st_mtime_ns, after.st_size, after.st_ino) == (
        stat.st_mtime_ns,
        stat.st_size,
        stat.st_ino,
    )
    third = await post(app, video_source="changing.mp4", interval=1)
    assert third["status"] == "pending"


async def test_an_upload_is_stored_once_and_reused_by_its_content(
    app: AppClient, media: Media
) -> None:
    bucket = Bucket(app.settings)
    data = media.standard().read_bytes()

    async def upload(name: str) -> dict[str, Any]:
        res = await app.http.post(
            "/video-job", files={"file": (name, data, "video/mp4")}, data={"interval": "1"}
        )
        assert res.status_code == 200, res.text
        body: dict[str, Any] = res.json()
        return body

    first = await upload("a.mp4")
    assert (await app.wait(first["job_id"]))["status"] == "completed"
    assert await bucket.objects("sources") == {hashlib.sha256(data).hexdigest(): len(data)}
    second = await upload("renamed.mp4")  # the same bytes under another name
    assert second["status"] == "completed"
    assert len(await bucket.objects("sources")) == 1
    third = await upload("again.mp4")
    assert third["status"] == "completed"
    for job in (first, second, third):
        assert (await app.http.delete(f"/job/{job['job_id']}")).status_code == 200
    assert await bucket.objects("sources") == {}
    assert await bucket.objects() == {}
    assert not [p for p in app.settings.uploads_path.iterdir() if p.is_file()]


async def test_every_frame_route_works_on_the_storage(
    app: AppClient, media: Media, videos: Path
) -> None:
    name = place(media.standard(), videos)
    job_id = (await post(app, video_source=name, interval=1))["job_id"]
    await app.wait(job_id)
    frames = await frames_of(app, job_id)
    assert len(frames) == 2
    first = await app.http.get(frames[0]["url"])
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert first.headers["etag"] == f'"{frames[0]["checksum"]}"'
    assert hashlib.sha256(first.content).hexdigest() == frames[0]["checksum"]
    cached = await app.http.get(frames[0]["url"], headers={"If-None-Match": first.headers["etag"]})
    assert cached.status_code == 304
    head = await app.http.head(frames[0]["url"])
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(frames[0]["size_bytes"])
    archive = await app.http.get(f"/job/{job_id}/frames.zip")
    assert archive.status_code == 200
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
        assert zipped.namelist() == [*(f["filename"] for f in frames), "frames.json"]
        assert zipped.getinfo("frames.json").external_attr >> 16 == 0o644
        for frame in frames:
            assert hashlib.sha256(zipped.read(frame["filename"])).hexdigest() == frame["checksum"]
            assert zipped.getinfo(frame["filename"]).external_attr >> 16 == 0o644
    recent = (await app.http.get("/dashboard/recent-frames")).json()
    assert {f["filename"] for f in recent["frames"]} == {f["filename"] for f in frames}
    health = (await app.http.get("/health")).json()
    assert health["storage"] == {"ok": True, "backend": "s3" if app.settings.s3 else "local"}
    assert (await app.http.get("/health/ready")).json()["storage"] is True
    # retention: a sweep deletes the finished job and frees its bytes
    assert await app.services.jobs.submissions.sweep(before=9e99) == 1
    assert (await app.http.get(frames[0]["url"])).status_code == 404
    assert await Bucket(app.settings).objects() == {}


async def test_presigned_frame_urls_redirect_to_the_bucket(
    make_settings: Callable[..., Settings], s3_server: Any, media: Media, videos: Path
) -> None:
    settings = make_settings(
        **s3_server.vfe_env(f"t-{uuid.uuid4().hex[:12]}"), FRAME_URLS="presigned"
    )
    async with AppClient(settings) as app:
        job_id = (await post(app, video_source=place(media.standard(), videos), interval=1))[
            "job_id"
        ]
        await app.wait(job_id)
        frame = (await frames_of(app, job_id))[0]
        res = await app.http.get(frame["url"])
        assert res.status_code == 307
        assert res.headers["location"].startswith(s3_server.endpoint)
        async with httpx.AsyncClient() as outside:  # anyone with the URL, no key
            got = await outside.get(res.headers["location"])
        assert got.status_code == 200
        assert hashlib.sha256(got.content).hexdigest() == frame["checksum"]


async def test_an_unreachable_bucket_refuses_new_jobs_with_a_503(
    make_settings: Callable[..., Settings], media: Media, videos: Path
) -> None:
    from tests.conftest import free_port

    settings = make_settings(
        STORAGE_URL="s3://vfe/nowhere", S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
        AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y",
    )  # fmt: skip
    async with AppClient(settings) as app:
        res = await app.http.post(
            "/video-job", json={"video_source": place(media.standard(), videos), "interval": 1}
        )
        assert res.status_code == 503
        assert "STORAGE_URL" in res.json()["detail"]
        assert (await app.http.get("/jobs")).json()["count"] == 0  # nothing was taken
        health = await app.http.get("/health")
        assert health.status_code == 503 and health.json()["storage"]["ok"] is False
        assert (await app.http.get("/health/ready")).status_code == 503


async def test_a_bucket_that_refuses_writes_fails_the_job_at_once_saying_why(
    make_settings: Callable[..., Settings], s3_server: Any, media: Media, videos: Path
) -> None:
    """A key that may list but not write (a 403, not an outage): the job fails on its
    first run, naming the settings to fix, instead of waiting for a bucket that is there."""
    from tests.seaweed import READER_KEY, READER_SECRET

    env = s3_server.vfe_env(f"ro-{uuid.uuid4().hex[:8]}")
    env.update(AWS_ACCESS_KEY_ID=READER_KEY, AWS_SECRET_ACCESS_KEY=READER_SECRET)
    async with AppClient(make_settings(**env)) as app:
        job_id = (await post(app, video_source=place(media.standard(), videos), interval=1))[
            "job_id"
        ]
        done = await app.wait(job_id, limit=30)
        assert done["status"] == "failed" and done["attempts"] == 1, done
        assert "refused vfe's access key" in done["error_message"]
        assert "AWS_ACCESS_KEY_ID" in done["error_message"]
        assert READER_SECRET not in done["error_message"]
        assert await frames_of(app, job_id) == []


@pytest.mark.parametrize("away", [1.5, None])  # back after 1.5 s; never back
async def test_a_run_that_loses_the_bucket_waits_for_it_and_lists_only_whole_frames(
    make_settings: Callable[..., Settings], media: Media, videos: Path,
    monkeypatch: pytest.MonkeyPatch, away: float | None,
) -> None:  # fmt: skip
    """A blip is ridden out (the run waits for the bucket, then the job runs again and
    completes); a bucket that stays away fails the job, saying so."""
    from tests.seaweed import SeaweedServer

    monkeypatch.setattr("vfe.worker.STORAGE_WAIT", 4.0 if away is None else patience(60))
    server = SeaweedServer()  # its own: this test stops it
    server.start()
    try:
        settings = make_settings(**server.vfe_env("lost"))
        async with AppClient(settings) as app:
            job_id = (await post(app, video_source=place(media.slow(), videos), interval=0.1))[
                "job_id"
            ]

            async def frames_listed() -> bool:
                return bool(await frames_of(app, job_id))

            await wait_until_async(frames_listed, "the first frames", within=60)
            await asyncio.to_thread(server.stop)
            if away is not None:
                await asyncio.sleep(away)  # the outage itself: no wait for an event
                await asyncio.to_thread(server.start)
                done = await app.wait(job_id, limit=180)
                assert done["status"] == "completed", done
                assert done["processed_frames"] == done["total_frames"] == 300
                listed = await frames_of(app, job_id)
                assert len(listed) == 300 == len({f["index"] for f in listed})
                return
            done = await app.wait(job_id, limit=180)
            assert done["status"] == "failed"
            assert "object store" in done["error_message"]
            assert "it did not answer again within 4 s" in done["error_message"]
            listed = await frames_of(app, job_id)
            assert listed  # the zip of them, with the bucket away: a 503 before it starts
            zipped = await app.http.get(f"/job/{job_id}/frames.zip")
            assert zipped.status_code == 503 and "object store" in zipped.json()["detail"]
            await asyncio.to_thread(server.start)  # back: every listed frame is whole
            for frame in listed:
                assert hashlib.sha256(await image(app, frame)).hexdigest() == frame["checksum"]
    finally:
        server.remove()


async def test_stored_files_no_job_knows_are_found_and_removed(
    app: AppClient, media: Media, videos: Path
) -> None:
    """As a run taken for dead can leave after its job was deleted; the jobs' own files,
    a new job's source still on its lease, and files vfe did not name stay."""
    bucket = Bucket(app.settings)
    job_id = (await post(app, video_source=place(media.standard(), videos), interval=1))["job_id"]
    await app.wait(job_id)
    frames = await frames_of(app, job_id)
    storages = app.services.frames.storages
    stray = hashlib.sha256(b"a stray frame").hexdigest()
    await storages.frames.put_bytes(f"{stray[:2]}/{stray}.jpg", b"a stray frame")
    leased = hashlib.sha256(b"a video being submitted").hexdigest()
    await app.services.store.reserve([(f"sources/{leased}", 23)], time.time() + 3600)
    await storages.sources.put_bytes(leased, b"a video being submitted")
    await storages.frames.put_bytes("notes/readme.txt", b"not vfe's")
    submissions = app.services.jobs.submissions
    assert await submissions.release_orphans() == 1
    await asyncio.wait([submissions.collect()])
    ours = [n for n in await bucket.objects() if n != "readme.txt"]  # S3 lists it too
    assert sorted(n.split(".")[0] for n in ours) == sorted({f["checksum"] for f in frames})
    assert list(await bucket.objects("sources")) == [leased]
    assert b"".join([c async for c in storages.frames.read("notes/readme.txt")]) == b"not vfe's"
    assert await submissions.release_orphans() == 0
