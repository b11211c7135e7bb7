"""Job spec, job, frame and the status enum.

``JobSpec`` is the validated request (pydantic, so the same model feeds OpenAPI).
``Job`` and ``Frame`` are the stored records; ``views.py`` holds what clients see of them.
The image formats and scene defaults live in ``options.py`` (no pydantic), so the command
line can show them without importing pydantic; they are re-exported here.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .options import DEFAULT_MIN_GAP as DEFAULT_MIN_GAP
from .options import DEFAULT_SCENE_THRESHOLD as DEFAULT_SCENE_THRESHOLD
from .options import DEFAULT_STORYBOARD_WIDTH
from .options import ImageFormat as ImageFormat
from .quality import (
    DEFAULT_BLACK_THRESHOLD,
    DEFAULT_BLUR_THRESHOLD,
    DEFAULT_DEDUPE_DISTANCE,
    DEFAULT_FLAT_THRESHOLD,
    DEFAULT_SEARCH,
    Defect,
    Metrics,
)

MIN_INTERVAL = 0.001  # a millisecond: finer than any real frame spacing
NOT_SHAPING = ("reuse", "webhook_url")  # job fields that do not change its frames


class Mode(StrEnum):
    """How a job's target times are chosen."""

    INTERVAL = "interval"
    FPS = "fps"
    COUNT = "count"
    TIMESTAMPS = "timestamps"
    KEYFRAMES = "keyframes"
    SCENE = "scene"
    BEST = "best"


class JobStatus(StrEnum):
    """Job lifecycle: pending -> processing -> completed | failed | cancelled."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class SourceType(StrEnum):
    PATH = "path"
    UPLOAD = "upload"
    URL = "url"

    @property
    def owned(self) -> bool:
        """True when the file is the service's own copy, removed with its job."""
        return self is not SourceType.PATH


# The sampling fields that belong to some modes only (scene's are checked on their own).
MODE_FIELDS = {"interval": (Mode.INTERVAL,), "fps": (Mode.FPS,), "count": (Mode.COUNT, Mode.BEST),
               "timestamps": (Mode.TIMESTAMPS,)}  # fmt: skip


