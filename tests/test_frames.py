"""FrameStore and FolderFrames: ids, work folders, finalize (hash, hold, store by
checksum), sources, reading, zips, scratch of dead processes and frames of earlier
versions."""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from tests.conftest import ROOT, stored_frames
from tests.records import make_frame
from vfe import frames as frames_module
from vfe.frames import (
    FRAME_NAME,
    LOCK,
    MAKING,
    PRESIGNED_FOR,
    WORK_DIR,
    FolderFrames,
    FrameStore,
    Gone,
    Kept,
    frame_name,
    image_size,
    is_job_id,
)
from vfe.models import Frame
from vfe.storage import Storages, frame_key, source_key
from vfe.storage.local import LocalStorage

JOB = str(uuid.uuid4())


class Holds:
    """The store's ``hold`` for a FrameStore: notes each call and which of its objects
    were already there when it came (none may be: an object is written after its hold)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.alive = True  # False: the job is gone
        self.calls: list[tuple[str, list[tuple[str, int]]]] = []
        self.present: list[str] = []

    async def __call__(self, job_id: str, blobs: Sequence[tuple[str, int]]) -> bool:
        self.calls.append((job_id, list(blobs)))
        self.present += [key for key, _ in blobs if (self.base / key[len("frames/") :]).exists()]
        return self.alive


class Remote(LocalStorage):
    """A storage that is no local folder to its users (as a bucket is): objects are read
    and written through it only. Counts its puts."""

    backend = "s3"

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self.puts: list[str] = []

    def local_path(self, key: str) -> Path | None:
        return None

    async def put_file(self, key: str, source: Path, *, consume: bool = False) -> None:
        self.puts.append(key)
        await super().put_file(key, source, consume=consume)


def make_store(tmp_path: Path, holds: Holds, remote: bool = False) -> FrameStore:
    base = tmp_path / "frames"
    kind = Remote if remote else LocalStorage
    storages = Storages(kind(base), kind(tmp_path / "sources"))
    return FrameStore(storages, base, holds)


@pytest.fixture
def holds(tmp_path: Path) -> Holds:
    return Holds(tmp_path / "frames")


@pytest.fixture
async def frames(tmp_path: Path, holds: Holds) -> AsyncIterator[FrameStore]:
    store = make_store(tmp_path, holds)
    await store.open()
    yield store
    await store.close()


def object_path(store: FrameStore, data: bytes, ext: str = "jpg") -> Path:
    """Where a local storage keeps ``data`` as a frame: by its SHA-256."""
    checksum = hashlib.sha256(data).hexdigest()
    return store.base / checksum[:2] / f"{checksum}.{ext}"


def as_frame(kept: Kept, index: int, name: str) -> Frame:
    return Frame(JOB, index, float(index), float(index), name, kept.size, kept.checksum,
                 created_at=time.time())  # fmt: skip


async def keep(store: FrameStore, contents: Sequence[bytes], run: str = "1") -> list[Frame]:
    """Finalize one finished file per item of ``contents`` (frame i at i seconds)."""
    work = await store.prepare(JOB, run)
    files = []
    for index, data in enumerate(contents):
        done = work / f"g0000_{index:06d}.jpg"
        done.write_bytes(data)
        files.append((done, frame_name(index, float(index))))
    kept = await store.finalize(JOB, files)
    return [as_frame(k, i, name) for i, (k, (_, name)) in enumerate(zip(kept, files, strict=True))]


# --- ids and names ----------------------------------------------------------------------


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


# --- work folders -------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "..", "not-a-uuid", JOB.upper(), f"{JOB}/..", f"../{JOB}"])
def test_work_dir_rejects_non_uuid(
    frames: FrameStore, tmp_path: Path, bad: str
) -> None:  # only work_dir turns an id into a path: both kinds of sink refuse
    for sink in (frames, FolderFrames(tmp_path / "out")):
        with pytest.raises(ValueError, match="not a job id"):
            sink.work_dir(bad)
        with pytest.raises(ValueError, match="not a job id"):
            sink.work_dir(bad, "1")


@pytest.mark.parametrize("bad", ["../x", "1/..", "/1", "-1", "1.5", " 1", "1\n", "x"])
def test_work_dir_rejects_runs_that_are_not_digits(frames: FrameStore, bad: str) -> None:
    with pytest.raises(ValueError, match="not a run"):
        frames.work_dir(JOB, bad)


async def test_layout(frames: FrameStore, tmp_path: Path, holds: Holds) -> None:
    # each process works in a folder of its own under FRAMES_BASE_PATH/.work
    assert frames.scratch.parent == frames.base / WORK_DIR
    assert len(frames.scratch.name) == 32 and int(frames.scratch.name, 16) >= 0
    assert frames.work_dir(JOB) == frames.scratch / JOB
    assert frames.work_dir(JOB, "2") == frames.scratch / JOB / "2"
    assert make_store(tmp_path, holds).scratch != frames.scratch
    out = tmp_path / "out"
    assert FolderFrames(out).work_dir(JOB, "1") == out / ".vfe-work" / JOB / "1"
    [frame] = await keep(frames, [b"a frame"])  # stored by checksum, named only in records
    assert frames.local_file(frame) == object_path(frames, b"a frame")
    assert stored_frames(frames.base) == {object_path(frames, b"a frame")}


async def test_prepare_creates_and_empties_the_work_folder(frames: FrameStore) -> None:
    [stored] = await keep(frames, [b"a finished frame"])
    work = await frames.prepare(JOB, "1")
    assert work == frames.work_dir(JOB, "1")
    assert work.is_dir() and list(work.iterdir()) == []
    (work / "partial.tmp").write_bytes(b"half a frame")
    (work / "nested").mkdir()
    again = await frames.prepare(JOB, "1")
    assert again == work and list(work.iterdir()) == []
    path = frames.local_file(stored)  # finished frames are kept
    assert path is not None and path.read_bytes() == b"a finished frame"


async def test_each_run_of_a_job_has_a_work_folder_of_its_own(frames: FrameStore) -> None:
    first, second = await frames.prepare(JOB, "1"), await frames.prepare(JOB, "2")
    assert first == frames.work_dir(JOB) / "1" and second == frames.work_dir(JOB) / "2"
    (first / "partial.jpg").write_bytes(b"x")
    (second / "partial.jpg").write_bytes(b"y")
    await frames.prepare(JOB, "2")  # a run starting again empties only its own
    assert (first / "partial.jpg").exists() and not (second / "partial.jpg").exists()
    await frames.discard_work(JOB, "1")
    assert not first.exists() and second.exists()
    await frames.discard_work(JOB, "2")  # the last run's goes, and the job's folder with it
    assert not frames.work_dir(JOB).exists() and frames.scratch.is_dir()


async def test_discard_work_of_the_job_removes_every_run_and_keeps_frames(
    frames: FrameStore,
) -> None:
    kept = await keep(frames, [b"frame"], run="1")
    for run in ("1", "2"):
        (await frames.prepare(JOB, run)).joinpath("partial").write_bytes(b"x")
    (frames.work_dir(JOB) / "source-2").write_bytes(b"a copy of the video")
    await frames.discard_work(JOB)
    assert not frames.work_dir(JOB).exists()
    assert stored_frames(frames.base) == {frames.local_file(f) for f in kept}
    await frames.discard_work(JOB)  # nothing left: no error
    await frames.discard_work(JOB, "1")


async def test_free_bytes(frames: FrameStore) -> None:
    free = await frames.free_bytes()
    assert isinstance(free, int) and free > 0


# --- finalize: hash, hold, store ------------------------------------------------------


@pytest.mark.parametrize("size", [0, 10, 3 * 1024 * 1024 + 7])  # last: several read chunks
async def test_finalize_stores_by_checksum_after_the_hold(
    frames: FrameStore, holds: Holds, size: int
) -> None:
    work = await frames.prepare(JOB, "1")
    content = os.urandom(size)
    done = work / "g0000_000003.jpg"
    done.write_bytes(content)
    [kept] = await frames.finalize(JOB, [(done, frame_name(3, 1.5))])
    checksum = hashlib.sha256(content).hexdigest()
    assert kept == Kept(size, checksum, None)  # random bytes are no image
    assert holds.calls == [(JOB, [(frame_key(checksum, "jpg"), size)])]
    assert holds.present == []  # held before it was written
    target = object_path(frames, content)
    assert target.read_bytes() == content
    assert stored_frames(frames.base) == {target}
    assert not done.exists()  # used up


async def test_finalize_stores_equal_bytes_once(frames: FrameStore, holds: Holds) -> None:
    got = await keep(frames, [b"same", b"other", b"same"])
    assert [f.checksum for f in got] == [hashlib.sha256(d).hexdigest()
                                         for d in (b"same", b"other", b"same")]  # fmt: skip
    [(job, blobs)] = holds.calls  # one hold for the batch, each object once, sorted
    same, other = (frame_key(hashlib.sha256(d).hexdigest(), "jpg") for d in (b"same", b"other"))
    assert job == JOB and blobs == sorted([(same, 4), (other, 5)])
    assert stored_frames(frames.base) == {object_path(frames, b"same"),
                                          object_path(frames, b"other")}  # fmt: skip
    assert list(frames.work_dir(JOB, "1").iterdir()) == []
    # the extension is part of the key: the same bytes as a PNG are another object
    work = await frames.prepare(JOB, "2")
    (work / "g.png").write_bytes(b"same")
    await frames.finalize(JOB, [(work / "g.png", frame_name(0, 0.0, "png"))])
    assert object_path(frames, b"same", "png").read_bytes() == b"same"


@pytest.mark.parametrize("remote", [False, True])
async def test_finalize_keeps_an_object_another_job_stored(
    tmp_path: Path, holds: Holds, remote: bool
) -> None:
    store = make_store(tmp_path, holds, remote)
    await store.open()
    try:
        checksum = hashlib.sha256(b"shared").hexdigest()
        storage, name = store.storages.route(frame_key(checksum, "jpg"))
        await storage.put_bytes(name, b"shared")
        [frame] = await keep(store, [b"shared"])
        assert frame.checksum == checksum
        assert holds.calls == [(JOB, [(frame_key(checksum, "jpg"), 6)])]  # held all the same
        assert stored_frames(store.base) == {object_path(store, b"shared")}
        assert object_path(store, b"shared").read_bytes() == b"shared"
        assert list(store.work_dir(JOB, "1").iterdir()) == []
        if isinstance(storage, Remote):
            assert storage.puts == []  # a bucket is asked first: not sent twice
    finally:
        await store.close()


async def test_finalize_for_a_job_that_is_gone_raises_and_stores_nothing(
    frames: FrameStore, holds: Holds
) -> None:
    holds.alive = False  # deleted, or claimed by another run
    work = await frames.prepare(JOB, "1")
    (work / "a").write_bytes(b"a frame")
    (work / "b").write_bytes(b"another")
    with pytest.raises(Gone):
        await frames.finalize(JOB, [(work / "a", frame_name(0, 0.0)),
                                    (work / "b", frame_name(1, 1.0))])  # fmt: skip
    assert len(holds.calls) == 1
    assert stored_frames(frames.base) == set()
    await frames.discard_work(JOB, "1")  # the run's end: its files go with its folder
    assert not work.exists()


async def test_finalize_missing_file_raises_before_holding(
    frames: FrameStore, holds: Holds
) -> None:
    work = await frames.prepare(JOB, "1")
    (work / "whole").write_bytes(b"data")
    with pytest.raises(FileNotFoundError):
        await frames.finalize(JOB, [(work / "whole", frame_name(0, 0.0)),
                                    (work / "never-written", frame_name(1, 1.0))])  # fmt: skip
    assert holds.calls == []
    assert stored_frames(frames.base) == set()


async def test_finalize_reads_the_picture_size(frames: FrameStore) -> None:
    work = await frames.prepare(JOB, "1")
    done = work / "tmp"
    done.write_bytes(PNG_HEAD + b"rest of the image")
    [kept] = await frames.finalize(JOB, [(done, frame_name(0, 0.0, "png"))])
    assert kept.dimensions == (640, 360) and kept.size == len(PNG_HEAD) + 17
    assert object_path(frames, PNG_HEAD + b"rest of the image", "png").is_file()


async def test_folder_frames_are_renamed_into_the_folder_by_name(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    sink = FolderFrames(out)
    names = [frame_name(0, 0.0), frame_name(1, 0.52)]
    (out / names[1]).write_bytes(b"an older file")
    work = await sink.prepare(JOB, "1")
    (work / "g0").write_bytes(b"first")
    (work / "g1").write_bytes(PNG_HEAD)
    kept = await sink.finalize(JOB, [(work / "g0", names[0]), (work / "g1", names[1])])
    assert [k.checksum for k in kept] == [hashlib.sha256(b"first").hexdigest(),
                                          hashlib.sha256(PNG_HEAD).hexdigest()]  # fmt: skip
    assert kept[1].dimensions == (640, 360)
    assert (out / names[0]).read_bytes() == b"first"
    assert (out / names[1]).read_bytes() == PNG_HEAD  # replaced
    assert list(work.iterdir()) == []
    await sink.discard_work(JOB, "1")
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, ".vfe-work"])
    assert list((out / ".vfe-work").iterdir()) == []


# --- sources ------------------------------------------------------------------------------


async def test_local_source_is_a_path_or_the_stored_file_in_place(frames: FrameStore) -> None:
    video = frames.base.parent / "videos" / "clip.mp4"  # a path: as it is
    assert await frames.local_source(JOB, str(video), "1") == video
    data = b"an uploaded video"
    key = source_key(hashlib.sha256(data).hexdigest())
    storage, name = frames.storages.route(key)
    await storage.put_bytes(name, data)
    path = await frames.local_source(JOB, key, "1")
    assert path.read_bytes() == data
    assert path == frames.base.parent / "sources" / hashlib.sha256(data).hexdigest()
    assert not frames.work_dir(JOB).exists()  # nothing copied


async def test_local_source_from_a_bucket_is_copied_into_the_work_folder(
    tmp_path: Path, holds: Holds, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(tmp_path, holds, remote=True)
    await store.open()
    try:
        data = b"a downloaded video"
        key = source_key(hashlib.sha256(data).hexdigest())
        storage, name = store.storages.route(key)
        await storage.put_bytes(name, data)
        copy = await store.local_source(JOB, key, "3")
        assert copy == store.work_dir(JOB) / "source-3" and copy.read_bytes() == data
        await store.discard_work(JOB)  # the run's end: the copy goes with the job's folder
        assert not copy.exists()
        monkeypatch.setattr(frames_module, "SOURCE_TRIES", 1)  # no waits between reads
        with pytest.raises(FileNotFoundError):
            await store.local_source(JOB, source_key("0" * 64), "4")
        assert not (store.work_dir(JOB) / "source-4").exists()  # no partial copy left
    finally:
        await store.close()


async def test_a_source_stored_again_meanwhile_is_read_on_a_later_try(
    tmp_path: Path, holds: Holds, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collect may remove a source its submit is storing again: the run reads again."""
    store = make_store(tmp_path, holds, remote=True)
    data = b"a video stored again"
    key = source_key(hashlib.sha256(data).hexdigest())
    storage, name = store.storages.route(key)
    get_file = storage.get_file
    tries: list[Path] = []

    async def late(wanted: str, dest: Path) -> None:
        tries.append(dest)
        if len(tries) == 1:  # fault: not there yet at the first read, there at the next
            await storage.put_bytes(name, data)
            raise FileNotFoundError(wanted)
        await get_file(wanted, dest)

    monkeypatch.setattr(storage, "get_file", late)
    copy = await store.local_source(JOB, key, "1")
    assert copy.read_bytes() == data and len(tries) == 2


