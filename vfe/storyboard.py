"""Storyboards: a job's frames as sprite sheets, a WebVTT track and a JSON manifest, for a
video player's hover previews on its timeline.

Tiles are ``storyboard_width`` px wide and as high as the frames' aspect says (rounded to
an even number), laid out in time order, left to right and top to bottom, on JPEG sheets
of at most ``MAX_GRID`` x ``MAX_GRID`` tiles and ``MAX_SIDE`` px a side; the last sheet is
only as large as its tiles need. Cue *i* runs from frame *i*'s own time to frame *i+1*'s
(the last to the end of the window), so the preview under the pointer is the frame a
player shows there. Sheets are composed by FFmpeg (``sheets_argv``, run through
``ffmpeg.run``) from the frames' files, read back from storage when it is a bucket.

A made storyboard is recorded in the job's ``plan`` (``Storyboard.as_dict``): its layout,
each sheet's SHA-256 (the sheets are stored, and held by the job, as frames are) and the
window's end. The track and the manifest are derived from it and the job's frames when
asked for, so a reused job (which copies the plan, the frames and the holds) has the same
storyboard, and deleting or expiring a job removes its sheets with its frames.

Knows nothing of HTTP or the database, so ``vfe extract`` uses it as the workers do.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from . import ffmpeg
from .errors import ExtractionError
from .frames import FrameSink
from .models import Frame
from .storage import Storages, frame_key

MAX_SIDE = 4096  # px a sheet side may have: what every browser decodes without trouble
MAX_GRID = 10  # tiles a sheet row or column may have
SHEET_QSCALE = 3  # JPEG qscale of the sheets (2 best, 31 worst): near 40 dB of PSNR
MIN_DURATION = 0.001  # a cue's length when a frame sits at the window's end
FETCHES = 8  # frames read back from a bucket at once
SHEET_FILE = "storyboard-{}.jpg"  # a sheet's file name in a folder or a zip
VTT_FILE = "storyboard.vtt"
JSON_FILE = "storyboard.json"

SheetUrl = Callable[[int], str]  # the URL (or file name) of sheet n
LocalFile = Callable[[Frame, Path], Awaitable[Path]]  # a frame as a local file (may use dest)


@dataclass(frozen=True)
class Layout:
    """Where each tile goes: tile size, grid (columns x rows a sheet) and tile count."""

    tile_width: int
    tile_height: int
    columns: int
    rows: int
    tiles: int

    @property
    def per_sheet(self) -> int:
        return self.columns * self.rows

    @property
    def sheets(self) -> int:
        return math.ceil(self.tiles / self.per_sheet)

    def place(self, tile: int) -> tuple[int, int, int]:
        """The sheet of tile ``tile`` and the tile's top-left corner there."""
        sheet, at = divmod(tile, self.per_sheet)
        row, column = divmod(at, self.columns)
        return sheet, column * self.tile_width, row * self.tile_height

    def sheet_grid(self, sheet: int) -> tuple[int, int]:
        """Columns and rows sheet ``sheet`` has: the last holds only what is left."""
        count = min(self.per_sheet, self.tiles - sheet * self.per_sheet)
        return min(self.columns, count), math.ceil(count / self.columns)

    def sheet_size(self, sheet: int) -> tuple[int, int]:
        columns, rows = self.sheet_grid(sheet)
        return columns * self.tile_width, rows * self.tile_height


