"""The HTTP API in-process: submit, status, frames, images, recent frames, delete, health,
and a clear 4xx for every bad input."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AppClient, Media, patience, place, stored_frames
from tests.records import make_job
from vfe.events import TERMINAL_EVENTS
from vfe.models import JobStatus
from vfe.settings import Settings

SOURCE_MESSAGE = "video_source must name a video file inside the server's videos folder"


def no_server_paths(text: str, *paths: Path) -> None:
    for path in paths:
        assert str(path) not in text
    assert "Traceback" not in text


# --- submit ---------------------------------------------------------------------------


async def test_submit_json_returns_pending_job(client: AppClient, media: Media, videos: Path):
    name = place(media.standard(), videos)
    res = await client.http.post("/video-job", json={"video_source": name, "interval": 1})
    assert res.status_code == 200
    body = res.json()
    assert body["status"] == "pending"
    assert body["message"] == "Job submitted successfully"
    assert uuid.UUID(body["job_id"])
    done = await client.wait(body["job_id"])
    assert done["status"] == "completed"
    assert done["total_frames"] == done["processed_frames"] == 2


async def test_submit_by_query_string_with_default_interval(
    client: AppClient, media: Media, videos: Path
):
    name = place(media.clip("six.mp4", duration=6), videos)
    res = await client.http.post("/video-job", params={"video_source": name})
    assert res.status_code == 200, res.text
    done = await client.wait(res.json()["job_id"])
    assert done["interval"] == 5.0
    assert done["total_frames"] == 2


async def test_submit_absolute_path_inside_videos(client: AppClient, media: Media, videos: Path):
    name = place(media.standard(), videos)
    job_id = await client.submit(str(videos / name), 1)
    assert (await client.wait(job_id))["status"] == "completed"


async def test_upload_multipart_runs_and_delete_removes_upload(
    client: AppClient, media: Media, settings: Settings
):
    data = media.standard().read_bytes()
    res = await client.http.post(
        "/video-job",
        data={"interval": "0.5"},
        files={"file": ("../../etc/my clip.mp4", data, "video/mp4")},
    )
    assert res.status_code == 200, res.text
    job_id = res.json()["job_id"]
    done = await client.wait(job_id)
    assert done["status"] == "completed"
    assert done["source_type"] == "upload"
    assert done["video_source"] == "my clip.mp4"  # display name only, never a path
    stored = list(settings.uploads_path.iterdir())
    assert len(stored) == 1 and stored[0].read_bytes() == data
    assert "etc" not in stored[0].name
    assert (await client.http.delete(f"/job/{job_id}")).status_code == 200
    assert list(settings.uploads_path.iterdir()) == []


async def test_a_list_field_given_twice_adds_up_and_any_other_is_422(
    client: AppClient, media: Media, videos: Path
):
    """Checkboxes and many HTTP clients send a list as the same name again."""
    name = place(media.standard(), videos)
    twice = [("video_source", name), ("reject", "black"), ("reject", "flat"),
             ("timestamps", "0.5"), ("timestamps", "1,1.5")]  # fmt: skip
    form = {"content": "&".join(f"{k}={v}" for k, v in twice),
            "headers": {"Content-Type": "application/x-www-form-urlencoded"}}  # fmt: skip
    for how in ({"params": twice}, form, {"data": {"reuse": "false"}, "params": twice},
                {"files": [(k, (None, v)) for k, v in twice]}):  # fmt: skip
        res = await client.http.post("/video-job", **how)
        assert res.status_code == 200, (how, res.text)
        options = (await client.http.get(f"/job-status/{res.json()['job_id']}")).json()["options"]
        assert options["reject"] == ["black", "flat"], how
        assert options["timestamps"] == [0.5, 1.0, 1.5], how
    for where, how in (("query", {"params": [("video_source", name), ("interval", "3"),
                                               ("interval", "4")]}),
                       ("body", {"files": [("video_source", (None, name)),
                                           ("interval", (None, "3")),
                                           ("interval", (None, "4"))]})):  # fmt: skip
        res = await client.http.post("/video-job", **how)
        assert res.status_code == 422, res.text
        [error] = res.json()["detail"]
        assert error["loc"] == [where, "interval"]
        assert error["msg"] == "interval is given more than once"


async def test_upload_over_limit_is_413_and_leaves_nothing(
    make_client: Any, make_settings: Any, media: Media
):
    settings = make_settings(MAX_UPLOAD_MB="0.01")  # about 10 KiB
    async with make_client(settings) as client:
        res = await client.http.post(
            "/video-job",
            data={"interval": "1"},
            files={"file": ("big.mp4", os.urandom(64 * 1024), "video/mp4")},
        )
        assert res.status_code == 413
        assert "MAX_UPLOAD_MB" in res.json()["detail"]
        assert list(settings.uploads_path.iterdir()) == []
        jobs = (await client.http.get("/jobs")).json()
        assert jobs["count"] == 0


async def test_upload_and_video_source_together_is_400(
    client: AppClient, media: Media, settings: Settings
):
    res = await client.http.post(
        "/video-job",
        data={"interval": "1", "video_source": "x.mp4"},
        files={"file": ("a.mp4", b"data", "video/mp4")},
    )
    assert res.status_code == 400
    assert "either a file or video_source" in res.json()["detail"]
    assert list(settings.uploads_path.iterdir()) == []


async def test_upload_with_bad_interval_is_422_and_upload_removed(
    client: AppClient, settings: Settings
):
    res = await client.http.post(
        "/video-job", data={"interval": "-1"}, files={"file": ("a.mp4", b"xx", "video/mp4")}
    )
    assert res.status_code == 422
    assert res.json()["detail"][0]["loc"] == ["body", "interval"]
    assert list(settings.uploads_path.iterdir()) == []


@pytest.mark.parametrize(
    ("interval", "kind"),
    [
        (0, "greater_than_equal"),
        (-1, "greater_than_equal"),
        (0.0005, "greater_than_equal"),
        (True, "value_error"),
        ("NaN", "finite_number"),
        ("inf", "finite_number"),
        ("abc", "float_parsing"),
        (None, "float_type"),
    ],
)
async def test_bad_interval_is_422_naming_the_field(
    client: AppClient, media: Media, videos: Path, interval: Any, kind: str
):
    name = place(media.standard(), videos)
    res = await client.http.post("/video-job", json={"video_source": name, "interval": interval})
    assert res.status_code == 422
    [error] = res.json()["detail"]
    assert error["loc"] == ["body", "interval"]
    assert error["type"] == kind
    assert error["msg"]


async def test_bad_interval_in_query_string_names_the_query(client: AppClient):
    res = await client.http.post("/video-job", params={"video_source": "a.mp4", "interval": "0"})
    assert res.status_code == 422
    assert res.json()["detail"][0]["loc"] == ["query", "interval"]


async def test_missing_source_and_unknown_field_are_422(client: AppClient):
    res = await client.http.post("/video-job", json={"interval": 1})
    assert res.status_code == 422
    assert res.json()["detail"][0]["loc"] == ["body", "video_source"]
    res = await client.http.post("/video-job", json={"video_source": "a.mp4", "intervall": 1})
    assert res.status_code == 422
    assert res.json()["detail"][0]["loc"] == ["body", "intervall"]
    res = await client.http.post("/video-job")
    assert res.status_code == 422


@pytest.mark.parametrize(
    ("body", "message"),
    [(b"not json", "not valid JSON"), (b"[1, 2]", "must be an object")],
)
async def test_malformed_json_is_400(client: AppClient, body: bytes, message: str):
    res = await client.http.post(
        "/video-job", content=body, headers={"content-type": "application/json"}
    )
    assert res.status_code == 400
    assert message in res.json()["detail"]


async def test_oversized_json_body_is_413(client: AppClient):
    res = await client.http.post(
        "/video-job", json={"video_source": "a" * 100_000}, headers={"x": "y"}
    )
    assert res.status_code == 413


async def test_bad_local_paths_are_400_with_one_message(
    client: AppClient, media: Media, videos: Path, tmp_path: Path
):
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(media.standard().read_bytes())
    (videos / "folder").mkdir()
    (videos / "escape.mp4").symlink_to(outside)
    sources = [
        "missing.mp4",
        "folder",
        "../secret.mp4",
        str(outside),
        "/etc/passwd",
        "/nonexistent/file.mp4",
        "escape.mp4",
        "folder/../../secret.mp4",
    ]
    for source in sources:
        res = await client.http.post("/video-job", json={"video_source": source})
        assert res.status_code == 400, source
        detail = res.json()["detail"]
        assert detail.startswith(SOURCE_MESSAGE), source
        no_server_paths(res.text, tmp_path, videos)


# --- jobs that fail -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        ("not_a_video", "not a video"),
        ("truncated", "not a video"),
        ("audio_only", "no video stream"),
    ],
)
async def test_bad_videos_are_refused_with_a_message_and_service_keeps_serving(
    client: AppClient, media: Media, videos: Path, tmp_path: Path, make: str, message: str
):
    name = place(getattr(media, make)(), videos)
    res = await client.http.post("/video-job", json={"video_source": name})
    assert res.status_code == 400  # probed before the job is accepted
    assert message in res.json()["detail"]
    no_server_paths(res.text, tmp_path, videos)
    assert (await client.http.get("/jobs")).json()["count"] == 0
    assert (await client.http.get("/health")).status_code == 200
    good = await client.submit(place(media.standard(), videos), 1)
    assert (await client.wait(good))["status"] == "completed"


# --- status, frames, images -----------------------------------------------------------


async def test_job_status_has_progress_timings_and_video_facts(
    client: AppClient, media: Media, videos: Path
):
    job_id = await client.submit(place(media.standard(), videos), 0.5)
    body = await client.wait(job_id)
    for field in (
        "job_id",
        "status",
        "video_source",
        "interval",
        "total_frames",
        "processed_frames",
        "created_at",
        "updated_at",
        "error_message",
    ):
        assert field in body
    assert body["percent"] == 100.0
    assert body["duration"] == pytest.approx(2.0)
    assert body["fps"] == pytest.approx(25.0)
    assert (body["width"], body["height"]) == (320, 240)
    assert body["codec"] == "h264"
    assert body["started_at"] and body["finished_at"]
    assert body["elapsed_seconds"] >= 0
    assert body["created_at"].endswith("+00:00")  # Python 3.10's fromisoformat reads it
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None


async def test_job_status_is_cached_and_invalidated(client: AppClient, media: Media, videos: Path):
    job_id = await client.submit(place(media.standard(), videos), 1)
    await client.wait(job_id)
    stats = client.services.cache.stats
    hits = stats.hits["memory"]
    first = (await client.http.get(f"/job-status/{job_id}")).json()
    second = (await client.http.get(f"/job-status/{job_id}")).json()
    assert first == second
    assert stats.hits["memory"] >= hits + 1


async def test_interval_half_second_at_25_fps_does_not_drift(
    client: AppClient, media: Media, videos: Path
):
    job_id = await client.submit(place(media.clip("25fps-4s.mp4", duration=4), videos), 0.5)
    await client.wait(job_id)
    frames = (await client.http.get(f"/frames/{job_id}")).json()["frames"]
    assert [f["target_time"] for f in frames] == [k * 0.5 for k in range(8)]
    # 0.5 s is not a 25 fps frame boundary: the frame at or after k*0.5 is at 0.52, 1.52...
    expected = [0.0, 0.52, 1.0, 1.52, 2.0, 2.52, 3.0, 3.52]
    assert [f["timestamp"] for f in frames] == pytest.approx(expected, abs=1e-9)
    for frame in frames:
        assert 0 <= frame["timestamp"] - frame["target_time"] < 1 / 25


@pytest.mark.parametrize(
    ("duration", "rate", "interval", "count"),
    [
        (10, "30", 1, 10),
        (10, "30", 5, 2),
        (15, "25", 1, 15),
        (15, "25", 5, 3),
        (118.5, "30", 1, 119),
        (118.5, "30", 5, 24),
    ],
)
async def test_shapes_of_the_reference_clips_give_the_expected_counts(
    client: AppClient,
    media: Media,
    videos: Path,
    duration: float,
    rate: str,
    interval: float,
    count: int,
):
    """The three reference clips' durations and rates (made small): exact multiples."""
    clip = media.clip(f"ref-{duration}-{rate}.mp4", duration=duration, rate=rate, size="96x64")
    job_id = await client.submit(place(clip, videos), interval)
    body = await client.wait(job_id, limit=90)
    assert body["status"] == "completed"
    assert body["total_frames"] == body["processed_frames"] == count
    frames = (await client.http.get(f"/frames/{job_id}")).json()["frames"]
    assert [f["timestamp"] for f in frames] == [k * interval for k in range(count)]


