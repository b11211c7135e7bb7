"""vfe.fetch against real HTTP servers on loopback.

Two small asyncio servers: ``remote`` on 127.0.0.2 stands for a public host (the tests'
policy allows 127.0.0.2/32) and ``local`` on 127.0.0.1 for a private one that must never
be reached. Linux routes all of 127.0.0.0/8 to loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpcore
import pytest

from tests.conftest import wait_until_async
from vfe.errors import BadRequest, PayloadTooLarge, VfeError
from vfe.fetch import Blocked, GuardedBackend, check_url, download, is_url
from vfe.networks import AddressPolicy

PAYLOAD = bytes(range(256)) * 6000  # 1.5 MiB: more than one write to disk
ALLOW_REMOTE = AddressPolicy.parse("127.0.0.2/32")


class Server:
    """A tiny HTTP/1.1 server; each route is a coroutine writing the whole answer."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.port = 0
        self.paths: list[str] = []
        self.server: asyncio.Server | None = None
        self.handlers: set[asyncio.Task[None]] = set()
        self.closing = asyncio.Event()  # ends routes that wait, so handlers end by themselves

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, self.host, 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.closing.set()
        self.server.close()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        await self.server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            with contextlib.suppress(ConnectionError, ValueError, asyncio.IncompleteReadError):
                line = await reader.readline()
                while (await reader.readline()).strip():
                    pass
                _, target, _ = line.decode("latin-1").split(" ", 2)
                self.paths.append(target)
                await self.route(target, writer)
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self.handlers.discard(task)

    async def wait(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closing.wait(), 30)

    async def route(self, target: str, writer: asyncio.StreamWriter) -> None:
        path = urlsplit(target).path
        query = parse_qs(urlsplit(target).query)
        if path.endswith(".mp4"):
            writer.write(head(200, f"Content-Length: {len(PAYLOAD)}") + PAYLOAD)
        elif path == "/go":
            writer.write(head(302, f"Location: {query['to'][0]}", "Content-Length: 0"))
        elif path == "/no-location":
            writer.write(head(302, "Content-Length: 0"))
        elif path == "/short":  # closes after 10 of 1000 bytes
            writer.write(head(200, "Content-Length: 1000") + b"s" * 10)
        elif path == "/garbage":
            writer.write(b"this is not HTTP\r\n\r\n")
        elif path == "/loop":
            writer.write(head(302, "Location: /loop", "Content-Length: 0"))
        elif path == "/big":  # says it is huge, then waits
            writer.write(head(200, "Content-Length: 1000000000") + b"x" * 100)
            await writer.drain()
            await self.wait()
        elif path == "/chunked":  # no Content-Length, 64 KiB chunks without end
            writer.write(head(200, "Transfer-Encoding: chunked"))
            chunk = b"%x\r\n%s\r\n" % (65536, b"y" * 65536)
            for _ in range(100):
                writer.write(chunk)
                await writer.drain()
        elif path == "/stall":
            writer.write(head(200, "Content-Length: 1000") + b"z" * 10)
            await writer.drain()
            await self.wait()
        else:
            writer.write(head(404, "Content-Length: 0"))


def files(folder: Path) -> list[Path]:
    return list(folder.iterdir())


def head(status: int, *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status} X", *headers, "Connection: close", "", ""]
    return "\r\n".join(lines).encode()


@pytest.fixture
async def remote() -> AsyncIterator[Server]:
    server = Server("127.0.0.2")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def local() -> AsyncIterator[Server]:
    server = Server("127.0.0.1")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    folder = tmp_path / "downloads"
    folder.mkdir()
    return folder


async def fetch(url: str, dest: Path, **kwargs: object) -> object:
    # a time limit no test reaches, however busy the machine, unless it tests the limit
    options: dict[str, object] = {"max_bytes": 10**7, "timeout": 30.0, "policy": ALLOW_REMOTE}
    options.update(kwargs)
    return await download(url, dest, **options)  # type: ignore[arg-type]


async def refused(url: str, dest: Path, **kwargs: object) -> str:
    """The message of the BadRequest a download of ``url`` raises; no file is left."""
    with pytest.raises(BadRequest) as caught:
        await fetch(url, dest, **kwargs)
    assert files(dest) == []
    message = str(caught.value)
    assert "Traceback" not in message and str(dest) not in message
    return message