def layout(tiles: int, width: int, frame_width: int, frame_height: int) -> Layout:
    """The layout of ``tiles`` tiles ``width`` px wide for frames of the given size."""
    height = max(2, 2 * round(width * frame_height / frame_width / 2))
    if height > MAX_SIDE:  # a very tall picture: the tile is as high as a sheet may be
        width = max(2, round(width * MAX_SIDE / height))
        height = MAX_SIDE
    width = min(width, MAX_SIDE)
    columns = min(MAX_GRID, MAX_SIDE // width)
    rows = min(MAX_GRID, MAX_SIDE // height)
    return Layout(width, height, columns, rows, tiles)


@dataclass(frozen=True)
class Storyboard:
    """A made storyboard: its layout, each sheet's SHA-256 (as stored) and the end of the
    window its last cue runs to."""

    layout: Layout
    sheets: tuple[str, ...]
    end: float

    def as_dict(self) -> dict[str, Any]:
        """As recorded in the job's plan."""
        lay = self.layout
        return {"tile_width": lay.tile_width, "tile_height": lay.tile_height,
                "columns": lay.columns, "rows": lay.rows, "tiles": lay.tiles,
                "sheets": list(self.sheets), "end": self.end}  # fmt: skip

    @classmethod
    def from_plan(cls, plan: dict[str, Any] | None) -> Storyboard | None:
        """The storyboard a job's plan records, if it has one."""
        data = (plan or {}).get("storyboard")
        if not isinstance(data, dict):
            return None
        lay = Layout(int(data["tile_width"]), int(data["tile_height"]), int(data["columns"]),
                     int(data["rows"]), int(data["tiles"]))  # fmt: skip
        return cls(lay, tuple(str(s) for s in data["sheets"]), float(data["end"]))


def window_end(video_end: float | None, duration: float, asked: float | None) -> float:
    """Where the last cue ends: the window's end asked for, else the video's end (where
    its last frame ends, if known, else its duration); never past the video's end."""
    end = video_end or duration
    return min(end, asked) if asked is not None else end


def in_time_order(frames: Sequence[Frame]) -> list[Frame]:
    """The frames as tiles are laid out: by time, then index (as ``/frames`` lists them)."""
    return sorted(frames, key=lambda f: (f.timestamp, f.index))


def cue_times(starts: Sequence[float], end: float) -> list[tuple[float, float]]:
    """Each cue's (start, end): from its frame's time to the next frame's; the last to
    ``end`` (at least ``MIN_DURATION`` after its start)."""
    ends = [*starts[1:], max(end, starts[-1] + MIN_DURATION)] if starts else []
    return list(zip(starts, ends, strict=True))


def vtt_time(seconds: float) -> str:
    """``HH:MM:SS.mmm``, rounded to the millisecond."""
    ms = round(seconds * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    return f"{hours:02d}:{minutes:02d}:{ms // 1000:02d}.{ms % 1000:03d}"


class Tile(BaseModel):
    """One tile: the frame it shows, when it shows, and where it is on which sheet."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(description="The tile's place in time order, from 0.")
    frame: str = Field(description="The frame's filename, as /frames lists it.")
    start: float = Field(description="The cue's start: the frame's timestamp, s.")
    end: float = Field(description="The cue's end: the next frame's timestamp (the last "
                       "tile's: the end of the window), s.")  # fmt: skip
    sheet: int = Field(description="The sheet it is on, from 0.")
    url: str = Field(description="The sheet's URL (a file name in a folder or a zip).")
    x: int
    y: int
    w: int
    h: int


class Sheet(BaseModel):
    """One sprite sheet: its URL and size."""

    model_config = ConfigDict(extra="forbid")

    index: int
    url: str
    width: int
    height: int
    columns: int
    rows: int


class Manifest(BaseModel):
    """A storyboard as JSON: the tiles, with their times, sheet URLs and geometry."""

    model_config = ConfigDict(extra="forbid")

    tile_width: int
    tile_height: int
    columns: int = Field(description="Tiles a sheet row holds, at most.")
    rows: int = Field(description="Tile rows a sheet holds, at most.")
    sheet_count: int
    tile_count: int
    end: float = Field(description="The end of the window: the last cue's end, s.")
    vtt: str = Field(description="The WebVTT track's URL (a file name in a folder or a zip).")
    sheets: list[Sheet]
    tiles: list[Tile]


def manifest(board: Storyboard, frames: Sequence[Frame], sheet_url: SheetUrl,
             vtt_url: str) -> Manifest:  # fmt: skip
    """The manifest of ``board``, whose tiles are ``frames`` (in time order)."""
    lay = board.layout
    times = cue_times([f.timestamp for f in frames[: lay.tiles]], board.end)
    tiles = []
    for i, (frame, (start, end)) in enumerate(zip(frames, times, strict=False)):
        sheet, x, y = lay.place(i)
        tiles.append(Tile(index=i, frame=frame.filename, start=start, end=end, sheet=sheet,
                          url=sheet_url(sheet), x=x, y=y, w=lay.tile_width,
                          h=lay.tile_height))  # fmt: skip
    sheets = []
    for n in range(len(board.sheets)):
        (width, height), (columns, rows) = lay.sheet_size(n), lay.sheet_grid(n)
        sheets.append(Sheet(index=n, url=sheet_url(n), width=width, height=height,
                            columns=columns, rows=rows))  # fmt: skip
    return Manifest(tile_width=lay.tile_width, tile_height=lay.tile_height, columns=lay.columns,
                    rows=lay.rows, sheet_count=len(board.sheets), tile_count=len(tiles),
                    end=board.end, vtt=vtt_url, sheets=sheets, tiles=tiles)  # fmt: skip


def vtt(board: Storyboard, frames: Sequence[Frame], sheet_url: SheetUrl) -> str:
    """The WebVTT track: a cue a tile, ``<sheet URL>#xywh=x,y,w,h``. A cue that would last
    no time (two frames at one millisecond) is left out: players drop such cues."""
    lines = ["WEBVTT", ""]
    for tile in manifest(board, frames, sheet_url, "").tiles:
        start, end = vtt_time(tile.start), vtt_time(tile.end)
        if start == end:
            continue
        lines += [f"{start} --> {end}", f"{tile.url}#xywh={tile.x},{tile.y},{tile.w},{tile.h}",
                  ""]  # fmt: skip
    return "\n".join(lines)


def sheets_argv(
    pattern: str, first: int, lay: Layout, columns: int, rows: int, sheets: int, out: str
) -> list[str]:
    """argv that tiles the pictures ``pattern`` numbers (an image2 ``%06d`` pattern, from
    ``first`` on) into ``sheets`` JPEG sheets of ``columns`` x ``rows`` tiles, written to
    ``out`` (an image2 pattern numbered from 0). Inputs are the service's own frame files
    (local files only); ``tile`` fills the cells of a last, short sheet with black."""
    # Scaled as the picture is seen (RGB, area-averaged) and kept at full chroma
    # (4:4:4): sheets of 4:2:0 tiles smear every coloured edge, a tile being small.
    scale = f"format=rgb24,scale={lay.tile_width}:{lay.tile_height}:flags=area,format=yuvj444p"
    return [
        ffmpeg.binary("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-protocol_whitelist", "file", "-f", "image2", "-start_number", str(first),
        "-i", pattern, "-vf", f"{scale},tile={columns}x{rows}", "-frames:v", str(sheets),
        "-fps_mode", "passthrough", "-q:v", str(SHEET_QSCALE), "-f", "image2",
        "-start_number", "0", out,
    ]  # fmt: skip


async def compose(files: Sequence[Path], lay: Layout, work: Path) -> list[Path]:
    """Compose the sheets of ``files`` (one a tile, in tile order) in ``work``; return
    them in order. One FFmpeg process for the full sheets, one for a short last one."""
    ext = files[0].suffix
    pattern = work / f"tile-%06d{ext}"

    def _link() -> None:
        for i, path in enumerate(files):  # a numbered sequence, as image2 reads it
            os.symlink(path.resolve(), work / f"tile-{i:06d}{ext}")

    await asyncio.to_thread(_link)
    full, rest = divmod(lay.tiles, lay.per_sheet)
    runs = []
    if full:
        runs.append((0, lay.columns, lay.rows, full, "full-%d.jpg"))
    if rest:
        columns, rows = lay.sheet_grid(full)
        runs.append((full * lay.per_sheet, columns, rows, 1, "last-%d.jpg"))
    made: list[Path] = []
    for first, columns, rows, count, out in runs:
        argv = sheets_argv(str(pattern), first, lay, columns, rows, count, str(work / out))
        done = await ffmpeg.run(argv)
        if done.returncode != 0:
            raise ExtractionError(f"could not make the storyboard: {done.error_text()}")
        made += [work / (out % n) for n in range(count)]
    missing = [p.name for p in made if not p.is_file()]
    if missing:
        raise ExtractionError(f"could not make the storyboard: {missing[0]} was not written")
    return made


async def make(
    sink: FrameSink,
    job_id: str,
    run: str,
    frames: Sequence[Frame],
    local_file: LocalFile,
    width: int,
    end: float,
    name: Callable[[int], str] = SHEET_FILE.format,
) -> Storyboard:
    """Make the storyboard of ``frames`` (in time order, not empty): compose its sheets
    in the run's work folder from the frames' files (``local_file`` gives each as a local
    file, reading it from storage into the path it is given if need be) and keep them
    through ``sink`` as ``name(n)``. The work folder is removed afterwards, however this
    ends (a cancel stops FFmpeg first)."""
    first = frames[0]
    lay = layout(len(frames), width, first.width or width, first.height or width)
    work = await sink.prepare(job_id, run)
    try:
        sources = work / "sources"
        await asyncio.to_thread(sources.mkdir)
        slots = asyncio.Semaphore(FETCHES)

        async def fetch(i: int, frame: Frame) -> Path:
            async with slots:
                return await local_file(frame, sources / f"{i:06d}-{frame.filename}")

        # gather, not a task group: the first error is raised as itself
        fetches = [asyncio.ensure_future(fetch(i, f)) for i, f in enumerate(frames)]
        try:
            files = await asyncio.gather(*fetches)
        finally:
            for task in fetches:
                task.cancel()
            await asyncio.gather(*fetches, return_exceptions=True)
        tiles = work / "tiles"
        await asyncio.to_thread(tiles.mkdir)
        made = await compose(files, lay, tiles)
        kept = await sink.finalize(job_id, [(path, name(n)) for n, path in enumerate(made)])
    finally:
        await sink.discard_work(job_id, run)
    return Storyboard(lay, tuple(k.checksum for k in kept), end)


async def write_folder(
    sink: FrameSink, job_id: str, frames: Sequence[Frame], out: Path, width: int, end: float
) -> Storyboard:
    """``vfe extract --storyboard``: the storyboard of ``frames`` (written in ``out``
    already, by ``sink``) as sheets, ``storyboard.vtt`` and ``storyboard.json`` in ``out``,
    naming the sheets by their file names."""
    ordered = in_time_order(frames)

    async def in_folder(frame: Frame, _: Path) -> Path:
        return out / frame.filename

    board = await make(sink, job_id, "", ordered, in_folder, width, end)
    names = SHEET_FILE.format
    listed = manifest(board, ordered, names, VTT_FILE).model_dump_json(indent=1) + "\n"
    await asyncio.to_thread((out / VTT_FILE).write_text, vtt(board, ordered, names))
    await asyncio.to_thread((out / JSON_FILE).write_text, listed)
    return board


async def zip_entries(
    board: Storyboard, frames: Sequence[Frame], storages: Storages
) -> AsyncIterator[tuple[str, bytes]]:
    """``board`` as zip entries: its sheets (read from ``storages``), then the track and
    the manifest, which name the sheets by their file names in the zip. A sheet deleted
    meanwhile is left out, as a frame would be."""
    names = SHEET_FILE.format
    for n, checksum in enumerate(board.sheets):
        storage, name = storages.route(frame_key(checksum, "jpg"))
        try:
            yield names(n), b"".join([chunk async for chunk in storage.read(name)])
        except FileNotFoundError:
            continue
    yield VTT_FILE, vtt(board, frames, names).encode()
    listed = manifest(board, frames, names, VTT_FILE)
    yield JSON_FILE, listed.model_dump_json(indent=1).encode() + b"\n"
