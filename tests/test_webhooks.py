"""Webhooks, end to end: a real HTTP receiver on 127.0.0.1 (``http.server`` in a thread)
gets signed POSTs from a real vfe (in-process, a ``vfe serve`` process, or two
deliverers on one PostgreSQL), and verifies them with the ``standardwebhooks`` library.

The receiver is on a loopback address, so the tests that deliver allow private URLs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from tests.conftest import (
    ROOT,
    AppClient,
    LiveServer,
    Media,
    patience,
    place,
    vfe_env,
    wait_until,
    wait_until_async,
)
from tests.records import make_job
from vfe.cache import MemoryCache
from vfe.events import EventBus
from vfe.metrics import Metrics
from vfe.models import Delivery, DeliveryStatus, JobStatus
from vfe.settings import Settings
from vfe.store.postgres import PostgresStore
from vfe.store.sqlite import SqliteStore
from vfe.webhooks import Deliverer, backoff

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HANG = 0  # an answer that never comes (until the receiver closes)
HOOKS = {"WEBHOOK_SECRET": SECRET, "ALLOW_PRIVATE_URLS": "true"}


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int  # what the receiver answered

    def verified(self) -> dict[str, Any]:
        """The payload, after the library checked its signature (raises if it is wrong)."""
        payload: dict[str, Any] = Webhook(SECRET).verify(self.body, self.headers)
        return payload


class Receiver:
    """A webhook receiver on a port of 127.0.0.1 that is taken from the start but refuses
    connections until ``up``. The n-th request of a webhook-id is answered ``answers[n]``
    (200 past the list; ``HANG``: no answer until ``close``)."""

    def __init__(self, answers: tuple[int, ...] = ()) -> None:
        self.answers = answers
        self.got: list[Received] = []
        self.lock = threading.Lock()
        self.closing = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    seen = sum(r.headers["webhook-id"] == headers["webhook-id"]
                               for r in receiver.got)  # fmt: skip
                    status = receiver.answers[seen] if seen < len(receiver.answers) else 200
                    receiver.got.append(Received(self.path, headers, body, time.time(), status))
                if status == HANG:
                    receiver.closing.wait(patience(120))
                    self.close_connection = True
                    return
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self.server.server_bind()  # the port is ours; nothing listens yet: refused
        self.port = int(self.server.server_address[1])
        self.thread: threading.Thread | None = None

    def up(self) -> Receiver:
        self.server.server_activate()
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def close(self) -> None:
        self.closing.set()
        if self.thread is not None:
            self.server.shutdown()
            self.thread.join()
        self.server.server_close()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.got)


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(answers: tuple[int, ...] = (), up: bool = True) -> Receiver:
        hook = Receiver(answers)
        made.append(hook)
        return hook.up() if up else hook

    yield make
    for hook in made:
        hook.close()


def metric(text: str, line: str) -> float:
    """The value of the sample ``line`` (name and labels) in a Prometheus text."""
    for row in text.splitlines():
        if row.startswith(line + " "):
            return float(row.split()[-1])
    raise AssertionError(f"{line} not in the metrics")


async def metrics_once(client: Any, line: str, value: float) -> str:
    """The /metrics text once the sample ``line`` reached ``value``: a delivery's row is
    written before its process counts it, so a poll of the row can be a moment early."""

    async def counted() -> str | None:
        text: str = (await client.http.get("/metrics")).text
        return text if metric(text, line) == value else None

    got: str = await wait_until_async(counted, f"{line} to reach {value:g}", within=30)
    return got


async def delivery_in(
    client: AppClient, job_id: str, *states: str, when: Callable[[Delivery], bool] = bool
) -> Delivery:
    """Wait until the job's webhook is in one of ``states`` (and ``when`` holds); return it."""

    async def check() -> Delivery | None:
        got: Delivery | None = await client.services.store.get_delivery(job_id)
        return got if got is not None and got.status in states and when(got) else None

    found: Delivery = await wait_until_async(check, f"the webhook of {job_id} {states}", every=0.01)
    return found


