"""The compared methods and the argv each one runs: (a) vfe, (b) an FFmpeg one-liner,
(c) the original service's OpenCV loop in its own virtualenv, (d) a pure decode."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Literal

from . import ROOT
from .runner import FFMPEG_QUIET, run_text
from .sampling import Sampling
from .videos import Video

VFE = ROOT / ".venv" / "bin" / "vfe"
Method = Literal["vfe", "ffmpeg", "opencv", "decode"]
METHODS: tuple[Method, ...] = ("vfe", "ffmpeg", "opencv", "decode")
LETTER: dict[Method, str] = {"vfe": "a", "ffmpeg": "b", "opencv": "c", "decode": "d"}

OPENCV_LOOP = """\
import os, sys, cv2
path, interval, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
cap = cv2.VideoCapture(path)
fps = cap.get(cv2.CAP_PROP_FPS)
frame_interval = max(1, int(fps * interval))
count = saved = 0
while True:
    ok, frame = cap.read()
    if not ok:
        break
    if count % frame_interval == 0:
        cv2.imwrite(os.path.join(out, f"frame_{saved:06d}.jpg"), frame)
        saved += 1
    count += 1
cap.release()
"""


def opencv_python(cache: Path) -> Path:
    """The benchmark-only virtualenv's python with OpenCV, created on first use."""
    venv = cache / "venv-opencv"
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import cv2, numpy; print(cv2.__version__)"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"creating {venv} (opencv-python-headless, numpy)", flush=True)
    run_text([sys.executable, "-m", "venv", "--clear", str(venv)])
    run_text(
        [str(python), "-m", "pip", "install", "-q", "opencv-python-headless", "numpy"],
        timeout=1800,
    )
    run_text(check)
    return python


def rate(value: float) -> str:
    """A frame rate FFmpeg parses exactly, e.g. ``1/30``."""
    exact = Fraction(value).limit_denominator(1_000_000)
    return f"{exact.numerator}/{exact.denominator}"


def argv_for(
    method: Method,
    video: Video,
    sampling: Sampling,
    out: Path,
    opencv: Path | None,
    vfe: Path = VFE,
) -> list[str]:
    src = str(video.path)
    if method == "vfe":
        if sampling.count is not None:
            how = ["--count", str(sampling.count)]
        else:
            how = ["--interval", f"{sampling.interval:g}"]
        return [str(vfe), "extract", src, *how, "--out", str(out), "--quiet"]
    if method == "ffmpeg":
        fps = rate(1 / sampling.seconds_between(video.duration))
        pattern = str(out / "out%05d.jpg")
        return ["ffmpeg", *FFMPEG_QUIET, "-i", src, "-vf", f"fps={fps}", "-q:v", "2", pattern]
    if method == "opencv":
        assert opencv is not None
        every = repr(sampling.seconds_between(video.duration))
        return [str(opencv), "-c", OPENCV_LOOP, src, every, str(out)]
    return ["ffmpeg", *FFMPEG_QUIET, "-i", src, "-an", "-f", "null", "-"]
