"""Access control: API keys, checked before any route runs.

When ``API_KEYS`` is set, a request needs ``Authorization: Bearer <key>`` or
``X-API-Key: <key>``. GET and HEAD requests may carry the key in the ``vfe_api_key``
cookie instead, because a browser's ``EventSource``, ``<img>`` and download links cannot
send headers; the dashboard sets that cookie (``SameSite=Strict``, so other sites cannot
make a browser send it), and requests that change anything still need a header.

Public without a key: the dashboard page and its files, ``/health`` (and ``/health/*``),
``/docs`` and ``/openapi.json``. Keys are compared in constant time (each candidate
against every key, so the time does not tell which key came close), never logged, and a
missing key gets the same answer as a wrong one.
"""

from __future__ import annotations

import hmac
import json
from http.cookies import CookieError, SimpleCookie

from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "vfe_api_key"
PUBLIC_PATHS = frozenset({"/", "/health", "/openapi.json", "/docs", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/", "/health/", "/docs/")
UNAUTHORIZED = "a valid API key is required: send Authorization: Bearer <key> or X-API-Key: <key>"


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def presented_keys(scope: Scope) -> list[str]:
    """Every key the request offers: headers always, the cookie on GET and HEAD only."""
    found: list[str] = []
    cookie_header = ""
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name == "authorization":
            scheme, _, credentials = value.strip().partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                found.append(credentials.strip())
        elif name == "x-api-key" and value.strip():
            found.append(value.strip())
        elif name == "cookie":
            cookie_header += value + ";"
    if cookie_header and scope.get("method") in ("GET", "HEAD"):
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(cookie_header)
        except CookieError:
            pass
        else:
            if COOKIE in jar and jar[COOKIE].value:
                found.append(jar[COOKIE].value)
    return found


def key_matches(candidates: list[str], keys: tuple[str, ...]) -> bool:
    """True when any candidate equals any key; every pair is compared, in constant time."""
    matched = False
    for candidate in candidates:
        for key in keys:
            matched |= hmac.compare_digest(candidate.encode(), key.encode())
    return matched


class ApiKeyMiddleware:
    """ASGI middleware: 401 for requests without a valid key (HTTP only; streams pass)."""

    def __init__(self, app: ASGIApp, keys: tuple[str, ...]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.keys
            or is_public(scope["path"])
            or key_matches(presented_keys(scope), self.keys)
        ):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": UNAUTHORIZED}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="vfe"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
