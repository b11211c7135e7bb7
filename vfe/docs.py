"""``GET /docs``: Swagger UI for ``/openapi.json``, served offline.

Swagger UI's files come from the ``swagger-ui-bundle-v2`` package (Swagger UI 5, which
reads OpenAPI 3.1; the original ``swagger-ui-bundle`` ships 4.x, which does not) and are
served from an allow-list under ``/docs/``. The page has no inline script, so it works
under the strict ``Content-Security-Policy`` it is sent with; it needs no network beyond
this server.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from .endpoints import Answer, endpoint
from .errors import NotFound

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


@endpoint("GET", "/docs", "getDocs", "This document in Swagger UI",
          Answer(200, "The page.", media=("text/html",)))  # fmt: skip
async def docs_page(request: Request) -> Response:
    """GET /docs: Swagger UI for /openapi.json, with assets from this server only."""
    root = request.scope.get("root_path", "").rstrip("/")
    headers = {"Content-Security-Policy": DOCS_CSP, "Cache-Control": "no-cache"}
    return HTMLResponse(PAGE.format(root=root), headers=headers)


def asset_route() -> BaseRoute:
    """``/docs/{name}``: Swagger UI's files (not an API route, so not in the document)."""
    folder = _asset_dir()

    async def docs_asset(request: Request) -> Response:
        name = str(request.path_params["name"])
        headers = {"Cache-Control": "public, max-age=86400"}
        if name == "start.js":
            return Response(START_JS, media_type="text/javascript", headers=headers)
        if name not in ASSETS:
            raise NotFound("Not Found")
        return FileResponse(folder / name, media_type=ASSETS[name], headers=headers)

    return Route("/docs/{name}", docs_asset, methods=["GET"])