async def test_downloads_to_a_new_file(remote: Server, dest: Path) -> None:
    got = await download(
        f"{remote.url}/clips/My%20Clip.mp4?token=s3cret",
        dest,
        max_bytes=10**7,
        timeout=30,
        policy=ALLOW_REMOTE,
    )
    assert got.path.parent == dest and got.path.read_bytes() == PAYLOAD
    assert got.size == len(PAYLOAD)
    assert got.filename == "My Clip.mp4"
    assert got.final_url == f"{remote.url}/clips/My%20Clip.mp4?token=s3cret"
    assert files(dest) == [got.path]


async def test_follows_a_redirect(remote: Server, dest: Path) -> None:
    got = await download(
        f"{remote.url}/go?to=/a/video.mp4", dest, max_bytes=10**7, timeout=30, policy=ALLOW_REMOTE
    )
    assert got.path.read_bytes() == PAYLOAD
    assert got.final_url == f"{remote.url}/a/video.mp4"
    assert got.filename == "video.mp4"
    assert remote.paths == ["/go?to=/a/video.mp4", "/a/video.mp4"]


async def test_redirect_to_a_private_host_is_blocked(
    remote: Server, local: Server, dest: Path
) -> None:
    message = await refused(f"{remote.url}/go?to={local.url}/video.mp4", dest)
    assert message == (
        "the URL redirects to 127.0.0.1, which is a private or local address; "
        "such URLs are refused (set ALLOW_PRIVATE_URLS to allow them)"
    )
    assert local.paths == []


async def test_redirect_to_the_metadata_address_is_blocked_at_once(
    remote: Server, dest: Path
) -> None:
    started = time.monotonic()
    message = await refused(f"{remote.url}/go?to=http://169.254.169.254/latest/", dest)
    assert "169.254.169.254, which is a private or local address" in message
    assert time.monotonic() - started < 5  # at once, whatever that address would do


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "[::1]", "10.1.2.3", "169.254.169.254", "[::ffff:127.0.0.1]", "[fd00:ec2::254]"],
)
async def test_private_addresses_are_blocked(host: str, local: Server, dest: Path) -> None:
    message = await refused(f"http://{host}:{local.port}/video.mp4", dest)
    shown = host.strip("[]")
    assert message == (
        f"the URL's host {shown} is a private or local address; "
        "such URLs are refused (set ALLOW_PRIVATE_URLS to allow them)"
    )
    assert local.paths == []


async def test_a_name_resolving_to_loopback_is_blocked(local: Server, dest: Path) -> None:
    message = await refused(f"http://localhost:{local.port}/video.mp4", dest)
    assert message.startswith("the URL's host localhost resolves to ")
    assert "a private or local address" in message
    assert local.paths == []


async def test_other_spellings_of_loopback_are_blocked(local: Server, dest: Path) -> None:
    for host in ("2130706433", "127.1", "0x7f.0.0.1"):
        message = await refused(f"http://{host}:{local.port}/video.mp4", dest)
        assert "resolves to 127.0.0.1, a private or local address" in message
    assert local.paths == []


async def test_the_connected_peer_is_checked_again(remote: Server) -> None:
    # A peer that differs from the checked address cannot be produced for real (the
    # backend connects to the address it checked); a mock stream that reports no peer
    # address stands in for it.
    backend = GuardedBackend(ALLOW_REMOTE)
    backend.inner = httpcore.AsyncMockBackend([])
    with pytest.raises(Blocked):
        await backend.connect_tcp("127.0.0.2", remote.port)


async def test_allow_private_lets_loopback_through(local: Server, dest: Path) -> None:
    got = await download(
        f"{local.url}/video.mp4",
        dest,
        max_bytes=10**7,
        timeout=30,
        policy=AddressPolicy(allow_private=True),
    )
    assert got.path.read_bytes() == PAYLOAD


async def test_too_large_by_content_length(remote: Server, dest: Path) -> None:
    started = time.monotonic()
    with pytest.raises(PayloadTooLarge) as caught:
        await fetch(f"{remote.url}/big", dest, max_bytes=1024 * 1024)
    assert str(caught.value) == "the video at the URL is larger than MAX_DOWNLOAD_MB (1 MiB)"
    assert time.monotonic() - started < 5  # refused at the headers, not after waiting (30 s)
    assert files(dest) == []


