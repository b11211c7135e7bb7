"""Planner: targets of every mode, the cost model, and the select expressions checked
against brute force by evaluating them with FFmpeg's semantics over crafted frame lists."""

from __future__ import annotations

import dataclasses
import math
import os
import random
from bisect import bisect_left
from fractions import Fraction
from pathlib import Path
from types import CodeType

import pytest

from vfe import planner
from vfe.models import Mode
from vfe.planner import (
    EPSILON,
    Group,
    Plan,
    Sampling,
    Strategy,
    count_targets,
    plan,
    sampling_from,
    targets_for,
)
from vfe.probe import FrameIndex, VideoInfo

SMALL = (320, 240)  # a process start costs hundreds of frame decodes: select wins
HUGE = (7680, 4320)  # a process start costs ~1.5 frame decodes: seek wins when sparse


@pytest.fixture(autouse=True)
def _memory_is_no_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """HUGE pictures price process starts as cheap; their memory would allow one process.
    These tests are about the cost model, so memory does not bound them (but see
    ``test_memory_bounds_the_processes_at_once``)."""
    monkeypatch.setattr(planner, "FFMPEG_MEMORY_MIB", 1e9)


def info(duration: float, size: tuple[int, int] = SMALL) -> VideoInfo:
    return VideoInfo(duration, 25.0, size[0], size[1], 0, "h264", "yuv420p", 0.0)


def cfr_index(rate: float, seconds: float, gop: int) -> FrameIndex:
    times = tuple(round(n / rate, 6) for n in range(math.ceil(seconds * rate - 1e-9)))
    return FrameIndex(times, times[::gop])


@pytest.mark.parametrize(
    ("interval", "duration", "count"),
    [
        (1, 10, 10),
        (5, 10, 2),
        (1, 118.533, 119),
        (5, 118.533, 24),
        (5, 15, 3),
        (0.1, 0.3, 3),  # 0.3/0.1 == 2.9999999999999996
        (0.1, 0.7, 7),  # 0.7/0.1 == 6.999999999999999
        (0.3, 0.9, 3),
        (0.3, 1.0, 4),
        (0.5, 2.0, 4),
        (0.04, 2.0, 50),
        (60, 2.0, 1),  # interval longer than the video: the first frame only
        (5, 0.01, 1),
        (1, 10.0001, 11),
        (1, 0, 0),
        (1, -3, 0),
    ],
)
def test_count_targets(interval: float, duration: float, count: int) -> None:
    assert count_targets(interval, duration) == count
    # the definition: how many k >= 0 have k*I < duration (exact decimal arithmetic)
    if duration > 0:
        step, end = Fraction(str(interval)), Fraction(str(duration))
        assert count == sum(1 for k in range(count + 2) if k * step < end)


# --- targets of each mode -------------------------------------------------------------

INDEX_4S = cfr_index(25, 4.0, 25)


def targets(sampling: Sampling, duration: float = 4.0) -> tuple[list[float], object]:
    return targets_for(sampling, info(duration), INDEX_4S)


def test_interval_targets_with_window_and_cap() -> None:
    assert targets(Sampling(interval=1.0)) == ([0.0, 1.0, 2.0, 3.0], (0.0, 1.0))
    assert targets(Sampling(interval=0.5, start=1.2, end=2.5)) == (
        [1.2, 1.7, 2.2], (1.2, 0.5),
    )  # fmt: skip
    assert targets(Sampling(interval=0.1, max_frames=3))[0] == [0.0, 0.1, 0.2]  # not 0.30..04
    assert targets(Sampling(interval=1.0, end=99))[0] == [0.0, 1.0, 2.0, 3.0]  # end clamped
    assert targets(Sampling(interval=1.0, start=5.0)) == ([], None)  # window after the end
    assert targets(Sampling(interval=1.0, start=-3.0))[0][0] == 0.0


def test_fps_targets() -> None:
    got, regular = targets(Sampling(mode=Mode.FPS, fps=3, start=0.5, end=2.0))
    assert regular == (0.5, 1 / 3)
    assert got == [0.5, 0.833333333, 1.166666667, 1.5, 1.833333333]
    assert targets(Sampling(mode=Mode.FPS, fps=None, interval=2.0))[0] == [0.0, 2.0]