async def test_frames_listing_order_paging_and_urls(client: AppClient, media: Media, videos: Path):
    job_id = await client.submit(place(media.standard(), videos), 0.25)
    await client.wait(job_id)
    whole = (await client.http.get(f"/frames/{job_id}")).json()
    assert whole["job_id"] == job_id and whole["total_count"] == 8
    stamps = [f["timestamp"] for f in whole["frames"]]
    assert stamps == sorted(stamps)
    assert whole["frames"][3]["filename"] == "000003_0.760.jpg"
    assert whole["frames"][3]["url"] == f"/frames/{job_id}/000003_0.760.jpg"
    page = (await client.http.get(f"/frames/{job_id}", params={"offset": 2, "limit": 3})).json()
    assert [f["index"] for f in page["frames"]] == [2, 3, 4]
    assert page["total_count"] == 8
    for params in ({"offset": -1}, {"limit": 0}, {"limit": "x"}, {"limit": 10001}):
        res = await client.http.get(f"/frames/{job_id}", params=params)
        assert res.status_code == 422, params
        assert res.json()["detail"][0]["loc"][0] == "query"


async def test_frame_image_with_etag(client: AppClient, media: Media, videos: Path):
    job_id = await client.submit(place(media.standard(), videos), 1)
    await client.wait(job_id)
    frame = (await client.http.get(f"/frames/{job_id}")).json()["frames"][1]
    res = await client.http.get(frame["url"])
    assert res.status_code == 200
    assert res.headers["content-type"] == "image/jpeg"
    assert res.content[:3] == b"\xff\xd8\xff"
    assert len(res.content) == frame["size_bytes"]
    assert res.headers["etag"] == f'"{frame["checksum"]}"'
    again = await client.http.get(frame["url"], headers={"If-None-Match": res.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    # weak comparison, as GET has it: a weak tag, "*" and a list that holds it match
    etag = res.headers["etag"]
    for header in (f"W/{etag}", "*", f'"other", {etag}'):
        cached = await client.http.get(frame["url"], headers={"If-None-Match": header})
        assert cached.status_code == 304, header
    fresh = await client.http.get(frame["url"], headers={"If-None-Match": 'W/"other"'})
    assert fresh.status_code == 200


async def test_frame_image_bad_or_unknown_names_are_404(
    client: AppClient, media: Media, videos: Path
):
    job_id = await client.submit(place(media.standard(), videos), 1)
    await client.wait(job_id)
    for name in ("000009_9.000.jpg", "..%2F..%2Fmetadata.db", "x.jpg", "000000_0.000.gif"):
        res = await client.http.get(f"/frames/{job_id}/{name}")
        assert res.status_code == 404, name
        assert res.json()["detail"]


@pytest.mark.parametrize(
    "path",
    [
        "/job-status/{bad}",
        "/job-status/{bad}/events",
        "/frames/{bad}",
        "/frames/{bad}/000000_0.000.jpg",
    ],
)
@pytest.mark.parametrize(
    "bad", ["not-a-uuid", "%2e%2e%2f%2e%2e", "..%2F..%2Fdb", str(uuid.uuid4())]
)
async def test_unknown_or_malformed_ids_are_404(client: AppClient, path: str, bad: str):
    res = await client.http.get(path.format(bad=bad))
    assert res.status_code == 404
    assert res.json()["detail"] in ("Job not found", "Frame not found", "Not Found")


@pytest.mark.parametrize("bad", ["not-a-uuid", "..%2F..%2Fetc", str(uuid.uuid4()).upper()])
async def test_delete_with_bad_id_is_404_and_touches_nothing(
    client: AppClient, settings: Settings, bad: str
):
    res = await client.http.delete(f"/job/{bad}")
    assert res.status_code == 404
    assert settings.frames_base_path.is_dir()


async def test_delete_finished_job_removes_it_and_its_frames(
    client: AppClient, media: Media, videos: Path, settings: Settings
):
    job_id = await client.submit(place(media.standard(), videos), 1)
    await client.wait(job_id)
    frames = (await client.http.get(f"/frames/{job_id}")).json()["frames"]
    stored = stored_frames(settings.frames_base_path)
    assert {p.name.split(".")[0] for p in stored} == {f["checksum"] for f in frames}
    res = await client.http.delete(f"/job/{job_id}")
    assert res.status_code == 200
    assert res.json()["status"] == "completed"
    assert stored_frames(settings.frames_base_path) == set()
    assert (await client.http.get(f"/job-status/{job_id}")).status_code == 404
    assert (await client.http.get(f"/frames/{job_id}")).status_code == 404
    assert (await client.http.delete(f"/job/{job_id}")).status_code == 404


async def test_list_jobs_newest_first(client: AppClient, media: Media, videos: Path):
    name = place(media.standard(), videos)
    first = await client.submit(name, 1)
    second = await client.submit(name, 1)
    await client.wait(first)
    await client.wait(second)
    body = (await client.http.get("/jobs", params={"limit": 5})).json()
    assert [j["job_id"] for j in body["jobs"]] == [second, first]
    assert body["next"] is None
    assert (await client.http.get("/jobs", params={"limit": 0})).status_code == 422


async def test_list_jobs_pages_with_next_and_filters_by_status(client: AppClient):
    """Jobs made straight in the store (a listing needs no run), one cancelled."""
    store = client.services.store
    made = [make_job(created_at=1764500000.0 + n / 7) for n in range(5)]
    for job in made:
        await store.create_job(job)
    await store.update_job(made[1].id, status=JobStatus.CANCELLED)

    async def every_page(**params: Any) -> list[str]:
        seen = []
        while True:
            body = (await client.http.get("/jobs", params={**params, "limit": 2})).json()
            assert body["count"] == len(body["jobs"]) <= 2
            seen += [j["job_id"] for j in body["jobs"]]
            if body["next"] is None:
                return seen
            params["before"] = body["next"]

    assert await every_page() == [j.id for j in reversed(made)]
    pending = [j.id for j in reversed(made) if j is not made[1]]
    assert await every_page(status="pending") == pending
    only = (await client.http.get("/jobs", params={"status": "cancelled"})).json()
    assert [j["job_id"] for j in only["jobs"]] == [made[1].id] and only["next"] is None
    for bad in (
        {"status": "done"},
        {"before": "yesterday"},
        {"before": "1.5_../../etc"},
        {"before": "1.0_" + "-" * 36},
    ):
        res = await client.http.get("/jobs", params=bad)
        assert res.status_code == 422, bad
        assert res.json()["detail"][0]["loc"] == ["query", next(iter(bad))]


# --- recent frames ---------------------------------------------------------------------


async def test_recent_frames_filters_and_matches_job_id_literally(
    client: AppClient, media: Media, videos: Path
):
    name = place(media.standard(), videos)
    a = await client.submit(name, 1)
    b = await client.submit(name, 0.5)
    await client.wait(a)
    await client.wait(b)
    everything = (await client.http.get("/dashboard/recent-frames")).json()
    assert everything["total_count"] == 2 + 4
    assert everything["since_minutes"] == 60
    only_a = (await client.http.get("/dashboard/recent-frames", params={"job_id": a})).json()
    assert {f["job_id"] for f in only_a["frames"]} == {a}
    assert only_a["total_count"] == 2
    for pattern in ("%", "_", a[:8] + "%", "*"):
        res = await client.http.get("/dashboard/recent-frames", params={"job_id": pattern})
        assert res.json()["total_count"] == 0, pattern
    tiny = await client.http.get("/dashboard/recent-frames", params={"since_minutes": 1e-9})
    assert tiny.json()["total_count"] == 0


async def test_recent_frames_are_cached_and_invalidated_by_new_frames(
    client: AppClient, media: Media, videos: Path
):
    name = place(media.standard(), videos)
    # the worker drops cached answers after it writes the final status, then announces
    # the end: wait for that, not for the status alone
    ended = client.services.bus.subscribe()
    await client.wait(await client.submit(name, 1))
    async with asyncio.timeout(patience(30)):
        async for event in ended:
            if event.type in TERMINAL_EVENTS:
                break
    ended.close()
    stats = client.services.cache.stats
    first = (await client.http.get("/dashboard/recent-frames")).json()
    hits, misses = stats.hits["memory"], stats.misses["memory"]
    second = (await client.http.get("/dashboard/recent-frames")).json()
    assert stats.misses["memory"] == misses  # answered from the cache alone
    assert stats.hits["memory"] > hits
    assert first == second
    await client.wait(await client.submit(name, 1))
    third = (await client.http.get("/dashboard/recent-frames")).json()
    assert third["total_count"] == first["total_count"] + 2


@pytest.mark.parametrize(
    "params",
    [
        {"since_minutes": "-1"},
        {"since_minutes": "abc"},
        {"since_minutes": "nan"},
        {"job_id": "x" * 201},
        {"limit": "5000"},
    ],
)
async def test_recent_frames_bad_parameters_are_422(client: AppClient, params: dict[str, str]):
    res = await client.http.get("/dashboard/recent-frames", params=params)
    assert res.status_code == 422
    assert res.json()["detail"][0]["loc"][0] == "query"


# --- health, errors, dashboard --------------------------------------------------------


async def test_health_reports_each_component(client: AppClient):
    res = await client.http.get("/health")
    assert res.status_code == 200
    body = res.json()
    assert body["status"] == "healthy"  # the original service's fields, which monitors read
    assert body["redis_available"] is False and body["active_jobs"] == 0
    assert abs(datetime.fromisoformat(body["timestamp"]).timestamp() - time.time()) < 60
    assert body["database"]["ok"] is True
    assert body["cache"]["backend"] == "memory"  # nothing listens on the test REDIS_PORT
    assert body["ffmpeg"]["ok"] is True and body["ffmpeg"]["version"]
    assert body["database"]["backend"] == "sqlite"
    assert body["queue"] == {"depth": 0, "max": 1000, "backend": "memory"}
    assert body["jobs"] == {"running": 0, "max_concurrent": 5}
    workers = body["workers"]  # embedded: this process runs the jobs
    assert (workers["count"], workers["running"]) == (1, 0)
    assert abs(datetime.fromisoformat(workers["last_heartbeat"]).timestamp() - time.time()) < 60
    assert body["disk"]["free_mb"] > 0


async def test_health_is_503_without_ffmpeg(
    client: AppClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # fault: FFmpeg uninstalled
    res = await client.http.get("/health")
    assert res.status_code == 503
    assert res.json()["ffmpeg"]["ok"] is False
    assert res.json()["status"] == "unhealthy"


async def test_health_is_503_when_the_database_is_gone(client: AppClient):
    await client.services.store.close()  # fault: the database connection is lost
    res = await client.http.get("/health")
    assert res.status_code == 503
    assert res.json()["database"]["ok"] is False
    status = await client.http.get(f"/job-status/{uuid.uuid4()}")
    assert status.status_code == 500
    assert status.json()["detail"].startswith("database")


async def test_unknown_route_and_method_use_the_error_shape(client: AppClient):
    res = await client.http.get("/no/such/route")
    assert res.status_code == 404 and res.json() == {"detail": "Not Found"}
    res = await client.http.put("/video-job")
    assert res.status_code == 405 and "detail" in res.json()


async def test_dashboard_and_static_files(client: AppClient):
    page = await client.http.get("/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "/static/app.js" in page.text
    script = await client.http.get("/static/app.js")
    assert script.status_code == 200
    assert "EventSource" in script.text
    assert "innerHTML" not in script.text  # server data goes in as text only


async def test_request_id_is_echoed(client: AppClient):
    res = await client.http.get("/health", headers={"X-Request-ID": "abc-123"})
    assert res.headers["x-request-id"] == "abc-123"


def test_percent_is_finite_for_an_unplanned_job():
    from vfe.models import JobStatus, percent

    assert percent(0, 0, JobStatus.PENDING) == 0.0
    assert percent(3, 2, JobStatus.PROCESSING) == 100.0
    assert math.isfinite(percent(1, 3, JobStatus.PROCESSING))


# --- sampling modes and output options (the same engine, through the API) -------------


async def test_modes_through_the_api(client: AppClient, media: Media, videos: Path):
    name = place(media.clip("modes-6s.mp4", duration=6, gop=25), videos)
    cases: list[tuple[dict[str, Any], list[float]]] = [
        ({"fps": 0.5}, [0.0, 2.0, 4.0]),
        ({"count": 3}, [0.0, 2.0, 4.0]),
        ({"timestamps": [5.5, 1.02, 1.02, 9.0]}, [1.04, 5.52]),  # 9.0 is past the end
        ({"mode": "keyframes"}, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]),
        ({"interval": 1, "start": 2, "end": 4.5}, [2.0, 3.0, 4.0]),
        ({"interval": 0.5, "max_frames": 2}, [0.0, 0.52]),
    ]
    for fields, expected in cases:
        res = await client.http.post("/video-job", json={"video_source": name, **fields})
        assert res.status_code == 200, (fields, res.text)
        job = await client.wait(res.json()["job_id"])
        assert job["status"] == "completed", (fields, job)
        frames = (await client.http.get(f"/frames/{job['job_id']}")).json()["frames"]
        assert [f["timestamp"] for f in frames] == pytest.approx(expected, abs=1e-9), fields
        assert job["plan"]["frames"] == len(expected)
        assert job["plan"]["strategy"] in ("select", "seek", "keyframes")


async def test_timestamps_in_a_query_string_and_job_view_options(
    client: AppClient, media: Media, videos: Path
):
    name = place(media.standard(), videos)
    res = await client.http.post(
        "/video-job", params={"video_source": name, "timestamps": "0.1, 1.5"}
    )
    assert res.status_code == 200, res.text
    job = await client.wait(res.json()["job_id"])
    assert job["mode"] == "timestamps"
    assert job["interval"] is None
    assert job["options"]["timestamps"] == [0.1, 1.5]
    assert job["total_frames"] == 2


async def test_output_format_and_size(client: AppClient, media: Media, videos: Path):
    name = place(media.standard(), videos)
    for fmt, magic, media_type in [
        ("png", b"\x89PNG", "image/png"),
        ("webp", b"RIFF", "image/webp"),
        ("jpg", b"\xff\xd8\xff", "image/jpeg"),
    ]:
        res = await client.http.post(
            "/video-job",
            json={"video_source": name, "interval": 1, "format": fmt, "width": 160, "quality": 60},
        )
        job = await client.wait(res.json()["job_id"])
        frames = (await client.http.get(f"/frames/{job['job_id']}")).json()["frames"]
        assert [f["filename"].rsplit(".", 1)[1] for f in frames] == [fmt, fmt]
        assert (frames[0]["width"], frames[0]["height"]) == (160, 120)
        image = await client.http.get(frames[0]["url"])
        assert image.content.startswith(magic)
        assert image.headers["content-type"] == media_type


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"fps": 0}, ["body", "fps"]),
        ({"count": 0}, ["body", "count"]),
        ({"count": 2.5}, ["body", "count"]),
        ({"timestamps": []}, ["body", "timestamps"]),
        ({"timestamps": [1, -2]}, ["body", "timestamps"]),
        ({"timestamps": "1,x"}, ["body", "timestamps", 1]),
        ({"mode": "fps"}, ["body"]),
        ({"mode": "shots"}, ["body", "mode"]),
        ({"fps": 1, "count": 3}, ["body"]),
        ({"start": 5, "end": 2}, ["body"]),
        ({"format": "gif"}, ["body", "format"]),
        ({"quality": 101}, ["body", "quality"]),
        ({"width": 0}, ["body", "width"]),
        ({"max_frames": 0}, ["body", "max_frames"]),
    ],
)
async def test_bad_sampling_or_output_fields_are_422(
    client: AppClient, fields: dict[str, Any], loc: list[Any]
):
    res = await client.http.post("/video-job", json={"video_source": "a.mp4", **fields})
    assert res.status_code == 422, res.text
    [error] = res.json()["detail"]
    assert error["loc"] == loc
    assert error["msg"]


