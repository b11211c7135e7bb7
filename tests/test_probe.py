"""ffprobe: facts about real generated clips, and the parser's edge branches."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import reference_frames
from vfe import ffmpeg, probe
from vfe.errors import ExtractionError
from vfe.probe import VideoInfo, parse


def remux(source: Path, target: Path, *args: str) -> Path:
    if not target.exists():
        subprocess.run(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
             "-i", str(source), "-c", "copy", *args, str(target)],
            check=True, timeout=60,
        )  # fmt: skip
    return target


def ffprobe_rotation(path: Path) -> str:
    return subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0",
         "-show_entries", "stream_side_data=rotation", "-of", "csv=p=0", str(path)],
        capture_output=True, check=True, text=True, timeout=30,
    ).stdout.strip()  # fmt: skip


async def test_25fps_h264(media: Any) -> None:
    info = await probe.probe(media.clip("probe-25.mp4", duration=2, audio=True))
    assert info == VideoInfo(
        duration=pytest.approx(2.0, abs=0.05),  # type: ignore[arg-type]
        fps=25.0,
        width=320,
        height=240,
        rotation=0,
        codec="h264",
        pix_fmt="yuv420p",
        start_time=0.0,
        time_base="1/12800",
        frames=50,  # as the MP4 header states it (2 s of 25 fps)
    )


async def test_ntsc_frame_rate(media: Any) -> None:
    info = await probe.probe(media.clip("probe-2997.mp4", duration=2, rate="30000/1001"))
    assert info.fps == pytest.approx(30000 / 1001, abs=1e-3)
    assert info.duration == pytest.approx(2.0, abs=0.05)


async def test_odd_size(media: Any) -> None:
    clip = media.clip(
        "probe-odd.mp4",
        duration=1,
        size="322x242",
        extra=("-vf", "format=yuv444p,crop=321:241:0:0", "-pix_fmt", "yuv444p"),
    )
    info = await probe.probe(clip)
    assert (info.width, info.height) == (321, 241)
    assert info.pix_fmt == "yuv444p"


@pytest.mark.parametrize("degrees", [90, 270, 180])
async def test_rotation_metadata(media: Any, degrees: int) -> None:
    clip = remux(
        media.clip("probe-wide.mp4", duration=1, size="320x240"),
        media.folder / f"probe-rot{degrees}.mp4",
        "-metadata:s:v:0",
        f"rotate={degrees}",
    )
    # ffprobe 5.1 reports the tag as display-matrix side data
    assert ffprobe_rotation(clip) == {90: "90", 270: "-90", 180: "-180"}[degrees]
    info = await probe.probe(clip)
    assert info.rotation in (90, 270) if degrees != 180 else info.rotation == 180
    if degrees == 180:
        assert (info.width, info.height) == (320, 240)
    else:
        assert (info.width, info.height) == (240, 320)  # as displayed


async def test_vp9_webm(media: Any) -> None:
    info = await probe.probe(media.clip("probe-vp9.webm", duration=1, codec="libvpx-vp9"))
    assert info.codec == "vp9"
    assert info.fps == 25.0
    assert info.duration == pytest.approx(1.0, abs=0.05)
    assert (info.width, info.height) == (320, 240)


async def test_audio_only_file(media: Any) -> None:
    with pytest.raises(ExtractionError, match="no video stream"):
        await probe.probe(media.audio_only())


async def test_text_file_named_mp4(media: Any) -> None:
    with pytest.raises(ExtractionError) as caught:
        await probe.probe(media.not_a_video())
    assert str(caught.value) == "the file is not a video FFmpeg can read"


async def test_truncated_mp4(media: Any) -> None:
    path = media.truncated()
    with pytest.raises(ExtractionError) as caught:
        await probe.probe(path)
    assert str(path.parent) not in str(caught.value)


async def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ExtractionError, match="not a video FFmpeg can read"):
        await probe.probe(tmp_path / "nothing.mp4")


async def test_a_name_like_a_protocol_is_read_as_a_file(media: Any, tmp_path: Path) -> None:
    weird = tmp_path / "http:" / "example.com" / "x.mp4"
    weird.parent.mkdir(parents=True)
    weird.write_bytes(media.clip("probe-25.mp4", duration=2, audio=True).read_bytes())
    info = await probe.probe(weird)
    assert info.codec == "h264"


async def test_ffprobe_printing_garbage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "ffprobe"
    fake.write_text("#!/bin/sh\necho '{not json'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ExtractionError, match="not a video FFmpeg can read"):
        await probe.probe(tmp_path / "any.mp4")


async def test_slow_probe_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "ffprobe"
    fake.write_text("#!/bin/sh\nexec /bin/sleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(probe, "PROBE_TIMEOUT", 0.3)  # fault injection: a hung ffprobe
    with pytest.raises(ExtractionError, match="took too long"):
        await probe.probe(tmp_path / "any.mp4")


def video(**fields: Any) -> dict[str, Any]:
    stream = {
        "codec_type": "video",
        "codec_name": "h264",
        "width": 640,
        "height": 480,
        "avg_frame_rate": "30/1",
        "r_frame_rate": "30/1",
        "duration": "10.0",
        "pix_fmt": "yuv420p",
        "start_time": "0.000000",
    }
    stream.update(fields)
    return stream


def doc(*streams: dict[str, Any], fmt: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"streams": list(streams), "format": fmt if fmt is not None else {"duration": "10.0"}}


def test_parse_plain() -> None:
    info = parse(doc(video()))
    assert info == VideoInfo(10.0, 30.0, 640, 480, 0, "h264", "yuv420p", 0.0)


@pytest.mark.parametrize(
    ("size", "sar", "rotate", "shown", "matrix"),
    [((1440, 1080), "4:3", None, (1920, 1080), "bt709"),  # HDV
     ((720, 576), "16:15", None, (768, 576), "smpte170m"),  # PAL DV: 576 lines is SD
     ((720, 480), "8:9", "90", (480, 640), "smpte170m"),  # NTSC DV, turned
     ((1024, 576), "4:3", None, (1365, 576), "smpte170m"),  # SD coded, wide shown
     ((640, 480), "0:1", None, (640, 480), "smpte170m"),  # unknown: square
     ((640, 480), "1000:1", None, (640, 480), "smpte170m"),  # absurd: square
     ((640, 480), "N/A", None, (640, 480), "smpte170m")],
)  # fmt: skip
def test_parse_makes_pixels_square_by_the_width_and_picks_the_matrix_by_the_coded_size(
    size: tuple[int, int],
    sar: str,
    rotate: str | None,
    shown: tuple[int, int],
    matrix: str,
) -> None:
    tags = {"tags": {"rotate": rotate}} if rotate else {}
    stream = video(width=size[0], height=size[1], sample_aspect_ratio=sar, **tags)
    info = parse(doc(stream))
    assert (info.width, info.height) == shown and info.assumed_matrix == matrix
    assert info.squared == (None if info.sar == 1 else shown)


def test_parse_skips_cover_art_and_audio() -> None:
    cover = video(codec_name="mjpeg", width=600, height=600, disposition={"attached_pic": 1})
    audio = {"codec_type": "audio", "codec_name": "aac", "duration": "10.0"}
    info = parse(doc(audio, cover, video(codec_name="hevc", disposition={"attached_pic": 0})))
    assert info.codec == "hevc" and (info.width, info.height) == (640, 480)
    with pytest.raises(ExtractionError, match="no video stream"):
        parse(doc(audio, cover))
    with pytest.raises(ExtractionError, match="no video stream"):
        parse({})
    with pytest.raises(ExtractionError, match="no video stream"):
        parse({"streams": None, "format": None})


@pytest.mark.parametrize(
    ("order", "interlaced"),
    [("tt", True), ("bb", True), ("tb", True), ("bt", True), ("progressive", False),
     ("unknown", False), (None, False)],
)  # fmt: skip
def test_parse_field_order(order: str | None, interlaced: bool) -> None:
    assert parse(doc(video(field_order=order))).interlaced is interlaced


def test_parse_duration_falls_back_to_the_container() -> None:
    assert parse(doc(video(duration=None), fmt={"duration": "12.5"})).duration == 12.5
    assert parse(doc(video(duration="N/A"), fmt={"duration": "7"})).duration == 7.0
    assert parse(doc(video(duration="0"), fmt={"duration": "3"})).duration == 3.0


@pytest.mark.parametrize(
    ("stream_duration", "fmt"),
    [
        (None, {}),
        ("N/A", {"duration": "N/A"}),
        ("nan", {"duration": "inf"}),
        ("-1", {"duration": "-2"}),
        (None, None),
    ],
)
def test_parse_without_a_duration(stream_duration: Any, fmt: Any) -> None:
    document = {"streams": [video(duration=stream_duration)], "format": fmt}
    with pytest.raises(ExtractionError, match="how long"):
        parse(document)


@pytest.mark.parametrize(
    ("width", "height"), [(0, 480), (640, 0), (None, None), ("0", "0"), (-2, 480)]
)
def test_parse_zero_size(width: Any, height: Any) -> None:
    with pytest.raises(ExtractionError, match="no picture size"):
        parse(doc(video(width=width, height=height)))


def matrix(rotation: Any) -> dict[str, Any]:
    return {"side_data_type": "Display Matrix", "rotation": rotation}


@pytest.mark.parametrize(
    ("fields", "rotation", "size"),
    [
        ({"side_data_list": [matrix(-90)]}, 270, (480, 640)),
        ({"side_data_list": [matrix(90)]}, 90, (480, 640)),
        ({"side_data_list": [matrix(180)]}, 180, (640, 480)),
        ({"side_data_list": [matrix("-89.9")]}, 270, (480, 640)),
        ({"side_data_list": [{"side_data_type": "CPB"}], "tags": {"rotate": "90"}}, 90, (480, 640)),
        ({"side_data_list": None, "tags": {"rotate": "-90"}}, 270, (480, 640)),
        ({"tags": {"rotate": "270"}}, 270, (480, 640)),
        ({"tags": {"rotate": "360"}}, 0, (640, 480)),
        ({"tags": {"rotate": "ninety"}}, 0, (640, 480)),
        ({"tags": {"rotate": ""}}, 0, (640, 480)),
        ({"tags": None}, 0, (640, 480)),
        # side data wins over the legacy tag
        ({"side_data_list": [{"rotation": 0}], "tags": {"rotate": "90"}}, 0, (640, 480)),
    ],
)  # fmt: skip
def test_parse_rotation(fields: dict[str, Any], rotation: int, size: tuple[int, int]) -> None:
    info = parse(doc(video(**fields)))
    assert info.rotation == rotation
    assert (info.width, info.height) == size


@pytest.mark.parametrize(
    ("avg", "real", "fps"),
    [
        ("30000/1001", "30000/1001", 30000 / 1001),
        ("0/0", "25/1", 25.0),  # avg unknown: fall back to r_frame_rate
        ("0/1", "24/1", 24.0),
        ("garbage", "12.5", 12.5),
        ("-5/1", "0/0", None),
        (None, None, None),
        ("1/0", "x/y", None),
    ],
)
def test_parse_rates(avg: Any, real: Any, fps: float | None) -> None:
    info = parse(doc(video(avg_frame_rate=avg, r_frame_rate=real)))
    assert info.fps == (pytest.approx(fps) if fps is not None else None)


def test_parse_defaults_for_missing_fields() -> None:
    stream = {"codec_type": "video", "width": "100", "height": "50"}
    info = parse(doc(stream, fmt={"duration": "1.5"}))
    assert info == VideoInfo(1.5, None, 100, 50, 0, "unknown", None, 0.0, own_duration=False)
    info = parse(doc(video(start_time="N/A")))
    assert info.start_time == 0.0
    assert parse(doc(video(start_time="1.4"))).start_time == 1.4


# --- the frame index ------------------------------------------------------------------


def decoded_frames(path: Path) -> tuple[list[float], list[float]]:
    """Every frame's time and the keyframes' times from a real decode, to the µs."""
    frames = reference_frames(path)
    return [round(float(t), 6) for t, _ in frames], [round(float(t), 6) for t, k in frames if k]


def rounded(values: tuple[float, ...]) -> list[float]:
    return [round(v, 6) for v in values]


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("index-g10.mp4", {"duration": 2, "gop": 10}),
        ("index-2997.mp4", {"duration": 2, "rate": "30000/1001", "gop": 12}),
        ("index-bf.mp4", {"duration": 2, "gop": 25, "extra": ("-preset", "veryfast", "-bf", "2")}),
        ("index-vp9.webm", {"duration": 2, "codec": "libvpx-vp9", "gop": 10}),
    ],
)
async def test_frame_index_equals_decoded_frames(
    media: Any, name: str, options: dict[str, Any]
) -> None:
    clip = media.clip(name, **options)
    _, index = await probe.inspect(clip)
    times, keys = decoded_frames(clip)
    assert rounded(index.times) == times
    assert rounded(index.keyframes) == keys
    assert len(keys) >= 2 and not index.variable_rate


async def test_mpegts_index_starts_at_zero(media: Any) -> None:
    source = media.clip(
        "index-bf.mp4", duration=2, gop=25, extra=("-preset", "veryfast", "-bf", "2")
    )
    clip = remux(source, media.folder / "index-bf.ts", "-f", "mpegts")
    info, index = await probe.inspect(clip)
    assert info.container_start > 1.0  # MPEG-TS muxers start the clock at 1.4 s
    assert index.times[0] == pytest.approx(0.0, abs=1e-6)
    times, keys = decoded_frames(clip)
    assert rounded(index.times) == times and rounded(index.keyframes) == keys
    _, mp4 = await probe.inspect(source)
    assert rounded(index.times) == rounded(mp4.times)  # the same frames, the same times


async def test_a_container_duration_counting_a_start_offset_is_the_videos_own(
    media: Any,
) -> None:
    """A Matroska file whose timestamps start at 5 s states 7 s for 2 s of video (its
    stream states none): the length is where the frames end."""
    source = media.clip("index-g10.mp4", duration=2, gop=10)
    clip = remux(source, media.folder / "offset.mkv", "-output_ts_offset", "5")
    info, index = await probe.inspect(clip)
    assert not info.own_duration and index.end is not None
    assert info.duration == index.end == pytest.approx(2.0, abs=0.05)


async def test_raw_streams_are_timed_by_their_frames_or_refused_saying_why(
    media: Any,
) -> None:
    source = media.clip("index-g10.mp4", duration=2, gop=10)
    # raw MPEG-4 Part 2 has times on its packets but states no duration: taken from them
    raw_m4v = remux(source, media.folder / "raw.m4v", "-c:v", "mpeg4", "-f", "m4v")
    info, index = await probe.inspect(raw_m4v)
    assert info.duration == index.end == pytest.approx(2.0, abs=0.05)
    assert len(index.times) == 50
    # raw H.264 has no time at all: refused, saying what to do
    raw_h264 = remux(source, media.folder / "raw.h264", "-f", "h264")
    with pytest.raises(ExtractionError, match=r"raw H\.264 stream.*-c copy FILE\.mp4"):
        await probe.inspect(raw_h264)


def test_frame_index_lookups() -> None:
    index = probe.FrameIndex((0.0, 0.04, 0.08, 0.12, 0.16), (0.0, 0.08))
    assert [index.first_at_or_after(t) for t in (-1, 0.0, 0.01, 0.04, 0.0399999, 0.16)] == [
        0, 0, 1, 1, 1, 4,
    ]  # fmt: skip
    assert index.first_at_or_after(0.1600001) == 4  # within EPSILON
    assert index.first_at_or_after(0.17) is None
    assert [index.keyframe_at_or_before(t) for t in (0.0, 0.07, 0.0799999, 0.08, 9)] == [
        0.0, 0.0, 0.08, 0.08, 0.08,
    ]  # fmt: skip
    late = probe.FrameIndex((0.5, 1.0), (1.0,))
    assert late.keyframe_at_or_before(0.7) == 0.5  # no keyframe before: the first frame
    assert probe.FrameIndex((), ()).keyframe_at_or_before(3.0) == 0.0
    assert probe.FrameIndex((), ()).first_at_or_after(0.0) is None


def test_variable_rate() -> None:
    assert not probe.FrameIndex((0.0, 0.04, 0.08, 0.12), (0.0,)).variable_rate
    assert not probe.FrameIndex((0.0, 0.04, 0.0801, 0.12), (0.0,)).variable_rate  # jitter
    assert probe.FrameIndex((0.0, 0.04, 0.08, 0.2), (0.0,)).variable_rate
    assert not probe.FrameIndex((0.0, 1.0), (0.0,)).variable_rate  # one gap: no variation


def _read(lines: list[str], max_frames: int | None = None) -> Any:
    """Feed ffprobe-style output lines to the index reader, as the worker thread does."""
    reader = probe._IndexReader(ffmpeg.LineReader(["true"]), max_frames)
    for line in lines:
        if not reader.line(line.encode() + b"\n"):
            break
    return reader


PACKETS = [
    "{",
    '    "packets": [',
    '        { "pts": 1000, "dts": 1000, "duration": 40, "flags": "K_" },',
    '        { "pts": 1080, "dts": 1040, "duration": 40, "flags": "__",',
    '            "side_data_list": [',
    '                { "side_data_type": "MPEGTS Stream ID", "id": 224 }',
    "            ]",
    "        },",
    '        { "pts": 1040, "duration": 40, "flags": "_D" },',
    '        { "dts": 1120, "flags": "__" },',
    '        { "flags": "__" }',
    "    ],",
    '    "streams": [ { "index": 0 } ],',
    '    "format": { "duration": "1.0" }',
    "}",
]


def test_index_lines_skip_discarded_and_unstamped_and_join_side_data() -> None:
    reader = _read(PACKETS)
    assert list(reader.stamps) == [1000, 1080, 1120] and list(reader.keys) == [1000]
    assert json.loads(b"{" + b"".join(reader.rest)) == {
        "streams": [{"index": 0}], "format": {"duration": "1.0"}}  # fmt: skip
    info = VideoInfo(1.0, 25.0, 8, 8, 0, "h264", None, 0.0, 1.0, time_base="1/1000")
    index = reader.index(info)
    assert list(index.times) == [0.0, 0.08, 0.12] and list(index.keyframes) == [0.0]
    assert index.end == pytest.approx(0.12)  # 1080 + 40 ms; the last packet had no duration
    no_base = reader.index(VideoInfo(1.0, 25.0, 8, 8, 0, "h264", None, 0.0))
    assert list(no_base.times) == [] and list(no_base.keyframes) == [] and no_base.end is None


def test_index_times_are_exactly_the_fraction_arithmetic() -> None:
    from fractions import Fraction

    reader = _read(["{", '"packets": ['] + [
        f'{{ "pts": {p}, "flags": "__" }},' for p in (0, 512, 1023, 10**12 + 7, 3)
    ])  # fmt: skip
    info = VideoInfo(1.0, 25.0, 8, 8, 0, "h264", None, 0.0, 1.466667, time_base="1/15360")
    shift = Fraction(str(info.container_start))
    expected = sorted(float(p * Fraction(1, 15360) - shift) for p in reader.stamps)
    assert list(reader.index(info).times) == expected


def test_the_reader_stops_past_max_frames() -> None:
    reader = _read(PACKETS, max_frames=1)
    assert reader.too_many and list(reader.stamps) == [1000]


async def test_inspect_cache_is_bounded_by_frames(
    media: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probe, "_CACHE", type(probe._CACHE)())
    monkeypatch.setattr(probe, "_CACHE_FRAMES", 120)  # room for two 50-frame indexes
    source = media.clip("index-g10.mp4", duration=2, gop=10)
    a, b, c = (tmp_path / f"{n}.mp4" for n in "abc")
    for copy in (a, b, c):
        copy.write_bytes(source.read_bytes())
    first = await probe.inspect(a)
    assert len(first[1].times) == 50
    assert await probe.inspect(a) is first  # cached
    await probe.inspect(b)
    assert await probe.inspect(a) is first  # both fit; a is now the most recent
    await probe.inspect(c)  # 150 frames: the least recently used (b) goes
    assert [k[0] for k in probe._CACHE] == [str(a), str(c)]
    monkeypatch.setattr(probe, "_CACHE_FRAMES", 10)  # smaller than one index
    await probe.inspect(b)
    assert [k[0] for k in probe._CACHE] == [str(b)]  # the newest stays, alone


# --- inspect: probe and index in one ffprobe run ------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.clip("probe-25.mp4", duration=2, audio=True),
        lambda m: m.clip("index-g10.mp4", duration=2, gop=10),
        lambda m: m.clip("inspect.webm", duration=2, codec="libvpx-vp9"),
    ],
)
async def test_inspect_equals_probe(media: Any, tmp_path: Path, make: Any) -> None:
    clip = tmp_path / "copy" / make(media).name
    clip.parent.mkdir()
    clip.write_bytes(make(media).read_bytes())
    info, index = await probe.inspect(clip)
    assert info == await probe.probe(clip)
    assert len(index.times) == round(info.duration * (info.fps or 0))


async def test_inspect_is_cached_per_file_version(media: Any, tmp_path: Path) -> None:
    clip = tmp_path / "cached.mp4"
    clip.write_bytes(media.clip("index-g10.mp4", duration=2, gop=10).read_bytes())
    first = await probe.inspect(clip)
    assert await probe.inspect(clip) is first
    clip.write_bytes(media.clip("probe-25.mp4", duration=2, audio=True).read_bytes())
    assert list((await probe.inspect(clip))[1].keyframes) == [0.0]


async def test_inspect_refuses_what_is_not_a_whole_video(
    media: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ExtractionError, match="not a video FFmpeg can read"):
        await probe.inspect(media.not_a_video())
    with pytest.raises(ExtractionError, match="no video stream"):
        await probe.inspect(media.audio_only())
    cut = tmp_path / "cut.mp4"
    whole = media.clip("inspect-faststart.mp4", duration=6, extra=("-movflags", "+faststart"))
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ExtractionError, match="ends early or is damaged"):
        await probe.inspect(cut)
    fake = tmp_path / "bin" / "ffprobe"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexec /bin/sleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    monkeypatch.setattr(probe, "PROBE_TIMEOUT", 0.03)  # fault injection: a hung ffprobe
    with pytest.raises(ExtractionError, match="took too long"):
        await probe.inspect(cut)
