"""Bounded probing (issue 13): three uploads at once of a 39 MB video that states 3,000,000
frames, to a real ``vfe serve``. The goal: each upload is answered within ``ANSWER_GOAL_S``
(accepted, or 422 over ``MAX_FRAMES_PER_VIDEO``); the server's process tree stays under
``PEAK_LIMIT_MB``; every ``/health/live`` answers within ``LIVE_GOAL_S`` meanwhile; after
them the tree's memory comes back within ``RETURN_LIMIT_MB`` of where it started.

Each round starts a fresh server for each file (the MP4, then a Matroska copy whose header
states no frame count, so the server must count packets up to the limit), waits until its
memory settles, posts the file three times at once (multipart, one thread each) while one
thread polls ``/health/live`` back to back and another samples the tree's summed RSS (and
how many processes it holds) every ``SAMPLE_EVERY_S``, then waits for the memory to
settle again and stops the server. The server runs with its default limits; the 422's
message names the limit it applied.

Megabytes are decimal, as in the memory-vs-length section: 400 MB = 381.5 MiB.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .runner import BenchError, run_text
from .server import Server
from .videos import PROBING_SPEC, Video, cached_video, remuxed

UPLOADS = 3
ANSWER_GOAL_S = 30.0
PEAK_LIMIT_MB = 400
PEAK_LIMIT_MIB = PEAK_LIMIT_MB * 1e6 / 2**20
LIVE_GOAL_S = 0.5
RETURN_LIMIT_MB = 50
RETURN_LIMIT_MIB = RETURN_LIMIT_MB * 1e6 / 2**20
SAMPLE_EVERY_S = 0.05
LIVE_PAUSE_S = 0.01  # between two /health/live polls: back to back, but not a busy loop
LIVE_TIMEOUT_S = 10.0  # a poll that gets no answer counts as this long, and as a failure
UPLOAD_TIMEOUT_S = 300.0  # well past the goal: a slow answer is measured, not cut off
SETTLE_LIMIT_S = 10.0
ACCEPTED = range(200, 300)
REFUSED = 422


@dataclass
class Answer:
    """One upload: its status (None when no answer came), what it said, and how long."""

    status: int | None
    detail: str
    seconds: float


@dataclass
class Trial:
    """One round of ``UPLOADS`` uploads at once of one file to a fresh server."""

    round: int
    answers: list[Answer]
    before_mib: float
    peak_mib: float
    after_mib: float
    settle_s: float
    live_polls: int
    live_worst_s: float
    live_failures: int
    most_children: int  # the most processes under the server at one sample: its ffprobes
    server_stop: str = ""  # "clean", or how it ended otherwise and its log's last line


@dataclass
class Probing:
    """Every round of the section on one file, and the verdicts on the worst of them."""

    video: Video
    header_frames: int | None  # what the container's header states; None: nothing
    size_mb: float
    trials: list[Trial] = field(default_factory=list)
    error: str | None = None

    def answers(self) -> list[Answer]:
        return [answer for trial in self.trials for answer in trial.answers]

    def answers_text(self) -> str:
        """``3x 422``, ``2x 422 1x none``: the statuses of every round's answers."""
        counts = Counter(str(a.status) if a.status is not None else "none" for a in self.answers())
        return " ".join(f"{n}x {status}" for status, n in sorted(counts.items())) or "n/a"

    def slowest_s(self) -> float | None:
        return max((a.seconds for a in self.answers()), default=None)

    def peak_mib(self) -> float | None:
        return max((t.peak_mib for t in self.trials), default=None)

    def live_worst_s(self) -> float | None:
        return max((t.live_worst_s for t in self.trials), default=None)

    def growth_mib(self) -> float | None:
        """The largest rise of the settled memory from before the uploads to after them."""
        return max((t.after_mib - t.before_mib for t in self.trials), default=None)

    def met(self) -> dict[str, bool | None]:
        """Each goal on the worst round; None when no round finished."""
        if not self.trials:
            return dict.fromkeys(("answer", "peak", "live", "return"))
        slowest, peak = self.slowest_s(), self.peak_mib()
        live, growth = self.live_worst_s(), self.growth_mib()
        answered = all(a.status in ACCEPTED or a.status == REFUSED for a in self.answers())
        return {
            "answer": answered and slowest is not None and slowest <= ANSWER_GOAL_S,
            "peak": peak is not None and peak < PEAK_LIMIT_MIB,
            "live": live is not None
            and live <= LIVE_GOAL_S
            and not any(t.live_failures for t in self.trials),
            "return": growth is not None and growth <= RETURN_LIMIT_MIB,
        }

    def all_met(self) -> bool | None:
        verdicts = list(self.met().values())
        return None if None in verdicts else all(verdicts)

    def to_json(self) -> dict[str, Any]:
        return {
            "video": {"key": self.video.key, "path": str(self.video.path)},
            "origin": self.video.origin,
            "header_frames": self.header_frames,
            "size_mb": self.size_mb,
            "error": self.error,
            "answers": self.answers_text(),
            "slowest_answer_s": self.slowest_s(),
            "peak_mib": self.peak_mib(),
            "live_worst_s": self.live_worst_s(),
            "growth_mib": self.growth_mib(),
            "met": self.met(),
            "rounds": [asdict(trial) for trial in self.trials],
        }


