"""The command-line client's side of HTTP: ``Server``, one vfe server over its API.

``Server.submit`` uploads a local file (a multipart body read from the file as it is
sent, never whole into memory), sends an http(s) URL as a URL source, or names a video of
the server's videos folder (``--path``); ``follow`` follows a job's event stream,
reconnecting when it drops; ``download`` fetches the frames zip, unpacks it and checks
every frame against the SHA-256 the server lists. Every failure to talk to the server
becomes a ``ClientError`` with the exit code its command ends with (``client_commands``
lists them).

Deliberate oddity: sync httpx, not async: one request at a time and nothing to run beside
it, so an event loop would add only start-up time. ``vfe.cli`` imports this module (and
with it httpx) only when a client command runs.
"""

from __future__ import annotations

import datetime
import email.utils
import hashlib
import json
import math
import sys
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

FAILED, BAD_ARGUMENT, UNREACHABLE, INTERRUPTED = 1, 2, 3, 130
TIMEOUT = httpx.Timeout(60.0, connect=10.0)
# The server stores and probes an upload, or downloads a URL, before it answers.
SUBMIT_TIMEOUT = httpx.Timeout(60.0, connect=10.0, read=900.0)
# Idle streams get a heartbeat every SSE_HEARTBEAT_SECONDS (15 by default): this long
# without a byte means a dead connection, and the stream is opened again.
STREAM_TIMEOUT = httpx.Timeout(60.0, connect=10.0, read=90.0)
RECONNECT_LIMIT = 120.0  # seconds ``--wait`` keeps trying to reach a server it lost
FINAL_EVENTS = frozenset({"done", "failed", "cancelled"})
TRANSIENT_STATUS = frozenset({502, 503, 504})  # a proxy or a server restarting: try again
SUBMIT_TRIES = 3  # sends of one submit whose answer was lost (1 s, then 2 s apart)
RETRY_AFTER_LIMIT = 60.0  # the longest Retry-After a submit waits out before sending again
CHUNK = 1 << 16


class ClientError(Exception):
    """A failure a client command reports as one message and an exit code; ``transient``
    when trying again later may succeed (the server unreachable, restarting, or busy);
    ``connected`` False when no connection was made (nothing was sent); ``retry_after`` the
    seconds the server asked to wait (its ``Retry-After``), when it said."""

    def __init__(
        self,
        message: str,
        code: int = FAILED,
        transient: bool = False,
        connected: bool = True,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.transient = transient
        self.connected = connected
        self.retry_after = retry_after


def _retry_after(response: httpx.Response) -> float | None:
    """The seconds an answer's ``Retry-After`` asks to wait (delay-seconds or an HTTP date,
    RFC 9110 10.2.3); None when it has none or it cannot be read."""
    value = response.headers.get("retry-after", "").strip()
    if value.isascii() and value.isdigit():  # isdigit alone takes "²", other scripts
        return float(value) if len(value) < 10 else math.inf  # no wait of 300 years
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:  # an HTTP date is GMT
            when = when.replace(tzinfo=datetime.UTC)
        wait = (when - datetime.datetime.now(datetime.UTC)).total_seconds()
    except (TypeError, ValueError, OverflowError):
        return None
    return float(math.ceil(max(0.0, wait)))


def _detail(response: httpx.Response, wait: float | None) -> str:
    """The server's ``detail`` of an error answer (each ``loc: msg`` of a 422), with the
    ``wait`` its ``Retry-After`` asks for (``_retry_after``)."""
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):  # not vfe's answer: a proxy's, or not vfe
        return f"HTTP {response.status_code} {response.reason_phrase} (not an answer of vfe)"
    if isinstance(detail, list):
        lines = [
            f"  {'.'.join(str(part) for part in item.get('loc', []))}: {item.get('msg')}"
            for item in detail
            if isinstance(item, dict)
        ]
        return f"HTTP {response.status_code}: the server refused these fields:\n" + "\n".join(lines)
    message = f"HTTP {response.status_code}: {detail}"
    if response.status_code == 401:
        message += " (give the key with --api-key or VFE_API_KEY)"
    if wait is not None:
        message += f" (retry after {wait:.0f} s)" if wait < math.inf else " (retry much later)"
    return message