# --- scene mode -----------------------------------------------------------------------


async def _scene_job(client: AppClient, fields: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """Submit ``fields`` (JSON), wait for the job; return its status and its frames."""
    res = await client.http.post("/video-job", json=fields)
    assert res.status_code == 200, (fields, res.text)
    job = await client.wait(res.json()["job_id"])
    assert job["status"] == "completed", (fields, job)
    listing = (await client.http.get(f"/frames/{job['job_id']}")).json()
    assert listing["total_count"] == len(listing["frames"])
    return job, listing["frames"]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, Media.CUTS),
        ({"min_gap": 0}, Media.CUTS_NO_GAP),
        ({"scene_threshold": 0.3, "min_gap": 1.0}, Media.CUTS),  # the defaults, given
    ],
)
async def test_scene_mode_finds_the_cuts(
    client: AppClient,
    media: Media,
    videos: Path,
    fields: dict[str, Any],
    expected: tuple[float, ...],
):
    name = place(media.cuts(), videos)
    job, frames = await _scene_job(client, {"video_source": name, "mode": "scene", **fields})
    assert [f["timestamp"] for f in frames] == pytest.approx(expected, abs=1e-9)
    assert [f["index"] for f in frames] == list(range(len(expected)))
    assert [f["target_time"] for f in frames] == [f["timestamp"] for f in frames]
    assert [f["filename"] for f in frames] == [
        f"{i:06d}_{t:.3f}.jpg" for i, t in enumerate(expected)
    ]
    assert job["mode"] == "scene"
    assert job["interval"] is None
    assert job["plan"]["strategy"] == "scene"
    assert job["total_frames"] == job["processed_frames"] == len(expected)
    assert job["percent"] == 100.0
    stored = await client.services.store.get_job(job["job_id"])
    assert stored is not None and stored.progress == 1.0
    image = await client.http.get(frames[-1]["url"])
    assert image.status_code == 200 and image.content[:3] == b"\xff\xd8\xff"
    assert len(image.content) == frames[-1]["size_bytes"]