class JobSpec(BaseModel):
    """What a client asks for: a video and a sampling rule."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    video_source: str = Field(
        min_length=1,
        max_length=4096,
        description="Path of a video inside VIDEOS_BASE_PATH (relative to it, or absolute), "
        "or an http(s) URL the service downloads.",
    )
    mode: Mode | None = Field(
        default=None,
        description="interval, fps, count, timestamps, keyframes, scene or best (the best "
        "frame of each of `count` equal stretches); by default the one whose parameter is "
        "given, else interval.",
    )
    interval: float = Field(
        default=5.0,
        ge=MIN_INTERVAL,
        le=86400,
        allow_inf_nan=False,
        description="interval mode: seconds between sampled frames (0.001 to 86400).",
    )
    fps: float | None = Field(
        default=None, gt=0, le=1000, allow_inf_nan=False, description="fps mode: frames a second."
    )
    count: int | None = Field(
        default=None, ge=1, le=100_000,
        description="count mode: N frames evenly spaced; best mode: N stretches (default 1, "
        "a poster frame).",
    )  # fmt: skip
    timestamps: list[float] | None = Field(
        default=None,
        min_length=1,
        max_length=10_000,
        description="timestamps mode: seconds (a list, or comma-separated in a form).",
    )
    scene_threshold: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        allow_inf_nan=False,
        description="scene mode: how different a frame must be from the one before it "
        f"(FFmpeg's scene score, 0-1; default {DEFAULT_SCENE_THRESHOLD}).",
    )
    min_gap: float | None = Field(
        default=None,
        ge=0,
        le=86400,
        allow_inf_nan=False,
        description=f"scene mode: at least this many seconds between frames "
        f"(default {DEFAULT_MIN_GAP}).",
    )
    start: float = Field(default=0.0, ge=0, allow_inf_nan=False, description="window start, s")
    end: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="window end")
    max_frames: int | None = Field(default=None, ge=1, le=1_000_000, description="at most N")
    format: ImageFormat = Field(default=ImageFormat.JPG, description="jpg, png or webp")
    quality: int | None = Field(default=None, ge=1, le=100, description="1-100 (jpg, webp)")
    width: int | None = Field(default=None, ge=1, le=16384, description="fit inside, px")
    height: int | None = Field(default=None, ge=1, le=16384, description="fit inside, px")
    tonemap: Literal["auto", "off"] = Field(
        default="auto",
        description="auto: an HDR video (PQ or HLG) is tone-mapped to SDR BT.709, as an SDR "
        "player shows it; off: its frames keep the raw signal (dim and grey).",
    )
    reject: list[Defect] | None = Field(
        default=None,
        max_length=len(Defect),
        description="Refuse frames that are black, blurry or flat (a list, or comma-separated "
        "in a form): for each target whose frame fails, the first frame that passes within "
        "`search` s after it (and before the next target) is taken instead, flagged "
        "`substituted`; a target with none gets no frame (plan.rejected_targets).",
    )
    black_threshold: float = Field(
        default=DEFAULT_BLACK_THRESHOLD, ge=0, le=1, allow_inf_nan=False,
        description="black: at least this share of the pixels is near-black (level < 20 of "
        "255).",
    )  # fmt: skip
    blur_threshold: float = Field(
        default=DEFAULT_BLUR_THRESHOLD, ge=0, le=1_000_000, allow_inf_nan=False,
        description="blurry: sharpness (a frame's `sharpness`) below this.",
    )  # fmt: skip
    flat_threshold: float = Field(
        default=DEFAULT_FLAT_THRESHOLD, ge=0, le=1, allow_inf_nan=False,
        description="flat: contrast (a frame's `contrast`) below this.",
    )  # fmt: skip
    search: float = Field(
        default=DEFAULT_SEARCH, gt=0, le=3600, allow_inf_nan=False,
        description="reject: seconds after a rejected frame's target where a substitute is "
        "looked for.",
    )  # fmt: skip
    dedupe: bool = Field(
        default=False,
        description="Drop a frame whose phash lies within `dedupe_distance` bits of the last "
        "frame kept (plan.dropped_duplicates counts them).",
    )
    dedupe_distance: int = Field(
        default=DEFAULT_DEDUPE_DISTANCE, ge=0, le=64,
        description="dedupe: at most this many pHash bits apart is a near-duplicate.",
    )  # fmt: skip
    reuse: bool = Field(
        default=True,
        description="Complete at once with the frames of an earlier completed job on the "
        "same video content with the same options; false extracts afresh.",
    )
    storyboard: bool = Field(
        default=False,
        description="Also make a storyboard of the frames, for a player's hover previews: "
        "JPEG sprite sheets, a WebVTT track and a JSON manifest (GET "
        "/job/{job_id}/storyboard.vtt and .json, once the job completes).",
    )
    storyboard_width: int = Field(
        default=DEFAULT_STORYBOARD_WIDTH, ge=16, le=1024,
        description="storyboard: tile width, px (16 to 1024); the height follows the "
        "frames' aspect.",
    )  # fmt: skip
    webhook_url: str | None = Field(
        default=None,
        max_length=2048,
        description="http(s) URL that gets a signed POST of the job (as /job-status shows "
        "it) when it ends; default WEBHOOK_URL. Needs WEBHOOK_SECRET on the server.",
    )

    @field_validator("interval", "fps", "count", "scene_threshold", "min_gap", "start", "end",
                     "max_frames", "quality", "width", "height", "black_threshold",
                     "blur_threshold", "flat_threshold", "search", "dedupe_distance",
                     "storyboard_width", mode="before")  # fmt: skip
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        if isinstance(value, bool):  # JSON true would otherwise pass as 1
            raise ValueError("must be a number, not true/false")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value or None

    @field_validator("timestamps", "reject", mode="before")
    @classmethod
    def _split_timestamps(cls, value: Any) -> Any:
        if isinstance(value, str):  # query strings and forms: "1,2.5,10"
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("timestamps")
    @classmethod
    def _finite_times(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and any(not math.isfinite(t) or t < 0 for t in value):
            raise ValueError("timestamps must be finite numbers of seconds >= 0")
        return value

    @model_validator(mode="after")
    def _mode_and_parameter(self) -> JobSpec:
        given = [m for m, v in ((Mode.FPS, self.fps), (Mode.COUNT, self.count),
                                (Mode.TIMESTAMPS, self.timestamps),
                                (Mode.SCENE, self.scene_threshold)) if v is not None]  # fmt: skip
        if self.mode is None:
            if len(given) > 1:
                raise ValueError(
                    "give one of fps, count, timestamps and scene_threshold, or set mode"
                )
            self.mode = given[0] if given else Mode.INTERVAL
        if self.mode is Mode.BEST and self.count is None:
            self.count = 1  # the best frame of the whole window: a poster frame
        needs = {Mode.FPS: "fps", Mode.COUNT: "count", Mode.TIMESTAMPS: "timestamps"}
        if self.mode in needs and getattr(self, needs[self.mode]) is None:
            raise ValueError(f"mode {self.mode.value} needs the field {needs[self.mode]}")
        if self.reject is not None:
            self.reject = sorted(set(self.reject)) or None
        if self.mode is not Mode.SCENE and (self.scene_threshold, self.min_gap) != (None, None):
            raise ValueError("scene_threshold and min_gap apply to mode scene only")
        for name, modes in MODE_FIELDS.items():  # given, and then unused: say so
            if name in self.model_fields_set and self.mode not in modes:
                them = " and ".join(m.value for m in modes)
                raise ValueError(f"{name} applies to mode {them} only (this job is mode "
                                 f"{self.mode.value}): leave it out")  # fmt: skip
        if self.end is not None and self.end - self.start < MIN_INTERVAL:
            raise ValueError(f"end must be at least {MIN_INTERVAL:g} s after start")
        return self

    def options(self) -> dict[str, Any]:
        """Everything but the source, as stored with the job."""
        # no storyboard: its fields stay out, so other jobs' options and reuse keys are as
        # they were before storyboards
        unused = set() if self.storyboard else {"storyboard", "storyboard_width"}
        return self.model_dump(mode="json", exclude={"video_source", *unused}, exclude_none=True)

    def reuse_key(self, source_identity: str) -> str:
        """What a job's frames depend on, as one digest: the source's identity and every
        sampling and output option (not ``reuse`` itself). Jobs with equal keys make the
        same frames."""
        options = {k: v for k, v in self.options().items() if k not in NOT_SHAPING}
        text = json.dumps([source_identity, options], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


# The fields that take a list: a form or query string may give them more than once.
LIST_FIELDS = frozenset(
    name for name, info in JobSpec.model_fields.items()
    if any(get_origin(t) is list for t in (info.annotation, *get_args(info.annotation)))
)  # fmt: skip


@dataclass
class Job:
    """A stored job. ``source_path`` never leaves the server: an absolute path (a video
    under VIDEOS_BASE_PATH, or an upload kept before vfe stored sources) or, for uploads
    and downloads, the key of the source in storage (``sources/<sha256>``)."""

    id: str
    status: JobStatus
    video_source: str
    source_type: SourceType
    source_path: str
    interval: float
    created_at: float
    updated_at: float
    total_frames: int = 0
    processed_frames: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    error_message: str | None = None
    duration: float | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    attempts: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] | None = None
    progress: float | None = None  # scene mode: share of the planned decoding done, 0-1
    reuse_key: str | None = None  # JobSpec.reuse_key: equal keys, equal frames


class DeliveryStatus(StrEnum):
    """A webhook delivery: pending (being tried) -> delivered | failed | gone (410)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    GONE = "gone"


