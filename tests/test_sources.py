"""Local video paths under the videos root, and streamed multipart uploads."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from vfe.errors import BadRequest, PayloadTooLarge
from vfe.sources import MAX_FIELD_BYTES, MAX_PARTS, display_name, receive_upload, resolve_local

# --- resolve_local ----------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A videos root with a clip, a nested clip and a file just outside it."""
    videos = tmp_path / "videos"
    (videos / "sub").mkdir(parents=True)
    (videos / "clip.mp4").write_bytes(b"video")
    (videos / "sub" / "nested.mp4").write_bytes(b"video")
    (tmp_path / "secret.mp4").write_bytes(b"outside")
    return videos


def not_found_message(source: str, root: Path) -> str:
    with pytest.raises(BadRequest) as info:
        resolve_local(source, root)
    assert info.value.status == 400
    return str(info.value.detail)


def test_relative_path_inside(root: Path) -> None:
    assert resolve_local("clip.mp4", root) == (root / "clip.mp4").resolve()
    assert resolve_local("sub/nested.mp4", root) == (root / "sub" / "nested.mp4").resolve()
    assert resolve_local("sub/../clip.mp4", root) == (root / "clip.mp4").resolve()


def test_absolute_path_inside(root: Path) -> None:
    assert (
        resolve_local(str(root / "sub" / "nested.mp4"), root)
        == (root / "sub" / "nested.mp4").resolve()
    )


def test_symlink_inside_pointing_inside_is_resolved(root: Path) -> None:
    (root / "alias.mp4").symlink_to(root / "sub" / "nested.mp4")
    assert resolve_local("alias.mp4", root) == (root / "sub" / "nested.mp4").resolve()


def test_symlinked_videos_root(root: Path, tmp_path: Path) -> None:
    link = tmp_path / "videos-link"
    link.symlink_to(root)
    assert resolve_local("clip.mp4", link) == (root / "clip.mp4").resolve()


def test_outside_and_missing_give_the_same_answer(root: Path, tmp_path: Path) -> None:
    (root / "escape.mp4").symlink_to(tmp_path / "secret.mp4")
    (root / "loop-a").symlink_to(root / "loop-b")
    (root / "loop-b").symlink_to(root / "loop-a")
    missing = not_found_message("nope.mp4", root)
    assert "VIDEOS_BASE_PATH" in missing
    assert str(root) not in missing and str(tmp_path) not in missing  # no server paths
    for source in [
        "../secret.mp4",  # exists, outside
        str(tmp_path / "secret.mp4"),  # absolute, outside
        "escape.mp4",  # symlink pointing out
        "sub/../../secret.mp4",
        "sub",  # a folder
        ".",
        "",
        str(root),
        "loop-a",  # a symlink loop
        "clip.mp4\x00.txt",  # NUL byte
        "/etc/passwd",
        str(tmp_path / "missing.mp4"),
    ]:
        assert not_found_message(source, root) == missing, source


@pytest.mark.parametrize(
    "url", ["http://example.com/v.mp4", "https://x/y", "file:///etc/passwd", "s3+v4://b/k"]
)
def test_urls_are_not_local_paths(root: Path, url: str) -> None:
    # The API sends http(s) URLs to fetch.py; here any URL is just a name that is not there.
    assert not_found_message(url, root) == not_found_message("missing.mp4", root)


def test_a_file_name_with_a_colon_is_not_a_url(root: Path) -> None:
    (root / "take:1.mp4").write_bytes(b"video")
    assert resolve_local("take:1.mp4", root).name == "take:1.mp4"


# --- display_name -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("clip.mp4", "clip.mp4"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\evil.mp4", "evil.mp4"),
        ("C:\\Users\\me\\my clip.mp4", "my clip.mp4"),
        ("dir/", "upload"),
        ("..", ".."),
        ("", "upload"),
        (None, "upload"),
        ("bad\x00\r\nname.mp4", "badname.mp4"),
        ("  spaced.mp4  ", "spaced.mp4"),
        ("é" * 300, "é" * 255),
    ],
)
def test_display_name(given: str | None, shown: str) -> None:
    assert display_name(given) == shown


# --- receive_upload ---------------------------------------------------------------------

BOUNDARY = "vfe-test-boundary-7MA4YWxk"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"

Part = tuple[str, bytes, str | None] | tuple[str, bytes, str | None, dict[str, str]]


def multipart(parts: Iterable[Part], boundary: str = BOUNDARY) -> bytes:
    """A real multipart/form-data body; a part is (name, data, filename[, headers])."""
    out = bytearray()
    for part in parts:
        name, data, filename = part[0], part[1], part[2]
        headers = part[3] if len(part) == 4 else {}
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        for key, value in headers.items():
            out += f"{key}: {value}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


async def chunks(body: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.fixture
def uploads(tmp_path: Path) -> Path:
    folder = tmp_path / "uploads"
    folder.mkdir()
    return folder


def stored(uploads: Path) -> list[str]:
    return sorted(p.name for p in uploads.iterdir())


GENERATED = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}\.upload$")