def header_frames(path: Path) -> int | None:
    """The frame count the container's header states for the first video stream."""
    out = run_text(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_frames",
            "-of",
            "json",
            str(path),
        ]
    )
    stated = json.loads(out)["streams"][0].get("nb_frames")
    return int(stated) if stated and str(stated).isdigit() else None


def probing_inputs(cache: Path) -> list[Probing]:
    """The MP4 (generated into ``cache/videos`` when missing, about 70 s of CPU) and its
    Matroska copy; ``BenchError`` when either cannot be made."""
    mp4 = cached_video(PROBING_SPEC, cache)
    videos = (mp4, remuxed(mp4, "matroska", ".mkv"))
    return [Probing(v, header_frames(v.path), v.path.stat().st_size / 1e6) for v in videos]


def detail_of(response: httpx.Response) -> str:
    """The answer's ``detail`` (each ``msg`` of a 422's list), or its ``message``."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if not isinstance(body, dict):
        return str(body)[:200]
    detail = body.get("detail", body.get("message", ""))
    if isinstance(detail, list):
        return "; ".join(str(item.get("msg", item)) for item in detail if isinstance(item, dict))
    return str(detail)


def upload(url: str, video: Path, start: threading.Barrier) -> Answer:
    """Post ``video`` as the ``file`` part of a multipart form once every thread is
    ready; wait at most ``UPLOAD_TIMEOUT_S`` for the answer."""
    with httpx.Client(base_url=url, timeout=UPLOAD_TIMEOUT_S) as client, video.open("rb") as fh:
        start.wait()
        started = time.perf_counter()
        try:
            response = client.post(
                "/video-job", files={"file": (video.name, fh, "application/octet-stream")}
            )
        except httpx.HTTPError as exc:
            return Answer(None, f"{type(exc).__name__}: {exc}", time.perf_counter() - started)
        return Answer(response.status_code, detail_of(response), time.perf_counter() - started)


class Watch:
    """Two threads while the uploads run: one polls ``/health/live`` back to back, one
    samples the tree's RSS every ``SAMPLE_EVERY_S``; ``stop`` ends and joins both."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.done = threading.Event()
        self.peak_mib = server.rss_mib()
        self.polls = self.failures = self.most_children = 0
        self.worst_s = 0.0
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self.poll, self.sample)]
        for thread in self.threads:
            thread.start()

    def poll(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=LIVE_TIMEOUT_S) as client:
            while not self.done.is_set():
                started = time.perf_counter()
                try:
                    ok = client.get("/health/live").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.worst_s = max(self.worst_s, time.perf_counter() - started)
                self.polls += 1
                self.failures += not ok
                self.done.wait(LIVE_PAUSE_S)

    def sample(self) -> None:
        while not self.done.wait(SAMPLE_EVERY_S):
            rss, children = self.server.usage()
            self.peak_mib = max(self.peak_mib, rss)
            self.most_children = max(self.most_children, children)

    def stop(self) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join()


def trial(video: Video, round_no: int, vfe: Path) -> Trial:
    """One round on a fresh server: settle, ``UPLOADS`` uploads at once, settle, stop."""
    with Server(vfe) as server:
        before, _ = server.settled_rss_mib(SETTLE_LIMIT_S)
        start = threading.Barrier(UPLOADS)
        answers: list[Answer | None] = [None] * UPLOADS

        def post(n: int) -> None:
            answers[n] = upload(server.url, video.path, start)

        watch = Watch(server)
        posts = [threading.Thread(target=post, args=(n,)) for n in range(UPLOADS)]
        for thread in posts:
            thread.start()
        for thread in posts:
            thread.join()
        watch.stop()
        after, settle = server.settled_rss_mib(SETTLE_LIMIT_S)
    stop = server.stopped
    if stop != "clean":
        stop += f": {server.last_words}"
    return Trial(
        round_no,
        [a if a is not None else Answer(None, "the thread failed", 0.0) for a in answers],
        before_mib=before,
        peak_mib=max(watch.peak_mib, before, after),
        after_mib=after,
        settle_s=settle,
        live_polls=watch.polls,
        live_worst_s=watch.worst_s,
        live_failures=watch.failures,
        most_children=watch.most_children,
        server_stop=stop,
    )


def show(video: Video, trial: Trial) -> None:
    """One progress line per round, as the other sections print theirs."""
    slowest = max(a.seconds for a in trial.answers)
    statuses = ",".join(str(a.status) for a in trial.answers)
    print(
        f"  {video.path.name} round {trial.round}: {statuses} in <= {slowest:.2f} s, peak "
        f"{trial.peak_mib:.0f} MiB, {trial.before_mib:.0f} -> {trial.after_mib:.0f} MiB, "
        f"/health/live <= {trial.live_worst_s:.3f} s ({trial.live_polls} polls)",
        flush=True,
    )


def bench_probing(rows: list[Probing], args: argparse.Namespace) -> list[Probing]:
    """``args.rounds`` rounds, each over every file in turn; a failed round ends its row."""
    for round_no in range(1, args.rounds + 1):
        for row in rows:
            if row.error is not None:
                continue
            try:
                row.trials.append(trial(row.video, round_no, args.vfe))
            except BenchError as exc:
                row.error = str(exc)
                print(f"  {row.video.path.name} round {round_no}: {exc}", flush=True)
                continue
            show(row.video, row.trials[-1])
            if row.trials[-1].server_stop != "clean":
                print(f"  vfe serve: {row.trials[-1].server_stop}", flush=True)
    return rows
