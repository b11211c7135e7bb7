"""Storage: frames on an S3-compatible bucket against the local folder, result reuse,
and what a reused job stores.

Every run starts a real embedded ``vfe serve`` in a fresh folder with the 10 s 640x272
clip of the start-up section, once with the default local storage (``FRAMES_BASE_PATH``)
and once with ``STORAGE_URL=s3://BUCKET/<fresh prefix>`` on a real SeaweedFS (the tests'
``weed mini``, ``tests/seaweed.py``) on this machine, both with ``MAX_CONCURRENT_JOBS=2``.

(a) The cost of S3: the same batch of ``BATCH`` jobs (intervals ``BATCH_INTERVALS`` in
turn, all ``"reuse": false``) on each storage, submit-all-to-last-done wall time; the
ratio S3 / local folder (no goal: the bytes cross a loopback HTTP server instead of a
rename). Medians over the rounds.
(b) Reuse latency: on a new server and storage, one job (interval ``REUSE_INTERVAL``)
runs to completion, then the same job is sent ``REUSE`` times, one after another; each
``POST /video-job``'s wall time, its answer saying ``completed`` (and the job's
``plan.strategy`` saying ``reused``, checked untimed); goal: p50 and max under
``REUSE_GOAL_MS``.
(c) Storage growth: the bytes of the frame objects after the first job of (b) and after
its reused jobs (local: the files ``FRAMES_BASE_PATH/ab/…``; S3: the keys under the
prefix's ``frames/``); the growth in % of the first job's bytes, goal under
``GROWTH_GOAL_PCT``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .runner import BenchError
from .scale import fmt, fresh, run_batch
from .server import Server
from .videos import STARTUP_SPEC, cached_video

BATCH = 10
BATCH_INTERVALS = (1.0, 0.5)
CONCURRENCY = 2  # MAX_CONCURRENT_JOBS of every server, as in the scale-out section
REUSE = 20
REUSE_INTERVAL = 0.5
REUSE_GOAL_MS = 100.0
GROWTH_GOAL_PCT = 2.0
JOB_TIMEOUT_S = 600.0
BACKENDS = ("local", "s3")
LABELS = {"local": "local folder", "s3": "s3 (seaweedfs)"}


@dataclass
class Backend:
    """Every measurement of one storage."""

    batch_s: list[float] = field(default_factory=list)
    job_s: list[float] = field(default_factory=list)  # each (a) job's own run time
    batch_bytes: list[int] = field(default_factory=list)  # frames stored after (a)
    first_bytes: list[int] = field(default_factory=list)  # after (b)'s first job
    after_bytes: list[int] = field(default_factory=list)  # after its reused jobs
    reuse_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # reuse POSTs that did not reuse

    def batch(self) -> float | None:
        return statistics.median(self.batch_s) if self.batch_s else None

    def job(self) -> float | None:
        return statistics.median(self.job_s) if self.job_s else None

    def reuse_p(self, q: float) -> float | None:
        return percentile(self.reuse_ms, q)

    def reuse_max(self) -> float | None:
        return max(self.reuse_ms) if self.reuse_ms else None

    def growth_pct(self) -> list[float]:
        """Each round's growth of the frames' bytes, in % of the first job's."""
        return [
            100.0 * (after - first) / first
            for first, after in zip(self.first_bytes, self.after_bytes, strict=True)
            if first > 0
        ]

    def worst_growth(self) -> float | None:
        growth = self.growth_pct()
        return max(growth) if growth else None

    def first_kib(self) -> float | None:
        return statistics.median(self.first_bytes) / 1024 if self.first_bytes else None

    def batch_kib(self) -> float | None:
        return statistics.median(self.batch_bytes) / 1024 if self.batch_bytes else None


@dataclass
class StorageBench:
    """The section's results, by back-end."""

    rounds: int = 0
    backends: dict[str, Backend] = field(default_factory=lambda: {b: Backend() for b in BACKENDS})

    @property
    def local(self) -> Backend:
        return self.backends["local"]

    @property
    def s3(self) -> Backend:
        return self.backends["s3"]

    def batch_ratio(self) -> float | None:
        local, s3 = self.local.batch(), self.s3.batch()
        return None if local is None or s3 is None else s3 / local


