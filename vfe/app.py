"""``create_app(settings, role)``: routes, middleware, error handlers, and the lifespan.

The role says what the process does: ``all`` (``vfe serve``: the API and the jobs),
``api`` (``vfe serve --api-only``: the API; jobs run on workers) or ``worker``
(``vfe worker``: jobs, and only the health and metrics routes, for orchestrators).

The lifespan owns every resource: it creates the runtime folders, opens the store, the
cache (Redis if it answers, memory otherwise), the event bus and the job manager (which
queues again any job a crash left unfinished), and closes them in reverse order. Nothing
starts at import time.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from enum import StrEnum
from pathlib import Path
from types import TracebackType

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import api, docs, ffmpeg, health, openapi, sse, storyboard_api, webhook_api
from . import logging as vfe_logging
from .auth import ApiKeyMiddleware
from .cache import FallbackCache, MemoryCache, RedisCache
from .endpoints import Answer, Endpoint, endpoint
from .errors import VfeError
from .events import EventBus
from .frames import FrameStore
from .jobs import JobManager
from .metrics import Metrics, MetricsMiddleware, metrics_text
from .owner import DataOwner
from .queue import make_queue
from .services import Services
from .settings import Settings
from .storage import open_storages
from .store import Store, open_store

WEB = Path(__file__).parent / "web"
log = logging.getLogger("vfe.app")


class Role(StrEnum):
    """What one vfe process does."""

    ALL = "all"  # vfe serve: the API and the jobs
    API = "api"  # vfe serve --api-only
    WORKER = "worker"  # vfe worker

    @property
    def runs_jobs(self) -> bool:
        return self is not Role.API


async def vfe_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, VfeError)
    if exc.status == 500:  # ours to fix; 503 and 507 are states the client is told of
        log.error("request failed: %s", exc.detail, exc_info=exc.__cause__ or exc)
    elif exc.status > 500:
        log.warning("request refused: %s", exc.detail)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


@endpoint("GET", "/", "getDashboard", "The dashboard",
          Answer(200, "The dashboard page.", media=("text/html",)))  # fmt: skip
async def dashboard(request: Request) -> Response:
    return FileResponse(WEB / "index.html", headers={"Cache-Control": "no-cache"})


def _loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def begin_shutdown(app: Starlette) -> None:
    """The server got SIGTERM or SIGINT (called from the signal handler, so it only
    schedules): stop taking jobs, end every event stream now, and let running jobs go on
    for ``SHUTDOWN_GRACE_SECONDS`` while the server closes its connections."""
    services = getattr(app.state, "services", None)
    loop = getattr(app.state, "loop", None)
    if services is None or loop is None or loop.is_closed():
        return

    def drain() -> None:
        services.jobs.begin_shutdown()
        services.bus.close()

    loop.call_soon_threadsafe(drain)


async def _adopt_legacy(frames: FrameStore, store: Store) -> None:
    """Store the frames earlier versions kept by job; a failure (the bucket away) is
    logged, and the next start tries again."""
    try:
        await frames.adopt_legacy(lambda job_id: store.list_frames(job_id, 0, 10**9))
    except Exception:
        log.warning("frames of an earlier version are not all stored yet; the next start "
                    "tries again", exc_info=True)  # fmt: skip


def _startup_failed(
    app: Starlette,
    kind: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> None:
    """Exit callback of the lifespan's resources: a start-up stopped by a cause vfe
    explains (a ``VfeError``: the database unreachable or newer than this vfe, …) is
    logged as one line and kept for ``StartupReport``; other failures keep their
    traceback."""
    if isinstance(exc, VfeError) and getattr(app.state, "services", None) is None:
        log.error("vfe cannot start: %s", exc.detail)
        app.state.startup_failure = str(exc.detail)


class StartupReport:
    """ASGI layer: the server is told a start-up failure ``_startup_failed``
    kept as that one line ("vfe cannot start: …") instead of Starlette's traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def report(message: Message) -> None:
            failure = getattr(scope["app"].state, "startup_failure", None)
            if message["type"] == "lifespan.startup.failed" and failure:
                message = {**message, "message": f"vfe cannot start: {failure}"}
            await send(message)

        await self.app(scope, receive, report)


