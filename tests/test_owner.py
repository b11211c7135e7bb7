"""One owner per data folder: a second vfe on the same database refuses to start before it
touches a job, and a database vfe did not make is named, never a traceback. Real
processes: a running server, and `python -m vfe serve` started again beside it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, LiveServer, Media, free_port, place, vfe_env, wait_until
from vfe.owner import DataFolderInUse, DataOwner

pytestmark = pytest.mark.live
START_TIMEOUT = 60.0  # a second start that should fail fast; generous for a busy machine


def serve_once(env: dict[str, str], port: int) -> subprocess.CompletedProcess[str]:
    """Run `vfe serve` to its end (it is expected to refuse to start)."""
    full = {**env, "HOST": "127.0.0.1", "PORT": str(port)}
    return subprocess.run(
        [sys.executable, "-m", "vfe", "serve"],
        env={**os.environ, **full},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )


def job(url: str, job_id: str) -> dict[str, object]:
    body: dict[str, object] = httpx.get(f"{url}/job-status/{job_id}", timeout=30).json()
    return body


@pytest.mark.parametrize("same_port", [False, True])
def test_a_second_server_on_the_same_database_refuses_before_touching_jobs(
    live_server: Callable[..., LiveServer],
    tmp_path: Path,
    videos: Path,
    media: Media,
    same_port: bool,
) -> None:
    first = live_server()
    assert first.proc is not None
    name = place(media.slow(), videos)
    res = httpx.post(f"{first.url}/video-job", json={"video_source": name, "interval": 0.1},
                     timeout=60)  # fmt: skip
    job_id = res.json()["job_id"]
    wait_until(lambda: job(first.url, job_id)["status"] == "processing", "the job to run")
    attempts_before = job(first.url, job_id)["attempts"]

    second = serve_once(vfe_env(tmp_path, videos), first.port if same_port else free_port())

    assert second.returncode == 2, second.stdout + second.stderr
    assert f"process {first.proc.pid} is already serving the database" in second.stderr
    assert "DATABASE_PATH" in second.stderr
    assert "Traceback" not in second.stderr + second.stdout
    # The running job was not "recovered" by the second start: same attempt, and it ends.
    assert job(first.url, job_id)["attempts"] == attempts_before
    wait_until(lambda: job(first.url, job_id)["status"] != "processing", "the job to end",
               within=120)  # fmt: skip
    final = job(first.url, job_id)
    assert final["status"] == "completed", final
    assert final["attempts"] == attempts_before


def test_the_lock_is_released_when_the_owner_dies(
    live_server: Callable[..., LiveServer], tmp_path: Path, videos: Path
) -> None:
    first = live_server()
    first.kill()  # SIGKILL: the OS releases the lock with the process
    again = live_server()
    assert httpx.get(f"{again.url}/health/live", timeout=30).status_code == 200


def test_the_original_services_database_is_named_not_a_traceback(
    tmp_path: Path, videos: Path
) -> None:
    env = vfe_env(tmp_path, videos)
    database = Path(env["DATABASE_PATH"])
    database.parent.mkdir(parents=True)
    with sqlite3.connect(database) as db:  # the original's layout: its own jobs table
        db.execute("CREATE TABLE jobs (job_id TEXT PRIMARY KEY, status TEXT, video_path TEXT)")
        db.execute("INSERT INTO jobs VALUES ('a', 'completed', '/videos/a.mp4')")
    result = serve_once(env, free_port())
    assert result.returncode == 2, result.stdout + result.stderr
    assert "the original service's database" in result.stderr
    assert "set DATABASE_PATH to another file" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    with sqlite3.connect(database) as db:  # left as it was
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (1,)
        assert db.execute("PRAGMA user_version").fetchone() == (0,)


def test_a_file_that_is_no_database_is_named(tmp_path: Path, videos: Path) -> None:
    env = vfe_env(tmp_path, videos)
    database = Path(env["DATABASE_PATH"])
    database.parent.mkdir(parents=True)
    database.write_text("not a database, just text " * 100)
    result = serve_once(env, free_port())
    assert result.returncode == 2
    assert f"cannot read the database {database}" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_lock_is_counted_within_one_process(tmp_path: Path) -> None:
    database = tmp_path / "db" / "metadata.db"
    owner, again = DataOwner(database), DataOwner(database)
    owner.acquire()
    again.acquire()  # the same process (the CLI, then the app's lifespan): no conflict
    again.release()
    holder = subprocess.run(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from vfe.owner import DataOwner; "
         "DataOwner(Path(sys.argv[1])).acquire()", str(database)],
        cwd=ROOT, capture_output=True, text=True, timeout=START_TIMEOUT,
    )  # fmt: skip
    assert holder.returncode != 0 and "is already serving the database" in holder.stderr
    owner.release()
    owner.acquire()  # free again: taken anew
    owner.release()
    with pytest.raises(DataFolderInUse, match=r"process \d+ is already serving"):
        held = subprocess.Popen(
            [sys.executable, "-c",
             "import sys, time; from pathlib import Path; from vfe.owner import DataOwner; "
             "DataOwner(Path(sys.argv[1])).acquire(); print('held', flush=True); "
             "time.sleep(60)", str(database)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert held.stdout is not None and held.stdout.readline().strip() == "held"
            DataOwner(database).acquire()
        finally:
            held.kill()
            held.wait()
            assert held.stdout is not None
            held.stdout.close()


def test_serve_prints_one_plain_ready_line(live_server: Callable[..., LiveServer]) -> None:
    server = live_server()
    wait_until(lambda: "vfe ready:" in server.log.read_text(), "the ready line")
    line = next(li for li in server.log.read_text().splitlines() if "vfe ready:" in li)
    assert line.startswith(f"vfe ready: http://127.0.0.1:{server.port}/ — put videos in ")
    assert line.endswith("/")
