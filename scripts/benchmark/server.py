"""A real ``vfe serve`` (or ``vfe serve --api-only``, ``vfe worker``) for the bench: on a
free port of 127.0.0.1, with every folder in a temporary one (or one shared by several
processes) and Redis pointed at a closed port (the in-memory cache serves instead).

The server inherits the bench's environment, so a vfe setting exported there applies to
it too; only the address, the folders, the Redis port and ``env`` are set here.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from .runner import BenchError, last_line, process, tree_rss, tree_usage

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0  # above the server's own SHUTDOWN_GRACE_SECONDS (15 by default)
SETTLE_PERIOD_S = 0.5
SETTLE_STEP_MIB = 1.0  # "settled": two samples SETTLE_PERIOD_S apart differ by less


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports of 127.0.0.1 that nothing listened on a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class Server:
    """``vfe serve`` as a subprocess, from ``with Server(vfe) as server:`` to its end.

    Entering starts it and waits (at most ``START_TIMEOUT_S``) until ``/health/live``
    answers; leaving sends SIGTERM and waits ``STOP_TIMEOUT_S``, then kills its process
    group, and always reaps it and removes its folder.
    """

    def __init__(
        self,
        vfe: Path,
        command: tuple[str, ...] = ("serve",),
        folder: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.vfe = vfe
        self.command = command
        self.own_folder = folder is None  # a shared folder outlives this server
        self.folder = folder or Path(tempfile.mkdtemp(prefix="vfe-bench-serve-"))
        port, self.redis_port = free_ports(2)  # nothing listens on the second one
        self.log = self.folder / f"{command[0]}-{port}.log"
        self.url = f"http://127.0.0.1:{port}"
        self.env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "REDIS_PORT": str(self.redis_port),
            "DATABASE_PATH": str(self.folder / "db" / "metadata.db"),
            "FRAMES_BASE_PATH": str(self.folder / "frames"),
            "VIDEOS_BASE_PATH": str(self.folder / "videos"),
            "UPLOADS_PATH": str(self.folder / "uploads"),
            "LOG_PATH": str(self.folder / "logs" / f"app-{port}.log"),
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.handle: Any = None  # psutil's view of the process, for tree_rss
        self.stopped = ""  # how it ended: "clean", "exit N" or "killed after N s"
        self.last_words = ""  # the log's last line, kept when the folder goes

    def __enter__(self) -> Server:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server and wait until ``/health/live`` answers 200."""
        with self.log.open("wb") as out:
            try:
                self.proc = subprocess.Popen(
                    [str(self.vfe), *self.command],
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its FFmpeg children can be killed with it
                )
            except OSError as exc:
                raise BenchError(f"{self.vfe} {self.command[0]}: {exc}") from exc
        self.handle = process(self.proc.pid)
        deadline = time.monotonic() + START_TIMEOUT_S
        with httpx.Client(base_url=self.url, timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    code = self.proc.returncode
                    raise BenchError(f"vfe {self.command[0]} exited {code}: {self.last_log()}")
                try:
                    if client.get("/health/live").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass  # not listening yet
                time.sleep(0.1)
        raise BenchError(f"vfe {self.command[0]} did not answer within {START_TIMEOUT_S:g} s")

    def rss_mib(self) -> float:
        """The summed RSS of the server and all its descendants, in MiB."""
        return tree_rss(self.handle) / 2**20

    def usage(self) -> tuple[float, int]:
        """``rss_mib`` and how many descendants (FFmpeg children) the server has."""
        rss, descendants = tree_usage(self.handle)
        return rss / 2**20, descendants

    def settled_rss_mib(self, limit_s: float) -> tuple[float, float]:
        """Sample the tree's RSS every ``SETTLE_PERIOD_S`` until two samples differ by
        less than ``SETTLE_STEP_MIB`` or ``limit_s`` passes; the last sample (MiB) and
        the seconds it took."""
        started = time.monotonic()
        last = self.rss_mib()
        while time.monotonic() - started < limit_s:
            time.sleep(SETTLE_PERIOD_S)
            now = self.rss_mib()
            if abs(now - last) < SETTLE_STEP_MIB:
                return now, time.monotonic() - started
            last = now
        return last, time.monotonic() - started

    def stop(self) -> None:
        """SIGTERM, wait ``STOP_TIMEOUT_S``, then SIGKILL the process group; reap it.

        A clean stop exits 0 or -SIGTERM: uvicorn shuts down, then raises the signal it
        caught again."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)  # uvicorn owns the signal: a graceful stop
            try:
                code = proc.wait(STOP_TIMEOUT_S)
                self.stopped = "clean" if code in (0, -signal.SIGTERM) else f"exit {code}"
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                self.stopped = f"killed after {STOP_TIMEOUT_S:g} s"
        elif proc is not None:
            self.stopped = f"exit {proc.returncode}"
        if self.folder.exists():
            self.last_words = self.last_log()
            if self.own_folder:
                shutil.rmtree(self.folder, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the server alone, as a crash would (its FFmpeg dies with it), and reap."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            self.proc.wait()
            self.stopped = "killed"

    def last_log(self) -> str:
        try:
            return last_line(self.log.read_text(errors="replace"))
        except OSError:
            return ""
