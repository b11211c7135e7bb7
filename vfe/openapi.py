"""``GET /openapi.json`` (OpenAPI 3.1) and ``GET /docs`` (Swagger UI, served offline).

The request schema is ``JobSpec`` itself, and the response schemas are pydantic models of
exactly what ``api.py`` and ``sse.py`` send (``job_view`` and ``frame_view`` field by
field), so the document cannot drift from validation silently: the tests compare them.

The document is built once per app, on its first request, from the running settings:
security requirements and ``401`` answers are listed only when ``API_KEYS`` is set, on
every route ``auth.is_public`` does not exempt. Swagger UI's files come from the
``swagger-ui-bundle-v2`` package (Swagger UI 5, which reads OpenAPI 3.1; the original
``swagger-ui-bundle`` ships 4.x, which does not) and are served from an allow-list under
``/docs/``. The page has no inline script, so it works under the strict
``Content-Security-Policy`` it is sent with; it needs no network beyond this server.

Two deliberate oddities: an event stream's schema describes one event (``event`` and
``data``, whose ``contentSchema`` is the JSON it carries), as OpenAPI 3.1 tools read it;
and operations with header parameters also list uvicorn's own text/plain 400, which it
sends for a request it cannot parse (a control character in a header).
"""

from __future__ import annotations

import copy
import json
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from . import __version__
from .auth import COOKIE, is_public
from .errors import NotFound
from .frames import FRAME_NAME
from .models import JobSpec, JobStatus, Mode, SourceType
from .services import services
from .settings import Settings

Json = dict[str, Any]
REF = "#/components/schemas/{model}"
EXAMPLE_SOURCE = "talks/keynote.mp4"  # the README's example; the schemathesis test has it


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Error(_Model):
    """Every error but a validation error."""

    detail: str


class FieldError(_Model):
    """One field that failed validation: where (``["body", "interval"]``) and why."""

    loc: list[str | int]
    msg: str
    type: str


class ValidationFailed(_Model):
    """422: which fields are wrong and why."""

    detail: list[FieldError]


class JobView(_Model):
    """A job as ``GET /job-status/{job_id}`` shows it (and the job events carry it)."""

    job_id: str = Field(description="The job's id (a UUID).")
    status: JobStatus
    video_source: str = Field(description="The path or URL asked for, or the upload's name.")
    source_type: SourceType
    mode: Mode
    interval: float | None = Field(description="Seconds between frames; null in other modes.")
    options: dict[str, Any] = Field(description="The job's sampling and output fields.")
    plan: dict[str, Any] | None = Field(description="How the job runs, once it is planned.")
    total_frames: int
    processed_frames: int
    percent: float = Field(ge=0, le=100)
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    elapsed_seconds: float | None
    error_message: str | None
    duration: float | None = Field(description="The video's duration, s (once probed).")
    fps: float | None
    width: int | None
    height: int | None
    codec: str | None
    attempts: int


class FrameView(_Model):
    """One frame, with the URL of its image."""

    job_id: str
    index: int
    timestamp: float = Field(description="The frame's presentation time, s.")
    target_time: float = Field(description="The time asked for, s.")
    filename: str
    url: str
    width: int | None
    height: int | None
    size_bytes: int
    checksum: str = Field(description="SHA-256 of the file, hex.")
    created_at: datetime


class JobList(_Model):
    jobs: list[JobView]
    count: int


class FrameList(_Model):
    job_id: str
    frames: list[FrameView]
    total_count: int
    offset: int
    limit: int


class RecentFrames(_Model):
    frames: list[FrameView] = Field(description="Newest first.")
    total_count: int
    since_minutes: float
    job_id: str | None


class VideoFile(_Model):
    path: str = Field(description="Relative to VIDEOS_BASE_PATH: a job's video_source.")
    size_bytes: int
    modified_at: datetime


class VideoList(_Model):
    videos: list[VideoFile]
    count: int
    truncated: bool = Field(description="True when more videos exist than are listed.")


class SubmitAnswer(_Model):
    job_id: str
    status: JobStatus
    message: str


class DeleteAnswer(_Model):
    job_id: str
    status: Literal[JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED] = Field(
        description="What the job was: cancelled when it had not finished."
    )
    message: str


class JobsSnapshot(_Model):
    """The first event of ``GET /events``: the newest jobs."""

    jobs: list[JobView]


class Deleted(_Model):
    """The ``deleted`` event of ``GET /events``."""

    job_id: str