def test_backoff_grows_six_fold_with_jitter_and_spans_about_a_day() -> None:
    assert [round(backoff(n, 5.0, lambda: 0.5)) for n in range(1, 8)] == [
        5, 30, 180, 1080, 6480, 36000, 36000,
    ]  # fmt: skip
    assert backoff(1, 5.0, lambda: 0.0) == pytest.approx(4.0)  # -20%
    assert backoff(1, 5.0, lambda: 1.0) == pytest.approx(6.0)  # +20%
    assert sum(backoff(n, 5.0, lambda: 0.5) for n in range(1, 8)) / 3600 == pytest.approx(
        22.2, 0.01
    )


async def test_each_ended_job_gets_one_signed_webhook(
    make_client: Any, make_settings: Any, media: Media, videos: Path, receiver: Any
) -> None:
    hook = receiver()
    settings = make_settings(**HOOKS)
    # A job a crashed process left pending, whose video is gone: run again, it fails.
    options = {"mode": "interval", "webhook_url": hook.url("/failed")}
    failing = make_job(status=JobStatus.PENDING, created_at=time.time(), options=options,
                       video_source="gone.mp4", source_path=str(videos / "gone.mp4"))  # fmt: skip
    settings.ensure_dirs()
    seed = SqliteStore(settings.database_path)
    await seed.open()
    await seed.create_job(failing)
    await seed.close()
    async with make_client(settings) as client:
        done_id = await client.submit(
            place(media.standard(), videos), 1, webhook_url=hook.url("/completed")
        )
        cancel_id = await client.submit(
            place(media.long(), videos), 0.04, webhook_url=hook.url("/cancelled")
        )
        deleted = await client.http.delete(f"/job/{cancel_id}")
        assert deleted.json()["status"] == "cancelled"  # and the job is gone
        await client.wait(done_id)
        # the same frames again, for another receiver: completed at once, announced too
        reused_id = await client.submit(
            place(media.standard(), videos), 1, webhook_url=hook.url("/reused")
        )
        for job_id in (done_id, failing.id, reused_id):
            await delivery_in(client, job_id, "delivered")

        async def cancelled_announced_and_gone() -> bool:
            announced = any(r.path == "/cancelled" for r in hook.received())
            return announced and await client.services.store.get_delivery(cancel_id) is None

        # its job was deleted: once delivered, the webhook goes too
        await wait_until_async(cancelled_announced_and_gone, "the deleted job's webhook")
        status = (await client.http.get(f"/job-status/{done_id}")).json()
        listed = (await client.http.get("/jobs")).json()["jobs"]
        metrics = await metrics_once(client, 'vfe_webhooks_total{outcome="delivered"}', 4)
    hooks = {r.path: r for r in hook.received()}
    assert sorted(hooks) == ["/cancelled", "/completed", "/failed", "/reused"]  # one each
    assert len(hook.received()) == 4
    reused = hooks["/reused"].verified()
    assert (reused["job_id"], reused["status"]) == (reused_id, "completed")
    assert reused["plan"]["reused_from"] == done_id
    for path, job_id in (("/completed", done_id), ("/failed", failing.id),
                         ("/cancelled", cancel_id)):  # fmt: skip
        got = hooks[path]
        payload = got.verified()
        assert payload["job_id"] == job_id and payload["status"] == path[1:]
        assert got.headers["webhook-id"] == f"msg_{job_id}"
        assert got.headers["content-type"] == "application/json"
        assert abs(int(got.headers["webhook-timestamp"]) - got.at) < 5
    assert hooks["/failed"].verified()["error_message"] == "the video file is no longer there"
    # the body is the job as its status shows it; the status also shows the delivery
    webhook = status.pop("webhook")
    assert hooks["/completed"].verified() == {**status, "webhook": None}
    assert webhook["status"] == "delivered" and webhook["attempts"] == 1
    assert webhook["last_error"] is None and webhook["delivered_at"] is not None
    shown = {job["job_id"]: job["webhook"] for job in listed}  # the list shows them too
    assert shown[done_id] == webhook and shown[failing.id]["status"] == "delivered"
    assert metric(metrics, 'vfe_webhooks_total{outcome="delivered"}') == 4
    assert metric(metrics, 'vfe_webhook_attempts_total{result="ok"}') == 4


