"""The OpenAPI document and Swagger UI: a valid OpenAPI 3.1 document that lists every
route, takes JobSpec's schema from pydantic, and that real answers (a real job on a real
clip) conform to; /docs served from local files only, and rendering in Chromium with no
network but this server's."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx import Response
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV31SpecValidator
from starlette.routing import Route

from tests.conftest import AppClient, LiveServer, Media, place
from vfe.app import ENDPOINTS, create_app
from vfe.auth import is_public
from vfe.endpoints import Query
from vfe.models import Frame, Job, JobSpec, JobStatus, SourceType
from vfe.openapi import REF
from vfe.openapi import document as document_of
from vfe.settings import Settings
from vfe.views import FrameView, JobView

CHROMIUM = Path("/usr/bin/chromium")


class Spec:
    """The document of a running app, and a check that an answer conforms to it."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.checked: set[tuple[str, str, int]] = set()

    def validate(self, instance: Any, schema: dict[str, Any]) -> None:
        root = {"components": self.doc["components"], **schema}
        Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(
            instance
        )

    def component(self, name: str) -> dict[str, Any]:
        return {"$ref": REF.format(model=name)}

    def check(self, method: str, template: str, res: Response) -> None:
        """The status is documented for the operation, the content type too, and a JSON
        body (or each event of a stream, and its data) validates against its schema."""
        responses = self.doc["paths"][template][method.lower()]["responses"]
        assert str(res.status_code) in responses, (method, template, res.status_code, res.text)
        answer = responses[str(res.status_code)]
        if "$ref" in answer:
            answer = self.doc["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
        content = answer.get("content")
        if not content:
            assert res.content == b""
            return
        media_type = res.headers["content-type"].split(";")[0].strip()
        assert media_type in content, (template, res.status_code, media_type)
        schema = content[media_type].get("schema")
        if media_type == "application/json":
            self.validate(res.json(), schema)
        elif media_type == "text/event-stream":
            events = parse_events(res.text)
            assert events
            for event in events:
                self.validate(event, schema)
                (branch,) = [b for b in schema["oneOf"] if event["event"] in b["properties"]
                             ["event"]["enum"]]  # fmt: skip
                self.validate(json.loads(event["data"]), branch["properties"]["data"]
                              ["contentSchema"])  # fmt: skip
        self.checked.add((method, template, res.status_code))


def parse_events(text: str) -> list[dict[str, str]]:
    events = []
    for block in re.split(r"\r?\n\r?\n", text):
        event: dict[str, str] = {}
        for line in block.splitlines():
            if line and not line.startswith(":"):
                field, _, value = line.partition(":")
                event[field] = value[1:] if value.startswith(" ") else value
        if event:
            events.append(event)
    return events


def document(settings: Settings) -> dict[str, Any]:
    return document_of(settings, ENDPOINTS)


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}


async def spec_of(client: AppClient) -> Spec:
    res = await client.http.get("/openapi.json")
    assert res.status_code == 200
    assert res.headers["content-type"] == "application/json"
    return Spec(res.json())


# --- the document -----------------------------------------------------------------------


@pytest.mark.parametrize("keys", ["", "key-one,key-two"])
def test_document_is_valid_openapi_3_1(make_settings: Callable[..., Settings], keys: str):
    doc = document(make_settings(API_KEYS=keys))
    assert doc["openapi"].startswith("3.1.")
    validate(doc, cls=OpenAPIV31SpecValidator)
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_every_route_is_documented(settings: Settings):
    served = set()
    for route in create_app(settings).routes:
        if isinstance(route, Route) and route.path != "/docs/{name}":  # Swagger UI's files
            served |= {(route.path, method) for method in route.methods or () if method != "HEAD"}
    assert served == operations(document(settings))


def test_jobspec_schema_is_the_one_pydantic_generates(settings: Settings):
    schemas = document(settings)["components"]["schemas"]
    generated = JobSpec.model_json_schema(ref_template=REF)
    for name, schema in generated.pop("$defs").items():
        assert schemas[name] == schema
    assert schemas["JobSpec"] == generated

    submit = document(settings)["paths"]["/video-job"]["post"]
    content = submit["requestBody"]["content"]
    assert content["application/json"]["schema"] == {"$ref": REF.format(model="JobSpecBody")}
    body = schemas["JobSpecBody"]  # the query string may give video_source instead
    assert "required" not in body and body["properties"] == schemas["JobSpec"]["properties"]
    assert schemas["JobSpec"]["required"] == ["video_source"]
    form = content["multipart/form-data"]["schema"]["properties"]
    assert set(form) == {"file", *JobSpec.model_fields}
    # each part as its field reads it (a number is a number's text), never null: a part
    # left out is the field left out
    properties = schemas["JobSpec"]["properties"]
    for name in JobSpec.model_fields:
        assert form[name]["description"] == properties[name].get("description", ""), name
        assert "null" not in json.dumps(form[name]), name
    assert form["interval"]["type"] == "number" and form["count"]["type"] == "integer"
    assert form["reject"]["items"] == {"$ref": REF.format(model="Defect")}
    query = {p["name"] for p in submit["parameters"] if p["in"] == "query"}
    assert query == set(JobSpec.model_fields)
    headers = [p["name"] for p in submit["parameters"] if p["in"] == "header"]
    assert headers == ["Idempotency-Key"]
    assert set(submit["responses"]) == {"200", "400", "409", "413", "422", "503", "507"}