class DatabaseHealth(_Model):
    ok: bool
    backend: str


class CacheHealth(_Model):
    backend: str = Field(description="The back-end in use now: redis or memory.")
    redis: Literal["connected", "unreachable"]
    hits: dict[str, int]
    misses: dict[str, int]


class FfmpegHealth(_Model):
    ok: bool
    version: str | None


class QueueHealth(_Model):
    depth: int
    max: int


class JobsHealth(_Model):
    running: int
    max_concurrent: int


class DiskHealth(_Model):
    free_mb: float
    min_free_mb: float


class Health(_Model):
    """Each component's state; the answer is 503 when ``status`` is unavailable."""

    status: Literal["ok", "unavailable"]
    database: DatabaseHealth
    cache: CacheHealth
    ffmpeg: FfmpegHealth
    queue: QueueHealth
    jobs: JobsHealth
    disk: DiskHealth


class Live(_Model):
    """The process and its event loop answer; nothing else is checked."""

    status: Literal["ok"]


class Ready(_Model):
    """Whether this instance can take jobs now (503 when it cannot)."""

    status: Literal["ready", "unavailable"]
    database: bool
    ffmpeg: bool
    accepting_jobs: bool
    disk: bool


RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    Error,
    ValidationFailed,
    JobView,
    FrameView,
    JobList,
    FrameList,
    RecentFrames,
    VideoList,
    SubmitAnswer,
    DeleteAnswer,
    Health,
    Live,
    Ready,
    JobsSnapshot,
    Deleted,
)


def _schemas() -> Json:
    """``components.schemas``: JobSpec and the response models, sharing their enums."""
    mode: JsonSchemaMode = "validation"
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(JobSpec, mode)]
    models += [(model, mode) for model in RESPONSE_MODELS]
    _, top = models_json_schema(models, ref_template=REF)
    found: Json = top["$defs"]
    return found


def _op(op_id: str, summary: str, responses: Json, *params: Json, **extra: Any) -> Json:
    op: Json = {"operationId": op_id, "summary": summary, **extra}
    if params:
        op["parameters"] = list(params)
    return {**op, "responses": responses}


def _param(name: str, where: str, schema: Json, description: str = "") -> Json:
    found: Json = {"name": name, "in": where, "required": where == "path", "schema": schema}
    return {**found, "description": description} if description else found


def _json(description: str, schema: str, **extra: Any) -> Json:
    content = {"application/json": {"schema": {"$ref": REF.format(model=schema)}}}
    return {"description": description, "content": content, **extra}


def _error(description: str, **extra: Any) -> Json:
    return _json(description, "Error", **extra)


def _body(description: str, *media_types: str, **extra: Any) -> Json:
    """A response whose body is not JSON (a page, an image, a stream, a zip)."""
    text = {"schema": {"type": "string"}}
    content = {t: text if t.startswith("text/") else {} for t in media_types}
    return {"description": description, "content": content, **extra}


MALFORMED = (
    "The HTTP server itself answers `Invalid HTTP request received.` (text/plain) to a "
    "request it cannot parse, such as one with a control character in a header."
)


def _malformed(response: Json) -> Json:
    """``response`` that may also be the HTTP server's own text/plain 400."""
    content = {**response["content"], "text/plain": {"schema": {"type": "string"}}}
    return {**response, "content": content}


def _number(low: float, high: float, default: float, integer: bool = True) -> Json:
    kind = "integer" if integer else "number"
    return {"type": kind, "minimum": low, "maximum": high, "default": default}


def _not_null(schema: Json) -> Json:
    """A JobSpec property's schema without its ``null`` branch (a query string has none)."""
    schema = {k: v for k, v in schema.items() if k not in ("title", "description")}
    if schema.get("default", 0) is None:
        del schema["default"]
    branches = [b for b in schema.pop("anyOf", []) if b != {"type": "null"}]
    return {**branches[0], **schema} if branches else schema


METRICS = (
    "Prometheus text format 0.0.4: jobs submitted and finished, frames extracted, extraction "
    "time, queue depth, running jobs, cache hits and misses by back-end, and HTTP requests "
    "by route template and status, with their latency."
)
INVALID = {"$ref": "#/components/responses/ValidationFailed"}
JOB_NOT_FOUND = _error("No such job (also for an id that is not a UUID).")
JOB_ID = _param(
    "job_id", "path", {"type": "string", "format": "uuid"}, "Anything but a UUID answers 404."
)
JOB_LINKS = {"status": "getJobStatus", "events": "streamJobEvents", "frames": "listFrames",
             "zip": "downloadFramesZip", "delete": "deleteJob"}  # fmt: skip