async def test_receiver_down_then_failing_then_third_attempt_delivers(
    make_client: Any, make_settings: Any, media: Media, videos: Path, receiver: Any
) -> None:
    hook = receiver(answers=(503,), up=False)  # down for the first attempt
    settings = make_settings(**HOOKS, WEBHOOK_RETRY_SECONDS="0.5")
    async with make_client(settings) as client:
        job_id = await client.submit(place(media.standard(), videos), 1, webhook_url=hook.url())
        first = await delivery_in(client, job_id, "pending", when=lambda d: bool(d.last_error))
        assert first.attempts == 1
        assert str(first.last_error).startswith("could not connect to 127.0.0.1")
        hook.up()
        done = await delivery_in(client, job_id, "delivered")
        status = (await client.http.get(f"/job-status/{job_id}")).json()
        metrics = await metrics_once(client, 'vfe_webhooks_total{outcome="delivered"}', 1)
    assert done.attempts == 3
    got = hook.received()
    assert [r.status for r in got] == [503, 200]
    assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"] == f"msg_{job_id}"
    assert got[0].body == got[1].body  # the same message, for the receiver to dedupe
    assert got[1].verified()["job_id"] == job_id
    assert got[1].at - got[0].at >= 0.5 * 6 * 0.8  # the second wait: 6x the first, -20%
    assert status["webhook"]["status"] == "delivered"
    assert status["webhook"]["attempts"] == 3
    assert status["webhook"]["last_error"] == "the receiver answered 503"
    assert metric(metrics, 'vfe_webhook_attempts_total{result="error"}') == 2
    assert metric(metrics, 'vfe_webhook_attempts_total{result="ok"}') == 1


async def test_410_gone_stops_at_once(
    make_client: Any, make_settings: Any, media: Media, videos: Path, receiver: Any
) -> None:
    hook = receiver(answers=(410,))
    settings = make_settings(**HOOKS, WEBHOOK_RETRY_SECONDS="0.01")
    async with make_client(settings) as client:
        job_id = await client.submit(place(media.standard(), videos), 1, webhook_url=hook.url())
        gone = await delivery_in(client, job_id, "gone", "delivered", "failed")
        status = (await client.http.get(f"/job-status/{job_id}")).json()
        metrics = await metrics_once(client, 'vfe_webhooks_total{outcome="gone"}', 1)
    assert gone.status is DeliveryStatus.GONE and gone.attempts == 1
    assert [r.status for r in hook.received()] == [410]
    assert status["webhook"]["status"] == "gone"
    assert status["webhook"]["last_error"] == "the receiver answered 410"
    assert metric(metrics, 'vfe_webhooks_total{outcome="gone"}') == 1


async def test_a_gone_webhook_is_sent_again_on_request(
    make_client: Any, make_settings: Any, media: Media, videos: Path, receiver: Any
) -> None:
    hook = receiver(answers=(410,))  # then 200 for the same webhook-id
    settings = make_settings(**HOOKS, WEBHOOK_RETRY_SECONDS="0.01")
    async with make_client(settings) as client:
        job_id = await client.submit(place(media.standard(), videos), 1, webhook_url=hook.url())
        await delivery_in(client, job_id, "gone")
        before = (await client.http.get(f"/job-status/{job_id}")).json()["webhook"]
        assert before["status"] == "gone"  # and cached so
        resent = await client.http.post(f"/job/{job_id}/webhook")
        assert resent.status_code == 200, resent.text
        view = resent.json()
        assert (view["status"], view["attempts"]) == ("pending", 0)
        assert view["last_error"] == "the receiver answered 410"
        shown = (await client.http.get(f"/job-status/{job_id}")).json()["webhook"]
        assert shown["status"] in ("pending", "delivered")  # not the cached "gone"
        done = await delivery_in(client, job_id, "delivered")
        again = await client.http.post(f"/job/{job_id}/webhook")
        plain = await client.submit(place(media.standard(), videos, "plain.mp4"), 1)
        await client.wait(plain)
        no_hook = await client.http.post(f"/job/{plain}/webhook")
        unknown = await client.http.post("/job/3f0c0000-0000-4000-8000-000000000000/webhook")
    assert done.attempts == 1
    first, second = hook.received()
    assert (first.status, second.status) == (410, 200)
    assert second.body == first.body  # the same body and webhook-id: a repeat to drop
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    assert again.status_code == 409
    assert again.json()["detail"] == (
        f"The webhook of job {job_id} is delivered: only a failed or gone one is sent again"
    )
    assert no_hook.status_code == 404 and "has no webhook" in no_hook.json()["detail"]
    assert unknown.status_code == 404


