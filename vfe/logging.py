"""JSON log lines, one object per line, to ``LOG_PATH`` and stdout, with request ids.

Records go through a ``QueueHandler``; a listener thread does the actual writing, so a
slow disk never stalls the event loop. ``RequestIdMiddleware`` (pure ASGI, so streamed
responses pass straight through) takes ``X-Request-ID`` or makes one, echoes it, and logs
each request once it ends. An exception no handler took becomes a JSON 500 here, inside
the middleware, so it keeps the request's id.
"""

from __future__ import annotations

import atexit
import contextvars
import json
import logging
import logging.handlers
import queue
import re
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .settings import Settings

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_DROPPED = {"request_id", "color_message"}  # color_message: uvicorn's ANSI copy of msg
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_listener: logging.handlers.QueueListener | None = None


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object; extra fields are kept."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid:
            entry["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in _DROPPED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _QueueHandler(logging.handlers.QueueHandler):
    """Queues the record itself: the stock ``prepare`` would format it first, merging the
    traceback into ``msg`` and dropping ``exc_info``, so the JSON would lose its ``exc``."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class _ContextFilter(logging.Filter):
    """Stamps the request id on the record in the caller's context (before the queue)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


# Libraries that log on their own when the scaled-out layout loses PostgreSQL: their
# INFO is per job and per connection, so only their warnings and errors are kept.
LIBRARIES = ("psycopg", "procrastinate")


def configure(settings: Settings) -> None:
    """Send vfe's and uvicorn's logs as JSON to stdout and ``LOG_PATH``, and the warnings
    of ``LIBRARIES``. Idempotent."""
    shutdown()
    formatter = JsonFormatter()
    stdout = logging.StreamHandler(sys.stdout)
    logfile = logging.handlers.WatchedFileHandler(settings.log_path, encoding="utf-8")
    for handler in (stdout, logfile):
        handler.setFormatter(formatter)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    global _listener
    _listener = logging.handlers.QueueListener(records, stdout, logfile)
    _listener.start()
    # The writer thread is a daemon: without this, lines still queued at exit are lost,
    # e.g. why start-up failed (the lifespan's own shutdown() never runs then).
    atexit.unregister(shutdown)
    atexit.register(shutdown)
    front = _QueueHandler(records)
    front.addFilter(_ContextFilter())
    for name in ("vfe", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [front] if name in ("vfe", "uvicorn") else []
        logger.setLevel(settings.log_level)
        logger.propagate = name == "uvicorn.error"
    for name in LIBRARIES:  # their warnings and errors (a lost database), as JSON too
        logger = logging.getLogger(name)
        logger.handlers = [front]
        logger.setLevel(max(logging.WARNING, logging.getLevelName(settings.log_level)))
        logger.propagate = False


def shutdown() -> None:
    """Flush and stop the writer thread (end of the lifespan)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        for handler in _listener.handlers:
            handler.close()
        _listener = None
    for name in ("vfe", "uvicorn", *LIBRARIES):
        logging.getLogger(name).handlers = []
    for name in LIBRARIES:  # back to Python's default: through the root logger
        logging.getLogger(name).propagate = True


access = logging.getLogger("vfe.http")
errors = logging.getLogger("vfe.app")
_INTERNAL_ERROR = b'{"detail":"internal error"}'
_JSON_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_INTERNAL_ERROR)).encode()),
]


class RequestIdMiddleware:
    """Gives every HTTP request an id (``X-Request-ID``) and logs it when it ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _SAFE_ID.match(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500
        status_sent = False
        failed = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, status_sent
            if message["type"] == "http.response.start":
                status = message["status"]
                status_sent = True
                headers = list(message.get("headers") or [])
                headers.append((b"x-request-id", rid.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            status = 499  # the client left mid-request: nobody to answer, nothing wrong here
        except Exception:
            failed = True
            # Here, not in Starlette's outermost error middleware, so the 500 and its log
            # line carry this request's id.
            errors.exception("unhandled error")
            if status_sent:
                raise  # the response already started: the server closes the connection
            status = 500
            await send_with_id(
                {"type": "http.response.start", "status": 500, "headers": _JSON_HEADERS}
            )
            await send_with_id({"type": "http.response.body", "body": _INTERNAL_ERROR})
        finally:
            # Reads that worked (dashboard polls, thumbnails) are routine: debug only.
            routine = scope.get("method") in ("GET", "HEAD") and status < 400 and not failed
            access.log(
                logging.DEBUG if routine else logging.INFO,
                "%s %s %s",
                scope.get("method"),
                scope.get("path"),
                status,
                extra={
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
            request_id.reset(token)
