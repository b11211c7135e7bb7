"""Shared fixtures: generated clips, settings in a temp folder, the app in-process,
a real redis-server on a free port, and a real vfe server in a subprocess.

Every clip is made here with FFmpeg's lavfi sources; nothing outside the repository
is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.postgres import PostgresServer
from vfe.app import create_app
from vfe.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

# A busy machine (two cores, other suites running) is many times slower than an idle one,
# so condition waits get deadlines far above what they need when idle: they cost nothing
# when the condition comes at once. VFE_TEST_PATIENCE (a factor, default 1) stretches
# every deadline and every per-test timeout further, for an even slower machine.
PATIENCE = float(os.environ.get("VFE_TEST_PATIENCE", "1"))


def patience(seconds: float) -> float:
    """``seconds`` scaled by VFE_TEST_PATIENCE: every deadline a test waits under."""
    return seconds * PATIENCE


def wait_until(
    check: Callable[[], Any], what: str, *, within: float = 60.0, every: float = 0.05
) -> Any:
    """Call ``check`` until it returns something truthy and return that; fail after
    ``patience(within)`` seconds, naming ``what``. Blocks: for sync tests and threads;
    an async test uses ``wait_until_async`` so the app under test keeps running."""
    limit = patience(within)
    deadline = time.monotonic() + limit
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {limit:g} s waiting for {what}")
        time.sleep(every)


async def wait_until_async(
    check: Callable[[], Any | Awaitable[Any]],
    what: str,
    *,
    within: float = 60.0,
    every: float = 0.05,
) -> Any:
    """``wait_until`` for async tests: ``check`` may be a coroutine function; the loop
    runs between calls."""
    limit = patience(within)
    deadline = time.monotonic() + limit
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {limit:g} s waiting for {what}")
        await asyncio.sleep(every)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Stretch each test's timeout (its mark, else the ini default) by VFE_TEST_PATIENCE."""
    if PATIENCE == 1:
        return
    default = float(config.getini("timeout") or 0)
    for item in items:
        mark = item.get_closest_marker("timeout")
        base = float(mark.args[0]) if mark is not None and mark.args else default
        if base > 0:
            item.add_marker(pytest.mark.timeout(base * PATIENCE), append=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
        timeout=120,
    )


@functools.cache
def reference_frames(path: Path) -> tuple[tuple[Decimal, bool], ...]:
    """Every video frame of ``path`` from a real decode (not packets): its presentation
    time on FFmpeg's default timeline (the container start subtracted) and whether it is
    a keyframe, in presentation order. The reference the tests check vfe against."""

    def ffprobe(*args: str) -> list[str]:
        return subprocess.run(
            ["ffprobe", "-v", "quiet", *args, "-of", "csv=p=0", str(path)],
            capture_output=True, check=True, text=True, timeout=60,
        ).stdout.splitlines()  # fmt: skip

    (start,) = ffprobe("-show_entries", "format=start_time")
    lines = ffprobe("-select_streams", "v:0", "-show_frames",
                    "-show_entries", "frame=key_frame,best_effort_timestamp_time")  # fmt: skip
    # side data (an SEI message) may follow the fields on a line, after a comma, or take
    # lines of its own (MPEG-2's "GOP timecode,…"); an AVI states no start, and the last
    # frames of one with B-frames get no time (N/A): left out
    rows = [line.split(",") for line in lines if line.split(",")[0] in ("0", "1")]
    zero = Decimal(0 if start == "N/A" else start)
    frames = sorted((Decimal(t) - zero, key == "1") for key, t, *_ in rows if t != "N/A")
    assert frames, "the reference decode found no frames"
    return tuple(frames)


