"""The command-line client: ``vfe submit``, ``download``, ``jobs``, ``status``, ``cancel``.

They talk to a running server over its HTTP API. ``vfe submit`` uploads a local file (a
multipart body read from the file as it is sent, never whole into memory), sends an
http(s) URL as a URL source, or names a video of the server's videos folder (``--path``).
``--wait`` follows the job's event stream with a progress bar on stderr, reconnecting
when the stream drops; ``--out`` downloads the frames zip when the job completes, unpacks
it and checks every frame against the SHA-256 the server lists. ``vfe download JOB --out``
does the same for a job submitted earlier (``--wait`` follows it to its end first).

Exit codes: 0 done; 1 the server refused the request (its ``detail`` is printed), the
job failed, was cancelled or (``download`` without ``--wait``) has not completed yet, or
a downloaded frame does not match its checksum; 2 a bad argument (a 422 lists each field
the server refused); 3 the server could not be reached, or was lost for
``RECONNECT_LIMIT`` s while waiting; 130 interrupted (a job already submitted keeps
running).

Deliberate oddity: sync httpx, not async: one request at a time and nothing to run beside
it, so an event loop would add only start-up time. ``vfe.cli`` imports this module (and
with it httpx) only when a client command runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
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
CHUNK = 1 << 16


class ClientError(Exception):
    """A failure a client command reports as one message and an exit code; ``transient``
    when trying again later may succeed (the server unreachable, restarting, or busy)."""

    def __init__(self, message: str, code: int = FAILED, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.transient = transient


def _detail(response: httpx.Response) -> str:
    """The server's ``detail`` of an error answer (each ``loc: msg`` of a 422)."""
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
    if response.headers.get("retry-after"):
        message += f" (retry after {response.headers['retry-after']} s)"
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
        raise ClientError(_detail(response), code, transient)

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
        """POST /video-job: a local file uploaded, a URL sent as a URL, or ``--path``."""
        if (source is None) == (path is None):
            raise ClientError(
                "give one video: a local file, an http(s) URL, or --path NAME (a video in the "
                "server's videos folder)",
                BAD_ARGUMENT,
            )
        if path is not None or urlsplit(str(source)).scheme in ("http", "https"):
            body = {"video_source": path if path is not None else source, **fields}
            return self.call("POST", "/video-job", json=body, timeout=SUBMIT_TIMEOUT)
        local = Path(str(source))
        if not local.is_file():
            raise ClientError(
                f"no such file: {source} (for a video in the server's videos folder, use --path)",
                BAD_ARGUMENT,
            )
        # Multipart fields are text; the server reads them as the JSON fields would be.
        form = {name: _form_value(value) for name, value in fields.items()}
        with local.open("rb") as handle:  # httpx sends the file part in chunks as it reads
            files = {"file": (local.name, handle, "application/octet-stream")}
            return self.call("POST", "/video-job", data=form, files=files, timeout=SUBMIT_TIMEOUT)

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