async def test_scene_mode_keeps_to_the_window_and_max_frames(
    client: AppClient, media: Media, videos: Path
):
    name = place(media.cuts(), videos)
    cases: list[tuple[dict[str, Any], list[float]]] = [
        ({"start": 1.5}, [1.52, 2.0, 3.0, 3.2]),  # the window's first frame starts a scene
        ({"start": 1.2, "end": 3.2}, [1.2, 2.0, 3.0]),  # end excluded
        ({"end": 3.0}, [0.0, 1.2, 2.0]),
        ({"max_frames": 2}, [0.0, 1.2]),
        ({"start": 2.0, "min_gap": 1.0}, [2.0, 3.0]),  # a gap of exactly min_gap is enough
        ({"start": 3.9}, [3.92]),
    ]
    for fields, expected in cases:
        request = {"video_source": name, "mode": "scene", "min_gap": 0, **fields}
        job, frames = await _scene_job(client, request)
        assert [f["timestamp"] for f in frames] == pytest.approx(expected, abs=1e-9), fields
        assert [f["index"] for f in frames] == list(range(len(expected))), fields
        assert [f["target_time"] for f in frames] == [f["timestamp"] for f in frames], fields
        assert job["total_frames"] == job["processed_frames"] == len(expected), fields


@pytest.mark.parametrize("mode", ["scene", "interval", "keyframes"])
async def test_a_window_past_the_end_is_422_naming_start(
    client: AppClient, media: Media, videos: Path, mode: str
):
    """A job that could only find nothing is refused at once, not completed empty."""
    name = place(media.cuts(), videos)
    res = await client.http.post(
        "/video-job", json={"video_source": name, "mode": mode, "start": 50}
    )
    assert res.status_code == 422, res.text
    (error,) = res.json()["detail"]
    assert error["loc"] == ["body", "start"]
    assert "past the end of the video" in error["msg"]
    assert (await client.http.get("/jobs")).json()["count"] == 0


