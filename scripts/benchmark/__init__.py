"""Benchmark ``vfe extract`` against an FFmpeg one-liner, an OpenCV loop and a pure decode.

For every video and sampling (intervals 0.5, 1, 5, 30 s and ``count=10``) it runs, one
subprocess at a time and interleaved within each round:

  (a) ``vfe extract VIDEO --interval I --out DIR --quiet`` (or ``--count 10``)
  (b) ``ffmpeg -i VIDEO -vf fps=1/I -q:v 2 DIR/out%05d.jpg`` (``fps=10/duration`` for count)
  (c) the original service's OpenCV loop (read every frame, write every Nth), run in a
      benchmark-only virtualenv ``CACHE/venv-opencv`` so OpenCV never enters vfe's deps
  (d) ``ffmpeg -i VIDEO -an -f null -``: the cost of decoding every frame once

and records wall time, CPU time (user+sys of the child and the descendants it waited
for, from ``os.wait4``) and peak memory (the summed RSS of the process tree, sampled
with psutil every 20 ms; never below ``ru_maxrss``, the largest single process). Each
vfe run is checked for exactness: every frame it wrote must be the first frame whose
presentation time is ``>= target`` (frame times come from ffprobe's packet list).

Before them, a start-up section (issue 11) times ``import vfe.cli`` in a fresh interpreter
against the time the issue measured (goal: a quarter of it), and (a) against (b) on a
10 s 640x272 clip at interval 1, where vfe's fixed cost shows most (goal: at most 1.5x);
it runs with ``--quick`` too (``--skip startup`` leaves it out, ``--only-startup`` runs
nothing else).

After the tables, a memory-vs-length section runs (a) on the same 1080p30 H.264 GOP-250
video at 60 s and 180 s, at intervals 1 and 30, and checks the requirement that the peak
memory of vfe and its FFmpeg children stays under 300 MB and does not grow with length
(``--skip memory`` leaves it out, ``--only-memory`` runs nothing else, ``--quick`` skips it).

Then a bounded-probing section (issue 13) starts a real ``vfe serve`` and uploads a 39 MB
video that states 3,000,000 frames three times at once, then a Matroska copy that states
no count: each answer within 30 s, the server's process tree under 400 MB, every
``/health/live`` within 0.5 s, memory back within 50 MB after (``--skip probing`` leaves it
out, ``--only-probing`` runs nothing else, ``--quick`` skips it: the clip takes about 70 s
of CPU to make the first time).

After the scale-out and storage sections (``scale``, ``storage``), last, a frame-quality
section (issue 16) that runs vfe's ``Extractor`` in this process on the 60 s 1080p video:
a dense job (fps 10) with and without the per-frame metrics (goal: at most 10% more wall
time; every frame of 10 s is held to it too), and an interval-1 job with ``reject`` black,
blurry and flat against without on that clean video (goal: at most 5% more), the pairs
interleaved in both orders across rounds (``--skip quality`` leaves it out,
``--only-quality`` runs nothing else, ``--quick`` skips it).

Deliberate oddities: (d) does not depend on the sampling, so it runs once per video and
round and its median is repeated on every row; the script uses blocking ``subprocess``,
not asyncio, because it runs exactly one child at a time.

Modules: ``videos`` (test videos and ffprobe facts), ``sampling`` (the table's rows),
``methods`` (each method's argv), ``runner`` (running and measuring one subprocess),
``exactness`` (checks of vfe's output), ``rounds`` (the interleaved loop over one video),
``startup`` (the start-up runs and verdicts), ``memory`` (the memory-vs-length runs and
verdicts), ``server`` (a ``vfe serve`` subprocess), ``probing`` (the bounded-probing runs
and verdicts), ``quality`` (the frame-quality runs, table and verdicts), ``report``
(tables and JSON) and ``__main__`` (command line). Run it as ``python -m benchmark`` with
``scripts/`` on ``PYTHONPATH``, as ``scripts/bench`` does.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository: scripts/benchmark/ is two down