@pytest.mark.parametrize("chunk_size", [1, 7, 4096, 1 << 20])
async def test_fields_and_file_streamed_to_disk(uploads: Path, chunk_size: int) -> None:
    video = os.urandom(50_000) if chunk_size > 1 else os.urandom(3_000)
    # A file body that contains something boundary-like must survive intact.
    video = video[:100] + f"\r\n--{BOUNDARY[:-1]}".encode() + video[100:]
    body = multipart(
        [
            ("interval", b"2.5", None),
            ("file", video, "clip.mp4", {"Content-Type": "video/mp4"}),
            ("note", "héllo".encode(), None),
        ]
    )
    upload = await receive_upload(
        CONTENT_TYPE, str(len(body)), chunks(body, chunk_size), uploads, 10 * 1024 * 1024
    )
    assert upload.fields == [("interval", "2.5"), ("note", "héllo")]
    assert upload.filename == "clip.mp4"
    assert upload.size == len(video)
    assert upload.path is not None and upload.path.parent == uploads
    assert GENERATED.match(upload.path.name)
    assert upload.path.read_bytes() == video
    assert stored(uploads) == [upload.path.name]


async def test_fields_only(uploads: Path) -> None:
    body = multipart([("video_source", b"clip.mp4", None), ("interval", b"1", None)])
    upload = await receive_upload(CONTENT_TYPE, None, chunks(body), uploads, 1000)
    assert upload.fields == [("video_source", "clip.mp4"), ("interval", "1")]
    assert upload.path is None and upload.filename is None and upload.size == 0
    assert stored(uploads) == []


async def test_empty_file_part_is_stored_empty(uploads: Path) -> None:
    body = multipart([("file", b"", "empty.mp4")])
    upload = await receive_upload(CONTENT_TYPE, None, chunks(body), uploads, 1000)
    assert upload.path is not None and upload.path.read_bytes() == b""
    assert upload.size == 0


async def test_each_upload_gets_its_own_name(uploads: Path) -> None:
    body = multipart([("file", b"data", "same.mp4")])
    first = await receive_upload(CONTENT_TYPE, None, chunks(body), uploads, 1000)
    second = await receive_upload(CONTENT_TYPE, None, chunks(body), uploads, 1000)
    assert first.path != second.path
    assert len(stored(uploads)) == 2


@pytest.mark.parametrize("hostile", ["../../etc/passwd", "/etc/passwd", "..\\..\\x.mp4", ".."])
async def test_hostile_filename_is_only_a_display_name(
    uploads: Path, tmp_path: Path, hostile: str
) -> None:
    body = multipart([("file", b"payload", hostile)])
    upload = await receive_upload(CONTENT_TYPE, None, chunks(body), uploads, 1000)
    assert upload.filename == display_name(hostile)
    assert "/" not in upload.filename and "\\" not in upload.filename
    assert upload.path is not None and upload.path.parent == uploads
    assert GENERATED.match(upload.path.name)
    assert stored(uploads) == [upload.path.name]
    assert stored(tmp_path) == ["uploads"]  # nothing written beside it


async def test_file_over_the_cap_is_refused_and_removed(uploads: Path) -> None:
    limit = 10_000
    body = multipart([("interval", b"1", None), ("file", os.urandom(limit + 1), "big.mp4")])
    with pytest.raises(PayloadTooLarge) as info:
        await receive_upload(CONTENT_TYPE, None, chunks(body, 1024), uploads, limit)
    assert info.value.status == 413
    assert "MAX_UPLOAD_MB" in str(info.value.detail)
    assert stored(uploads) == []


async def test_file_exactly_at_the_cap_is_accepted(uploads: Path) -> None:
    limit = 10_000
    body = multipart([("file", b"v" * limit, "ok.mp4")])
    upload = await receive_upload(CONTENT_TYPE, None, chunks(body, 999), uploads, limit)
    assert upload.size == limit


async def test_content_length_over_the_cap_is_refused_before_reading(uploads: Path) -> None:
    limit = 1024 * 1024
    read: list[bytes] = []

    async def stream() -> AsyncIterator[bytes]:
        read.append(b"x")
        yield b"never read"

    body_len = limit + 2 * 1024 * 1024
    gen = stream()
    with pytest.raises(PayloadTooLarge):
        await receive_upload(CONTENT_TYPE, str(body_len), gen, uploads, limit)
    await gen.aclose()
    assert read == []
    assert stored(uploads) == []


async def test_content_length_within_overhead_or_unparsable_is_not_trusted(
    uploads: Path,
) -> None:
    body = multipart([("file", b"small", "a.mp4")])
    for length in ("not-a-number", "-1", str(1000 + 1024 * 1024)):
        upload = await receive_upload(CONTENT_TYPE, length, chunks(body), uploads, 1000)
        assert upload.size == 5


