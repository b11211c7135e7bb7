"""Download an http(s) video URL to local disk, so FFmpeg only ever reads a local copy.

The address check sits at the socket layer: ``GuardedBackend`` is the httpcore network
backend of the connection pool, so every connection (redirects included) is made by it.
It resolves the host itself, refuses when any resolved address is not allowed by the
``AddressPolicy`` (a name with one public and one private answer is refused), connects to
the checked address, and checks the connected peer again. TLS still verifies the URL's
host name: httpcore passes it to ``start_tls`` separately from the address.

httpcore is used directly rather than through ``httpx.AsyncClient`` because httpx's
transports do not accept a network backend; redirects are followed here, at most
``max_redirects``, http(s) only. httpcore reads no proxy settings from the environment.
The body is streamed to a generated name under ``dest_dir`` and cut off at ``max_bytes``;
the whole download runs under one time limit, and the partial file is removed on any
failure or cancellation.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import ipaddress
import re
import socket
import ssl
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpcore
import httpx

from . import __version__
from .errors import BadRequest, PayloadTooLarge, VfeError
from .networks import Address, AddressPolicy
from .sources import display_name

MAX_URL_LENGTH = 2048
WRITE_BYTES = 1024 * 1024  # gather this much before each write to disk
REDIRECTS = frozenset({301, 302, 303, 307, 308})
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_SCHEMES = "only http:// and https:// URLs are accepted as video_source"


@dataclass(frozen=True)
class Downloaded:
    """A finished download. ``final_url`` is the URL after redirects (it may carry a
    query string: do not put it in messages); ``filename`` is only for display."""

    path: Path
    size: int
    final_url: str
    filename: str
    sha256: str  # of the body, computed as it streamed in


def is_url(text: str) -> bool:
    """Whether ``text`` looks like ``scheme://...`` rather than a local path."""
    return _URL.match(text) is not None


def check_url(url: str) -> str:
    """Syntax checks only (scheme, host, no user name or password, length); returns the
    normalised URL without its fragment, or raises ``BadRequest``."""
    if len(url) > MAX_URL_LENGTH:
        raise BadRequest(f"the URL is too long (at most {MAX_URL_LENGTH} characters)")
    if not url.lower().startswith(("http://", "https://")):
        raise BadRequest(_SCHEMES)
    if any(ch.isspace() or not ch.isprintable() or ch == "\\" for ch in url):
        raise BadRequest("the URL contains spaces, control characters or backslashes; encode them")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise BadRequest("the URL is not valid; check its host name and port") from None
    if parsed.userinfo:
        raise BadRequest("URLs with a user name or password are refused; remove them from the URL")
    if not parsed.host:
        raise BadRequest("the URL has no host")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise BadRequest("the URL's port must be between 1 and 65535")
    return str(parsed.copy_with(fragment=None))


class Blocked(Exception):
    """The host is or resolves to an address the policy refuses."""

    def __init__(self, host: str, address: Address | None) -> None:
        super().__init__(host)
        self.host = host
        self.address = address


class Unresolved(Exception):
    """The host name could not be resolved."""


class _Unreachable(Exception):
    """No resolved address accepted a connection."""


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's asyncio backend, connecting only to addresses ``policy`` permits."""

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy
        self.inner: httpcore.AsyncNetworkBackend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve ``host``, refuse if any address is not permitted, connect to the first
        address that answers, and check the connected peer again. Waits at most
        ``timeout`` for each step (the caller bounds the whole download)."""
        addresses = await self.resolve(host, port, timeout)
        for address in addresses:
            if not self.policy.permits(address):
                raise Blocked(host, address)
        for address in addresses:
            try:
                stream = await self.inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout):
                continue
            peer = _address(stream.get_extra_info("server_addr"))
            if peer is None or not self.policy.permits(peer):
                await stream.aclose()
                raise Blocked(host, peer)
            return stream
        raise _Unreachable(f"{host} port {port}")

    async def resolve(self, host: str, port: int, limit: float | None) -> list[Address]:
        """Every address ``host`` resolves to (waits at most ``limit``); ``Unresolved``
        when there is none, ``Blocked`` for one that is not an IP address."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(limit):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError, TimeoutError):
            raise Unresolved(host) from None
        addresses: list[Address] = []
        for info in infos:
            address = _address(info[4])
            if address is None:
                raise Blocked(host, None)  # not an IP socket address: refuse
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise Unresolved(host)
        return addresses

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise Blocked(path, None)  # never configured; refuse rather than connect

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _address(sockaddr: object) -> Address | None:
    """The IP address of a socket address tuple, or None."""
    if not isinstance(sockaddr, tuple) or not sockaddr or not isinstance(sockaddr[0], str):
        return None
    try:
        return ipaddress.ip_address(sockaddr[0])
    except ValueError:
        return None


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """TLS as httpx verifies it by default, without the environment's proxy settings."""
    return httpx.create_ssl_context(trust_env=False)


