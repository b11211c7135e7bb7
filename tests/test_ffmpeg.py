"""The process runner: pipes read to the end, progress parsed, children always stopped."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import patience, wait_until_async
from vfe import ffmpeg, ffmpeg_argv
from vfe.errors import ExtractionError
from vfe.options import ImageFormat
from vfe.output import Output

PY = sys.executable


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in process group ``pgid``."""
    found = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return found


def group_alive(pgid: int) -> bool:
    return bool(group_members(pgid))


async def wait_group_gone(pgid: int) -> None:
    await wait_until_async(lambda: not group_alive(pgid), f"process group {pgid} to be gone")


def write_script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


async def test_run_captures_stdout_and_exit_code() -> None:
    done = await ffmpeg.run(
        [PY, "-c", "import sys; print('one'); print('two'); sys.stdout.write('end'); sys.exit(3)"]
    )
    assert done.returncode == 3
    assert done.stdout == b"one\ntwo\nend\n"
    assert done.stderr_tail == []


async def test_run_parses_progress_blocks() -> None:
    script = (
        "print('frame=1'); print('out_time=00:00:00.04'); print('progress=continue');"
        "print('not a key value line'); print(' frame = 2 '); print('progress=end')"
    )
    blocks: list[dict[str, str]] = []
    done = await ffmpeg.run([PY, "-c", script], on_progress=blocks.append)
    assert blocks == [
        {"frame": "1", "out_time": "00:00:00.04", "progress": "continue"},
        {"frame": "2", "progress": "end"},
    ]
    assert done.stdout == b""  # parsed, not captured


async def test_real_ffmpeg_progress_and_stdout(tmp_path: Path) -> None:
    blocks: list[dict[str, str]] = []
    argv = [
        ffmpeg.binary("ffmpeg"), *ffmpeg_argv.GLOBAL_ARGS,
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=1",
        "-f", "null", "-",
    ]  # fmt: skip
    done = await ffmpeg.run(argv, on_progress=blocks.append)
    assert done.returncode == 0
    assert blocks and blocks[-1]["progress"] == "end"
    assert blocks[-1]["frame"] == "25"


async def test_stderr_tail_keeps_only_unconsumed_lines() -> None:
    script = (
        "import sys\n"
        "for i in range(80): print(f'eat {i}' if i % 2 else f'keep {i}', file=sys.stderr)\n"
        "sys.stderr.write('last without newline\\r')"
    )
    consumed: list[str] = []

    def on_line(line: str) -> bool:
        consumed.append(line)
        return line.startswith("eat")

    done = await ffmpeg.run([PY, "-c", script], on_line=on_line, tail_lines=5)
    assert len(consumed) == 81  # every line reaches the callback, in order
    assert consumed[:2] == ["keep 0", "eat 1"]
    assert done.stderr_tail == ["keep 72", "keep 74", "keep 76", "keep 78", "last without newline"]
    assert done.error_text() == "keep 72; keep 74; keep 76; keep 78; last without newline"


async def test_stderr_tail_without_callback_keeps_the_last_lines() -> None:
    script = "import sys\nfor i in range(60): print(i, file=sys.stderr)"
    done = await ffmpeg.run([PY, "-c", script])
    assert done.stderr_tail == [str(i) for i in range(10, 60)]


def test_error_text_is_bounded_and_skips_blank_lines() -> None:
    done = ffmpeg.Completed(1, b"", ["", "x" * 3000, "", "tail"])
    text = done.error_text()
    assert len(text) == 1000
    assert text.endswith("x; tail")


