"""Plain values of a job's options: the image formats and the scene-sampling defaults.

They are declared here, in a module that imports nothing outside the standard library,
so that ``vfe --help`` and the argument parsing of ``vfe extract`` can show them without
importing pydantic; ``models`` builds the validated ``JobSpec`` from the same values.
"""

from __future__ import annotations

from enum import StrEnum

DEFAULT_SCENE_THRESHOLD = 0.3  # FFmpeg's scene score: 0 same picture, 1 all new
DEFAULT_MIN_GAP = 1.0  # seconds between scene frames: a flash or a fade is one change


class ImageFormat(StrEnum):
    """The file format frames are written in."""

    JPG = "jpg"
    PNG = "png"
    WEBP = "webp"