EVENTS = "Server-Sent Events (idle streams get comment heartbeats): "
JOB_EVENTS = (
    "`snapshot` (the job) first, then `status` and `progress` (the job), `frame` (a frame) "
    "and finally `done`, `failed` or `cancelled` (the job), after which the stream ends; a "
    "finished job gives `snapshot` and its final event at once."
)
ALL_EVENTS = (
    '`snapshot` (`{"jobs": [...]}`, the newest 50) first, then `created`, `status`, '
    '`progress`, `done`, `failed`, `cancelled` (the job) and `deleted` (`{"job_id"}`), '
    "until the client leaves or the server stops."
)
FINAL = ["done", "failed", "cancelled"]


def _stream(description: str, events: dict[str, list[str]]) -> Json:
    """A Server-Sent Events response; its schema is one event's (as OpenAPI 3.1 has it):
    the event's name, and its data, the JSON of the model named in ``events``."""
    one_of = [
        {
            "type": "object",
            "properties": {
                "event": {"enum": names},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {"$ref": REF.format(model=model)},
                },
            },
            "required": ["event", "data"],
            "additionalProperties": False,
        }
        for model, names in events.items()
    ]
    content = {"text/event-stream": {"schema": {"oneOf": one_of}}}
    return {"description": EVENTS + description, "content": content}