async def test_very_long_lines_are_cut_not_fatal() -> None:
    big = ffmpeg.MAX_LINE * 3
    script = (
        "import sys\n"
        f"sys.stderr.write('A' * {big} + '\\n')\n"
        "sys.stderr.write('after\\n')\n"
        f"sys.stderr.write('B' * {ffmpeg.MAX_LINE - 10} + 'tail\\n')\n"
        f"sys.stdout.write('C' * {big} + '\\nok\\n')\n"
        f"sys.stderr.write('D' * {big})\n"  # an endless last line: cut, sent once
    )
    lines: list[str] = []
    done = await ffmpeg.run([PY, "-c", script], on_line=lambda line: lines.append(line) or True)
    assert done.returncode == 0
    assert [len(line) for line in lines] == [
        ffmpeg.MAX_LINE,
        5,
        ffmpeg.MAX_LINE - 6,
        ffmpeg.MAX_LINE,
    ]
    assert set(lines[0]) == {"A"} and lines[1] == "after"
    assert lines[2].endswith("tail") and set(lines[3]) == {"D"}
    # stdout too: the long line is cut at MAX_LINE and the next line survives
    out = done.stdout.split(b"\n")
    assert len(out[0]) == ffmpeg.MAX_LINE and out[1] == b"ok"


async def test_undecodable_output_is_replaced_not_fatal() -> None:
    done = await ffmpeg.run(
        [PY, "-c", "import sys; sys.stderr.buffer.write(b'bad \\xff\\xfe bytes\\n')"]
    )
    assert done.stderr_tail == ["bad \ufffd\ufffd bytes"]


async def test_run_of_a_missing_program_is_an_extraction_error(tmp_path: Path) -> None:
    with pytest.raises(ExtractionError) as caught:
        await ffmpeg.run([str(tmp_path / "nothing-here")])
    assert str(caught.value) == "could not start nothing-here"  # no server path


async def start(*argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(*argv, start_new_session=True)


async def test_stop_process_terminates_politely() -> None:
    proc = await start("sleep", "30")
    began = time.monotonic()
    await ffmpeg.stop_process(proc, grace=30)
    assert proc.returncode == -signal.SIGTERM
    assert time.monotonic() - began < 15  # did not need the grace period
    await wait_group_gone(proc.pid)


async def test_stop_process_kills_a_group_that_ignores_sigterm() -> None:
    # bash and its sleep child both ignore TERM (ignored signals survive exec)
    proc = await start("bash", "-c", 'trap "" TERM; sleep 30 & sleep 30; wait')
    await wait_until_async(
        lambda: len(group_members(proc.pid)) == 3, "bash and its two sleeps to share the group"
    )
    await ffmpeg.stop_process(proc, grace=0.3)
    assert proc.returncode == -signal.SIGKILL
    await wait_group_gone(proc.pid)


async def test_stop_process_on_a_finished_process_is_harmless() -> None:
    proc = await start("true")
    await proc.wait()
    await ffmpeg.stop_process(proc)
    assert proc.returncode == 0


async def test_cancelling_run_kills_the_child_and_its_group() -> None:
    me = psutil.Process()
    task = asyncio.create_task(
        ffmpeg.run(["bash", "-c", 'trap "" TERM; sleep 30 & sleep 30 & wait'])
    )

    def bash_and_its_children() -> tuple[psutil.Process, list[psutil.Process]] | None:
        for child in me.children():
            if child.name() == "bash" and len(grandchildren := child.children()) == 2:
                return child, grandchildren
        return None

    bash, children = await wait_until_async(bash_and_its_children, "bash and its two sleeps")
    began = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_group_gone(bash.pid)
    # the stop grace (1 s), then SIGKILL: far less than the sleeps' 30 s
    assert time.monotonic() - began < 10
    for child in [bash, *children]:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    with pytest.raises(ProcessLookupError):
        os.kill(bash.pid, 0)  # reaped, not a zombie


async def test_run_under_a_timeout_stops_real_ffmpeg() -> None:
    argv = [
        ffmpeg.binary("ffmpeg"), *ffmpeg_argv.GLOBAL_ARGS, "-re",
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=60", "-f", "null", "-",
    ]  # fmt: skip
    seen: list[int] = []
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(patience(60)) as timeout:

            def on_progress(block: dict[str, str]) -> None:
                seen.extend(c.pid for c in psutil.Process().children() if "ffmpeg" in c.name())
                # FFmpeg is mid-run (its input lasts 60 s): the timeout fires now
                timeout.reschedule(asyncio.get_running_loop().time())

            await ffmpeg.run(argv, on_progress=on_progress)
    assert seen
    for pid in set(seen):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_binary_finds_ffmpeg_and_rejects_missing_programs() -> None:
    assert ffmpeg.binary("ffmpeg") == shutil.which("ffmpeg")
    assert os.path.isabs(ffmpeg.binary("ffprobe"))
    with pytest.raises(ExtractionError, match="vfe-no-such-tool is not installed"):
        ffmpeg.binary("vfe-no-such-tool")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("[error] plain", ("error", "plain")),
        ("[h264 @ 0x55aa01] [warning] mmco: unref short", ("warning", "mmco: unref short")),
        (
            "[Parsed_showinfo_1 @ 0x7f00] [info] n:   0 pts:   0",
            ("info", "n:   0 pts:   0"),
        ),
        ("[a @ 0x1] [b @ 0xabc] [fatal] nested", ("fatal", "nested")),
        ("no level here", ("", "no level here")),
        ("[h264 @ 0xZZ] [error] bad address", ("", "[h264 @ 0xZZ] [error] bad address")),
        ("", ("", "")),
    ],
)
def test_strip_level(line: str, expected: tuple[str, str]) -> None:
    assert ffmpeg.strip_level(line) == expected