def test_views_serialize_to_their_schemas(settings: Settings):
    """A view's JSON (what is sent) validates against the schema its model declares (what
    the document shows), also for times and enums, and holds no server path."""
    doc = document(settings)
    spec = Spec(doc)
    now = time.time()
    base = {"id": "1f0c5a4e-8f0e-4c1e-9d67-7c1a7c2a9b10", "created_at": now, "updated_at": now}
    pending = Job(
        **base,
        status=JobStatus.PENDING,
        video_source="a.mp4",
        source_type=SourceType.PATH,
        source_path="/srv/a.mp4",
        interval=5.0,
    )
    finished = Job(
        **base, status=JobStatus.COMPLETED, video_source="https://example.test/a.mp4",
        source_type=SourceType.URL, source_path="/srv/x", interval=0.0, total_frames=3,
        processed_frames=3, started_at=now, finished_at=now + 1, duration=2.0, fps=25.0,
        width=320, height=240, codec="h264", attempts=1, options={"mode": "count", "count": 3},
        plan={"strategy": "select"},
    )  # fmt: skip
    for job in (pending, finished):
        view = JobView.of(job, now).model_dump(mode="json")
        assert "/srv/" not in json.dumps(view)
        spec.validate(view, spec.component("JobView"))
    assert JobView.of(finished).interval is None  # count mode: no interval
    assert JobView.of(finished).elapsed_seconds == 1.0
    frame = FrameView.of(
        Frame(job_id=pending.id, index=0, timestamp=0.04, target_time=0.0,
              filename="000000_0.000.jpg", size_bytes=10, checksum="ab" * 32)
    ).model_dump(mode="json")  # fmt: skip
    assert frame["url"] == f"/frames/{pending.id}/000000_0.000.jpg"
    spec.validate(frame, spec.component("FrameView"))
    with pytest.raises(Exception, match="Additional properties"):
        spec.validate({**view, "source_path": "/srv/x"}, spec.component("JobView"))


def _bounds(model: type[Query], name: str) -> dict[str, Any]:
    """A query field's default and bounds, read from its pydantic declaration."""
    info = model.model_fields[name]
    found: dict[str, Any] = {"default": info.default}
    for rule in info.metadata:
        for attr, key in (("ge", "minimum"), ("le", "maximum"), ("max_length", "maxLength")):
            if getattr(rule, attr, None) is not None:
                found[key] = getattr(rule, attr)
    return found


def test_query_parameters_are_the_query_models(settings: Settings):
    """Each route's query parameters in the document are its query model's fields, with
    the same defaults and bounds; the route declares them nowhere else."""
    doc = document(settings)
    declared = [ep for ep in ENDPOINTS if ep.query is not None]
    assert {ep.path for ep in declared} >= {"/jobs", "/frames/{job_id}",
                                            "/dashboard/recent-frames"}  # fmt: skip
    for ep in declared:
        assert ep.query is not None
        params = doc["paths"][ep.path][ep.method.lower()]["parameters"]
        query = {p["name"]: p for p in params if p["in"] == "query"}
        assert set(query) == set(ep.query.model_fields), ep.path
        for name, param in query.items():
            expected = _bounds(ep.query, name)
            shown = {k: param["schema"][k] for k in expected if k in param["schema"]}
            assert shown == {k: v for k, v in expected.items() if v is not None}, (ep.path, name)
            assert not param["required"]


async def test_query_models_parse_and_bound_the_query(client: AppClient):
    """The same declaration validates: inside the bounds passes, outside is a 422 naming
    the parameter, unknown parameters are ignored."""
    http = client.http
    assert (await http.get("/jobs", params={"limit": "1000", "_": "123"})).status_code == 200
    for value in ("0", "1001", "2.5", "ten", ""):
        res = await http.get("/jobs", params={"limit": value})
        assert res.status_code == 422, value
        assert res.json()["detail"][0]["loc"] == ["query", "limit"]
    res = await http.get("/dashboard/recent-frames", params={"since_minutes": "nan"})
    assert res.status_code == 422
    assert res.json()["detail"][0]["loc"] == ["query", "since_minutes"]
    res = await http.get("/dashboard/recent-frames", params={"since_minutes": "2.5"})
    assert res.json()["since_minutes"] == 2.5


