"""The storage contract: one suite, run unchanged on a local folder and on a real
S3-compatible server (SeaweedFS; a new prefix of its bucket per test)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from vfe.errors import StorageUnavailable
from vfe.storage import Storage
from vfe.storage.local import LocalStorage
from vfe.storage.s3 import S3Storage


@pytest.fixture(params=["local", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "store")
        return
    from tests.seaweed import ACCESS_KEY, BUCKET, SECRET_KEY

    server: Any = request.getfixturevalue("s3_server")
    yield S3Storage(
        f"s3://{BUCKET}/t-{uuid.uuid4().hex[:12]}",
        endpoint=server.endpoint,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
    )


async def read_all(storage: Storage, key: str) -> bytes:
    return b"".join([chunk async for chunk in storage.read(key)])


async def test_put_head_read_and_delete(storage: Storage, tmp_path: Path) -> None:
    assert await storage.ping() is True
    assert await storage.head("frames/a.jpg") is None
    await storage.put_bytes("frames/a.jpg", b"first")
    await storage.put_bytes("frames/a.jpg", b"second!")  # replaced, never appended
    info = await storage.head("frames/a.jpg")
    assert info is not None and (info.key, info.size) == ("frames/a.jpg", 7)
    assert await read_all(storage, "frames/a.jpg") == b"second!"
    await storage.delete("frames/a.jpg")
    await storage.delete("frames/a.jpg")  # missing: no error
    assert await storage.head("frames/a.jpg") is None
    with pytest.raises(FileNotFoundError):
        await read_all(storage, "frames/a.jpg")


async def test_files_round_trip_whole_and_in_chunks(storage: Storage, tmp_path: Path) -> None:
    data = bytes(range(256)) * 8000  # 2 MB: several chunks
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    await storage.put_file("uploads/big.bin", source)
    chunks = [chunk async for chunk in storage.read("uploads/big.bin")]
    assert b"".join(chunks) == data
    dest = tmp_path / "copy.bin"
    await storage.get_file("uploads/big.bin", dest)
    assert hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(data).digest()
    with pytest.raises(FileNotFoundError):
        await storage.put_file("uploads/none.bin", tmp_path / "no-such-file")
    with pytest.raises(FileNotFoundError):
        await storage.get_file("uploads/none.bin", tmp_path / "none")


async def test_keys_lists_by_prefix(storage: Storage) -> None:
    names = ["frames/00/a.jpg", "frames/01/b.jpg", "uploads/c.mp4"]
    await asyncio.gather(*(storage.put_bytes(n, n.encode()) for n in names))
    assert sorted([k async for k in storage.keys()]) == names
    assert sorted([k async for k in storage.keys("frames/")]) == names[:2]
    assert [k async for k in storage.keys("nothing/")] == []


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", "a b", "a/\nb"])
async def test_bad_keys_are_refused(storage: Storage, key: str) -> None:
    with pytest.raises(ValueError, match="not an object key"):
        await storage.put_bytes(key, b"x")


async def test_presigned_urls_serve_the_object_where_there_are_any(storage: Storage) -> None:
    await storage.put_bytes("frames/p.jpg", b"picture")
    url = await storage.presign("frames/p.jpg", timedelta(minutes=5))
    if storage.backend == "local":
        assert url is None  # a folder has no URLs: the API streams its files
        return
    assert url is not None
    async with httpx.AsyncClient() as client:
        res = await client.get(url)
    assert res.status_code == 200 and res.content == b"picture"


async def test_an_unreachable_store_is_a_503() -> None:
    from tests.conftest import free_port

    store = S3Storage("s3://vfe/x", endpoint=f"http://127.0.0.1:{free_port()}",
                      access_key_id="k", secret_access_key="s")  # fmt: skip
    assert await store.ping() is False
    with pytest.raises(StorageUnavailable, match="object store failed") as failed:
        await store.put_bytes("a", b"x")
    assert failed.value.status == 503
    assert "127.0.0.1" not in str(failed.value.detail)  # no endpoint in what clients see


async def test_a_consumed_file_is_stored_and_gone(storage: Storage, tmp_path: Path) -> None:
    source = tmp_path / "frame.jpg"
    source.write_bytes(b"whole frame")
    await storage.put_file("ab/abcd.jpg", source, consume=True)
    assert not source.exists()
    assert await read_all(storage, "ab/abcd.jpg") == b"whole frame"
    kept = tmp_path / "kept.mp4"
    kept.write_bytes(b"a video")
    await storage.put_file("cdef", kept)  # not consumed: the caller's copy stays
    assert kept.read_bytes() == b"a video"
    kept.unlink()  # and the stored one does not go with it
    assert await read_all(storage, "cdef") == b"a video"
    local = storage.local_path("cdef")
    assert local is None or local.read_bytes() == b"a video"


async def test_many_objects_go_in_one_delete(storage: Storage) -> None:
    keys = [f"x/{n:04d}.jpg" for n in range(30)]
    await asyncio.gather(*(storage.put_bytes(key, key.encode()) for key in keys))
    await storage.delete(*keys[:20], "x/missing.jpg")  # a missing one is no error
    assert sorted([key async for key in storage.keys("x/")]) == keys[20:]
    await storage.delete()  # nothing: nothing happens
