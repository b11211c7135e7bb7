"""``S3Storage``: objects in an S3-compatible bucket (AWS S3, MinIO, SeaweedFS, R2...),
through obstore (one async API over Rust's object_store: multipart uploads, streaming
reads, presigned URLs, retries with backoff).

Keys live under the URL's prefix (``s3://bucket/prefix``). Every obstore error is
translated here: a missing object is ``FileNotFoundError`` (or None from ``head``), a
refusal of the key (a 403 on an operation) ``StorageRefused``, and anything else
``StorageUnavailable``, naming neither the endpoint nor the keys.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import (
    BaseError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from obstore.store import S3Store

from ..errors import StorageError, StorageRefused, StorageUnavailable
from . import ObjectInfo, checked_key

TIMEOUT = "10s"  # one request to the store, connecting included
RETRIES = 3
RETRY_WITHIN = timedelta(seconds=10)  # no retry starts later than this after the first try
DELETE_BATCH = 1000  # keys in one DeleteObjects request, S3's limit


@contextlib.contextmanager
def _guard(what: str) -> Iterator[None]:
    try:
        yield
    except NotFoundError as exc:
        raise FileNotFoundError(what) from exc
    except (PermissionDeniedError, UnauthenticatedError) as exc:
        raise StorageRefused(
            f"the object store refused vfe's access key while {what} ({type(exc).__name__}): "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be right and allowed to read, "
            "write, list and delete under STORAGE_URL"
        ) from exc
    except BaseError as exc:
        raise StorageUnavailable(
            f"the object store failed while {what} ({type(exc).__name__}); try again shortly"
        ) from exc


class S3Storage:
    """A ``Storage`` in ``s3://bucket/prefix`` at ``endpoint`` (None: AWS)."""

    backend = "s3"

    def __init__(
        self,
        url: str,
        *,
        endpoint: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        region: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError("an S3 storage URL is s3://bucket or s3://bucket/prefix")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        options: dict[str, str | bool] = {"timeout": TIMEOUT, "connect_timeout": TIMEOUT}
        if endpoint and endpoint.startswith("http://"):
            options["allow_http"] = True
        self.store = S3Store(
            self.bucket,
            prefix=self.prefix or None,
            endpoint=endpoint or None,
            access_key_id=access_key_id or None,
            secret_access_key=secret_access_key or None,
            region=region or "us-east-1",
            virtual_hosted_style_request=False if endpoint else None,
            client_options=options,  # type: ignore[arg-type]  # obstore's TypedDict
            # a few retries with backoff, bounded: a store that is away is a prompt 503
            retry_config={"max_retries": RETRIES, "retry_timeout": RETRY_WITHIN},
        )

    async def put_file(self, key: str, source: Path, *, consume: bool = False) -> None:
        checked_key(key)
        if not await asyncio.to_thread(source.is_file):
            raise FileNotFoundError(str(source))
        with _guard("storing a file"):
            await obstore.put_async(self.store, key, source)
        if consume:
            await asyncio.to_thread(source.unlink, True)

    async def put_bytes(self, key: str, data: bytes) -> None:
        with _guard("storing a file"):
            await obstore.put_async(self.store, checked_key(key), bytes(data))

    async def get_file(self, key: str, dest: Path) -> None:
        out = await asyncio.to_thread(dest.open, "wb")
        try:
            async for chunk in self.read(key):
                await asyncio.to_thread(out.write, chunk)
        finally:
            out.close()

    async def read(self, key: str) -> AsyncIterator[bytes]:
        with _guard("reading a file"):
            result = await obstore.get_async(self.store, checked_key(key))
            async for chunk in result.stream():
                yield bytes(chunk)

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            with _guard("looking at a file"):
                meta = await obstore.head_async(self.store, checked_key(key))
        except FileNotFoundError:
            return None
        return ObjectInfo(key, int(meta["size"]), meta.get("e_tag"))

    async def delete(self, *keys: str) -> None:
        checked = [checked_key(key) for key in keys]
        for start in range(0, len(checked), DELETE_BATCH):
            with contextlib.suppress(FileNotFoundError), _guard("deleting files"):
                await obstore.delete_async(self.store, checked[start : start + DELETE_BATCH])

    def local_path(self, key: str) -> Path | None:
        return None

    async def keys(self, prefix: str = "") -> AsyncIterator[str]:
        with _guard("listing files"):
            async for batch in obstore.list(self.store, prefix=prefix or None):
                for meta in batch:
                    yield str(meta["path"])

    async def presign(self, key: str, expires: timedelta) -> str | None:
        with _guard("signing a URL"):
            return await obstore.sign_async(self.store, "GET", checked_key(key), expires)

    async def ping(self) -> bool:
        try:
            async for _ in self.keys("vfe-ping/"):
                break
        except StorageError:  # away, or refusing the key
            return False
        return True