def test_idempotency_key_schema_is_the_checked_one(settings: Settings):
    from vfe.api import IDEMPOTENCY_KEY

    submit = document(settings)["paths"]["/video-job"]["post"]
    (header,) = [p for p in submit["parameters"] if p["in"] == "header"]
    assert header["schema"] == IDEMPOTENCY_KEY.schema()
    assert header["schema"]["maxLength"] == 200


def test_security_is_listed_only_when_api_keys_are_set(make_settings: Callable[..., Settings]):
    open_doc = document(make_settings())
    assert "securitySchemes" not in open_doc["components"]
    assert not [op for ops in open_doc["paths"].values() for op in ops.values()
                if "security" in op or "401" in op["responses"]]  # fmt: skip

    doc = document(make_settings(API_KEYS="k"))
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey", "cookie"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if is_public(path):
                assert "security" not in op and "401" not in op["responses"], path
            else:
                schemes = {name for requirement in op["security"] for name in requirement}
                assert {"bearer", "apiKey"} <= schemes, path
                assert ("cookie" in schemes) == (method == "get"), path
                assert "401" in op["responses"], path
    public = {path for path in doc["paths"] if is_public(path)}
    assert public == {"/", "/health", "/health/live", "/health/ready", "/openapi.json", "/docs"}


async def test_document_is_built_once_per_app(client: AppClient):
    first = await client.http.get("/openapi.json")
    second = await client.http.get("/openapi.json")
    assert first.content == second.content
    assert client.app.state.openapi_document == first.content


# --- real answers conform --------------------------------------------------------------


async def test_real_answers_conform_to_the_document(client: AppClient, media: Media, videos: Path):
    spec = await spec_of(client)
    http = client.http
    name = place(media.standard(), videos)

    res = await http.post("/video-job", json={"video_source": name, "interval": 0.5,
                                              "storyboard": True})  # fmt: skip
    spec.check("POST", "/video-job", res)
    job_id = res.json()["job_id"]
    await client.wait(job_id)
    for url, template in [
        (f"/job-status/{job_id}", "/job-status/{job_id}"),
        (f"/job-status/{job_id}/events", "/job-status/{job_id}/events"),
        ("/jobs", "/jobs"),
        (f"/frames/{job_id}", "/frames/{job_id}"),
        ("/dashboard/recent-frames", "/dashboard/recent-frames"),
        (f"/dashboard/recent-frames?job_id={job_id}&since_minutes=1.5", "/dashboard/recent-frames"),
        ("/videos", "/videos"),
        ("/health", "/health"),
        ("/health/live", "/health/live"),
        ("/health/ready", "/health/ready"),
        ("/metrics", "/metrics"),
        (f"/job/{job_id}/frames.zip", "/job/{job_id}/frames.zip"),
        (f"/job/{job_id}/storyboard.vtt", "/job/{job_id}/storyboard.vtt"),
        (f"/job/{job_id}/storyboard.json", "/job/{job_id}/storyboard.json"),
        (f"/job/{job_id}/storyboard/0.jpg", "/job/{job_id}/storyboard/{n}.jpg"),
        ("/", "/"),
        ("/docs", "/docs"),
        ("/openapi.json", "/openapi.json"),
    ]:
        res = await http.get(url)
        assert res.status_code == 200, (url, res.text)
        spec.check("GET", template, res)

    frames = (await http.get(f"/frames/{job_id}")).json()["frames"]
    assert len(frames) == 4
    image = await http.get(frames[0]["url"])
    spec.check("GET", "/frames/{job_id}/{name}", image)
    again = await http.get(frames[0]["url"], headers={"If-None-Match": image.headers["etag"]})
    assert again.status_code == 304
    spec.check("GET", "/frames/{job_id}/{name}", again)

    for method, url, template, status, kwargs in [
        ("POST", "/video-job", "/video-job", 400, {"json": {"video_source": "missing.mp4"}}),
        ("POST", "/video-job", "/video-job", 400, {"content": b"[1]"}),
        ("POST", "/video-job", "/video-job", 422, {"json": {"video_source": name, "fps": 0}}),
        ("POST", "/video-job", "/video-job", 413, {"content": b" " * (65 * 1024)}),
        ("POST", "/video-job", "/video-job", 422,
         {"json": {"video_source": name}, "headers": {"Idempotency-Key": "\x7f"}}),
        ("GET", "/jobs?limit=0", "/jobs", 422, {}),
        ("GET", "/job-status/not-a-uuid", "/job-status/{job_id}", 404, {}),
        ("GET", f"/frames/{job_id}?offset=-1", "/frames/{job_id}", 422, {}),
        ("GET", f"/frames/{job_id}/999999_9.000.jpg", "/frames/{job_id}/{name}", 404, {}),
        ("GET", "/dashboard/recent-frames?since_minutes=nan", "/dashboard/recent-frames", 422, {}),
        ("POST", f"/job/{job_id}/webhook", "/job/{job_id}/webhook", 404, {}),  # it has none
        ("DELETE", f"/job/{job_id}", "/job/{job_id}", 200, {}),
        ("DELETE", f"/job/{job_id}", "/job/{job_id}", 404, {}),
        ("GET", f"/job/{job_id}/frames.zip", "/job/{job_id}/frames.zip", 404, {}),
        ("GET", f"/job/{job_id}/storyboard.vtt", "/job/{job_id}/storyboard.vtt", 404, {}),
        ("GET", f"/job-status/{job_id}/events", "/job-status/{job_id}/events", 404, {}),
    ]:  # fmt: skip
        res = await http.request(method, url, **kwargs)
        assert res.status_code == status, (method, url, res.status_code, res.text)
        spec.check(method, template, res)
    answered = {(template, method) for method, template, _ in spec.checked}
    assert answered == operations(spec.doc) - {("/events", "GET")}  # it never ends by itself


