"""``vfe extract VIDEO ... --out DIR``: one extraction with the service's engine and no
server, database or cache. It prints its plan, shows a progress bar (tqdm, imported only
then), and writes the frames and a ``frames.json`` manifest to DIR.

``vfe.cli`` imports this module only for ``extract``; it imports at its top only what
parsing needs, and the engine and pydantic when it runs. ffprobe starts before pydantic
loads, so the frame index is read meanwhile.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cli import spec_fields

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from .models import Frame, JobSpec
    from .probe import FrameIndex, VideoInfo


def _spec(args: argparse.Namespace) -> JobSpec:
    """The job spec of ``vfe extract``'s arguments (validated like an API request)."""
    from .models import JobSpec

    return JobSpec.model_validate({"video_source": str(args.video), **spec_fields(args)})


async def extract(
    spec: JobSpec,
    source: Path,
    out: Path,
    quiet: bool,
    probing: Awaitable[tuple[VideoInfo, FrameIndex]] | None = None,
) -> int:
    """Run ``vfe extract`` into the folder ``out`` (made if missing); returns the exit code.
    ``probing`` is the video's probe when it was started already (else it starts here).

    Ctrl-C cancels it: FFmpeg is stopped and the work folder removed.
    """
    import asyncio
    import json
    import shutil
    import time
    import uuid

    from .extractor import Extractor
    from .frames import FolderFrames
    from .output import output_from
    from .planner import nothing_planned, sampling_from
    from .planner import plan as make_plan
    from .probe import inspect
    from .quality import choice_from
    from .views import FrameView

    info, index = await (probing or inspect(source))
    sampling = sampling_from(spec.options(), spec.interval)
    plan = await asyncio.to_thread(make_plan, sampling, info, index)
    if nothing := nothing_planned(sampling, info, None if plan.scene is not None else plan):
        print(f"vfe: bad argument {nothing[0]}: {nothing[1]}", file=sys.stderr)  # as a 422
        return 2
    try:  # only now: a refusal above writes nothing, not even the folder
        await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    except OSError as exc:
        print(f"vfe: bad argument --out: cannot make the folder {out} ({exc.strerror})",
              file=sys.stderr)  # fmt: skip
        return 2
    if not quiet:
        print(f"plan: {json.dumps(plan.describe())}", flush=True)
    job_id = str(uuid.uuid4())
    store = FolderFrames(out)  # finished frames go straight into ``out``
    manifest: list[dict[str, Any]] = []
    made: list[Frame] = []  # a storyboard's tiles
    started = time.perf_counter()
    # scene: frames found as it goes; best: a scan first. The bar shows the decoding.
    scene = plan.scene is not None or plan.strategy.value == "best"
    total, unit = (100, "%") if scene else (plan.total, "frame")
    with _progress_bar(total, unit, quiet) as bar:

        async def on_frames(batch: list[Frame]) -> None:
            made.extend(batch)
            manifest.extend(
                FrameView.of(frame).model_dump(mode="json", exclude={"job_id", "url"})
                for frame in batch
            )
            if scene:
                bar.set_postfix(frames=len(manifest))
            else:
                bar.update(len(batch))

        async def on_progress(share: float) -> None:
            bar.update(round(100 * share) - bar.n)

        try:
            options = spec.options()
            outcome = await Extractor(store).run(
                job_id, source, info, plan, on_frames, output_from(options), on_progress,
                index=index, choice=choice_from(options),
            )  # fmt: skip
            written = outcome.written
            if spec.storyboard and made:
                from . import storyboard

                end = storyboard.window_end(index.end, info.duration, plan.window_end)
                await storyboard.write_folder(store, job_id, made, out, spec.storyboard_width, end)
            if scene:
                bar.update(total - bar.n)
        finally:
            shutil.rmtree(store.scratch, ignore_errors=True)
    manifest.sort(key=lambda f: (f["timestamp"], f["index"]))
    text = json.dumps(manifest, indent=1) + "\n"
    await asyncio.to_thread((out / "frames.json").write_text, text)
    if not quiet:
        elapsed = time.perf_counter() - started
        counts = ((outcome.rejected, "targets rejected"), (outcome.dropped, "duplicates dropped"))
        left = [f"{n} {what}" for n, what in counts if n]
        extra = f" ({', '.join(left)})" if left else ""
        print(f"wrote {written} frames{extra} to {out} in {elapsed:.2f} s", flush=True)
    return 0


class _NoBar:
    """What ``--quiet`` uses in place of a tqdm bar: it shows nothing."""

    n = 0

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def update(self, n: float = 1) -> None:
        return None

    def set_postfix(self, **values: Any) -> None:
        return None


def _progress_bar(total: int, unit: str, quiet: bool) -> Any:
    """A tqdm bar on stderr (tqdm is imported only then), or ``_NoBar`` when ``quiet``."""
    if quiet:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, file=sys.stderr)


def command(args: argparse.Namespace) -> int:
    """``vfe extract``: validate, run, and turn every failure into a message and a code."""
    import asyncio

    from .errors import ExtractionError, VfeError

    try:
        source = args.video.resolve()
        if not source.is_file():
            _spec(args)  # a bad argument is told first
            raise ExtractionError(f"no such file: {args.video}")
        return asyncio.run(_probe_and_extract(args, source))
    except VfeError as exc:
        print(f"vfe: {exc.detail}", file=sys.stderr)
        return 1
    except OSError as exc:  # writing the frames (a full or read-only disk), a closed pipe
        where = f": {exc.filename}" if exc.filename else ""
        print(f"vfe: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vfe: interrupted; FFmpeg stopped", file=sys.stderr)
        return 130
    except Exception as exc:
        from pydantic import ValidationError  # loaded by now: it validated the arguments

        if not isinstance(exc, ValidationError):
            raise
        for error in exc.errors(include_url=False):
            where = ".".join(str(part) for part in error["loc"]) or "arguments"
            print(f"vfe: bad argument {where}: {error['msg']}", file=sys.stderr)
        return 2


async def _probe_and_extract(args: argparse.Namespace, source: Path) -> int:
    """Start ffprobe on ``source`` at once, then validate the arguments in a thread: the
    frame index is read while pydantic loads (about 0.2 s each), not after it."""
    import asyncio

    from .probe import inspect  # imports no pydantic

    probing = asyncio.ensure_future(inspect(source))
    try:
        spec = await asyncio.to_thread(_spec, args)
    except BaseException:
        probing.cancel()  # ffprobe is stopped
        await asyncio.gather(probing, return_exceptions=True)
        raise
    return await extract(spec, source, args.out, args.quiet, probing)
