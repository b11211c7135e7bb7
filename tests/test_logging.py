"""JSON log lines with request ids, and the X-Request-ID middleware."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until_async
from vfe import logging as vfe_logging
from vfe.logging import JsonFormatter, RequestIdMiddleware, request_id
from vfe.settings import Settings

GENERATED = re.compile(r"^[0-9a-f]{32}$")


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every JSON line of the log so far ([] before the file exists)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def wait_for_line(path: Path, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first log line matching ``predicate``; the writer thread may lag a little."""

    def found() -> dict[str, Any] | None:
        return next((entry for entry in read_lines(path) if predicate(entry)), None)

    entry: dict[str, Any] = await wait_until_async(found, "the log line", every=0.02)
    return entry


@pytest.fixture
def configured(settings: Settings) -> Any:
    """vfe logging configured to the test's LOG_PATH; shut down afterwards."""
    settings.ensure_dirs()
    vfe_logging.configure(settings)
    yield settings
    vfe_logging.shutdown()


# --- the formatter ----------------------------------------------------------------------


def make_record(msg: str = "hello %s", args: tuple[Any, ...] = ("world",), **extra: Any) -> Any:
    record = logging.LogRecord("vfe.test", logging.WARNING, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_formatter_writes_one_json_object() -> None:
    record = make_record(job_id="j1", frames=3, _private="x", path=Path("/p"))
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "hello world"
    assert entry["level"] == "warning"
    assert entry["logger"] == "vfe.test"
    assert entry["ts"].endswith("+00:00")
    assert entry["job_id"] == "j1" and entry["frames"] == 3
    assert entry["path"] == "/p"  # not JSON-native: written as text
    assert "_private" not in entry
    assert "request_id" not in entry  # none given, none in context
    assert "\n" not in JsonFormatter().format(make_record("two\nlines", ()))


def test_formatter_request_id_from_record_or_context() -> None:
    token = request_id.set("from-context")
    try:
        assert json.loads(JsonFormatter().format(make_record()))["request_id"] == "from-context"
        entry = json.loads(JsonFormatter().format(make_record(request_id="on-record")))
        assert entry["request_id"] == "on-record"
    finally:
        request_id.reset(token)


def test_formatter_includes_the_traceback() -> None:
    try:
        raise RuntimeError("kaput")
    except RuntimeError:
        record = logging.LogRecord(
            "vfe.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    entry = json.loads(JsonFormatter().format(record))
    assert "RuntimeError: kaput" in entry["exc"]


# --- configure / shutdown ---------------------------------------------------------------


async def test_configure_writes_json_lines_to_log_path(configured: Settings) -> None:
    log = logging.getLogger("vfe.jobs")
    token = request_id.set("req-42")
    try:
        log.info("job %s started", "abc", extra={"job_id": "abc"})
    finally:
        request_id.reset(token)
    log.debug("not at INFO")
    logging.getLogger("uvicorn.error").info("from uvicorn")
    # the database libraries' warnings (PostgreSQL lost), not their routine INFO
    logging.getLogger("psycopg.pool").warning("error connecting in %r", "vfe")
    logging.getLogger("procrastinate.worker").info("a job started")
    vfe_logging.shutdown()  # flushes the writer thread

    entries = read_lines(configured.log_path)
    job = [e for e in entries if e["msg"] == "job abc started"]
    assert len(job) == 1
    assert job[0]["request_id"] == "req-42"  # stamped in the caller's context
    assert job[0]["job_id"] == "abc"
    assert job[0]["logger"] == "vfe.jobs"
    assert not any(e["msg"] == "not at INFO" for e in entries)
    assert any(e["logger"] == "uvicorn.error" and e["msg"] == "from uvicorn" for e in entries)
    lost = [e for e in entries if e["logger"] == "psycopg.pool"]
    assert [(e["level"], e["msg"]) for e in lost] == [("warning", "error connecting in 'vfe'")]
    assert not any(e["logger"].startswith("procrastinate") for e in entries)
    assert logging.getLogger("vfe").handlers == []
    assert logging.getLogger("psycopg").handlers == [] and logging.getLogger("psycopg").propagate


async def test_logged_exception_keeps_its_traceback_apart(configured: Settings) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("vfe.jobs").exception("job crashed")
    logging.getLogger("uvicorn.error").info("hi", extra={"color_message": "\x1b[1mhi"})
    vfe_logging.shutdown()
    entries = read_lines(configured.log_path)
    [entry] = [e for e in entries if e["logger"] == "vfe.jobs"]
    assert entry["msg"] == "job crashed"  # one line of text, not the traceback
    assert "Traceback" in entry["exc"] and "ValueError: boom" in entry["exc"]
    [uvicorn] = [e for e in entries if e["msg"] == "hi"]
    assert "color_message" not in uvicorn


async def test_request_id_given_on_the_record_wins(configured: Settings) -> None:
    token = request_id.set("from-context")
    try:
        logging.getLogger("vfe.jobs").info("worker line", extra={"request_id": "job-start"})
    finally:
        request_id.reset(token)
    vfe_logging.shutdown()
    [entry] = [e for e in read_lines(configured.log_path) if e["msg"] == "worker line"]
    assert entry["request_id"] == "job-start"


async def test_configure_twice_does_not_duplicate_lines(
    configured: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    vfe_logging.configure(configured)
    logging.getLogger("vfe.test").warning("once only")
    vfe_logging.shutdown()
    entries = read_lines(configured.log_path)
    assert [e["msg"] for e in entries].count("once only") == 1
    # The same line went to stdout.
    assert "once only" in capsys.readouterr().out


async def test_debug_level_is_honoured(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(LOG_LEVEL="DEBUG")
    settings.ensure_dirs()
    vfe_logging.configure(settings)
    try:
        logging.getLogger("vfe.test").debug("fine detail")
    finally:
        vfe_logging.shutdown()
    assert any(e["msg"] == "fine detail" for e in read_lines(settings.log_path))


# --- the middleware over HTTP (the app in-process) --------------------------------------


async def test_request_id_is_echoed_and_logged(client: Any) -> None:
    res = await client.http.get("/job-status/nope", headers={"X-Request-ID": "abc-123.x:y_z"})
    assert res.headers["x-request-id"] == "abc-123.x:y_z"
    entry = await wait_for_line(
        client.settings.log_path,
        lambda e: e.get("logger") == "vfe.http" and e.get("request_id") == "abc-123.x:y_z",
    )
    assert entry["status"] == res.status_code == 404
    assert entry["msg"] == "GET /job-status/nope 404"
    assert entry["level"] == "info"
    assert isinstance(entry["duration_ms"], float | int) and entry["duration_ms"] >= 0


async def test_routine_reads_are_logged_at_debug(access_records: Collect, client: Any) -> None:
    """Dashboard polls and thumbnails must not flood the log at INFO; changes and errors
    still show there."""
    logging.getLogger("vfe.http").setLevel(logging.DEBUG)  # the fixture restores it
    await client.http.get("/health")
    await client.http.get("/jobs")
    await client.http.post("/video-job", json={})
    levels = {r.getMessage(): r.levelname for r in access_records.records}
    assert levels == {"GET /health 200": "DEBUG", "GET /jobs 200": "DEBUG",
                      "POST /video-job 422": "INFO"}  # fmt: skip


async def test_request_id_generated_when_absent(client: Any) -> None:
    first = await client.http.get("/health")
    second = await client.http.get("/no-such-route")
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(GENERATED.match(i) for i in ids)
    assert ids[0] != ids[1]
    assert second.status_code == 404
    entry = await wait_for_line(client.settings.log_path, lambda e: e.get("request_id") == ids[1])
    assert entry["status"] == 404


@pytest.mark.parametrize(
    "unsafe",
    ["has space", "a" * 129, "<script>alert(1)</script>", "line\tbreak", "semi;colon", "é"],
)
async def test_unsafe_request_id_is_replaced(client: Any, unsafe: str) -> None:
    headers = {"X-Request-ID": unsafe.encode("latin-1")}
    res = await client.http.get("/no-such-route", headers=headers)  # a 404 is logged at INFO
    rid = res.headers["x-request-id"]
    assert GENERATED.match(rid)
    await wait_for_line(client.settings.log_path, lambda e: e.get("request_id") == rid)
    assert unsafe not in client.settings.log_path.read_text(encoding="utf-8")


async def test_empty_request_id_is_replaced(client: Any) -> None:
    res = await client.http.get("/health", headers={"X-Request-ID": ""})
    assert GENERATED.match(res.headers["x-request-id"])


async def test_request_id_does_not_leak_between_requests(client: Any) -> None:
    await client.http.get("/health", headers={"X-Request-ID": "first-one"})
    assert request_id.get() is None  # reset once the request ended


# --- the middleware on its own ----------------------------------------------------------


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.entries: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.entries.append(json.loads(JsonFormatter().format(record)))  # in the caller's context


@pytest.fixture
def access_records() -> Any:
    handler = Collect()
    access = logging.getLogger("vfe.http")
    old_level = access.level
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    yield handler
    access.removeHandler(handler)
    access.setLevel(old_level)


async def test_app_crash_is_a_json_500_logged_with_its_id(access_records: Collect) -> None:
    seen: list[str | None] = []
    sent: list[dict[str, Any]] = []
    errors = Collect()
    logging.getLogger("vfe.app").addHandler(errors)

    async def crashing_app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(request_id.get())
        raise RuntimeError("handler blew up")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/boom", "headers": []}
    try:
        await RequestIdMiddleware(crashing_app)(scope, receive, send)
    finally:
        logging.getLogger("vfe.app").removeHandler(errors)
    assert len(seen) == 1 and GENERATED.match(seen[0] or "")
    start, body = sent
    assert start["status"] == 500
    assert (b"x-request-id", (seen[0] or "").encode()) in start["headers"]
    assert json.loads(body["body"]) == {"detail": "internal error"}
    assert [r.getMessage() for r in access_records.records] == ["POST /boom 500"]
    assert access_records.entries[0]["request_id"] == seen[0]
    [error] = errors.entries
    assert error["request_id"] == seen[0] and "handler blew up" in error["exc"]
    assert request_id.get() is None


async def test_crash_after_the_response_started_is_raised(access_records: Collect) -> None:
    sent: list[dict[str, Any]] = []

    async def half_app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("mid-stream")

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/s", "headers": []}
    with pytest.raises(RuntimeError, match="mid-stream"):
        await RequestIdMiddleware(half_app)(scope, None, send)  # type: ignore[arg-type]
    assert len(sent) == 1
    assert access_records.entries[0]["status"] == 200
    assert access_records.entries[0]["level"] == "info"  # it failed: not routine


async def test_non_http_scopes_pass_through(access_records: Collect) -> None:
    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["type"])

    async def receive() -> dict[str, Any]:
        return {}

    async def send(message: Any) -> None:
        return None

    await RequestIdMiddleware(app)({"type": "lifespan"}, receive, send)
    await RequestIdMiddleware(app)({"type": "websocket", "headers": []}, receive, send)
    assert calls == ["lifespan", "websocket"]
    assert access_records.records == []


async def test_client_that_leaves_mid_body_is_not_an_error(access_records: Collect) -> None:
    from starlette.requests import ClientDisconnect

    async def reading_app(scope: Any, receive: Any, send: Any) -> None:
        raise ClientDisconnect()

    errors = Collect()
    logging.getLogger("vfe.app").addHandler(errors)
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/video-job", "headers": []}
    try:
        await RequestIdMiddleware(reading_app)(scope, None, send)  # type: ignore[arg-type]
    finally:
        logging.getLogger("vfe.app").removeHandler(errors)
    assert sent == []
    assert errors.records == []
    assert access_records.entries[0]["status"] == 499


@pytest.mark.parametrize(
    ("host", "keys", "warned"),
    [("0.0.0.0", "", True), ("192.0.2.7", "", True), ("0.0.0.0", "k", False),
     ("127.0.0.1", "", False), ("::1", "", False), ("localhost", "", False)],
)  # fmt: skip
async def test_listening_beyond_this_machine_without_keys_is_warned(
    make_settings: Callable[..., Settings], host: str, keys: str, warned: bool
) -> None:
    from tests.conftest import AppClient

    settings = make_settings(HOST=host, API_KEYS=keys)
    async with AppClient(settings):
        started = await wait_for_line(settings.log_path, lambda e: e.get("msg") == "vfe started")
    warnings = [e for e in read_lines(settings.log_path) if "without API_KEYS" in e["msg"]]
    assert bool(warnings) == warned, warnings
    if warned:
        assert warnings[0]["level"] == "warning" and host in warnings[0]["msg"]
    assert started["level"] == "info"