# --- reading and zips -----------------------------------------------------------------


@pytest.mark.parametrize("remote", [False, True])
async def test_read_and_zip_stream(tmp_path: Path, holds: Holds, remote: bool) -> None:
    store = make_store(tmp_path, holds, remote)
    await store.open()
    try:
        contents = [os.urandom(300_000), b"second", PNG_HEAD]
        got = await keep(store, contents)
        assert (store.local_file(got[0]) is None) is remote
        storage, name = store.stored(got[0])
        assert await storage.presign(name, PRESIGNED_FOR) is None  # a folder has no signed URLs
        assert b"".join([c async for c in store.read(got[0])]) == contents[0]
        gone = object_path(store, b"second")
        gone.unlink()  # deleted meanwhile
        with pytest.raises(FileNotFoundError):
            b"".join([c async for c in store.read(got[1])])
        data = b"".join([chunk async for chunk in store.zip_stream(got)])
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            assert archive.testzip() is None
            assert archive.namelist() == [got[0].filename, got[2].filename]  # gone: left out
            assert archive.read(got[0].filename) == contents[0]
            assert archive.read(got[2].filename) == PNG_HEAD
            assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}
        empty = b"".join([chunk async for chunk in store.zip_stream([])])
        with zipfile.ZipFile(io.BytesIO(empty)) as archive:
            assert archive.namelist() == []
    finally:
        await store.close()