class Bucket:
    """Where a run's frames are: a local folder, or a prefix of the SeaweedFS bucket."""

    def __init__(self, kind: str, seaweed: Any, folder: Path) -> None:
        self.kind = kind
        self.folder = folder
        self.prefix = f"bench-{uuid.uuid4().hex[:12]}"
        self.env = {"STORAGE_URL": "", "MAX_CONCURRENT_JOBS": str(CONCURRENCY)}
        self.store: Any = None
        if kind == "s3":
            self.env |= seaweed.vfe_env(self.prefix)
            self.store = seaweed.store(self.prefix)

    def frame_bytes(self) -> int:
        """The bytes of every frame object the storage holds (temporary files left out)."""
        if self.store is not None:
            import obstore

            return sum(
                int(meta["size"])
                for batch in obstore.list(self.store, prefix="frames/")
                for meta in batch
            )
        return sum(
            p.stat().st_size
            for p in (self.folder / "frames").glob("[0-9a-f][0-9a-f]/*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )


def seaweed_server() -> Any:
    """A started ``weed mini`` (``BenchError`` when SeaweedFS or the test helper is
    missing: ``./scripts/setup --test`` installs both)."""
    try:
        from tests.seaweed import SeaweedServer
    except ImportError as exc:
        raise BenchError(f"cannot load the test SeaweedFS helper: {exc}") from exc
    server = SeaweedServer()
    try:
        server.start()
    except (RuntimeError, AssertionError, OSError) as exc:
        server.remove()
        raise BenchError(f"SeaweedFS: {str(exc)[-300:]}") from exc
    return server


def run_folder(clip: Path) -> Path:
    """A fresh folder for one server, with the clip in its videos folder."""
    folder = Path(tempfile.mkdtemp(prefix="vfe-bench-storage-"))
    (folder / "videos").mkdir()
    shutil.copy(clip, folder / "videos" / clip.name)
    return folder


def submit(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    res = client.post("/video-job", json=body)
    if res.status_code != 200:
        raise BenchError(f"submit answered {res.status_code}: {res.text[:200]}")
    answer: dict[str, Any] = res.json()
    return answer


def wait_done(client: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/job-status/{job_id}").json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise BenchError(f"job {job_id} did not finish within {JOB_TIMEOUT_S:g} s")


def run_reuse(url: str, name: str, bucket: Bucket, result: Backend) -> None:
    """(b) and (c): one job to completion, the frames' bytes, ``REUSE`` reused jobs
    (each POST timed), the frames' bytes again."""
    body = {"video_source": name, "interval": REUSE_INTERVAL}
    with httpx.Client(base_url=url, timeout=30.0) as client:
        first = wait_done(client, submit(client, body)["job_id"])
        if first["status"] != "completed":
            raise BenchError(f"the first job ended {first['status']}: {first['error_message']}")
        result.first_bytes.append(bucket.frame_bytes())
        for _ in range(REUSE):
            started = time.perf_counter()
            res = client.post("/video-job", json=body)
            elapsed = 1000 * (time.perf_counter() - started)
            answer = res.json() if res.status_code == 200 else {}
            if answer.get("status") != "completed":
                result.failures.append(f"answered {res.status_code}: {res.text[:200]}")
                continue
            job = client.get(f"/job-status/{answer['job_id']}").json()
            strategy = (job.get("plan") or {}).get("strategy")
            if job["status"] != "completed" or strategy != "reused":
                result.failures.append(f"status {job['status']}, plan.strategy {strategy}")
                continue
            result.reuse_ms.append(elapsed)
        result.after_bytes.append(bucket.frame_bytes())


def one_run(args: argparse.Namespace, kind: str, seaweed: Any, clip: Path, result: Backend) -> None:
    """One round on one storage: a server for (a), then a fresh one for (b) and (c)."""
    for part in ("batch", "reuse"):
        folder = run_folder(clip)
        try:
            bucket = Bucket(kind, seaweed, folder)
            with Server(args.vfe, ("serve",), folder, bucket.env) as server:
                if part == "batch":
                    wall, runs = run_batch(
                        server.url,
                        [fresh(clip.name, BATCH_INTERVALS[n % len(BATCH_INTERVALS)])
                         for n in range(BATCH)],
                    )  # fmt: skip
                    result.batch_s.append(wall)
                    result.job_s.extend(runs)
                    result.batch_bytes.append(bucket.frame_bytes())
                else:
                    run_reuse(server.url, clip.name, bucket, result)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def bench_storage(args: argparse.Namespace) -> StorageBench:
    """Run (a)-(c) on both storages; ``BenchError`` when SeaweedFS or a vfe server cannot
    be had."""
    found = StorageBench()
    clip = cached_video(STARTUP_SPEC, args.cache).path
    seaweed = seaweed_server()
    try:
        for round_no in range(1, args.rounds + 1):
            for kind in BACKENDS:
                result = found.backends[kind]
                mark, failed = len(result.reuse_ms), len(result.failures)
                one_run(args, kind, seaweed, clip, result)
                this_round = result.reuse_ms[mark:]
                growth = result.growth_pct()
                print(
                    f"  round {round_no} {LABELS[kind]}: batch {result.batch_s[-1]:.2f} s, "
                    f"reuse p50 {fmt(percentile(this_round, 0.5), '.1f')} ms "
                    f"(max {fmt(max(this_round, default=None), '.1f')}), "
                    f"growth {fmt(growth[-1] if growth else None, '.2f')} %"
                    + (
                        f", {len(result.failures) - failed} reuse failures"
                        if len(result.failures) > failed
                        else ""
                    ),
                    flush=True,
                )
            found.rounds = round_no
    finally:
        seaweed.remove()
    return found


def percentile(values: list[float], q: float) -> float | None:
    """The value at ``q`` of the sorted ``values`` (the scale-out section's rule)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def storage_json(found: StorageBench) -> dict[str, Any]:
    def backend(b: Backend) -> dict[str, Any]:
        return {
            "batch_s": b.batch_s,
            "batch_median_s": b.batch(),
            "job_s_median": b.job(),
            "batch_frame_bytes": b.batch_bytes,
            "reuse_ms": {
                "samples": b.reuse_ms,
                "p50": b.reuse_p(0.5),
                "max": b.reuse_max(),
                "failures": b.failures,
            },
            "frame_bytes_first": b.first_bytes,
            "frame_bytes_after_reuse": b.after_bytes,
            "growth_pct": b.growth_pct(),
        }

    return {
        "rounds": found.rounds,
        "batch": {
            "jobs": BATCH,
            "intervals": list(BATCH_INTERVALS),
            "max_concurrent_jobs": CONCURRENCY,
            "ratio_s3_local": found.batch_ratio(),
        },
        "reuse": {"jobs": REUSE, "interval": REUSE_INTERVAL, "goal_ms": REUSE_GOAL_MS},
        "growth_goal_pct": GROWTH_GOAL_PCT,
        "local": backend(found.local),
        "s3": backend(found.s3),
    }


def print_storage(found: StorageBench) -> None:
    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("yes" if ok else "NO")

    def under(value: float | None, goal: float, failures: list[str]) -> str:
        if failures:
            return "NO"
        return verdict(None if value is None else value < goal)

    local, s3 = found.local, found.s3
    intervals = " and ".join(f"{i:g}" for i in BATCH_INTERVALS)
    print(
        f"\n== storage: the 10 s 640x272 clip, embedded vfe serve (MAX_CONCURRENT_JOBS="
        f"{CONCURRENCY}), S3 on SeaweedFS (weed mini, this machine) against the local folder; "
        f"{found.rounds} round(s)"
    )
    print("| measure | local folder | s3 (seaweedfs) | ratio s3/local | goal | met |")
    print("|---|---|---|---|---|---|")
    ratio = found.batch_ratio()
    reuse_n = f"{REUSE}x{found.rounds}"

    def ratio_of(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or b == 0 else a / b

    p50 = (local.reuse_p(0.5), s3.reuse_p(0.5))
    top = (local.reuse_max(), s3.reuse_max())
    growth = (local.worst_growth(), s3.worst_growth())
    met_p50 = [under(v, REUSE_GOAL_MS, b.failures) for v, b in zip(p50, (local, s3), strict=True)]
    met_max = [under(v, REUSE_GOAL_MS, b.failures) for v, b in zip(top, (local, s3), strict=True)]
    met_growth = [verdict(None if g is None else g < GROWTH_GOAL_PCT) for g in growth]
    rows = [
        f"| (a) batch of {BATCH} jobs (I={intervals}, reuse false) wall s, median of "
        f"{len(local.batch_s)} | {fmt(local.batch(), '.2f')} | {fmt(s3.batch(), '.2f')} | "
        f"{fmt(ratio, '.3f')} | (baseline: local folder) | |",
        f"| (a) one job's run s, median of {len(local.job_s)} | {fmt(local.job(), '.2f')} | "
        f"{fmt(s3.job(), '.2f')} | {fmt(ratio_of(s3.job(), local.job()), '.3f')} | | |",
        f"| (a) frames stored after the batch, KiB | {fmt(local.batch_kib(), '.0f')} | "
        f"{fmt(s3.batch_kib(), '.0f')} | | | |",
        f"| (b) reuse POST ms, p50 of {reuse_n} | {fmt(p50[0], '.1f')} | {fmt(p50[1], '.1f')} | "
        f"{fmt(ratio_of(p50[1], p50[0]), '.2f')} | < {REUSE_GOAL_MS:g} | "
        f"{met_p50[0]} / {met_p50[1]} |",
        f"| (b) reuse POST ms, max of {reuse_n} | {fmt(top[0], '.1f')} | {fmt(top[1], '.1f')} | "
        f"| < {REUSE_GOAL_MS:g} | {met_max[0]} / {met_max[1]} |",
        f"| (c) frames stored after the first job (I={REUSE_INTERVAL:g}), KiB | "
        f"{fmt(local.first_kib(), '.0f')} | {fmt(s3.first_kib(), '.0f')} | | | |",
        f"| (c) growth after {REUSE} reused jobs, % of the first job's, worst of "
        f"{len(local.growth_pct())} | {fmt(growth[0], '.2f')} | {fmt(growth[1], '.2f')} | | "
        f"< {GROWTH_GOAL_PCT:g} | {met_growth[0]} / {met_growth[1]} |",
    ]
    print("\n".join(rows))
    for kind, b in found.backends.items():
        for failure in b.failures[:3]:
            print(f"   {LABELS[kind]}: a reuse POST did not reuse: {failure}")
        if len(b.failures) > 3:
            print(f"   {LABELS[kind]}: {len(b.failures) - 3} more reuse failures")