def test_count_targets_are_evenly_spaced_over_the_window() -> None:
    got, regular = targets(Sampling(mode=Mode.COUNT, count=4, start=1.0, end=3.0))
    assert got == [1.0, 1.5, 2.0, 2.5] and regular == (1.0, 0.5)
    assert targets(Sampling(mode=Mode.COUNT, count=3))[0] == [0.0, 1.333333333, 2.666666667]
    assert targets(Sampling(mode=Mode.COUNT, count=10, max_frames=2))[0] == [0.0, 0.4]
    assert targets(Sampling(mode=Mode.COUNT, count=None))[0] == [0.0]


def test_timestamps_targets_are_sorted_unique_inside_the_window() -> None:
    s = Sampling(mode=Mode.TIMESTAMPS, timestamps=(3.0, 0.5, 0.5, 9.0, 1.0, 0.2), start=0.5)
    assert targets(s) == ([0.5, 1.0, 3.0], None)
    s = Sampling(mode=Mode.TIMESTAMPS, timestamps=(0.5, 1.0, 3.0), end=3.0, max_frames=1)
    assert targets(s)[0] == [0.5]


def test_keyframes_targets() -> None:
    assert targets(Sampling(mode=Mode.KEYFRAMES)) == ([0.0, 1.0, 2.0, 3.0], None)
    assert targets(Sampling(mode=Mode.KEYFRAMES, start=0.5, end=3.0))[0] == [1.0, 2.0]
    assert targets(Sampling(mode=Mode.KEYFRAMES, start=1.0, max_frames=2))[0] == [1.0, 2.0]


def test_sampling_from_stored_options() -> None:
    assert sampling_from({}, 2.5) == Sampling(interval=2.5)
    options = {"mode": "timestamps", "timestamps": [1, 2.5], "start": 1, "end": 9,
               "max_frames": 3, "fps": 2, "count": 4}  # fmt: skip
    assert sampling_from(options, 5.0) == Sampling(
        mode=Mode.TIMESTAMPS, interval=5.0, fps=2, count=4, timestamps=(1, 2.5),
        start=1.0, end=9, max_frames=3,
    )  # fmt: skip


# --- plans and the cost model ---------------------------------------------------------


def test_dense_interval_is_one_select_pass() -> None:
    p = plan(Sampling(interval=0.5), info(4.0), INDEX_4S)
    assert p.strategy is Strategy.SELECT
    assert len(p.groups) == 1 and p.groups[0].seek is None
    assert p.total == 8 and p.groups[0].frames == 8 and p.groups[0].targets == tuple(range(8))
    assert p.decoded_frames == p.groups[0].decoded == 89  # frame 0 to frame 88 (3.52 s)
    assert p.regular == (0.0, 0.5) and p.skipped_targets == 0
    assert p.describe() == {
        "strategy": "select", "targets": 8, "frames": 8, "processes": 1, "parallel": 1,
        "threads": None, "decoded_frames": 89, "estimated_seconds": round(p.estimated_seconds, 3),
        "skipped_targets": 0,
    }  # fmt: skip
    assert p.estimated_seconds > 0


def test_sparse_targets_on_a_short_gop_seek_in_parallel() -> None:
    index = cfr_index(25, 60.0, 10)  # keyframe every 10 frames
    p = plan(Sampling(interval=4.0), info(60.0, HUGE), index, cpus=2)  # interval = 10 GOPs
    assert p.strategy is Strategy.SEEK
    assert [g.seek for g in p.groups] == [None, *[4.0 * k for k in range(1, 15)]]
    assert all(g.frames == 1 and g.decoded == 1 for g in p.groups)  # targets on keyframes
    assert p.decoded_frames == 15 and p.parallel == 2
    assert p.describe()["processes"] == 15
    # the same job on a small picture: a process start costs more than decoding on
    q = plan(Sampling(interval=4.0), info(60.0), index, cpus=2)
    assert q.strategy is Strategy.SELECT and q.parallel == 1
    assert q.decoded_frames == 1401
    # one CPU: seek still wins on cost, run one at a time
    assert plan(Sampling(interval=4.0), info(60.0, HUGE), index, cpus=1).parallel == 1


FULL_HD = (1920, 1080)  # a process start costs about 24 frame decodes