async def test_version_reports_installed_ffmpeg() -> None:
    found = await ffmpeg.version()
    assert found is not None
    assert found[0].isdigit() and "." in found
    assert found.startswith("5.") or found.startswith(("6.", "7.", "8."))


async def test_version_is_none_when_ffmpeg_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert await ffmpeg.version() is None


async def test_version_is_none_when_ffmpeg_is_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_script(tmp_path, "ffmpeg", "echo 'ffmpeg version 9.9'; exit 1\n")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert await ffmpeg.version() is None


async def test_version_of_an_unusual_build_is_its_first_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_script(tmp_path, "ffmpeg", "echo 'avconv 12 custom'; echo second\n")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert await ffmpeg.version() == "avconv 12 custom"
    write_script(tmp_path, "ffmpeg", "true\n")  # no output at all
    assert await ffmpeg.version() is None


async def test_version_is_asked_once_per_binary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    write_script(tmp_path, "ffmpeg", f"echo x >> {runs}; echo 'ffmpeg version 7.1 x'\n")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert [await ffmpeg.version() for _ in range(3)] == ["7.1"] * 3
    assert runs.read_text().count("x") == 1
    write_script(tmp_path, "ffmpeg", f"echo x >> {runs}; echo 'ffmpeg version 7.1.1 y'\n")
    assert await ffmpeg.version() == "7.1.1"  # replaced (an upgrade): asked again
    assert runs.read_text().count("x") == 2


def test_frames_argv_starts_with_global_args_and_has_no_shell(tmp_path: Path) -> None:
    pattern = str(tmp_path / "%06d.jpg")
    source = "/videos/a b;rm -rf ~ $(x).mp4"
    argv = ffmpeg_argv.frames_argv(source, "gte(t,0)", pattern, Output(quality=80), max_frames=7)
    assert argv[0] == shutil.which("ffmpeg")
    assert argv[1 : 1 + len(ffmpeg_argv.GLOBAL_ARGS)] == list(ffmpeg_argv.GLOBAL_ARGS)
    for flag in ("-nostdin", "-hide_banner", "-nostats", "-copyts"):
        assert flag in argv
    assert argv.index("-copyts") < argv.index("-i")  # an input option
    assert argv[argv.index("-progress") + 1] == "pipe:1"
    assert argv[argv.index("-i") + 1] == f"file:{source}"  # one argument, file protocol
    assert argv[-1] == pattern
    assert argv[argv.index("-q:v") + 1] == str(ffmpeg_argv.jpeg_qscale(80)) == "8"
    assert argv[argv.index("-frames:v") + 1] == "7"
    assert argv[argv.index("-start_number") + 1] == "0"
    assert argv[argv.index("-fps_mode") + 1] == "passthrough"
    assert argv[argv.index("-atomic_writing") + 1] == "1"
    graph = argv[argv.index("-filter_complex") + 1]
    assert "select=gte(t\\,0)" in graph and "showinfo" in graph
    # no resize; JPEG's one conversion: to the BT.601 full-range YUV every decoder reads
    assert re.findall(r"scale=[^;\[]*", graph) == ["scale=out_color_matrix=bt601:out_range=pc"]
    for absent in ("-ss", "-noaccurate_seek", "-skip_frame", "-c:v"):
        assert absent not in argv
    assert not any(os.path.basename(a) in ("sh", "bash") for a in argv)
    assert "-c" not in argv