class Progress:
    """``--wait``'s bar on stderr (tqdm, imported only when shown): frames done of the
    frames planned; for scene and best jobs, whose frames are not known ahead, per cent
    of the decoding done."""

    def __init__(self, job_id: str, quiet: bool) -> None:
        self.job_id = job_id
        self.quiet = quiet
        self.bar: Any = None

    def show(self, job: dict[str, Any]) -> None:
        if self.quiet:
            return
        by_share = job["mode"] in ("scene", "best")
        total: int | None
        if by_share:
            total, done = 100, job["percent"]
        else:
            total, done = job["total_frames"] or None, job["processed_frames"]
        if self.bar is None:
            from tqdm import tqdm

            unit = "%" if by_share else "frame"
            self.bar = tqdm(total=total, unit=unit, file=sys.stderr, desc=self.job_id[:8])
        self.bar.total = total
        self.bar.n = done
        self.bar.set_postfix_str(job["status"], refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _submit(server: Server, args: argparse.Namespace, fields: dict[str, Any]) -> int:
    if args.reuse is not None:
        fields = {**fields, "reuse": args.reuse}
    answer = server.submit(args.source, args.path, fields)
    job_id: str = answer["job_id"]
    if not (args.wait or args.out is not None):
        if args.json:
            _print_json(answer)
        else:
            print(job_id)
        return 0
    if not args.json:
        print(job_id, flush=True)  # at once: the id is known while the job runs
    return _finish(server, job_id, args, wait=True)


def _download(server: Server, args: argparse.Namespace, fields: dict[str, Any]) -> int:
    return _finish(server, args.job_id, args, wait=args.wait)


def _finish(server: Server, job_id: str, args: argparse.Namespace, wait: bool) -> int:
    """Follow the job to its end (``wait``: its event stream, with a bar) or read its
    status once; then, when it completed and ``args.out`` is given, download its frames
    there. The end of ``vfe submit --wait`` and all of ``vfe download``."""
    if wait:
        progress = Progress(job_id, args.quiet)
        try:
            job = server.follow(job_id, progress.show)
        except KeyboardInterrupt:
            progress.close()
            print(f"vfe: stopped waiting; job {job_id} runs on (vfe cancel {job_id})",
                  file=sys.stderr)  # fmt: skip
            return INTERRUPTED
        progress.close()
    else:
        job = server.call("GET", f"/job-status/{quote(job_id, safe='')}")
    if job["status"] != "completed":
        if args.json:
            _print_json(job)
        if job["status"] in ("pending", "processing"):
            reason = ", not completed yet (--wait waits for it)"
        else:
            reason = f": {job['error_message']}" if job.get("error_message") else ""
        raise ClientError(f"job {job_id} {job['status']}{reason}")
    written = server.download(job_id, args.out) if args.out is not None else None
    if written is not None and len(written) != job["total_frames"]:
        # the server leaves out of the zip a frame whose stored file has gone
        raise ClientError(
            f"the frames zip holds {len(written)} of the job's {job['total_frames']} frames: "
            "the server could not read the others from its storage"
        )
    if args.json:
        _print_json(job)
    elif not args.quiet:
        print(f"job {job_id} completed: {job['total_frames']} frames")
        if written is not None:
            print(f"wrote {len(written)} frames and frames.json to {args.out}")
    return 0


def _jobs(server: Server, args: argparse.Namespace, fields: dict[str, Any]) -> int:
    listing = server.call("GET", "/jobs", params={"limit": args.limit})
    if args.json:
        _print_json(listing)
        return 0
    rows = [("JOB", "STATUS", "FRAMES", "DONE", "CREATED (UTC)", "SOURCE")]
    for job in listing["jobs"]:
        rows.append(
            (
                job["job_id"],
                job["status"],
                f"{job['processed_frames']}/{job['total_frames']}",
                f"{job['percent']:g}%",
                job["created_at"][:19].replace("T", " "),
                job["video_source"],
            )
        )
    if len(rows) == 1:
        print("no jobs")
        return 0
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]))
    return 0


def _status(server: Server, args: argparse.Namespace, fields: dict[str, Any]) -> int:
    job = server.call("GET", f"/job-status/{quote(args.job_id, safe='')}")
    if args.json:
        _print_json(job)
        return 0
    video = [
        f"{job['duration']:g} s" if job["duration"] is not None else None,
        f"{job['width']}x{job['height']}" if job["width"] else None,
        f"{job['fps']:g} fps" if job["fps"] else None,
        job["codec"],
    ]
    lines = [
        ("job", job["job_id"]),
        ("status", f"{job['status']} ({job['percent']:g}%, "
                   f"{job['processed_frames']}/{job['total_frames']} frames)"),
        ("source", f"{job['video_source']} ({job['source_type']})"),
        ("mode", f"{job['mode']} {json.dumps(job['options'], sort_keys=True)}"),
        ("video", ", ".join(v for v in video if v) or None),
        ("created", job["created_at"]),
        ("started", job["started_at"]),
        ("finished", job["finished_at"]),
        ("elapsed", None if job["elapsed_seconds"] is None else f"{job['elapsed_seconds']:g} s"),
        ("attempts", str(job["attempts"])),
        ("error", job["error_message"]),
    ]  # fmt: skip
    for name, value in lines:
        if value is not None:
            print(f"{name:<9} {value}")
    return 0


def _cancel(server: Server, args: argparse.Namespace, fields: dict[str, Any]) -> int:
    answer = server.call("DELETE", f"/job/{quote(args.job_id, safe='')}")
    if args.json:
        _print_json(answer)
    else:
        print(answer["message"])
    return 0


COMMANDS = {
    "submit": _submit,
    "download": _download,
    "jobs": _jobs,
    "status": _status,
    "cancel": _cancel,
}


def run(args: argparse.Namespace, fields: dict[str, Any]) -> int:
    """Run one client command (``fields``: the job options ``vfe submit`` sends); every
    failure becomes a message on stderr and an exit code."""
    try:
        server = Server(args.server, args.api_key)
        try:
            return COMMANDS[args.command](server, args, fields)
        finally:
            server.close()
    except ClientError as exc:
        print(f"vfe: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("vfe: interrupted", file=sys.stderr)
        return INTERRUPTED