def test_a_long_select_pass_is_cut_at_keyframes_into_one_piece_per_cpu() -> None:
    index = cfr_index(30, 180.0, 250)  # 3 min, keyframe every 8.33 s
    p = plan(Sampling(interval=0.5), info(180.0, FULL_HD), index, cpus=2)
    assert p.strategy is Strategy.SELECT
    assert len(p.groups) == 2 and p.parallel == 2 and p.threads == 1
    left, right = p.groups
    assert left.seek is None and right.seek == 91.666667  # the keyframe nearest the middle
    assert left.targets + right.targets == tuple(range(360))  # every target, once, in order
    assert left.frames + right.frames == p.total == 360
    # nothing decoded twice: the left piece stops at the frame answering 91.5 s (2745), the
    # right one starts at the keyframe (2750) and ends at the one answering 179.5 s (5385)
    assert (left.decoded, right.decoded) == (2746, 2636)
    assert p.decoded_frames == 2746 + 2636
    assert p.describe()["processes"] == 2 and p.describe()["threads"] == 1
    four = plan(Sampling(interval=0.5), info(180.0, FULL_HD), index, cpus=4)
    assert len(four.groups) == 4 and four.threads == 1
    assert [t for g in four.groups for t in g.targets] == list(range(360))
    eight = plan(Sampling(interval=0.5), info(180.0, FULL_HD), index, cpus=8)
    assert eight.parallel == 8 and eight.threads == 1
    # one CPU: one process, FFmpeg picks its threads
    one = plan(Sampling(interval=0.5), info(180.0, FULL_HD), index, cpus=1)
    assert len(one.groups) == 1 and one.parallel == 1 and one.threads is None


def test_memory_bounds_the_processes_at_once() -> None:
    # 1080p: about 100 MiB a process, so two fit the 200 MiB budget; each stays
    # single-threaded (the model's measure), spare CPUs are left to other jobs
    index = cfr_index(30, 180.0, 250)
    hd = info(180.0, FULL_HD)
    assert planner.process_mib(1920, 1080) == pytest.approx(99.5, abs=0.1)
    p = plan(Sampling(interval=0.5), hd, index, cpus=8, memory_mib=200)
    assert len(p.groups) == 2 and p.parallel == 2 and p.threads == 1
    q = plan(Sampling(interval=0.5), hd, index, cpus=2, memory_mib=200)
    assert q.parallel == 2 and q.threads == 1
    # 8K: one process at a time, with every CPU's thread
    big = plan(Sampling(interval=0.5), info(180.0, HUGE), index, cpus=4, memory_mib=200)
    assert big.parallel == 1 and big.threads is None and len(big.groups) == 1
    # the default budget is the module's
    assert plan(Sampling(interval=0.5), hd, index, cpus=8).parallel == 8  # lifted above


