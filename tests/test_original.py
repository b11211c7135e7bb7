"""Drop-in answers for the original service's clients.

Each test is a case from the original service's own test suite, as its clients call the
API: the same fields, words and shapes, except where vfe is safer on purpose (a file that
is not a video is refused at submit; no server path in any answer). The README's "Coming
from the original service" lists what is the same, what is more, and what changed.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import datetime
from pathlib import Path

from tests.conftest import AppClient, Media, place

# What Python 3.10's datetime.fromisoformat reads: no "Z", an explicit offset.
PY310_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$")


async def test_health_has_the_fields_monitors_read(client: AppClient) -> None:
    body = (await client.http.get("/health")).json()
    assert body["status"] == "healthy"
    assert PY310_ISO.match(body["timestamp"])
    assert isinstance(body["redis_available"], bool)
    assert body["active_jobs"] == 0


async def test_unknown_job_says_job_not_found(client: AppClient) -> None:
    for path in (f"/job-status/{uuid.uuid4()}", f"/frames/{uuid.uuid4()}", "/job-status/nope"):
        res = await client.http.get(path)
        assert (res.status_code, res.json()) == (404, {"detail": "Job not found"}), path


async def test_delete_of_an_unknown_job_says_so_as_before(client: AppClient) -> None:
    for job_id in (str(uuid.uuid4()), "not-a-uuid"):
        res = await client.http.delete(f"/job/{job_id}")
        assert res.status_code == 404
        assert res.json() == {"detail": "Job not found or could not be cancelled"}


async def test_delete_says_cancelled_and_cleaned_up(
    client: AppClient, media: Media, videos: Path
) -> None:
    job_id = await client.submit(place(media.standard(), videos), 0.5)
    res = await client.http.delete(f"/job/{job_id}")
    assert res.status_code == 200
    assert res.json()["message"] == f"Job {job_id} cancelled and cleaned up successfully"
    assert (await client.http.get(f"/job-status/{job_id}")).status_code == 404


async def test_a_job_without_frames_says_no_frames_extracted_yet(
    client: AppClient, media: Media, videos: Path
) -> None:
    job_id = await client.submit(place(media.standard(), videos), 0.5)
    await client.services.jobs.stop()  # the worker pool is gone: the job stays pending
    body = (await client.http.get(f"/frames/{job_id}")).json()
    assert body["frames"] == [] and body["total_count"] == 0
    assert body["message"] == "No frames extracted yet"


async def test_frames_have_file_size_and_times_python_310_reads(
    client: AppClient, media: Media, videos: Path
) -> None:
    job_id = await client.submit(place(media.standard(), videos), 0.5)
    job = await client.wait(job_id)
    for field in ("created_at", "updated_at", "started_at", "finished_at"):
        assert PY310_ISO.match(job[field]), (field, job[field])
    body = (await client.http.get(f"/frames/{job_id}")).json()
    assert body["message"] is None and body["frames"]
    for frame in body["frames"]:
        assert frame["file_size"] == frame["size_bytes"] > 0
        assert PY310_ISO.match(frame["created_at"])
        assert "/" not in frame["filename"] and not frame["url"].startswith(str(videos))
    assert datetime.fromisoformat(job["created_at"]).timestamp() <= time.time()


async def test_since_minutes_comes_back_as_sent(client: AppClient) -> None:
    for sent, shown in (("60", 60), ("30", 30), ("2.5", 2.5)):
        body = (await client.http.get("/dashboard/recent-frames",
                                      params={"since_minutes": sent})).json()  # fmt: skip
        assert body["since_minutes"] == shown
        assert type(body["since_minutes"]) is type(shown)
    default = (await client.http.get("/dashboard/recent-frames")).json()
    assert default["since_minutes"] == 60 and type(default["since_minutes"]) is int


async def test_unknown_query_parameters_are_ignored(
    client: AppClient, media: Media, videos: Path
) -> None:
    name = place(media.standard(), videos)
    res = await client.http.post(
        "/video-job", params={"video_source": name, "interval": "1", "_": "1712345"}
    )
    assert res.status_code == 200, res.text
    job_id = res.json()["job_id"]
    for path in (f"/job-status/{job_id}", f"/frames/{job_id}", "/dashboard/recent-frames",
                 "/jobs", "/health"):  # fmt: skip
        assert (await client.http.get(path, params={"_": "1712345"})).status_code == 200, path


async def test_frames_without_a_limit_lists_every_frame(
    client: AppClient, media: Media, videos: Path
) -> None:
    """The original listed every frame; a client that sends no limit gets them all."""
    clip = media.clip("1200-frames.mp4", duration=10, rate="120", size="64x48")
    res = await client.http.post(
        "/video-job", json={"video_source": place(clip, videos), "fps": 120}
    )
    job = await client.wait(res.json()["job_id"], limit=300)
    assert job["status"] == "completed" and job["total_frames"] == 1200
    body = (await client.http.get(f"/frames/{job['job_id']}")).json()
    assert body["total_count"] == len(body["frames"]) == 1200
    assert body["limit"] is None
    paged = (await client.http.get(f"/frames/{job['job_id']}", params={"limit": 500})).json()
    assert (paged["total_count"], len(paged["frames"]), paged["limit"]) == (1200, 500, 500)


async def test_a_form_encoded_body_is_read_like_a_query_string(
    client: AppClient, media: Media, videos: Path
) -> None:
    """What `curl -d 'video_source=…&interval=1'` sends."""
    name = place(media.standard(), videos)
    res = await client.http.post("/video-job", data={"video_source": name, "interval": "1"})
    assert res.status_code == 200, res.text
    job = await client.wait(res.json()["job_id"])
    assert job["status"] == "completed" and job["interval"] == 1.0
    bad = await client.http.post("/video-job", data={"video_source": name, "interval": "0"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "interval"]


async def test_json_sent_as_a_form_is_read_as_json(
    client: AppClient, media: Media, videos: Path
) -> None:
    """`curl -d '{"video_source": …}'` without a Content-Type sends it as a form."""
    name = place(media.standard(), videos)
    res = await client.http.post(
        "/video-job",
        content=json.dumps({"video_source": name, "interval": 1}).encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert res.status_code == 200, res.text


async def test_a_non_json_body_says_how_to_send_one(client: AppClient) -> None:
    res = await client.http.post(
        "/video-job", content=b"video_source: a.mp4", headers={"content-type": "text/plain"}
    )
    assert res.status_code == 400
    assert "Content-Type: application/json" in res.json()["detail"]


async def test_an_uploaded_non_video_names_the_file(client: AppClient, media: Media) -> None:
    with media.not_a_video().open("rb") as handle:
        res = await client.http.post("/video-job", files={"file": ("notes.mp4", handle)})
    assert res.status_code == 400
    assert res.json()["detail"].startswith("file: ")


async def test_validation_messages_have_no_pydantic_prefix(client: AppClient) -> None:
    res = await client.http.post("/video-job", json={"video_source": "a.mp4", "mode": "fps"})
    assert res.status_code == 422
    messages = [e["msg"] for e in res.json()["detail"]]
    assert messages and not any(m.startswith("Value error") for m in messages)


async def test_a_bad_path_names_the_folder_and_the_list(
    client: AppClient, media: Media, videos: Path
) -> None:
    res = await client.http.post("/video-job", json={"video_source": "missing.mp4"})
    assert res.status_code == 400
    assert "runtime/videos" in res.json()["detail"]
    assert "GET /videos" in res.json()["detail"]
    name = place(media.standard(), videos)
    folder = await client.http.post("/video-job", json={"video_source": f"{name}/"})
    assert folder.status_code == 400  # a file named as a folder is not that file