async def test_private_webhook_refused_at_submit_and_at_every_attempt(
    make_client: Any, make_settings: Any, media: Media, videos: Path, receiver: Any
) -> None:
    hook = receiver()
    name = place(media.standard(), videos)
    guarded = make_settings(WEBHOOK_SECRET=SECRET, WEBHOOK_URL=hook.url("/default"),
                            WEBHOOK_MAX_ATTEMPTS="2", WEBHOOK_RETRY_SECONDS="0.01")  # fmt: skip
    async with make_client(guarded) as client:
        refused = await client.http.post(
            "/video-job", json={"video_source": name, "webhook_url": hook.url()}
        )
        assert refused.status_code == 422
        (error,) = refused.json()["detail"]
        assert error["loc"] == ["body", "webhook_url"]
        assert "127.0.0.1 is a private or local address" in error["msg"]
        assert "ALLOW_PRIVATE_URLS" in error["msg"]
        bad = await client.http.post(
            "/video-job", json={"video_source": name, "webhook_url": "ftp://example.com/"}
        )
        assert bad.status_code == 422 and "http:// or https://" in bad.text
        # WEBHOOK_URL, the default, is checked when each attempt connects: refused twice
        job_id = await client.submit(name, 1)
        failed = await delivery_in(client, job_id, "failed", "delivered")
        metrics = await metrics_once(client, 'vfe_webhooks_total{outcome="failed"}', 1)
    assert failed.status is DeliveryStatus.FAILED and failed.attempts == 2
    assert failed.url == hook.url("/default")
    assert failed.last_error is not None and "private or local address" in failed.last_error
    assert hook.received() == []
    assert metric(metrics, 'vfe_webhooks_total{outcome="failed"}') == 1
    unsigned = make_settings(ALLOW_PRIVATE_URLS="true")
    async with make_client(unsigned) as client:
        res = await client.http.post(
            "/video-job", json={"video_source": name, "webhook_url": hook.url()}
        )
    assert res.status_code == 422 and "WEBHOOK_SECRET" in res.json()["detail"][0]["msg"]


async def test_a_stop_mid_attempt_leaves_it_to_the_next_start(
    make_client: Any, make_settings: Any, media: Media, videos: Path, receiver: Any
) -> None:
    hook = receiver(answers=(HANG,))  # the first attempt gets no answer
    settings = make_settings(**HOOKS)
    client = make_client(settings)
    async with client:
        job_id = await client.submit(place(media.standard(), videos), 1, webhook_url=hook.url())
        await wait_until_async(hook.received, "the first attempt")
        stopped_at = time.time()
    # stopped mid-attempt (well within its 10 s): nothing was decided, and it is due now
    async with make_client(settings) as again:
        done = await delivery_in(again, job_id, "delivered")
    first, second = hook.received()
    assert (first.status, second.status) == (HANG, 200)
    assert second.at - stopped_at < 5  # at once, not after a backoff or a lease
    # the stopped attempt was given back: the one that delivered is made as attempt 1
    assert done.attempts == 1 and done.last_error is None
    assert second.verified()["job_id"] == job_id


