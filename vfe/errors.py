"""One exception tree for vfe; every error a client can see is one of these.

    VfeError (500)
    ├── BadRequest (400)          bad video_source, bad multipart body
    ├── NotFound (404)            unknown job, frame or route
    ├── Conflict (409)            Idempotency-Key reused with another request
    ├── PayloadTooLarge (413)     upload over MAX_UPLOAD_MB
    ├── ValidationFailed (422)    fields that fail validation; carries [{loc, msg, type}]
    ├── Unavailable (503)         queue full, service shutting down
    ├── InsufficientStorage (507) free disk under MIN_FREE_DISK_MB
    ├── StoreError (500)          the database failed (translated inside store/)
    │   └── StoreUnavailable (503) the database cannot be reached (PostgreSQL down)
    ├── StorageError (500)        file storage failed (translated inside storage/)
    │   └── StorageUnavailable (503) the object store cannot be reached or refuses us
    └── ExtractionError (500)     FFmpeg/ffprobe failed; its message is shown on the job

The single handler in ``app.py`` renders each as ``{"detail": ...}`` with its status.
Messages are written for the client: they never contain server paths, argv or tracebacks.
"""

from __future__ import annotations

from typing import Any


class VfeError(Exception):
    """Base of every vfe error; ``status`` is the HTTP status it maps to."""

    status = 500

    def __init__(self, detail: Any = "internal error", *, headers: dict[str, str] | None = None):
        super().__init__(detail if isinstance(detail, str) else repr(detail))
        self.detail = detail
        self.headers = headers or {}


class BadRequest(VfeError):
    """The request is well-formed but asks for something vfe will not do."""

    status = 400


class NotFound(VfeError):
    """No such job, frame or route."""

    status = 404


class Conflict(VfeError):
    """The request contradicts one made before (an Idempotency-Key reused)."""

    status = 409


class PayloadTooLarge(VfeError):
    """The request body is over a configured size limit."""

    status = 413


class ValidationFailed(VfeError):
    """Fields failed validation; ``detail`` is a list of ``{loc, msg, type}``."""

    status = 422

    @classmethod
    def one(cls, loc: list[str], msg: str, type: str = "value_error") -> ValidationFailed:
        """The error of a single field at ``loc`` (e.g. ``["query", "limit"]``)."""
        return cls([{"loc": loc, "msg": msg, "type": type}])


class Unavailable(VfeError):
    """The service cannot take this request now (queue full, shutting down)."""

    status = 503


class InsufficientStorage(VfeError):
    """Too little free disk to take a job."""

    status = 507


class StoreError(VfeError):
    """The database failed; raised from inside ``store/`` only."""

    status = 500


class StoreUnavailable(StoreError):
    """The database cannot be reached now (a PostgreSQL restart, a network cut); the
    request may be tried again shortly."""

    status = 503


class StorageError(VfeError):
    """Storing or reading a file failed; raised from inside ``storage/`` only."""

    status = 500


class StorageUnavailable(StorageError):
    """The object store cannot be reached (or refuses our credentials) now."""

    status = 503


class StorageRefused(StorageError):
    """The object store answers but refuses vfe's credentials for an operation (HTTP
    403): a setting to fix, not an outage to wait out."""

    status = 500


class ExtractionError(VfeError):
    """FFmpeg or ffprobe could not do the job; the message is safe to show on the job."""

    status = 500