async def download(
    url: str,
    dest_dir: Path,
    *,
    max_bytes: int,
    timeout: float,  # noqa: ASYNC109 - the settings' name; applied with asyncio.timeout below
    policy: AddressPolicy,
    max_redirects: int = 5,
) -> Downloaded:
    """Download ``url`` to a new file under ``dest_dir``, following redirects.

    Waits at most ``timeout`` seconds in all (resolving, connecting, redirects and the
    body). Raises ``BadRequest`` for a bad or refused URL, a non-2xx answer, a network or
    TLS failure, or the time limit; ``PayloadTooLarge`` when the body passes
    ``max_bytes`` (at once when Content-Length says it will). On any failure, and on
    cancellation, the partial file is removed.
    """
    current = check_url(url)
    target = dest_dir / f"{uuid.uuid4().hex}.download"
    digest = hashlib.sha256()
    try:
        async with asyncio.timeout(timeout):
            size, final_url = await _fetch(
                current, target, max_bytes, timeout, policy, max_redirects, digest
            )
    except BaseException as exc:
        target.unlink(missing_ok=True)  # synchronous on purpose: it must also run when cancelled
        if isinstance(exc, TimeoutError | httpcore.TimeoutException):
            raise BadRequest(
                f"downloading the video took longer than {timeout:g} s (URL_TIMEOUT_SECONDS)"
            ) from None
        raise
    name = _last_segment(final_url) or _last_segment(current) or httpx.URL(current).host
    return Downloaded(target, size, final_url, display_name(name), digest.hexdigest())


async def _fetch(
    url: str,
    target: Path,
    max_bytes: int,
    step_limit: float,
    policy: AddressPolicy,
    max_redirects: int,
    digest: Any,
) -> tuple[int, str]:
    """Follow redirects from ``url`` and stream the final body to ``target``."""
    headers = [
        (b"User-Agent", f"vfe/{__version__}".encode()),
        (b"Accept", b"*/*"),
        (b"Accept-Encoding", b"identity"),  # the size cap counts the bytes stored
    ]
    extensions = {"timeout": dict.fromkeys(("connect", "read", "write", "pool"), step_limit)}
    pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context(), network_backend=GuardedBackend(policy), retries=0
    )
    async with pool:
        for hop in range(max_redirects + 1):
            parsed = httpx.URL(url)
            request_url = httpcore.URL(
                scheme=parsed.raw_scheme,
                host=parsed.raw_host,
                port=parsed.port,
                target=parsed.raw_path,
            )
            try:
                async with pool.stream(
                    "GET", request_url, headers=headers, extensions=extensions
                ) as response:
                    status = response.status
                    if status in REDIRECTS:
                        url = _redirect(parsed, response.headers)
                        continue
                    if not 200 <= status < 300:
                        raise BadRequest(f"the URL answered {status}; it must answer 200")
                    length = _content_length(response.headers)
                    if length is not None and length > max_bytes:
                        raise PayloadTooLarge(_too_large(max_bytes))
                    try:
                        size = await _save(response, target, max_bytes, digest)
                    except OSError as exc:  # the disk, not the URL: a server error
                        raise VfeError("the downloaded video could not be stored") from exc
                    return size, url
            except Blocked as exc:
                raise BadRequest(blocked_message(exc, redirected=hop > 0)) from None
            except Unresolved as exc:
                raise BadRequest(f"the host {exc} could not be found (DNS lookup failed)") from None
            except _Unreachable as exc:
                raise BadRequest(f"could not connect to {exc}; check the host and port") from None
            except httpcore.TimeoutException:
                raise
            except httpcore.ConnectError as exc:
                raise BadRequest(_connect_failed(parsed.host, exc)) from None
            except (httpcore.NetworkError, httpcore.ProtocolError):
                raise BadRequest(
                    f"the connection to {parsed.host} failed during the download"
                ) from None
    raise BadRequest(f"the URL redirected more than {max_redirects} times")