async def test_timestamps_that_all_miss_the_video_are_422(
    client: AppClient, media: Media, videos: Path
):
    name = place(media.cuts(), videos)
    res = await client.http.post("/video-job", json={"video_source": name, "timestamps": [60, 70]})
    assert res.status_code == 422, res.text
    assert res.json()["detail"][0]["loc"] == ["body", "timestamps"]
    assert "no frame of the video" in res.json()["detail"][0]["msg"]
    # a window that catches no frame blames the window, not the sampling
    late = {"video_source": name, "start": 3.99, "interval": 1}  # the last frame is at 3.96
    res = await client.http.post("/video-job", json=late)
    assert res.status_code == 422, res.text
    assert res.json()["detail"][0]["loc"] == ["body", "start"]


async def test_scene_threshold_alone_implies_scene_mode(
    client: AppClient, media: Media, videos: Path
):
    name = place(media.cuts(), videos)
    # only the cuts scoring above 0.7 (to the blue shot at 2.0, to the white one at 3.2)
    job, frames = await _scene_job(client, {"video_source": name, "scene_threshold": 0.7})
    assert job["mode"] == "scene"
    assert job["options"]["scene_threshold"] == 0.7
    assert job["plan"]["strategy"] == "scene"
    assert [f["timestamp"] for f in frames] == pytest.approx([0.0, 2.0, 3.2], abs=1e-9)
    # a query string, the same
    res = await client.http.post(
        "/video-job", params={"video_source": name, "scene_threshold": "0.99", "min_gap": "0"}
    )
    assert res.status_code == 200, res.text
    job = await client.wait(res.json()["job_id"])
    assert job["mode"] == "scene"
    frames = (await client.http.get(f"/frames/{job['job_id']}")).json()["frames"]
    assert [f["timestamp"] for f in frames] == pytest.approx([0.0, 3.2], abs=1e-9)


