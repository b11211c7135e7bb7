"""Frames worth keeping (issue 16): the metrics, ``reject`` with its substitutes, dedupe,
and best mode.

The end-to-end tests run the real FFmpeg on clips made here with lavfi, each with its
defect at known times, and check vfe twice: against the timestamps the clip's design
dictates, and against a brute-force reference that decodes every frame of the clip with
FFmpeg alone to the grey picture the metrics read (``reference``), measures it, and applies
the job's rule by hand.
"""

from __future__ import annotations

import functools
import subprocess
import uuid
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import AppClient, Media, place, reference_frames, run_ffmpeg
from vfe import planner, probe
from vfe.extractor import Extractor, Outcome
from vfe.frames import FolderFrames
from vfe.models import Frame, JobSpec, Mode, Output
from vfe.planner import Plan, Sampling, Strategy
from vfe.probe import FrameIndex
from vfe.quality import (
    SIDE,
    Choice,
    Defect,
    Metrics,
    choice_from,
    distance,
    measure,
    read_pgm,
)
from vfe.runs import JobRuns
from vfe.selection import Candidate, Keeper, Window

ALL = frozenset(Defect)
EPS = 1e-6

# --- measure, read_pgm, distance ---------------------------------------------------------


def picture(levels: np.ndarray) -> bytes:
    """A ``SIDE`` x ``SIDE`` grey picture as ``measure`` reads it."""
    assert levels.shape == (SIDE, SIDE)
    return np.clip(levels, 0, 255).astype(np.uint8).tobytes()


