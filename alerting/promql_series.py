"""Stored series prepared for evaluation, and the batched range-query path of ``rate``.

A query's series are read once (``stored_series``: staleness markers taken
out, counter resets indexed); a range query then computes ``rate``,
``increase`` and ``delta`` of a selector for all its steps at once
(``batch_extrapolated``), with the same formula as one step at a time.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from alerting import promql_functions as fn
from alerting import promql_plan as plan
from siem import limits
from siem.model import Labels, Series, is_stale

Vector = fn.Vector
BATCHED = {"rate": (True, True), "increase": (True, False), "delta": (False, False)}
"""Range functions a range query computes for all its steps at once: (is_counter, is_rate)."""


@dataclass(frozen=True)
class Stored:
    labels: Labels
    times: list[float]
    values: list[float]
    stale: list[float]  # times of staleness markers, which are not in times/values
    # Counter resets, found once per query: index j where values[j] < values[j - 1],
    # and values[j - 1]. A window then adds its resets without walking every sample,
    # so rate(x[1d]) at short steps costs per reset, not per sample and step.
    reset_at: list[int]
    reset_by: list[float]


def stored_series(series: Series) -> Stored:
    points = series.points
    times = [p[0] for p in points]
    values = [p[1] for p in points]
    stale: list[float] = []
    if any(v != v for v in values):  # NaNs: take the staleness markers out
        stale = [t for t, v in points if v != v and is_stale(v)]
        if stale:
            kept = [(t, v) for t, v in points if not (v != v and is_stale(v))]
            times = [p[0] for p in kept]
            values = [p[1] for p in kept]
    reset_at = [j for j, (a, b) in enumerate(itertools.pairwise(values), 1) if b < a]
    return Stored(series.labels, times, values, stale, reset_at, [values[j - 1] for j in reset_at])


def ms(seconds: float) -> float:
    """``seconds`` on Prometheus' millisecond grid, so window edges match stored times exactly."""
    return round(seconds * 1000) / 1000


def _bounds(selector: plan.Selector, steps: list[float]) -> list[tuple[float, float, float]]:
    """(step, window start, window end) of ``selector``'s window at each step."""
    assert selector.range is not None
    rv = []
    for t in steps:
        end = ms(t - selector.offset)
        rv.append((t, ms(end - selector.range), end))
    return rv


def _spans(
    times: list[float], bounds: list[tuple[float, float, float]]
) -> Iterator[tuple[float, float, float, int, int]]:
    """(step, start, end, lo, hi) with ``times[lo:hi]`` in ``(start, end]``, for each step:
    two pointers that only move forward, instead of two bisections per step."""
    n = len(times)
    lo = hi = 0
    for t, start, end in bounds:
        while lo < n and times[lo] <= start:
            lo += 1
        while hi < n and times[hi] <= end:
            hi += 1
        yield t, start, end, lo, hi


def _resets_in(stored: Stored, lo: int, hi: int) -> list[float]:
    """The value before each counter reset strictly inside ``(lo, hi)``, in order."""
    r_lo = bisect.bisect_right(stored.reset_at, lo)
    r_hi = bisect.bisect_left(stored.reset_at, hi)
    return stored.reset_by[r_lo:r_hi]


def _checked(out: dict[float, Vector], labels: list[Labels]) -> dict[float, Vector]:
    if len(set(labels)) < len(labels):  # series differing only in __name__: check each step
        for vector in out.values():
            fn.check_unique(vector)
    return out


def batch_extrapolated(
    name: str,
    selector: plan.Selector,
    data: list[Stored],
    steps: list[float],
    budget: limits.QueryBudget,
) -> dict[float, Vector]:
    """``rate``/``increase``/``delta`` of every series at every step of a range query.

    The same formula as per step (``fn.extrapolate``), without building a window.
    """
    is_counter, is_rate = BATCHED[name]
    bounds = _bounds(selector, steps)
    out: dict[float, Vector] = {t: [] for t in steps}
    extrapolate = fn.extrapolate
    names = []
    for stored in data:
        budget.check()
        labels = fn.drop_name(stored.labels)
        names.append(labels)
        times, values = stored.times, stored.values
        resets = is_counter and stored.reset_at
        for t, start, end, lo, hi in _spans(times, bounds):
            if hi - lo < 2:
                continue
            result = values[hi - 1] - values[lo]
            if resets:
                for before in _resets_in(stored, lo, hi):
                    result += before
            value = extrapolate(
                result,
                times[lo],
                times[hi - 1],
                values[lo],
                hi - lo,
                start,
                end,
                is_counter,
                is_rate,
            )
            out[t].append((labels, value))
    return _checked(out, names)


def batch_windows(
    name: str,
    params: list[float],
    selector: plan.Selector,
    data: list[Stored],
    steps: list[float],
    budget: limits.QueryBudget,
) -> dict[float, Vector]:
    """Any range function with constant parameters of every series at every step."""
    func = fn.RANGE_FUNCTIONS[name]
    keep_name = name in fn.KEEP_NAME
    bounds = _bounds(selector, steps)
    out: dict[float, Vector] = {t: [] for t in steps}
    names = []
    for stored in data:
        budget.check()
        labels = stored.labels if keep_name else fn.drop_name(stored.labels)
        names.append(labels)
        for t, start, end, lo, hi in _spans(stored.times, bounds):
            if lo == hi:
                continue
            window = window_of(stored, lo, hi, start, end, t)
            value = func(window, params)
            if value is not None:
                out[t].append((labels, value))
    return _checked(out, names)


COPY_BELOW = 128
"""Windows up to this many samples are copied (fast, in C) rather than wrapped in a Span."""


def window_of(stored: Stored, lo: int, hi: int, start: float, end: float, t: float) -> fn.Window:
    """The window ``stored[lo:hi]`` over ``(start, end]``, evaluated at ``t``."""
    short = hi - lo <= COPY_BELOW
    return fn.Window(
        stored.labels,
        stored.times[lo:hi] if short else fn.Span(stored.times, lo, hi),
        stored.values[lo:hi] if short else fn.Span(stored.values, lo, hi),
        start,
        end,
        _resets_in(stored, lo, hi) if stored.reset_at else [],
        t,
    )
