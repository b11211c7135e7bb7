"""A real, throwaway PostgreSQL cluster for the tests: ``initdb`` into a temporary folder,
``pg_ctl`` on a free port on 127.0.0.1, no durability (``fsync=off``), trust auth.

Debian keeps ``initdb`` and ``pg_ctl`` in the package's own ``bin`` folder, not on
``PATH``; both refuse to run as root, so as root they run as the ``postgres`` user (the
cluster's folder is handed to it). ``scripts/setup --test`` installs PostgreSQL.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

SUPERUSER = "vfe"


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not candidates:
        raise RuntimeError(f"PostgreSQL's {name} is not installed; run ./scripts/test")
    return candidates[-1]


class PostgresServer:
    """One PostgreSQL cluster; ``start``/``stop`` may be called again (the data stays)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.folder = Path(tempfile.mkdtemp(prefix="vfe-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(
            _binary("initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
            "--encoding=UTF8", "--no-sync", "--no-instructions",
        )  # fmt: skip
        self.running = False

    def _run(self, *argv: str) -> None:
        if self.as_postgres:
            argv = ("runuser", "-u", "postgres", "--", *argv)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run(
            _binary("pg_ctl"), "start", "-w", "-t", "120", "-D", str(self.data),
            "-l", str(self.log), "-o", options,
        )  # fmt: skip
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: end sessions cleanly; ``immediate``: as a crash)."""
        if self.running:
            self._run(_binary("pg_ctl"), "stop", "-w", "-t", "120", "-D", str(self.data),
                      "-m", mode)  # fmt: skip
            self.running = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)
