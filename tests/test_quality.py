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
import os
import subprocess
import sys
import uuid
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import AppClient, Media, place, reference_frames, run_ffmpeg
from vfe import planner, probe
from vfe.extractor import Extractor, Outcome
from vfe.frames import FolderFrames
from vfe.models import Frame, JobSpec, Mode
from vfe.output import Output
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
from vfe.selection import Candidate, Keeper, Window, scans, stretch_windows

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
    assert measure(bytes([128]) * (SIDE * SIDE)) == m  # the same picture, the same metrics
    # a flat picture hashes alike at any level (not by float noise), one bit from black
    assert (
        {measure(bytes([v]) * (SIDE * SIDE)).phash for v in (10, 60, 128, 255)}
        == {m.phash}
        == {"8000000000000000"}
    )
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


def test_numpy_starts_no_blas_threads() -> None:
    """numpy loaded through vfe starts no OpenBLAS thread pool (its threads spin for about
    0.1 s of CPU on import), unless the environment asks for one."""
    script = (
        "import os, vfe.quality as q; q.preload(); q.measure(bytes(q.SIDE * q.SIDE)); "
        "print(len(os.listdir('/proc/self/task')))"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "1"
    if len(os.sched_getaffinity(0)) < 2:
        return  # OpenBLAS starts no pool on one core: the check below could not fail
    pool = subprocess.run(
        [sys.executable, "-c", script], env={**env, "OPENBLAS_NUM_THREADS": "2"},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert int(pool.stdout) > 1  # the variable is read, and a pool would be seen


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


def names(folder: Path) -> list[str]:
    """The files in ``folder``, sorted."""
    return sorted(p.name for p in folder.iterdir() if p.is_file())


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
    assert names(tmp_path) == ["f0_0.0.jpg", "f9_1.3.jpg"]


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


# --- the best-mode bookkeeping, with a fake FFmpeg ------------------------------------


class FakeRuns:
    """The two calls of ``JobRuns`` best mode makes, on made-up frames: ``scan`` gives
    the metrics of each window's frames; ``extract_times`` writes the frames asked for as
    two processes would when the later one finishes first."""

    def __init__(self, folder: Path, frames: dict[float, Metrics]) -> None:
        self.folder = folder
        self.frames = frames
        self.asked: list[float] = []

    async def scan(
        self, windows: Sequence[Window], index: FrameIndex, parallel: int, on_measured: Any,
        *_: Any,
    ) -> None:  # fmt: skip
        for w in windows:
            for t, m in sorted(self.frames.items()):
                if w.first - EPS <= t <= w.last + EPS:
                    on_measured(w, t, m)

    async def extract_times(
        self, times: list[float], index: FrameIndex, offer: Any, processes: int | None = None
    ) -> None:
        self.asked = times
        made = []
        for t in times:
            file = self.folder / f"{t}.jpg"
            file.write_bytes(b"jpeg")
            made.append(Candidate(index=0, timestamp=t, target_time=t, file=file,
                                  metrics=self.frames[t]))  # fmt: skip
        half = len(made) // 2
        await offer(1, made[half:])
        await offer(0, made[:half])


async def test_best_mode_dedupes_in_time_order(tmp_path: Path) -> None:
    """Each stretch's best frame is compared with the best of the stretch before it, not
    with whichever frame the extraction happened to finish first."""
    picture = {name: metrics(phash=h) for name, h in HASHES.items()}
    frames = {  # four stretches of a second; the second frame of each scores higher
        0.0: replace(picture["a"], sharpness=50.0), 0.5: picture["a"],
        1.0: replace(picture["b"], sharpness=50.0), 1.5: picture["b"],
        2.0: replace(picture["a"], sharpness=50.0), 2.5: picture["b'"],  # repeats 1.5
        3.0: replace(picture["c"], sharpness=50.0), 3.5: picture["a'"],  # not 2.5 again
    }  # fmt: skip
    plan = Plan(targets=(0.0, 1.0, 2.0, 3.0), strategy=Strategy.BEST, groups=(), total=4,
                decoded_frames=8, estimated_seconds=0.0, duration=4.0, regular=(0.0, 1.0),
                parallel=2)  # fmt: skip
    index = FrameIndex(times=sorted(frames), keyframes=[0.0])
    kept = Kept()
    choice = Choice(dedupe=True)
    keeper = Keeper(choice, len(plan.groups), kept)
    runs: Any = FakeRuns(tmp_path, frames)
    await Extractor(FolderFrames(tmp_path))._best(runs, plan, index, choice, keeper, None)
    assert runs.asked == [0.5, 1.5, 2.5, 3.5]
    assert sorted(kept.all) == [(0, 0.5), (1, 1.5), (3, 3.5)]
    assert (keeper.dropped, keeper.rejected) == (1, 0)
    assert names(tmp_path) == ["0.5.jpg", "1.5.jpg", "3.5.jpg"]


# --- clips ---------------------------------------------------------------------------------


def source(duration: float) -> str:
    return f"testsrc2=size=320x240:rate=25:duration={duration}"


def between(a: float, b: float) -> str:
    return f"enable='between(t,{a},{b})'"


FILL = "drawbox=x=0:y=0:w=iw:h=ih:t=fill:color="


class Clips:
    """This file's clips, 25 fps and 320x240, made once per session. Frames lie at
    multiples of 0.04 s; each defect (``between(t,a,b)``, both ends included) starts on a
    whole second or between frames and ends between frames, so no frame's time is
    rounded onto a boundary."""

    def __init__(self, media: Media) -> None:
        self.folder = media.folder

    def _make(self, name: str, graph: str, *extra: str) -> Path:
        path = self.folder / name
        if not path.exists():
            run_ffmpeg("-f", "lavfi", "-i", graph, "-c:v", "libx264", "-preset", "ultrafast",
                       "-pix_fmt", "yuv420p", *extra, str(path))  # fmt: skip
        return path

    def black(self) -> Path:
        """6 s: a fade in from black over 0-0.5 s, black from 1.0 to 2.28 (hard cuts), a
        fade out from 3.5 s, black from 4.5 s to the end. A keyframe every second."""
        return self._make(
            "q-black.mp4",
            f"{source(6)},fade=t=in:st=0:d=0.5,{FILL}black:{between(1, 2.3)},"
            "fade=t=out:st=3.5:d=1",
            "-g", "25",
        )  # fmt: skip

    def blurred(self) -> Path:
        """4 s: blurred (Gaussian, sigma 8) from 1.0 to 2.28."""
        return self._make("q-blurred.mp4", f"{source(4)},gblur=sigma=8:{between(1, 2.3)}")

    def flat(self) -> Path:
        """3 s: one flat mid grey from 0.52 to 1.68."""
        return self._make("q-flat.mp4", f"{source(3)},{FILL}gray:{between(0.5, 1.7)}")

    def frozen(self) -> Path:
        """4 s: the picture at 1.0 s held until 3.0 s (51 frames), then moving on."""
        return self._make(
            "q-frozen.mp4", f"{source(2)},loop=loop=50:size=1:start=25,setpts=N/25/TB"
        )

    STILLS = ("smptebars", "testsrc2", "mandelbrot", "testsrc")  # hashes 30+ bits apart

    def _still(self, n: int, source: str, frames: int) -> str:
        return (f"{source}=size=320x240:rate=25,trim=end_frame=1,"
                f"loop=loop={frames - 1}:size=1,setpts=N/25/TB[s{n}]")  # fmt: skip

    def slides(self) -> Path:
        """8 s: a slide deck, four still pictures of 2 s each with hard cuts, and noise
        that changes every frame (as an encoder's); a keyframe every second."""
        graph = ";".join(self._still(n, s, 50) for n, s in enumerate(self.STILLS))
        graph += ";[s0][s1][s2][s3]concat=n=4,noise=alls=6:allf=t"
        return self._make("q-slides.mp4", graph, "-g", "25")

    def gap(self) -> Path:
        """7 s: slide A (smptebars) to 4.96, black from 2.0 to 2.48, then slide B to the
        end; noise as in ``slides``, a keyframe every second."""
        graph = self._still(0, "smptebars", 125) + ";" + self._still(1, "testsrc2", 50)
        graph += f";[s0][s1]concat=n=2,noise=alls=6:allf=t,{FILL}black:{between(2, 2.5)}"
        return self._make("q-gap.mp4", graph, "-g", "25")

    def dissolves(self) -> Path:
        """7.6 s: the same slides, each dissolving into the next over 0.4 s: still from
        0 to 1.8, 2.2 to 3.6, 4.0 to 5.4 and 5.8 to the end."""
        graph = ";".join(self._still(n, s, 55) for n, s in enumerate(self.STILLS))
        graph += (";[s0][s1]xfade=transition=fade:duration=0.4:offset=1.8[x1]"
                  ";[x1][s2]xfade=transition=fade:duration=0.4:offset=3.6[x2]"
                  ";[x2][s3]xfade=transition=fade:duration=0.4:offset=5.4"
                  ",noise=alls=6:allf=t")  # fmt: skip
        return self._make("q-dissolves.mp4", graph)

    def mixed(self) -> Path:
        """5 s, one stretch a second: black to 0.6, then good; flat grey from 1.0 to
        1.68, then good; blurred from 2.0 to 2.76, then good; all good; black to 4.28,
        flat to 4.6, blurred to the end. A keyframe every second."""
        return self._make(
            "q-mixed.mp4",
            f"{source(5)},gblur=sigma=8:enable='between(t,2,2.78)+between(t,4.62,5)',"
            f"{FILL}black:enable='between(t,0,0.62)+between(t,4,4.3)',"
            f"{FILL}gray:enable='between(t,1,1.7)+between(t,4.3,4.62)'",
            "-g", "25",
        )  # fmt: skip


@pytest.fixture(scope="session")
def clips(media: Media) -> Clips:
    return Clips(media)


@functools.cache
def reference(clip: Path) -> tuple[tuple[float, Metrics], ...]:
    """Every frame of ``clip``: its time (a real decode's) and the metrics of the grey
    picture FFmpeg alone makes of it, in presentation order."""
    times = [float(t) for t, _ in reference_frames(clip)]
    raw = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", f"file:{clip}",
         "-vf", f"scale={SIDE}:{SIDE}:flags=area,format=gray", "-fps_mode", "passthrough",
         "-f", "rawvideo", "-pix_fmt", "gray", "pipe:1"],
        capture_output=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    size = SIDE * SIDE
    assert len(raw) == size * len(times)
    return tuple((t, measure(raw[k * size : (k + 1) * size])) for k, t in enumerate(times))


def metrics_at(clip: Path, timestamp: float) -> Metrics:
    ref = reference(clip)
    n = bisect_left([t for t, _ in ref], timestamp - EPS)
    assert abs(ref[n][0] - timestamp) < EPS, timestamp
    return ref[n][1]


@dataclass(frozen=True)
class Want:
    """A frame as (index, timestamp, target_time, substituted)."""

    index: int
    timestamp: float
    target_time: float
    substituted: bool = False


def expected(clip: Path, targets: Sequence[float], choice: Choice) -> tuple[list[Want], int, int]:
    """Brute force, from the reference: each target's frame is the first at or after it
    (a frame once, under the latest target it answers); a refused one is replaced by the
    first frame that passes after it, up to ``search`` after the target and before the
    next target, or the target is rejected; then near-duplicates of the last frame kept,
    in time order, are dropped. Returns (frames, rejected, dropped)."""
    ref = reference(clip)
    times = [t for t, _ in ref]
    answers: list[tuple[Want, Metrics]] = []
    rejected = 0
    for k, target in enumerate(targets):
        n = bisect_left(times, target - EPS)
        following = targets[k + 1] if k + 1 < len(targets) else float("inf")
        if n == len(times) or times[n] >= following - EPS:
            continue  # no frame, or the next target's
        if choice.passes(ref[n][1]):
            answers.append((Want(k, times[n], target), ref[n][1]))
            continue
        reach = [(t, m) for t, m in ref[n + 1 :]
                 if t <= target + choice.search + EPS and t < following - EPS]  # fmt: skip
        good = next(((t, m) for t, m in reach if choice.passes(m)), None)
        if good is None:
            rejected += 1
        else:
            answers.append((Want(k, good[0], target, True), good[1]))
    kept: list[Want] = []
    dropped = 0
    last: Metrics | None = None
    for want, m in answers:
        if choice.repeats(m, last):
            dropped += 1
        else:
            kept.append(want)
            last = m
    return kept, rejected, dropped


@dataclass
class Result:
    clip: Path
    plan: Plan
    outcome: Outcome
    frames: list[Frame]  # in time order

    @property
    def got(self) -> list[Want]:
        return [Want(f.index, f.timestamp, f.target_time, f.substituted) for f in self.frames]

    @property
    def times(self) -> list[float]:
        return [f.timestamp for f in self.frames]


async def extract(
    tmp_path: Path, clip: Path, sampling: Sampling, choice: Choice, *, huge: bool = False
) -> Result:
    """Run the extractor as ``vfe extract`` does (frames into a folder); with ``huge``
    the plan is priced as 8K video, so seeking pays and the work is cut into processes."""
    info, index = await probe.inspect(clip)
    priced = replace(info, width=7680, height=4320) if huge else info
    plan = planner.plan(sampling, priced, index, cpus=2, memory_mib=1e9 if huge else None)
    out = tmp_path / f"out-{uuid.uuid4().hex[:8]}"
    out.mkdir()
    store = FolderFrames(out)
    frames: list[Frame] = []

    async def on_frames(batch: list[Frame]) -> None:
        for frame in batch:  # whole when reported
            assert (out / frame.filename).stat().st_size == frame.size_bytes > 0
        frames.extend(batch)

    outcome = await Extractor(store).run(
        str(uuid.uuid4()), clip, info, plan, on_frames, Output(), index=index, choice=choice
    )
    frames.sort(key=lambda f: f.timestamp)
    assert outcome.written == len(frames)
    # the frames kept and nothing else: refused, dropped and scanned frames leave no file
    assert names(out) == sorted(f.filename for f in frames)
    assert list(store.scratch.iterdir()) == []
    for frame in frames:
        assert frame.metrics is not None
        # the metrics of the frame written are those of that frame, as FFmpeg alone sees it
        assert frame.metrics == metrics_at(clip, frame.timestamp), frame.timestamp
        assert frame.target_time <= frame.timestamp + EPS
    return Result(clip, plan, outcome, frames)


def interval(step: float) -> Sampling:
    return Sampling(mode=Mode.INTERVAL, interval=step)


def at(*times: float) -> Sampling:
    return Sampling(mode=Mode.TIMESTAMPS, timestamps=times)


def check(result: Result, choice: Choice, want: list[Want], rejected: int, dropped: int = 0):
    """vfe's frames are ``want`` (the clip's design) and the brute force's."""
    assert result.got == want
    assert (result.outcome.rejected, result.outcome.dropped) == (rejected, dropped)
    assert expected(result.clip, result.plan.targets, choice) == (want, rejected, dropped)
    for frame in result.frames:
        assert frame.metrics is not None and choice.passes(frame.metrics)
        assert (frame.stretch, frame.score) == (None, None)


# --- reject, end to end ------------------------------------------------------------------

BLACK_ONLY = frozenset({Defect.BLACK})


async def test_unchosen_frames_show_the_defects(clips: Clips, tmp_path: Path) -> None:
    """Without a choice every target gets its own frame, black ones too, each measured."""
    result = await extract(tmp_path, clips.black(), interval(1), Choice())
    assert result.got == [Want(k, float(k), float(k)) for k in range(6)]
    black = [f.metrics.black >= 0.98 for f in result.frames if f.metrics]
    assert black == [True, True, True, False, False, True]
    assert (result.outcome.rejected, result.outcome.dropped) == (0, 0)


async def test_reject_black_takes_the_first_frame_past_the_black(
    clips: Clips, tmp_path: Path
) -> None:
    clip = clips.black()
    choice = Choice(reject=BLACK_ONLY)
    result = await extract(tmp_path, clip, interval(1), choice)
    # 0.0 opens a fade in: the first frame light enough comes a few frames on
    fade_in = result.frames[0].timestamp
    assert 0.0 < fade_in < 0.5
    check(result, choice, [
        Want(0, fade_in, 0.0, True),
        # 1.0: black up to 1.96, and 2.0 is the next target's: nothing in reach
        Want(2, 2.32, 2.0, True),  # the first frame after the cut at 2.3
        Want(3, 3.0, 3.0),
        Want(4, 4.0, 4.0),  # half faded out: dark, not black
        # 5.0: black to the end
    ], rejected=2)  # fmt: skip
    assert metrics_at(clip, round(fade_in - 0.04, 2)).black >= 0.98  # the frame before


@pytest.mark.parametrize("search", [0.28, 0.32])
async def test_reject_black_looks_only_search_seconds_ahead(
    clips: Clips, tmp_path: Path, search: float
) -> None:
    choice = Choice(reject=BLACK_ONLY, search=search)
    result = await extract(tmp_path, clips.black(), interval(1), choice)
    # 2.32 is 0.32 s after target 2.0: in reach with search 0.32 (bounds included) only
    reached = search >= 0.32
    substitute = [Want(2, 2.32, 2.0, True)] if reached else []
    fade_in = Want(0, result.times[0], 0.0, True)
    check(result, choice, [fade_in, *substitute, Want(3, 3.0, 3.0), Want(4, 4.0, 4.0)],
          rejected=2 if reached else 3)  # fmt: skip


async def test_the_next_target_cuts_the_search_short(clips: Clips, tmp_path: Path) -> None:
    choice = Choice(reject=BLACK_ONLY, search=1.0)
    # alone, 1.5 reaches past the cut at 2.3 ...
    alone = await extract(tmp_path, clips.black(), at(1.5), choice)
    check(alone, choice, [Want(0, 2.32, 1.5, True)], rejected=0)
    # ... but not past a target at 2.2, whose own frame is black: 2.32 answers 2.2
    both = await extract(tmp_path, clips.black(), at(1.5, 2.2), choice)
    check(both, choice, [Want(1, 2.32, 2.2, True)], rejected=1)


async def test_a_substitute_never_lies_past_the_window(clips: Clips, tmp_path: Path) -> None:
    """The last target's search stops at the window's end, as its targets do."""
    choice = Choice(reject=BLACK_ONLY, search=2.0)
    open_end = await extract(tmp_path, clips.black(), at(1.0), choice)
    assert open_end.got == [Want(0, 2.32, 1.0, True)]
    window = Sampling(mode=Mode.TIMESTAMPS, timestamps=(1.0,), end=2.2)
    closed = await extract(tmp_path, clips.black(), window, choice)
    assert closed.got == [] and closed.outcome.rejected == 1


async def test_best_mode_without_a_stretch_writes_nothing(clips: Clips, tmp_path: Path) -> None:
    result = await extract(tmp_path, clips.black(), Sampling(mode=Mode.BEST, count=5, start=99),
                           Choice())  # fmt: skip
    assert result.plan.targets == () and result.frames == []
    assert result.outcome.written == result.outcome.rejected == 0


def test_best_mode_scans_adjacent_stretches_as_one_range_a_process() -> None:
    """Thousands of stretches must not make thousands of terms: FFmpeg's argument (and
    every frame's test) would grow with them."""
    index = FrameIndex(times=[k / 25 for k in range(25 * 3600)],
                       keyframes=[k * 7.3 for k in range(493)])  # fmt: skip
    windows, _ = stretch_windows(0.0, 3600.0, 10_000, index)
    runs = scans(windows, index, 2)
    assert len(runs) == 2
    assert [len(r.ranges) for r in runs] == [1, 1]
    assert sum(len(r.windows) for r in runs) == 10_000
    assert all(r.select_expr(0.0).count("between") == 1 for r in runs)
    assert runs[0].window_of(100.0) == windows[277]  # 0.36 s stretches: 100 s is the 278th
    assert runs[1].window_of(3599.96) == windows[-1]


def test_best_mode_keeps_to_the_memory_budget() -> None:
    info = probe.VideoInfo(60.0, 25.0, 3840, 2160, 0, "h264", "yuv420p", 0.0)
    index = FrameIndex(times=[k / 25 for k in range(1500)], keyframes=[0.0])
    best = planner.plan(Sampling(mode=Mode.BEST, count=5), info, index, cpus=2)
    count = planner.plan(Sampling(mode=Mode.COUNT, count=5), info, index, cpus=2)
    assert best.parallel == 1 == count.parallel  # 4K: one decoder in the 200 MiB budget


async def test_reject_black_across_processes(clips: Clips, tmp_path: Path) -> None:
    """A plan cut into seeking processes finds the same substitutes (scans seek too)."""
    choice = Choice(reject=BLACK_ONLY)
    one = await extract(tmp_path, clips.black(), interval(0.5), choice)
    many = await extract(tmp_path, clips.black(), interval(0.5), choice, huge=True)
    assert len(one.plan.groups) == 1 and len(many.plan.groups) > 1, many.plan.describe()
    assert many.got == one.got
    assert many.outcome == one.outcome
    want, rejected, _ = expected(one.clip, one.plan.targets, choice)
    check(one, choice, want, rejected)
    # 1.0, 1.5 (black up to the next target), 4.5, 5.0 and 5.5 (black to the end) keep
    # nothing; 2.0 reaches 2.32 just before 2.5, the next target
    assert one.got[1:] == [Want(1, 0.52, 0.5), Want(4, 2.32, 2.0, True), Want(5, 2.52, 2.5),
                           Want(6, 3.0, 3.0), Want(7, 3.52, 3.5), Want(8, 4.0, 4.0)]  # fmt: skip
    assert rejected == 5


async def test_reject_blurry(clips: Clips, tmp_path: Path) -> None:
    choice = Choice(reject=frozenset({Defect.BLURRY}), search=0.5)
    result = await extract(tmp_path, clips.blurred(), at(0.5, 1.1, 2.0, 2.9), choice)
    check(result, choice, [
        Want(0, 0.52, 0.5),
        # 1.1: blurred up to its reach, 1.6
        Want(2, 2.32, 2.0, True),
        Want(3, 2.92, 2.9),
    ], rejected=1)  # fmt: skip
    blurred, sharp = metrics_at(result.clip, 2.28), metrics_at(result.clip, 2.32)
    assert blurred.sharpness < 20 < 500 < sharp.sharpness
    # blurred, not flat: the picture keeps most of its contrast
    assert blurred.contrast > 0.8 * sharp.contrast and blurred.black < 0.01


async def test_reject_flat(clips: Clips, tmp_path: Path) -> None:
    choice = Choice(reject=frozenset({Defect.FLAT}))
    result = await extract(tmp_path, clips.flat(), interval(0.5), choice)
    check(result, choice, [
        Want(0, 0.0, 0.0),
        # 0.5 and 1.0: grey until the next target
        Want(3, 1.72, 1.5, True),
        Want(4, 2.0, 2.0),
        Want(5, 2.52, 2.5),  # 2.5 falls between frames: the next one answers
    ], rejected=2)  # fmt: skip
    grey = metrics_at(result.clip, 1.0)
    assert (grey.contrast, grey.black, grey.brightness) == (0.0, 0.0, pytest.approx(0.5, abs=0.01))


async def test_reject_in_scene_mode_searches_up_to_the_next_cut(
    clips: Clips, tmp_path: Path
) -> None:
    """Scene mode's targets are the cuts found: a refused one is searched for up to the
    next cut found, and keeps its number and time."""
    sampling = Sampling(mode=Mode.SCENE)
    plain = await extract(tmp_path, clips.black(), sampling, Choice())
    assert plain.times == [0.0, 1.0, 2.32]  # the start, the cut to black, the cut back
    choice = Choice(reject=BLACK_ONLY, search=2.0)
    result = await extract(tmp_path, clips.black(), sampling, choice)
    fade_in = result.times[0]
    assert 0.0 < fade_in < 0.5 and metrics_at(result.clip, fade_in).black < 0.98
    # 1.0 would reach 2.32 (search 2 s), but that is the next cut's frame
    assert result.got == [Want(0, fade_in, 0.0, True), Want(2, 2.32, 2.32)]
    assert (result.outcome.rejected, result.outcome.dropped) == (1, 0)


# --- dedupe, end to end ------------------------------------------------------------------


async def test_dedupe_drops_a_frozen_picture(clips: Clips, tmp_path: Path) -> None:
    choice = Choice(dedupe=True)
    result = await extract(tmp_path, clips.frozen(), interval(0.5), choice)
    # 1.5, 2.0, 2.5 and 3.0 repeat the picture held since 1.0
    check(result, choice, [Want(0, 0.0, 0.0), Want(1, 0.52, 0.5), Want(2, 1.0, 1.0),
                           Want(7, 3.52, 3.5)], rejected=0, dropped=4)  # fmt: skip
    # the held frames are not byte-identical pictures, just near ones
    held = [m for t, m in reference(result.clip) if 1.0 - EPS <= t <= 3.0 + EPS]
    assert len(held) == 51
    assert max(distance(a.phash, b.phash) for a in held for b in held) <= 6


@pytest.mark.parametrize("huge", [False, True], ids=["one-process", "seeking-processes"])
async def test_dedupe_keeps_one_frame_per_slide(clips: Clips, tmp_path: Path, huge: bool) -> None:
    choice = Choice(dedupe=True)
    result = await extract(tmp_path, clips.slides(), interval(0.5), choice, huge=huge)
    if huge:  # decided in time order though the processes finish in any order
        assert len(result.plan.groups) > 1 and result.plan.parallel == 2
    check(result, choice, [Want(0, 0.0, 0.0), Want(4, 2.0, 2.0), Want(8, 4.0, 4.0),
                           Want(12, 6.0, 6.0)], rejected=0, dropped=12)  # fmt: skip
    # the noise is there: the pictures of one slide differ, just not in their hash
    slide = [m for t, m in reference(result.clip) if 2.0 - EPS <= t < 4.0 - EPS]
    assert len({m.sharpness for m in slide}) > 40
    assert max(distance(slide[0].phash, m.phash) for m in slide) <= 2


async def test_dedupe_with_dissolves_keeps_each_slide_once(clips: Clips, tmp_path: Path) -> None:
    choice = Choice(dedupe=True)
    result = await extract(tmp_path, clips.dissolves(), interval(0.5), choice)
    # one frame a slide: 0.0, 2.52, 4.0, 6.0; and a frame mid-dissolve when a target lands
    # there (2.0 and 5.52: 8 and 10 bits from the slide before, 24 and 26 from the next)
    check(result, choice, [
        Want(0, 0.0, 0.0), Want(4, 2.0, 2.0), Want(5, 2.52, 2.5), Want(8, 4.0, 4.0),
        Want(11, 5.52, 5.5), Want(12, 6.0, 6.0),
    ], rejected=0, dropped=10)  # fmt: skip
    stills = [(0.0, 1.8), (2.2, 3.6), (4.0, 5.4), (5.8, 7.6)]
    dissolves = [(1.8, 2.2), (3.6, 4.0), (5.4, 5.8)]
    on = [[t for t in result.times if a - EPS <= t < b - EPS] for a, b in stills]
    assert [len(times) for times in on] == [1, 1, 1, 1]
    during = [[t for t in result.times if a < t < b] for a, b in dissolves]
    assert all(len(times) <= 1 for times in during)
    assert sum(map(len, on + during)) == len(result.frames)


async def test_reject_and_dedupe_together(clips: Clips, tmp_path: Path) -> None:
    """A substitute is compared with the frame kept before it; the frames after a refused
    one wait for its substitute, whichever process they come from."""
    choice = Choice(reject=BLACK_ONLY, dedupe=True)
    result = await extract(tmp_path, clips.gap(), interval(1), choice, huge=True)
    assert len(result.plan.groups) > 1
    # 1.0 repeats slide A (0.0); 2.0 is black and its substitute, 2.52, is slide A again:
    # dropped as well; so are 3.0 and 4.0; 5.0 is slide B, 6.0 repeats it
    check(result, choice, [Want(0, 0.0, 0.0), Want(5, 5.0, 5.0)], rejected=0, dropped=5)


# --- best mode, end to end ---------------------------------------------------------------

BAD = {0: (0.0, 0.6), 1: (1.0, 1.68), 2: (2.0, 2.76)}  # the mixed clip's defective frames


def best_expected(result: Result, choice: Choice) -> tuple[list[tuple[int, float]], int]:
    """Brute force: each stretch's highest score among its frames that pass (the earliest
    of equal scores), as (stretch, timestamp); and the stretches whose frames all fail."""
    assert result.plan.regular is not None
    start, step = result.plan.regular
    count = len(result.plan.targets)
    chosen, rejected = [], 0
    for k in range(count):
        hi = start + (k + 1) * step if k + 1 < count else start + count * step
        frames = [(t, m) for t, m in reference(result.clip)
                  if start + k * step - EPS <= t < hi - EPS]  # fmt: skip
        fit = [(choice.score(m), -t) for t, m in frames if choice.passes(m)]
        if fit:
            chosen.append((k, -max(fit)[1]))
        else:
            rejected += bool(frames)
    return chosen, rejected


def check_best(result: Result, choice: Choice) -> None:
    chosen, rejected = best_expected(result, choice)
    assert [(f.stretch, f.timestamp) for f in result.frames] == chosen
    assert (result.outcome.rejected, result.outcome.dropped) == (rejected, 0)
    for frame in result.frames:
        assert frame.metrics is not None and frame.stretch is not None
        assert frame.index == frame.stretch
        assert frame.target_time == result.plan.targets[frame.stretch]
        assert not frame.substituted
        # the score chosen by (from the scan) is the score of the frame written
        assert frame.score == choice.score(frame.metrics) > 0


async def test_best_mode_keeps_each_stretchs_best_frame(clips: Clips, tmp_path: Path) -> None:
    clip = clips.mixed()
    every = Choice(reject=ALL)
    picky = await extract(tmp_path, clip, Sampling(mode=Mode.BEST, count=5), every)
    assert picky.plan.strategy is Strategy.BEST and picky.plan.targets == (0, 1, 2, 3, 4)
    check_best(picky, every)
    # stretch 4 is black, flat or blurred throughout: with reject it has no frame
    assert [f.stretch for f in picky.frames] == [0, 1, 2, 3]
    assert picky.outcome.rejected == 1
    for frame in picky.frames[:3]:  # past each stretch's defect
        assert frame.timestamp > BAD[frame.index][1]
        assert frame.metrics is not None and every.passes(frame.metrics)

    plain = await extract(tmp_path, clip, Sampling(mode=Mode.BEST, count=5), Choice())
    check_best(plain, Choice())
    # without reject the same frames win: a defect scores low; stretch 4's best is a
    # blurred frame (black and flat ones score 0)
    assert plain.times[:4] == picky.times
    last = plain.frames[4]
    assert last.stretch == 4 and last.timestamp >= 4.64 and last.metrics is not None
    assert last.metrics.sharpness < 100 and 0 < (last.score or 0) < 0.1
    assert plain.outcome.rejected == 0


async def test_best_mode_count_1_is_a_poster_frame(clips: Clips, tmp_path: Path) -> None:
    choice = Choice()
    result = await extract(tmp_path, clips.mixed(), Sampling(mode=Mode.BEST, count=1), choice)
    check_best(result, choice)
    [poster] = result.frames
    assert (poster.index, poster.stretch, poster.target_time) == (0, 0, 0.0)
    assert poster.score == max(choice.score(m) for _, m in reference(result.clip))
    assert not any(a - EPS <= poster.timestamp <= b + EPS for a, b in BAD.values())
    assert poster.timestamp < 4.0


# --- the grey pictures: one measure whichever process decodes ------------------------------


async def test_every_frame_is_measured_alike_by_the_main_pass_and_a_scan(
    clips: Clips, tmp_path: Path
) -> None:
    clip = clips.mixed()
    result = await extract(tmp_path, clip, interval(0.2), Choice())
    assert len(result.frames) == 25
    assert all(f.metrics is not None for f in result.frames)  # (and equal to the reference)
    info, index = await probe.inspect(clip)
    runs = JobRuns(clip, info, Output(), tmp_path)
    windows = [Window(0.0, 2.4, 0), Window(2.44, 4.96, 1)]
    scanned: list[list[tuple[float, Metrics]]] = [[], []]

    def on_measured(window: Window, timestamp: float, metrics: Metrics) -> None:
        scanned[window.owner].append((timestamp, metrics))

    await runs.scan(windows, index, 2, on_measured)  # two processes, the second one seeking
    assert [len(frames) for frames in scanned] == [61, 64]  # each window whole
    assert all(frames == sorted(frames) for frames in scanned)  # in time order
    measured = dict(scanned[0] + scanned[1])
    assert list(measured.items()) == list(reference(clip))
    for frame in result.frames:
        assert measured[frame.timestamp] == frame.metrics
    kinds = {(m.black >= 0.98, m.contrast < 0.04, m.sharpness < 100) for m in measured.values()}
    assert kinds == {(True, True, True), (False, True, True), (False, False, True),
                     (False, False, False)}  # black, flat, blurred and good frames  # fmt: skip


# --- the API -------------------------------------------------------------------------------


async def test_api_job_with_reject(client: AppClient, clips: Clips, videos: Path) -> None:
    name = place(clips.black(), videos)
    job_id = await client.submit(name, 1, reject=["black"])
    job = await client.wait(job_id)
    assert job["status"] == "completed", job
    assert job["options"]["reject"] == ["black"]
    assert job["plan"]["rejected_targets"] == 2
    assert job["plan"]["dropped_duplicates"] == 0
    assert job["total_frames"] == job["processed_frames"] == 4
    frames = (await client.http.get(f"/frames/{job_id}")).json()["frames"]
    fade_in = frames[0]["timestamp"]
    assert [(f["index"], f["timestamp"], f["target_time"], f["substituted"]) for f in frames] == [
        (0, fade_in, 0.0, True), (2, 2.32, 2.0, True), (3, 3.0, 3.0, False),
        (4, 4.0, 4.0, False),
    ]  # fmt: skip
    for f in frames:
        m = metrics_at(clips.black(), f["timestamp"])
        assert {k: f[k] for k in ("brightness", "contrast", "sharpness", "black", "phash")} == (
            m.as_dict()
        )
        assert f["black"] < 0.98
        assert (f["stretch"], f["score"]) == (None, None)


async def test_api_best_job(client: AppClient, clips: Clips, videos: Path) -> None:
    name = place(clips.mixed(), videos)
    job_id = await client.submit(name, mode="best", count=5, reject="black,flat,blurry")
    job = await client.wait(job_id)
    assert job["status"] == "completed", job
    assert job["mode"] == "best"
    assert job["plan"]["strategy"] == "best"
    assert job["plan"]["rejected_targets"] == 1  # stretch 4
    frames = (await client.http.get(f"/frames/{job_id}")).json()["frames"]
    assert [(f["index"], f["stretch"], f["target_time"]) for f in frames] == [
        (k, k, float(k)) for k in range(4)
    ]
    for f in frames:
        assert f["score"] == Choice().score(metrics_at(clips.mixed(), f["timestamp"]))
        assert f["substituted"] is False


@pytest.mark.parametrize(
    ("fields", "loc", "words"),
    [
        ({"dedupe_distance": 65}, ["body", "dedupe_distance"], "64"),
        ({"dedupe_distance": -1}, ["body", "dedupe_distance"], "0"),
        ({"reject": ["purple"]}, ["body", "reject", 0], "black"),
        ({"reject": "black,purple"}, ["body", "reject", 1], "blurry"),
        ({"search": 0}, ["body", "search"], "0"),
        ({"black_threshold": 1.5}, ["body", "black_threshold"], "1"),
        ({"dedupe": "maybe"}, ["body", "dedupe"], "bool"),
        ({"mode": "best", "count": 0}, ["body", "count"], "1"),
    ],
)
async def test_bad_quality_fields_are_422(
    client: AppClient, fields: dict[str, Any], loc: list[Any], words: str
) -> None:
    res = await client.http.post("/video-job", json={"video_source": "a.mp4", **fields})
    assert res.status_code == 422, res.text
    [error] = res.json()["detail"]
    assert error["loc"] == loc
    assert words in error["msg"]


async def test_a_best_job_whose_window_holds_no_frame_names_start(
    client: AppClient, clips: Clips, videos: Path
) -> None:
    """No stretch of the window has a frame: the window is what to change."""
    name = place(clips.black(), videos)
    res = await client.http.post(
        "/video-job", json={"video_source": name, "mode": "best", "count": 3, "end": 0.01,
                            "start": 0.005},
    )  # fmt: skip
    assert res.status_code == 422, res.text
    [error] = res.json()["detail"]
    assert error["loc"] == ["body", "start"]
    assert "no frame of the video" in error["msg"]


async def test_an_upload_may_carry_every_field(client: AppClient, clips: Clips) -> None:
    """A multipart upload with the file and every job field is one part a field."""
    fields = {
        "mode": "interval", "interval": "1", "start": "0", "end": "3", "max_frames": "3",
        "format": "png", "quality": "80", "width": "160", "height": "120", "tonemap": "auto",
        "reject": "black", "black_threshold": "0.9", "blur_threshold": "50",
        "flat_threshold": "0.02", "search": "0.5", "dedupe": "false", "dedupe_distance": "4",
        "reuse": "false", "fps": "", "count": "", "timestamps": "", "scene_threshold": "",
        "min_gap": "", "storyboard": "true", "storyboard_width": "64", "webhook_url": "",
    }  # fmt: skip
    assert set(fields) == set(JobSpec.model_fields) - {"video_source"}
    data = {name: value for name, value in fields.items() if value}
    clip = clips.black().read_bytes()
    res = await client.http.post(
        "/video-job", data=data, files={"file": ("black.mp4", clip, "video/mp4")}
    )
    assert res.status_code == 200, res.text
    job = await client.wait(res.json()["job_id"])
    assert job["status"] == "completed", job
    assert job["options"]["reject"] == ["black"] and job["options"]["search"] == 0.5
    assert job["options"]["storyboard"] is True and job["options"]["storyboard_width"] == 64
