"""``GET /openapi.json``: the OpenAPI 3.1 document, derived from the endpoints' declarations.

Nothing here describes a field, a bound or a default: the paths come from each
``Endpoint`` (its path parameters, query model, headers, body and answers) and the schemas
from the pydantic models those name (``JobSpec`` and the views), so the document says
what the routes check and send. A 422 answer is listed wherever a query model, a body or
a checked header can fail validation.

The document is built once per app, on its first request, from the running settings:
security requirements and ``401`` answers are listed only when ``API_KEYS`` is set, on
every route ``auth.is_public`` does not exempt.

Two deliberate oddities: an event stream's schema describes one event (``event`` and
``data``, whose ``contentSchema`` is the JSON it carries), as OpenAPI 3.1 tools read it;
and operations with header parameters also list the 400 the HTTP server itself sends for
a request it cannot parse (a control character in a header; ``server.py`` makes it JSON).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.requests import Request
from starlette.responses import Response

from . import __version__
from .auth import COOKIE, is_public
from .endpoints import Answer, Body, Endpoint, Json, endpoint
from .services import services
from .settings import Settings
from .views import Error, Invalid

REF = "#/components/schemas/{model}"
MALFORMED = (
    "The HTTP server itself answers `Invalid HTTP request received.` to a request it cannot "
    "parse, such as one with a control character in a header."
)
INVALID = Answer(422, "A field is out of range, of the wrong type, missing or unknown.", Invalid)
TEXT = {"schema": {"type": "string"}}
OBJECT = {"schema": {"type": "object"}}


def _models(endpoints: Iterable[Endpoint]) -> list[type[BaseModel]]:
    """Every model the endpoints name, each once, in a stable order."""
    found: dict[type[BaseModel], None] = {Error: None, Invalid: None}
    for ep in endpoints:
        if ep.body is not None:
            found[ep.body.model] = None
        for answer in ep.answers:
            if answer.model is not None:
                found[answer.model] = None
            found.update(dict.fromkeys(answer.events or {}))
    return list(found)


def _schemas(models: Sequence[type[BaseModel]]) -> Json:
    """``components.schemas``: the models' schemas, sharing their enums."""
    mode: JsonSchemaMode = "validation"
    _, top = models_json_schema([(m, mode) for m in models], ref_template=REF)
    found: Json = top["$defs"]
    return found


def _param(name: str, where: str, schema: Json, description: str, required: bool) -> Json:
    found: Json = {"name": name, "in": where, "required": required, "schema": schema}
    if schema.get("type") == "array":  # a list in a query string: comma-separated
        found.update(style="form", explode=False)
    return {**found, "description": description} if description else found


def _not_null(schema: Json) -> Json:
    """A property's schema without its ``null`` branch (a query string has no null)."""
    schema = {k: v for k, v in schema.items() if k not in ("title", "description")}
    if schema.get("default", 0) is None:
        del schema["default"]
    branches = [b for b in schema.pop("anyOf", []) if b != {"type": "null"}]
    return {**branches[0], **schema} if branches else schema


def _query(model: type[BaseModel], optional: bool = False) -> list[Json]:
    """One query parameter per field of ``model`` (``optional``: none is required)."""
    schema = model.model_json_schema(ref_template=REF)
    required = set() if optional else set(schema.get("required", ()))
    return [
        _param(name, "query", _not_null(prop), prop.get("description", ""), name in required)
        for name, prop in schema["properties"].items()
    ]


def _json(description: str, model: type[BaseModel], **extra: Any) -> Json:
    content = {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}}
    return {"description": description, "content": content, **extra}


def _stream(description: str, events: Mapping[type[BaseModel], Sequence[str]]) -> Json:
    """A Server-Sent Events response; its schema is one event's (as OpenAPI 3.1 has it):
    the event's name, and its data, the JSON of the model that carries it."""
    one_of = [
        {
            "type": "object",
            "properties": {
                "event": {"enum": list(names)},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {"$ref": REF.format(model=model.__name__)},
                },
            },
            "required": ["event", "data"],
            "additionalProperties": False,
        }
        for model, names in events.items()
    ]
    content = {"text/event-stream": {"schema": {"oneOf": one_of}}}
    return {"description": description, "content": content}


def _response(answer: Answer) -> Json:
    extra: Json = {}
    if answer.headers:
        extra["headers"] = {name: TEXT for name in answer.headers}
    if answer.links:
        extra["links"] = {
            name: {"operationId": op, "parameters": {"job_id": "$response.body#/job_id"}}
            for name, op in answer.links.items()
        }
    if answer.events is not None:
        return {**_stream(answer.description, answer.events), **extra}
    if answer.model is not None:
        return _json(answer.description, answer.model, **extra)
    if answer.media:
        content = {t: _media(t) for t in answer.media}
        return {"description": answer.description, "content": content, **extra}
    return {"description": answer.description, **extra}


