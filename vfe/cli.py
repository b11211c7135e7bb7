"""Command line: ``vfe serve`` runs the service; ``vfe extract`` runs one extraction;
``vfe submit``, ``download``, ``jobs``, ``status`` and ``cancel`` are clients of a
running server (``vfe/client_commands.py``, which also lists their exit codes).
``extract`` and ``submit`` take the same job options, declared once (``_job_options``).

``vfe extract VIDEO --interval 5 --out DIR`` uses the service's engine with no server,
database or cache (``vfe/extract_command.py``).

Exit codes: 0 done; 1 the video could not be extracted (the message says why); 2 a bad
setting or argument (the message names it), or a database another vfe process owns or
vfe did not make; 3 the server's start-up failed (uvicorn's code). On SIGINT/SIGTERM
uvicorn shuts down gracefully, then re-raises the signal: a clean stop ends "killed by
SIGTERM" (-15, shell 143), as supervisors expect; 0 only when it stops without a signal.

Deliberate oddity: this module imports at its top only what parsing the arguments needs;
each command imports its own stack when it runs (the engine and pydantic for ``extract``,
uvicorn and the app for ``serve``, httpx for the client commands, tqdm only when a bar
is shown), so ``vfe --help`` and ``vfe extract`` start without the web stack or httpx
(``tests/test_cli.py`` checks it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .options import (
    DEFAULT_BLACK_THRESHOLD,
    DEFAULT_BLUR_THRESHOLD,
    DEFAULT_DEDUPE_DISTANCE,
    DEFAULT_FLAT_THRESHOLD,
    DEFAULT_MIN_GAP,
    DEFAULT_SCENE_THRESHOLD,
    DEFAULT_SEARCH,
    DEFAULT_STORYBOARD_WIDTH,
    ImageFormat,
)

DEFAULT_SERVER = "http://127.0.0.1:8000"  # where `vfe serve` listens by default
CLIENT_COMMANDS = frozenset({"submit", "download", "jobs", "status", "cancel"})


def _port(text: str) -> int:
    """``--port``: checked like the PORT setting (else uvicorn reports a wrapped port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 1 and 65535, got {value}")
    return value


def _job_options() -> argparse.ArgumentParser:
    """The sampling and output options of a job, declared once: ``vfe extract`` and
    ``vfe submit`` take them as a parent parser. Each option's dest is the ``JobSpec``
    field it sets, but for the flags that choose a mode (``_MODE_FLAGS``)."""
    options = argparse.ArgumentParser(add_help=False)
    rule = options.add_mutually_exclusive_group()
    rule.add_argument("--interval", type=float, help="seconds between frames (default 5)")
    rule.add_argument("--fps", type=float, help="frames per second")
    rule.add_argument("--count", type=int, help="N frames evenly spaced")
    rule.add_argument("--timestamps", help="comma-separated seconds, e.g. 1,2.5,10")
    rule.add_argument("--keyframes", action="store_true", help="every keyframe")
    rule.add_argument(
        "--best", type=int, metavar="N", help="the best frame of each of N equal stretches"
    )
    rule.add_argument(
        "--scene",
        type=float,
        nargs="?",
        const=DEFAULT_SCENE_THRESHOLD,
        metavar="THRESHOLD",
        help=f"a frame at each scene change (score 0-1, default {DEFAULT_SCENE_THRESHOLD})",
    )
    options.add_argument(
        "--min-gap", type=float, help=f"scene: seconds between frames (default {DEFAULT_MIN_GAP})"
    )
    options.add_argument("--start", type=float, help="window start, seconds")
    options.add_argument("--end", type=float, help="window end, seconds")
    options.add_argument("--max-frames", type=int, help="at most N frames")
    options.add_argument("--format", choices=[f.value for f in ImageFormat], help="jpg (default)")
    options.add_argument("--quality", type=int, help="1-100 (jpg, webp)")
    options.add_argument("--width", type=int, help="fit inside this width (px)")
    options.add_argument("--height", type=int, help="fit inside this height (px)")
    options.add_argument(
        "--tonemap", choices=["auto", "off"], help="auto (default): HDR video tone-mapped to SDR"
    )
    options.add_argument(
        "--reject",
        help="comma-separated defects to refuse: black, blurry, flat (a substitute is looked "
        "for after each refused frame)",
    )
    options.add_argument(
        "--search", type=float, help=f"reject: seconds to look on (default {DEFAULT_SEARCH:g})"
    )
    options.add_argument(
        "--black-threshold",
        type=float,
        help=f"share of near-black pixels (default {DEFAULT_BLACK_THRESHOLD:g})",
    )
    options.add_argument(
        "--blur-threshold",
        type=float,
        help=f"sharpness below this is blurry (default {DEFAULT_BLUR_THRESHOLD:g})",
    )
    options.add_argument(
        "--flat-threshold",
        type=float,
        help=f"contrast below this is flat (default {DEFAULT_FLAT_THRESHOLD:g})",
    )
    options.add_argument(
        "--dedupe",
        action="store_true",
        default=None,
        help="drop frames that repeat the last one kept",
    )
    options.add_argument(
        "--dedupe-distance", type=int,
        help=f"pHash bits within which a frame repeats (default {DEFAULT_DEDUPE_DISTANCE})",
    )  # fmt: skip
    options.add_argument(
        "--storyboard", action="store_true", default=None,
        help="also make a storyboard: sprite sheets, storyboard.vtt and storyboard.json",
    )  # fmt: skip
    options.add_argument(
        "--storyboard-width", type=int,
        help=f"storyboard tile width, px (default {DEFAULT_STORYBOARD_WIDTH})",
    )  # fmt: skip
    return options


def _client_options() -> argparse.ArgumentParser:
    """What every client command takes: the server, the API key, JSON output. The
    defaults come from VFE_SERVER and VFE_API_KEY: the client's own environment, not
    settings of a server."""
    client = argparse.ArgumentParser(add_help=False)
    client.add_argument(
        "--server",
        default=os.environ.get("VFE_SERVER") or DEFAULT_SERVER,
        help=f"the server's URL (default: VFE_SERVER, else {DEFAULT_SERVER})",
    )
    client.add_argument(
        "--api-key", default=os.environ.get("VFE_API_KEY") or None,
        help="the API key, when the server has API_KEYS (default: VFE_API_KEY)",
    )  # fmt: skip
    client.add_argument("--json", action="store_true", help="print the server's answer as JSON")
    return client


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vfe", description="Video frame extraction service.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the API and dashboard")
    serve.add_argument("--host", help="bind address (default: HOST, 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="port (default: PORT, 8000)")
    serve.add_argument(
        "--api-only",
        action="store_true",
        help="serve the API and run no jobs: `vfe worker`s run them (needs DATABASE_URL)",
    )
    worker = commands.add_parser(
        "worker",
        help="run jobs from the PostgreSQL queue, serve no API (needs DATABASE_URL); "
        "/health/live on HOST:PORT for orchestrators",
    )
    worker.add_argument("--host", help="bind address of the health routes (default: HOST)")
    worker.add_argument("--port", type=_port, help="port of the health routes (default: PORT)")
    job_options = _job_options()
    extract = commands.add_parser(
        "extract",
        parents=[job_options],
        help="extract frames from one video into a folder, without a server",
    )
    extract.add_argument("video", type=Path, help="the video file")
    extract.add_argument("--out", type=Path, required=True, help="folder for the frames")
    extract.add_argument("--quiet", action="store_true", help="no plan, no progress bar")
    client = _client_options()
    submit = commands.add_parser(
        "submit", parents=[job_options, client], help="send a video to a running server as a job"
    )
    submit.add_argument(
        "source", nargs="?",
        help="a local video file (uploaded) or an http(s) URL (the server downloads it)",
    )  # fmt: skip
    submit.add_argument("--path", help="instead of SOURCE: a video in the server's videos folder")
    submit.add_argument(
        "--no-reuse", dest="reuse", action="store_false", default=None,
        help="extract afresh even when an earlier job made the same frames",
    )  # fmt: skip
    submit.add_argument(
        "--wait", action="store_true", help="follow the job with a progress bar until it ends"
    )
    submit.add_argument(
        "--out", type=Path,
        help="download the frames into this folder when the job completes (implies --wait)",
    )  # fmt: skip
    submit.add_argument(
        "--quiet", action="store_true", help="no progress bar; print the job id only"
    )
    download = commands.add_parser(
        "download", parents=[client],
        help="download a job's frames and frames.json, each frame checked against its SHA-256",
    )  # fmt: skip
    download.add_argument("job_id", metavar="JOB", help="the job's id")
    download.add_argument("--out", type=Path, required=True, help="folder for the frames")
    download.add_argument(
        "--wait", action="store_true",
        help="follow the job with a progress bar until it ends, then download",
    )  # fmt: skip
    download.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    jobs = commands.add_parser("jobs", parents=[client], help="list a server's recent jobs")
    jobs.add_argument("--limit", type=int, default=20, help="how many, newest first (default 20)")
    jobs.add_argument("--status", help="only the jobs in this status, such as failed")
    status = commands.add_parser("status", parents=[client], help="show one job of a server")
    status.add_argument("job_id", metavar="JOB", help="the job's id")
    cancel = commands.add_parser(
        "cancel", parents=[client], help="cancel a job and remove it and its frames"
    )
    cancel.add_argument("job_id", metavar="JOB", help="the job's id")
    return parser


_MODE_FLAGS = ("keyframes", "scene", "best")  # job options that choose a mode


def spec_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The ``JobSpec`` fields that the job options in ``args`` set, as plain values (not
    validated): every option of ``_job_options`` by its dest; the mode flags set ``mode``."""
    names = vars(_job_options().parse_args([]))
    fields = {
        n: getattr(args, n) for n in names if n not in _MODE_FLAGS and getattr(args, n) is not None
    }
    if args.keyframes:
        fields["mode"] = "keyframes"
    if args.scene is not None:
        fields.update(mode="scene", scene_threshold=args.scene)
    if args.best is not None:
        fields.update(mode="best", count=args.best)
    return fields


def run() -> None:
    """The ``vfe`` command (and ``python -m vfe``). ``vfe extract`` ends with ``os._exit``
    once its output is flushed: everything it made is written and closed by then, and the
    interpreter's own teardown (pydantic's and numpy's objects) took 0.2 s, a sixth of a
    short extract. Other commands exit as usual (a server's logs are flushed at exit)."""
    argv = sys.argv[1:]
    code = main(argv)
    if argv[:1] == ["extract"]:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "extract":
        from .extract_command import command  # the engine and pydantic: only for extract

        return command(args)
    if args.command in CLIENT_COMMANDS:
        from .client_commands import run  # httpx is imported only by the client commands

        return run(args, spec_fields(args) if args.command == "submit" else {})
    return _serve_command(args)


def _serve_command(args: argparse.Namespace) -> int:
    """``vfe serve`` and ``vfe worker``: read the settings (exit 2 when one is bad), then
    serve in the role asked for."""
    from .app import Role
    from .settings import Settings, SettingsError

    role = Role.WORKER if args.command == "worker" else Role.ALL
    if getattr(args, "api_only", False):
        role = Role.API

    overrides = {}
    if args.host:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    try:
        settings = Settings.from_env(**overrides)
        settings.ensure_dirs()
    except SettingsError as exc:
        print(f"vfe: bad setting: {exc}", file=sys.stderr)
        return 2
    if role is not Role.ALL and settings.postgres_url is None:
        what = "vfe worker" if role is Role.WORKER else "vfe serve --api-only"
        print(
            f"vfe: {what} needs DATABASE_URL (a PostgreSQL database shared by the API and "
            "the workers); with SQLite, run plain `vfe serve`",
            file=sys.stderr,
        )
        return 2
    from .errors import VfeError
    from .owner import DataOwner
    from .store.sqlite import check_database

    # Before anything touches a job (and before the port is bound): this process must own
    # the SQLite database, and the database must be vfe's. PostgreSQL has many users.
    owner = DataOwner(settings.database_path, enabled=settings.postgres_url is None)
    try:
        owner.acquire()
        if settings.postgres_url is None:
            check_database(settings.database_path)
    except VfeError as exc:
        print(f"vfe: cannot start: {exc.detail}", file=sys.stderr)
        return 2
    from .server import serve  # the server stack is imported only to serve

    try:
        serve(settings, role)
    finally:
        owner.release()
    return 0