def test_frames_argv_default_jpeg_is_qscale_2() -> None:
    argv = ffmpeg_argv.frames_argv("a.mp4", "1", "%06d.jpg", Output())
    assert argv[argv.index("-q:v") + 1] == "2"
    assert "-frames:v" not in argv


def test_frames_argv_seek_and_keyframes_are_input_options() -> None:
    argv = ffmpeg_argv.frames_argv(
        "a.mp4", "1", "%06d.jpg", Output(), seek=12.5, keyframes_only=True
    )
    before_input = argv[: argv.index("-i")]
    # a hair past the keyframe, so rounding to microseconds never lands before it
    assert before_input[before_input.index("-ss") + 1] == "12.500001"
    assert "-noaccurate_seek" in before_input
    assert before_input[before_input.index("-skip_frame") + 1] == "nokey"
    assert ffmpeg_argv.frames_argv("a.mp4", "1", "x", Output(), seek=0.0).count("-ss") == 1


@pytest.mark.parametrize(
    ("output", "scale", "encode"),
    [
        (Output(ImageFormat.PNG), None, {}),
        (Output(ImageFormat.WEBP), None, {"-c:v": "libwebp", "-quality": "90"}),
        (Output(ImageFormat.WEBP, quality=40), None, {"-c:v": "libwebp", "-quality": "40"}),
        (Output(width=160), "scale=min(iw\\,160):-1:force_original_aspect_ratio=disable", {}),
        (Output(height=90), "scale=-1:min(ih\\,90):force_original_aspect_ratio=disable", {}),
        (
            Output(ImageFormat.PNG, width=100, height=50),
            "scale=min(iw\\,100):min(ih\\,50):force_original_aspect_ratio=decrease",
            {},
        ),
    ],
)  # fmt: skip
def test_frames_argv_output_options(
    output: Output, scale: str | None, encode: dict[str, str]
) -> None:
    argv = ffmpeg_argv.frames_argv("a.mp4", "1", f"%06d.{output.format.value}", output)
    graph = argv[argv.index("-filter_complex") + 1]
    resizes = [f for f in re.findall(r"scale=[^;\[]*", graph) if "out_color_matrix" not in f]
    assert resizes == ([] if scale is None else [scale])
    conversion = {ImageFormat.JPG: "pc", ImageFormat.WEBP: "tv"}.get(output.format)
    assert (f"scale=out_color_matrix=bt601:out_range={conversion}" in graph) is bool(conversion)
    for flag, value in encode.items():
        assert argv[argv.index(flag) + 1] == value
    if output.format is not ImageFormat.JPG:
        assert "-q:v" not in argv


@pytest.mark.parametrize(
    ("quality", "qscale"), [(100, 2), (99, 2), (90, 5), (50, 17), (1, 31), (0, 31), (150, 2)]
)
def test_jpeg_qscale(quality: int, qscale: int) -> None:
    assert ffmpeg_argv.jpeg_qscale(quality) == qscale


