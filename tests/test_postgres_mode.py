"""``vfe serve`` on PostgreSQL, in-process: the API and the procrastinate queue's worker in
one app, on a real PostgreSQL database (a new one per test)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import Media, place, wait_until_async
from vfe.settings import Settings


@pytest.fixture
def pg_settings(make_settings: Callable[..., Settings], postgres_url: str) -> Settings:
    return make_settings(DATABASE_URL=postgres_url, STALLED_AFTER_SECONDS="3")


async def test_a_job_runs_to_completion_on_postgresql(
    make_client: Any, pg_settings: Settings, media: Media, videos: Path
) -> None:
    async with make_client(pg_settings) as client:
        job_id = await client.submit(place(media.standard(), videos), 0.4)
        done = await client.wait(job_id)
        assert done["status"] == "completed" and done["total_frames"] == 5
        frames = (await client.http.get(f"/frames/{job_id}")).json()["frames"]
        assert [f["timestamp"] for f in frames] == [0.0, 0.4, 0.8, 1.2, 1.6]
        assert (await client.http.get(frames[0]["url"])).status_code == 200


async def test_health_and_metrics_show_the_shared_back_ends(
    make_client: Any, pg_settings: Settings
) -> None:
    async with make_client(pg_settings) as client:

        async def worker_seen() -> dict[str, Any] | None:
            body: dict[str, Any] = (await client.http.get("/health")).json()
            return body if body["workers"]["count"] else None

        body = await wait_until_async(worker_seen, "this process's worker to register")
        assert body["status"] == "healthy"
        assert body["database"] == {"ok": True, "backend": "postgresql"}
        assert body["queue"]["backend"] == "procrastinate" and body["queue"]["depth"] == 0
        assert body["workers"]["count"] == 1  # this process's procrastinate worker
        assert datetime.fromisoformat(body["workers"]["last_heartbeat"])
        ready = (await client.http.get("/health/ready")).json()
        assert (ready["database_backend"], ready["workers"]) == ("postgresql", 1)
        text = (await client.http.get("/metrics")).text
        assert 'vfe_backend_info{database="postgresql",queue="procrastinate"} 1.0' in text
        assert "vfe_workers_live 1.0" in text


async def test_a_full_queue_is_503_and_records_nothing(
    make_client: Any, make_settings: Callable[..., Settings], postgres_url: str,
    media: Media, videos: Path,
) -> None:  # fmt: skip
    settings = make_settings(DATABASE_URL=postgres_url, MAX_QUEUE_SIZE="1")
    async with make_client(settings) as client:
        await client.services.jobs.queue.stop()  # nothing runs: the queue only fills
        name = place(media.standard(), videos)
        await client.submit(name, 1)
        res = await client.http.post("/video-job", json={"video_source": name, "interval": 1})
        assert res.status_code == 503 and res.headers["Retry-After"] == "10"
        assert "queue is full" in res.json()["detail"]
        jobs = (await client.http.get("/jobs")).json()["jobs"]
        assert len(jobs) == 1
        # deleted while it waits: its queue entry goes too (no cancelled row left behind)
        assert (await client.http.delete(f"/job/{jobs[0]['job_id']}")).status_code == 200
        async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM procrastinate_jobs WHERE args->>'job_id' = %s",
                (jobs[0]["job_id"],),
            )
            assert await cur.fetchone() == (0,)


def test_api_only_and_worker_need_postgresql(tmp_path: Path) -> None:
    import subprocess
    import sys

    for command in (["serve", "--api-only"], ["worker"]):
        done = subprocess.run(
            [sys.executable, "-m", "vfe", *command], capture_output=True, text=True,
            timeout=60, env={"PATH": "/usr/bin:/bin", "DATABASE_PATH": str(tmp_path / "d.db")},
        )  # fmt: skip
        assert done.returncode == 2
        assert "needs DATABASE_URL" in done.stderr
