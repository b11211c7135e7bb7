"""Command line: ``vfe serve`` runs the service under uvicorn.

Exit codes: 2 for a bad setting or argument (the message names it), 3 when start-up
fails (uvicorn's own code). On SIGINT/SIGTERM uvicorn shuts down gracefully and then
re-raises the signal, so a clean stop ends "killed by SIGTERM" (-15, shell 143), as
supervisors expect; 0 only when the server stops without a signal.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import uvicorn

from .app import create_app
from .settings import Settings, SettingsError

GRACEFUL_SHUTDOWN_SECONDS = 10


def _port(text: str) -> int:
    """``--port``: checked like the PORT setting (else uvicorn reports a wrapped port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 1 and 65535, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vfe", description="Video frame extraction service.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the API and dashboard")
    serve.add_argument("--host", help="bind address (default: HOST, 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="port (default: PORT, 8000)")
    return parser


def serve(settings: Settings) -> None:
    """Run uvicorn until SIGINT/SIGTERM; open responses get a bounded time to finish."""
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    uvicorn.Server(config).run()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
    serve(settings)
    return 0