def _submit(spec: Json, settings: Settings) -> Json:
    """POST /video-job: the fields as JSON, as a query string or in a multipart form."""
    fields: Json = spec["properties"]
    query = [
        {**_param(name, "query", _not_null(prop), prop.get("description", "")),
         **({"style": "form", "explode": False} if name == "timestamps" else {})}
        for name, prop in fields.items()
    ]  # fmt: skip
    form_fields = {name: {"type": "string", "description": prop.get("description", "")}
                   for name, prop in fields.items()}  # fmt: skip
    form = {
        "type": "object",
        "properties": {"file": {"type": "string", "format": "binary"}, **form_fields},
        "additionalProperties": False,
    }
    key = _param(
        "Idempotency-Key",
        "header",
        {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[ -~]+$"},
        "Sending the same key with the same request again answers with the same job (200) "
        "instead of making a second one; the same key with another request is 409.",
    )
    links = {name: {"operationId": op, "parameters": {"job_id": "$response.body#/job_id"}}
             for name, op in JOB_LINKS.items()}  # fmt: skip
    responses = {
        "200": _json("Queued (or, for a repeated Idempotency-Key, the job it made).",
                     "SubmitAnswer", links=links),
        "400": _malformed(_error(
            "A bad or refused video_source or URL; a file that is not a video; a body that is "
            "not a JSON object; both a file and video_source; a malformed multipart body. "
            + MALFORMED)),
        "409": _error("The Idempotency-Key was used before with another request."),
        "413": _error(f"An upload over {settings.max_upload_mb:g} MiB, a download over "
                      f"{settings.max_download_mb:g} MiB, or a JSON or query body over "
                      f"{settings.max_body_kb:g} KiB."),
        "422": INVALID,
        "503": _error("The queue is full, or the service is shutting down.",
                      headers={"Retry-After": {"schema": {"type": "integer"}}}),
        "507": _error("The disk for frames has less than MIN_FREE_DISK_MB free."),
    }  # fmt: skip
    example = {"video_source": EXAMPLE_SOURCE, "interval": 2.5}
    body = {
        "required": False,
        "content": {
            "application/json": {"schema": {"$ref": REF.format(model="JobSpec")},
                                 "example": example},
            "multipart/form-data": {"schema": form},
        },
    }  # fmt: skip
    description = (
        "Send the fields as JSON, as a query string, or as a multipart form with the video "
        "in `file` (then leave out video_source). Query fields are merged with the body's, "
        "which win."
    )
    return _op("submitJob", "Submit a job", responses, *query, key, description=description,
               requestBody=body)  # fmt: skip


def _paths(settings: Settings, spec: Json) -> dict[str, Json]:
    name = _param("name", "path", {"type": "string",
                                   "pattern": FRAME_NAME.pattern.replace(r"\d", "[0-9]")},
                  "The frame's filename, as /frames lists it.")  # fmt: skip
    etag = _param("If-None-Match", "header", {"type": "string"}, "304 if it is the frame's ETag.")
    limit = _param("limit", "query", _number(1, 1000, 50))
    page = [_param("offset", "query", _number(0, 10**9, 0)),
            _param("limit", "query", _number(1, 10000, 1000))]  # fmt: skip
    recent = [_param("since_minutes", "query", _number(0, 525600, 60, integer=False)),
              _param("job_id", "query", {"type": "string", "maxLength": 200},
                     "Only this job's frames (matched exactly)."),
              _param("limit", "query", _number(1, 1000, 100))]  # fmt: skip
    images = ("image/jpeg", "image/png", "image/webp")
    string = {"schema": {"type": "string"}}
    health = "It cannot (database down, FFmpeg missing, shutting down)."
    document = {"application/json": {"schema": {"type": "object"}}}
    # fmt: off
    return {
        "/": {"get": _op("getDashboard", "The dashboard",
                         {"200": _body("The dashboard page.", "text/html")})},
        "/video-job": {"post": _submit(spec, settings)},
        "/jobs": {"get": _op("listJobs", "Recent jobs, newest first",
                             {"200": _json("The jobs.", "JobList"), "422": INVALID}, limit)},
        "/job-status/{job_id}": {"get": _op(
            "getJobStatus", "A job's status, progress and video facts",
            {"200": _json("The job.", "JobView"), "404": JOB_NOT_FOUND}, JOB_ID)},
        "/job-status/{job_id}/events": {"get": _op(
            "streamJobEvents", "A job's live progress",
            {"200": _stream(JOB_EVENTS, {"JobView": ["snapshot", "status", "progress", *FINAL],
                                         "FrameView": ["frame"]}),
             "404": JOB_NOT_FOUND}, JOB_ID)},
        "/frames/{job_id}": {"get": _op(
            "listFrames", "A job's frames in time order",
            {"200": _json("A page of frames.", "FrameList"), "404": JOB_NOT_FOUND,
             "422": INVALID}, JOB_ID, *page)},
        "/frames/{job_id}/{name}": {"get": _op(
            "getFrameImage", "One frame image",
            {"200": _body("The image; its ETag is its SHA-256.", *images,
                          headers={"ETag": string}),
             "304": {"description": "Not modified.", "headers": {"ETag": string}},
             "400": _body(MALFORMED, "text/plain"),
             "404": _error("No such job or frame.")}, JOB_ID, name, etag)},
        "/dashboard/recent-frames": {"get": _op(
            "recentFrames", "Frames made recently, across jobs",
            {"200": _json("Frames, newest first.", "RecentFrames"), "422": INVALID}, *recent)},
        "/videos": {"get": _op("listVideos", "The videos a job may name by path",
                               {"200": _json("Videos under VIDEOS_BASE_PATH.", "VideoList")})},
        "/events": {"get": _op("streamEvents", "Every job's changes", {"200": _stream(
            ALL_EVENTS, {"JobsSnapshot": ["snapshot"], "Deleted": ["deleted"],
                         "JobView": ["created", "status", "progress", *FINAL]})})},
        "/job/{job_id}": {"delete": _op(
            "deleteJob", "Cancel a job and remove it and its frames",
            {"200": _json("Removed.", "DeleteAnswer"), "404": JOB_NOT_FOUND}, JOB_ID)},
        "/job/{job_id}/frames.zip": {"get": _op(
            "downloadFramesZip", "All of a job's frames in one zip",
            {"200": _body("The frames, named as /frames lists them.", "application/zip",
                          headers={"Content-Disposition": string}),
             "404": JOB_NOT_FOUND}, JOB_ID)},
        "/health": {"get": _op("getHealth", "The state of each component",
                               {"200": _json("It can take and run jobs.", "Health"),
                                "503": _json(health, "Health")})},
        "/health/live": {"get": _op("getLiveness", "Liveness: the process answers",
                                    {"200": _json("It answers.", "Live")})},
        "/health/ready": {"get": _op("getReadiness", "Readiness: this instance takes jobs",
                                     {"200": _json("It takes jobs.", "Ready"),
                                      "503": _json(health, "Ready")})},
        "/metrics": {"get": _op("getMetrics", "Counters for Prometheus",
                                {"200": _body(METRICS, "text/plain")})},
        "/openapi.json": {"get": _op("getOpenapi", "This document",
                                     {"200": {"description": "OpenAPI 3.1.",
                                              "content": document}})},
        "/docs": {"get": _op("getDocs", "This document in Swagger UI",
                             {"200": _body("The page.", "text/html")})},
    }
    # fmt: on


def _secure(paths: dict[str, Json]) -> None:
    """Add the key requirement and its 401 to every operation that is not public."""
    for path, operations in paths.items():
        if is_public(path):
            continue
        for method, operation in operations.items():
            schemes = ["bearer", "apiKey"] + (["cookie"] if method == "get" else [])
            operation["security"] = [{scheme: []} for scheme in schemes]
            operation["responses"]["401"] = {"$ref": "#/components/responses/Unauthorized"}


def _with_request_id(paths: dict[str, Json]) -> None:
    header = {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}}
    for operations in paths.values():
        for operation in operations.values():
            for response in operation["responses"].values():
                if "$ref" not in response:
                    response["headers"] = {**response.get("headers", {}), **header}