# --- scratch of processes that are gone -------------------------------------------------

HOLDER = """
import asyncio, sys
from pathlib import Path
from vfe.frames import FrameStore
from vfe.storage import Storages
from vfe.storage.local import LocalStorage

async def main() -> None:
    base = Path(sys.argv[1])
    async def hold(job_id, blobs):
        return True
    store = FrameStore(Storages(LocalStorage(base), LocalStorage(base)), base, hold)
    await store.open()
    work = await store.prepare(sys.argv[2], "1")
    (work / "g0000_000000.jpg").write_bytes(b"partial")
    print(store.scratch, flush=True)
    sys.stdin.read()  # until killed

asyncio.run(main())
"""


def start_holder(base: Path) -> tuple[subprocess.Popen[str], Path]:
    """Another process that works in ``base``: it and its scratch folder (with a run's
    partial frame in it), once it has locked it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(base), JOB],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL, as a crash or an OOM kill would; wait for it and close its pipes."""
    with proc:
        proc.kill()


async def test_open_removes_the_scratch_of_processes_that_are_gone(
    tmp_path: Path, holds: Holds
) -> None:
    base = tmp_path / "frames"
    # a process killed mid-run (its lock goes with it), and one killed before it locked
    proc, killed = start_holder(base)
    try:
        assert (killed / JOB / "1" / "g0000_000000.jpg").is_file()
        living = make_store(tmp_path, holds)
        await living.open()
        unlocked = base / WORK_DIR / uuid.uuid4().hex
        (unlocked / JOB).mkdir(parents=True)
        work = await living.prepare(JOB, "1")
        (work / "partial.jpg").write_bytes(b"x")
        [frame] = await keep(living, [b"a frame"], run="2")
        making = base / WORK_DIR / f"{MAKING}{uuid.uuid4().hex}"  # a process starting now
        making.mkdir()
        stale = base / WORK_DIR / f"{MAKING}{uuid.uuid4().hex}"  # one that died starting
        stale.mkdir()
        os.utime(stale, (time.time() - 3600, time.time() - 3600))
        starting = make_store(tmp_path, holds)
        await starting.open()  # the holder still lives: its folder stays
        assert killed.is_dir() and not unlocked.exists()
        assert making.is_dir() and not stale.exists()
        making.rmdir()
        kill(proc)
        later = make_store(tmp_path, holds)
        await later.open()
        assert not killed.exists()  # its lock went with it
        # the living ones keep theirs, and stored frames are no scratch
        assert (work / "partial.jpg").is_file() and (starting.scratch / LOCK).is_file()
        assert stored_frames(base) == {living.local_file(frame)}
        for store in (living, starting, later):
            await store.close()  # each takes its own scratch away
            assert not store.scratch.exists()
        assert list((base / WORK_DIR).iterdir()) == []
        assert stored_frames(base) == {living.local_file(frame)}
    finally:
        if proc.returncode is None:
            kill(proc)


