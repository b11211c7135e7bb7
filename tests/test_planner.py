"""Planner: target counts, indexes, and the select expression checked against brute force."""

from __future__ import annotations

import math
import random
from bisect import bisect_left
from fractions import Fraction
from types import CodeType

import pytest

from vfe.planner import EPSILON, Plan, count_targets, plan
from vfe.probe import VideoInfo


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


def test_target_index_and_time() -> None:
    p = Plan(interval=0.5, duration=2.0, total=4)
    assert [p.target_index(t) for t in (0.0, 0.04, 0.49, 0.5, 0.52, 0.999, 1.0, 1.96)] == [
        0, 0, 0, 1, 1, 1, 2, 3,
    ]  # fmt: skip
    assert p.target_index(-0.02) == 0  # a frame slightly before zero still answers target 0
    assert p.targets() == [0.0, 0.5, 1.0, 1.5]
    q = Plan(interval=0.1, duration=1.0, total=10)
    assert q.target_time(3) == 0.3  # rounded: not 0.30000000000000004
    assert q.target_index(0.3) == 3  # 0.3/0.1 < 3 in floats; EPSILON absorbs it
    assert q.target_index(0.7) == 7
    r = Plan(interval=1 / 3, duration=2.0, total=6)
    assert r.target_time(1) == 0.333333
    assert r.targets() == [0.0, 0.333333, 0.666667, 1.0, 1.333333, 1.666667]
    assert Plan(interval=1, duration=0, total=0).targets() == []


def test_plan_from_probe() -> None:
    info = VideoInfo(118.533, 30.0, 1280, 720, 0, "h264", "yuv420p", 0.0)
    p = plan(5, info)
    assert p == Plan(interval=5, duration=118.533, total=24, strategy="select")
    assert p.targets()[-1] == 115.0


def test_select_expr_shape() -> None:
    expr = Plan(interval=0.5, duration=2.0, total=4).select_expr
    assert expr == (
        f"gte(t+{EPSILON},0)*(isnan(prev_selected_t)+"
        f"gt(floor((t+{EPSILON})/0.5),floor((prev_selected_t+{EPSILON})/0.5)))"
    )
    assert expr.count("(") == expr.count(")")
    assert "/0.1)" in Plan(interval=0.1, duration=1, total=10).select_expr
    assert "/2.0)" in Plan(interval=2.0, duration=9, total=5).select_expr
    # repr keeps full precision: 1/3 is not written as 0.333
    assert f"/{1 / 3!r})" in Plan(interval=1 / 3, duration=1, total=3).select_expr


def _ffmpeg_expr(expr: CodeType, t: float, prev: float) -> float:
    """Evaluate a select expression with FFmpeg's semantics for the functions it uses."""
    names = {
        "gte": lambda a, b: float(a >= b),
        "gt": lambda a, b: float(a > b),
        "isnan": lambda a: float(math.isnan(a)),
        "floor": lambda a: math.floor(a) if math.isfinite(a) else a,  # floor(NaN) is NaN
        "t": t,
        "prev_selected_t": prev,
    }
    return float(eval(expr, {"__builtins__": {}}, names))


def select(p: Plan, times: list[float]) -> list[tuple[int, float]]:
    """What FFmpeg's select filter keeps, and the (index, timestamp) the extractor records."""
    kept: list[tuple[int, float]] = []
    prev = math.nan
    expr = compile(p.select_expr, "<select>", "eval")
    for t in times:
        if _ffmpeg_expr(expr, t, prev):
            prev = t
            timestamp = round(t, 6)
            kept.append((p.target_index(timestamp), timestamp))
    return kept


def brute_force(
    pts: list[int], time_base: Fraction, interval: str, total: int
) -> list[tuple[int, float]]:
    """For each target k*I the first frame with time >= k*I, each frame once, under the
    latest target it answers; exact rational arithmetic throughout."""
    step = Fraction(interval)
    exact = [p * time_base for p in pts]
    by_frame: dict[int, int] = {}
    for k in range(total):
        n = bisect_left(exact, k * step)
        if n < len(exact):
            by_frame[n] = k
    return [(k, round(float(exact[n]), 6)) for n, k in sorted(by_frame.items())]


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
    Fraction(25), Fraction(30000, 1001), Fraction(24000, 1001), Fraction(30),
    Fraction(60), Fraction(50), Fraction(15, 2), Fraction(1), Fraction(120),
]  # fmt: skip
INTERVALS = ["0.001", "0.01", "0.015", "0.04", "0.1", "0.25", "0.3", "0.5", "0.7", "1", "1.5",
             "2", "2.7", "3", "5", "10", "60"]  # fmt: skip
TIME_BASES = [Fraction(1, 12800), Fraction(1, 90000), Fraction(1, 1000), Fraction(1, 30000)]


def check(pts: list[int], time_base: Fraction, interval: str) -> None:
    times = [float(p * time_base) for p in pts]  # what showinfo's pts * time_base gives
    duration = times[-1] + 0.04
    p = Plan(
        interval=float(interval), duration=duration, total=count_targets(float(interval), duration)
    )
    got = select(p, times)
    want = brute_force(pts, time_base, interval, p.total)
    assert got == want, (interval, time_base, pts[:10])
    position = {round(t, 6): n for n, t in enumerate(times)}
    for index, timestamp in got:  # never drifts: within one frame of its target
        n = position[timestamp]
        assert p.target_time(index) <= timestamp + EPSILON
        if n > 0:  # the frame before it was shown before the target
            assert times[n - 1] < p.target_time(index) - EPSILON / 2


@pytest.mark.parametrize("rate", RATES, ids=str)
def test_select_matches_brute_force_constant_rate(rate: Fraction) -> None:
    for time_base in TIME_BASES:
        pts = cfr(rate, time_base, 6.0)
        for interval in INTERVALS:
            check(pts, time_base, interval)


@pytest.mark.parametrize("seed", range(6))
def test_select_matches_brute_force_variable_rate(seed: int) -> None:
    for time_base in (Fraction(1, 1000), Fraction(1, 90000)):
        pts = vfr(seed, time_base, 5.0)
        for interval in INTERVALS:
            check(pts, time_base, interval)


def test_select_with_a_late_first_frame_and_a_gap() -> None:
    # the stream starts at 0.7 s and jumps from 1.0 to 4.2 s
    pts = [700, 740, 1000, 4200, 4240]
    for interval in ("0.5", "1", "0.2", "3"):
        check(pts, Fraction(1, 1000), interval)
    p = Plan(interval=0.5, duration=4.3, total=count_targets(0.5, 4.3))
    assert select(p, [0.7, 0.74, 1.0, 4.2, 4.24]) == [(1, 0.7), (2, 1.0), (8, 4.2)]


def test_the_examples_from_the_design() -> None:
    times = [n / 25 for n in range(50)]
    p = Plan(interval=0.5, duration=2.0, total=4)
    assert select(p, times) == [(0, 0.0), (1, 0.52), (2, 1.0), (3, 1.52)]
    q = Plan(interval=1.0, duration=2.0, total=2)
    assert select(q, times) == [(0, 0.0), (1, 1.0)]
