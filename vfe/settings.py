"""Every setting vfe reads, declared once: the fields of ``Settings``.

Each field gives a setting's name (the environment variable is the name upper-cased), its
type, its default, its inclusive bounds (``ge``/``le``) and its help (``description``).
Everything else is derived from the fields: the read-only table ``SETTINGS`` that the
README check uses, the conversion of each raw string, the bounds and the error messages.

Settings are read once from the environment (``Settings.from_env``), validated, and then
passed around as an immutable object. No other module reads a setting of the service
from ``os.environ``; the command-line client reads its own ``VFE_SERVER`` and
``VFE_API_KEY`` (``cli.py``), and ``quality.py`` defaults ``OPENBLAS_NUM_THREADS`` for
numpy's C library. A bad value raises ``SettingsError`` naming the variable, so start-up
fails with a clear message.

The loader is our own rather than pydantic's parsing, because environment strings need
stricter rules than pydantic's lax mode (``setting_rows.parse`` says which); pydantic
then validates the result and any overrides against the same fields.

Relative paths are resolved against the working directory when ``from_env`` reads them
(``Settings()`` alone keeps the relative defaults); ``ensure_dirs`` creates every runtime
folder (parents included) whatever that directory is.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    Field,
    InstanceOf,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .networks import AddressPolicy
from .setting_rows import Setting, one_of, parse, row_of
from .setting_rows import SettingsError as SettingsError  # re-exported: callers catch it here

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
FrameUrls = Literal["stream", "presigned"]


class Settings(BaseModel, frozen=True, extra="forbid"):
    """The validated settings of one vfe process; read them with ``from_env``."""

    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port the HTTP server listens on.")
    redis_host: str = Field("localhost", description="Redis host for the cache.")
    redis_port: int = Field(6379, ge=1, le=65535, description="Redis port.")
    redis_db: int = Field(0, ge=0, le=1024, description="Redis database number.")
    redis_retry_seconds: float = Field(
        5.0,
        ge=0.1,
        le=3600,
        description="While Redis is down, how often (seconds) to try it again; the memory "
        "cache serves meanwhile.",
    )
    database_path: Path = Field(
        Path("runtime/db/metadata.db"),
        description="SQLite file for job metadata (when DATABASE_URL is not set).",
    )
    database_url: SecretStr = Field(
        SecretStr(""),
        description="`postgresql://user:password@host:port/db`: keep job metadata and the "
        "job queue in PostgreSQL (the scaled-out layout: `vfe serve --api-only` replicas "
        "and `vfe worker`s); empty: SQLite at DATABASE_PATH.",
    )
    database_pool_size: int = Field(
        10, ge=1, le=200, description="PostgreSQL: most connections one process opens."
    )
    stalled_after_seconds: float = Field(
        30.0,
        ge=2,
        le=3600,
        description="PostgreSQL: within this long of a worker's death (a SIGKILL, a lost "
        "machine), its jobs run again on another worker (workers beat every sixth of it and "
        "are taken for dead after two thirds).",
    )
    storage_url: str = Field(
        "",
        description="Where frames, uploaded videos and downloaded videos are kept: "
        "`s3://bucket/prefix` (an S3-compatible bucket; then FRAMES_BASE_PATH is only each "
        "worker's local scratch) or a folder; empty: frames in FRAMES_BASE_PATH and videos "
        "in UPLOADS_PATH.",
    )
    s3_endpoint_url: str = Field(
        "",
        description="S3: the endpoint, e.g. `http://127.0.0.1:8333` for SeaweedFS or MinIO; "
        "empty: AWS.",
    )
    aws_access_key_id: str = Field("", description="S3: the access key id.")
    aws_secret_access_key: SecretStr = Field(SecretStr(""), description="S3: the secret key.")
    aws_region: str = Field("us-east-1", description="S3: the bucket's region.")
    frame_urls: FrameUrls = Field(
        "stream",
        description="`stream`: frame images are served through the API; `presigned` (S3 "
        "only): a frame request is redirected (307) to a presigned URL of the bucket, valid "
        "for an hour, so clients must reach the bucket's endpoint.",
    )
    frames_base_path: Path = Field(
        Path("runtime/frames"),
        description="Folder where frames are written (with STORAGE_URL set: the scratch "
        "folder FFmpeg writes into).",
    )
    videos_base_path: Path = Field(
        Path("runtime/videos"), description="The only folder a local `video_source` path may name."
    )
    uploads_path: Path = Field(
        Path("runtime/uploads"), description="Folder where uploaded videos are kept."
    )
    log_path: Path = Field(
        Path("runtime/logs/app.log"), description="JSON log file (also written to stdout)."
    )
    log_level: LogLevel = Field("INFO", description=f"{one_of(get_args(LogLevel))}.")
    max_concurrent_jobs: int = Field(
        5, ge=1, le=256, description="Jobs that extract at the same time."
    )
    max_queue_size: int = Field(
        1000, ge=1, description="Jobs that may wait; beyond it submit is 503."
    )
    job_timeout_seconds: float = Field(3600.0, ge=1, description="A job running longer fails.")
    shutdown_grace_seconds: float = Field(
        15.0,
        ge=0,
        le=3600,
        description="On SIGTERM, how long running jobs may go on to finish; then they stop "
        "and stay pending for the next start.",
    )
    min_free_disk_mb: float = Field(
        200.0,
        ge=0,
        description="Below this much free disk under FRAMES_BASE_PATH, new jobs are refused "
        "(507) and running jobs fail with a message.",
    )
    retention_hours: float = Field(
        0.0,
        ge=0,
        description="Finished jobs older than this are deleted with their files; 0 keeps "
        "them forever.",
    )
    cache_ttl: int = Field(3600, ge=1, description="Seconds a cached entry lives.")
    max_cache_size_mb: float = Field(
        100.0, ge=0.01, description="Bound of the in-memory cache (LRU)."
    )
    max_upload_mb: float = Field(2048.0, ge=0.001, description="Largest upload accepted, in MiB.")
    api_keys: SecretStr = Field(
        SecretStr(""),
        description="Comma-separated API keys; when set, every route but /health, /health/*, "
        "/docs, /openapi.json and the dashboard's files needs one (Authorization: Bearer or "
        "X-API-Key).",
    )
    allow_url_sources: bool = Field(
        True,
        description="Accept http(s) URLs as video_source (downloaded by the service before "
        "the job is accepted).",
    )
    allow_private_urls: InstanceOf[AddressPolicy] = Field(
        AddressPolicy(),
        description="URLs to loopback, private, link-local and metadata addresses are "
        "refused; `true` allows them all, or list the networks to allow "
        "(`10.1.0.0/16,192.168.5.7`).",
    )
    url_timeout_seconds: float = Field(
        300.0, ge=1, le=86400, description="Time limit of one URL download."
    )
    webhook_url: str = Field(
        "",
        description="Default `webhook_url` of every job that names none: an http(s) URL "
        "that gets a signed POST of the job when it ends. Needs WEBHOOK_SECRET.",
    )
    webhook_secret: SecretStr = Field(
        SecretStr(""),
        description="Key of the webhooks' Standard Webhooks signature (HMAC-SHA256): "
        "`whsec_` and base64 (e.g. `whsec_$(openssl rand -base64 32)`), as receivers give "
        "it to their verifying library; empty: jobs with a webhook are refused.",
    )
    webhook_max_attempts: int = Field(
        8,
        ge=1,
        le=100,
        description="Attempts to deliver a webhook before it is given up as failed; the "
        "default 8 spans about 22 hours.",
    )
    webhook_retry_seconds: float = Field(
        5.0,
        ge=0.01,
        le=3600,
        description="Wait before a webhook's first retry; each later wait is 6 times the "
        "one before (at most 10 hours), each with ±20% jitter.",
    )
    max_download_mb: float = Field(2048.0, ge=0.001, description="Largest URL download, in MiB.")
    max_body_kb: float = Field(
        64.0, ge=1, le=65536, description="Largest JSON body of a request, in KiB."
    )
    max_frames_per_job: int = Field(100000, ge=1, description="Most frames one job may extract.")
    max_video_duration_seconds: float = Field(
        86400.0,
        ge=1,
        description="Longest video a job may read (its whole duration, not just the window).",
    )
    max_frame_pixels: int = Field(
        35389440,
        ge=1,
        description="Largest picture (width x height) a video may have; the default is 8192x4320.",
    )
    max_frames_per_video: int = Field(
        500_000,
        ge=1,
        description="Most frames a video may have (4.6 hours at 30 fps, 2.3 at 60); reading "
        "its index stops past it and the job is refused.",
    )
    max_concurrent_probes: int = Field(
        2,
        ge=1,
        le=64,
        description="Videos read (ffprobe) at the same time while jobs are submitted; more "
        "wait their turn.",
    )
    sse_heartbeat_seconds: float = Field(
        15.0, ge=0.1, le=600, description="Interval of comment heartbeats on idle event streams."
    )

    @field_validator("storage_url")
    @classmethod
    def _storage_url(cls, value: str) -> str:
        if value.startswith("s3://"):
            if not value.removeprefix("s3://").strip("/"):
                raise ValueError("an S3 storage URL names a bucket: s3://bucket/prefix")
        elif "://" in value:
            raise ValueError("must be s3://bucket/prefix or a folder")
        return value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL, or empty for AWS")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _presigned_needs_s3(self) -> Settings:
        if self.frame_urls == "presigned" and not self.storage_url.startswith("s3://"):
            raise ValueError(
                "FRAME_URLS=presigned needs STORAGE_URL=s3://…; a folder has no signed URLs"
            )
        return self

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str) -> str:
        if not value:
            return value
        from .errors import BadRequest
        from .fetch import check_url  # the checks a job's own webhook_url gets

        try:
            return check_url(value)
        except BadRequest as exc:
            raise ValueError(f"must be an http(s) URL, or empty: {exc.detail}") from None

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value().removeprefix("whsec_")
        if raw:
            try:
                key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
            except ValueError:
                key = b""
            if len(key) < 16:
                raise ValueError(
                    "must be whsec_ and base64 of at least 16 bytes, e.g. "
                    "whsec_$(openssl rand -base64 32)"
                )
        return value

    @model_validator(mode="after")
    def _webhook_needs_secret(self) -> Settings:
        if self.webhook_url and not self.webhook_secret.get_secret_value():
            raise ValueError(
                "WEBHOOK_URL is set but WEBHOOK_SECRET is empty: webhooks are signed; set "
                "WEBHOOK_SECRET (whsec_ and base64, e.g. whsec_$(openssl rand -base64 32))"
            )
        return self

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw and not raw.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL, or empty for SQLite")
        return value

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every setting from ``env`` (default: the process environment).

        ``overrides`` (typed values, by field name) win over the environment; the command
        line and tests use them. They are validated against the same fields.
        """
        source = os.environ if env is None else env
        values = {s.name.lower(): parse(s, source.get(s.name, s.default)) for s in SETTINGS}
        values.update(overrides)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            lines = (
                "".join(f"{'.'.join(map(str, e['loc'])).upper()}: " for _ in e["loc"][:1])
                + e["msg"].removeprefix("Value error, ")
                for e in errors
            )
            raise SettingsError("; ".join(lines)) from None

    @property
    def s3(self) -> bool:
        """Whether frames and videos are kept in an S3 bucket."""
        return self.storage_url.startswith("s3://")

    @property
    def postgres_url(self) -> str | None:
        """The PostgreSQL URL of the scaled-out layout; None: the embedded SQLite file."""
        return self.database_url.get_secret_value() or None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_download_bytes(self) -> int:
        return int(self.max_download_mb * 1024 * 1024)

    @property
    def min_free_disk_bytes(self) -> int:
        return int(self.min_free_disk_mb * 1024 * 1024)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_kb * 1024)

    @property
    def keys(self) -> tuple[str, ...]:
        """The API keys (none: no access control). ``api_keys`` is a ``SecretStr`` so the
        keys never reach a log line, a repr or a traceback."""
        raw = self.api_keys.get_secret_value()
        return tuple(k.strip() for k in raw.split(",") if k.strip())

    @property
    def max_cache_bytes(self) -> int:
        return int(self.max_cache_size_mb * 1024 * 1024)

    def runtime_dirs(self) -> list[Path]:
        return [
            self.database_path.parent,
            self.frames_base_path,
            self.videos_base_path,
            self.uploads_path,
            self.log_path.parent,
        ]

    def ensure_dirs(self) -> None:
        """Create every runtime folder; a folder that cannot be made stops start-up."""
        for folder in self.runtime_dirs():
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SettingsError(f"cannot create folder {folder}: {exc.strerror}") from exc


SETTINGS: tuple[Setting, ...] = tuple(
    row_of(name, info) for name, info in Settings.model_fields.items()
)


def setting_names() -> list[str]:
    return [s.name for s in SETTINGS]
