"""How frames are written: ``Output`` (format, quality, size box, tone mapping) and
``output_from``, which reads it from a stored job's options.

Apart from ``models`` (which holds pydantic's ``JobSpec``) so that ``ffmpeg`` and
``probe`` load without pydantic: ``vfe extract`` starts ffprobe while pydantic loads. Apart
from ``options`` too, which ``vfe --help`` imports and which stays free of dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .options import ImageFormat


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
