"""FrameStore: ids, names, the work folder, finalize (hash + rename), removal."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest

from vfe.frames import FRAME_NAME, WORK_DIR, FrameStore, frame_name, image_size, is_job_id

JOB = str(uuid.uuid4())


@pytest.fixture
def frames(tmp_path: Path) -> FrameStore:
    base = tmp_path / "frames"
    base.mkdir()
    return FrameStore(base)


def test_is_job_id_accepts_canonical_uuids_only() -> None:
    value = uuid.uuid4()
    assert is_job_id(str(value))
    assert not is_job_id(str(value).upper())
    assert not is_job_id(value.hex)  # no hyphens
    assert not is_job_id("{" + str(value) + "}")
    assert not is_job_id("urn:uuid:" + str(value))
    assert not is_job_id("")
    assert not is_job_id("..")
    assert not is_job_id(f"../{value}")
    assert not is_job_id(str(value) + "\n")


@pytest.mark.parametrize(
    ("index", "timestamp", "ext", "expected"),
    [
        (12, 60.0, "jpg", "000012_60.000.jpg"),
        (0, 0.0, "png", "000000_0.000.png"),
        (1234567, 1.23456, "webp", "1234567_1.235.webp"),
    ],
)
def test_frame_name(index: int, timestamp: float, ext: str, expected: str) -> None:
    name = frame_name(index, timestamp, ext)
    assert name == expected
    assert FRAME_NAME.fullmatch(name)


@pytest.mark.parametrize("bad", ["", "..", "not-a-uuid", JOB.upper(), f"{JOB}/..", f"../{JOB}"])
def test_job_dir_rejects_non_uuid(frames: FrameStore, bad: str) -> None:
    with pytest.raises(ValueError, match="not a job id"):
        frames.job_dir(bad)
    with pytest.raises(ValueError):
        frames.work_dir(bad)
    with pytest.raises(ValueError):
        frames.path(bad, "000001_1.000.jpg")


def test_layout(frames: FrameStore) -> None:
    assert frames.job_dir(JOB) == frames.base / JOB
    assert frames.work_dir(JOB) == frames.base / JOB / WORK_DIR
    assert frames.path(JOB, "000001_1.500.jpg") == frames.base / JOB / "000001_1.500.jpg"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "../000001_1.000.jpg",
        "000001_1.000.jpg/../../etc/passwd",
        "/etc/passwd",
        "00001_1.000.jpg",  # index under six digits
        "000001_1.00.jpg",  # two decimals
        "000001_1.000.gif",
        "000001_1.000.JPG",
        "000001_-1.000.jpg",
        "000001_1.000.jpg\n",
        " 000001_1.000.jpg",
        ".work",
    ],
)
def test_path_rejects_bad_names(frames: FrameStore, bad: str) -> None:
    with pytest.raises(ValueError, match="not a frame name"):
        frames.path(JOB, bad)


async def test_prepare_creates_and_empties_the_work_folder(frames: FrameStore) -> None:
    work = await frames.prepare(JOB)
    assert work == frames.work_dir(JOB)
    assert work.is_dir()
    (work / "partial.tmp").write_bytes(b"half a frame")
    (work / "nested").mkdir()
    final = frames.path(JOB, "000000_0.000.jpg")
    final.write_bytes(b"a finished frame")
    again = await frames.prepare(JOB)
    assert again == work and list(work.iterdir()) == []
    assert final.read_bytes() == b"a finished frame"  # finished frames are kept


@pytest.mark.parametrize("size", [0, 10, 3 * 1024 * 1024 + 7])  # last: several read chunks
async def test_finalize_hashes_and_renames(frames: FrameStore, size: int) -> None:
    work = await frames.prepare(JOB)
    content = os.urandom(size)
    done = work / "tmp-000003.jpg"
    done.write_bytes(content)
    name = frame_name(3, 1.5)
    got_size, checksum, dimensions = await frames.finalize(JOB, done, name)
    assert got_size == size
    assert dimensions is None  # random bytes are no image
    assert checksum == hashlib.sha256(content).hexdigest()
    target = frames.path(JOB, name)
    assert target.read_bytes() == content
    assert not done.exists()


async def test_finalize_replaces_an_older_file(frames: FrameStore) -> None:
    work = await frames.prepare(JOB)
    name = frame_name(1, 1.0)
    frames.path(JOB, name).write_bytes(b"old")
    (work / "new").write_bytes(b"new")
    assert (await frames.finalize(JOB, work / "new", name))[0] == 3
    assert frames.path(JOB, name).read_bytes() == b"new"


async def test_finalize_bad_name_leaves_the_file(frames: FrameStore) -> None:
    work = await frames.prepare(JOB)
    done = work / "tmp"
    done.write_bytes(b"data")
    with pytest.raises(ValueError):
        await frames.finalize(JOB, done, "../escape.jpg")
    assert done.read_bytes() == b"data"


async def test_finalize_missing_file_raises(frames: FrameStore) -> None:
    work = await frames.prepare(JOB)
    with pytest.raises(FileNotFoundError):
        await frames.finalize(JOB, work / "never-written", frame_name(0, 0.0))
    assert not frames.path(JOB, frame_name(0, 0.0)).exists()


async def test_discard_work_keeps_frames(frames: FrameStore) -> None:
    work = await frames.prepare(JOB)
    (work / "partial").write_bytes(b"x")
    kept = frames.path(JOB, frame_name(0, 0.0))
    kept.write_bytes(b"frame")
    await frames.discard_work(JOB)
    assert not work.exists()
    assert kept.exists()
    await frames.discard_work(JOB)  # nothing left: no error


async def test_remove_named_frames(frames: FrameStore) -> None:
    await frames.prepare(JOB)
    names = [frame_name(i, float(i)) for i in range(4)]
    for name in names:
        frames.path(JOB, name).write_bytes(b"f")
    await frames.remove(JOB, [names[0], names[2], frame_name(99, 99.0)])  # missing: ignored
    left = sorted(p.name for p in frames.job_dir(JOB).iterdir() if p.name != WORK_DIR)
    assert left == [names[1], names[3]]


async def test_remove_with_a_bad_name_removes_nothing(frames: FrameStore) -> None:
    await frames.prepare(JOB)
    good = frame_name(0, 0.0)
    frames.path(JOB, good).write_bytes(b"f")
    outside = frames.base / "outside.jpg"
    outside.write_bytes(b"o")
    with pytest.raises(ValueError):
        await frames.remove(JOB, [good, "../outside.jpg"])
    assert frames.path(JOB, good).exists()
    assert outside.exists()


async def test_discard_whole_folder(frames: FrameStore) -> None:
    other = str(uuid.uuid4())
    await frames.prepare(JOB)
    await frames.prepare(other)
    frames.path(JOB, frame_name(0, 0.0)).write_bytes(b"f")
    frames.path(other, frame_name(0, 0.0)).write_bytes(b"g")
    await frames.discard(JOB)
    assert not frames.job_dir(JOB).exists()
    assert frames.path(other, frame_name(0, 0.0)).exists()
    await frames.discard(JOB)  # already gone: no error
    await frames.empty_trash()
    assert not (frames.base / ".trash").exists()
    assert frames.path(other, frame_name(0, 0.0)).exists()
    assert frames.base.is_dir()


async def test_free_bytes(frames: FrameStore) -> None:
    free = await frames.free_bytes()
    assert isinstance(free, int) and free > 0


async def test_finalize_reads_the_picture_size(frames: FrameStore) -> None:
    work = await frames.prepare(JOB)
    done = work / "tmp"
    done.write_bytes(PNG_HEAD + b"rest of the image")
    size, _, dimensions = await frames.finalize(JOB, done, frame_name(0, 0.0, "png"))
    assert dimensions == (640, 360) and size == len(PNG_HEAD) + 17


PNG_HEAD = (
    b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + (640).to_bytes(4, "big") + (360).to_bytes(4, "big")
)


def webp(chunk: bytes, body: bytes) -> bytes:
    return b"RIFF" + b"\0\0\0\0" + b"WEBP" + chunk + body


def jpeg(*segments: tuple[int, bytes]) -> bytes:
    out = b"\xff\xd8"
    for marker, payload in segments:
        out += bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload
    return out + b"\0" * 16


SOF = b"\x08" + (241).to_bytes(2, "big") + (321).to_bytes(2, "big") + b"\x03"


@pytest.mark.parametrize(
    ("head", "size"),
    [
        (PNG_HEAD, (640, 360)),
        (PNG_HEAD[:20], None),  # too short
        (
            webp(
                b"VP8 ",
                b"\0" * 10 + (320).to_bytes(2, "little") + (240 | 0xC000).to_bytes(2, "little"),
            ),
            (320, 240),
        ),
        (
            webp(b"VP8L", b"\0" * 5 + (319 | (239 << 14)).to_bytes(4, "little") + b"\0" * 5),
            (320, 240),
        ),
        (
            webp(b"VP8X", b"\0" * 8 + (99).to_bytes(3, "little") + (74).to_bytes(3, "little")),
            (100, 75),
        ),
        (webp(b"ALPH", b"\0" * 18), None),
        (jpeg((0xE0, b"JFIF\0" + b"\0" * 9), (0xC0, SOF)), (321, 241)),
        (jpeg((0xC2, SOF)), (321, 241)),  # progressive
        (jpeg((0xE0, b"\0" * 4))[:6] + b"\x00" * 20, None),  # not a marker where one belongs
        (b"\xff\xd8" + b"\0" * 4, None),
        (b"GIF89a" + b"\0" * 40, None),
        (b"", None),
    ],
    ids=[
        "png",
        "png-short",
        "vp8",
        "vp8l",
        "vp8x",
        "webp-other",
        "jpeg",
        "jpeg-progressive",
        "jpeg-garbage",
        "jpeg-short",
        "gif",
        "empty",
    ],
)
def test_image_size_from_headers(head: bytes, size: tuple[int, int] | None) -> None:
    assert image_size(head) == size


async def test_each_run_of_a_job_has_a_work_folder_of_its_own(frames: FrameStore) -> None:
    first, second = await frames.prepare(JOB, "1"), await frames.prepare(JOB, "2")
    assert first == frames.work_dir(JOB) / "1" and second == frames.work_dir(JOB) / "2"
    (first / "partial.jpg").write_bytes(b"x")
    (second / "partial.jpg").write_bytes(b"y")
    await frames.prepare(JOB, "2")  # a run starting again empties only its own
    assert (first / "partial.jpg").exists() and not (second / "partial.jpg").exists()
    await frames.discard_work(JOB, "1")
    assert not first.exists() and second.exists()
    await frames.discard_work(JOB, "2")  # the last run's goes, and the work folder with it
    assert not frames.work_dir(JOB).exists() and frames.job_dir(JOB).exists()
    with pytest.raises(ValueError, match="not a run"):
        frames.work_dir(JOB, "../x")
