"""Scale-out (issue 14): vfe on PostgreSQL with API and worker processes, against embedded.

Every run uses a new database on a throwaway PostgreSQL cluster (``tests/postgres.py``:
``initdb`` into a temporary folder, a free port, ``fsync=off``), real ``vfe serve``,
``vfe serve --api-only`` and ``vfe worker`` processes sharing one folder, and the 10 s
640x272 clip of the start-up section.

(a) The same batch of ``BATCH`` jobs (interval 1) through embedded ``vfe serve`` with
``MAX_CONCURRENT_JOBS=2`` and through one API and two workers with one job each (the same
total concurrency): submit-all-to-last-done wall time; goal: PostgreSQL within
``BATCH_GOAL`` times embedded (medians over the rounds).
(b) Submit-to-start latency with idle workers: ``started_at - created_at`` of ``LATENCY``
jobs sent one after another; goal: p50 under ``LATENCY_GOAL_MS`` (workers are woken by
NOTIFY, not by their poll every few seconds).
(c) The queue's own dispatch rate, extraction left out: ``DISPATCH`` jobs recorded and
queued, then claimed and completed (the store's fenced writes included) by a worker of
``DISPATCH_CONCURRENCY`` slots, in this process; what that rate means in workers one
PostgreSQL can feed, for jobs as long as (a)'s.
(d) Recovery after a worker is SIGKILLed mid-job: from the kill to the job's next claim
by the other worker (median of ``RECOVERY_ROUNDS``), with the ``STALLED_AFTER_SECONDS``
in force (the bench's environment, else vfe's default); goal: within it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from .runner import BenchError
from .server import Server, free_ports
from .videos import LENGTH_PAIR, STARTUP_SPEC, cached_video

BATCH = 20
BATCH_GOAL = 1.10
LATENCY = 20
LATENCY_GOAL_MS = 100.0
DISPATCH = 500
DISPATCH_CONCURRENCY = 10
RECOVERY_ROUNDS = 3
JOB_TIMEOUT_S = 600.0
DEFAULT_STALLED_S = 30.0
WORKER_SLOTS = 2  # MAX_CONCURRENT_JOBS of a worker in the workers-per-PostgreSQL estimate


@dataclass
class Scale:
    """Every measurement of the section."""

    embedded_s: list[float] = field(default_factory=list)
    postgres_s: list[float] = field(default_factory=list)
    job_s: list[float] = field(default_factory=list)  # each (a) job's own run time
    latency_ms: list[float] = field(default_factory=list)
    dispatch_per_s: float | None = None
    recovery_s: list[float] = field(default_factory=list)
    stalled_after_s: float = DEFAULT_STALLED_S

    def batch_ratio(self) -> float | None:
        if not self.embedded_s or not self.postgres_s:
            return None
        return statistics.median(self.postgres_s) / statistics.median(self.embedded_s)

    def latency_p(self, q: float) -> float | None:
        if not self.latency_ms:
            return None
        ordered = sorted(self.latency_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def workers_per_database(self) -> float | None:
        """Worker processes of ``WORKER_SLOTS`` one PostgreSQL keeps fed: the claims it
        dispatches a second, times the seconds a job runs, over the slots of a worker."""
        if self.dispatch_per_s is None or not self.job_s:
            return None
        return self.dispatch_per_s * statistics.median(self.job_s) / WORKER_SLOTS


def postgres_cluster() -> Any:
    """A started throwaway cluster (``BenchError`` when PostgreSQL is not installed)."""
    try:
        from tests.postgres import PostgresServer
    except ImportError as exc:
        raise BenchError(f"cannot load the test PostgreSQL helper: {exc}") from exc
    try:
        server = PostgresServer(free_ports(1)[0])
        server.start()
    except RuntimeError as exc:
        raise BenchError(str(exc)) from exc
    return server


def iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def jobs_of(client: httpx.Client) -> dict[str, dict[str, Any]]:
    return {j["job_id"]: j for j in client.get("/jobs", params={"limit": 1000}).json()["jobs"]}


def fresh(name: str, interval: float) -> dict[str, Any]:
    """A job body that runs even when an equal job has completed (no reuse)."""
    return {"video_source": name, "interval": interval, "reuse": False}


def run_batch(url: str, bodies: list[dict[str, Any]]) -> tuple[float, list[float]]:
    """Submit a job of each body at once and wait for all; the wall time and each job's
    own run time (``finished_at - started_at``)."""
    with httpx.Client(base_url=url, timeout=30.0) as client:
        started = time.monotonic()
        ids = []
        for body in bodies:
            res = client.post("/video-job", json=body)
            if res.status_code != 200:
                raise BenchError(f"submit answered {res.status_code}: {res.text[:200]}")
            ids.append(res.json()["job_id"])
        deadline = started + JOB_TIMEOUT_S
        while time.monotonic() < deadline:
            jobs = jobs_of(client)
            if all(jobs.get(i, {}).get("status") in ("completed", "failed") for i in ids):
                wall = time.monotonic() - started
                bad = [i for i in ids if jobs[i]["status"] != "completed"]
                if bad:
                    raise BenchError(f"{len(bad)} jobs failed: {jobs[bad[0]]['error_message']}")
                runs = [iso(jobs[i]["finished_at"]) - iso(jobs[i]["started_at"]) for i in ids]
                return wall, runs
            time.sleep(0.05)
    raise BenchError(f"the batch did not finish within {JOB_TIMEOUT_S:g} s")


def latencies(url: str, name: str, count: int) -> list[float]:
    """Submit-to-start (ms) of ``count`` jobs, each sent once the one before has ended."""
    found = []
    with httpx.Client(base_url=url, timeout=30.0) as client:
        for _ in range(count):
            job_id = client.post("/video-job", json=fresh(name, 5)).json()["job_id"]
            deadline = time.monotonic() + JOB_TIMEOUT_S
            while time.monotonic() < deadline:
                job = client.get(f"/job-status/{job_id}").json()
                if job["status"] in ("completed", "failed"):
                    found.append(1000 * (iso(job["started_at"]) - iso(job["created_at"])))
                    break
                time.sleep(0.02)
    return found


def ffmpeg_running(server: Server) -> bool:
    assert server.handle is not None
    with_children = server.handle.children(recursive=True)
    return any(p.name() == "ffmpeg" and p.status() != psutil.STATUS_ZOMBIE for p in with_children)


async def dispatch_rate(url: str, count: int) -> float:
    """Claims per second through the real queue and store, extraction left out."""
    from vfe.models import Job, JobStatus, SourceType
    from vfe.queue.procrastinate import ProcrastinateQueue, install_schema
    from vfe.store.postgres import PostgresStore

    store = PostgresStore(url, pool_size=DISPATCH_CONCURRENCY + 4, extra_schema=install_schema)
    await store.open()
    feeder = ProcrastinateQueue(store, count + 1, 1, grace=1.0, stalled_after=30.0)
    await feeder.start(None)
    now = time.time()
    for _ in range(count):
        job = Job(
            id=str(uuid.uuid4()),
            status=JobStatus.PENDING,
            video_source="x.mp4",
            source_type=SourceType.PATH,
            source_path="/nowhere/x.mp4",
            interval=1.0,
            created_at=now,
            updated_at=now,
        )

        async def enqueue(connection: Any, job_id: str = job.id) -> None:
            await feeder.enqueue(job_id, connection)

        await store.create_job(job, None, enqueue)
    done = asyncio.Event()
    finished = 0

    async def runner(job_id: str) -> None:
        nonlocal finished
        claimed = await store.claim(job_id, time.time())
        if claimed is not None:
            await store.record(job_id, claimed.attempts, status=JobStatus.COMPLETED)
        finished += 1
        if finished >= count:
            done.set()

    worker = ProcrastinateQueue(store, count + 1, DISPATCH_CONCURRENCY, 1.0, 30.0, "bench")
    started = time.monotonic()
    await worker.start(runner)
    try:
        await asyncio.wait_for(done.wait(), JOB_TIMEOUT_S)
        rate = count / (time.monotonic() - started)
    finally:
        await worker.stop()
        await feeder.stop()
        await store.close()
    return rate


def bench_scale(args: argparse.Namespace) -> Scale:
    """Run (a)-(d); ``BenchError`` when PostgreSQL or a vfe process cannot be had."""
    scale = Scale()
    stalled = os.environ.get("STALLED_AFTER_SECONDS")
    scale.stalled_after_s = float(stalled) if stalled else DEFAULT_STALLED_S
    clip = cached_video(STARTUP_SPEC, args.cache).path
    long_clip = cached_video(LENGTH_PAIR[0], args.cache).path
    cluster = postgres_cluster()
    shared = Path(tempfile.mkdtemp(prefix="vfe-bench-scale-"))
    try:
        (shared / "videos").mkdir()
        for video in (clip, long_clip):
            shutil.copy(video, shared / "videos" / video.name)
        for round_no in range(1, args.rounds + 1):
            with Server(args.vfe, ("serve",), shared, {"MAX_CONCURRENT_JOBS": "2"}) as one:
                wall, _ = run_batch(one.url, [fresh(clip.name, 1.0)] * BATCH)
            scale.embedded_s.append(wall)
            print(f"  round {round_no}: embedded batch {wall:.2f} s", flush=True)
            env = {"DATABASE_URL": cluster.create_database(), "MAX_CONCURRENT_JOBS": "1"}
            with (
                Server(args.vfe, ("serve", "--api-only"), shared, env) as api,
                Server(args.vfe, ("worker",), shared, env),
                Server(args.vfe, ("worker",), shared, env),
            ):
                wall, runs = run_batch(api.url, [fresh(clip.name, 1.0)] * BATCH)
                scale.postgres_s.append(wall)
                scale.job_s.extend(runs)
                print(f"  round {round_no}: postgresql batch {wall:.2f} s", flush=True)
                if round_no == 1:
                    scale.latency_ms = latencies(api.url, clip.name, LATENCY)
                    print(f"  submit-to-start p50 {scale.latency_p(0.5):.0f} ms", flush=True)
        scale.dispatch_per_s = asyncio.run(dispatch_rate(cluster.create_database(), DISPATCH))
        print(f"  dispatch {scale.dispatch_per_s:.0f} claims/s", flush=True)
        for round_no in range(1, RECOVERY_ROUNDS + 1):
            scale.recovery_s.append(recovery(args, cluster, shared, long_clip.name))
            print(f"  recovery {round_no}: {scale.recovery_s[-1]:.1f} s", flush=True)
    finally:
        cluster.remove()
        shutil.rmtree(shared, ignore_errors=True)
    return scale


def recovery(args: argparse.Namespace, cluster: Any, shared: Path, name: str) -> float:
    """Seconds from SIGKILLing the worker that runs a job to the job's next claim."""
    env = {"DATABASE_URL": cluster.create_database(), "MAX_CONCURRENT_JOBS": "1"}
    with (
        Server(args.vfe, ("serve", "--api-only"), shared, env) as api,
        Server(args.vfe, ("worker",), shared, env) as first,
        Server(args.vfe, ("worker",), shared, env) as second,
        httpx.Client(base_url=api.url, timeout=30.0) as client,
    ):
        job_id = client.post("/video-job", json=fresh(name, 1)).json()["job_id"]
        deadline = time.monotonic() + JOB_TIMEOUT_S
        victim = None
        while victim is None and time.monotonic() < deadline:
            victim = next((w for w in (first, second) if ffmpeg_running(w)), None)
            time.sleep(0.05)
        if victim is None:
            raise BenchError("no worker started FFmpeg for the recovery job")
        victim.kill()
        killed = time.monotonic()
        while time.monotonic() < deadline:
            job = client.get(f"/job-status/{job_id}").json()
            if job["attempts"] >= 2 and job["status"] == "processing":
                return time.monotonic() - killed
            if job["status"] in ("completed", "failed"):
                raise BenchError(f"the job ended {job['status']} without running again")
            time.sleep(0.05)
    raise BenchError("the killed worker's job never ran again")