async def test_unauthorized_answers_conform(
    make_client: Callable[[Settings], AppClient], make_settings: Callable[..., Settings]
):
    async with make_client(make_settings(API_KEYS="the-key")) as client:
        spec = await spec_of(client)
        res = await client.http.get("/jobs")
        assert res.status_code == 401
        spec.check("GET", "/jobs", res)
        res = await client.http.post("/video-job", json={})
        spec.check("POST", "/video-job", res)
        assert res.status_code == 401
        assert (await client.http.get("/jobs", headers={"X-API-Key": "the-key"})).is_success
        for public in ("/docs", "/docs/swagger-ui-bundle.js", "/docs/start.js", "/health"):
            assert (await client.http.get(public)).status_code == 200, public


# --- Swagger UI -------------------------------------------------------------------------


async def test_docs_page_uses_only_local_assets_that_answer(client: AppClient):
    res = await client.http.get("/docs")
    assert res.status_code == 200
    assert res.headers["content-type"].startswith("text/html")
    csp = res.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    page = res.text
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)
    refs = re.findall(r'(?:src|href|data-url)="([^"]*)"', page)
    assert "/openapi.json" in refs
    assert "/docs/swagger-ui-bundle.js" in refs and "/docs/swagger-ui.css" in refs
    for ref in refs:
        assert ref.startswith("/") and not ref.startswith("//"), ref
        asset = await client.http.get(ref)
        assert asset.status_code == 200, ref
        assert len(asset.content) > 0
    kinds = {ref: (await client.http.get(ref)).headers["content-type"] for ref in refs}
    assert kinds["/docs/swagger-ui-bundle.js"].startswith("text/javascript")
    assert kinds["/docs/swagger-ui.css"].startswith("text/css")


@pytest.mark.parametrize("name", ["index.html", "swagger-initializer.js", "%2e%2e", "x.js"])
async def test_docs_serves_only_its_allow_list(client: AppClient, name: str):
    res = await client.http.get(f"/docs/{name}")
    assert res.status_code == 404
    assert res.json() == {"detail": "Not Found"}


async def test_docs_page_follows_the_root_path(client: AppClient):
    transport = httpx.ASGITransport(app=client.app, root_path="/vfe")
    async with httpx.AsyncClient(transport=transport, base_url="http://vfe.test") as http:
        page = (await http.get("/vfe/docs")).text
    assert 'src="/vfe/docs/swagger-ui-bundle.js"' in page
    assert 'data-url="/vfe/openapi.json"' in page


@pytest.mark.live
@pytest.mark.browser
@pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="Debian's Chromium (/usr/bin/chromium) is not installed",
)
def test_swagger_ui_renders_offline_under_its_csp(live_server: Callable[..., LiveServer]):
    from playwright.sync_api import Request, expect, sync_playwright

    server = live_server(API_KEYS="the-key")
    server_doc = httpx.get(f"{server.url}/openapi.json").json()
    outside: list[str] = []
    problems: list[str] = []

    def only_this_server(route: Route, request: Request) -> None:
        if request.url.startswith(server.url + "/"):
            route.continue_()
        else:
            outside.append(request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.route("**/*", only_this_server)
            page.goto(f"{server.url}/docs")
            expect(page.locator(".opblock-summary-path", has_text="/video-job")).to_be_visible(
                timeout=15_000
            )
            expect(page.locator(".opblock")).to_have_count(len(operations(server_doc)))
            expect(page.locator("button.authorize")).to_be_visible()
        finally:
            browser.close()
    assert outside == []
    assert problems == []
