"""uvicorn, as vfe runs it: the signal starts vfe's own shutdown, a ready line for people,
and ``{"detail": ...}`` for the requests uvicorn itself refuses.

uvicorn answers a request it cannot parse (a control character in a header, a broken
request line) before the app sees it, with a plain-text 400. ``JsonHttpProtocol`` sends
the same refusal in vfe's one error shape, so every answer a client can get is JSON.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .app import Role, begin_shutdown, create_app
from .settings import Settings

if TYPE_CHECKING:
    import socket
    from types import FrameType

GRACEFUL_SHUTDOWN_SECONDS = 10


class JsonHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with its own 400 in vfe's JSON error shape."""

    def send_400_response(self, msg: str) -> None:
        body = json.dumps({"detail": msg}).encode()
        head = [
            b"HTTP/1.1 400 Bad Request\r\n",
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n",
            b"\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def ready_line(settings: Settings, role: Role = Role.ALL) -> str:
    """``vfe ready: http://127.0.0.1:8000/ — put videos in runtime/videos/``."""
    host = settings.host
    everywhere = host in ("0.0.0.0", "::", "")
    shown = "127.0.0.1" if everywhere else (f"[{host}]" if ":" in host else host)
    url = f"http://{shown}:{settings.port}/"
    videos = settings.videos_base_path
    with contextlib.suppress(ValueError):
        videos = videos.relative_to(Path.cwd())
    note = " (listening on every address)" if everywhere else ""
    if role is Role.WORKER:
        return f"vfe worker ready: running jobs; health at {url}health/live{note}"
    what = " (API only: jobs run on `vfe worker`s)" if role is Role.API else ""
    return f"vfe ready: {url}{note}{what} — put videos in {videos}/"


def serve(settings: Settings, role: Role = Role.ALL) -> None:
    """Run uvicorn until SIGINT/SIGTERM; open responses get a bounded time to finish."""
    app = create_app(settings, role)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            begin_shutdown(app)  # jobs' grace and the end of streams start at the signal
            super().handle_exit(sig, frame)

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:  # bound and serving: one plain line for the person who ran it
                # one write, line and newline: the log thread writes to stdout too, and
                # print's two writes let a log line in between
                sys.stdout.write(ready_line(settings, role) + "\n")
                sys.stdout.flush()

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=JsonHttpProtocol,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    Server(config).run()
