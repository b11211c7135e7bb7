"""``vfe submit``, ``download``, ``jobs``, ``status``, ``cancel`` against a real server.

One ``vfe serve`` (uvicorn in a subprocess) for the module, with an API key, URLs to
127.0.0.1 allowed (a local HTTP server stands for a remote host) and a short shutdown
grace (the restart test stops it mid-job). Each command runs as ``python -m vfe`` in a
subprocess, as a user runs it, where the issue names the command (the upload with
``--wait --out``, a wrong API key); the other checks call the same ``main`` in this
process, which spares each an interpreter's start-up.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import functools
import hashlib
import http.server
import io
import json
import math
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, LiveServer, Media, free_port, patience, place, vfe_env, wait_until
from vfe.auth import UNAUTHORIZED
from vfe.cli import main
from vfe.client import ClientError, _events, _retry_after, _unpack

pytestmark = pytest.mark.live

KEY = "client-test-key"


class Served:
    """The module's server, its videos folder and an authorised httpx client."""

    def __init__(self, server: LiveServer, videos: Path) -> None:
        self.server = server
        self.videos = videos
        self.http = httpx.Client(
            base_url=server.url, headers={"X-API-Key": KEY}, timeout=patience(30)
        )

    def job(self, job_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get(f"/job-status/{job_id}").raise_for_status().json()
        return body

    def frames(self, job_id: str) -> list[dict[str, Any]]:
        body = self.http.get(f"/frames/{job_id}").raise_for_status().json()
        frames: list[dict[str, Any]] = body["frames"]
        return frames

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "VFE_SERVER": self.server.url, "VFE_API_KEY": KEY, **extra}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("client-server")
    videos = root / "videos"
    videos.mkdir()
    env = vfe_env(root, videos, API_KEYS=KEY, ALLOW_PRIVATE_URLS="127.0.0.1/32",
                  SHUTDOWN_GRACE_SECONDS="0.5")  # fmt: skip
    server = LiveServer(env, root / "server.log")
    server.start()
    served = Served(server, videos)
    yield served
    served.http.close()
    if server.proc is not None:
        server.stop()


@pytest.fixture(scope="module")
def clip(media: Media) -> Path:
    """6 s at 25 fps: frames at 0, 2 and 4 s with ``--interval 2``."""
    return media.clip("client.mp4", duration=6)


def vfe_process(
    served: Served, *args: str, cwd: Path = ROOT, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m vfe ARGS`` in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "vfe", *args],
        env=served.env(**env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=patience(120),
    )


def vfe(
    served: Served, *args: str, cwd: Path = ROOT, **env: str
) -> subprocess.CompletedProcess[str]:
    """``vfe ARGS`` run in this process, with the environment, folder and output streams
    a subprocess would have: the same ``main``, without an interpreter's start-up each
    time (``vfe_process`` runs the real command where the issue names it)."""
    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd = dict(os.environ), Path.cwd()
    os.environ.update(served.env(**env))
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's refusals
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_submit_uploads_waits_with_progress_and_downloads_the_exact_frames(
    served: Served, clip: Path, tmp_path: Path
) -> None:
    (tmp_path / "clip.mp4").write_bytes(clip.read_bytes())
    done = vfe_process(served, "submit", "clip.mp4", "--interval", "2", "--wait", "--out",
                       "frames/", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.splitlines()[0]
    assert "3/3" in done.stderr and "100%" in done.stderr  # the bar, to its end
    assert "wrote 3 frames and frames.json to frames" in done.stdout
    job = served.job(job_id)
    assert (job["status"], job["source_type"], job["video_source"]) == (
        "completed", "upload", "clip.mp4",
    )  # fmt: skip
    listed = served.frames(job_id)
    assert [f["timestamp"] for f in listed] == [0.0, 2.0, 4.0]
    out = tmp_path / "frames"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f["filename"] for f in listed] + ["frames.json"]
    )
    manifest = json.loads((out / "frames.json").read_text())
    assert [(f["filename"], f["timestamp"], f["checksum"]) for f in manifest] == [
        (f["filename"], f["timestamp"], f["checksum"]) for f in listed
    ]
    for frame in listed:
        data = (out / frame["filename"]).read_bytes()
        assert data == served.http.get(frame["url"]).raise_for_status().content
        assert sha256(data) == frame["checksum"]