async def test_too_large_while_streaming(remote: Server, dest: Path) -> None:
    with pytest.raises(PayloadTooLarge):
        await fetch(f"{remote.url}/chunked", dest, max_bytes=1024 * 1024)
    assert files(dest) == []


async def test_time_limit(remote: Server, dest: Path) -> None:
    started = time.monotonic()
    message = await refused(f"{remote.url}/stall", dest, timeout=0.5)
    assert message == "downloading the video took longer than 0.5 s (URL_TIMEOUT_SECONDS)"
    assert time.monotonic() - started < 5  # the server would stall for 30 s


async def test_cancelled_download_leaves_no_file(remote: Server, dest: Path) -> None:
    task = asyncio.create_task(fetch(f"{remote.url}/stall", dest))
    await wait_until_async(lambda: files(dest), "the partial file (mid-download)", every=0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert files(dest) == []


async def test_disk_failure_is_a_server_error(remote: Server, tmp_path: Path) -> None:
    with pytest.raises(VfeError) as caught:
        await fetch(f"{remote.url}/video.mp4", tmp_path / "no-such-folder")
    assert caught.value.status == 500
    assert str(caught.value) == "the downloaded video could not be stored"


async def test_not_found(remote: Server, dest: Path) -> None:
    message = await refused(f"{remote.url}/missing?secret=1", dest)
    assert message == "the URL answered 404; it must answer 200"


async def test_redirect_without_location(remote: Server, dest: Path) -> None:
    message = await refused(f"{remote.url}/no-location", dest)
    assert message == "the URL answered with a redirect without a Location header"


@pytest.mark.parametrize("path", ["/short", "/garbage"])
async def test_broken_answers(path: str, remote: Server, dest: Path) -> None:
    message = await refused(f"{remote.url}{path}", dest)
    assert message == "the connection to 127.0.0.2 failed during the download"


async def test_too_many_redirects(remote: Server, dest: Path) -> None:
    message = await refused(f"{remote.url}/loop", dest, max_redirects=3)
    assert message == "the URL redirected more than 3 times"
    assert remote.paths == ["/loop"] * 4


async def test_redirect_to_another_scheme(remote: Server, dest: Path) -> None:
    message = await refused(f"{remote.url}/go?to=file:///etc/passwd", dest)
    assert message == (
        "the URL redirected to an address that is refused: "
        "only http:// and https:// URLs are accepted as video_source"
    )


async def test_connection_refused(remote: Server, dest: Path) -> None:
    await remote.stop()
    message = await refused(f"{remote.url}/video.mp4", dest)
    assert message == f"could not connect to 127.0.0.2 port {remote.port}; check the host and port"


async def test_tls_failure(dest: Path) -> None:
    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head(400, "Content-Length: 0"))  # an HTTP answer to a TLS hello
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(plain, "127.0.0.2", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        message = await refused(f"https://127.0.0.2:{port}/video.mp4", dest)
    assert message == "the TLS handshake with 127.0.0.2 failed; check that the URL is right"


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.2 and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.2", "-addext", "subjectAltName=IP:127.0.0.2",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


async def test_untrusted_certificate(self_signed: tuple[Path, Path], dest: Path) -> None:
    cert, key = self_signed
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    remote = Server("127.0.0.2")
    remote.server = await asyncio.start_server(remote.handle, "127.0.0.2", 0, ssl=context)
    remote.port = remote.server.sockets[0].getsockname()[1]
    try:
        message = await refused(f"https://127.0.0.2:{remote.port}/video.mp4", dest)
    finally:
        await remote.stop()
    assert message.startswith("the TLS certificate of 127.0.0.2 could not be verified (")
    assert remote.paths == []


async def test_unknown_host(dest: Path) -> None:
    message = await refused("http://no-such-host.invalid/video.mp4", dest)
    assert message == "the host no-such-host.invalid could not be found (DNS lookup failed)"


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/video.mp4",
        "gopher://example.com/",
        "javascript:alert(1)",
        "http:/example.com/video.mp4",
        "//example.com/video.mp4",
    ],
)
def test_schemes_other_than_http_are_refused(url: str) -> None:
    with pytest.raises(BadRequest, match=r"^only http:// and https:// URLs are accepted"):
        check_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://user:pass@example.com/v.mp4", "URLs with a user name or password are refused"),
        ("http://user@example.com/v.mp4", "URLs with a user name or password are refused"),
        ("http:///v.mp4", "the URL has no host"),
        ("http://example.com:0/v.mp4", "the URL's port must be between 1 and 65535"),
        ("http://exa mple.com/", "the URL contains spaces"),
        ("http://a\\b@example.com/", "the URL contains spaces"),
        ("http://example.com/" + "a" * 2048, "the URL is too long (at most 2048 characters)"),
        ("http://[::1/", "the URL is not valid"),
    ],
)
def test_malformed_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        check_url(url)
    assert str(caught.value).startswith(message)
    assert "pass@" not in str(caught.value) and "example" not in str(caught.value)


