"""Range queries evaluated for all steps at once, with numpy.

A range query of ``sum by (x) (rate(m[5m]))`` evaluated step by step builds,
per step and series, a window, a Python float and a label tuple to hash. Here
the expression becomes one ``Block`` per node: a (series × steps) array of
values with a mask of which points exist. Window bounds of every series and
step come from ``searchsorted``; ``rate``/``increase``/``delta`` apply
Prometheus 3's extrapolation to whole arrays, with the same floating-point
operations in the same order as ``promql_functions.extrapolate``; counter
resets are added to the windows holding them in order, as the per-step path
adds them. Aggregations iterate over the members of all groups at once, with
the same Kahan-Neumaier compensation as ``promql_functions.kahan_sum`` (which
takes ``math.fsum`` where nothing cancels: the two may differ in the last bit).

Each block counts its (series × steps) points against the query's sample
budget while it is held, before its arrays are made. ``Vectorizer.block``
answers ``None`` for anything it does not cover — other
functions, binary operators, ``@``, subqueries, series whose labels collide
after ``__name__`` is dropped — and the evaluator then runs its per-step path,
which stays the reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from alerting import promql_functions as fn
from alerting import promql_histograms as hist
from alerting import promql_plan as plan
from alerting.promql_aggregate import group_key
from alerting.promql_series import BATCHED, Stored, bounds
from siem import limits
from siem.model import Labels, Series

WINDOW_FUNCTIONS = frozenset(
    {
        *BATCHED,
        "count_over_time",
        "last_over_time",
        "first_over_time",
        "present_over_time",
        "min_over_time",
        "max_over_time",
    }
)
"""Range functions of a selector computed here (no parameters)."""
AGGREGATIONS = frozenset({"sum", "avg", "min", "max", "count", "group"})
"""Aggregations computed here (no parameter)."""


@dataclass(frozen=True)
class Block:
    """An instant vector at every step: ``values[i, k]`` of series ``labels[i]`` at step
    ``k``, where ``present[i, k]``."""

    labels: list[Labels]
    values: np.ndarray
    present: np.ndarray


class Vectorizer:
    """Blocks of the nodes of one range query over its selected ``data``."""

    def __init__(
        self,
        steps: list[float],
        data: dict[plan.Selector, list[Stored]],
        budget: limits.QueryBudget,
    ) -> None:
        self.steps = steps
        self.data = data
        self.budget = budget

    def block(self, node: plan.Node) -> Block | None:
        """``node`` at every step, or ``None`` where the per-step path must run."""
        if isinstance(node, plan.Call):
            if node.name in WINDOW_FUNCTIONS and len(node.args) == 1:
                selector = node.args[0]
                if isinstance(selector, plan.Selector) and selector.at is None:
                    return self._window_function(node.name, selector)
                return None
            if node.name == "histogram_quantile" and isinstance(node.args[0], plan.Number):
                inner = self.block(node.args[1])
                if inner is None:
                    return None
                rv = self._histogram_quantile(node.args[0].value, inner)
                self.budget.give_back(inner.values.size)  # the inner block is dropped
                return rv
            return None
        if isinstance(node, plan.Aggregate) and node.op in AGGREGATIONS and node.param is None:
            inner = self.block(node.expr)
            if inner is None:
                return None
            rv = self._aggregate(node, inner)
            self.budget.give_back(inner.values.size)  # the inner block is dropped
            return rv
        return None

    # ---- range functions of a selector ------------------------------------------

    def _window_function(self, name: str, selector: plan.Selector) -> Block | None:
        data = self.data[selector]
        keep_name = name in fn.KEEP_NAME
        labels = [s.labels if keep_name else fn.drop_name(s.labels) for s in data]
        if len(set(labels)) < len(labels):
            return None  # the per-step path names the step where they collide
        n, steps = len(data), len(self.steps)
        self.budget.take(n * steps)  # the block's points, counted before they are made
        spans = bounds(selector, self.steps)
        starts = np.array([start for _, start, _ in spans])
        ends = np.array([end for _, _, end in spans])
        lo = np.empty((n, steps), dtype=np.int64)
        hi = np.empty((n, steps), dtype=np.int64)
        offset = 0
        for i, stored in enumerate(data):
            self.budget.check()
            lo[i] = np.searchsorted(stored.t, starts, "right") + offset
            hi[i] = np.searchsorted(stored.t, ends, "right") + offset
            offset += len(stored.t)
        if not offset:
            return Block(labels, np.zeros((n, steps)), np.zeros((n, steps), dtype=bool))
        with np.errstate(all="ignore"):  # NaN and ±Inf samples compute as in Python
            return self._window_values(name, data, labels, spans, lo, hi, offset)

    def _window_values(
        self,
        name: str,
        data: list[Stored],
        labels: list[Labels],
        spans: list[tuple[float, float, float]],
        lo: np.ndarray,
        hi: np.ndarray,
        offset: int,
    ) -> Block:
        n, steps = lo.shape
        times = np.concatenate([s.t for s in data])
        values = np.concatenate([s.v for s in data])
        starts = np.array([start for _, start, _ in spans])
        ends = np.array([end for _, _, end in spans])
        count = hi - lo
        first = np.minimum(lo, offset - 1)
        last = np.maximum(hi - 1, 0)
        if name in BATCHED:
            result = values[last] - values[first]
            is_counter, is_rate = BATCHED[name]
            if is_counter:
                _add_resets(values, data, result, lo, hi)
            widths = np.array([round((end - start) * 1000) / 1000 for _, start, end in spans])
            out = _extrapolate(
                result,
                times[first],
                times[last],
                values[first],
                count,
                starts,
                ends,
                widths if is_rate else None,
                is_counter=is_counter,
            )
            return Block(labels, out, count >= 2)
        present = count >= 1
        if name in {"min_over_time", "max_over_time"}:
            reduce = np.fmin if name == "min_over_time" else np.fmax
            # reduceat over (lo, hi) pairs: the even results are the windows' reductions
            pairs = np.empty(2 * n * steps, dtype=np.int64)
            pairs[0::2] = lo.ravel()
            pairs[1::2] = hi.ravel()
            padded = np.append(values, math.nan)
            out = reduce.reduceat(padded, pairs)[0::2].reshape(n, steps)
        elif name == "count_over_time":
            out = count.astype(np.float64)
        elif name == "present_over_time":
            out = np.ones((n, steps))
        elif name == "last_over_time":
            out = values[last]
        else:
            assert name == "first_over_time"
            out = values[first]
        return Block(labels, out, present)

    # ---- aggregations and histograms --------------------------------------------

    def _aggregate(self, node: plan.Aggregate, inner: Block) -> Block:
        groups: dict[Labels, list[int]] = {}
        for i, labels in enumerate(inner.labels):
            groups.setdefault(group_key(labels, node.mode, node.names), []).append(i)
        steps = len(self.steps)
        size = max((len(rows) for rows in groups.values()), default=0)
        members = np.full((len(groups), size), -1, dtype=np.int64)
        for g, rows in enumerate(groups.values()):
            members[g, : len(rows)] = rows
        shape = (len(groups), steps)
        self.budget.take(len(groups) * steps)
        total, c = np.zeros(shape), np.zeros(shape)
        extreme = np.full(shape, math.nan)
        count = np.zeros(shape)
        op = node.op
        with np.errstate(all="ignore"):
            for r in range(size):
                self.budget.check()
                member = members[:, r]
                taken = inner.present[member] & (member >= 0)[:, None]
                inc = inner.values[member]
                count += taken
                if op in {"sum", "avg"}:
                    total, c = _kahan_step(total, c, inc, taken)
                elif op in {"min", "max"}:
                    better = np.fmin(extreme, inc) if op == "min" else np.fmax(extreme, inc)
                    extreme = np.where(taken, better, extreme)
            present = count > 0
            if op == "sum":
                out = np.where(np.isfinite(total), total + c, total)
            elif op == "avg":
                out = total / count + c / count
                overflow = present & ~np.isfinite(total)
                for g, k in zip(*np.nonzero(overflow), strict=True):
                    rows = [i for i in groups[list(groups)[g]] if inner.present[i, k]]
                    out[g, k] = fn.kahan_mean([float(inner.values[i, k]) for i in rows])
            elif op in {"min", "max"}:
                out = extreme
            elif op == "count":
                out = count
            else:
                out = np.ones(shape)
        return Block(list(groups), out, present)

    def _histogram_quantile(self, phi: float, inner: Block) -> Block:
        groups: dict[Labels, list[tuple[float, int]]] = {}
        for i, labels in enumerate(inner.labels):
            try:
                upper = float(dict(labels)["le"])
            except (KeyError, ValueError):
                continue  # as hist.histogram_quantile: no parsable ``le``, no bucket
            key = tuple(pair for pair in fn.drop_name(labels) if pair[0] != "le")
            groups.setdefault(key, []).append((upper, i))
        shape = (len(groups), len(self.steps))
        self.budget.take(len(groups) * len(self.steps))
        out = np.zeros(shape)
        present = np.zeros(shape, dtype=bool)
        columns = inner.values.T.tolist()
        exists = inner.present.T.tolist()
        for g, members in enumerate(groups.values()):
            self.budget.check()
            for k, (column, there) in enumerate(zip(columns, exists, strict=True)):
                buckets = [(upper, column[i]) for upper, i in members if there[i]]
                if buckets:
                    out[g, k] = hist.bucket_quantile(phi, buckets)
                    present[g, k] = True
        return Block(list(groups), out, present)


def _add_resets(
    values: np.ndarray, data: list[Stored], result: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> None:
    """Add the value before each counter reset (``values[j] < values[j - 1]``, in the series'
    flat concatenation) to the windows holding it (``lo < j < hi``), in ascending order of
    the resets, as the per-step path adds them."""
    firsts = np.cumsum([0, *(len(s.t) for s in data)])[:-1]
    drops = np.flatnonzero(values[1:] < values[:-1]) + 1
    drops = drops[~np.isin(drops, firsts)]  # a series' first sample follows another series
    owners = np.searchsorted(firsts, drops, "right") - 1
    for at, i in zip(drops.tolist(), owners.tolist(), strict=True):
        k0 = int(np.searchsorted(hi[i], at, "right"))  # first window with hi > at
        k1 = int(np.searchsorted(lo[i], at, "left"))  # first window with lo >= at
        if k0 < k1:
            result[i, k0:k1] += values[at - 1]


def _kahan_step(
    total: np.ndarray, c: np.ndarray, inc: np.ndarray, taken: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One Kahan-Neumaier step (as ``promql_functions._kahan``) where ``taken``."""
    t = total + inc
    comp = np.where(np.abs(total) >= np.abs(inc), (total - t) + inc, (inc - t) + total)
    return np.where(taken, t, total), np.where(taken, c + comp, c)


