"""Schemathesis against a real vfe server: generated requests for every operation of
``/openapi.json`` (its examples, boundary values, random and invalid data, and sequences
that follow the document's links from a submitted job to its status, frames, zip and
deletion) must never get a 5xx, and every answer must conform to the document: a
documented status and content type, a body and headers that match their schemas.

The server runs with an API key (sent as a header) and a real clip at the path the
document's example names, so example submits run real jobs. ``GET /events`` is left out:
the stream never ends by itself, and the in-process tests check its schema instead. The
seed is fixed so a run is reproducible; change it to explore.

Every phase runs over every other operation, with up to 30 generated cases an operation:
the suite's 20-minute budget on two cores allows no more (50 took about 60 s, the fuzzer
itself running outside coverage, which doubled that). More cases try more random values
of the same schemas; the examples, the boundary values of the coverage phase and the
stateful scenarios over the document's links do not depend on the number.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import LiveServer, Media, patience, place
from vfe.api import EXAMPLE_SOURCE

pytestmark = pytest.mark.live

KEY = "schemathesis-key"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SEED = 20261124
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


@pytest.mark.timeout(420)
def test_schemathesis_finds_nothing(
    live_server: Callable[..., LiveServer], media: Media, videos: Path, tmp_path: Path
):
    (videos / EXAMPLE_SOURCE).parent.mkdir(parents=True, exist_ok=True)
    place(media.standard(), videos, EXAMPLE_SOURCE)
    # Every job gets a webhook to a local address the server may not reach: each fails at
    # its one attempt, so POST /job/{job_id}/webhook has failed webhooks to send again.
    server = live_server(API_KEYS=KEY, MAX_CONCURRENT_JOBS="2", WEBHOOK_URL="http://127.0.0.1:9/",
                         WEBHOOK_SECRET=SECRET, WEBHOOK_MAX_ATTEMPTS="1")  # fmt: skip
    argv = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json",
        "--checks", ",".join(CHECKS),
        "--header", f"Authorization: Bearer {KEY}",
        "--exclude-path", "/events",
        "--max-examples", "30",
        "--workers", "1",
        "--seed", str(SEED),
        "--request-timeout", "20",
        "--generation-database", "none",
        "--no-color",
    ]  # fmt: skip
    started = time.monotonic()
    # About 50 s when idle; the bound leaves room for a machine seven times slower.
    # The fuzzer is not vfe: it runs unmeasured by coverage (which doubled its time), the
    # server it drives measured as every other.
    env = {k: v for k, v in os.environ.items() if k != "COVERAGE_PROCESS_CONFIG"}
    run = subprocess.run(
        argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=patience(360),
        check=False,
    )  # fmt: skip
    output = run.stdout + run.stderr
    took = time.monotonic() - started
    print(output[-20000:])
    print(f"schemathesis took {took:.1f} s")
    assert run.returncode == 0, f"schemathesis found problems (exit {run.returncode})"
    assert "No issues found" in output
    # Every operation but GET /events was tested, and every phase ran and passed.
    selected = re.search(r"Selected: (\d+)/(\d+)", output)
    tested = re.search(r"Tested: (\d+)", output)
    assert selected and tested, output[-3000:]
    assert int(tested[1]) == int(selected[1]) == int(selected[2]) - 1
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}\n" in output, f"the {phase} phase did not pass"
