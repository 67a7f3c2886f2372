"""Stored series prepared for evaluation, and the batched range-query path of ``rate``.

A query's series are read once (``stored_series``: staleness markers taken
out, counter resets indexed); a range query then computes ``rate``,
``increase`` and ``delta`` of a selector for all its steps at once
(``batch_extrapolated``), with the same formula as one step at a time.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass

from alerting import promql_functions as fn
from alerting import promql_plan as plan
from siem import limits
from siem.model import Labels, Series

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
        stale = [t for t, v in points if v != v and fn.is_stale(v)]
        if stale:
            kept = [(t, v) for t, v in points if not (v != v and fn.is_stale(v))]
            times = [p[0] for p in kept]
            values = [p[1] for p in kept]
    reset_at = [j for j, (a, b) in enumerate(itertools.pairwise(values), 1) if b < a]
    return Stored(series.labels, times, values, stale, reset_at, [values[j - 1] for j in reset_at])


def ms(seconds: float) -> float:
    """``seconds`` on Prometheus' millisecond grid, so window edges match stored times exactly."""
    return round(seconds * 1000) / 1000


def batch_extrapolated(
    name: str,
    selector: plan.Selector,
    data: list[Stored],
    steps: list[float],
    budget: limits.QueryBudget,
) -> dict[float, Vector]:
    """``rate``/``increase``/``delta`` of every series at every step of a range query.

    The same formula as per step (``fn.extrapolate``), but each series' window
    bounds move forward with two pointers instead of two bisections per step,
    and no window object is built.
    """
    assert selector.range is not None
    is_counter, is_rate = BATCHED[name]
    bounds = []
    for t in steps:
        end = ms(t - selector.offset)
        bounds.append((t, ms(end - selector.range), end))
    out: dict[float, Vector] = {t: [] for t in steps}
    extrapolate = fn.extrapolate
    for stored in data:
        budget.check()
        labels = fn.drop_name(stored.labels)
        times, values = stored.times, stored.values
        reset_at, reset_by = stored.reset_at, stored.reset_by
        n = len(times)
        lo = hi = 0
        for t, start, end in bounds:
            while lo < n and times[lo] <= start:
                lo += 1
            while hi < n and times[hi] <= end:
                hi += 1
            if hi - lo < 2:
                continue
            result = values[hi - 1] - values[lo]
            if is_counter and reset_at:
                # resets strictly inside the window: j in (lo, hi)
                r_lo = bisect.bisect_right(reset_at, lo)
                r_hi = bisect.bisect_left(reset_at, hi)
                for before in reset_by[r_lo:r_hi]:
                    result += before
            value = extrapolate(
                result,
                times[lo],
                times[hi - 1],
                values[lo],
                hi - lo,
                start,
                end,
                is_counter=is_counter,
                is_rate=is_rate,
            )
            out[t].append((labels, value))
    names = [fn.drop_name(stored.labels) for stored in data]
    if len(set(names)) < len(names):  # series differing only in __name__: check each step
        for vector in out.values():
            fn.check_unique(vector)
    return out
