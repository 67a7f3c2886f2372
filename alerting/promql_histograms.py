"""Classic histograms (``_bucket`` series with an ``le`` label): quantiles and fractions.

As Prometheus' ``promql/quantile.go`` computes them for classic buckets; native
histograms are refused when an expression is compiled.
"""

from __future__ import annotations

import math
import sys
from bisect import bisect_left
from collections.abc import Sequence

from alerting.promql_functions import Vector, drop_name
from siem.model import Labels


def histogram_quantile(phi: float, vector: Vector) -> Vector:
    """The φ-quantile of classic histograms: buckets grouped by labels except ``le``.

    Interpolates linearly inside the bucket holding the rank; a quantile in the
    ``+Inf`` bucket is the upper bound of the highest finite bucket; a histogram
    without a ``+Inf`` bucket or without observations gives NaN.
    """
    return [(key, bucket_quantile(phi, buckets)) for key, buckets in _histograms(vector).items()]


def _histograms(vector: Vector) -> dict[Labels, list[tuple[float, float]]]:
    """The ``(le, count)`` buckets of each histogram: series grouped by labels but ``le``."""
    groups: dict[Labels, list[tuple[float, float]]] = {}
    for labels, value in vector:
        as_dict = dict(labels)
        try:
            upper = float(as_dict["le"])
        except (KeyError, ValueError):
            continue  # Prometheus ignores series without a parsable ``le``.
        key = tuple(pair for pair in drop_name(labels) if pair[0] != "le")
        groups.setdefault(key, []).append((upper, value))
    return groups


def histogram_quantiles(vector: Vector, label: str, phis: Sequence[float]) -> Vector:
    """``histogram_quantiles(v, "q", 0.5, 0.9)``: one series per histogram and φ,
    with the φ (as OpenMetrics writes it) in ``label``."""
    groups = _histograms(vector)
    rv: Vector = []
    for phi in phis:
        shown = _openmetrics_float(phi)
        for key, buckets in groups.items():
            labels = tuple(sorted([*(p for p in key if p[0] != label), (label, shown)]))
            rv.append((labels, bucket_quantile(phi, buckets)))
    return rv


def _openmetrics_float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)  # 0.5, 1.0, 1e-05: as Go's FormatOpenMetricsFloat for quantiles


def histogram_fraction(lower: float, upper: float, vector: Vector) -> Vector:
    """The fraction of observations between ``lower`` and ``upper`` in each classic histogram."""
    return [
        (key, bucket_fraction(lower, upper, buckets))
        for key, buckets in _histograms(vector).items()
    ]


def bucket_fraction(lower: float, upper: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' ``BucketFraction``: linear interpolation inside the buckets holding
    ``lower`` and ``upper``; nothing counted from a bucket with an infinite bound."""
    merged: dict[float, float] = {}
    for bound, count in buckets:
        merged[bound] = merged.get(bound, 0.0) + count
    bounds = sorted(merged)
    if bounds[-1] != math.inf:
        return math.nan
    total = merged[math.inf]
    if total == 0 or math.isnan(lower) or math.isnan(upper):
        return math.nan
    if lower >= upper:
        return 0.0
    rank = lower_rank = upper_rank = 0.0
    lower_set = upper_set = False
    below = 0.0 if bounds[0] > 0 else -math.inf
    for i, bound in enumerate(bounds):
        if i > 0:
            below = bounds[i - 1]
        count = merged[bound]
        if not lower_set and below >= lower:
            lower_rank, lower_set = rank, True
        if not upper_set and below >= upper:
            upper_rank, upper_set = rank, True
        if lower_set and upper_set:
            break
        if not lower_set and below < lower < bound:
            lower_rank, lower_set = _interpolate(lower, rank, count, below, bound), True
        if not upper_set and below < upper < bound:
            upper_rank, upper_set = _interpolate(upper, rank, count, below, bound), True
        if lower_set and upper_set:
            break
        rank = count
    if not lower_set or lower_rank > total:
        lower_rank = total
    if not upper_set or upper_rank > total:
        upper_rank = total
    return (upper_rank - lower_rank) / total


def _interpolate(v: float, rank: float, count: float, below: float, bound: float) -> float:
    """Cumulative count at ``v`` inside the bucket ``(below, bound]``; none from an
    infinite bucket (for ``+Inf`` the second term is 0, for ``-Inf`` it is skipped)."""
    if below == -math.inf:
        return count
    return rank + (count - rank) * (v - below) / (bound - below)


SMALL_DELTA = 1e-12
"""Relative difference below which two cumulative counts are taken as equal (Prometheus 3's
``smallDeltaTolerance``): float noise from ``rate`` and ``sum`` is not a real bucket."""
MIN_NORMAL = 2.2250738585072014e-308


def _monotonic(counts: list[float]) -> list[float]:
    """``counts`` made non-decreasing as Prometheus 3's ``ensureMonotonicAndIgnoreSmallDeltas``:
    a count that dips (rate noise, inconsistent scrapes) or differs from the one before by
    a relative 1e-12 or less takes that one's value."""
    prev = counts[0]
    for i in range(1, len(counts)):
        curr = counts[i]
        if curr == prev:
            continue
        if curr < prev or _almost_equal(prev, curr):
            counts[i] = prev
            continue
        prev = curr
    return counts


def _almost_equal(a: float, b: float) -> bool:
    """Prometheus' ``almost.Equal(a, b, 1e-12)`` (NaN equals NaN)."""
    if a != a or b != b:
        return a != a and b != b
    if a == b:
        return True
    abs_sum = abs(a) + abs(b)
    diff = abs(a - b)
    if a == 0 or b == 0 or abs_sum < MIN_NORMAL:
        return diff < SMALL_DELTA * MIN_NORMAL
    return diff / min(abs_sum, sys.float_info.max) < SMALL_DELTA


def bucket_quantile(phi: float, buckets: list[tuple[float, float]]) -> float:
    """Quantile ``phi`` of cumulative ``(upper_bound, count)`` buckets (any order)."""
    if math.isnan(phi):
        return math.nan
    if phi < 0:
        return -math.inf
    if phi > 1:
        return math.inf
    merged: dict[float, float] = {}
    for upper, count in buckets:
        merged[upper] = merged.get(upper, 0.0) + count
    bounds = sorted(merged)
    if len(bounds) < 2 or bounds[-1] != math.inf:
        return math.nan
    counts = _monotonic([merged[upper] for upper in bounds])
    total = counts[-1]
    if total == 0 or math.isnan(total):
        return math.nan
    rank = phi * total
    index = bisect_left(counts, rank, hi=len(counts) - 1)
    if index == len(bounds) - 1:
        return bounds[-2]
    if index == 0 and bounds[0] <= 0:
        return bounds[0]
    start, count = 0.0, counts[index]
    if index > 0:
        start = bounds[index - 1]
        count -= counts[index - 1]
        rank -= counts[index - 1]
    if count == 0:
        return math.nan  # φ = 0 over an empty first bucket: 0/0 in Prometheus.
    return start + (bounds[index] - start) * (rank / count)
