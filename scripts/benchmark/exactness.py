"""Exactness of vfe's output: the reference frame for each target (from ffprobe's frame
times), the check of every written frame's time, and a pixel check of a few frames (PSNR
against the expected frame and its neighbours)."""

from __future__ import annotations

import bisect
import json
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .runner import FFMPEG_QUIET, BenchError, last_line, run_text
from .sampling import Sampling
from .videos import Video

EPSILON = 1e-6  # same tolerance as vfe's planner: absorbs float noise, far below a frame
PIXEL_SAMPLES = 3  # frames per vfe output whose pixels are compared (first, middle, last)


def reference_time(video: Video, target: float) -> float | None:
    """Presentation time of the first frame at or after ``target``, if there is one."""
    at = bisect.bisect_left(video.frame_times, target - EPSILON)
    return video.frame_times[at] if at < len(video.frame_times) else None


def expected_targets(video: Video, sampling: Sampling) -> list[float] | None:
    """Interval targets ``k*I`` below the duration; None when vfe decides them (count)."""
    if sampling.interval is None:
        return None
    total = max(1, math.ceil(video.duration / sampling.interval - EPSILON))
    return [round(k * sampling.interval, 6) for k in range(total)]


FRAME_FILE = re.compile(r"^(\d{6,})_(\d+\.\d{3})\.(jpg|png|webp)$")


def vfe_frames(out: Path) -> tuple[str, list[dict[str, Any]]]:
    """vfe's frames as ``{index, timestamp, target_time, filename}``, from ``frames.json``
    when present, else parsed from the file names (timestamps rounded to 1 ms)."""
    manifest = out / "frames.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        items = data.get("frames", []) if isinstance(data, dict) else data
        return "frames.json", [dict(item) for item in items]
    frames = []
    for path in sorted(out.iterdir()):
        if match := FRAME_FILE.match(path.name):
            index, stamp = int(match[1]), float(match[2])
            frames.append({"index": index, "timestamp": stamp, "filename": path.name})
    return "filenames", frames


def check_exact(video: Video, sampling: Sampling, out: Path) -> dict[str, Any]:
    """Compare every frame vfe wrote with the reference frame for its target."""
    source, frames = vfe_frames(out)
    tolerance = EPSILON if source == "frames.json" else 0.0005 + EPSILON
    targets = expected_targets(video, sampling)
    wrong: list[dict[str, Any]] = []
    exact = 0
    covered: list[float] = []
    for frame in frames:
        target = frame.get("target_time")
        if target is None and sampling.interval is not None:
            target = round(int(frame["index"]) * sampling.interval, 6)
        if target is None:
            continue  # count mode without a manifest: the target is unknown
        covered.append(float(target))
        want = reference_time(video, float(target))
        got = float(frame["timestamp"])
        on_disk = (out / str(frame.get("filename", ""))).is_file()
        if want is not None and abs(got - want) <= tolerance and on_disk:
            exact += 1
        elif len(wrong) < 10:
            wrong.append({"target": target, "got": got, "expected": want, "file": on_disk})
    expected = len(targets) if targets is not None else sampling.count or 0
    missing = [t for t in targets or [] if not any(abs(t - c) <= EPSILON for c in covered)]
    return {
        "source": source,
        "expected": expected,
        "written": len(frames),
        "verified": len(covered),
        "exact": exact,
        "missing": missing[:10],
        "missing_count": len(missing),
        "wrong": wrong,
    }


def psnr(a: Path, b: Path) -> float:
    """Average PSNR in dB between two images (``inf`` when the pixels are identical)."""
    done = subprocess.run(
        [
            *("ffmpeg", "-nostdin", "-hide_banner", "-i", str(a), "-i", str(b)),
            *("-lavfi", "[0:v][1:v]psnr", "-f", "null", "-"),
        ],
        capture_output=True,
        text=True,
    )
    found = re.search(r"average:(\S+)", done.stderr)
    if done.returncode != 0 or not found:
        raise BenchError(f"psnr failed: {last_line(done.stderr)}")
    return float(found[1])


def as_vfe_converts(video: Video) -> str:
    """The filters that turn a decoded frame into the pixels vfe writes to JPEG: BT.601
    full range, read with the matrix vfe assumes when the video is untagged."""
    from vfe.probe import assumed_matrix

    matrix = assumed_matrix(video.color_space, video.width, video.height, 0)
    stated = f"setparams=colorspace={matrix}," if matrix else ""
    return f"{stated}scale=out_color_matrix=bt601:out_range=pc"


def check_pixels(video: Video, out: Path, work: Path) -> dict[str, Any]:
    """For a few of vfe's frames, decode the expected frame and its two neighbours to
    JPEG (``-q:v 2``, converted as vfe converts) and check that vfe's image is closest
    (PSNR) to the expected one."""
    _, frames = vfe_frames(out)
    convert = as_vfe_converts(video)
    picks = sorted({0, len(frames) // 2, len(frames) - 1}) if frames else []
    details = []
    for pick in picks[:PIXEL_SAMPLES]:
        frame = frames[pick]
        image = out / str(frame.get("filename", ""))
        at = bisect.bisect_left(video.frame_times, float(frame["timestamp"]) - 0.0005 - EPSILON)
        if not image.is_file() or at >= len(video.frame_times):
            details.append({"timestamp": frame["timestamp"], "match": False, "why": "no frame"})
            continue
        lo, hi = max(0, at - 1), min(len(video.frame_times) - 1, at + 1)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        first, last = video.frame_times[lo], video.frame_times[hi]
        pick_expr = f"between(t\\,{first - EPSILON:.6f}\\,{last + EPSILON:.6f})"
        run_text(
            [
                *("ffmpeg", *FFMPEG_QUIET, "-copyts", "-ss", f"{max(0.0, first - 1):.6f}"),
                *("-i", str(video.path), "-vf", f"select={pick_expr},{convert}"),
                *("-fps_mode", "passthrough"),
                *("-frames:v", str(hi - lo + 1), "-q:v", "2", str(work / "%d.jpg")),
            ]
        )
        scores = {}
        for n in range(lo, hi + 1):
            candidate = work / f"{n - lo + 1}.jpg"
            if candidate.is_file():
                scores[n] = psnr(image, candidate)
        best = max(scores.values(), default=-1.0)
        rivals = [score for n, score in scores.items() if n != at]
        same = (work / f"{at - lo + 1}.jpg").is_file() and (
            (work / f"{at - lo + 1}.jpg").read_bytes() == image.read_bytes()
        )
        details.append(
            {
                "timestamp": frame["timestamp"],
                "frame_number": at,
                # JSON has no infinity: identical pixels are written as "inf"
                "psnr_db": {str(n): "inf" if math.isinf(s) else s for n, s in scores.items()},
                "match": at in scores and scores[at] == best,
                "tied": at in scores and scores[at] in rivals,
                "identical_bytes": same,
            }
        )
    shutil.rmtree(work, ignore_errors=True)
    matched = sum(1 for item in details if item["match"])
    tied = sum(1 for item in details if item.get("tied"))
    return {"sampled": len(details), "matched": matched, "tied": tied, "details": details}
