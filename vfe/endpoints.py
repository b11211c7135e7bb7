"""Route declarations: each endpoint says once what it takes and what it answers.

An ``Endpoint`` names its method and path, its path parameters, its query model (a
pydantic model that also parses and validates the query string), its header parameters,
its body and its answers (a status with a view model, media types or events).
``Endpoint.route`` turns it into a Starlette route that checks the path and the query
before the handler runs and renders the view the handler returns; ``openapi.py`` turns
the same declarations into the document. So a bound, a default or an enum is written in
one place, and the document cannot promise what the route does not check.

A handler takes the request (and the parsed query, when the endpoint declares a query
model) and returns a view model (sent as 200 JSON) or a finished ``Response``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .errors import NotFound, ValidationFailed
from .views import Error

Json = dict[str, Any]
Handler = Callable[..., Awaitable[BaseModel | Response]]
PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")


class Query(BaseModel):
    """Base of a route's query model. Parameters it does not name are ignored, so a
    cache-buster such as ``&_=123`` never breaks a client."""

    model_config = ConfigDict(extra="ignore", frozen=True)


def field_errors(
    exc: ValidationError, origin: Mapping[str, str] | str, where: Sequence[str | int] = ()
) -> list[dict[str, Any]]:
    """pydantic's errors as vfe's ``{loc, msg, type}`` list. ``loc`` starts with where the
    field came from: ``origin`` names it for every field, or per field (default body)."""
    errors = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        name = str(err["loc"][0]) if err["loc"] else ""
        source = origin if isinstance(origin, str) else origin.get(name, "body")
        msg = str(err["msg"])
        for prefix in PYDANTIC_PREFIXES:
            msg = msg.removeprefix(prefix)
        errors.append({"loc": [source, *where, *err["loc"]], "msg": msg, "type": err["type"]})
    return errors


@dataclass(frozen=True)
class PathParam:
    """A path parameter: its schema, and the check that answers 404 when it fails."""

    name: str
    schema: Json
    description: str
    valid: Callable[[str], bool]
    not_found: str


@dataclass(frozen=True)
class Header:
    """A request header the endpoint reads; ``adapter`` validates it (422 when wrong)."""

    name: str
    description: str
    adapter: TypeAdapter[Any] | None = None
    hint: str = ""  # when set, the 422 message: what a good value looks like

    def read(self, request: Request) -> Any:
        """The header's value (None when absent), validated by ``adapter``."""
        raw = request.headers.get(self.name)
        if raw is None or self.adapter is None:
            return raw
        try:
            return self.adapter.validate_python(raw)
        except ValidationError as exc:
            errors = field_errors(exc, "header", [self.name])
            if self.hint:
                errors = [{**e, "msg": self.hint} for e in errors]
            raise ValidationFailed(errors) from None

    def schema(self) -> Json:
        if self.adapter is None:
            return {"type": "string"}
        return {k: v for k, v in self.adapter.json_schema().items() if k != "title"}


@dataclass(frozen=True)
class Answer:
    """One documented answer: JSON of ``model``, other ``media`` types, or, for a stream,
    ``events`` (each event's data model and the event names that carry it)."""

    status: int
    description: str
    model: type[BaseModel] | None = None
    media: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()
    events: Mapping[type[BaseModel], Sequence[str]] | None = None
    links: Mapping[str, str] | None = None  # link name -> operationId taking this job_id


@dataclass(frozen=True)
class Body:
    """A request body given as JSON (the model), as query fields, or as a multipart form
    whose ``upload`` part carries a file in place of the ``replaces`` field."""

    model: type[BaseModel]
    example: Json
    upload: str
    replaces: str


@dataclass(frozen=True)
class Endpoint:
    """One route's declaration; see the module docstring."""

    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    answers: tuple[Answer, ...]
    params: tuple[PathParam, ...] = ()
    query: type[Query] | None = None
    headers: tuple[Header, ...] = ()
    body: Body | None = None
    description: str = ""

    def parse_query(self, request: Request) -> Query | None:
        """The query string as the endpoint's query model; 422 naming each bad field."""
        if self.query is None:
            return None
        try:
            return self.query.model_validate(dict(request.query_params))
        except ValidationError as exc:
            raise ValidationFailed(field_errors(exc, "query")) from None

    def route(self) -> Route:
        """The Starlette route that checks the path and query, then runs the handler."""

        async def run(request: Request) -> Response:
            for param in self.params:
                if not param.valid(str(request.path_params[param.name])):
                    raise NotFound(param.not_found)
            query = self.parse_query(request)
            result = await (self.handler(request) if query is None
                            else self.handler(request, query))  # fmt: skip
            return result if isinstance(result, Response) else answer(result)

        run.__name__ = run.__qualname__ = self.handler.__name__
        run.__doc__ = self.handler.__doc__
        return Route(self.path, run, methods=[self.method])


def endpoint(
    method: str,
    path: str,
    operation_id: str,
    summary: str,
    *answers: Answer,
    params: tuple[PathParam, ...] = (),
    query: type[Query] | None = None,
    headers: tuple[Header, ...] = (),
    body: Body | None = None,
    description: str = "",
) -> Callable[[Handler], Endpoint]:
    """Declare the decorated handler as the endpoint ``method path``."""

    def declare(handler: Handler) -> Endpoint:
        return Endpoint(method, path, handler, operation_id, summary, answers, params, query,
                        headers, body, description)  # fmt: skip

    return declare


def answer(
    view: BaseModel, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``view`` as a JSON response."""
    return Response(
        view.model_dump_json(), status_code=status, headers=headers, media_type="application/json"
    )


def ok(model: type[BaseModel], description: str, **extra: Any) -> Answer:
    return Answer(200, description, model, **extra)


def error(status: int, description: str, **extra: Any) -> Answer:
    """An error answer: ``{"detail": "..."}``."""
    return Answer(status, description, Error, **extra)
