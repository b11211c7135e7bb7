"""``vfe serve`` / ``python -m vfe``: exit codes and messages."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, Media, free_port, run_ffmpeg, vfe_env
from vfe.cli import main


@pytest.fixture
def clean_env(tmp_path: Path, videos: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from an empty folder with every path setting inside ``tmp_path``."""
    for name, value in vfe_env(tmp_path, videos).items():
        monkeypatch.setenv(name, value)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.mark.parametrize(
    ("name", "value"),
    [("PORT", "eighty"), ("MAX_CONCURRENT_JOBS", "0"), ("LOG_LEVEL", "loud"), ("CACHE_TTL", "nan")],
)
def test_bad_setting_returns_2_and_names_it(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    name: str, value: str,
) -> None:  # fmt: skip
    monkeypatch.setenv(name, value)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vfe: bad setting: ")
    assert name in err
    assert list(clean_env.iterdir()) == []  # nothing was created


def test_uncreatable_folder_returns_2(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("FRAMES_BASE_PATH", str(blocker / "frames"))
    assert main(["serve"]) == 2
    assert "cannot create folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "required"),
        (["bogus"], "invalid choice"),
        (["serve", "--port", "abc"], "--port"),
        (["serve", "--port", "70000"], "--port"),
        (["serve", "--port", "0"], "--port"),
        (["serve", "--port", "-1"], "--port"),
        (["serve", "--nope"], "unrecognized arguments"),
    ],
)
def test_argument_errors_exit_2(
    clean_env: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert expected in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--help"])
    assert info.value.code == 0
    assert "--port" in capsys.readouterr().out


def run_module(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vfe", *args],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_python_m_vfe_bad_setting_exits_2(tmp_path: Path, videos: Path) -> None:
    result = run_module(vfe_env(tmp_path, videos, REDIS_PORT="not-a-port"), "serve")
    assert result.returncode == 2
    assert "REDIS_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_python_m_vfe_without_command_exits_2(tmp_path: Path, videos: Path) -> None:
    result = run_module(vfe_env(tmp_path, videos))
    assert result.returncode == 2
    assert "usage: vfe" in result.stderr


def test_serve_runs_and_stops_cleanly_on_sigterm(tmp_path: Path, videos: Path) -> None:
    """The command-line overrides win over HOST/PORT; SIGTERM stops it gracefully.

    uvicorn re-raises the signal after its graceful shutdown, so the exit status is
    "killed by SIGTERM"; the log shows the lifespan ran to its end.
    """
    port = free_port()
    env = vfe_env(tmp_path, videos, HOST="256.0.0.1", PORT="1")  # both overridden below
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vfe", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, **env},
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                res = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        assert res.status_code in (200, 503)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert '"vfe stopped"' in log.read_text()


def test_start_up_failure_exits_3(tmp_path: Path, videos: Path) -> None:
    """A database newer than this vfe stops start-up: uvicorn's code 3, no hang, and one
    line saying why where the person who started it looks, not a traceback."""
    env = vfe_env(tmp_path, videos, PORT=str(free_port()))
    database = Path(env["DATABASE_PATH"])
    database.parent.mkdir(parents=True)
    con = sqlite3.connect(database)
    con.execute("PRAGMA user_version = 999")
    con.close()
    result = run_module(env, "serve")
    assert result.returncode == 3, result.stdout[-2000:] + result.stderr[-2000:]
    said = [line for line in result.stderr.splitlines() if line.startswith("vfe cannot start:")]
    assert len(said) == 1 and "newer than this vfe" in said[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    logged = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert any(r["level"] == "error" and r["msg"] == said[0] for r in logged), result.stdout


# --- vfe extract --------------------------------------------------------------------------


def test_extract_writes_frames_manifest_and_prints_the_plan(
    media: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(["extract", str(media.standard()), "--interval", "0.5", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    plan = json.loads(printed.splitlines()[0].removeprefix("plan: "))
    assert plan["strategy"] in ("select", "seek") and plan["frames"] == 4
    assert "wrote 4 frames" in printed
    manifest = json.loads((out / "frames.json").read_text())
    assert [f["timestamp"] for f in manifest] == [0.0, 0.52, 1.0, 1.52]
    assert [f["target_time"] for f in manifest] == [0.0, 0.5, 1.0, 1.5]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f["filename"] for f in manifest] + ["frames.json"])
    for frame in manifest:
        data = (out / frame["filename"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == frame["checksum"]


def test_extract_writes_every_frame_even_when_their_bytes_are_equal(
    media: Any, tmp_path: Path
) -> None:
    """The service stores equal bytes once; ``vfe extract`` writes each frame by its name."""
    still = media.folder / "still-red.mp4"
    if not still.exists():
        run_ffmpeg("-f", "lavfi", "-i", "color=c=red:s=320x240:r=25:d=2", "-c:v", "libx264",
                   "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(still))  # fmt: skip
    out = tmp_path / "out"
    assert main(["extract", str(still), "--interval", "0.5", "--out", str(out), "--quiet"]) == 0
    manifest = json.loads((out / "frames.json").read_text())
    assert len(manifest) == 4 and len({f["checksum"] for f in manifest}) == 1  # all alike
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f["filename"] for f in manifest] + ["frames.json"])
    for frame in manifest:
        data = (out / frame["filename"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == frame["checksum"]


def test_extract_count_png_resized_and_keyframes(media: Any, tmp_path: Path) -> None:
    clip = media.clip("cli-gop.mp4", duration=4, gop=25)
    out = tmp_path / "png"
    argv = ["extract", str(clip), "--count", "3", "--format", "png", "--width", "100"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    manifest = json.loads((out / "frames.json").read_text())
    assert len(manifest) == 3
    assert all(f["filename"].endswith(".png") and f["width"] == 100 for f in manifest)
    assert (out / manifest[0]["filename"]).read_bytes()[:4] == b"\x89PNG"
    keys = tmp_path / "keys"
    assert main(["extract", str(clip), "--keyframes", "--out", str(keys), "--quiet"]) == 0
    stamps = [f["timestamp"] for f in json.loads((keys / "frames.json").read_text())]
    assert stamps == [0.0, 1.0, 2.0, 3.0]


def test_extract_errors_have_clear_exit_codes(
    media: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "out")
    assert main(["extract", str(media.standard()), "--count", "0", "--out", out]) == 2
    assert "bad argument count" in capsys.readouterr().err
    assert main(["extract", str(tmp_path / "missing.mp4"), "--out", out]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["extract", str(media.not_a_video()), "--out", out]) == 1
    assert "not a video" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["extract", str(media.standard()), "--interval", "1", "--count", "2", "--out", out])
    assert exited.value.code == 2
    # what the server refuses with a 422 (nothing to extract) is refused here too, not a
    # run that writes no frame and exits 0
    for args, told in (
        (["--start", "50"], "bad argument start: start (50 s) is at or past"),
        (["--timestamps", "50,60"], "bad argument timestamps: no frame of the"),
        (["--scene", "--start", "50"], "bad argument start: start (50 s)"),
    ):
        assert main(["extract", str(media.standard()), *args, "--out", out]) == 2, args
        assert told in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # a refusal writes nothing, not even the folder
    # an --out that cannot be a folder: a bad argument, said in one line
    (tmp_path / "a-file").write_text("")
    for where in (tmp_path / "a-file", tmp_path / "a-file" / "under"):
        assert main(["extract", str(media.standard()), "--out", str(where)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"vfe: bad argument --out: cannot make the folder {where} (")
        assert "Traceback" not in err


def test_python_m_vfe_extract_quiet(media: Any, tmp_path: Path, videos: Path) -> None:
    out = tmp_path / "out"
    done = run_module(
        vfe_env(tmp_path, videos), "extract", str(media.standard()), "--out", str(out), "--quiet"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert len(json.loads((out / "frames.json").read_text())) == 1  # default interval 5


def test_extract_interrupted_exits_130(
    media: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(coro: Any) -> int:
        coro.close()
        raise KeyboardInterrupt  # fault injection: Ctrl-C

    monkeypatch.setattr(asyncio, "run", interrupted)  # vfe.cli imports asyncio when it runs
    argv = ["extract", str(media.standard()), "--out", str(tmp_path / "o")]
    assert main(argv) == 130
    assert "interrupted" in capsys.readouterr().err


def test_extract_scene_writes_a_frame_per_cut(
    media: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scenes"
    code = main(["extract", str(media.cuts()), "--scene", "--min-gap", "0", "--out", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    printed = captured.out
    plan = json.loads(printed.splitlines()[0].removeprefix("plan: "))
    assert plan["strategy"] == "scene"
    assert "wrote 5 frames" in printed
    assert "100%" in captured.err  # the bar shows the decoding, to its end
    manifest = json.loads((out / "frames.json").read_text())
    expected = list(Media.CUTS_NO_GAP)
    assert [f["timestamp"] for f in manifest] == pytest.approx(expected, abs=1e-9)
    assert [f["index"] for f in manifest] == [0, 1, 2, 3, 4]
    assert [f["target_time"] for f in manifest] == [f["timestamp"] for f in manifest]
    names = [f"{i:06d}_{t:.3f}.jpg" for i, t in enumerate(expected)]
    assert [f["filename"] for f in manifest] == names
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "frames.json"])
    for frame in manifest:
        data = (out / frame["filename"]).read_bytes()
        assert data[:3] == b"\xff\xd8\xff"
        assert hashlib.sha256(data).hexdigest() == frame["checksum"]
        assert (frame["width"], frame["height"]) == (320, 240)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--scene"], list(Media.CUTS)),  # the default threshold and min_gap
        (["--scene", "0.99"], [0.0, 3.2]),  # only the cut scoring 1.0 (to white)
        (["--scene", "0.99", "--min-gap", "5"], [0.0]),  # the first frame always counts
        (["--scene", "--min-gap", "0", "--start", "1.5", "--end", "3.1"], [1.52, 2.0, 3.0]),
        (["--scene", "--min-gap", "0", "--max-frames", "2", "--format", "png"], [0.0, 1.2]),
    ],
)
def test_extract_scene_thresholds_and_window(
    media: Any, tmp_path: Path, args: list[str], expected: list[float]
) -> None:
    out = tmp_path / "out"
    assert main(["extract", str(media.cuts()), *args, "--out", str(out), "--quiet"]) == 0
    manifest = json.loads((out / "frames.json").read_text())
    assert [f["timestamp"] for f in manifest] == pytest.approx(expected, abs=1e-9)
    assert [f["index"] for f in manifest] == list(range(len(expected)))
    assert len(list(out.iterdir())) == len(expected) + 1  # and frames.json; no work folder


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scene", "1"], "bad argument scene_threshold: Input should be less than 1"),
        (["--scene", "0"], "bad argument scene_threshold: Input should be greater than 0"),
        (["--scene", "nan"], "bad argument scene_threshold: Input should be a finite number"),
        (["--scene", "--min-gap", "-1"], "bad argument min_gap: Input should be greater than"),
    ],
)
def test_extract_bad_scene_values_return_2(
    media: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    assert main(["extract", str(media.cuts()), *args, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scene", "--interval", "1"], "not allowed with argument"),
        (["--interval", "1", "--scene", "0.5"], "not allowed with argument"),
        (["--scene", "0.4", "--keyframes"], "not allowed with argument"),
        (["--scene", "--count", "3"], "not allowed with argument"),
        (["--scene", "high"], "invalid float value"),
        (["--scene", "--min-gap", "x"], "invalid float value"),
    ],
)
def test_extract_scene_argument_errors_exit_2(
    media: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        main(["extract", str(media.cuts()), *args, "--out", str(out)])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


# --- start-up: what the command line imports -----------------------------------------------

WEB_STACK = {"starlette", "uvicorn", "httpx", "httpcore", "aiosqlite", "redis"}
PRINT_PACKAGES = (
    "import json, sys; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
)


def loaded_packages(code: str) -> set[str]:
    """The top-level packages in ``sys.modules`` after ``code`` runs in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{PRINT_PACKAGES}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_import_and_help_load_no_web_stack_pydantic_or_tqdm() -> None:
    code = """
import contextlib, io
from vfe.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    main(["extract", "--help"])
"""
    loaded = loaded_packages(code)
    assert {"vfe", "argparse"} <= loaded  # the probe sees what the import loaded
    assert loaded & (WEB_STACK | {"pydantic", "tqdm"}) == set()


def test_quiet_extract_loads_no_web_stack_or_tqdm(media: Any, tmp_path: Path) -> None:
    out = tmp_path / "o"
    argv = ["extract", str(media.standard()), "--interval", "1", "--out", str(out), "--quiet"]
    loaded = loaded_packages(f"from vfe.cli import main\nassert main({argv!r}) == 0")
    assert {"pydantic", "asyncio"} <= loaded  # the engine did run
    assert loaded & (WEB_STACK | {"tqdm"}) == set()
    assert len(json.loads((out / "frames.json").read_text())) == 2


def test_the_command_flushes_its_output_and_exit_code(media: Any, tmp_path: Path) -> None:
    """``python -m vfe extract`` as a process: it ends with os._exit, after its output is
    flushed and its files are closed."""
    out = tmp_path / "o"
    done = run_module({}, "extract", str(media.standard()), "--interval", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("plan: ") and "wrote 2 frames to" in done.stdout
    listed = json.loads((out / "frames.json").read_text())
    assert sorted(f["filename"] for f in listed) == sorted(
        p.name for p in out.iterdir() if p.name != "frames.json"
    )
    bad = run_module({}, "extract", str(media.standard()), "--count", "0", "--out", str(out))
    assert bad.returncode == 2 and "bad argument count" in bad.stderr


def test_the_probe_loads_without_pydantic() -> None:
    """vfe extract starts ffprobe before pydantic loads: vfe.probe must not need it."""
    loaded = loaded_packages("import vfe.probe")
    assert "vfe" in loaded
    assert loaded & (WEB_STACK | {"pydantic", "numpy"}) == set()


def test_a_bad_argument_stops_ffprobe_and_writes_nothing(media: Any, tmp_path: Path) -> None:
    """The probe starts before the arguments are validated; a refused argument stops it."""
    out = tmp_path / "o"
    argv = ["extract", str(media.standard()), "--interval", "-1", "--out", str(out)]
    code = f"""
import psutil
from vfe.cli import main
assert main({argv!r}) == 2
assert not psutil.Process().children(recursive=True), "a child process was left running"
"""
    loaded_packages(code)
    assert not out.exists()


def test_help_shows_the_defaults_the_validation_uses(capsys: pytest.CaptureFixture[str]) -> None:
    from vfe import models  # vfe.cli takes them from vfe.options, which needs no pydantic

    with pytest.raises(SystemExit):
        main(["extract", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"default {models.DEFAULT_SCENE_THRESHOLD})" in text
    assert f"(default {models.DEFAULT_MIN_GAP})" in text
    assert "{" + ",".join(f.value for f in models.ImageFormat) + "}" in text
