"""Hostile input, one attack per test: paths, ids, uploads, URLs, crafted files, API keys
and Idempotency-Key. Each is answered with a clear 4xx, and nothing outside the service's
folders is read, written or reached."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.server
import json
import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import AppClient, LiveServer, Media, place, run_ffmpeg
from vfe.auth import UNAUTHORIZED
from vfe.settings import Settings

KEY = "s3cret-key-for-tests"
OUTSIDE = "outside secret"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file next to the videos folder that no request may reach."""
    path = tmp_path / "secret.mp4"
    path.write_text(OUTSIDE)
    return path


async def submit(app: AppClient, **body: Any) -> httpx.Response:
    """POST a job, at interval 1 unless ``body`` names a mode."""
    sampling = {} if "mode" in body else {"interval": 1}
    return await app.http.post("/video-job", json={**sampling, **body})


def assert_refused_path(res: httpx.Response) -> None:
    assert res.status_code == 400, res.text
    assert "inside the server's videos folder" in res.json()["detail"]
    assert OUTSIDE not in res.text


# --- local paths -----------------------------------------------------------------------


async def test_dot_dot_paths_are_refused(client: AppClient, outside: Path):
    for source in ("../secret.mp4", "a/../../secret.mp4", "./../secret.mp4", "..", "../"):
        assert_refused_path(await submit(client, video_source=source))


async def test_absolute_paths_outside_the_videos_folder_are_refused(
    client: AppClient, outside: Path
):
    for source in (str(outside), "/etc/passwd", "/proc/self/environ", "/dev/zero"):
        assert_refused_path(await submit(client, video_source=source))


async def test_a_symlink_that_points_out_is_refused(
    client: AppClient, outside: Path, videos: Path, media: Media
):
    (videos / "escape.mp4").symlink_to(outside)
    (videos / "dir").symlink_to(outside.parent, target_is_directory=True)
    assert_refused_path(await submit(client, video_source="escape.mp4"))
    assert_refused_path(await submit(client, video_source="dir/secret.mp4"))
    listed = (await client.http.get("/videos")).json()["videos"]
    assert [v["path"] for v in listed] == []


# --- ids and names in the URL path ----------------------------------------------------------

TRAVERSALS = (
    "..%2F..%2Fdb%2Fmetadata.db",
    "%2e%2e%2f%2e%2e%2fdb%2fmetadata.db",
    "..%252F..%252Fetc%252Fpasswd",
    "%2E%2E",
    "..%5C..%5Cwin.ini",
    "%00",
)


async def test_url_encoded_traversal_in_every_path_parameter(client: AppClient, media: Media):
    job_id = await client.submit(place(media.standard(), client.settings.videos_base_path))
    await client.wait(job_id)
    frame = (await client.http.get(f"/frames/{job_id}")).json()["frames"][0]["filename"]
    assert (await client.http.get(f"/frames/{job_id}/{frame}")).status_code == 200
    for bad in TRAVERSALS:
        for path in (
            f"/job-status/{bad}",
            f"/job-status/{bad}/events",
            f"/frames/{bad}",
            f"/frames/{bad}/{frame}",
            f"/frames/{job_id}/{bad}",
            f"/frames/{job_id}/{bad}{frame}",
            f"/job/{bad}/frames.zip",
            f"/dashboard/recent-frames?job_id={bad}",
        ):
            res = await client.http.get(path)
            assert res.status_code in (404, 200), (path, res.status_code)
            if res.status_code == 200:  # recent-frames: a filter that matches nothing
                assert res.json()["frames"] == [], path
            else:
                assert res.json() == {"detail": res.json()["detail"]}
                assert "found" in res.json()["detail"].lower(), path
            assert b"SQLite format" not in res.content and b"root:" not in res.content


async def test_delete_with_a_traversal_id_removes_nothing(client: AppClient, media: Media):
    job_id = await client.submit(place(media.standard(), client.settings.videos_base_path))
    await client.wait(job_id)
    frames_root = client.settings.frames_base_path
    before = sorted(p for p in frames_root.rglob("*"))
    for bad in (*TRAVERSALS, "..", f"{job_id}%2F..", f"..%2F{job_id}", "%2A"):
        res = await client.http.delete(f"/job/{bad}")
        assert res.status_code in (404, 405), (bad, res.status_code)
    assert sorted(p for p in frames_root.rglob("*")) == before
    assert client.settings.database_path.is_file()
    assert (await client.http.get(f"/job-status/{job_id}")).json()["status"] == "completed"


