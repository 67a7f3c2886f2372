"""PromQL aggregation operators over one instant vector, as Prometheus 3 computes them.

``sum`` and ``avg`` use compensated summation (``avg`` switches to an
incremental mean instead of overflowing), ``stddev``/``stdvar`` Welford's
method, ``quantile`` linear interpolation; ``topk``/``bottomk``/``limitk``
keep the input labels (``__name__`` included), ``count_values`` adds a label
holding each value formatted as Go formats it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

from alerting.promql_functions import (
    PromQLError,
    Vector,
    kahan_mean,
    kahan_sum,
    quantile,
)
from alerting.promql_vector_functions import format_float
from siem.model import METRIC_NAME, Labels


@functools.lru_cache(maxsize=65_536)
def group_key(labels: Labels, mode: str | None, names: tuple[str, ...]) -> Labels:
    """The output labels of an aggregation group: ``by`` keeps, ``without`` drops names."""
    if mode == "by":
        keep = set(names)
        return tuple(pair for pair in labels if pair[0] in keep)
    if mode == "without":
        drop = set(names) | {METRIC_NAME}
        return tuple(pair for pair in labels if pair[0] not in drop)
    return ()


def _min_max(values: list[float], *, max_: bool) -> float:
    rv = values[0]
    for value in values:
        if (rv < value if max_ else rv > value) or math.isnan(rv):
            rv = value
    return rv


def _stdvar(values: list[float]) -> float:
    first = values[0]
    if math.isnan(first) or math.isinf(first):
        total, mean = math.nan, first
    else:
        total, mean = 0.0, first
    count = 1.0
    for value in values[1:]:
        count += 1
        step = value - mean
        mean += step / count
        total += step * (value - mean)
    return total / count


REDUCERS: dict[str, Callable[[list[float]], float]] = {
    "sum": kahan_sum,
    "avg": kahan_mean,
    "min": lambda vs: _min_max(vs, max_=False),
    "max": lambda vs: _min_max(vs, max_=True),
    "count": lambda vs: float(len(vs)),
    "group": lambda vs: 1.0,
    "stdvar": _stdvar,
    "stddev": lambda vs: math.sqrt(_stdvar(vs)),
}
"""Aggregations reducing the values of one group to one number."""


def aggregate(
    op: str,
    vector: Vector,
    mode: str | None,
    names: Sequence[str],
    param: float | str | None = None,
    keys: dict[Labels, Labels] | None = None,
) -> Vector:
    """``op by|without (names) ([param,] vector)``: the aggregated vector.

    ``keys`` remembers each series' group across the steps of a range query
    (the caller keeps one dict per aggregation node).
    """
    if op in {"topk", "bottomk", "limitk"}:
        assert isinstance(param, float)
        return _select_k(op, vector, mode, names, param)
    if op == "count_values":
        assert isinstance(param, str)
        return _count_values(vector, mode, names, param)
    groups: dict[Labels, list[float]] = {}
    if keys is None:
        keys = {}
    names = tuple(names)
    for labels, value in vector:
        key = keys.get(labels)
        if key is None:
            key = keys[labels] = group_key(labels, mode, names)
        group = groups.get(key)
        if group is None:
            groups[key] = [value]
        else:
            group.append(value)
    if op == "quantile":
        assert isinstance(param, float)
        return [(key, quantile(param, values)) for key, values in groups.items()]
    reduce = REDUCERS[op]
    return [(key, reduce(values)) for key, values in groups.items()]


def _select_k(op: str, vector: Vector, mode: str | None, names: Sequence[str], k: float) -> Vector:
    """``topk``/``bottomk`` (largest/smallest, NaN last) and ``limitk`` (first k), per group."""
    if math.isnan(k):
        raise PromQLError(f"parameter value is NaN for {op}")
    if k < 1:
        return []
    count = int(min(k, len(vector)))
    groups: dict[Labels, Vector] = {}
    for sample in vector:
        groups.setdefault(group_key(sample[0], mode, tuple(names)), []).append(sample)
    rv: Vector = []
    for members in groups.values():
        if op == "limitk":
            rv.extend(members[:count])
            continue
        numbers = [s for s in members if not math.isnan(s[1])]
        numbers.sort(key=lambda s: s[1], reverse=op == "topk")
        rv.extend((numbers + [s for s in members if math.isnan(s[1])])[:count])
    return rv


def _count_values(vector: Vector, mode: str | None, names: Sequence[str], label: str) -> Vector:
    counts: dict[Labels, float] = {}
    for labels, value in vector:
        key = dict(group_key(labels, mode, tuple(names)))
        key[label] = format_float(value)
        out = tuple(sorted(key.items()))
        counts[out] = counts.get(out, 0.0) + 1
    return list(counts.items())
