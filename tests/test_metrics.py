"""GET /metrics: exact job, frame and cache counts after real jobs (real FFmpeg on generated
clips), failed and cancelled jobs, gauges read at scrape time, HTTP requests by route
template (never a raw id), API keys, separate apps in one process keeping separate
counts, and a scrape of a real server over HTTP."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Message, Receive, Scope, Send

from tests.conftest import (
    AppClient,
    LiveServer,
    Media,
    RedisServer,
    patience,
    place,
    wait_until,
    wait_until_async,
)
from vfe.metrics import Metrics, MetricsMiddleware
from vfe.models import JobStatus
from vfe.settings import Settings

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
FINAL_EVENTS = ("done", "failed", "cancelled")


def parse(text: str) -> Samples:
    """Every sample of a scrape, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def requests(samples: Samples, method: str, route: str, status: int) -> float | None:
    return value(samples, "vfe_http_requests_total", method=method, route=route, status=str(status))


async def scrape(client: AppClient, **headers: str) -> Samples:
    res = await client.http.get("/metrics", headers=headers)
    assert res.status_code == 200, res.text
    assert res.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(res.text)


async def idle(client: AppClient) -> None:
    """Wait until the workers let go of every job (a worker does so just after the job's
    final event, and drops a deleted job's queue entry only when it reaches it)."""
    jobs = client.services.jobs
    await wait_until_async(
        lambda: not (jobs.running or jobs.queue_depth), "the workers to go idle", every=0.02
    )


async def run_to_end(client: AppClient, video_source: str, interval: float) -> tuple[str, str]:
    """Submit a job and wait for its final event (published after it is counted);
    returns its id and that event. The wait reads no cache, so cache counts stay exact."""
    subscription = client.services.bus.subscribe(None)
    try:
        job_id = await client.submit(video_source, interval)
        async with asyncio.timeout(patience(120)):
            while (event := await subscription.get()) is not None:
                if event.job_id == job_id and event.type in FINAL_EVENTS:
                    return job_id, event.type
    finally:
        subscription.close()
    raise AssertionError("the event stream ended before the job did")


async def test_a_real_job_is_counted_exactly(client: AppClient, media: Media, videos: Path):
    name = place(media.standard(), videos)
    job_id, final = await run_to_end(client, name, 0.5)
    assert final == "done"
    await idle(client)

    samples = await scrape(client)
    assert value(samples, "vfe_jobs_submitted_total") == 1
    assert value(samples, "vfe_jobs_finished_total", status="completed") == 1
    assert value(samples, "vfe_jobs_finished_total", status="failed") == 0
    assert value(samples, "vfe_jobs_finished_total", status="cancelled") == 0
    assert value(samples, "vfe_frames_extracted_total") == 4
    assert value(samples, "vfe_extraction_seconds_count", status="completed") == 1
    assert 0 < (value(samples, "vfe_extraction_seconds_sum", status="completed") or 0) < 60
    assert value(samples, "vfe_queue_depth") == 0
    assert value(samples, "vfe_jobs_running") == 0
    for backend in ("redis", "memory"):  # nothing has read the cache yet
        assert value(samples, "vfe_cache_hits_total", backend=backend) == 0
        assert value(samples, "vfe_cache_misses_total", backend=backend) == 0

    unknown = str(uuid.uuid4())
    assert (await client.http.get(f"/job-status/{job_id}")).status_code == 200  # miss
    assert (await client.http.get(f"/job-status/{job_id}")).status_code == 200  # hit
    assert (await client.http.get(f"/job-status/{unknown}")).status_code == 404  # miss
    assert (await client.http.get(f"/frames/{job_id}")).status_code == 200
    assert (await client.http.get("/no/such/page")).status_code == 404
    assert (await client.http.get("/static/app.js")).status_code == 200
    assert (await client.http.request("BREW", "/jobs")).status_code == 405

    samples = await scrape(client)
    assert value(samples, "vfe_cache_hits_total", backend="memory") == 1
    assert value(samples, "vfe_cache_misses_total", backend="memory") == 2
    assert value(samples, "vfe_cache_hits_total", backend="redis") == 0
    assert value(samples, "vfe_cache_misses_total", backend="redis") == 0
    assert requests(samples, "POST", "/video-job", 200) == 1
    assert requests(samples, "GET", "/job-status/{job_id}", 200) == 2
    assert requests(samples, "GET", "/job-status/{job_id}", 404) == 1
    assert requests(samples, "GET", "/frames/{job_id}", 200) == 1
    assert requests(samples, "GET", "<unmatched>", 404) == 1
    assert requests(samples, "GET", "/static/{path}", 200) == 1
    assert requests(samples, "OTHER", "/jobs", 405) == 1
    assert requests(samples, "GET", "/metrics", 200) == 1  # the first scrape
    latency = "vfe_http_request_duration_seconds_count"
    assert value(samples, latency, method="GET", route="/job-status/{job_id}") == 3
    # No label holds a raw id or path: every route label is a template.
    routes = {dict(labels).get("route") for _, labels in samples} - {None}
    assert "/job-status/{job_id}" in routes
    for labels in {labels for _, labels in samples}:
        for _, text in labels:
            assert job_id not in text and unknown not in text and "/no/such" not in text
            assert "app.js" not in text and "BREW" not in text


