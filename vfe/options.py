"""Plain values of a job's options: the image formats, the scene-sampling and frame-choice
defaults, and ``Output`` (how frames are written).

They are declared here, in a module that imports nothing outside the standard library,
so that ``vfe --help`` and the argument parsing of ``vfe extract`` can show them without
importing pydantic, and ``ffmpeg`` and ``probe`` load without it (``vfe extract`` starts
ffprobe while pydantic loads); ``models`` builds the validated ``JobSpec`` from the same
values.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

DEFAULT_SCENE_THRESHOLD = 0.3  # FFmpeg's scene score: 0 same picture, 1 all new
DEFAULT_MIN_GAP = 1.0  # seconds between scene frames: a flash or a fade is one change
# Frame choice (vfe/quality.py says what each measures):
DEFAULT_BLACK_THRESHOLD = 0.98  # black: at least this share of near-black pixels
DEFAULT_BLUR_THRESHOLD = 100.0  # blurry: sharpness below this
DEFAULT_FLAT_THRESHOLD = 0.04  # flat: contrast below this
DEFAULT_SEARCH = 1.0  # seconds after a rejected frame where a substitute is looked for
DEFAULT_DEDUPE_DISTANCE = 6  # bits of pHash within which a frame repeats the last kept
DEFAULT_STORYBOARD_WIDTH = 160  # px: a storyboard tile's width (a player's hover preview)


class ImageFormat(StrEnum):
    """The file format frames are written in."""

    JPG = "jpg"
    PNG = "png"
    WEBP = "webp"


@dataclass(frozen=True)
class Output:
    """How frames are written: format, quality (1-100), and a box to fit them inside."""

    format: ImageFormat = ImageFormat.JPG
    quality: int | None = None  # None: JPEG qscale 2 (as before), WebP 90, PNG lossless
    width: int | None = None
    height: int | None = None
    tonemap: bool = True  # an HDR source is tone-mapped to SDR BT.709


def output_from(options: dict[str, Any]) -> Output:
    """The ``Output`` of a stored job's options."""
    return Output(
        format=ImageFormat(options.get("format") or ImageFormat.JPG),
        quality=options.get("quality"),
        width=options.get("width"),
        height=options.get("height"),
        tonemap=options.get("tonemap", "auto") != "off",
    )