class Server:
    """One vfe server over HTTP; every failure to talk to it becomes a ``ClientError``.

    The API key goes in ``Authorization: Bearer``. Redirects are followed (a proxy that
    sends http to https); httpx drops the header when one leads to another host.
    """

    def __init__(self, url: str, api_key: str | None) -> None:
        try:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(url)
            self.http = httpx.Client(
                base_url=url.rstrip("/"),
                headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
                timeout=TIMEOUT,
                follow_redirects=True,
            )
        except (ValueError, httpx.InvalidURL):
            raise ClientError(
                f"--server must be a URL such as http://127.0.0.1:8000, got {url!r}", BAD_ARGUMENT
            ) from None
        self.url = url.rstrip("/")

    def close(self) -> None:
        self.http.close()

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        """Turn httpx's transport errors into messages that name the server."""
        try:
            yield
        except httpx.ConnectError as exc:
            raise ClientError(
                f"cannot reach the server at {self.url} ({exc}): is `vfe serve` running "
                "there? (--server, VFE_SERVER)",
                UNREACHABLE,
                transient=True,
                connected=False,
            ) from None
        except httpx.ConnectTimeout:
            raise ClientError(
                f"cannot reach the server at {self.url} (no answer to connect within "
                f"{TIMEOUT.connect:g} s): is it up at that address? (--server, VFE_SERVER)",
                UNREACHABLE,
                transient=True,
                connected=False,
            ) from None
        except httpx.TimeoutException:
            raise ClientError(
                f"the server at {self.url} did not answer in time", UNREACHABLE, transient=True
            ) from None
        except httpx.TransportError as exc:
            raise ClientError(
                f"lost the connection to the server at {self.url} ({exc or type(exc).__name__})",
                UNREACHABLE,
                transient=True,
            ) from None

    def _check(self, response: httpx.Response) -> None:
        if response.is_success:
            return
        code = BAD_ARGUMENT if response.status_code == 422 else FAILED
        transient = response.status_code in TRANSIENT_STATUS
        wait = _retry_after(response)  # read once: a date's seconds change as time passes
        raise ClientError(_detail(response, wait), code, transient, retry_after=wait)

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One request; the answer's JSON object."""
        with self._reaching():
            response = self.http.request(method, path, **kwargs)
        self._check(response)
        try:
            body: dict[str, Any] = response.json()
        except ValueError:  # another kind of server at that address
            raise ClientError(
                f"the server at {self.url} did not answer with JSON: is it a vfe server?"
            ) from None
        return body

    def submit(
        self, source: str | None, path: str | None, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """POST /video-job: a local file uploaded, a URL sent as a URL, or ``--path``.

        The request carries an ``Idempotency-Key`` of its own. When its answer is lost (a
        timeout, a dropped connection, a proxy's 502-504) it is sent again with the same
        key, at most ``SUBMIT_TRIES`` times in all: the server answers the job the first
        one made, never a second job. A busy server's 503 (a full queue) is sent again
        after the ``Retry-After`` it asks for, when that is at most ``RETRY_AFTER_LIMIT``.
        A server that cannot be reached at the first try is reported at once (nothing was
        sent).
        """
        if (source is None) == (path is None):
            raise ClientError(
                "give one video: a local file, an http(s) URL, or --path NAME (a video in the "
                "server's videos folder)",
                BAD_ARGUMENT,
            )
        local = None
        if path is None and urlsplit(str(source)).scheme not in ("http", "https"):
            local = Path(str(source))
            if not local.is_file():
                raise ClientError(
                    f"no such file: {source} (for a video in the server's videos folder, use "
                    "--path)",
                    BAD_ARGUMENT,
                )
        headers = {"Idempotency-Key": str(uuid.uuid4())}
        sent: dict[str, Any]
        if local is None:
            sent = {"json": {"video_source": path if path is not None else source, **fields}}
        else:  # multipart fields are text; the server reads them as JSON fields would be
            sent = {"data": {name: _form_value(value) for name, value in fields.items()}}
        tries, delay = 1, 1.0
        while True:
            try:
                if local is None:
                    return self._post_job(headers, **sent)
                with local.open("rb") as handle:  # httpx sends the file in chunks as it reads
                    files = {"file": (local.name, handle, "application/octet-stream")}
                    return self._post_job(headers, files=files, **sent)
            except ClientError as exc:
                wait = max(delay, exc.retry_after or 0.0)  # a busy server says how long
                give_up = tries == SUBMIT_TRIES or wait > RETRY_AFTER_LIMIT
                if not exc.transient or give_up or not (tries > 1 or exc.connected):
                    if tries > 1:  # the key dies with this process: say where to look
                        exc.message += " (an earlier send may have made the job: vfe jobs)"
                    raise
                again = f"sending it again in {wait:g} s (same Idempotency-Key)"
                print(f"vfe: {exc.message}; {again}", file=sys.stderr)
            time.sleep(wait)
            tries, delay = tries + 1, delay * 2

    def _post_job(self, headers: dict[str, str], **request: Any) -> dict[str, Any]:
        return self.call("POST", "/video-job", headers=headers, timeout=SUBMIT_TIMEOUT, **request)

    def follow(self, job_id: str, show: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Follow the job's event stream until its final event; return the job then.

        ``show`` gets the job at each snapshot and status or progress event. A stream that
        ends without a final event (the server shutting down) or breaks (the network, a
        crash) is opened again: its snapshot brings the job up to date. Waits between
        tries grow from 0.5 to 5 s; after ``RECONNECT_LIMIT`` s without reaching the
        server it gives up (exit 3). Blocks until then; Ctrl-C stops it.
        """
        lost_at: float | None = None
        delay = 0.5
        while True:
            try:
                final = self._follow_once(job_id, show)
            except ClientError as exc:
                if not exc.transient:
                    raise
                if lost_at is None:
                    lost_at = time.monotonic()
                    print(f"vfe: {exc.message}; trying again", file=sys.stderr)
                elif time.monotonic() - lost_at > RECONNECT_LIMIT:
                    raise ClientError(
                        f"{exc.message}; gave up after {RECONNECT_LIMIT:g} s (the job may "
                        f"still run: vfe status {job_id})",
                        UNREACHABLE,
                    ) from None
            else:
                if final is not None:
                    return final
                lost_at, delay = None, 0.5  # reached it: a clean end starts a new count
                print("vfe: the event stream ended before the job; reconnecting", file=sys.stderr)
            time.sleep(delay)
            delay = min(5.0, delay * 2)

    def _follow_once(
        self, job_id: str, show: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any] | None:
        """One connection to the event stream: the final job, or None if it ended first."""
        path = f"/job-status/{quote(job_id, safe='')}/events"
        headers = {"Accept": "text/event-stream"}
        with (
            self._reaching(),
            self.http.stream("GET", path, headers=headers, timeout=STREAM_TIMEOUT) as response,
        ):
            if response.status_code == 404:  # it was there when submitted
                raise ClientError(f"job {job_id} cancelled or removed: the server has it no more")
            if not response.is_success:
                response.read()
                self._check(response)
            for event, data in _events(response.iter_lines()):
                if event == "frame":
                    continue
                job: dict[str, Any] = json.loads(data)
                show(job)
                if event in FINAL_EVENTS:
                    return job
        return None

    def download(self, job_id: str, out: Path) -> list[dict[str, Any]]:
        """Download the job's frames zip into ``out`` (streamed to a temporary file there),
        unpack it, and check each frame against the SHA-256 the server lists; returns the
        frames as listed (``frames.json``, also written to ``out``)."""
        out.mkdir(parents=True, exist_ok=True)
        part = out / f".vfe-{job_id}.zip.part"
        try:
            path = f"/job/{quote(job_id, safe='')}/frames.zip"
            with self._reaching(), self.http.stream("GET", path) as response:
                if not response.is_success:
                    response.read()
                    self._check(response)
                with part.open("wb") as handle:
                    for chunk in response.iter_bytes(CHUNK):
                        handle.write(chunk)
            return _unpack(part, out)
        finally:
            part.unlink(missing_ok=True)


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """Server-Sent Events from a stream's lines: (event name, data); comments skipped."""
    event, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)


def _unpack(archive_path: Path, out: Path) -> list[dict[str, Any]]:
    """Unpack the frames zip into ``out`` and check every listed frame's checksum."""
    root = out.resolve()
    try:
        with zipfile.ZipFile(archive_path) as archive:
            for name in archive.namelist():
                if not (root / name).resolve().is_relative_to(root):
                    raise ClientError(f"the frames zip holds an unsafe name: {name!r}")
            archive.extractall(out)  # a damaged member fails its CRC check here
            frames: list[dict[str, Any]] = json.loads(archive.read("frames.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ClientError(f"the frames zip is damaged or incomplete ({exc})") from None
    for frame in frames:
        digest = hashlib.sha256()
        with (out / frame["filename"]).open("rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != frame["checksum"]:
            raise ClientError(f"frame {frame['filename']} does not match its checksum")
    return frames