def test_jpeg_qscale_is_monotonic() -> None:
    scales = [ffmpeg_argv.jpeg_qscale(q) for q in range(1, 101)]
    assert scales == sorted(scales, reverse=True)
    assert set(scales) == set(range(2, 32))  # every qscale is reachable


async def test_a_long_filter_graph_moves_into_a_script_file(tmp_path: Path) -> None:
    short = ["ffmpeg", "-i", "x", "-filter_complex", "[0:v]select=1[s]", "-map", "[s]", "o"]
    assert await ffmpeg_argv.spill_long_graph(short, tmp_path / "g.txt") == short
    assert not (tmp_path / "g.txt").exists()
    graph = "[0:v]select=" + "+".join(["1"] * 40_000) + "[s]"
    long = ["ffmpeg", "-i", "x", "-filter_complex", graph, "-map", "[s]", "o"]
    spilled = await ffmpeg_argv.spill_long_graph(long, tmp_path / "g.txt")
    assert spilled == ["ffmpeg", "-i", "x", "-filter_complex_script", str(tmp_path / "g.txt"),
                       "-map", "[s]", "o"]  # fmt: skip
    assert (tmp_path / "g.txt").read_text() == graph
    no_graph = ["ffmpeg", "-version"]
    assert await ffmpeg_argv.spill_long_graph(no_graph, tmp_path / "h.txt") == no_graph


def test_frames_argv_for_scene_counts_decoded_frames_first_and_trims() -> None:
    argv = ffmpeg_argv.frames_argv(
        "/v.mp4", "gt(scene,0.3)", "/o/%06d.jpg", Output(),
        seek=3.0, max_frames=5, threads=1, stop_at=9.5, count_decoded=True,
    )  # fmt: skip
    graph = argv[argv.index("-filter_complex") + 1]
    assert graph.startswith("[0:v]trim=end=9.500000[")  # decoding stops at the window's end
    assert "split=2" in graph
    # -progress reports the first output's frame count: the null output, fed every frame
    null_at, image_at = argv.index("null"), argv.index("image2")
    assert null_at < image_at and argv[null_at + 1 : null_at + 3] == ["-c:v", "wrapped_avframe"]
    frames_at = argv.index("-frames:v")  # the cap belongs to the image output only
    assert argv.index("-") < frames_at < argv.index("/o/%06d.jpg") and argv[frames_at + 1] == "5"
    assert argv[argv.index("-threads") + 1] == "1" and argv.index("-threads") < argv.index("-i")
    plain = ffmpeg_argv.frames_argv("/v.mp4", "1", "/o/%06d.jpg", Output())
    assert "null" not in plain and "-threads" not in plain and "trim" not in " ".join(plain)
    assert "-filter_complex_threads" not in plain


def test_one_thread_means_one_thread_for_decoder_filters_and_encoders() -> None:
    """A single-threaded process of the plan: the filter graph and each output's encoder
    get one thread too (left to choose, each starts one per CPU, with its own buffers)."""
    argv = ffmpeg_argv.frames_argv("/v.mp4", "1", "/o/%06d.jpg", Output(), threads=1,
                              measure="/o/%06d.pgm")  # fmt: skip
    at = argv.index("-filter_complex_threads")
    assert argv[at + 1] == "1" and at < argv.index("-i")
    given = [i for i, arg in enumerate(argv) if arg == "-threads"]
    assert [argv[i + 1] for i in given] == ["1", "1", "1"]  # decoder, frames, grey pictures
    decoder, *encoders = given
    assert decoder < argv.index("-i")
    outputs = [argv.index("/o/%06d.jpg"), argv.index("/o/%06d.pgm")]
    assert all(argv.index("-map") < e for e in encoders)
    assert sorted(encoders) == encoders and encoders[0] < outputs[0] < encoders[1] < outputs[1]
    scan = ffmpeg_argv.scan_argv("/v.mp4", "1", threads=1)
    assert scan[scan.index("-filter_complex_threads") + 1] == "1"
    assert "-filter_complex_threads" not in ffmpeg_argv.scan_argv("/v.mp4", "1")