def _extrapolate(
    result: np.ndarray,
    first_t: np.ndarray,
    last_t: np.ndarray,
    first_value: np.ndarray,
    count: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    widths: np.ndarray | None,
    *,
    is_counter: bool,
) -> np.ndarray:
    """``promql_functions.extrapolate`` over arrays, operation for operation."""
    with np.errstate(all="ignore"):
        # durations from integer milliseconds, as promql_functions.extrapolate computes them
        first_ms, last_ms = np.round(first_t * 1000), np.round(last_t * 1000)
        sampled = (last_ms - first_ms) / 1000
        average = sampled / (count - 1)
        threshold = average * 1.1
        to_start = (first_ms - np.round(starts * 1000)) / 1000
        to_end = (np.round(ends * 1000) - last_ms) / 1000
        to_start = np.where(to_start >= threshold, average / 2, to_start)
        if is_counter:
            to_zero = sampled * (first_value / result)
            lower = (result > 0) & (first_value >= 0) & (to_zero < to_start)
            to_start = np.where(lower, to_zero, to_start)
        to_end = np.where(to_end >= threshold, average / 2, to_end)
        factor = np.where(sampled != 0, (sampled + to_start + to_end) / sampled, 1.0)
        if widths is not None:
            factor = factor / widths
        return result * factor


def series(block: Block, steps: Sequence[float], budget: limits.QueryBudget) -> list[Series]:
    """The range query's result: one Series per label set with its points, sorted
    (they replace the block in the sample budget)."""
    rv = []
    budget.give_back(block.values.size)
    full = cast(list[bool], block.present.all(axis=1).tolist())
    budget.take(int(block.present.sum()))
    for labels, row, there, complete in zip(
        block.labels, block.values.tolist(), block.present.tolist(), full, strict=True
    ):
        if complete:
            points = tuple(zip(steps, row, strict=True))
        else:
            points = tuple((t, v) for t, v, p in zip(steps, row, there, strict=True) if p)
        if points:
            rv.append(Series(labels, points))
    rv.sort(key=lambda s: s.labels)
    return rv