@pytest.mark.parametrize(
    ("fields", "loc", "kind", "message"),
    [
        ({"scene_threshold": 0}, ["body", "scene_threshold"], "greater_than", "greater than 0"),
        ({"scene_threshold": 1}, ["body", "scene_threshold"], "less_than", "less than 1"),
        ({"scene_threshold": -0.1}, ["body", "scene_threshold"], "greater_than", "greater than 0"),
        ({"scene_threshold": "abc"}, ["body", "scene_threshold"], "float_parsing", "valid number"),
        ({"scene_threshold": True}, ["body", "scene_threshold"], "value_error", "true/false"),
        ({"scene_threshold": "NaN"}, ["body", "scene_threshold"], "finite_number", "finite"),
        ({"mode": "scene", "min_gap": -1}, ["body", "min_gap"], "greater_than_equal",
         "greater than or equal to 0"),
        ({"mode": "scene", "min_gap": "inf"}, ["body", "min_gap"], "finite_number", "finite"),
        ({"mode": "scene", "min_gap": False}, ["body", "min_gap"], "value_error", "true/false"),
        ({"scene_threshold": 0.5, "fps": 1}, ["body"], "value_error",
         "give one of fps, count, timestamps and scene_threshold, or set mode"),
        ({"scene_threshold": 0.5, "count": 3}, ["body"], "value_error", "or set mode"),
        ({"scene_threshold": 0.5, "timestamps": [1]}, ["body"], "value_error", "or set mode"),
        ({"min_gap": 2}, ["body"], "value_error", "apply to mode scene only"),
        ({"mode": "fps", "fps": 1, "scene_threshold": 0.5}, ["body"], "value_error",
         "scene_threshold and min_gap apply to mode scene only"),
        # a mode's field given in another mode would be dropped in silence: refused
        ({"mode": "interval", "count": 3}, ["body"], "value_error",
         "count applies to mode count and best only (this job is mode interval): leave it out"),
        ({"fps": 2, "interval": 3}, ["body"], "value_error",
         "interval applies to mode interval only (this job is mode fps)"),
        ({"timestamps": [1, 2], "interval": 3}, ["body"], "value_error",
         "interval applies to mode interval only (this job is mode timestamps)"),
        ({"mode": "fps", "fps": 1, "timestamps": [1]}, ["body"], "value_error",
         "timestamps applies to mode timestamps only (this job is mode fps)"),
        ({"mode": "keyframes", "interval": 3}, ["body"], "value_error",
         "interval applies to mode interval only (this job is mode keyframes)"),
        ({"mode": "scene", "fps": 3}, ["body"], "value_error", "fps applies to mode fps only"),
    ],
)  # fmt: skip
async def test_bad_scene_fields_are_422_naming_the_field(
    client: AppClient, media: Media, videos: Path,
    fields: dict[str, Any], loc: list[Any], kind: str, message: str,
):  # fmt: skip
    name = place(media.cuts(), videos)
    res = await client.http.post("/video-job", json={"video_source": name, **fields})
    assert res.status_code == 422, res.text
    [error] = res.json()["detail"]
    assert error["loc"] == loc
    assert error["type"] == kind
    assert message in error["msg"]
    assert (await client.http.get("/jobs")).json()["count"] == 0