async def _cancelled(task: asyncio.Future[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def create_app(settings: Settings, role: Role = Role.ALL) -> Starlette:
    """Build the vfe ASGI app for ``settings``; resources open in its lifespan."""
    metrics = Metrics()  # this app's own registry: apps in one process never share counts

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings.ensure_dirs()
        vfe_logging.configure(settings)
        # Each resource is closed in reverse order, also when a later one fails to open.
        async with AsyncExitStack() as resources:
            resources.callback(vfe_logging.shutdown)
            resources.callback(log.info, "vfe stopped")
            resources.push(functools.partial(_startup_failed, app))  # before "vfe stopped"
            # before any job is touched; SQLite only: PostgreSQL is shared by design
            owner = DataOwner(settings.database_path, enabled=settings.postgres_url is None)
            owner.acquire()
            resources.callback(owner.release)
            if not settings.keys and not _loopback(settings.host):
                log.warning(
                    "listening on %s without API_KEYS: anyone who can reach this port can "
                    "submit jobs, read frames and delete jobs; set API_KEYS (see the README's "
                    "Security section)",
                    settings.host,
                )
            store = open_store(settings)
            queue = make_queue(settings, store, name=f"{role.value}-{os.getpid()}")
            await store.open()
            resources.push_async_callback(store.close)
            cache = FallbackCache(
                RedisCache(settings.redis_host, settings.redis_port, settings.redis_db),
                MemoryCache(settings.max_cache_bytes),
                retry_seconds=settings.redis_retry_seconds,
            )
            resources.push_async_callback(cache.close)
            await cache.connect()
            bus = EventBus()
            frames = FrameStore(open_storages(settings), settings.frames_base_path, store.hold)
            await frames.open()
            resources.push_async_callback(frames.close)
            if role is not Role.WORKER:  # in the background: it may take a while
                adopting = asyncio.ensure_future(_adopt_legacy(frames, store))
                resources.push_async_callback(_cancelled, adopting)
            jobs = JobManager(
                settings, store, cache, bus, frames, metrics, queue,
                run_jobs=role.runs_jobs, serve_api=role is not Role.WORKER,
            )  # fmt: skip
            metrics.watch(jobs, cache)
            if store.backend == "postgresql":  # events reach the other processes too
                from .relay import PgRelay
                from .store.postgres import PostgresStore

                assert isinstance(store, PostgresStore)
                relay = PgRelay(store, bus, jobs.runner.invalidate)
                relay.start(listen=role is not Role.WORKER)
                resources.push_async_callback(relay.stop)  # after the jobs' last events
            resources.push_async_callback(jobs.stop)
            resources.callback(bus.close)  # streams end first, then the workers stop
            version = await ffmpeg.version()
            if version is None:
                log.warning("FFmpeg was not found; jobs will fail until it is installed")
            await jobs.start()
            if role.runs_jobs:  # who runs jobs delivers webhooks (API-only replicas do not)
                from .webhooks import Deliverer

                deliverer = Deliverer(settings, store, bus, cache, metrics)
                deliverer.start()
                resources.push_async_callback(deliverer.stop)  # before the jobs stop
            app.state.services = Services(settings, store, cache, bus, frames, jobs, version)
            app.state.loop = asyncio.get_running_loop()
            log.info(
                "vfe started",
                extra={
                    "cache": cache.name,
                    "ffmpeg": version,
                    "database": store.backend,
                    "queue": queue.backend,
                    "role": role.value,
                },
            )
            yield

    if role is Role.WORKER:  # no API: what orchestrators probe and scrape
        routes: list[BaseRoute] = [ep.route() for ep in (*health.ENDPOINTS, metrics_text)]
    else:
        routes = [ep.route() for ep in ENDPOINTS]
        routes += [Mount("/static", StaticFiles(directory=WEB), name="static"), docs.asset_route()]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(MetricsMiddleware, metrics=metrics),  # outermost: counts 401s and 500s
            Middleware(vfe_logging.RequestIdMiddleware),
            Middleware(ApiKeyMiddleware, keys=settings.keys),
            Middleware(StartupReport),  # lifespan only
        ],
        exception_handlers={
            VfeError: vfe_error,
            HTTPException: http_error,
        },
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # "/job-status/<id>/" is a 404, not a redirect
    app.state.endpoints = ENDPOINTS
    app.state.metrics = metrics
    return app


ENDPOINTS: tuple[Endpoint, ...] = (
    dashboard,
    *api.ENDPOINTS,
    *storyboard_api.ENDPOINTS,
    *webhook_api.ENDPOINTS,
    *sse.ENDPOINTS,
    *health.ENDPOINTS,
    metrics_text,
    openapi.openapi_json,
    docs.docs_page,
)