async def test_stream_failing_midway_leaves_no_partial_file(uploads: Path) -> None:
    body = multipart([("file", os.urandom(20_000), "a.mp4")])

    async def disconnecting() -> AsyncIterator[bytes]:
        yield body[:12_000]
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await receive_upload(CONTENT_TYPE, None, disconnecting(), uploads, 1 << 20)
    assert stored(uploads) == []


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=",
        'multipart/form-data; boundary=""',
        "multipart/form-data; charset=utf-8",
    ],
)
async def test_no_boundary(uploads: Path, content_type: str) -> None:
    body = multipart([("file", b"x", "a.mp4")])
    with pytest.raises(BadRequest, match="boundary"):
        await receive_upload(content_type, None, chunks(body), uploads, 1000)


async def test_over_long_boundary_is_a_bad_request(uploads: Path) -> None:
    boundary = "b" * 300  # python-multipart refuses boundaries over 256 bytes
    body = multipart([("file", b"x", "a.mp4")], boundary=boundary)
    with pytest.raises(BadRequest, match="malformed"):
        await receive_upload(
            f"multipart/form-data; boundary={boundary}", None, chunks(body), uploads, 1000
        )
    assert stored(uploads) == []


@pytest.mark.parametrize(
    "body",
    [
        b"this is not multipart at all",
        b"--other\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--other--",
        f"--{BOUNDARY}\r\nno colon in this header line\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode(),
        f"--{BOUNDARY}XX\r\n".encode(),
    ],
    ids=["garbage", "other-boundary", "bad-header", "bad-boundary-padding"],
)
async def test_malformed_body(uploads: Path, body: bytes) -> None:
    with pytest.raises(BadRequest, match="malformed"):
        await receive_upload(CONTENT_TYPE, None, chunks(body, 5), uploads, 1000)
    assert stored(uploads) == []


async def test_malformed_after_file_data_removes_the_partial_file(uploads: Path) -> None:
    good = multipart([("file", os.urandom(8000), "a.mp4")])
    # Replace the closing boundary with a boundary followed by junk padding.
    broken = good[: good.rindex(f"--{BOUNDARY}--".encode())] + f"--{BOUNDARY} junk\r\n".encode()
    with pytest.raises(BadRequest, match="malformed"):
        await receive_upload(CONTENT_TYPE, None, chunks(broken, 1000), uploads, 1 << 20)
    assert stored(uploads) == []


@pytest.mark.parametrize("cut", [0, 40, -30, -3])
async def test_truncated_body_is_a_bad_request(uploads: Path, cut: int) -> None:
    """A body that ends before its closing boundary is incomplete, not a shorter file."""
    body = multipart([("interval", b"1", None), ("file", os.urandom(6000), "a.mp4")])
    truncated = body[:cut]
    with pytest.raises(BadRequest):
        await receive_upload(CONTENT_TYPE, None, chunks(truncated, 1000), uploads, 1 << 20)
    assert stored(uploads) == []


async def test_two_files_are_refused(uploads: Path) -> None:
    body = multipart([("file", b"one" * 1000, "a.mp4"), ("file", b"two", "b.mp4")])
    with pytest.raises(BadRequest, match="one file per job"):
        await receive_upload(CONTENT_TYPE, None, chunks(body, 512), uploads, 1 << 20)
    assert stored(uploads) == []


async def test_file_under_another_field_name_is_refused(uploads: Path) -> None:
    body = multipart([("video", b"data", "a.mp4")])
    with pytest.raises(BadRequest, match="send the video as 'file'"):
        await receive_upload(CONTENT_TYPE, None, chunks(body), uploads, 1000)
    assert stored(uploads) == []


async def test_part_without_a_name_is_refused(uploads: Path) -> None:
    body = f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode()
    with pytest.raises(BadRequest, match="needs a name"):
        await receive_upload(CONTENT_TYPE, None, chunks(body), uploads, 1000)


async def test_too_many_parts(uploads: Path) -> None:
    ok = multipart([(f"f{i}", b"v", None) for i in range(MAX_PARTS)])
    assert len((await receive_upload(CONTENT_TYPE, None, chunks(ok), uploads, 1000)).fields) == (
        MAX_PARTS
    )
    body = multipart([(f"f{i}", b"v", None) for i in range(MAX_PARTS + 1)])
    with pytest.raises(BadRequest, match="too many multipart parts"):
        await receive_upload(CONTENT_TYPE, None, chunks(body), uploads, 1000)


async def test_too_many_parts_after_a_file_removes_it(uploads: Path) -> None:
    parts: list[Part] = [("file", b"data" * 100, "a.mp4")]
    parts += [(f"f{i}", b"v", None) for i in range(MAX_PARTS)]
    with pytest.raises(BadRequest, match="too many"):
        await receive_upload(CONTENT_TYPE, None, chunks(multipart(parts), 64), uploads, 1000)
    assert stored(uploads) == []


async def test_field_too_long(uploads: Path) -> None:
    body = multipart([("interval", b"1" * (MAX_FIELD_BYTES + 1), None)])
    with pytest.raises(BadRequest, match="'interval' is too long"):
        await receive_upload(CONTENT_TYPE, None, chunks(body), uploads, 1000)