async def test_bad_scene_threshold_in_query_string_names_the_query(client: AppClient):
    res = await client.http.post(
        "/video-job", params={"video_source": "a.mp4", "scene_threshold": "1.5"}
    )
    assert res.status_code == 422
    assert res.json()["detail"][0]["loc"] == ["query", "scene_threshold"]


# --- the dashboard's endpoints: videos, frames.zip ------------------------------------


async def test_videos_lists_the_video_files_a_job_may_name(
    client: AppClient, media: Media, videos: Path, tmp_path: Path
) -> None:
    place(media.standard(), videos, "b.mp4")
    (videos / "talks" / "2026").mkdir(parents=True)
    place(media.standard(), videos / "talks" / "2026", "keynote.MKV")  # suffixes any case
    (videos / "notes.txt").write_text("not a video")
    (videos / ".hidden.mp4").write_bytes(b"x")
    (videos / ".cache").mkdir()
    (videos / ".cache" / "c.mp4").write_bytes(b"x")
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"secret")
    (videos / "escape.mp4").symlink_to(outside)  # points out: not listed
    (videos / "inside.mp4").symlink_to(videos / "b.mp4")  # stays inside: listed
    (videos / "broken.mp4").symlink_to(videos / "gone.mp4")
    raw = ["-f", "lavfi", "-i", "testsrc2=s=64x48:d=0.5", "-pix_fmt", "yuv420p"]
    argv = ["ffmpeg", "-v", "error", *raw, str(videos / "raw.y4m")]
    await asyncio.to_thread(subprocess.run, argv, check=True)
    res = await client.http.get("/videos")
    assert res.status_code == 200
    body = res.json()
    listed = ["b.mp4", "inside.mp4", "raw.y4m", "talks/2026/keynote.MKV"]
    assert [v["path"] for v in body["videos"]] == listed  # every format vfe reads
    assert body["count"] == 4 and body["truncated"] is False
    first = body["videos"][0]
    assert first["size_bytes"] == media.standard().stat().st_size
    assert first["modified_at"].endswith("+00:00")
    assert str(tmp_path) not in res.text
    # every path listed is accepted as a video_source
    for video in body["videos"]:
        job = await client.http.post("/video-job", json={"video_source": video["path"]})
        assert job.status_code == 200, job.text