async def test_failed_and_cancelled_jobs_are_counted(
    make_client: Callable[[Settings], AppClient],
    make_settings: Callable[..., Settings],
    media: Media,
    videos: Path,
):
    settings = make_settings(MAX_CONCURRENT_JOBS="1")
    slow = place(media.slow(), videos)
    vanishing = place(media.standard(), videos, "vanishing.mp4")
    standard = place(media.standard(), videos)
    async with make_client(settings) as client:
        store = client.services.store
        running = await client.submit(slow, 0.04)

        async def started() -> bool:
            job = await store.get_job(running)
            return job is not None and job.status == "processing"

        await wait_until_async(started, "the first job to start")
        subscription = client.services.bus.subscribe(None)
        doomed = await client.submit(vanishing, 1)  # queued behind the running job
        queued = await client.submit(standard, 1)
        (videos / vanishing).unlink()  # so the run of `doomed` fails

        samples = await scrape(client)
        assert value(samples, "vfe_queue_depth") == 2
        assert value(samples, "vfe_jobs_running") == 1
        assert value(samples, "vfe_jobs_submitted_total") == 3

        assert (await client.http.delete(f"/job/{queued}")).json()["status"] == "cancelled"
        assert (await client.http.delete(f"/job/{running}")).json()["status"] == "cancelled"
        async with asyncio.timeout(patience(60)):
            while (event := await subscription.get()) is not None:
                if event.job_id == doomed and event.type in FINAL_EVENTS:
                    assert event.type == "failed"
                    break
        subscription.close()
        await idle(client)

        samples = await scrape(client)
    assert value(samples, "vfe_jobs_submitted_total") == 3
    assert value(samples, "vfe_jobs_finished_total", status="completed") == 0
    assert value(samples, "vfe_jobs_finished_total", status="failed") == 1
    assert value(samples, "vfe_jobs_finished_total", status="cancelled") == 2
    # The queued job never ran: counted, but it has no extraction time.
    assert value(samples, "vfe_extraction_seconds_count", status="cancelled") == 1
    assert value(samples, "vfe_extraction_seconds_count", status="failed") == 1
    assert value(samples, "vfe_queue_depth") == 0
    assert value(samples, "vfe_jobs_running") == 0
    assert requests(samples, "DELETE", "/job/{job_id}", 200) == 2
    assert JobStatus.PENDING.value not in {dict(labels).get("status") for _, labels in samples}


async def test_cache_counts_name_the_redis_back_end(
    make_client: Callable[[Settings], AppClient],
    make_settings: Callable[..., Settings],
    redis_server: RedisServer,
    media: Media,
    videos: Path,
):
    settings = make_settings(REDIS_PORT=str(redis_server.port))
    async with make_client(settings) as client:
        assert client.services.cache.name == "redis"
        job_id, _ = await run_to_end(client, place(media.standard(), videos), 1)
        for _ in range(3):
            assert (await client.http.get(f"/job-status/{job_id}")).status_code == 200
        samples = await scrape(client)
    assert value(samples, "vfe_cache_misses_total", backend="redis") == 1
    assert value(samples, "vfe_cache_hits_total", backend="redis") == 2
    assert value(samples, "vfe_cache_hits_total", backend="memory") == 0
    assert value(samples, "vfe_cache_misses_total", backend="memory") == 0