class Media:
    """Generates test clips on first use and keeps them for the session."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def clip(
        self,
        name: str,
        *,
        duration: float = 2.0,
        rate: str = "25",
        size: str = "320x240",
        codec: str = "libx264",
        gop: int | None = None,
        audio: bool = False,
        extra: tuple[str, ...] = (),
    ) -> Path:
        """A testsrc2 clip; same name, same clip (made once per session)."""
        path = self.folder / name
        if path.exists():
            return path
        args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={duration}"]
        if audio:
            args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={duration}"]
        args += ["-c:v", codec, "-pix_fmt", "yuv420p"]
        if codec == "libx264":
            args += ["-preset", "ultrafast"]
        if codec == "libvpx-vp9":
            args += ["-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k"]
        if gop is not None:
            args += ["-g", str(gop)]
        if audio:
            args += ["-c:a", "aac" if path.suffix == ".mp4" else "libopus", "-shortest"]
        run_ffmpeg(*args, *extra, str(path))
        return path

    def standard(self) -> Path:
        """2 s, 25 fps, 320x240 H.264: the workhorse clip."""
        return self.clip("standard.mp4")

    def long(self) -> Path:
        """20 s, 25 fps, small: long enough to cancel or kill mid-run."""
        return self.clip("long.mp4", duration=20, size="640x360")

    def slow(self) -> Path:
        """30 s of 1280x720: at interval 0.04 a job runs for seconds even on an idle
        machine, long enough to cancel, time out, kill or signal it mid-run."""
        return self.clip("slow-720p.mp4", duration=30, size="1280x720")

    def cuts(self) -> Path:
        """4 s, 25 fps, 320x240 H.264 of five shots with hard cuts between them: red 1.2 s,
        testsrc2 0.8 s, blue 1.0 s, smptebars 0.2 s, white 0.8 s, so cuts at 1.2, 2.0, 3.0
        and 3.2 (FFmpeg's scene scores there: about 0.57, 0.80, 0.64 and 1.0; under 0.05
        elsewhere). Scene mode with min_gap 0 finds the first frame and every cut
        (``CUTS_NO_GAP``); with the default min_gap of 1 s, 2.0 (0.8 s after 1.2) and 3.2
        (0.2 s after 3.0) are too close to the frame kept before them (``CUTS``)."""
        path = self.folder / "cuts.mp4"
        if not path.exists():
            shots = [
                "color=c=red:s=320x240:r=25:d=1.2",
                "testsrc2=s=320x240:r=25:d=0.8",
                "color=c=blue:s=320x240:r=25:d=1.0",
                "smptebars=s=320x240:r=25:d=0.2",
                "color=c=white:s=320x240:r=25:d=0.8",
            ]
            graph = ";".join(f"{shot}[s{n}]" for n, shot in enumerate(shots))
            graph += ";" + "".join(f"[s{n}]" for n in range(len(shots)))
            graph += f"concat=n={len(shots)}"
            run_ffmpeg(
                "-f", "lavfi", "-i", graph, "-c:v", "libx264", "-preset", "ultrafast",
                "-pix_fmt", "yuv420p", str(path),
            )  # fmt: skip
        return path

    CUTS = (0.0, 1.2, 3.0)  # media.cuts() in scene mode with the defaults (0.3, 1 s)
    CUTS_NO_GAP = (0.0, 1.2, 2.0, 3.0, 3.2)  # the same with min_gap 0

    def truncated(self) -> Path:
        path = self.folder / "truncated.mp4"
        if not path.exists():
            whole = self.clip("to-truncate.mp4", duration=3).read_bytes()
            path.write_bytes(whole[: len(whole) // 2])
        return path

    def not_a_video(self) -> Path:
        path = self.folder / "notes.mp4"
        if not path.exists():
            path.write_text("this is a text file, not a video\n" * 50)
        return path

    def audio_only(self) -> Path:
        path = self.folder / "tone.m4a"
        if not path.exists():
            run_ffmpeg(
                "-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:a", "aac", str(path)
            )
        return path


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    if shutil.which("ffmpeg") is None:
        pytest.fail("FFmpeg is not installed; run ./scripts/test, which installs it")
    return Media(tmp_path_factory.mktemp("media"))


@pytest.fixture
def videos(tmp_path: Path) -> Path:
    """This test's VIDEOS_BASE_PATH."""
    folder = tmp_path / "videos"
    folder.mkdir()
    return folder


def stored_frames(folder: Path) -> set[Path]:
    """The frame objects a local storage folder holds (``ab/<sha256>.jpg``), work
    folders and the storage's temporary files left out."""
    return {
        p
        for p in folder.glob("[0-9a-f][0-9a-f]/*")
        if p.is_file() and not p.name.startswith(".tmp-")
    }


def place(video: Path, videos: Path, name: str | None = None) -> str:
    """Copy (hard-link when possible) ``video`` into the videos folder; return its name."""
    target = videos / (name or video.name)
    if not target.exists():
        try:
            os.link(video, target)
        except OSError:
            shutil.copyfile(video, target)
    return target.name


