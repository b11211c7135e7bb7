"""Every setting vfe reads, in one table: name, default, type and help.

Settings are read once from the environment (``Settings.from_env``), validated, and then
passed around as an immutable object. No other module reads ``os.environ``. A bad value
raises ``SettingsError`` naming the variable, so start-up fails with a clear message.

Relative paths are resolved against the working directory at start-up; ``ensure_dirs``
creates every runtime folder (parents included) whatever that directory is.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .fetch import AddressPolicy


class SettingsError(ValueError):
    """A setting has a value vfe cannot use; the message names the variable."""


@dataclass(frozen=True)
class Setting:
    """One row of the settings table."""

    name: str
    default: str
    kind: str  # "str", "int", "float", "path", "bool", "secret" (may be empty), "networks"
    help: str
    minimum: float | None = None
    maximum: float | None = None


SETTINGS: tuple[Setting, ...] = (
    Setting("HOST", "127.0.0.1", "str", "Address the HTTP server binds to."),
    Setting("PORT", "8000", "int", "Port the HTTP server listens on.", 1, 65535),
    Setting("REDIS_HOST", "localhost", "str", "Redis host for the cache."),
    Setting("REDIS_PORT", "6379", "int", "Redis port.", 1, 65535),
    Setting("REDIS_DB", "0", "int", "Redis database number.", 0, 1024),
    Setting(
        "REDIS_RETRY_SECONDS",
        "5",
        "float",
        "While Redis is down, how often (seconds) to try it again; the memory cache serves "
        "meanwhile.",
        0.1,
        3600,
    ),
    Setting("DATABASE_PATH", "runtime/db/metadata.db", "path", "SQLite file for job metadata."),
    Setting("FRAMES_BASE_PATH", "runtime/frames", "path", "Folder where frames are written."),
    Setting(
        "VIDEOS_BASE_PATH",
        "runtime/videos",
        "path",
        "The only folder a local `video_source` path may name.",
    ),
    Setting("UPLOADS_PATH", "runtime/uploads", "path", "Folder where uploaded videos are kept."),
    Setting("LOG_PATH", "runtime/logs/app.log", "path", "JSON log file (also written to stdout)."),
    Setting("LOG_LEVEL", "INFO", "str", "DEBUG, INFO, WARNING or ERROR."),
    Setting("MAX_CONCURRENT_JOBS", "5", "int", "Jobs that extract at the same time.", 1, 256),
    Setting("MAX_QUEUE_SIZE", "1000", "int", "Jobs that may wait; beyond it submit is 503.", 1),
    Setting("JOB_TIMEOUT_SECONDS", "3600", "float", "A job running longer fails.", 1),
    Setting(
        "SHUTDOWN_GRACE_SECONDS",
        "15",
        "float",
        "On SIGTERM, how long running jobs may go on to finish; then they stop and stay "
        "pending for the next start.",
        0,
        3600,
    ),
    Setting(
        "MIN_FREE_DISK_MB",
        "200",
        "float",
        "Below this much free disk under FRAMES_BASE_PATH, new jobs are refused (507) and "
        "running jobs fail with a message.",
        0,
    ),
    Setting(
        "RETENTION_HOURS",
        "0",
        "float",
        "Finished jobs older than this are deleted with their files; 0 keeps them forever.",
        0,
    ),
    Setting("CACHE_TTL", "3600", "int", "Seconds a cached entry lives.", 1),
    Setting("MAX_CACHE_SIZE_MB", "100", "float", "Bound of the in-memory cache (LRU).", 0.01),
    Setting("MAX_UPLOAD_MB", "2048", "float", "Largest upload accepted, in MiB.", 0.001),
    Setting(
        "API_KEYS",
        "",
        "secret",
        "Comma-separated API keys; when set, every route but /health, /health/*, /docs, "
        "/openapi.json and the dashboard's files needs one (Authorization: Bearer or X-API-Key).",
    ),
    Setting(
        "ALLOW_URL_SOURCES",
        "true",
        "bool",
        "Accept http(s) URLs as video_source (downloaded by the service before the job "
        "is accepted).",
    ),
    Setting(
        "ALLOW_PRIVATE_URLS",
        "false",
        "networks",
        "URLs to loopback, private, link-local and metadata addresses are refused; `true` "
        "allows them all, or list the networks to allow (`10.1.0.0/16,192.168.5.7`).",
    ),
    Setting("URL_TIMEOUT_SECONDS", "300", "float", "Time limit of one URL download.", 1, 86400),
    Setting("MAX_DOWNLOAD_MB", "2048", "float", "Largest URL download, in MiB.", 0.001),
    Setting("MAX_BODY_KB", "64", "float", "Largest JSON body of a request, in KiB.", 1, 65536),
    Setting("MAX_FRAMES_PER_JOB", "100000", "int", "Most frames one job may extract.", 1),
    Setting(
        "MAX_VIDEO_DURATION_SECONDS",
        "86400",
        "float",
        "Longest video a job may read (its whole duration, not just the window).",
        1,
    ),
    Setting(
        "MAX_FRAME_PIXELS",
        "35389440",
        "int",
        "Largest picture (width x height) a video may have; the default is 8192x4320.",
        1,
    ),
    Setting(
        "SSE_HEARTBEAT_SECONDS",
        "15",
        "float",
        "Interval of comment heartbeats on idle event streams.",
        0.1,
        600,
    ),
)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse(setting: Setting, raw: str) -> Any:
    name = setting.name
    value: Any
    if setting.kind == "str":
        value = raw.strip()
        if not value:
            raise SettingsError(f"{name} must not be empty")
        return value
    if setting.kind == "secret":
        return raw.strip()
    if setting.kind == "networks":
        try:
            return AddressPolicy.parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{name}: {exc}") from None
    if setting.kind == "path":
        if not raw.strip():
            raise SettingsError(f"{name} must not be empty")
        return Path(raw.strip()).expanduser().resolve()
    if setting.kind == "bool":
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise SettingsError(f"{name} must be true or false, got {raw!r}")
    convert: Callable[[str], Any] = int if setting.kind == "int" else float
    try:
        value = convert(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be a number ({setting.kind}), got {raw!r}") from None
    if not math.isfinite(value):
        raise SettingsError(f"{name} must be a finite number, got {raw!r}")
    if setting.minimum is not None and value < setting.minimum:
        raise SettingsError(f"{name} must be at least {setting.minimum:g}, got {raw!r}")
    if setting.maximum is not None and value > setting.maximum:
        raise SettingsError(f"{name} must be at most {setting.maximum:g}, got {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """The validated settings of one vfe process."""

    host: str
    port: int
    redis_host: str
    redis_port: int
    redis_db: int
    redis_retry_seconds: float
    database_path: Path
    frames_base_path: Path
    videos_base_path: Path
    uploads_path: Path
    log_path: Path
    log_level: str
    max_concurrent_jobs: int
    max_queue_size: int
    job_timeout_seconds: float
    shutdown_grace_seconds: float
    min_free_disk_mb: float
    retention_hours: float
    cache_ttl: int
    max_cache_size_mb: float
    max_upload_mb: float
    api_keys: str
    allow_url_sources: bool
    allow_private_urls: AddressPolicy
    url_timeout_seconds: float
    max_download_mb: float
    max_body_kb: float
    max_frames_per_job: int
    max_video_duration_seconds: float
    max_frame_pixels: int
    sse_heartbeat_seconds: float

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every setting from ``env`` (default: the process environment).

        ``overrides`` (by field name) win over the environment; tests use them.
        """
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = source.get(setting.name, setting.default)
            values[setting.name.lower()] = _parse(setting, raw)
        level = str(values["log_level"]).upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise SettingsError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
        values["log_level"] = level
        values.update(overrides)
        return cls(**values)

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
        """The API keys (none: no access control)."""
        return tuple(k.strip() for k in self.api_keys.split(",") if k.strip())

    def __repr__(self) -> str:  # API keys never reach a log line or a traceback
        shown = ", ".join(
            f"{f.name}={'<hidden>' if f.name == 'api_keys' else repr(getattr(self, f.name))}"
            for f in fields(self)
        )
        return f"Settings({shown})"

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


def setting_names() -> list[str]:
    return [s.name for s in SETTINGS]


assert {f.name for f in fields(Settings)} == {s.name.lower() for s in SETTINGS}
