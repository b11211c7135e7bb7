"""Plain values of a job's options: the image formats, the scene-sampling and frame-choice defaults.

They are declared here, in a module that imports nothing outside the standard library,
so that ``vfe --help`` and the argument parsing of ``vfe extract`` can show them without
importing pydantic; ``models`` builds the validated ``JobSpec`` from the same values.
"""

from __future__ import annotations

from enum import StrEnum

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