# --- uploads -----------------------------------------------------------------------------


async def test_an_upload_with_a_hostile_file_name_is_stored_under_a_generated_name(
    client: AppClient, media: Media, tmp_path: Path
):
    hostile = "../../../../tmp/evil<img src=x onerror=alert(1)>.mp4"
    res = await client.http.post(
        "/video-job",
        data={"interval": "1"},
        files={"file": (hostile, media.standard().read_bytes(), "video/mp4")},
    )
    assert res.status_code == 200, res.text
    job = await client.wait(res.json()["job_id"])
    assert job["status"] == "completed"
    assert job["video_source"] == "evil<img src=x onerror=alert(1)>.mp4"  # text, no path
    stored = list(client.settings.uploads_path.iterdir())  # kept under its SHA-256
    digest = hashlib.sha256(media.standard().read_bytes()).hexdigest()
    assert [p.name for p in stored] == [digest]
    everything = await asyncio.to_thread(lambda: [p.name for p in tmp_path.rglob("*")])
    assert not [name for name in everything if "evil" in name]
    assert "source_path" not in job and str(client.settings.uploads_path) not in str(job)


def test_an_oversized_upload_is_cut_off_while_streaming_and_memory_stays_flat(
    live_server: Callable[..., LiveServer], tmp_path: Path
):
    server = live_server(MAX_UPLOAD_MB=1)
    assert server.proc is not None
    process = psutil.Process(server.proc.pid)
    rss_before = process.memory_info().rss
    boundary = "vfe-test-boundary"
    head = (
        f"POST /video-job HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
    ).encode()
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="big.mp4"\r\nContent-Type: video/mp4\r\n\r\n'
    ).encode()
    chunk = b"\0" * (256 * 1024)
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + b"%x\r\n%s\r\n" % (len(part), part))
        # Up to 100 MiB, far past the 1 MiB cap, with no Content-Length; stop once the
        # server has answered.
        while sent < 100 * 1024 * 1024:
            if select.select([sock], [], [], 0)[0]:
                answer = sock.recv(65536)
                break
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                break  # the server closed the connection after answering
            sent += len(chunk)
        while b"}" not in answer:  # the whole answer: its status line up to the JSON end
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"MAX_UPLOAD_MB" in answer
    assert sent < 50 * 1024 * 1024, f"{sent / 2**20:.0f} MiB were sent before the answer"
    growth = process.memory_info().rss - rss_before
    assert growth < 30 * 1024 * 1024, f"server memory grew by {growth / 2**20:.0f} MiB"
    uploads = tmp_path / "runtime" / "uploads"
    assert list(uploads.iterdir()) == []
    # The same cap answered at once from Content-Length, without reading the body.
    res = httpx.post(
        f"{server.url}/video-job",
        files={"file": ("big.mp4", b"\0" * (3 * 1024 * 1024), "video/mp4")},
        timeout=30,
    )
    assert res.status_code == 413
    assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200


async def test_a_text_file_named_mp4_is_refused_before_a_job_exists(
    client: AppClient, media: Media
):
    name = place(media.not_a_video(), client.settings.videos_base_path)
    res = await submit(client, video_source=name)
    assert res.status_code == 400, res.text
    assert "not a video" in res.json()["detail"]
    res = await client.http.post(
        "/video-job",
        data={"interval": "1"},
        files={"file": ("notes.mp4", media.not_a_video().read_bytes(), "video/mp4")},
    )
    assert res.status_code == 400, res.text
    assert "not a video" in res.json()["detail"]
    assert (await client.http.get("/jobs")).json()["count"] == 0
    assert list(client.settings.uploads_path.iterdir()) == []  # the upload is gone too


