"""How good a frame is: its metrics, the tests ``reject`` applies, the score ``best`` keeps.

Every metric is measured on the same picture: the frame as written (after tone mapping),
before any output resize, scaled by area averaging to a fixed 256x256 grey image with full
range levels (0 black, 255 white). FFmpeg makes that image in the decode that writes the
frame (``ffmpeg_argv.frames_argv``), so measuring costs no second pass over the video.

- ``brightness``: mean level, 0-1.
- ``contrast``: standard deviation of the levels, 0-1 (0 is one flat tone).
- ``sharpness``: variance of the 4-neighbour Laplacian of the 256x256 image, in levels
  squared; the fixed size makes it comparable across resolutions. Sharp video scores in
  the hundreds to thousands, a motion-blurred or defocused frame in the tens.
- ``black``: share of pixels darker than ``NEAR_BLACK`` (20 of 255), 0-1.
- ``phash``: 64-bit perceptual hash, hex: the 8x8 lowest frequencies of a 32x32 DCT, each
  bit set when above their median (the usual pHash; a flat picture of any level hashes
  to ``8000000000000000``). Near pictures differ in few bits.

numpy is imported on first use (``vfe extract`` starts without it); ``preload`` imports
it in a thread while FFmpeg starts. Its BLAS runs single-threaded (``OPENBLAS_NUM_THREADS``
defaults to 1 here): the products here are 32x32, and the thread pool OpenBLAS starts on
import spins for about 0.1 s of CPU, which a short ``vfe extract`` takes from FFmpeg.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .options import DEFAULT_BLACK_THRESHOLD as DEFAULT_BLACK_THRESHOLD
from .options import DEFAULT_BLUR_THRESHOLD as DEFAULT_BLUR_THRESHOLD
from .options import DEFAULT_DEDUPE_DISTANCE as DEFAULT_DEDUPE_DISTANCE
from .options import DEFAULT_FLAT_THRESHOLD as DEFAULT_FLAT_THRESHOLD
from .options import DEFAULT_SEARCH as DEFAULT_SEARCH

if TYPE_CHECKING:
    import numpy as np

SIDE = 256  # the grey image's width and height
HASH_SIDE = 32  # pHash's DCT size
NEAR_BLACK = 20  # levels below this count as black (FFmpeg's blackframe: 32 of 16-235)

# Read by OpenBLAS when numpy first loads it (vfe imports numpy in this module only).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


class Defect(StrEnum):
    """What ``reject`` can refuse."""

    BLACK = "black"
    BLURRY = "blurry"
    FLAT = "flat"


@dataclass(frozen=True)
class Metrics:
    """A frame's measures (see the module docstring)."""

    brightness: float
    contrast: float
    sharpness: float
    black: float
    phash: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metrics:
        return cls(
            brightness=float(data["brightness"]),
            contrast=float(data["contrast"]),
            sharpness=float(data["sharpness"]),
            black=float(data["black"]),
            phash=str(data["phash"]),
        )


@dataclass(frozen=True)
class Choice:
    """Which frames a job keeps: the defects it rejects (with their thresholds), how far
    it looks for a substitute, and whether it drops near-duplicates."""

    reject: frozenset[Defect] = frozenset()
    black_threshold: float = DEFAULT_BLACK_THRESHOLD
    blur_threshold: float = DEFAULT_BLUR_THRESHOLD
    flat_threshold: float = DEFAULT_FLAT_THRESHOLD
    search: float = DEFAULT_SEARCH
    dedupe: bool = False
    dedupe_distance: int = DEFAULT_DEDUPE_DISTANCE

    @property
    def selective(self) -> bool:
        """Whether some frames may not be kept as they come."""
        return bool(self.reject) or self.dedupe

    def defects(self, metrics: Metrics) -> list[Defect]:
        """The rejected defects ``metrics`` shows (empty: the frame passes)."""
        found = []
        if Defect.BLACK in self.reject and metrics.black >= self.black_threshold:
            found.append(Defect.BLACK)
        if Defect.BLURRY in self.reject and metrics.sharpness < self.blur_threshold:
            found.append(Defect.BLURRY)
        if Defect.FLAT in self.reject and metrics.contrast < self.flat_threshold:
            found.append(Defect.FLAT)
        return found

    def passes(self, metrics: Metrics) -> bool:
        return not self.defects(metrics)

    def repeats(self, metrics: Metrics, last: Metrics | None) -> bool:
        """Whether a frame with ``metrics`` is a near-duplicate of the last one kept."""
        return (
            self.dedupe
            and last is not None
            and distance(metrics.phash, last.phash) <= self.dedupe_distance
        )

    def score(self, metrics: Metrics) -> float:
        """``best`` mode's score, 0-1: ``(1 - black) * min(1, contrast / 0.25) *
        sharpness / (sharpness + blur_threshold)``. A black or flat frame scores near 0, a
        blurred one low; among good frames the sharper and more contrasted wins."""
        sharp = metrics.sharpness / (metrics.sharpness + max(self.blur_threshold, 1e-9))
        return round((1 - metrics.black) * min(1.0, metrics.contrast / 0.25) * sharp, 6)