def test_check_url_normalises() -> None:
    assert (
        check_url("HTTPS://Example.COM/a%20b.mp4?x=1#frag") == "https://example.com/a%20b.mp4?x=1"
    )


def test_is_url() -> None:
    assert is_url("http://example.com/v.mp4") and is_url("ftp://x") and is_url("s3+x://b")
    assert not is_url("videos/clip.mp4") and not is_url("javascript:alert(1)")
    assert not is_url("/abs/path.mp4") and not is_url("C:\\clip.mp4")


@pytest.mark.parametrize("raw", ["", "false", "0", "no", " False "])
def test_policy_parse_false(raw: str) -> None:
    assert AddressPolicy.parse(raw) == AddressPolicy()


@pytest.mark.parametrize("raw", ["true", "1", "yes", "TRUE"])
def test_policy_parse_true(raw: str) -> None:
    assert AddressPolicy.parse(raw) == AddressPolicy(allow_private=True)


def test_policy_parse_networks() -> None:
    policy = AddressPolicy.parse("127.0.0.2/32, 10.1.0.0/16,fd00::1")
    assert policy.allowed == (
        ipaddress.ip_network("127.0.0.2/32"),
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("fd00::1/128"),
    )
    assert not policy.allow_private


@pytest.mark.parametrize("raw", ["nonsense", "10.0.0.0/33", "127.0.0.2/32,,maybe"])
def test_policy_parse_rejects_bad_networks(raw: str) -> None:
    with pytest.raises(ValueError, match=r"^ALLOW_PRIVATE_URLS: .* is not a network"):
        AddressPolicy.parse(raw)


@pytest.mark.parametrize(
    ("address", "default", "with_allowed"),
    [
        ("93.184.216.34", True, True),
        ("2606:4700:4700::1111", True, True),
        ("::ffff:93.184.216.34", True, True),
        ("127.0.0.1", False, False),
        ("127.0.0.2", False, True),
        ("::ffff:127.0.0.2", False, True),
        ("10.1.2.3", False, True),
        ("10.2.0.1", False, False),
        ("172.16.0.1", False, False),
        ("192.168.1.1", False, False),
        ("100.64.0.1", False, False),
        ("100.100.100.200", False, False),
        ("169.254.169.254", False, False),
        ("192.0.0.192", False, False),
        ("168.63.129.16", False, False),
        ("0.0.0.0", False, False),
        ("224.0.0.1", False, False),
        ("255.255.255.255", False, False),
        ("240.0.0.1", False, False),
        ("::1", False, False),
        ("::", False, False),
        ("fe80::1", False, False),
        ("fd00:ec2::254", False, False),
        ("fc00::1", False, False),
        ("ff0e::1", False, False),
        ("::ffff:10.0.0.1", False, False),
        ("::ffff:169.254.169.254", False, False),
        ("2002:7f00:1::", False, False),
        ("64:ff9b::a9fe:a9fe", False, False),
    ],
)
def test_policy_permits(address: str, default: bool, with_allowed: bool) -> None:
    ip = ipaddress.ip_address(address)
    assert AddressPolicy().permits(ip) is default
    assert AddressPolicy.parse("127.0.0.2/32,10.1.0.0/16").permits(ip) is with_allowed
    assert AddressPolicy(allow_private=True).permits(ip)