def test_webhook_url_without_secret_stops_start_up(tmp_path: Path, videos: Path) -> None:
    env = {**os.environ, **vfe_env(tmp_path, videos, WEBHOOK_URL="https://example.com/")}
    env.pop("WEBHOOK_SECRET", None)
    run = subprocess.run([sys.executable, "-m", "vfe", "serve"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=patience(60))  # fmt: skip
    assert run.returncode == 2
    assert "WEBHOOK_SECRET" in run.stderr and "WEBHOOK_URL" in run.stderr


def test_restart_between_attempts_delivers_once(
    tmp_path: Path, videos: Path, media: Media, receiver: Any
) -> None:
    hook = receiver(answers=(500,))
    env = vfe_env(tmp_path, videos, **HOOKS, WEBHOOK_RETRY_SECONDS="4")
    server = LiveServer(env, tmp_path / "serve.log")
    server.start()
    try:
        name = place(media.standard(), videos)
        asked = {"video_source": name, "interval": 1, "webhook_url": hook.url()}
        res = httpx.post(f"{server.url}/video-job", json=asked, timeout=30)
        job_id = res.json()["job_id"]
        wait_until(lambda: hook.received(), "the first attempt")
        # stopped before the retry falls due (3.2 s at the soonest); uvicorn ends a clean
        # stop by raising the signal again
        assert server.stop() in (0, -signal.SIGTERM)
        restarted = time.time()
        assert len(hook.received()) == 1, "the retry came before the stop"
        server.start()
        wait_until(lambda: len(hook.received()) == 2, "the retry, after the restart")

        def delivered() -> dict[str, Any] | None:
            got = httpx.get(f"{server.url}/job-status/{job_id}", timeout=30).json()
            return got if got["webhook"]["status"] == "delivered" else None

        status = wait_until(delivered, "the delivery to show")
    finally:
        if server.proc is not None:
            server.stop()
    first, second = hook.received()
    assert (first.status, second.status) == (500, 200)
    assert second.at > restarted
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == f"msg_{job_id}"
    assert second.verified()["status"] == "completed"
    assert status["webhook"]["attempts"] == 2
    assert len(hook.received()) == 2  # delivered: nothing more


async def test_two_deliverers_on_postgresql_make_each_attempt_once(
    postgres_url: str, make_settings: Any, receiver: Any
) -> None:
    hook = receiver(answers=(500,))  # every webhook: once refused, then delivered
    settings: Settings = make_settings(**HOOKS, DATABASE_URL=postgres_url,
                                       WEBHOOK_RETRY_SECONDS="0.05")  # fmt: skip
    stores = [PostgresStore(postgres_url, pool_size=3) for _ in range(2)]
    for store in stores:
        await store.open()
    metrics = [Metrics(), Metrics()]
    jobs = [make_job(status=JobStatus.COMPLETED, created_at=time.time(),
                     options={"mode": "interval", "webhook_url": hook.url()})
            for _ in range(16)]  # fmt: skip
    for job in jobs:
        await stores[0].create_job(job)
    deliverers = [
        Deliverer(settings, store, EventBus(), MemoryCache(10**6), counts)
        for store, counts in zip(stores, metrics, strict=True)
    ]
    try:
        for deliverer in deliverers:
            deliverer.start()

        async def all_delivered() -> bool:
            got = [await stores[1].get_delivery(job.id) for job in jobs]
            return all(d is not None and d.status is DeliveryStatus.DELIVERED for d in got)

        await wait_until_async(all_delivered, "every webhook delivered")
    finally:
        await asyncio.gather(*(d.stop() for d in deliverers))
        for store in stores:
            await store.close()
    got = hook.received()
    for job in jobs:
        mine = [r.status for r in got if r.headers["webhook-id"] == f"msg_{job.id}"]
        assert mine == [500, 200], job.id  # each attempt made once, by one of the two
    made = sum(
        metric(m.render().decode(), f'vfe_webhook_attempts_total{{result="{result}"}}')
        for m in metrics
        for result in ("ok", "error")
    )
    assert made == 2 * len(jobs)