def scale_json(scale: Scale) -> dict[str, Any]:
    return {
        "batch": {
            "jobs": BATCH,
            "embedded_s": scale.embedded_s,
            "postgresql_s": scale.postgres_s,
            "ratio": scale.batch_ratio(),
            "goal": BATCH_GOAL,
        },
        "latency_ms": {
            "samples": scale.latency_ms,
            "p50": scale.latency_p(0.5),
            "p90": scale.latency_p(0.9),
            "goal_p50": LATENCY_GOAL_MS,
        },
        "dispatch": {
            "jobs": DISPATCH,
            "claims_per_s": scale.dispatch_per_s,
            "workers_per_database": scale.workers_per_database(),
            "worker_slots": WORKER_SLOTS,
        },
        "recovery_s": {
            "samples": scale.recovery_s,
            "stalled_after_s": scale.stalled_after_s,
            "median": statistics.median(scale.recovery_s) if scale.recovery_s else None,
        },
    }


def print_scale(scale: Scale) -> None:
    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("yes" if ok else "NO")

    ratio = scale.batch_ratio()
    p50, p90 = scale.latency_p(0.5), scale.latency_p(0.9)
    recovery = statistics.median(scale.recovery_s) if scale.recovery_s else None
    per_db = scale.workers_per_database()
    job = statistics.median(scale.job_s) if scale.job_s else None
    print(
        f"\n== scale-out: {BATCH} jobs of the 10 s 640x272 clip, PostgreSQL (1 API, 2 workers "
        "of 1 job) against embedded (MAX_CONCURRENT_JOBS=2)"
    )
    print("| measure | embedded | postgresql | ratio | goal | met |")
    print("|---|---|---|---|---|---|")
    emb = statistics.median(scale.embedded_s) if scale.embedded_s else None
    pg = statistics.median(scale.postgres_s) if scale.postgres_s else None
    met_a = verdict(None if ratio is None else ratio <= BATCH_GOAL)
    met_b = verdict(None if p50 is None else p50 < LATENCY_GOAL_MS)
    met_d = verdict(None if recovery is None else recovery <= scale.stalled_after_s)
    rows = [
        f"| (a) batch wall s, median of {len(scale.embedded_s)} | {fmt(emb, '.2f')} | "
        f"{fmt(pg, '.2f')} | {fmt(ratio, '.3f')} | <= {BATCH_GOAL} | {met_a} |",
        f"| (b) submit-to-start ms, p50 (p90) of {len(scale.latency_ms)}, idle workers | | "
        f"{fmt(p50, '.0f')} ({fmt(p90, '.0f')}) | | < {LATENCY_GOAL_MS:g} | {met_b} |",
        f"| (c) queue dispatch, claims/s ({DISPATCH} jobs, no extraction, "
        f"{DISPATCH_CONCURRENCY} slots) | | {fmt(scale.dispatch_per_s, '.0f')} | | | |",
        f"| (c) workers of {WORKER_SLOTS} slots one PostgreSQL feeds, for {fmt(job, '.2f')} s "
        f"jobs | | {fmt(per_db, '.0f')} | | | |",
        f"| (d) recovery after SIGKILL s, median of {len(scale.recovery_s)} | | "
        f"{fmt(recovery, '.1f')} | | <= {scale.stalled_after_s:g} (STALLED_AFTER_SECONDS) | "
        f"{met_d} |",
    ]
    print("\n".join(rows))


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)