def vfe_env(tmp_path: Path, videos: Path, **extra: Any) -> dict[str, str]:
    """Environment for a vfe process rooted in ``tmp_path``; Redis off unless given."""
    env = {
        "DATABASE_PATH": str(tmp_path / "runtime" / "db" / "metadata.db"),
        "FRAMES_BASE_PATH": str(tmp_path / "runtime" / "frames"),
        "VIDEOS_BASE_PATH": str(videos),
        "UPLOADS_PATH": str(tmp_path / "runtime" / "uploads"),
        "LOG_PATH": str(tmp_path / "runtime" / "logs" / "app.log"),
        "REDIS_PORT": str(free_port()),  # nothing listens there: memory cache
        "REDIS_RETRY_SECONDS": "0.5",
        "SSE_HEARTBEAT_SECONDS": "1",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture
def make_settings(tmp_path: Path, videos: Path) -> Callable[..., Settings]:
    def make(**extra: Any) -> Settings:
        return Settings.from_env(vfe_env(tmp_path, videos, **extra))

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


class AppClient:
    """The app running in-process with its lifespan; ``http`` is an httpx client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://vfe.test"
        )
        self._lifespan: Any = None

    async def __aenter__(self) -> AppClient:
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()
        await self._lifespan.__aexit__(None, None, None)

    @property
    def services(self) -> Any:
        return self.app.state.services

    async def submit(self, video_source: str, interval: float = 1.0, **fields: Any) -> str:
        """POST a job; ``interval`` is sent unless ``fields`` choose another mode (a mode's
        field given in another mode is refused)."""
        other = {"mode", "fps", "count", "timestamps", "scene_threshold"} & set(fields)
        sampling = {} if other else {"interval": interval}
        res = await self.http.post(
            "/video-job", json={"video_source": video_source, **sampling, **fields}
        )
        assert res.status_code == 200, res.text
        job_id: str = res.json()["job_id"]
        return job_id

    async def wait(self, job_id: str, limit: float = 120.0) -> dict[str, Any]:
        """Poll until the job is finished (for up to ``patience(limit)`` s); return its
        status document."""

        async def finished() -> dict[str, Any] | None:
            res = await self.http.get(f"/job-status/{job_id}")
            assert res.status_code == 200, res.text
            body: dict[str, Any] = res.json()
            return body if body["status"] in ("completed", "failed", "cancelled") else None

        done: dict[str, Any] = await wait_until_async(
            finished, f"job {job_id} to finish", within=limit
        )
        return done


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[[Settings], AppClient]]:
    """Factory for in-process apps; every app made is shut down after the test."""
    opened: list[AppClient] = []

    def make(settings: Settings) -> AppClient:
        client = AppClient(settings)
        opened.append(client)
        return client

    yield make
    for client in opened:
        if client._lifespan is not None:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AppClient]:
    async with AppClient(settings) as running:
        yield running


class RedisServer:
    """A real redis-server on a free port, with no persistence; can be stopped and restarted."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed; run ./scripts/test, which installs it")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + patience(30)
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 1),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=patience(30))
            self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL cluster for the whole session (about 2 s to make); each test
    takes a database of its own from ``postgres_url``."""
    server = PostgresServer(free_port())
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(params=["local", "s3"])
def storage_settings(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> Settings:
    """Settings storing frames in a local folder, then (a second run of the test) under
    a prefix of its own in the real S3-compatible server's bucket."""
    if request.param == "local":
        return make_settings()
    server: Any = request.getfixturevalue("s3_server")
    return make_settings(**server.vfe_env(f"t-{uuid.uuid4().hex[:12]}"))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """One real S3-compatible server (SeaweedFS) for the session; each test takes a prefix
    of its own in its bucket."""
    from tests.seaweed import SeaweedServer

    server = SeaweedServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty database on the session's PostgreSQL."""
    return postgres_server.create_database()


class LiveServer:
    """vfe served by a real uvicorn in a subprocess (``python -m vfe serve``, or another
    ``command``: ``("serve", "--api-only")``, ``("worker",)``)."""

    def __init__(
        self, env: dict[str, str], log: Path, command: tuple[str, ...] = ("serve",)
    ) -> None:
        self.command = command
        self.port = free_port()
        self.env = {**os.environ, **env, "HOST": "127.0.0.1", "PORT": str(self.port)}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vfe", *self.command],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + patience(timeout)
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=5).status_code in (200, 503):
                    return
            time.sleep(0.05)
        raise RuntimeError("vfe did not start:\n" + self.log.read_text()[-3000:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Signal the server and wait for it (up to ``patience(timeout)`` s); returns its
        exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=patience(timeout))
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crash or an OOM kill would."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def finished(self, job_id: str) -> dict[str, Any] | None:
        """The job's status document once it has finished (else None): for ``wait_until``."""
        body: dict[str, Any] = httpx.get(f"{self.url}/job-status/{job_id}", timeout=30).json()
        return body if body["status"] in ("completed", "failed", "cancelled") else None


@pytest.fixture
def live_server(tmp_path: Path, videos: Path) -> Iterator[Callable[..., LiveServer]]:
    """Factory: ``live_server(**env)`` starts a server; all are stopped after the test."""
    started: list[LiveServer] = []

    def start(*command: str, **extra: Any) -> LiveServer:
        log = tmp_path / ("server.log" if not started else f"server-{len(started)}.log")
        server = LiveServer(vfe_env(tmp_path, videos, **extra), log, command or ("serve",))
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc is not None:
            server.stop()