async def test_metrics_need_a_key_and_401s_are_counted(
    make_client: Callable[[Settings], AppClient], make_settings: Callable[..., Settings]
):
    async with make_client(make_settings(API_KEYS="the-key")) as client:
        assert (await client.http.get("/metrics")).status_code == 401
        assert (await client.http.get("/jobs")).status_code == 401
        assert (await client.http.put("/jobs")).status_code == 401  # a 405 once let in
        missing = f"/job-status/{uuid.uuid4()}"
        assert (await client.http.get(missing)).status_code == 401
        assert (await client.http.get("/health/live")).status_code == 200
        samples = await scrape(client, Authorization="Bearer the-key")
    assert requests(samples, "GET", "/metrics", 401) == 1
    assert requests(samples, "GET", "/jobs", 401) == 1
    assert requests(samples, "PUT", "/jobs", 401) == 1
    assert requests(samples, "GET", "/job-status/{job_id}", 401) == 1
    assert requests(samples, "GET", "/health/live", 200) == 1


async def test_two_apps_in_one_process_keep_their_own_counts(
    make_client: Callable[[Settings], AppClient],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    media: Media,
    videos: Path,
):
    first = make_client(make_settings())
    other = make_settings(
        DATABASE_PATH=str(tmp_path / "other" / "db.sqlite"),
        FRAMES_BASE_PATH=str(tmp_path / "other" / "frames"),
    )
    second = make_client(other)
    async with first, second:
        await run_to_end(first, place(media.standard(), videos), 1)
        assert (await first.http.get("/jobs")).status_code == 200
        ours = await scrape(first)
        theirs = await scrape(second)
    assert value(ours, "vfe_jobs_submitted_total") == 1
    assert value(ours, "vfe_frames_extracted_total") == 2
    assert requests(ours, "GET", "/jobs", 200) == 1
    assert value(theirs, "vfe_jobs_submitted_total") == 0
    assert value(theirs, "vfe_frames_extracted_total") == 0
    assert value(theirs, "vfe_jobs_finished_total", status="completed") == 0
    assert requests(theirs, "GET", "/jobs", 200) is None
    assert requests(theirs, "POST", "/video-job", 200) is None


@pytest.mark.live
def test_a_live_server_is_scraped_over_http(
    live_server: Callable[..., LiveServer], media: Media, videos: Path
):
    name = place(media.standard(), videos)
    server = live_server(API_KEYS="scrape-key")
    auth = {"Authorization": "Bearer scrape-key"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=30) as http:
        res = http.post("/video-job", json={"video_source": name, "interval": 0.5})
        assert res.status_code == 200, res.text
        job_id = res.json()["job_id"]
        wait_until(
            lambda: http.get(f"/job-status/{job_id}").json()["status"] in ("completed", "failed"),
            "the job to finish",
            within=120,
        )
        assert httpx.get(f"{server.url}/metrics", timeout=30).status_code == 401
        res = http.get("/metrics")
    assert res.status_code == 200
    assert res.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = parse(res.text)
    assert value(samples, "vfe_jobs_submitted_total") == 1
    assert value(samples, "vfe_jobs_finished_total", status="completed") == 1
    assert value(samples, "vfe_frames_extracted_total") == 4
    assert requests(samples, "POST", "/video-job", 200) == 1
    assert requests(samples, "GET", "/metrics", 401) == 1
    assert (requests(samples, "GET", "/job-status/{job_id}", 200) or 0) >= 1
    assert not [labels for _, labels in samples if job_id in str(labels)]


async def test_requests_with_no_answer_are_counted_as_the_log_counts_them():
    """An error no one answered is a 500; a request the client left unanswered is a 499."""
    metrics = Metrics()

    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    async def nothing() -> Message:
        return {"type": "http.disconnect"}

    async def ignore(message: Message) -> None:
        return None

    scope: Scope = {"type": "http", "method": "GET", "path": "/x", "headers": []}
    with pytest.raises(RuntimeError):
        await MetricsMiddleware(broken, metrics)(dict(scope), nothing, ignore)
    await MetricsMiddleware(silent, metrics)(dict(scope), nothing, ignore)
    await MetricsMiddleware(silent, metrics)({"type": "lifespan"}, nothing, ignore)
    samples = parse(metrics.render().decode())
    assert requests(samples, "GET", "<unmatched>", 500) == 1
    assert requests(samples, "GET", "<unmatched>", 499) == 1
    assert value(samples, "vfe_queue_depth") is None  # nothing watched yet
