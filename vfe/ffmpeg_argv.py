"""The argv of every FFmpeg run that decodes a video: the frames of a plan (``frames_argv``)
and the grey pictures of a quality scan (``scan_argv``), their filter graphs built with
ffmpeg-python (loaded on first use), and a graph too long for one argument moved into a
script (``spill_long_graph``). ``vfe.ffmpeg`` runs them.

Every input goes through ``ffmpeg.INPUT_GUARDS`` (local files, real video demuxers only)
and is read with ``-copyts``, so the select expressions and ``showinfo`` share the file's
own timeline.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from .ffmpeg import INPUT_GUARDS, binary
from .options import ImageFormat
from .output import Output

GLOBAL_ARGS = (
    "-nostdin",
    "-hide_banner",
    "-loglevel",
    "level+info",
    "-progress",
    "pipe:1",
    "-nostats",
    "-stats_period",
    "0.5",
    "-y",
)


# HDR to SDR as an SDR player shows it: to linear light (1.0 = 100 nits, SDR's white),
# BT.2020 to BT.709 primaries, then Möbius: linear up to half of SDR white, highlights
# rolled off smoothly (Hable darkens SDR-range content by a third), no desaturation.
TONEMAP = {"tonemap": "mobius", "param": 0.5, "desat": 0}
NOMINAL_PEAK = 100  # nits of 1.0 in linear light

# An interlaced frame's first field, its other lines filled in by edge-directed spatial
# interpolation: each kept frame alone (temporal deinterlacers such as yadif need the
# frames around it, which ``select`` has dropped), and only frames marked interlaced.
DEINTERLACE = {"mode": "frame", "parity": "auto", "deint": "interlaced"}


# The YUV range each lossy format is read with (JPEG: full, JFIF; WebP: limited); both
# are read with the BT.601 matrix.
YUV_RANGES = {ImageFormat.JPG: "pc", ImageFormat.WEBP: "tv"}


def tonemapped(stream: Any) -> Any:
    """``stream`` (tagged PQ or HLG) tone-mapped to SDR BT.709, limited range."""
    return (
        stream.filter("zscale", t="linear", npl=NOMINAL_PEAK)
        .filter("format", "gbrpf32le")
        .filter("zscale", p="bt709")
        .filter("tonemap", **TONEMAP)
        .filter("zscale", t="bt709", m="bt709", r="tv")
        .filter("format", "yuv420p")
    )


def _decoded(
    source: str,
    seek: float | None,
    threads: int | None,
    stop_at: float | None,
    keyframes_only: bool = False,
) -> Any:
    """The video of ``source`` as the filters see it: guarded input, the file's own times
    (``-copyts``), decoding from the keyframe at ``seek``, ended at ``stop_at``."""
    import ffmpeg as ffmpeg_python

    options: dict[str, Any] = {**INPUT_GUARDS, "copyts": None}
    if threads is not None:
        options["threads"] = threads
    if seek is not None:
        # A hair past the keyframe, so rounding to microseconds can never land before it.
        options.update(ss=f"{seek + 5e-7:.6f}", noaccurate_seek=None)
    if keyframes_only:
        options["skip_frame"] = "nokey"
    decoded = ffmpeg_python.input(f"file:{source}", **options).video
    if stop_at is not None:
        decoded = decoded.filter("trim", end=f"{stop_at:.6f}")
    return decoded


def _kept(
    decoded: Any,
    select_expr: str,
    matrix: str | None,
    tonemap: bool,
    squared: tuple[int, int] | None = None,
    interlaced: bool = False,
) -> Any:
    """The frames ``select_expr`` keeps, their times reported (``showinfo``), deinterlaced
    when the video is (``VideoInfo.interlaced``), an untagged source's ``matrix`` stated,
    tone-mapped when asked (an HDR source), scaled to ``squared`` (``VideoInfo.squared``:
    non-square pixels shown as they display, marked square so no viewer stretches them
    again): the pictures both the frames written and the quality scans start from."""
    stream = decoded.filter("select", select_expr).filter("showinfo")
    if interlaced:  # a player shows the first field at the frame's time, not both woven
        stream = stream.filter("estdif", **DEINTERLACE)
    if matrix is not None:  # untagged: say what the conversions after this should assume
        stream = stream.filter("setparams", colorspace=matrix)
    if tonemap:  # the kept frames only: a cost per frame kept
        stream = tonemapped(stream)
    if squared is not None:
        stream = stream.filter("scale", *squared).filter("setsar", 1)
    return stream


def frames_argv(
    source: str,
    select_expr: str,
    pattern: str,
    output: Output,
    *,
    seek: float | None = None,
    max_frames: int | None = None,
    keyframes_only: bool = False,
    threads: int | None = None,
    stop_at: float | None = None,
    count_decoded: bool = False,
    hdr: bool = False,
    measure: str | None = None,
    matrix: str | None = None,
    squared: tuple[int, int] | None = None,
    interlaced: bool = False,
) -> list[str]:
    """argv that decodes ``source`` and writes the frames ``select_expr`` keeps.

    Timestamps are kept as they are in the file (``-copyts``), seeking or not, so the
    expression and ``showinfo`` share one timeline. With ``seek``, decoding starts at the
    keyframe at or before it (``-noaccurate_seek``: nothing is dropped before ``select``
    sees it). Frames go to ``pattern`` (an image2 ``%06d`` pattern numbered from 0), each
    written under a temp name and renamed when complete; ``showinfo`` reports each kept
    frame's presentation time on stderr in output order. FFmpeg stops after
    ``max_frames``. Rotation metadata is applied (FFmpeg's default autorotate). ``threads``
    caps the threads of the decoder, the filters and the encoders alike (``threads_args``).
    ``stop_at`` (filter timeline) ends decoding there. ``count_decoded`` adds a first,
    null output fed every decoded frame, so ``-progress`` counts decoded frames (``frame=``)
    when the frames kept are few and not known ahead (scene mode). ``hdr`` (a PQ or HLG
    source) has the frames tone-mapped to SDR, unless ``output.tonemap`` is off.
    ``measure`` (an image2 pattern like ``pattern``'s, ``.pgm``) adds a second output of
    the same frames, numbered alike: each as ``quality.SIDE`` square full-range grey, for
    its metrics, taken before the output resize. ``matrix`` is the YUV matrix of an
    untagged source (``VideoInfo.assumed_matrix``); ``squared`` the size non-square pixels
    display at (``VideoInfo.squared``). JPEG and WebP frames are written in
    BT.601 YUV, which is how every decoder reads them; the source's matrix (BT.709 for HD)
    is converted to it, or their colours would shift.
    """
    import ffmpeg as ffmpeg_python  # the argv / filter-graph builder, loaded on first use

    decoded = _decoded(source, seek, threads, stop_at, keyframes_only)
    counter = None
    if count_decoded:
        branches = decoded.split()
        decoded = branches[0]
        counter = ffmpeg_python.output(branches[1], "-", f="null", **{"c:v": "wrapped_avframe"})
    stream = _kept(decoded, select_expr, matrix, hdr and output.tonemap, squared, interlaced)
    grey = None
    if measure is not None:
        branches = stream.split()
        stream = branches[0]
        grey = ffmpeg_python.output(
            greyscale(branches[1]), measure, f="image2", start_number=0, atomic_writing=1,
            fps_mode="passthrough",
            **({} if max_frames is None else {"frames:v": max_frames}),
            **({} if threads is None else {"threads": threads}),
        )  # fmt: skip
    if output.width or output.height:
        width = f"min(iw,{output.width})" if output.width else "-1"
        height = f"min(ih,{output.height})" if output.height else "-1"
        fit = "decrease" if output.width and output.height else "disable"
        stream = stream.filter("scale", width, height, force_original_aspect_ratio=fit)
    if output.format in YUV_RANGES:
        stream = stream.filter(
            "scale", out_color_matrix="bt601", out_range=YUV_RANGES[output.format]
        )
    encode: dict[str, Any] = {}
    if output.format is ImageFormat.JPG:
        encode["q:v"] = 2 if output.quality is None else jpeg_qscale(output.quality)
    elif output.format is ImageFormat.WEBP:
        encode.update({"c:v": "libwebp", "quality": output.quality or 90})
    if max_frames is not None:
        encode["frames:v"] = max_frames
    if threads is not None:
        encode["threads"] = threads
    out = ffmpeg_python.output(
        stream,
        pattern,
        f="image2",
        start_number=0,
        atomic_writing=1,
        fps_mode="passthrough",
        **encode,
    )
    if grey is not None:
        out = ffmpeg_python.merge_outputs(out, grey)
    if counter is not None:  # first: -progress reports the first output's frame count
        out = ffmpeg_python.merge_outputs(counter, out)
    return [binary("ffmpeg"), *GLOBAL_ARGS, *threads_args(threads), *ffmpeg_python.get_args(out)]


def threads_args(threads: int | None) -> tuple[str, ...]:
    """The global option that caps the filter graph's threads at ``threads`` (the decoder's
    and each encoder's are capped by their own ``-threads``). The planner runs one
    single-threaded process per CPU; a filter or encoder left to choose starts a thread
    per CPU, each with its own buffers: at 1080p the BT.601 conversion and the JPEG
    encoder held 29 MB more per process, and took 20% more CPU."""
    return () if threads is None else ("-filter_complex_threads", str(threads))


def greyscale(stream: Any) -> Any:
    """``stream`` as the picture the quality metrics read: ``quality.SIDE`` square, area
    averaged, full-range grey (``format=gray`` expands limited-range luma)."""
    from .quality import SIDE

    return stream.filter("scale", SIDE, SIDE, flags="area").filter("format", "gray")


SCAN_ARGS = ("-nostdin", "-hide_banner", "-loglevel", "level+info", "-nostats", "-y")


def scan_argv(
    source: str,
    select_expr: str,
    *,
    seek: float | None = None,
    stop_at: float | None = None,
    threads: int | None = None,
    hdr: bool = False,
    tonemap: bool = True,
    matrix: str | None = None,
    squared: tuple[int, int] | None = None,
    interlaced: bool = False,
) -> list[str]:
    """argv that decodes ``source`` and writes each frame ``select_expr`` keeps to stdout
    as raw grey (``greyscale``), with its time on stderr (``showinfo``): the pictures the
    quality metrics read, without encoding a frame. Seeking, ``-copyts`` and ``stop_at``
    as in ``frames_argv``; tone mapping, an untagged ``matrix``, ``squared`` and
    ``interlaced`` too, so the metrics match the frames written."""
    import ffmpeg as ffmpeg_python

    decoded = _decoded(source, seek, threads, stop_at)
    stream = _kept(decoded, select_expr, matrix, hdr and tonemap, squared, interlaced)
    out = ffmpeg_python.output(
        greyscale(stream), "pipe:1", f="rawvideo", pix_fmt="gray", fps_mode="passthrough"
    )
    return [binary("ffmpeg"), *SCAN_ARGS, *threads_args(threads), *ffmpeg_python.get_args(out)]


MAX_INLINE_GRAPH = 32 * 1024  # Linux refuses a single argument over 128 KiB


async def spill_long_graph(argv: list[str], script: Path) -> list[str]:
    """``argv`` with a filter graph too long for one argument moved into ``script``
    (``-filter_complex_script``), e.g. the select expression of thousands of timestamps."""
    if "-filter_complex" not in argv:
        return argv
    at = argv.index("-filter_complex")
    graph = argv[at + 1]
    if len(graph) <= MAX_INLINE_GRAPH:
        return argv
    await asyncio.to_thread(script.write_text, graph)
    return [*argv[:at], "-filter_complex_script", str(script), *argv[at + 2 :]]


def jpeg_qscale(quality: int) -> int:
    """Quality 1-100 as FFmpeg's JPEG qscale (2 best, 31 worst)."""
    return round(2 + (100 - min(100, max(1, quality))) * 29 / 99)