@dataclass(frozen=True)
class Delivery:
    """The webhook of a job that ended, kept until delivered (the outbox row). ``job`` is
    the job as it ended, so a job deleted meanwhile is still announced; ``attempts``
    counts the attempts claimed, the current one included."""

    job_id: str
    url: str
    job: Job
    status: DeliveryStatus
    attempts: int
    due_at: float
    created_at: float
    last_error: str | None = None
    delivered_at: float | None = None


@dataclass(frozen=True)
class Frame:
    """One extracted frame: the file is complete before this record exists."""

    job_id: str
    index: int
    timestamp: float
    target_time: float
    filename: str
    size_bytes: int
    checksum: str
    width: int | None = None
    height: int | None = None
    created_at: float = field(default=0.0)
    metrics: Metrics | None = None  # None: made by a version before metrics
    substituted: bool = False  # taken for a rejected frame, after its target
    stretch: int | None = None  # best mode: the stretch it is the best of
    score: float | None = None  # best mode: its score

    def quality(self) -> dict[str, Any] | None:
        """The metrics and how the frame was chosen, as stored (one JSON column)."""
        if self.metrics is None:
            return None
        data = self.metrics.as_dict()
        if self.substituted:
            data["substituted"] = True
        if self.stretch is not None:
            data.update(stretch=self.stretch, score=self.score)
        return data

    @staticmethod
    def quality_fields(data: dict[str, Any] | None) -> dict[str, Any]:
        """``Frame`` fields from what ``quality`` stored."""
        if not data:
            return {}
        return {
            "metrics": Metrics.from_dict(data),
            "substituted": bool(data.get("substituted")),
            "stretch": data.get("stretch"),
            "score": data.get("score"),
        }


def percent(done: int, total: int, status: JobStatus, progress: float | None = None) -> float:
    """Frames done of frames planned; for scene jobs, whose frames are not known ahead,
    the share of the planned decoding done (``progress``)."""
    if status is JobStatus.COMPLETED:
        return 100.0
    if progress is not None:
        return round(min(100.0, 100.0 * progress), 1)
    if total <= 0:
        return 0.0
    return round(min(100.0, 100.0 * done / total), 1)