def document(settings: Settings) -> Json:
    """The OpenAPI 3.1 document of a vfe app running with ``settings``."""
    schemas = _schemas()
    paths = copy.deepcopy(_paths(settings, schemas["JobSpec"]))  # shares parts; edited below
    www_authenticate = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    components: Json = {
        "schemas": schemas,
        "responses": {
            "ValidationFailed": _json(
                "A field is out of range, of the wrong type, missing or unknown.",
                "ValidationFailed",
            ),
            "Unauthorized": _error("No valid API key was sent.", headers=www_authenticate),
        },
        "headers": {
            "RequestId": {
                "description": "The request's id: yours, if you sent a plain one.",
                "schema": {"type": "string"},
            }
        },
    }
    if settings.keys:
        _secure(paths)
        cookie = "GET and HEAD only (for EventSource, images and download links)."
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "An API key."},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "cookie": {"type": "apiKey", "in": "cookie", "name": COOKIE, "description": cookie},
        }
    _with_request_id(paths)
    description = (
        "Video frame extraction: submit a video, follow the job, fetch its frames. Every "
        'error is `{"detail": "..."}`; a 422\'s detail lists `{loc, msg, type}`.'
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": "vfe", "version": __version__, "description": description},
        "paths": paths,
        "components": components,
    }


async def openapi_json(request: Request) -> Response:
    """GET /openapi.json: the document, built on the first request and kept by the app."""
    state = request.app.state
    body: bytes | None = getattr(state, "openapi_document", None)
    if body is None:
        body = json.dumps(document(services(request).settings)).encode()
        state.openapi_document = body
    return Response(body, media_type="application/json")


DOCS_CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui.css.map": "application/json",
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-bundle.js.map": "application/json",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
START_JS = """\
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.url,
    domNode: root,
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
"""
PAGE = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>vfe API</title>
<link rel="stylesheet" href="{root}/docs/swagger-ui.css">
<link rel="icon" type="image/png" href="{root}/docs/favicon-32x32.png" sizes="32x32">
</head>
<body>
<div id="swagger-ui" data-url="{root}/openapi.json"></div>
<script src="{root}/docs/swagger-ui-bundle.js"></script>
<script src="{root}/docs/start.js"></script>
</body>
</html>
"""


def _asset_dir() -> Path:
    """Swagger UI's folder inside the installed package (its name carries the version)."""
    vendor = files("swagger_ui_bundle") / "vendor"
    found = sorted(p.name for p in vendor.iterdir() if p.name.startswith("swagger-ui-"))
    if not found:
        raise RuntimeError("the swagger-ui-bundle-v2 package holds no Swagger UI")
    return Path(str(vendor / found[-1]))


async def docs_page(request: Request) -> Response:
    """GET /docs: Swagger UI for /openapi.json, with assets from this server only."""
    root = request.scope.get("root_path", "").rstrip("/")
    headers = {"Content-Security-Policy": DOCS_CSP, "Cache-Control": "no-cache"}
    return HTMLResponse(PAGE.format(root=root), headers=headers)


def routes() -> list[BaseRoute]:
    """/openapi.json, /docs and Swagger UI's files under /docs/."""
    folder = _asset_dir()

    async def docs_asset(request: Request) -> Response:
        name = str(request.path_params["name"])
        headers = {"Cache-Control": "public, max-age=86400"}
        if name == "start.js":
            return Response(START_JS, media_type="text/javascript", headers=headers)
        if name not in ASSETS:
            raise NotFound("Not Found")
        return FileResponse(folder / name, media_type=ASSETS[name], headers=headers)

    return [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs_page, methods=["GET"]),
        Route("/docs/{name}", docs_asset, methods=["GET"]),
    ]
