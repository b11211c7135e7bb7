"""The client commands: ``vfe submit``, ``download``, ``jobs``, ``status``, ``cancel``.

They talk to a running server through ``client.Server``. ``--wait`` follows the job with
a progress bar on stderr; ``--out`` downloads the frames zip when the job completes.
``vfe download JOB --out`` does the same for a job submitted earlier (``--wait`` follows
it to its end first).

Exit codes: 0 done; 1 the server refused the request (its ``detail`` is printed), the
job failed, was cancelled or (``download`` without ``--wait``) has not completed yet, or
a downloaded frame does not match its checksum; 2 a bad argument (a 422 lists each field
the server refused); 3 the server could not be reached, or was lost for
``RECONNECT_LIMIT`` s while waiting; 130 interrupted (a job already submitted keeps
running).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from urllib.parse import quote

from .client import INTERRUPTED, ClientError, Server

JOBS_PAGE = 1000  # the most jobs one GET /jobs answers


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
    """The newest ``--limit`` jobs (of ``--status``), fetched ``JOBS_PAGE`` at a time."""
    params: dict[str, Any] = {"status": args.status} if args.status else {}
    listing: dict[str, Any] = {"jobs": [], "count": 0, "next": None}
    while True:
        left = args.limit - len(listing["jobs"])
        page = server.call("GET", "/jobs", params={**params, "limit": min(left, JOBS_PAGE)})
        listing["jobs"] += page["jobs"]
        listing["next"] = page.get("next")  # an older server has none: one page
        if not listing["next"] or len(listing["jobs"]) >= args.limit:
            break
        params["before"] = page["next"]
    listing["count"] = len(listing["jobs"])
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