def choice_from(options: dict[str, Any]) -> Choice:
    """The ``Choice`` of a stored job's options (as ``JobSpec`` validated them)."""
    names = ("black_threshold", "blur_threshold", "flat_threshold", "search", "dedupe_distance")
    given = {name: options[name] for name in names if options.get(name) is not None}
    return Choice(
        reject=frozenset(Defect(d) for d in options.get("reject") or ()),
        dedupe=bool(options.get("dedupe")),
        **given,
    )


def distance(a: str, b: str) -> int:
    """Bits in which two hex pHashes differ."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def preload() -> None:
    """Import numpy (about 0.1-0.2 s), e.g. in a thread while FFmpeg starts."""
    import numpy  # noqa: F401


@functools.cache
def _dct_rows() -> np.ndarray:
    """A 32-point DCT-II's matrix, its 8 lowest rows first."""
    import numpy as np

    n = HASH_SIDE
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    return np.cos(np.pi * (2 * x + 1) * k / (2 * n))


def measure(gray: bytes) -> Metrics:
    """The metrics of one ``SIDE`` x ``SIDE`` full-range grey image (raw bytes).

    About half a millisecond: one float32 copy of the picture, whose levels, squares and
    Laplacian are whole numbers below 2**24 (exact in float32), summed in float64."""
    import numpy as np

    image = np.frombuffer(gray, dtype=np.uint8, count=SIDE * SIDE).reshape(SIDE, SIDE)
    levels = image.astype(np.float32)
    n = levels.size
    mean = float(levels.sum(dtype=np.float64)) / n
    variance = max(0.0, float(np.square(levels).sum(dtype=np.float64)) / n - mean * mean)
    laplacian = levels[:-2, 1:-1] + levels[2:, 1:-1]
    laplacian += levels[1:-1, :-2]
    laplacian += levels[1:-1, 2:]
    laplacian -= 4 * levels[1:-1, 1:-1]
    count = laplacian.size
    lap_mean = float(laplacian.sum(dtype=np.float64)) / count
    np.square(laplacian, out=laplacian)
    sharpness = max(0.0, float(laplacian.sum(dtype=np.float64)) / count - lap_mean * lap_mean)
    black = int(np.count_nonzero(image < NEAR_BLACK)) / n
    # The products stay 32x32: a larger one would be split over BLAS's threads, which
    # spin against FFmpeg's processes for the cores (tens of ms a frame on 2 cores).
    block = SIDE // HASH_SIDE
    rows = levels.reshape(HASH_SIDE, block, SIDE).sum(axis=1)  # exact: whole numbers
    small = rows.reshape(HASH_SIDE, HASH_SIDE, block).sum(axis=2).astype(np.float64)
    dct = _dct_rows()[:8]
    low = (dct @ (small / (block * block)) @ dct.T).ravel()
    ordered = np.sort(low)
    median = (ordered[31] + ordered[32]) / 2
    # Coefficients within rounding noise of the median count as equal to it, so a flat
    # picture (every coefficient but the first is 0 up to float noise) always hashes
    # alike, whatever its level.
    noise = 1e-6 * (abs(float(low[0])) + 1.0)
    phash = int.from_bytes(np.packbits(low > median + noise).tobytes(), "big")
    return Metrics(
        brightness=round(mean / 255.0, 4),
        contrast=round(math.sqrt(variance) / 255.0, 4),
        sharpness=round(sharpness, 2),
        black=round(black, 4),
        phash=f"{phash:016x}",
    )


def read_pgm(path: Path) -> bytes:
    """The pixels of a binary PGM file FFmpeg wrote (``P5``, 8-bit)."""
    data = path.read_bytes()
    fields: list[bytes] = []
    at = 0
    while len(fields) < 4:  # magic, width, height, maxval, each followed by whitespace
        while data[at : at + 1].isspace():
            at += 1
        end = at
        while end < len(data) and not data[end : end + 1].isspace():
            end += 1
        fields.append(data[at:end])
        at = end
    if fields[0] != b"P5" or fields[1:3] != [str(SIDE).encode()] * 2:
        raise ValueError(f"not a {SIDE}x{SIDE} grey PGM: {path.name}")
    return data[at + 1 : at + 1 + SIDE * SIDE]
