"""Stored series prepared for evaluation, and the batched range-query path of ``rate``.

A query's series are read once (``stored_series``: staleness markers taken
out, counter resets indexed); a range query then computes ``rate``,
``increase`` and ``delta`` of a selector for all its steps at once
(``batch_extrapolated``), with the same formula as one step at a time.
"""

from __future__ import annotations

import bisect
import functools
from array import array
from collections.abc import Iterator, Sequence
from typing import cast

import numpy as np

from alerting import promql_functions as fn
from alerting import promql_plan as plan
from siem import limits
from siem.model import STALE_BITS, Columns, Labels, Matcher, Series, Store

Vector = fn.Vector
BATCHED = {"rate": (True, True), "increase": (True, False), "delta": (False, False)}
"""Range functions a range query computes for all its steps at once: (is_counter, is_rate)."""
SHORT = 64
"""Series up to this many samples find their counter resets in plain Python (a rule's
short window), longer ones with numpy."""


class Stored:
    """One selected series: staleness markers taken out, counter resets indexed.

    ``t``/``v`` are numpy arrays (the vectorised range path reads them);
    ``times``/``values`` the same as lists, made when first asked for (the
    per-step path bisects and slices them).
    """

    def __init__(self, labels: Labels, t: np.ndarray, v: np.ndarray, nan: bool = True) -> None:
        """``nan=False``: the caller found no NaN in ``v``, so no staleness marker either."""
        self.labels = labels
        self.stale: list[float] = []  # times of staleness markers, not in times/values
        if nan and np.isnan(v).any():
            marker = np.isnan(v) & (v.view(np.uint64) == STALE_BITS)
            if marker.any():
                self.stale = t[marker].tolist()
                t, v = t[~marker], v[~marker]
        self.t, self.v = t, v

    @functools.cached_property
    def reset_idx(self) -> np.ndarray:
        """Counter resets: index j where v[j] < v[j - 1]. A window then adds its resets
        without walking every sample, so rate(x[1d]) at short steps costs per reset."""
        return np.flatnonzero(self.v[1:] < self.v[:-1]) + 1

    @functools.cached_property
    def times(self) -> list[float]:
        return self.t.tolist()

    @functools.cached_property
    def values(self) -> list[float]:
        return self.v.tolist()

    @functools.cached_property
    def reset_at(self) -> list[int]:
        if len(self.v) <= SHORT:  # as reset_idx, without numpy's per-call cost
            v = self.values
            return [j for j in range(1, len(v)) if v[j] < v[j - 1]]
        return self.reset_idx.tolist()

    @functools.cached_property
    def reset_by(self) -> list[float]:
        """The value before each reset."""
        if len(self.v) <= SHORT:
            return [self.values[j - 1] for j in self.reset_at]
        return self.v[self.reset_idx - 1].tolist()


def stored_series(series: Series) -> Stored:
    points = series.points
    t = np.fromiter((p[0] for p in points), dtype=np.float64, count=len(points))
    v = np.fromiter((p[1] for p in points), dtype=np.float64, count=len(points))
    return Stored(series.labels, t, v)


def select(store: Store, matchers: Sequence[Matcher], start: float, end: float) -> list[Stored]:
    """The series ``store`` holds for ``matchers`` in [start, end], by columns where it can
    (a store's ``select_columns``: its arrays are used without a copy)."""
    by_columns = getattr(store, "select_columns", None)
    if by_columns is None:
        return [stored_series(s) for s in store.select(matchers, start, end)]
    found: list[Columns] = by_columns(matchers, start, end)
    arrays = [(labels, np.frombuffer(t), np.frombuffer(v)) for labels, t, v in found]
    nan = bool(arrays) and bool(np.isnan(np.concatenate([v for _, _, v in arrays])).any())
    return [Stored(labels, t, v, nan) for labels, t, v in arrays]


def latest_columns(
    store: object, matchers: Sequence[Matcher], start: float, end: float
) -> list[Columns]:
    """Per series matching ``matchers``, its newest sample in [start, end] (a staleness
    marker too): all an instant selector evaluated at ``end`` alone reads. A store's own
    ``latest_columns`` (``alerting.sample_cache``), else its whole window cut."""
    own = getattr(store, "latest_columns", None)
    if own is not None:
        found: list[Columns] = own(matchers, start, end)
        return found
    by_columns = getattr(store, "select_columns", None)
    if by_columns is not None:
        columns: list[Columns] = by_columns(matchers, start, end)
    else:
        columns = [
            (s.labels, array("d", [p[0] for p in s.points]), array("d", [p[1] for p in s.points]))
            for s in cast(Store, store).select(matchers, start, end)
        ]
    return [(labels, t[-1:], v[-1:]) for labels, t, v in columns if len(t)]


def select_latest(
    store: Store, matchers: Sequence[Matcher], start: float, end: float
) -> list[Stored]:
    """``select`` for an instant selector evaluated at ``end`` alone: each series' newest
    sample only, which is all ``_latest`` looks at (the staleness marker included)."""
    found = latest_columns(store, matchers, start, end)
    arrays = [(labels, np.frombuffer(t), np.frombuffer(v)) for labels, t, v in found]
    nan = bool(arrays) and bool(np.isnan(np.concatenate([v for _, _, v in arrays])).any())
    return [Stored(labels, t, v, nan) for labels, t, v in arrays]


def ms(seconds: float) -> float:
    """``seconds`` on Prometheus' millisecond grid, so window edges match stored times exactly."""
    return round(seconds * 1000) / 1000


def bounds(selector: plan.Selector, steps: list[float]) -> list[tuple[float, float, float]]:
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
    bounds_ = bounds(selector, steps)
    out: dict[float, Vector] = {t: [] for t in steps}
    extrapolate = fn.extrapolate
    names = []
    for stored in data:
        budget.check()
        labels = fn.drop_name(stored.labels)
        names.append(labels)
        times, values = stored.times, stored.values
        resets = is_counter and stored.reset_at
        for t, start, end, lo, hi in _spans(times, bounds_):
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
    bounds_ = bounds(selector, steps)
    out: dict[float, Vector] = {t: [] for t in steps}
    names = []
    for stored in data:
        budget.check()
        labels = stored.labels if keep_name else fn.drop_name(stored.labels)
        names.append(labels)
        for t, start, end, lo, hi in _spans(stored.times, bounds_):
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