def _redirect(parsed: httpx.URL, headers: list[tuple[bytes, bytes]]) -> str:
    """The checked next URL of a redirect answer."""
    location = next((v for k, v in headers if k.lower() == b"location"), None)
    if location is None:
        raise BadRequest("the URL answered with a redirect without a Location header")
    try:
        joined = parsed.join(location.decode("latin-1"))
    except httpx.InvalidURL:
        raise BadRequest("the URL redirected to an invalid address") from None
    try:
        return check_url(str(joined))
    except BadRequest as exc:
        raise BadRequest(f"the URL redirected to an address that is refused: {exc}") from None


async def _save(response: httpcore.Response, target: Path, max_bytes: int, digest: Any) -> int:
    """Stream the body to ``target`` (created new), feeding ``digest``; return its size.

    The file is opened on the loop (one quick call): an open in a thread that is
    cancelled would hand back a file nobody closes. Writes run in a thread and are
    shielded; when cancelled mid-write, the file is closed once that write is done, never
    under it."""
    handle: IO[bytes] = target.open("xb", buffering=0)  # on the loop: see above
    writing: asyncio.Future[None] | None = None
    try:
        size = 0
        pending = bytearray()
        async for chunk in response.aiter_stream():
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(_too_large(max_bytes))
            pending += chunk
            digest.update(chunk)
            if len(pending) >= WRITE_BYTES:
                writing = asyncio.ensure_future(
                    asyncio.to_thread(_write_all, handle, bytes(pending))
                )
                await asyncio.shield(writing)
                pending.clear()
        if pending:
            writing = asyncio.ensure_future(asyncio.to_thread(_write_all, handle, bytes(pending)))
            await asyncio.shield(writing)
        return size
    finally:
        if writing is None or writing.done():
            handle.close()
        else:
            writing.add_done_callback(lambda done: _close_after(done, handle))


def _close_after(write: asyncio.Future[None], handle: IO[bytes]) -> None:
    if not write.cancelled():
        write.exception()  # retrieved: the download has already failed
    handle.close()


def _write_all(handle: IO[bytes], data: bytes) -> None:
    view = memoryview(data)
    while view:  # an unbuffered file may write less than asked
        view = view[handle.write(view) :]


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for key, value in headers:
        if key.lower() == b"content-length" and value.strip().isdigit():
            return int(value)
    return None


def _too_large(limit: int) -> str:
    return f"the video at the URL is larger than MAX_DOWNLOAD_MB ({limit / 1024 / 1024:g} MiB)"


def blocked_message(exc: Blocked, *, redirected: bool) -> str:
    """What a client is told when ``exc`` refused an address (also for webhooks)."""
    hint = "such URLs are refused (set ALLOW_PRIVATE_URLS to allow them)"
    if exc.address is None:
        what = "is not a usable network address"
    elif _literal(exc.host) == exc.address:
        what = "is a private or local address"
    else:
        what = f"resolves to {exc.address}, a private or local address"
    if redirected:
        return f"the URL redirects to {exc.host}, which {what}; {hint}"
    return f"the URL's host {exc.host} {what}; {hint}"


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _connect_failed(host: str, exc: httpcore.ConnectError) -> str:
    """Plain connection failures are raised by ``GuardedBackend``; a ConnectError that
    gets here comes from the TLS handshake."""
    cause: BaseException | None = exc
    for _ in range(10):  # a short walk down the chain; chains can loop
        if cause is None or isinstance(cause, ssl.SSLCertVerificationError):
            break
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"the TLS certificate of {host} could not be verified ({cause.verify_message})"
    return f"the TLS handshake with {host} failed; check that the URL is right"


def _last_segment(url: str) -> str:
    return httpx.URL(url).path.rsplit("/", 1)[-1].strip()  # .path is percent-decoded