def _media(media_type: str) -> Json:
    """The content of a body that no model describes: text, a JSON object, or bytes."""
    if media_type.startswith("text/"):
        return TEXT
    return OBJECT if media_type == "application/json" else {}


def _body_name(body: Body) -> str:
    return f"{body.model.__name__}Body"


def _body_schema(body: Body, schemas: Json) -> Json:
    """The JSON body's schema: the model's, with no field required, since the query
    string may give any of them (the merged fields are then checked by the model)."""
    found = {k: v for k, v in schemas[body.model.__name__].items() if k != "required"}
    note = "Every field may come in the query string instead; the merged fields must hold "
    return {**found, "description": note + f"the rules of {body.model.__name__}."}


def _form_field(prop: Json) -> Json:
    """A field of the model as a part of a multipart form: its own schema (a part is text,
    read as the model reads it), not nullable (a part left out is the field left out)."""
    plain = {k: v for k, v in prop.items() if k not in ("anyOf", "default", "title")}
    options = [o for o in prop.get("anyOf", [plain]) if o.get("type") != "null"]
    return {**(options[0] if len(options) == 1 else {"anyOf": options}), **plain}


def _request_body(body: Body) -> Json:
    """JSON of the model, or a multipart form: the upload part and the fields."""
    fields = body.model.model_json_schema(ref_template=REF)["properties"]
    form_fields = {name: _form_field(prop) for name, prop in fields.items()}
    form = {
        "type": "object",
        "properties": {body.upload: {"type": "string", "format": "binary"}, **form_fields},
        "additionalProperties": False,
    }
    schema = {"$ref": REF.format(model=_body_name(body))}
    content = {
        "application/json": {"schema": schema, "example": body.example},
        "multipart/form-data": {"schema": form},
    }
    return {"required": False, "content": content}


def _operation(ep: Endpoint) -> Json:
    params = [_param(p.name, "path", p.schema, p.description, True) for p in ep.params]
    if ep.query is not None:
        params += _query(ep.query)
    if ep.body is not None:  # the body's fields may come in the query string too
        params += _query(ep.body.model, optional=True)
    params += [_param(h.name, "header", h.schema(), h.description, False) for h in ep.headers]
    responses = {str(a.status): _response(a) for a in ep.answers}
    if ep.query is not None or ep.body is not None or any(h.adapter for h in ep.headers):
        responses["422"] = _response(INVALID)
    if ep.headers:  # uvicorn's own answer to a header it cannot parse
        found = responses.get("400")
        if found is None:
            responses["400"] = _json(MALFORMED, Error)
        else:
            found["description"] += " " + MALFORMED
    op: Json = {"operationId": ep.operation_id, "summary": ep.summary}
    if ep.description:
        op["description"] = ep.description
    if params:
        op["parameters"] = params
    if ep.body is not None:
        op["requestBody"] = _request_body(ep.body)
    return {**op, "responses": dict(sorted(responses.items()))}


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


def document(settings: Settings, endpoints: Sequence[Endpoint]) -> Json:
    """The OpenAPI 3.1 document of a vfe app serving ``endpoints`` with ``settings``."""
    paths: dict[str, Json] = {}
    for ep in endpoints:
        paths.setdefault(ep.path, {})[ep.method.lower()] = copy.deepcopy(_operation(ep))
    www_authenticate = {"WWW-Authenticate": TEXT}
    schemas = _schemas(_models(endpoints))
    for ep in endpoints:
        if ep.body is not None:
            schemas[_body_name(ep.body)] = _body_schema(ep.body, schemas)
    components: Json = {
        "schemas": schemas,
        "responses": {
            "Unauthorized": _json("No valid API key was sent.", Error, headers=www_authenticate),
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


@endpoint("GET", "/openapi.json", "getOpenapi", "This document",
          Answer(200, "OpenAPI 3.1.", media=("application/json",)))  # fmt: skip
async def openapi_json(request: Request) -> Response:
    """GET /openapi.json: the document, built on the first request and kept by the app."""
    state = request.app.state
    body: bytes | None = getattr(state, "openapi_document", None)
    if body is None:
        body = json.dumps(document(services(request).settings, state.endpoints)).encode()
        state.openapi_document = body
    return Response(body, media_type="application/json")