async def test_a_video_that_states_no_length_is_timed_by_its_frames(
    client: AppClient, videos: Path
) -> None:
    """A WebM written to a pipe (as a browser's MediaRecorder writes one) states no
    duration anywhere: it is accepted, and its length is where its frames end."""
    argv = ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=160x120:r=25:d=2",
            "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-f", "webm",
            "pipe:1"]  # fmt: skip
    made = await asyncio.to_thread(subprocess.run, argv, capture_output=True, check=True)
    (videos / "recorded.webm").write_bytes(made.stdout)
    job_id = await client.submit("recorded.webm", interval=0.5)
    done = await client.wait(job_id)
    assert done["status"] == "completed", done
    assert done["duration"] == pytest.approx(2.0, abs=0.05) and done["total_frames"] == 4


def test_list_videos_stops_at_its_limit(tmp_path: Path) -> None:
    from vfe.sources import list_videos

    for n in range(5):
        (tmp_path / f"{n}.mp4").write_bytes(b"x")
    found, truncated = list_videos(tmp_path, limit=3)
    assert [v.path for v in found] == ["0.mp4", "1.mp4", "2.mp4"] and truncated
    found, truncated = list_videos(tmp_path, limit=5)
    assert len(found) == 5 and not truncated
    assert list_videos(tmp_path / "missing") == ([], False)


async def test_frames_zip_holds_every_frame(
    client: AppClient, media: Media, videos: Path, settings: Settings
) -> None:
    import io
    import zipfile

    name = place(media.standard(), videos)
    res = await client.http.post("/video-job", json={"video_source": name, "interval": 0.5})
    job = await client.wait(res.json()["job_id"])
    assert job["status"] == "completed"
    listing = (await client.http.get(f"/frames/{job['job_id']}")).json()["frames"]
    res = await client.http.get(f"/job/{job['job_id']}/frames.zip")
    assert res.status_code == 200
    assert res.headers["content-type"] == "application/zip"
    assert f'filename="vfe-{job["job_id"]}-frames.zip"' in res.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(res.content)) as archive:
        assert archive.namelist() == [*(f["filename"] for f in listing), "frames.json"]
        for frame in listing:
            data = archive.read(frame["filename"])
            image = await client.http.get(frame["url"])
            assert data == image.content
        manifest = json.loads(archive.read("frames.json"))
    assert manifest == listing  # every field, metrics included, as /frames shows them
    assert all(f["phash"] and f["sharpness"] is not None for f in manifest)
    assert not (settings.frames_base_path / ".zips").exists()  # nothing is staged
    missing = await client.http.get(f"/job/{uuid.uuid4()}/frames.zip")
    assert missing.status_code == 404 and missing.json() == {"detail": "Job not found"}
    assert (await client.http.get("/job/not-a-job/frames.zip")).status_code == 404


async def test_liveness_and_readiness_probes(client: AppClient):
    live = await client.http.get("/health/live")
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    ready = await client.http.get("/health/ready")
    assert ready.status_code == 200
    body = ready.json()
    beat = body.pop("last_heartbeat")  # embedded: this process runs the jobs
    assert abs(datetime.fromisoformat(beat).timestamp() - time.time()) < 60
    assert body == {
        "status": "ready",
        "database": True,
        "ffmpeg": True,
        "accepting_jobs": True,
        "disk": True,
        "storage": True,
        "database_backend": "sqlite",
        "storage_backend": "local",
        "queue_depth": 0,
        "workers": 1,
    }
    client.services.jobs.submissions.accepting = False  # as while shutting down
    ready = await client.http.get("/health/ready")
    assert ready.status_code == 503 and ready.json()["accepting_jobs"] is False
    assert (await client.http.get("/health/live")).status_code == 200
    client.services.jobs.submissions.accepting = True