def test_a_download_missing_a_frame_exits_1(served: Served, clip: Path, tmp_path: Path) -> None:
    """The server's zip leaves out a frame whose stored file has gone: the client says so
    rather than report a complete download."""
    name = "client-missing.mp4"
    (served.videos / name).write_bytes(clip.read_bytes())
    first = vfe(served, "submit", "--path", name, "--interval", "3", "--wait", "--quiet")
    assert first.returncode == 0, first.stderr
    listed = served.frames(first.stdout.split()[0])
    assert len(listed) == 2
    frames_base = served.server.env["FRAMES_BASE_PATH"]
    gone = [p for p in Path(frames_base).rglob("*")
            if p.is_file() and sha256(p.read_bytes()) == listed[1]["checksum"]]  # fmt: skip
    assert gone, "the stored file of the second frame"
    for path in gone:
        path.unlink()
    # the same job again completes at once from the first one's frames (reuse)
    again = vfe(served, "submit", "--path", name, "--interval", "3", "--out", str(tmp_path / "o"))
    assert again.returncode == 1
    assert "holds 1 of the job's 2 frames" in again.stderr


def test_a_wrong_or_missing_api_key_exits_1_with_the_servers_message(
    served: Served, clip: Path, tmp_path: Path
) -> None:
    for key in ("wrong-key", ""):
        done = vfe_process(served, "submit", str(clip), "--wait", "--out", str(tmp_path / "f"),
                           VFE_API_KEY=key)  # fmt: skip
        assert done.returncode == 1
        assert UNAUTHORIZED in done.stderr and "--api-key" in done.stderr
        assert done.stdout == ""
    assert not (tmp_path / "f").exists()
    jobs = vfe(served, "jobs", "--api-key", "wrong-key")
    assert jobs.returncode == 1 and UNAUTHORIZED in jobs.stderr


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def remote(clip: Path) -> Iterator[str]:
    """A plain HTTP server on 127.0.0.1 serving the clip's folder: a URL source."""
    handler = functools.partial(_Quiet, directory=str(clip.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_path_and_url_sources_and_json_output(served: Served, clip: Path, remote: str) -> None:
    name = place(clip, served.videos, "in-videos.mp4")
    sent = vfe(served, "submit", "--path", name, "--count", "2", "--format", "png", "--json")
    assert sent.returncode == 0, sent.stderr
    answer = json.loads(sent.stdout)
    assert answer["status"] in ("pending", "completed") and answer["message"]

    def finished() -> dict[str, Any] | None:
        shown = vfe(served, "status", answer["job_id"], "--json")
        assert shown.returncode == 0, shown.stderr
        job: dict[str, Any] = json.loads(shown.stdout)
        return job if job["status"] == "completed" else None

    job = wait_until(finished, "the --path job to complete", every=0.2)
    assert (job["source_type"], job["video_source"], job["mode"]) == ("path", name, "count")
    assert [f["filename"][-4:] for f in served.frames(job["job_id"])] == [".png", ".png"]

    url = f"{remote}/{clip.name}"
    waited = vfe(served, "submit", url, "--timestamps", "1,3", "--width", "160", "--wait",
                 "--json")  # fmt: skip
    assert waited.returncode == 0, waited.stderr
    job = json.loads(waited.stdout)  # the final job, as /job-status shows it
    assert (job["status"], job["source_type"], job["video_source"]) == ("completed", "url", url)
    assert job == served.job(job["job_id"])
    listed = served.frames(job["job_id"])
    assert [(f["timestamp"], f["width"]) for f in listed] == [(1.0, 160), (3.0, 160)]

    elsewhere = vfe(served, "jobs", "--server", remote)  # a server, but not vfe
    assert elsewhere.returncode == 1
    assert elsewhere.stderr == "vfe: HTTP 404 File not found (not an answer of vfe)\n"


def test_jobs_status_and_cancel_plain_and_as_json(served: Served, clip: Path) -> None:
    name = place(clip, served.videos, "listed.mp4")
    sent = vfe(served, "submit", "--path", name, "--interval", "2", "--wait", "--quiet")
    assert sent.returncode == 0, sent.stderr
    job_id = sent.stdout.strip()  # --quiet: the id alone

    table = vfe(served, "jobs")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["JOB", "STATUS", "FRAMES", "DONE", "CREATED", "(UTC)", "SOURCE"]
    mine = next(row.split() for row in rows if row.startswith(job_id))
    assert mine[1:4] == ["completed", "3/3", "100%"] and mine[-1] == name
    listing = json.loads(vfe(served, "jobs", "--json", "--limit", "2").stdout)
    assert listing["count"] == len(listing["jobs"]) <= 2
    assert listing["jobs"][0] == served.job(job_id)  # the newest first

    shown = vfe(served, "status", job_id)
    assert shown.returncode == 0, shown.stderr
    lines = dict(line.split(None, 1) for line in shown.stdout.splitlines())
    assert lines["job"] == job_id and lines["status"] == "completed (100%, 3/3 frames)"
    assert lines["source"] == f"{name} (path)" and lines["video"] == "6 s, 320x240, 25 fps, h264"
    assert json.loads(vfe(served, "status", job_id, "--json").stdout) == served.job(job_id)

    cancelled = vfe(served, "cancel", job_id, "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout) == {
        "job_id": job_id,
        "status": "completed",
        "message": f"Job {job_id} cancelled and cleaned up successfully",
    }
    gone = vfe(served, "status", job_id)
    assert gone.returncode == 1 and gone.stderr == "vfe: HTTP 404: Job not found\n"
    again = vfe(served, "cancel", job_id)
    assert again.returncode == 1
    assert again.stderr == "vfe: HTTP 404: Job not found or could not be cancelled\n"
    bad = vfe(served, "jobs", "--limit", "0")
    assert bad.returncode == 2
    assert "query.limit: Input should be greater than or equal to 1" in bad.stderr


def test_jobs_fetches_a_page_at_a_time_and_filters_by_status(
    served: Served, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = place(clip, served.videos, "paged.mp4")
    for wait in (False,) * 4 + (True,):  # listed at once, run or not; the last one waited on
        sent = vfe(served, "submit", "--path", name, "--no-reuse", "--quiet",
                   *(["--wait"] if wait else []))  # fmt: skip
        assert sent.returncode == 0, sent.stderr
    completed = sent.stdout.strip()
    monkeypatch.setattr("vfe.client_commands.JOBS_PAGE", 2)  # three requests for five jobs
    paged = json.loads(vfe(served, "jobs", "--json", "--limit", "5").stdout)
    at_once = served.http.get("/jobs", params={"limit": 5}).raise_for_status().json()
    assert [j["job_id"] for j in paged["jobs"]] == [j["job_id"] for j in at_once["jobs"]]
    assert paged["count"] == 5 and paged["next"] == at_once["next"]
    done = json.loads(vfe(served, "jobs", "--json", "--status", "completed").stdout)
    assert completed in {j["job_id"] for j in done["jobs"]}
    assert {j["status"] for j in done["jobs"]} == {"completed"}
    bad = vfe(served, "jobs", "--status", "done")
    assert bad.returncode == 2 and "query.status: Input should be 'pending'" in bad.stderr


def test_download_fetches_the_frames_of_an_earlier_job(
    served: Served, clip: Path, media: Media, tmp_path: Path
) -> None:
    name = place(clip, served.videos, "later.mp4")
    sent = vfe(served, "submit", "--path", name, "--interval", "2", "--no-reuse", "--quiet")
    assert sent.returncode == 0, sent.stderr
    job_id = sent.stdout.strip()  # not waited on
    out = tmp_path / "waited"
    waited = vfe(served, "download", job_id, "--out", str(out), "--wait", "--quiet")
    assert (waited.returncode, waited.stdout) == (0, ""), waited.stderr
    listed = served.frames(job_id)
    assert [f["timestamp"] for f in listed] == [0.0, 2.0, 4.0]
    for frame in listed:
        assert sha256((out / frame["filename"]).read_bytes()) == frame["checksum"]
    manifest = json.loads((out / "frames.json").read_text())
    assert [f["checksum"] for f in manifest] == [f["checksum"] for f in listed]

    again = vfe(served, "download", job_id, "--out", str(tmp_path / "again"), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == served.job(job_id)
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == sorted(
        p.name for p in out.iterdir()
    )
    plain = vfe(served, "download", job_id, "--out", str(tmp_path / "plain"))
    assert plain.stdout.splitlines() == [
        f"job {job_id} completed: 3 frames",
        f"wrote 3 frames and frames.json to {tmp_path / 'plain'}",
    ]

    unknown = vfe(served, "download", "no-such-job", "--out", str(tmp_path / "none"))
    assert (unknown.returncode, unknown.stderr) == (1, "vfe: HTTP 404: Job not found\n")
    assert not (tmp_path / "none").exists()

    long_name = place(media.long(), served.videos)
    running = vfe(served, "submit", "--path", long_name, "--interval", "0.04", "--no-reuse",
                  "--quiet")  # fmt: skip
    assert running.returncode == 0, running.stderr
    running_id = running.stdout.strip()
    try:  # 500 frames take far longer than the next command
        early = vfe(served, "download", running_id, "--out", str(tmp_path / "early"))
        assert early.returncode == 1
        assert re.fullmatch(
            rf"vfe: job {running_id} (pending|processing), not completed yet "
            r"\(--wait waits for it\)\n",
            early.stderr,
        )
        assert not (tmp_path / "early").exists()
    finally:
        served.http.delete(f"/job/{running_id}")


def follow(served: Served, *args: str) -> subprocess.Popen[str]:
    """``vfe submit ... --wait`` running in the background (its stdout's first line is
    the job id, printed before it starts to wait)."""
    argv = [sys.executable, "-m", "vfe", "submit", *args, "--wait"]
    return subprocess.Popen(argv, env=served.env(), cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def read_until(proc: subprocess.Popen[str], text: str, within: float = 60.0) -> str:
    """What ``proc`` wrote to stderr until ``text`` (read from the pipe's descriptor, so
    ``communicate`` reads on from there)."""
    assert proc.stderr is not None
    seen, fd = "", proc.stderr.fileno()
    deadline = time.monotonic() + patience(within)
    while text not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {text!r} on stderr: {seen!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            assert chunk, f"stderr ended before {text!r}: {seen!r}"
            seen += chunk.decode(errors="replace")
    return seen


def test_a_job_cancelled_while_waited_on_exits_1(served: Served, media: Media) -> None:
    name = place(media.long(), served.videos)
    with follow(served, "--path", name, "--interval", "0.04", "--no-reuse") as waiting:
        try:
            assert waiting.stdout is not None
            job_id = waiting.stdout.readline().strip()
            shown = read_until(waiting, job_id[:8])  # the bar: the stream is open
            # 500 frames take far longer than this
            assert served.http.delete(f"/job/{job_id}").status_code == 200
            _, rest = waiting.communicate(timeout=patience(60))
            err = shown + rest
        finally:
            waiting.kill()  # nothing if it has ended
    assert waiting.returncode == 1
    assert err.splitlines()[-1] == f"vfe: job {job_id} cancelled"


def damaged(source: Path, target: Path) -> Path:
    """``source`` remuxed with its index first, then its back two thirds zeroed: it
    probes as a whole video, and its decoding fails a third of the way in."""
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(source), "-c", "copy",
         "-movflags", "+faststart", str(target)],
        check=True, timeout=60,
    )  # fmt: skip
    data = bytearray(target.read_bytes())
    data[len(data) // 3 :] = bytes(len(data) - len(data) // 3)
    target.write_bytes(bytes(data))
    return target


def test_failures_exit_non_zero_with_the_servers_message(
    served: Served, clip: Path, media: Media, tmp_path: Path
) -> None:
    broken = damaged(clip, tmp_path / "damaged.mp4")
    failed = vfe(served, "submit", str(broken), "--interval", "0.5", "--wait", "--quiet")
    assert failed.returncode == 1
    job_id = failed.stdout.strip()
    job = served.job(job_id)
    assert job["status"] == "failed" and "ends early or is damaged" in job["error_message"]
    assert failed.stderr == f"vfe: job {job_id} failed: {job['error_message']}\n"

    refused = vfe(served, "submit", str(media.not_a_video()), "--wait")
    assert refused.returncode == 1
    assert refused.stderr == "vfe: HTTP 400: file: the file is not a video FFmpeg can read\n"

    invalid = vfe(served, "submit", str(clip), "--count", "0", "--width", "0")
    assert invalid.returncode == 2
    assert invalid.stderr.splitlines()[1:] == [
        "  body.count: Input should be greater than or equal to 1",
        "  body.width: Input should be greater than or equal to 1",
    ]
    missing = vfe(served, "submit", str(tmp_path / "nope.mp4"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    neither = vfe(served, "submit")
    assert neither.returncode == 2 and "give one video" in neither.stderr
    both = vfe(served, "submit", str(clip), "--path", "x.mp4")
    assert both.returncode == 2 and "give one video" in both.stderr


def test_an_unreachable_server_exits_3_naming_it(served: Served) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["jobs"], ["status", "x"], ["submit", "--path", "a.mp4", "--wait"]):
        done = vfe(served, *args, "--server", url)
        assert done.returncode == 3, done.stderr
        assert done.stderr.startswith(f"vfe: cannot reach the server at {url} (")
        assert "Connection refused" in done.stderr
        assert "sending it again" not in done.stderr  # nothing was sent: told at once
    done = vfe(served, "jobs", VFE_SERVER="localhost:8000")
    assert done.returncode == 2 and "--server must be a URL" in done.stderr


class AnswerLosingProxy:
    """A TCP proxy to the server that closes its first connection as soon as the server
    starts to answer on it: the request arrived and was acted on, and its answer is lost
    on the way back, as when a connection drops or a proxy times out. With ``busy``, the
    first request is answered that (raw HTTP) instead, and never reaches the server, as a
    load balancer in front of a busy server answers."""

    def __init__(self, port: int, busy: bytes | None = None) -> None:
        self.port = port
        self.busy = busy
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        self.lost = 0  # answers that never reached the client
        self.arrived: list[float] = []  # when each connection came (time.monotonic)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.connections += 1
            self.arrived.append(time.monotonic())
            first = self.connections == 1
            target = self._answer_busy if first and self.busy else self._pipe
            threading.Thread(target=target, args=(client, first), daemon=True).start()

    def _answer_busy(self, client: socket.socket, _: bool) -> None:
        """Read the whole request (its headers and ``Content-Length`` body), then answer
        ``busy`` and close: unread bytes would make the close a reset."""
        assert self.busy is not None
        with client:
            data = b""
            while b"\r\n\r\n" not in data:
                data += client.recv(1 << 16)
            head, _, body = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            while length and len(body) < int(length[1]):
                body += client.recv(1 << 16)
            client.sendall(self.busy)

    def _pipe(self, client: socket.socket, lose: bool) -> None:
        with client, socket.create_connection(("127.0.0.1", self.port)) as upstream:
            while True:
                ready, _, _ = select.select([client, upstream], [], [], patience(60))
                for end in ready:
                    data = end.recv(1 << 16)
                    if not data:
                        return
                    if end is upstream and lose:
                        self.lost += 1
                        return
                    (upstream if end is client else client).sendall(data)
                if not ready:
                    return

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self.listener.close()


def test_a_submit_whose_answer_is_lost_is_sent_again_and_makes_one_job(
    served: Served, clip: Path
) -> None:
    def job_ids() -> set[str]:
        listing = served.http.get("/jobs", params={"limit": 1000}).raise_for_status().json()
        return {job["job_id"] for job in listing["jobs"]}

    before = job_ids()
    proxy = AnswerLosingProxy(served.server.port)
    try:
        sent = vfe(served, "submit", str(clip), "--interval", "2.5", "--json",
                   "--server", proxy.url)  # fmt: skip
    finally:
        proxy.close()
    assert sent.returncode == 0, sent.stderr
    assert proxy.lost == 1 and proxy.connections == 2
    assert "; sending it again in 1 s (same Idempotency-Key)" in sent.stderr
    answer = json.loads(sent.stdout)
    assert answer["message"] == "Job already submitted with this Idempotency-Key"
    assert job_ids() - before == {answer["job_id"]}  # the first send's job, and no other


def busy_answer(retry_after: str) -> bytes:
    """The 503 vfe answers when its queue is full, with ``retry_after`` as Retry-After."""
    body = json.dumps({"detail": "the job queue is full (1 waiting); try again later"})
    return (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        f"retry-after: {retry_after}\r\ncontent-length: {len(body)}\r\n"
        f"connection: close\r\n\r\n{body}"
    ).encode()


def test_a_submit_told_to_retry_after_waits_that_long_then_sends_again(
    served: Served, media: Media
) -> None:
    name = place(media.standard(), served.videos)
    proxy = AnswerLosingProxy(served.server.port, busy=busy_answer("2"))
    try:
        sent = vfe(served, "submit", "--path", name, "--interval", "2.5", "--json",
                   "--server", proxy.url)  # fmt: skip
    finally:
        proxy.close()
    assert sent.returncode == 0, sent.stderr
    assert "(retry after 2 s); sending it again in 2 s (same Idempotency-Key)" in sent.stderr
    assert proxy.connections == 2 and proxy.arrived[1] - proxy.arrived[0] >= 2.0
    assert served.job(json.loads(sent.stdout)["job_id"])["status"] != "failed"


def test_a_submit_told_to_retry_much_later_says_so_at_once(served: Served, media: Media) -> None:
    name = place(media.standard(), served.videos)
    later = email.utils.format_datetime(  # an HTTP date: about two minutes from now
        datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=125), usegmt=True
    )
    proxy = AnswerLosingProxy(served.server.port, busy=busy_answer(later))
    try:
        sent = vfe(served, "submit", "--path", name, "--json", "--server", proxy.url)
    finally:
        proxy.close()
    assert sent.returncode == 1 and proxy.connections == 1
    assert re.search(r"HTTP 503: the job queue is full .*\(retry after 12\d s\)\n", sent.stderr)
    assert "sending it again" not in sent.stderr


@pytest.mark.parametrize(
    ("header", "seconds"),
    [(b"7", 7.0), (b"0", 0.0), (b" 12 ", 12.0), (b"9" * 400, math.inf), (b"-5", None),
     (b"+5", None), (b"1.5", None), (b"\xb2", None), ("\u0661".encode(), None), (b"", None),
     (b"soon", None), (b"Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)  # fmt: skip
def test_retry_after_reads_delay_seconds_and_http_dates_and_nothing_else(
    header: bytes, seconds: float | None
) -> None:
    """As the header arrives: httpx reads a latin-1 byte as "²", UTF-8 as other digits."""
    answer = httpx.Response(503, headers={"Retry-After": header} if header else {})
    assert _retry_after(answer) == seconds


def test_retry_after_as_a_date_is_the_whole_seconds_until_then() -> None:
    then = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=90.2)
    answer = httpx.Response(503, headers={"Retry-After": email.utils.format_datetime(then)})
    assert _retry_after(answer) in (90.0, 91.0)  # the header has whole seconds; then ceil


def test_submit_offers_every_job_option_of_extract(capsys: pytest.CaptureFixture[str]) -> None:
    def options(command: str) -> set[str]:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", capsys.readouterr().out))

    job_options = options("extract") - {"--help", "--out", "--quiet"}
    assert {"--interval", "--scene", "--reject", "--dedupe-distance"} <= job_options
    assert job_options <= options("submit")


def test_unpack_refuses_unsafe_names_and_frames_that_fail_their_checksum(tmp_path: Path) -> None:
    """A damaged or hostile zip, made by hand (no server sends one)."""
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("frames.json", "[]")
        archive.writestr("../escape.jpg", b"x")
    with pytest.raises(ClientError, match="unsafe name"):
        _unpack(bad, tmp_path / "out")
    assert not (tmp_path / "escape.jpg").exists()
    wrong = tmp_path / "wrong.zip"
    with zipfile.ZipFile(wrong, "w") as archive:
        archive.writestr("frames.json", json.dumps([{"filename": "a.jpg", "checksum": "0"}]))
        archive.writestr("a.jpg", b"jpeg")
    with pytest.raises(ClientError, match=r"a\.jpg does not match its checksum"):
        _unpack(wrong, tmp_path / "out")
    (tmp_path / "cut.zip").write_bytes(wrong.read_bytes()[:40])
    with pytest.raises(ClientError, match="damaged or incomplete"):
        _unpack(tmp_path / "cut.zip", tmp_path / "out")


def test_events_parser_reads_sse_framing() -> None:
    lines = [": ping", "event: progress", 'data: {"a":', "data: 1}", "", "", "data: x", "id: 7",
             ""]  # fmt: skip
    assert list(_events(iter(lines))) == [("progress", '{"a":\n1}'), ("message", "x")]


def test_wait_reconnects_when_the_server_restarts_mid_job(
    served: Served, media: Media, tmp_path: Path
) -> None:
    """SIGTERM ends the event stream without a final event (or refuses the client's first
    connection) and leaves the job pending; the client reconnects to the restarted server
    and follows the job to its end."""
    name = place(media.long(), served.videos)
    out = tmp_path / "frames"
    argv = ("--path", name, "--interval", "0.04", "--no-reuse", "--out", str(out))
    with follow(served, *argv) as waiting:
        try:
            assert waiting.stdout is not None
            job_id = waiting.stdout.readline().strip()
            served.server.stop(signal.SIGTERM)  # at once: 500 frames take far longer
            served.server.start()
            stdout, err = waiting.communicate(timeout=patience(120))
        finally:
            waiting.kill()  # nothing if it has ended
    assert waiting.returncode == 0, err
    assert "reconnecting" in err or "trying again" in err
    job = served.job(job_id)
    assert job["status"] == "completed"
    listed = served.frames(job_id)
    assert len(listed) == job["total_frames"] == 500
    assert f"wrote 500 frames and frames.json to {out}" in stdout
    for frame in listed:
        assert sha256((out / frame["filename"]).read_bytes()) == frame["checksum"]