async def test_a_huge_resolution_header_is_refused_before_decoding(client: AppClient, media: Media):
    # A few kilobytes that decode to 8192x8192 pictures: 67 M pixels, over the 8K limit.
    path = client.settings.videos_base_path / "huge.mp4"
    run_ffmpeg("-f", "lavfi", "-i", "color=c=black:s=8192x8192:r=1:d=1", "-c:v", "libx264",
               "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path))  # fmt: skip
    assert path.stat().st_size < 200_000
    res = await submit(client, video_source="huge.mp4")
    assert res.status_code == 422, res.text
    (error,) = res.json()["detail"]
    assert error["loc"] == ["body", "video_source"]
    assert "8192x8192" in error["msg"] and "MAX_FRAME_PIXELS" in error["msg"]
    assert (await client.http.get("/jobs")).json()["count"] == 0


# --- URL sources ---------------------------------------------------------------------------


class _Site(http.server.ThreadingHTTPServer):
    """A real HTTP server on a loopback address: files by path, redirects by table."""

    daemon_threads = True

    def __init__(self, host: str, files: dict[str, bytes], redirects: dict[str, str]):
        self.files = files
        self.redirects = redirects
        super().__init__((host, 0), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Site

    def do_GET(self) -> None:
        if self.path in self.server.redirects:
            self.send_response(302)
            self.send_header("Location", self.server.redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def site(host: str, files: dict[str, bytes], redirects: dict[str, str] | None = None):
    server = _Site(host, files, redirects or {})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def trusted(make_settings: Callable[..., Settings]) -> Settings:
    """Settings where 127.0.0.2 counts as a public host and every other private one not."""
    return make_settings(ALLOW_PRIVATE_URLS="127.0.0.2/32")


async def test_a_url_to_loopback_is_refused(client: AppClient, media: Media):
    with site("127.0.0.1", {"/clip.mp4": media.standard().read_bytes()}) as local:
        for url in (
            f"{local.url}/clip.mp4",
            f"http://localhost:{local.server_address[1]}/clip.mp4",
        ):
            res = await submit(client, video_source=url)
            assert res.status_code == 400, res.text
            assert "private or local address" in res.json()["detail"]
            assert "ALLOW_PRIVATE_URLS" in res.json()["detail"]
    assert (await client.http.get("/jobs")).json()["count"] == 0


async def test_a_url_to_the_cloud_metadata_address_is_refused(client: AppClient):
    started = time.monotonic()
    res = await submit(client, video_source="http://169.254.169.254/latest/meta-data/")
    assert res.status_code == 400, res.text
    assert "private or local address" in res.json()["detail"]
    assert time.monotonic() - started < 5  # refused before any connection attempt


async def test_a_redirect_to_loopback_or_metadata_is_refused(
    make_client: Callable[[Settings], AppClient], trusted: Settings, media: Media
):
    with site("127.0.0.1", {"/clip.mp4": media.standard().read_bytes()}) as local:
        redirects = {
            "/to-loopback.mp4": f"{local.url}/clip.mp4",
            "/to-metadata.mp4": "http://169.254.169.254/latest/meta-data/",
        }
        with site("127.0.0.2", {}, redirects) as public:
            async with make_client(trusted) as app:
                for path in redirects:
                    res = await submit(app, video_source=f"{public.url}{path}")
                    assert res.status_code == 400, (path, res.text)
                    assert "private or local address" in res.json()["detail"]
                assert (await app.http.get("/jobs")).json()["count"] == 0
                assert list(app.settings.uploads_path.iterdir()) == []


async def test_a_url_on_an_allowed_host_is_downloaded_and_deleted_with_its_job(
    make_client: Callable[[Settings], AppClient], trusted: Settings, media: Media
):
    with site("127.0.0.2", {"/v/clip.mp4": media.standard().read_bytes()}) as public:
        async with make_client(trusted) as app:
            res = await submit(app, video_source=f"{public.url}/v/clip.mp4")
            assert res.status_code == 200, res.text
            job = await app.wait(res.json()["job_id"])
            assert job["status"] == "completed" and job["total_frames"] == 2
            assert job["source_type"] == "url"
            (copy,) = app.settings.uploads_path.iterdir()
            assert (await app.http.delete(f"/job/{job['job_id']}")).status_code == 200
            assert not copy.exists()


async def test_url_sources_can_be_turned_off(make_client: Callable[..., AppClient], make_settings):
    async with make_client(make_settings(ALLOW_URL_SOURCES="false")) as app:
        res = await submit(app, video_source="https://example.com/clip.mp4")
        assert res.status_code == 400
        assert "ALLOW_URL_SOURCES" in res.json()["detail"]


async def test_an_hls_playlist_pointing_at_a_local_file_is_refused(
    make_client: Callable[[Settings], AppClient],
    trusted: Settings,
    media: Media,
    outside: Path,
):
    real = place(media.standard(), trusted.videos_base_path)
    playlist = (
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
        f"#EXTINF:2.0,\nfile://{trusted.videos_base_path / real}\n"
        f"#EXTINF:2.0,\nfile://{outside}\n#EXT-X-ENDLIST\n"
    ).encode()
    (trusted.videos_base_path / "playlist.mp4").write_bytes(playlist)
    with site("127.0.0.2", {"/live.m3u8": playlist, "/live.mp4": playlist}) as public:
        async with make_client(trusted) as app:
            for source in ("playlist.mp4", f"{public.url}/live.m3u8", f"{public.url}/live.mp4"):
                res = await submit(app, video_source=source)
                assert res.status_code == 400, (source, res.text)
                assert "not a video" in res.json()["detail"]
                assert OUTSIDE not in res.text
            assert (await app.http.get("/jobs")).json()["count"] == 0


# --- API keys --------------------------------------------------------------------------------


@pytest.fixture
def keyed(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(API_KEYS=f"other-key, {KEY}")


async def test_a_missing_or_wrong_api_key_is_401_and_tells_nothing(
    make_client: Callable[[Settings], AppClient], keyed: Settings, media: Media
):
    name = place(media.standard(), keyed.videos_base_path)
    async with make_client(keyed) as app:
        attempts: list[dict[str, str]] = [
            {},
            {"X-API-Key": "wrong"},
            {"X-API-Key": KEY[:-1]},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Basic {KEY}"},
            {"Authorization": KEY},
            {"Cookie": "vfe_api_key=wrong"},
        ]
        answers = set()
        for headers in attempts:
            for method, path in (
                ("GET", "/jobs"),
                ("POST", "/video-job"),
                ("GET", "/job-status/00000000-0000-4000-8000-000000000000"),
                ("DELETE", "/job/00000000-0000-4000-8000-000000000000"),
                ("GET", "/events"),
                ("GET", "/videos"),
            ):
                res = await app.http.request(
                    method, path, headers=headers, json={"video_source": name}
                )
                assert res.status_code == 401, (headers, method, path)
                assert res.headers["www-authenticate"].startswith("Bearer")
                answers.add(res.text)
                assert KEY not in res.text and "other-key" not in res.text
        assert answers == {f'{{"detail": "{UNAUTHORIZED}"}}'}  # one answer for all
        assert (await app.http.get("/jobs", headers={"X-API-Key": KEY})).status_code == 200
        assert (await app.http.get("/jobs", headers={"X-API-Key": "other-key"})).status_code == 200
        assert (await app.http.get("/jobs", headers={"Authorization": f"Bearer {KEY}"})).json()[
            "count"
        ] == 0
        assert (await app.http.get("/health")).status_code == 200
        assert (await app.http.get("/")).status_code == 200
        assert (await app.http.get("/static/app.js")).status_code == 200


async def test_the_key_cookie_works_for_reads_only(
    make_client: Callable[[Settings], AppClient], keyed: Settings, media: Media
):
    name = place(media.standard(), keyed.videos_base_path)
    async with make_client(keyed) as app:
        cookie = {"Cookie": f"vfe_api_key={KEY}"}
        assert (await app.http.get("/jobs", headers=cookie)).status_code == 200
        res = await app.http.post("/video-job", json={"video_source": name}, headers=cookie)
        assert res.status_code == 401  # a form on another site cannot submit with it
        res = await app.http.post(
            "/video-job", json={"video_source": name}, headers={"X-API-Key": KEY}
        )
        assert res.status_code == 200
        res = await app.http.delete(f"/job/{res.json()['job_id']}", headers=cookie)
        assert res.status_code == 401


async def test_api_keys_never_reach_the_log(
    make_client: Callable[[Settings], AppClient], keyed: Settings
):
    async with make_client(keyed) as app:
        await app.http.get("/jobs", headers={"X-API-Key": KEY})
        await app.http.get("/jobs", headers={"Authorization": "Bearer guess-" + KEY})
    assert "s3cret" not in keyed.log_path.read_text()
    assert "s3cret" not in repr(keyed)


# --- Idempotency-Key -------------------------------------------------------------------------


async def test_the_same_idempotency_key_and_body_return_the_same_job(
    client: AppClient, media: Media
):
    name = place(media.standard(), client.settings.videos_base_path)
    headers = {"Idempotency-Key": "order-42"}
    body = {"video_source": name, "interval": 0.5}
    first = await client.http.post("/video-job", json=body, headers=headers)
    again = await client.http.post("/video-job", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json()["job_id"] == again.json()["job_id"]
    assert "already" in again.json()["message"]
    assert (await client.http.get("/jobs")).json()["count"] == 1
    # Key order and defaults do not make a body different.
    same = {"interval": 0.5, "video_source": name, "mode": "interval"}
    res = await client.http.post("/video-job", json=same, headers=headers)
    assert res.json()["job_id"] == first.json()["job_id"]


async def test_the_same_idempotency_key_with_another_body_is_409(client: AppClient, media: Media):
    name = place(media.standard(), client.settings.videos_base_path)
    headers = {"Idempotency-Key": "order-43"}
    res = await client.http.post("/video-job", json={"video_source": name}, headers=headers)
    assert res.status_code == 200
    res = await client.http.post(
        "/video-job", json={"video_source": name, "interval": 2}, headers=headers
    )
    assert res.status_code == 409
    assert "Idempotency-Key" in res.json()["detail"]
    assert (await client.http.get("/jobs")).json()["count"] == 1


async def test_idempotent_uploads_compare_the_file_bytes(client: AppClient, media: Media):
    headers = {"Idempotency-Key": "upload-1"}

    async def send(content: bytes) -> httpx.Response:
        return await client.http.post(
            "/video-job",
            data={"interval": "1"},
            files={"file": ("clip.mp4", content, "video/mp4")},
            headers=headers,
        )

    first = await send(media.standard().read_bytes())
    again = await send(media.standard().read_bytes())
    assert first.json()["job_id"] == again.json()["job_id"]
    other = await send(media.clip("other.mp4", duration=1).read_bytes())
    assert other.status_code == 409
    assert len(list(client.settings.uploads_path.iterdir())) == 1  # repeats left no copy


async def test_racing_requests_with_one_key_make_one_job(client: AppClient, media: Media):
    name = place(media.standard(), client.settings.videos_base_path)
    headers = {"Idempotency-Key": "race"}
    answers = await asyncio.gather(
        *(
            client.http.post("/video-job", json={"video_source": name}, headers=headers)
            for _ in range(5)
        )
    )
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["job_id"] for a in answers}) == 1
    assert (await client.http.get("/jobs")).json()["count"] == 1
    messages = sorted(a.json()["message"] for a in answers)  # one made it, four repeated it
    assert messages == ["Job already submitted with this Idempotency-Key"] * 4 + [
        "Job submitted successfully"
    ]


async def test_a_bad_idempotency_key_is_422(client: AppClient, media: Media):
    name = place(media.standard(), client.settings.videos_base_path)
    for key in ("", "x" * 201, "tab\there"):
        res = await client.http.post(
            "/video-job", json={"video_source": name}, headers={"Idempotency-Key": key}
        )
        assert res.status_code == 422, key
        assert res.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]


async def test_a_key_whose_job_was_deleted_makes_a_new_job(client: AppClient, media: Media):
    name = place(media.standard(), client.settings.videos_base_path)
    headers = {"Idempotency-Key": "again"}
    first = await client.http.post("/video-job", json={"video_source": name}, headers=headers)
    await client.http.delete(f"/job/{first.json()['job_id']}")
    second = await client.http.post("/video-job", json={"video_source": name}, headers=headers)
    assert second.status_code == 200
    assert second.json()["job_id"] != first.json()["job_id"]


# --- limits ----------------------------------------------------------------------------------


async def test_a_job_over_max_frames_per_job_is_422_and_scene_mode_is_capped(
    make_client: Callable[[Settings], AppClient],
    make_settings: Callable[..., Settings],
    media: Media,
):
    settings = make_settings(MAX_FRAMES_PER_JOB="10")
    name = place(media.standard(), settings.videos_base_path)  # 2 s of 25 fps
    cuts = place(media.cuts(), settings.videos_base_path)
    async with make_client(settings) as app:
        res = await submit(app, video_source=name, interval=0.1)  # 20 frames
        assert res.status_code == 422, res.text
        (error,) = res.json()["detail"]
        assert error["loc"] == ["body", "interval"]
        assert "20 frames" in error["msg"] and "MAX_FRAMES_PER_JOB" in error["msg"]
        res = await submit(app, video_source=name, interval=0.1, max_frames=10)
        assert res.status_code == 200, res.text
        res = await submit(app, video_source=name, mode="count", count=11)
        assert res.status_code == 422 and res.json()["detail"][0]["loc"] == ["body", "count"]
    capped = make_settings(MAX_FRAMES_PER_JOB="2")
    async with make_client(capped) as app:
        res = await submit(app, video_source=cuts, mode="scene", min_gap=0)
        job = await app.wait(res.json()["job_id"])
        assert job["status"] == "completed" and job["processed_frames"] == 2


async def test_a_video_over_max_video_duration_is_422(
    make_client: Callable[[Settings], AppClient],
    make_settings: Callable[..., Settings],
    media: Media,
):
    settings = make_settings(MAX_VIDEO_DURATION_SECONDS="1.5")
    async with make_client(settings) as app:
        res = await submit(app, video_source=place(media.standard(), settings.videos_base_path))
        assert res.status_code == 422, res.text
        assert "MAX_VIDEO_DURATION_SECONDS" in res.json()["detail"][0]["msg"]


async def test_a_body_over_max_body_kb_is_413(
    make_client: Callable[[Settings], AppClient], make_settings: Callable[..., Settings]
):
    async with make_client(make_settings(MAX_BODY_KB="1")) as app:
        res = await submit(app, video_source="x" * 2000)
        assert res.status_code == 413
        assert "MAX_BODY_KB" in res.json()["detail"]


# --- bodies that once gave a 500, against a real server ----------------------------------


def test_hostile_bodies_are_4xx_on_a_real_server(
    live_server: Callable[..., LiveServer], media: Media, videos: Path
):
    server = live_server()
    name = place(media.standard(), videos)
    post = lambda body: httpx.post(  # noqa: E731
        f"{server.url}/video-job", content=body,
        headers={"content-type": "application/json"}, timeout=60,
    )  # fmt: skip
    deep = post(b"[" * 20000 + b"]" * 20000)  # 40 KB, under MAX_BODY_KB
    assert deep.status_code == 400 and "nested too deeply" in deep.json()["detail"]
    long_int = post(b'{"video_source": "%s", "count": %s}' % (name.encode(), b"9" * 5000))
    assert long_int.status_code == 422, long_int.text
    assert long_int.json()["detail"][0]["loc"] == ["body", "count"]
    tiny = post(b'{"video_source": "%s", "count": 2, "end": 1e-320}' % name.encode())
    assert tiny.status_code == 422, tiny.text
    assert "end must be at least" in tiny.json()["detail"][0]["msg"]
    slash = httpx.get(f"{server.url}/job-status/{'1' * 8}-1111-1111-1111-{'1' * 12}/",
                      timeout=30, follow_redirects=False)  # fmt: skip
    assert slash.status_code == 404 and "location" not in slash.headers
    # A request the HTTP server itself cannot parse is refused in the same JSON shape.
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw:
        raw.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n")
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head
    assert json.loads(body) == {"detail": "Invalid HTTP request received."}
    assert httpx.get(f"{server.url}/health/live", timeout=30).status_code == 200  # alive