def test_available_cpus_follows_a_container_quota(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")  # no quota: the CPUs this process may run on
    free = planner.available_cpus(cpu_max)
    assert free == len(os.sched_getaffinity(0))
    cpu_max.write_text("150000 100000\n")  # docker --cpus 1.5: two CPUs' worth, rounded up
    assert planner.available_cpus(cpu_max) == min(free, 2)
    cpu_max.write_text("10000 100000\n")  # a tenth of a CPU still runs one process
    assert planner.available_cpus(cpu_max) == 1
    cpu_max.write_text("garbage")
    assert planner.available_cpus(cpu_max) == free
    assert planner.available_cpus(tmp_path / "missing") == free


@pytest.mark.timeout(30)
def test_cutting_a_long_pass_is_not_quadratic() -> None:
    # an hour at 30 fps, keyframe every 2 s, fps=30: 108,000 targets and 1,800 keyframes;
    # pricing every cut by walking every target would take minutes
    index = cfr_index(30, 3600.0, 60)
    p = plan(Sampling(mode=Mode.FPS, fps=30), info(3600.0, FULL_HD), index, cpus=2)
    assert len(p.targets) == 108_000 and len(p.groups) == 2
    assert [t for g in p.groups for t in g.targets] == list(range(108_000))


def test_short_work_is_not_cut() -> None:
    # each piece must decode several process starts' worth of frames
    index = cfr_index(30, 4.0, 30)
    p = plan(Sampling(interval=0.5), info(4.0, FULL_HD), index, cpus=2)
    assert p.strategy is Strategy.SELECT and len(p.groups) == 1 and p.threads is None
    q = plan(Sampling(interval=0.5), info(4.0, HUGE), index, cpus=2)
    assert len(q.groups) == 4 and q.threads == 1  # 8K: a start costs ~1.5 frames


def test_mixed_plan_decodes_dense_stretches_and_seeks_to_isolated_targets() -> None:
    index = cfr_index(30, 180.0, 60)  # keyframe every 2 s
    dense = tuple(round(10 + k * 0.25, 3) for k in range(80))  # 10 s to 29.75 s
    s = Sampling(mode=Mode.TIMESTAMPS, timestamps=(*dense, 61.0, 121.5, 170.3))
    p = plan(s, info(180.0, FULL_HD), index, cpus=2)
    assert p.strategy is Strategy.MIXED and p.regular is None
    seeks = [g.seek for g in p.groups]
    assert seeks[-3:] == [60.0, 120.0, 170.0]  # each isolated target: its own keyframe
    stretch = p.groups[:-3]  # the dense stretch, decoded straight through (cut in two)
    assert stretch[0].seek == 10.0 and len(stretch) == 2
    assert sum(g.frames for g in stretch) == 80
    assert [g.decoded for g in p.groups[-3:]] == [31, 46, 10]
    # cut until no piece holds much more than half the work: the dense stretch in two
    assert max(g.decoded for g in p.groups) <= 1.25 * p.decoded_frames / 2
    assert p.decoded_frames == sum(g.decoded for g in p.groups) < 5400 // 5
    # the same targets evenly spread are plain seeks
    sparse = Sampling(mode=Mode.TIMESTAMPS, timestamps=(5.0, 61.0, 121.5, 170.3))
    assert plan(sparse, info(180.0, FULL_HD), index, cpus=2).strategy is Strategy.SEEK


def test_seek_decodes_from_the_keyframe_before_each_target() -> None:
    index = cfr_index(25, 20.0, 25)
    s = Sampling(mode=Mode.TIMESTAMPS, timestamps=(2.5, 9.9, 15.02))
    p = plan(s, info(20.0, HUGE), index, cpus=4)
    assert p.strategy is Strategy.SEEK and p.regular is None
    assert [(g.seek, g.targets, g.frames, g.decoded) for g in p.groups] == [
        (2.0, (0,), 1, 14),  # keyframe 2.0 (frame 50) to 2.52 (frame 63): 14 frames
        (9.0, (1,), 1, 24),
        (15.0, (2,), 1, 2),
    ]
    assert p.parallel == 3  # no more than one process per group


def test_nearby_runs_merge_into_one_process() -> None:
    index = cfr_index(25, 20.0, 250)  # one keyframe only: every seek lands on frame 0
    s = Sampling(mode=Mode.TIMESTAMPS, timestamps=(1.0, 5.0, 9.0))
    p = plan(s, info(20.0, HUGE), index)
    # each run would start at the same keyframe: decoding on is always cheaper
    assert p.strategy is Strategy.SELECT and len(p.groups) == 1
    index = cfr_index(25, 20.0, 25)
    s = Sampling(mode=Mode.TIMESTAMPS, timestamps=(1.0, 1.08, 1.5, 9.0, 9.04, 16.0))
    p = plan(s, info(20.0, HUGE), index)
    assert p.strategy is Strategy.SEEK
    assert [g.targets for g in p.groups] == [(0, 1, 2), (3, 4), (5,)]
    assert [g.frames for g in p.groups] == [3, 2, 1]


def test_targets_sharing_a_frame_are_one_frame_under_the_latest() -> None:
    index = FrameIndex((0.0, 1.0, 2.0), (0.0,))
    s = Sampling(mode=Mode.TIMESTAMPS, timestamps=(0.2, 0.5, 0.9, 1.0, 1.5))
    p = plan(s, info(3.0), index)
    assert p.total == 2 and p.groups[0].frames == 2 and p.groups[0].targets == (0, 1, 2, 3, 4)
    assert p.target_index(1.0) == 3 and p.target_index(2.0) == 4


def test_targets_after_the_last_frame_are_skipped() -> None:
    index = FrameIndex((0.0, 0.5, 1.0), (0.0,))
    s = Sampling(mode=Mode.TIMESTAMPS, timestamps=(0.7, 1.01, 1.2))
    p = plan(s, info(1.5), index)  # the container says 1.5 s; the last frame is at 1.0
    assert p.targets == (0.7, 1.01, 1.2) and p.total == 1 and p.skipped_targets == 2
    assert p.describe()["skipped_targets"] == 2
    none = plan(Sampling(mode=Mode.TIMESTAMPS, timestamps=(1.2,)), info(1.5), index)
    assert none.groups == () and none.total == 0 and none.skipped_targets == 1
    empty = plan(Sampling(interval=1.0, start=9.0), info(1.5), index)
    assert empty.targets == () and empty.groups == () and empty.decoded_frames == 0


def test_select_seeks_to_the_keyframe_before_a_late_window() -> None:
    p = plan(Sampling(interval=0.5, start=2.3, end=3.0), info(4.0), INDEX_4S)
    assert p.strategy is Strategy.SELECT
    assert p.groups[0].seek == 2.0 and p.groups[0].decoded == 21  # 2.0 to 2.8 s
    assert p.targets == (2.3, 2.8)


def test_keyframes_plan() -> None:
    p = plan(Sampling(mode=Mode.KEYFRAMES, start=0.5, max_frames=2), info(4.0), INDEX_4S)
    assert p.strategy is Strategy.KEYFRAMES
    assert p.targets == (1.0, 2.0) and p.total == 2 and p.decoded_frames == 2
    # it may stop at the frame after its last (an interlaced source's must: Group.until)
    assert p.groups == (Group(seek=1.0, targets=(0, 1), frames=2, decoded=2, until=2.04),)
    assert p.select_expr(p.groups[0]) == f"gte(t+{EPSILON},1.0)*key"
    assert p.select_expr(p.groups[0], 1.5) == f"gte(t+{EPSILON},2.5)*key"
    first = plan(Sampling(mode=Mode.KEYFRAMES), info(4.0), INDEX_4S)
    assert first.groups[0].seek is None  # the first keyframe is the first frame


def test_each_group_may_end_at_the_frame_after_its_last() -> None:
    """``until``: the next frame's time (None after the video's last frame); for keyframes
    listed at decode times (``by_key``), the next keyframe's, since each is shown later."""
    pieces = plan(Sampling(interval=1.0), info(4.0, HUGE), INDEX_4S, cpus=2)
    assert len(pieces.groups) > 1
    for group in pieces.groups:
        last = INDEX_4S.first_at_or_after(pieces.targets[group.targets[-1]])
        assert last is not None and group.until == INDEX_4S.times[last + 1]
    to_the_end = plan(Sampling(mode=Mode.TIMESTAMPS, timestamps=(3.96,)), info(4.0), INDEX_4S)
    assert to_the_end.groups[0].until is None  # 3.96 is the last frame
    decoded = FrameIndex(INDEX_4S.times, INDEX_4S.keyframes, decode_times=True)
    with_b_frames = dataclasses.replace(info(4.0), has_b_frames=2)
    keys = plan(Sampling(mode=Mode.KEYFRAMES), with_b_frames, decoded, cpus=2)
    assert keys.by_key and [g.until for g in keys.groups][-1] is None
    assert all(g.until in INDEX_4S.keyframes for g in keys.groups[:-1])


def test_scene_plan_decodes_the_window_in_one_process() -> None:
    index = cfr_index(25, 20.0, 50)  # keyframe every 2 s
    s = Sampling(mode=Mode.SCENE, scene_threshold=0.4, min_gap=0.5, start=5.0, end=9.0)
    p = plan(s, info(20.0, HUGE), index, cpus=4)  # never cut: each frame needs the last
    assert p.strategy is Strategy.SCENE and p.targets == () and p.total == 0
    assert p.groups == (Group(seek=4.0, targets=(), frames=0, decoded=125),)  # 4.0 to 8.96
    assert p.parallel == 1 and p.threads is None and p.end == 9.0
    assert p.target_index(6.0) == 0
    expr = p.select_expr(p.groups[0], 1.5)
    assert expr == (
        f"gte(t+{EPSILON},6.5)*(isnan(prev_selected_t)+gt(scene,0.4)"
        f"*gte(t-prev_selected_t+{EPSILON},0.5))*lt(t+{EPSILON},10.5)"
    )
    whole = plan(Sampling(mode=Mode.SCENE, max_frames=3), info(20.0), index)
    assert whole.groups[0].seek is None and whole.groups[0].frames == 3  # a cap
    assert whole.groups[0].decoded == 500 and whole.end is None
    assert "lt(t" not in whole.select_expr(whole.groups[0])
    assert "gt(scene,0.3)" in whole.select_expr(whole.groups[0])  # the default threshold
    late = plan(Sampling(mode=Mode.SCENE, start=30.0), info(20.0), index)
    assert late.groups == () and late.decoded_frames == 0
    stored = sampling_from({"mode": "scene", "scene_threshold": 0.2, "min_gap": 0}, 5.0)
    assert (stored.scene_threshold, stored.min_gap) == (0.2, 0.0)


def test_target_index_regular_and_irregular() -> None:
    p = plan(Sampling(interval=0.5), info(2.0), cfr_index(25, 2.0, 25))
    got = [p.target_index(t) for t in (0.0, 0.04, 0.49, 0.5, 0.52, 0.999, 1.0, 1.96, 9.0)]
    assert got == [0, 0, 0, 1, 1, 1, 2, 3, 3]
    assert p.target_index(-0.02) == 0  # a frame slightly before zero still answers target 0
    q = plan(Sampling(interval=0.1), info(1.0), cfr_index(25, 1.0, 25))
    assert q.target_time(3) == 0.3  # rounded: not 0.30000000000000004
    assert q.target_index(0.3) == 3  # 0.3/0.1 < 3 in floats; EPSILON absorbs it
    assert q.target_index(0.7) == 7
    r = plan(Sampling(interval=1 / 3), info(2.0), cfr_index(25, 2.0, 25))
    assert r.targets == (0.0, 0.333333333, 0.666666667, 1.0, 1.333333333, 1.666666667)
    assert r.target_index(1.0) == 3 and r.target_index(0.6) == 1
    s = Sampling(mode=Mode.TIMESTAMPS, timestamps=(0.3, 0.7, 1.5))
    t = plan(s, info(2.0), cfr_index(25, 2.0, 25))
    assert t.regular is None
    assert [t.target_index(x) for x in (0.0, 0.3, 0.32, 0.72, 1.5, 1.9)] == [0, 0, 0, 1, 2, 2]
    assert t.target_time(2) == 1.5


def test_select_expr_shapes() -> None:
    p = plan(Sampling(interval=0.5), info(2.0), cfr_index(25, 2.0, 25))
    expr = p.select_expr(p.groups[0])
    assert expr == (
        f"gte(t+{EPSILON},0.0)*(isnan(prev_selected_t)+"
        f"gt(min(floor((t-0.0+{EPSILON})/0.5),3),min(floor((prev_selected_t-0.0+{EPSILON})/0.5),3)))"
    )
    assert expr.count("(") == expr.count(")")
    # repr keeps full precision: 1/3 is not written as 0.333
    third = plan(Sampling(interval=1 / 3), info(1.0), cfr_index(25, 1.0, 25))
    assert f"/{1 / 3!r})" in third.select_expr(third.groups[0])
    # the offset moves targets onto the filter's timeline (a non-zero container start)
    assert "(t-1.5+" in p.select_expr(p.groups[0], 1.5)
    s = Sampling(mode=Mode.TIMESTAMPS, timestamps=(0.3, 0.7))
    q = plan(s, info(2.0), cfr_index(25, 2.0, 25))
    keep = [f"isnan(prev_t)+lt(prev_t+{EPSILON},{x})" for x in (0.3, 0.7)]
    assert q.select_expr(q.groups[0]) == (
        f"if(lt(t+{EPSILON},0.3)+isnan(t),0,if(lt(t+{EPSILON},0.7),{keep[0]},{keep[1]}))"
    )


# --- the expressions, evaluated as FFmpeg would, against brute force -------------------


def ffmpeg_names(t: float, prev: float, prev_selected: float, key: bool) -> dict[str, object]:
    """FFmpeg's semantics for the functions the expressions use (NaN compares false)."""
    return {
        "gte": lambda a, b: float(a >= b),
        "gt": lambda a, b: float(a > b),
        "lt": lambda a, b: float(a < b),
        "isnan": lambda a: float(math.isnan(a)),
        "floor": lambda a: math.floor(a) if math.isfinite(a) else a,  # floor(NaN) is NaN
        "min": lambda a, b: b if a > b else a,  # FFMIN: min(NaN, x) is NaN
        "iff": lambda c, a, b: a if c else b,  # FFmpeg's if()
        "t": t,
        "prev_t": prev,
        "prev_selected_t": prev_selected,
        "key": float(key),
    }


def simulate(p: Plan, index: FrameIndex, offset: float = 0.0) -> list[tuple[int, float]]:
    """What FFmpeg would write for each group: decode from its seek point (every frame, or
    keyframes only), keep what ``select`` keeps, stop after ``frames``; then the (index,
    timestamp) the extractor records for each kept frame."""
    kept: list[tuple[int, float]] = []
    keys = set(index.keyframes)
    for group in p.groups:
        expr = p.select_expr(group, offset).replace("if(", "iff(")  # "if" is Python's
        code: CodeType = compile(expr, "<select>", "eval")
        first = 0 if group.seek is None else bisect_left(index.times, group.seek - 1e-9)
        assert group.seek is None or index.times[first] in keys  # seeks land on keyframes
        prev = prev_selected = math.nan
        written = 0
        for t in index.times[first:]:
            if p.strategy is Strategy.KEYFRAMES and t not in keys:
                continue  # -skip_frame nokey
            shifted = t + offset
            names = ffmpeg_names(shifted, prev, prev_selected, t in keys)
            if eval(code, {"__builtins__": {}}, names):  # our own expression, no builtins
                prev_selected = shifted
                timestamp = round(shifted - offset, 6)
                kept.append((p.target_index(timestamp), timestamp))
                written += 1
                if written == group.frames:
                    break
            prev = shifted
    return sorted(kept)


def brute_force(times: list[Fraction], targets: list[Fraction]) -> list[tuple[int, float]]:
    """For each target the first frame with time >= it, each frame once, under the latest
    target it answers; exact rational arithmetic throughout."""
    by_frame: dict[int, int] = {}
    for k, target in enumerate(targets):
        n = bisect_left(times, target)
        if n < len(times):
            by_frame[n] = k
    return [(k, round(float(times[n]), 6)) for n, k in sorted(by_frame.items())]


def cfr(rate: Fraction, time_base: Fraction, seconds: float) -> list[int]:
    """pts of a constant-rate stream, as a muxer rounds them into its time base."""
    count = math.ceil(seconds * rate)
    return [round(Fraction(n) / rate / time_base) for n in range(count)]


def vfr(seed: int, time_base: Fraction, seconds: float) -> list[int]:
    rng = random.Random(seed)
    pts, now = [], 0
    while now * time_base < seconds:
        pts.append(now)
        now += max(
            1, round(Fraction(rng.choice([1, 3, 5, 13, 40, 41, 100, 250]), 1000) / time_base)
        )
    return pts


RATES = [
    Fraction(25), Fraction(30000, 1001), Fraction(24000, 1001), Fraction(60),
    Fraction(15, 2), Fraction(1), Fraction(120),
]  # fmt: skip
INTERVALS = ["0.001", "0.015", "0.04", "0.1", "0.3", "0.7", "1", "2.7", "60"]
TIME_BASES = [Fraction(1, 12800), Fraction(1, 90000), Fraction(1, 1000)]


def check(
    pts: list[int],
    time_base: Fraction,
    sampling: Sampling,
    exact_targets: list[Fraction] | None = None,
    size: tuple[int, int] = SMALL,
    gop: int = 12,
) -> Plan:
    times = [float(p * time_base) for p in pts]  # what showinfo's pts * time_base gives
    index = FrameIndex(tuple(times), tuple(times[::gop]))
    p = plan(sampling, info(times[-1] + 0.04, size), index, cpus=2)
    if exact_targets is None:
        exact_targets = [Fraction(str(t)) for t in p.targets]
    want = brute_force([p * time_base for p in pts], exact_targets)
    assert simulate(p, index) == want, (sampling, time_base, pts[:10], p.strategy)
    # an MPEG-TS style container start: the same frames (times differ by float noise only)
    shifted = simulate(p, index, offset=1.4)
    assert [k for k, _ in shifted] == [k for k, _ in want]
    assert [t for _, t in shifted] == pytest.approx([t for _, t in want], abs=1.5e-6)
    assert p.total == len(want)
    return p


@pytest.mark.parametrize("rate", RATES, ids=str)
def test_interval_select_matches_brute_force_constant_rate(rate: Fraction) -> None:
    for time_base in TIME_BASES:
        pts = cfr(rate, time_base, 6.0)
        for interval in INTERVALS:
            step = Fraction(interval)
            s = Sampling(interval=float(interval))
            n = count_targets(float(interval), float(pts[-1] * time_base) + 0.04)
            check(pts, time_base, s, [k * step for k in range(n)])


@pytest.mark.parametrize("seed", range(4))
def test_every_mode_and_strategy_matches_brute_force_variable_rate(seed: int) -> None:
    rng = random.Random(seed)
    strategies: set[Strategy] = set()
    for time_base in (Fraction(1, 1000), Fraction(1, 90000)):
        pts = vfr(seed, time_base, 5.0)
        stamps = tuple(round(rng.uniform(0, 5.5), 3) for _ in range(12))
        samplings = [
            *(Sampling(interval=float(i)) for i in INTERVALS),
            Sampling(interval=0.25, start=1.1, end=3.3, max_frames=6),
            Sampling(mode=Mode.FPS, fps=7.5, start=0.3),
            Sampling(mode=Mode.COUNT, count=9, start=0.5, end=4.0),
            Sampling(mode=Mode.COUNT, count=400, end=2.0),  # denser than the frames
            Sampling(mode=Mode.TIMESTAMPS, timestamps=stamps),
            Sampling(mode=Mode.TIMESTAMPS, timestamps=stamps, start=1.0, max_frames=4),
            Sampling(mode=Mode.KEYFRAMES, start=0.4, end=4.5),
        ]
        for sampling in samplings:
            for size in (SMALL, HUGE):
                strategies.add(check(pts, time_base, sampling, size=size, gop=7).strategy)
    # scene: scored by FFmpeg itself; best: scored by vfe (tests/test_quality.py)
    assert strategies == set(Strategy) - {Strategy.SCENE, Strategy.BEST}


def test_count_in_a_window_keeps_a_last_frame_past_the_last_bucket() -> None:
    # 100 targets in [0, 1): target 0.99 is answered by the frame at 1.0, which lies in
    # bucket 100; it must still be written (under index 99)
    pts = cfr(Fraction(25), Fraction(1, 12800), 2.0)
    p = check(pts, Fraction(1, 12800), Sampling(mode=Mode.COUNT, count=100, end=1.0))
    assert p.total == 26
    index = FrameIndex(tuple(n / 25 for n in range(50)), (0.0,))
    assert simulate(p, index)[-1] == (99, 1.0)


def test_select_with_a_late_first_frame_and_a_gap() -> None:
    # the stream starts at 0.7 s and jumps from 1.0 to 4.2 s
    pts = [700, 740, 1000, 4200, 4240]
    for interval in ("0.5", "1", "0.2", "3"):
        check(pts, Fraction(1, 1000), Sampling(interval=float(interval)))
    index = FrameIndex((0.7, 0.74, 1.0, 4.2, 4.24), (0.7,))
    p = plan(Sampling(interval=0.5), info(4.3), index)
    assert simulate(p, index) == [(1, 0.7), (2, 1.0), (8, 4.2)]
    # a window ending inside the gap: its last target is answered by the frame after it
    q = plan(Sampling(interval=0.5, end=2.0), info(4.3), index)
    assert q.targets == (0.0, 0.5, 1.0, 1.5) and q.total == 3
    assert simulate(q, index) == [(1, 0.7), (2, 1.0), (3, 4.2)]


def test_the_examples_from_the_design() -> None:
    index = cfr_index(25, 2.0, 25)
    p = plan(Sampling(interval=0.5), info(2.0), index)
    assert simulate(p, index) == [(0, 0.0), (1, 0.52), (2, 1.0), (3, 1.52)]
    q = plan(Sampling(interval=1.0), info(2.0), index)
    assert simulate(q, index) == [(0, 0.0), (1, 1.0)]


def test_thousands_of_timestamps_branch_on_t() -> None:
    # 1000 irregular timestamps: the expression is a search tree on t, so FFmpeg evaluates
    # about log2(1000) comparisons per frame (and its parser nests that deep only)
    rng = random.Random(7)
    stamps = tuple(sorted({round(rng.uniform(0, 60), 3) for _ in range(1000)}))
    pts = cfr(Fraction(25), Fraction(1, 12800), 60.0)
    p = check(pts, Fraction(1, 12800), Sampling(mode=Mode.TIMESTAMPS, timestamps=stamps))
    expr = p.select_expr(p.groups[0])
    depth = max_depth = 0
    for ch in expr:
        depth += ch == "("
        depth -= ch == ")"
        max_depth = max(max_depth, depth)
    assert expr.count("isnan(prev_t)") == len(p.groups[0].targets)
    assert max_depth <= 2 * 11 + 4  # two parentheses per level, log2(1000) levels


def test_too_many_targets_is_a_clear_error() -> None:
    from vfe.errors import ExtractionError

    with pytest.raises(ExtractionError, match=r"at most 1000000\); use a larger interval"):
        plan(Sampling(interval=0.001), info(3600.0), cfr_index(25, 10.0, 25))