def checkerboard(square: int = 16) -> np.ndarray:
    y, x = np.indices((SIDE, SIDE))
    return np.where(((x // square) + (y // square)) % 2 == 0, 255.0, 0.0)


def box_blur(levels: np.ndarray, radius: int) -> np.ndarray:
    """Each pixel the mean of the (2r+1)^2 square around it (edges repeated)."""
    padded = np.pad(levels, radius, mode="edge")
    out = np.zeros_like(levels)
    size = 2 * radius + 1
    for dy in range(size):
        for dx in range(size):
            out += padded[dy : dy + SIDE, dx : dx + SIDE]
    return out / size**2


def test_measure_all_black() -> None:
    m = measure(bytes(SIDE * SIDE))
    assert m == Metrics(brightness=0.0, contrast=0.0, sharpness=0.0, black=1.0,
                        phash="0000000000000000")  # fmt: skip


def test_measure_flat_grey() -> None:
    m = measure(bytes([128]) * (SIDE * SIDE))
    assert (m.brightness, m.contrast, m.sharpness, m.black) == (0.502, 0.0, 0.0, 0.0)
    assert len(m.phash) == 16
    assert measure(bytes([128]) * (SIDE * SIDE)) == m  # the same picture, the same metrics
    # level 19 is near-black (below 20 of 255), level 20 is not
    assert measure(bytes([19]) * (SIDE * SIDE)).black == 1.0
    assert measure(bytes([20]) * (SIDE * SIDE)).black == 0.0


def test_measure_half_black_half_white() -> None:
    levels = np.zeros((SIDE, SIDE))
    levels[:, SIDE // 2 :] = 255
    m = measure(picture(levels))
    assert (m.brightness, m.contrast, m.black) == (0.5, 0.5, 0.5)
    # one vertical edge: the Laplacian is +-255 on two of the 254 columns it covers, 0
    # elsewhere, so its mean is 0 and its variance 2 * 255^2 / 254
    assert m.sharpness == round(2 * 255**2 / 254, 2)


def blocks(seed: int) -> np.ndarray:
    """A picture of 8x8 random grey blocks (levels 40-200): structure at every low
    frequency, as a natural picture has, so pHash's bits are clear of its median."""
    rng = np.random.default_rng(seed)
    return np.kron(rng.uniform(40, 200, (8, 8)), np.ones((SIDE // 8, SIDE // 8)))


def test_checkerboard_is_sharp_and_blurring_lowers_sharpness() -> None:
    board = checkerboard()
    sharp = measure(picture(board))
    assert (sharp.brightness, sharp.contrast, sharp.black) == (0.5, 0.5, 0.5)
    assert sharp.sharpness > 5000
    soft = measure(picture(box_blur(board, 2)))
    softer = measure(picture(box_blur(board, 6)))
    assert sharp.sharpness > soft.sharpness > softer.sharpness > 0
    assert softer.sharpness < 100  # the default blur threshold: blurry
    assert Choice(reject=frozenset({Defect.BLURRY})).defects(softer) == [Defect.BLURRY]
    assert Choice(reject=frozenset({Defect.BLURRY})).passes(sharp)


def test_phash_follows_the_picture() -> None:
    """Near pictures differ in few bits: blurred, brighter; other pictures in many: another
    picture, the negative (every frequency but the mean changes sign)."""
    base = measure(picture(blocks(7)))
    blurred = measure(picture(box_blur(blocks(7), 4)))
    assert blurred.sharpness < base.sharpness
    assert distance(base.phash, blurred.phash) <= 2
    assert distance(base.phash, measure(picture(blocks(7) + 40)).phash) <= 2
    assert distance(base.phash, measure(picture(255 - blocks(7))).phash) >= 60
    assert distance(base.phash, measure(picture(blocks(8))).phash) > 20


def test_measure_reads_only_one_picture() -> None:
    """Bytes past the picture are ignored; too few are an error, not a wrong answer."""
    assert measure(bytes(SIDE * SIDE) + b"\xff" * 100).black == 1.0
    with pytest.raises(ValueError):
        measure(bytes(SIDE * SIDE - 1))


def pgm(path: Path, width: int, height: int, pixels: bytes, magic: bytes = b"P5") -> Path:
    path.write_bytes(magic + f"\n{width} {height}\n255\n".encode() + pixels)
    return path


def test_read_pgm_returns_the_pixels(tmp_path: Path) -> None:
    pixels = bytes(range(256)) * SIDE
    assert read_pgm(pgm(tmp_path / "a.pgm", SIDE, SIDE, pixels)) == pixels
    # whitespace in the header is any whitespace, as the format allows
    odd = tmp_path / "b.pgm"
    odd.write_bytes(b"P5 256\t256\r\n255\n" + pixels)
    assert read_pgm(odd) == pixels
    # a pixel that happens to be whitespace right after the header is a pixel
    spaced = b"\n" + pixels[1:]
    assert read_pgm(pgm(tmp_path / "c.pgm", SIDE, SIDE, spaced)) == spaced


def test_read_pgm_reads_what_ffmpeg_writes(tmp_path: Path) -> None:
    out = tmp_path / "grey.pgm"
    run_ffmpeg("-f", "lavfi", "-i", "color=c=white:s=320x240:d=0.04",
               "-vf", f"scale={SIDE}:{SIDE}:flags=area,format=gray", "-frames:v", "1",
               str(out))  # fmt: skip
    assert read_pgm(out) == b"\xff" * (SIDE * SIDE)


@pytest.mark.parametrize(
    ("width", "height", "magic"),
    [(320, 240, b"P5"), (SIDE, 128, b"P5"), (128, SIDE, b"P5"), (SIDE, SIDE, b"P6")],
)
def test_read_pgm_refuses_another_size_or_kind(
    tmp_path: Path, width: int, height: int, magic: bytes
) -> None:
    path = pgm(tmp_path / "x.pgm", width, height, bytes(width * height * 3), magic)
    with pytest.raises(ValueError, match=f"not a {SIDE}x{SIDE} grey PGM: x.pgm"):
        read_pgm(path)


def test_distance_counts_differing_bits() -> None:
    assert distance("0000000000000000", "0000000000000000") == 0
    assert distance("0000000000000000", "ffffffffffffffff") == 64
    assert distance("8000000000000000", "0000000000000001") == 2
    assert distance("c3fc433ad5033ac5", "c3fc433ad5033ac4") == 1
    assert distance("0f", "f0") == distance("f0", "0f") == 8


# --- Choice ------------------------------------------------------------------------------


def metrics(
    *, black: float = 0.0, sharpness: float = 500.0, contrast: float = 0.25,
    brightness: float = 0.5, phash: str = "0123456789abcdef",
) -> Metrics:  # fmt: skip
    return Metrics(brightness=brightness, contrast=contrast, sharpness=sharpness,
                   black=black, phash=phash)  # fmt: skip


BLACK = metrics(black=1.0, sharpness=0.0, contrast=0.0, brightness=0.0)


def test_choice_defects_and_passes() -> None:
    assert Choice().defects(BLACK) == [] and Choice().passes(BLACK)
    every = Choice(reject=ALL)
    assert every.defects(BLACK) == [Defect.BLACK, Defect.BLURRY, Defect.FLAT]
    assert not every.passes(BLACK)
    assert every.defects(metrics()) == [] and every.passes(metrics())
    assert Choice(reject=frozenset({Defect.FLAT})).defects(BLACK) == [Defect.FLAT]
    assert Choice(reject=frozenset({Defect.BLURRY})).defects(metrics(sharpness=99.99)) == [
        Defect.BLURRY
    ]


def test_choice_thresholds_are_inclusive_where_documented() -> None:
    """black: at least the threshold; blurry and flat: below it."""
    every = Choice(reject=ALL)
    assert every.defects(metrics(black=0.98)) == [Defect.BLACK]
    assert every.defects(metrics(black=0.9799)) == []
    assert every.defects(metrics(sharpness=100.0)) == []
    assert every.defects(metrics(contrast=0.04)) == []
    assert every.defects(metrics(contrast=0.0399)) == [Defect.FLAT]
    strict = Choice(reject=ALL, black_threshold=0.5, blur_threshold=1000, flat_threshold=0.3)
    assert strict.defects(metrics(black=0.5)) == [Defect.BLACK, Defect.BLURRY, Defect.FLAT]
    lax = Choice(reject=ALL, black_threshold=1.0, blur_threshold=0, flat_threshold=0)
    assert lax.defects(metrics(black=0.999, sharpness=0.0, contrast=0.0)) == []
    assert lax.defects(BLACK) == [Defect.BLACK]


def test_choice_repeats() -> None:
    last = metrics(phash="00000000000000ff")
    near = metrics(phash="000000000000003f")  # 2 bits apart
    assert not Choice().repeats(near, last)  # dedupe off
    dedupe = Choice(dedupe=True)
    assert not dedupe.repeats(near, None)  # nothing kept yet
    assert dedupe.repeats(near, last)
    assert dedupe.repeats(metrics(phash="0000000000000003"), last)  # 6 bits: still one
    assert not dedupe.repeats(metrics(phash="0000000000000001"), last)  # 7 bits
    assert Choice(dedupe=True, dedupe_distance=0).repeats(last, last)
    assert not Choice(dedupe=True, dedupe_distance=0).repeats(near, last)
    assert Choice(dedupe=True, dedupe_distance=64).repeats(
        metrics(phash="ffffffffffffffff"), metrics(phash="0000000000000000")
    )


def test_choice_selective() -> None:
    assert not Choice().selective
    assert Choice(reject=frozenset({Defect.BLACK})).selective
    assert Choice(dedupe=True).selective


def test_score() -> None:
    choice = Choice()
    assert choice.score(BLACK) == 0.0
    assert choice.score(metrics(contrast=0.0)) == 0.0
    assert choice.score(metrics(black=1.0)) == 0.0
    # (1 - black) * min(1, contrast / 0.25) * sharpness / (sharpness + blur_threshold)
    assert choice.score(metrics(contrast=0.5, sharpness=100.0)) == 0.5
    assert choice.score(metrics(contrast=0.125, sharpness=300.0, black=0.5)) == 0.1875
    assert choice.score(metrics(contrast=0.25, sharpness=1.0)) == round(1 / 101, 6)
    assert Choice(blur_threshold=300).score(metrics(sharpness=300.0)) == 0.5
    assert Choice(blur_threshold=0).score(metrics(sharpness=0.0)) == 0.0
    assert Choice(blur_threshold=0).score(metrics(sharpness=1.0)) == 1.0
    # sharper, then more contrasted, wins; a blurred frame scores low
    sharp = choice.score(metrics(sharpness=800.0))
    assert sharp > choice.score(metrics(sharpness=400.0)) > choice.score(metrics(sharpness=5))
    assert choice.score(metrics(sharpness=5.0)) < 0.05


def test_choice_from_job_options() -> None:
    assert choice_from({}) == Choice()
    assert choice_from(JobSpec(video_source="a.mp4").options()) == Choice()
    spec = JobSpec(video_source="a.mp4", reject="flat, black,flat", search=0.5, dedupe=True,
                   dedupe_distance=3, black_threshold=0.9, blur_threshold=50,
                   flat_threshold=0.1)  # fmt: skip
    assert spec.options()["reject"] == ["black", "flat"]
    assert choice_from(spec.options()) == Choice(
        reject=frozenset({Defect.BLACK, Defect.FLAT}), black_threshold=0.9,
        blur_threshold=50.0, flat_threshold=0.1, search=0.5, dedupe=True, dedupe_distance=3,
    )  # fmt: skip
    # a job stored before the option existed, or with it null
    assert choice_from({"reject": None, "dedupe": None, "search": None}) == Choice()


# --- Keeper: pure bookkeeping ------------------------------------------------------------


class Kept:
    """The ``keep`` callback: every batch handed on, as (index, timestamp) pairs."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, float]]] = []

    async def __call__(self, candidates: list[Candidate]) -> None:
        for c in candidates:
            assert c.file.exists(), "a file handed on must still be there"
        self.batches.append([(c.index, c.timestamp) for c in candidates])

    @property
    def all(self) -> list[tuple[int, float]]:
        return [pair for batch in self.batches for pair in batch]


HASHES = {  # pictures far apart, and near copies of them
    "a": "0000000000000000",
    "a'": "0000000000000007",  # 3 bits from a
    "b": "ffffffff00000000",
    "b'": "ffffffff00000001",
    "c": "00000000ffffffff",
}


def candidate(
    folder: Path, index: int, timestamp: float, picture: str = "a", *, black: bool = False
) -> Candidate:
    """A frame of target ``index`` (target time ``index``) with a real file."""
    file = folder / f"f{index}_{timestamp}.jpg"
    file.write_bytes(b"jpeg")
    m = replace(BLACK if black else metrics(), phash=HASHES[picture])
    return Candidate(index=index, timestamp=timestamp, target_time=float(index), file=file,
                     metrics=m)  # fmt: skip


async def test_keeper_without_choice_keeps_everything_as_offered(tmp_path: Path) -> None:
    kept = Kept()
    keeper = Keeper(Choice(), 2, kept)
    await keeper.offer(1, [candidate(tmp_path, 2, 2.0)])
    await keeper.offer(0, [candidate(tmp_path, 0, 0.0, black=True), candidate(tmp_path, 1, 1.0)])
    assert kept.batches == [[(2, 2.0)], [(0, 0.0), (1, 1.0)]]  # as they come, black or not
    assert (keeper.rejected, keeper.dropped, keeper.waiting) == (0, 0, {})


async def test_dedupe_decides_in_time_order_when_a_later_group_finishes_first(
    tmp_path: Path,
) -> None:
    kept = Kept()
    keeper = Keeper(Choice(dedupe=True), 3, kept)
    late = [candidate(tmp_path, 2, 2.0, "b'"), candidate(tmp_path, 3, 3.0, "c")]
    await keeper.offer(1, late)
    await keeper.group_done(1)
    await keeper.offer(2, [candidate(tmp_path, 4, 4.0, "c")])
    assert kept.batches == []  # group 0 is still running: nothing before 2.0 is known
    assert all(c.file.exists() for c in late)  # undecided frames wait in the work folder
    early = [candidate(tmp_path, 0, 0.0, "a"), candidate(tmp_path, 1, 1.0, "b")]
    await keeper.offer(0, early)
    assert kept.batches == [[(0, 0.0), (1, 1.0)]]  # group 0 may still send frames
    await keeper.group_done(0)
    # 2.0 (b') repeats 1.0 (b), which came later but lies before it; 3.0 is new
    assert kept.batches == [[(0, 0.0), (1, 1.0)], [(3, 3.0)]]
    assert not late[0].file.exists() and late[1].file.exists()
    # and group 1 being done, group 2's 4.0 (c) is decided too: it repeats 3.0 (c)
    assert (keeper.dropped, keeper.rejected) == (2, 0)
    await keeper.offer(2, [candidate(tmp_path, 5, 5.0, "a")])  # decided as it comes
    assert kept.batches[-1] == [(5, 5.0)]
    await keeper.group_done(2)
    assert kept.all == [(0, 0.0), (1, 1.0), (3, 3.0), (5, 5.0)]
    assert (keeper.dropped, keeper.rejected) == (2, 0)


async def test_a_waiting_target_holds_back_dedupe_until_it_is_settled(tmp_path: Path) -> None:
    kept = Kept()
    keeper = Keeper(Choice(reject=ALL, dedupe=True), 2, kept)
    refused = candidate(tmp_path, 1, 1.0, black=True)
    await keeper.offer(0, [candidate(tmp_path, 0, 0.0, "a"), refused,
                           candidate(tmp_path, 2, 2.0, "b")])  # fmt: skip
    await keeper.group_done(0)
    await keeper.offer(1, [candidate(tmp_path, 3, 3.0, "b'")])
    await keeper.group_done(1)
    assert kept.batches == [[(0, 0.0)]]  # 2.0 and 3.0 wait for target 1's substitute
    assert keeper.waiting == {1: refused}
    assert not refused.file.exists()  # a refused frame's file goes at once
    # the substitute (1.3, b) comes: 2.0 (b) now repeats it, and 3.0 (b') repeats 1.3
    substitute = replace(candidate(tmp_path, 9, 1.3, "b"), index=1, substituted=True)
    await keeper.settle(1, substitute)
    assert kept.batches == [[(0, 0.0)], [(1, 1.3)]]
    assert (keeper.dropped, keeper.rejected, keeper.waiting) == (2, 0, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f0_0.0.jpg", "f9_1.3.jpg"]


async def test_a_target_settled_with_nothing_is_counted_and_lets_the_rest_go(
    tmp_path: Path,
) -> None:
    kept = Kept()
    keeper = Keeper(Choice(reject=frozenset({Defect.BLACK}), dedupe=True), 1, kept)
    await keeper.offer(0, [candidate(tmp_path, 0, 0.0, "a"),
                           candidate(tmp_path, 1, 1.0, black=True),
                           candidate(tmp_path, 2, 2.0, black=True),
                           candidate(tmp_path, 3, 3.0, "a'"),
                           candidate(tmp_path, 4, 4.0, "b")])  # fmt: skip
    await keeper.group_done(0)
    assert kept.all == [(0, 0.0)]
    await keeper.settle(2, None)  # the later one first: 1 still holds the rest back
    assert kept.all == [(0, 0.0)]
    await keeper.settle(1, None)
    # 3.0 (a') repeats 0.0 (a), the last kept: the rejected targets in between keep nothing
    assert kept.all == [(0, 0.0), (4, 4.0)]
    assert (keeper.rejected, keeper.dropped, keeper.waiting) == (2, 1, {})


async def test_reject_without_dedupe_keeps_at_once_and_settles_alone(tmp_path: Path) -> None:
    kept = Kept()
    keeper = Keeper(Choice(reject=frozenset({Defect.BLACK})), 2, kept)
    await keeper.offer(1, [candidate(tmp_path, 2, 2.0, black=True),
                           candidate(tmp_path, 3, 3.0)])  # fmt: skip
    await keeper.offer(0, [candidate(tmp_path, 0, 0.0), candidate(tmp_path, 1, 1.0, black=True)])
    assert kept.batches == [[(3, 3.0)], [(0, 0.0)]]
    assert sorted(keeper.waiting) == [1, 2]
    await keeper.settle(2, replace(candidate(tmp_path, 2, 2.5), substituted=True))
    await keeper.settle(1, None)
    assert kept.batches == [[(3, 3.0)], [(0, 0.0)], [(2, 2.5)]]
    assert (keeper.rejected, keeper.dropped, keeper.waiting) == (1, 0, {})
    assert not (tmp_path / "f1_1.0.jpg").exists() and not (tmp_path / "f2_2.0.jpg").exists()


async def test_unmeasured_frames_are_kept_as_they_are(tmp_path: Path) -> None:
    """A benchmark's baseline measures nothing: nothing can be refused or compared."""
    kept = Kept()
    keeper = Keeper(Choice(reject=ALL, dedupe=True), 1, kept)
    first = replace(candidate(tmp_path, 0, 0.0), metrics=None)
    second = replace(candidate(tmp_path, 1, 1.0), metrics=None)
    await keeper.offer(0, [first, second])
    await keeper.group_done(0)
    assert kept.all == [(0, 0.0), (1, 1.0)]