# --- frames of earlier versions ---------------------------------------------------------


async def test_adopt_legacy_stores_recorded_frame_files_by_checksum(frames: FrameStore) -> None:
    base = frames.base
    one, two, unknown = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    old = {
        base / one / "000000_0.000.jpg": b"first",
        base / one / "000001_0.520.jpg": b"second",
        base / two / "000000_0.000.png": PNG_HEAD,
        base / two / "000001_1.000.jpg": b"first",  # the same bytes: one object
    }
    for path, data in old.items():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
    recorded = {
        job: [make_frame(job, n, filename=p.name, checksum=hashlib.sha256(d).hexdigest())
              for n, (p, d) in enumerate(i for i in old.items() if i[0].parent.name == job)]
        for job in (one, two)
    }  # fmt: skip
    changed = base / two / "000002_2.000.jpg"  # listed, but its bytes changed since
    changed.write_bytes(b"edited")
    recorded[two].append(make_frame(two, 2, filename=changed.name, checksum="0" * 64))
    (base / one / WORK_DIR).mkdir()
    (base / one / WORK_DIR / "000002.jpg.tmp").write_bytes(b"half")
    for leftover in (".trash", ".zips"):
        (base / leftover / one).mkdir(parents=True)
        (base / leftover / one / "000000_0.000.jpg").write_bytes(b"deleted")
    strangers = [base / "not-a-job" / "000000_0.000.jpg", base / unknown / "000000_0.000.jpg"]
    for path in strangers:  # not a job the database knows: not ours to touch
        path.parent.mkdir()
        path.write_bytes(b"someone else's")

    async def frames_of(job_id: str) -> list[Frame]:
        return recorded.get(job_id, [])

    [current] = await keep(frames, [b"stored already"])
    assert await frames.adopt_legacy(frames_of) == 4
    expected = {object_path(frames, d, p.suffix[1:]) for p, d in old.items()}
    assert stored_frames(base) == expected | {frames.local_file(current)}
    for path, data in old.items():
        assert object_path(frames, data, path.suffix[1:]).read_bytes() == data
    left = sorted(p.name for p in base.iterdir() if not re.fullmatch("[0-9a-f]{2}", p.name))
    assert left == sorted([WORK_DIR, "not-a-job", unknown, two])  # one is emptied
    assert [p.name for p in (base / two).iterdir()] == [changed.name]
    for path in strangers:
        assert path.read_bytes() == b"someone else's"
    assert frames.scratch.is_dir() and (frames.scratch / LOCK).is_file()
    assert await frames.adopt_legacy(frames_of) == 0  # nothing left to adopt
    assert stored_frames(base) == expected | {frames.local_file(current)}


# --- picture sizes ------------------------------------------------------------------------

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
