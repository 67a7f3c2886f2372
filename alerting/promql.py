"""A PromQL evaluator over stored samples, with Prometheus 3's semantics (floats only).

Expressions are parsed by ``promql_parser`` and compiled once (cached) into a
plan of frozen nodes (``alerting.promql_plan``); evaluation selects each
selector's series from the ``Store`` once for the whole query — the time span
widened by ranges, offsets, ``@`` and subqueries — and slices them in memory
per step with ``bisect``. In a range query, a range function of a selector is
computed for all steps at once (``promql_series``); subquery steps shared by
outer steps are evaluated once.

Modules: ``promql_plan`` (compile and check), ``promql_functions`` (range
functions, summation), ``promql_vector_functions`` (math, dates, labels,
sorting), ``promql_histograms`` (classic histograms), ``promql_aggregate``,
``promql_ops`` (binary operators), ``promql_series`` (stored series, batches),
``promql_syntax`` (limits and error positions).

``Engine.instant`` answers vectors and scalars (rules), ``Engine.query`` any
expression as Prometheus' instant query API does (a ``Matrix`` for a range
vector, a ``str`` for a string), ``Engine.value_type`` says which, and
``Engine.range`` answers range queries.

>>> engine = Engine(store)                                          # doctest: +SKIP
>>> engine.instant('sum by (job) (rate(http_requests_total[1m]))', at=now)  # doctest: +SKIP
[InstantSample(labels=(('job', 'shop'),), value=12.5)]
>>> engine.query('http_requests_total[5m]', at=now)                # doctest: +SKIP
Matrix(series=(Series(labels=..., points=((..., 10.0), ...)),))

Supported: every function of Prometheus' function list except the
native-histogram ones (``histogram_count``, ``histogram_sum``...; refused
when compiled, with a position; ``histogram_quantile(s)`` and
``histogram_fraction`` work on classic buckets), every aggregation (``limit_ratio`` and
``info`` excepted), all binary operators with ``bool``, ``on``/``ignoring``,
``group_left``/``group_right``, subqueries (steps aligned to absolute
multiples of the subquery step; default step ``subquery_step``), ``offset``
(negative too) and ``@`` with ``start()``/``end()``. Where Prometheus 2 and 3
differ, Vigil follows Prometheus 3:

- windows are left-open: an instant selector takes the newest sample in
  ``(t - lookback, t]``, a range selector the samples in ``(t - range, t]``;
- ``holt_winters`` is accepted as the old name of ``double_exponential_smoothing``;
- ``last_over_time``/``first_over_time`` keep ``__name__``;
- ``sum``/``avg``/``*_over_time`` use compensated summation; ``avg`` switches
  to an incremental mean instead of overflowing.

Staleness: a stored staleness marker (the NaN ``siem.model.STALE_NAN``)
ends its series — an instant selector past it finds nothing, range windows
skip it. docs/promql.md lists every remaining difference from Prometheus.

Limits: ``promql_syntax.check_shape`` rejects too long or too deep text before
the parser sees it; regex matchers are RE2 (``siem.model.Matcher``); every
evaluation runs under a ``siem.limits.QueryBudget`` (samples, deadline,
cancellation), checked per step and per series.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

from alerting import promql_functions as fn
from alerting import promql_histograms as hist
from alerting import promql_plan as plan
from alerting import promql_vector_functions as vf
from alerting.promql_aggregate import aggregate
from alerting.promql_functions import PromQLError
from alerting.promql_series import (
    BATCHED,
    Stored,
    batch_extrapolated,
    batch_windows,
    ms,
    select,
    select_latest,
    window_of,
)
from alerting.promql_syntax import MAX_DEPTH, MAX_LENGTH, check_shape
from alerting.promql_vectorized import Block, Vectorizer
from alerting.promql_vectorized import series as vectorized_series
from siem import limits
from siem.model import Labels, Series, Store

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "Engine",
    "InstantSample",
    "Matrix",
    "PromQLError",
    "check_shape",
]

MAX_STEPS = 11_000
"""Most points a range evaluation computes per series, as Prometheus limits it."""
MAX_SUBQUERY_STEPS = 11_000
"""Most inner evaluations one subquery window may take."""
VECTORIZED = True
"""Range queries the vectorised path covers run there (``promql_vectorized``); tests
turn it off to compare with the per-step path."""

Vector = fn.Vector
NO_LABELS: Labels = ()


@dataclass(frozen=True)
class InstantSample:
    """One element of an instant vector result.

    ``labels`` lose ``__name__`` where Prometheus drops it (functions,
    aggregations, arithmetic, ``bool`` comparisons).
    """

    labels: Labels
    value: float


@dataclass(frozen=True)
class Matrix:
    """The result of an instant query of a range vector (``m[5m]``): each series' raw points."""

    series: tuple[Series, ...]


QueryResult = list[InstantSample] | float | Matrix | str


class Engine:
    """Evaluates PromQL over a ``Store``; safe to share, holds no per-query state.

    Each evaluation runs under the ``siem.limits.QueryBudget`` in scope (the web
    API opens one per request, with cancellation), else under a fresh one with
    this engine's ``max_samples`` and ``timeout_s`` (Prometheus'
    ``--query.max-samples`` and ``--query.timeout``). Samples loaded by the
    store and points held in a range result count against the budget.
    ``subquery_step`` is the step of a subquery written without one (``x[1h:]``),
    Prometheus' global evaluation interval.
    """

    def __init__(
        self,
        store: Store,
        *,
        lookback: float = 300.0,
        max_samples: int = limits.DEFAULT_MAX_SAMPLES,
        timeout_s: float = limits.DEFAULT_TIMEOUT_S,
        subquery_step: float = 60.0,
    ) -> None:
        self.store = store
        self.lookback = lookback
        self.max_samples = max_samples
        self.timeout_s = timeout_s
        self.subquery_step = subquery_step

    def check(self, expr: str) -> None:
        """Parse ``expr`` and verify it evaluates to a vector or scalar (for rule loading)."""
        self._compile_instant(expr)

    def value_type(self, expr: str) -> plan.Kind:
        """``"vector"``, ``"scalar"``, ``"matrix"`` or ``"string"``: what ``query`` returns."""
        return plan.kind(plan.compile_expr(expr))

    def new_budget(self) -> limits.QueryBudget:
        """A budget with this engine's limits, e.g. for an event query run beside it."""
        return limits.QueryBudget(self.max_samples, self.timeout_s)

    def _budget(self) -> limits.QueryBudget:
        return limits.current() or self.new_budget()

    def _compile_instant(self, expr: str) -> plan.Node:
        node = plan.compile_expr(expr)
        kind = plan.kind(node)
        if kind == "matrix":
            raise PromQLError(
                "a range vector cannot be the result of an expression here; "
                "wrap it in a function such as rate() or avg_over_time()",
                expr=expr,
            )
        if kind == "string":
            raise PromQLError("a string cannot be the result of an expression here", expr=expr)
        return node

    def instant(self, expr: str, at: float) -> list[InstantSample] | float:
        """The value of a vector or scalar ``expr`` at time ``at``.

        A vector comes sorted by labels, except after ``sort*``, ``topk`` or
        ``bottomk``, whose order it keeps (as Prometheus does).
        """
        rv = self._query(self._compile_instant(expr), expr, float(at))
        assert isinstance(rv, list | float)
        return rv

    def query(self, expr: str, at: float) -> QueryResult:
        """Any expression at time ``at``, as Prometheus' instant query API answers it:
        a vector, a scalar, a ``Matrix`` for a range vector, or a string."""
        return self._query(plan.compile_expr(expr), expr, float(at))

    def _query(self, node: plan.Node, expr: str, at: float) -> QueryResult:
        with self._budget().active() as budget:
            evaluation = _Evaluation(self, node, at, at, budget)
            try:
                rv = evaluation.eval(node, at)
                if plan.kind(node) == "matrix":
                    return _matrix(rv)  # type: ignore[arg-type]
                if isinstance(rv, float | str):
                    return rv
                vector = _Evaluation.as_vector(rv)  # checked for duplicates by its node
            except PromQLError as exc:
                raise _located(exc, expr) from None
        if isinstance(node, plan.Call | plan.Aggregate) and _keeps_order(node):
            return [InstantSample(labels, value) for labels, value in vector]
        return [InstantSample(labels, value) for labels, value in sorted(vector)]

    def range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        """``expr`` at ``start``, ``start + step``... up to ``end``: one Series per label set.

        A scalar result comes back as one Series with no labels.
        """
        start, end, step = float(start), float(end), float(step)
        if step <= 0 or end < start:
            raise PromQLError(
                f"bad range: need step > 0 and end >= start (got {start}..{end}/{step})"
            )
        count = math.floor((end - start) / step + 1e-9) + 1
        if count > MAX_STEPS:
            raise PromQLError(f"too many steps ({count} > {MAX_STEPS}); use a larger step")
        node = self._compile_instant(expr)
        with self._budget().active() as budget:
            evaluation = _Evaluation(self, node, start, end, budget, step)
            budget.stage = "expression evaluation"
            block = evaluation.block(node)
            if block is not None:  # every step at once
                return vectorized_series(block, evaluation.steps, budget)
            points: dict[Labels, list[tuple[float, float]]] = {}
            try:
                for i in range(count):
                    budget.check()
                    t = float(start + i * step)
                    rv = evaluation.eval(node, t)
                    # every node checks its own result for duplicate label sets
                    vector = (
                        [(NO_LABELS, rv)] if isinstance(rv, float) else _Evaluation.as_vector(rv)
                    )
                    budget.take(len(vector))
                    for labels, value in vector:
                        points.setdefault(labels, []).append((t, value))
            except PromQLError as exc:
                raise _located(exc, expr) from None
        return [Series(labels, tuple(pts)) for labels, pts in sorted(points.items())]


def _located(exc: PromQLError, expr: str) -> PromQLError:
    """An evaluation error, naming the expression it came from."""
    if exc.expr is not None:
        return exc
    return PromQLError(str(exc), expr=expr, offset=exc.offset)


def _keeps_order(node: plan.Call | plan.Aggregate) -> bool:
    if isinstance(node, plan.Call):
        return node.name in {"sort", "sort_desc", "sort_by_label", "sort_by_label_desc"}
    return node.op in {"topk", "bottomk"}


def _matrix(windows: list[fn.Window]) -> Matrix:
    series = [
        Series(w.labels, tuple(zip(w.times, w.values, strict=True))) for w in windows if w.values
    ]
    return Matrix(tuple(sorted(series, key=lambda s: s.labels)))


Value = Vector | float | str | list[fn.Window]


class _Evaluation:
    """One query's evaluation over data fetched in advance; ``eval`` runs per step."""

    def __init__(
        self,
        engine: Engine,
        node: plan.Node,
        start: float,
        end: float,
        budget: limits.QueryBudget,
        step: float = 0.0,
    ) -> None:
        self.lookback = engine.lookback
        self.subquery_step = engine.subquery_step
        self.start, self.end, self.step = start, end, step
        self.steps: list[float] = []
        if step > 0:
            count = math.floor((end - start) / step + 1e-9) + 1
            self.steps = [float(start + i * step) for i in range(count)]
        self.batches: dict[int, dict[float, Vector]] = {}
        self.step_index = {t: k for k, t in enumerate(self.steps)}
        self.blocks: dict[int, Block | None] = {}  # per node, vectorised or not
        self.vectorizer: Vectorizer | None = None
        self.group_keys: dict[int, dict[Labels, Labels]] = {}  # per aggregation node
        self.budget = budget
        self.cache: dict[tuple[int, int], Value] = {}
        spans: dict[plan.Selector, tuple[float, float]] = {}
        self._spans(node, start, end, spans)
        self.data: dict[plan.Selector, list[Stored]] = {}
        # an instant query without subqueries reads each instant selector at one time:
        # only each series' newest sample matters (``_latest``)
        single = not step and start == end and not plan.has_subquery(node)
        for selector, (lo, hi) in spans.items():
            limits.check()
            if single and selector.range is None:
                # ``_latest`` takes samples up to ``ms(hi)``, which may round below ``hi``
                end = min(hi, ms(hi))
                self.data[selector] = select_latest(engine.store, selector.matchers, lo, end)
            else:
                self.data[selector] = select(engine.store, selector.matchers, lo, hi)
        if self.steps and VECTORIZED:
            self.vectorizer = Vectorizer(self.steps, self.data, budget)

    def block(self, node: plan.Node) -> Block | None:
        """``node`` at every step of a range query, where the vectorised path covers it."""
        if self.vectorizer is None:
            return None
        key = id(node)
        if key not in self.blocks:
            self.blocks[key] = self.vectorizer.block(node)
        return self.blocks[key]

    def _from_block(self, node: plan.Call | plan.Aggregate, t: float) -> Vector | None:
        """``node`` at step ``t`` of a range query from its block, if it has one (a
        vectorised part inside an expression evaluated step by step)."""
        k = self.step_index.get(t)
        if k is None:
            return None  # not a step of the query: a subquery's inner time
        block = self.block(node)
        if block is None:
            return None
        there = block.present[:, k]
        values = block.values[:, k].tolist()
        if there.all():
            return list(zip(block.labels, values, strict=True))
        return [(block.labels[i], values[i]) for i in np.flatnonzero(there).tolist()]

    def _at(self, at: plan.At, t: float) -> float:
        if at is None:
            return t
        if at == "start":
            return self.start
        if at == "end":
            return self.end
        return at

    def _spans(
        self,
        node: plan.Node,
        lo: float,
        hi: float,
        out: dict[plan.Selector, tuple[float, float]],
    ) -> None:
        """The time span each selector must load so every step's window is covered."""
        if isinstance(node, plan.Selector | plan.Subquery):
            if node.at is not None:
                lo = hi = self._at(node.at, lo)
            lo, hi = lo - node.offset, hi - node.offset
            if isinstance(node, plan.Subquery):
                self._spans(node.expr, lo - node.range, hi, out)
                return
            width = node.range if node.range is not None else self.lookback
            old = out.get(node)
            lo -= width
            out[node] = (min(lo, old[0]), max(hi, old[1])) if old else (lo, hi)
            return
        if isinstance(node, plan.Call):
            for arg in node.args:
                self._spans(arg, lo, hi, out)
        elif isinstance(node, plan.Aggregate | plan.Negate):
            self._spans(node.expr, lo, hi, out)
            if isinstance(node, plan.Aggregate) and node.param is not None:
                self._spans(node.param, lo, hi, out)
        elif isinstance(node, plan.Binary):
            self._spans(node.lhs, lo, hi, out)
            self._spans(node.rhs, lo, hi, out)

    # ---- evaluation -------------------------------------------------------------

    def eval(self, node: plan.Node, t: float) -> Value:
        if isinstance(node, plan.Number):
            return node.value
        if isinstance(node, plan.String):
            return node.value
        if isinstance(node, plan.Selector):
            if node.range is None:
                return self._instant_selector(node, t)
            return self._windows(node, t)
        if isinstance(node, plan.Subquery):
            return self._subquery(node, t)
        if isinstance(node, plan.Negate):
            inner = self.eval(node.expr, t)
            if isinstance(inner, float):
                return -inner
            vector = self.as_vector(inner)
            return fn.check_unique([(fn.drop_name(labels), -value) for labels, value in vector])
        if isinstance(node, plan.Aggregate | plan.Call) and self.vectorizer is not None:
            from_block = self._from_block(node, t)
            if from_block is not None:
                return from_block
        if isinstance(node, plan.Aggregate):
            param: float | str | None = None
            if node.param is not None:
                value = self.eval(node.param, t)
                assert isinstance(value, float | str)
                param = value
            keys = self.group_keys.setdefault(id(node), {})
            vector = self.vector(node.expr, t)
            return aggregate(node.op, vector, node.mode, node.names, param, keys)
        if isinstance(node, plan.Call):
            return self._call(node, t)
        return self._binary(node, t)

    @staticmethod
    def as_vector(value: Value) -> Vector:
        assert isinstance(value, list)
        return value  # type: ignore[return-value]

    def vector(self, node: plan.Node, t: float) -> Vector:
        rv = self.eval(node, t)
        if not isinstance(rv, list):
            raise PromQLError("expected an instant vector, got a scalar")
        return rv  # type: ignore[return-value]

    def scalar(self, node: plan.Node, t: float) -> float:
        rv = self.eval(node, t)
        if not isinstance(rv, float):
            raise PromQLError("expected a scalar, got an instant vector")
        return rv

    def string(self, node: plan.Node) -> str:
        assert isinstance(node, plan.String)
        return node.value

    def _latest(self, selector: plan.Selector, t: float) -> list[tuple[Stored, int]]:
        """Per series, the index of its newest sample in ``(ref - lookback, ref]``, unless stale."""
        ref = ms(self._at(selector.at, t) - selector.offset)
        floor = ms(ref - self.lookback)
        rv = []
        for stored in self.data[selector]:
            hi = bisect.bisect_right(stored.times, ref)
            if not hi or stored.times[hi - 1] <= floor:
                continue
            if stored.stale:
                newest = stored.times[hi - 1]
                if bisect.bisect_right(stored.stale, ref) > bisect.bisect_right(
                    stored.stale, newest
                ):
                    continue  # a staleness marker after the newest sample ends the series
            rv.append((stored, hi - 1))
        return rv

    def _instant_selector(self, selector: plan.Selector, t: float) -> Vector:
        return [(stored.labels, stored.values[i]) for stored, i in self._latest(selector, t)]

    def _windows(self, selector: plan.Selector, t: float) -> list[fn.Window]:
        assert selector.range is not None
        end = ms(self._at(selector.at, t) - selector.offset)
        start = ms(end - selector.range)
        rv = []
        for stored in self.data[selector]:
            self.budget.check()
            lo = bisect.bisect_right(stored.times, start)
            hi = bisect.bisect_right(stored.times, end)
            if lo < hi:
                rv.append(window_of(stored, lo, hi, start, end, t))
        return rv

    def _subquery(self, node: plan.Subquery, t: float) -> list[fn.Window]:
        """The inner expression at every step-aligned time in ``(ref - range, ref]``."""
        ref = self._at(node.at, t) - node.offset
        step_ms = round((node.step or self.subquery_step) * 1000)
        ref_ms = round(ref * 1000)
        low_ms = ref_ms - round(node.range * 1000)
        first = (low_ms // step_ms) * step_ms
        if first <= low_ms:
            first += step_ms
        if (ref_ms - first) // step_ms >= MAX_SUBQUERY_STEPS:
            raise PromQLError(
                f"subquery takes more than {MAX_SUBQUERY_STEPS} steps; use a larger step"
            )
        series: dict[Labels, tuple[list[float], list[float]]] = {}
        key = id(node)
        for when_ms in range(first, ref_ms + 1, step_ms):
            self.budget.check()
            cached = self.cache.get((key, when_ms))
            if cached is None:
                cached = self.eval(node.expr, when_ms / 1000)
                self.cache[(key, when_ms)] = cached
                # held for the rest of the query: counts like loaded samples
                self.budget.take(1 if isinstance(cached, float) else len(cached))
            inner = [(NO_LABELS, cached)] if isinstance(cached, float) else self.as_vector(cached)
            for labels, value in inner:
                times, values = series.setdefault(labels, ([], []))
                times.append(when_ms / 1000)
                values.append(value)
        return [
            fn.Window(labels, times, values, ref - node.range, ref, None, t)
            for labels, (times, values) in series.items()
        ]

    def _call(self, node: plan.Call, t: float) -> Value:
        name, args = node.name, node.args
        if name in fn.RANGE_FUNCTIONS:
            return self._range_function(node, t)
        if name in vf.MATH_FUNCTIONS:
            return fn.check_unique(vf.map_values(self.vector(args[0], t), vf.MATH_FUNCTIONS[name]))
        if name in vf.DATE_FUNCTIONS:
            if not args:
                part = vf.date_part(name, t)
                return [(NO_LABELS, math.nan if part is None else part)]
            out: Vector = []
            for labels, value in self.vector(args[0], t):
                part = vf.date_part(name, value)
                if part is not None:
                    out.append((fn.drop_name(labels), part))
            return fn.check_unique(out)
        if name == "time":
            return float(t)
        if name == "pi":
            return math.pi
        if name in {"start", "end", "step", "range"}:
            return {
                "start": self.start,
                "end": self.end,
                "step": self.step,
                "range": self.end - self.start,
            }[name]
        if name in {"min_of", "max_of"}:
            a, b = self.scalar(args[0], t), self.scalar(args[1], t)
            if math.isnan(a) or math.isnan(b):
                return math.nan
            return min(a, b) if name == "min_of" else max(a, b)
        if name == "vector":
            return [(NO_LABELS, self.scalar(args[0], t))]
        if name == "scalar":
            vector = self.vector(args[0], t)
            return vector[0][1] if len(vector) == 1 else math.nan
        if name == "absent":
            return [] if self.vector(args[0], t) else [(node.absent_labels, 1.0)]
        if name == "absent_over_time":
            windows = self.eval(args[0], t)
            assert isinstance(windows, list)
            return [] if windows else [(node.absent_labels, 1.0)]
        if name == "histogram_quantile":
            return fn.check_unique(
                hist.histogram_quantile(self.scalar(args[0], t), self.vector(args[1], t))
            )
        if name == "histogram_quantiles":
            phis = [self.scalar(arg, t) for arg in args[2:]]
            vector = self.vector(args[0], t)
            return fn.check_unique(hist.histogram_quantiles(vector, self.string(args[1]), phis))
        if name == "histogram_fraction":
            low, high = self.scalar(args[0], t), self.scalar(args[1], t)
            return fn.check_unique(hist.histogram_fraction(low, high, self.vector(args[2], t)))
        if name == "timestamp":
            return self._timestamp(args[0], t)
        return self._vector_call(node, t)

    def _vector_call(self, node: plan.Call, t: float) -> Vector:
        name, args = node.name, node.args
        vector = self.vector(args[0], t)
        if name == "round":
            to_nearest = self.scalar(args[1], t) if len(args) > 1 else 1.0
            return fn.check_unique(vf.map_values(vector, lambda v: vf.round_to(v, to_nearest)))
        if name == "clamp":
            low, high = self.scalar(args[1], t), self.scalar(args[2], t)
            return fn.check_unique(vf.clamp(vector, low, high))
        if name == "clamp_min":
            return fn.check_unique(vf.clamp(vector, self.scalar(args[1], t), math.inf))
        if name == "clamp_max":
            return fn.check_unique(vf.clamp(vector, -math.inf, self.scalar(args[1], t)))
        if name in {"sort", "sort_desc"}:
            return vf.sort_by_value(vector, descending=name == "sort_desc")
        if name in {"sort_by_label", "sort_by_label_desc"}:
            names = [self.string(arg) for arg in args[1:]]
            return vf.sort_by_label(vector, names, descending=name == "sort_by_label_desc")
        if name == "label_replace":
            dst, replacement, src, regex = (self.string(arg) for arg in args[1:5])
            return fn.check_unique(
                [vf.label_replace(s, dst, replacement, src, regex) for s in vector]
            )
        assert name == "label_join"
        dst, separator = self.string(args[1]), self.string(args[2])
        sources = [self.string(arg) for arg in args[3:]]
        out: Vector = []
        for labels, value in vector:
            as_dict = dict(labels)
            joined = separator.join(as_dict.get(src, "") for src in sources)
            out.append((vf.set_label(labels, dst, joined), value))
        return fn.check_unique(out)

    def _timestamp(self, arg: plan.Node, t: float) -> Vector:
        """``timestamp(v)``: a selector's sample times, else the evaluation time."""
        if isinstance(arg, plan.Selector) and arg.range is None:
            return fn.check_unique(
                [(fn.drop_name(s.labels), s.times[i]) for s, i in self._latest(arg, t)]
            )
        return fn.check_unique([(fn.drop_name(labels), t) for labels, _ in self.vector(arg, t)])

    def _range_function(self, node: plan.Call, t: float) -> Vector:
        name = node.name
        index = fn.MATRIX_ARG.get(name, 0)
        selector = node.args[index]
        constants = [a for i, a in enumerate(node.args) if i != index]
        if (
            self.steps
            and isinstance(selector, plan.Selector)
            and selector.at is None
            and all(isinstance(a, plan.Number) for a in constants)
        ):
            batch = self.batches.get(id(node))
            if batch is None:
                params = [a.value for a in constants if isinstance(a, plan.Number)]
                if name in BATCHED:
                    batch = batch_extrapolated(
                        name, selector, self.data[selector], self.steps, self.budget
                    )
                else:
                    batch = batch_windows(
                        name, params, selector, self.data[selector], self.steps, self.budget
                    )
                self.batches[id(node)] = batch
            if t in batch:  # not at a subquery's inner steps
                return batch[t]
        func = fn.RANGE_FUNCTIONS[name]
        params = [self.scalar(arg, t) for i, arg in enumerate(node.args) if i != index]
        windows = self.eval(node.args[index], t)
        assert isinstance(windows, list)
        keep_name = name in fn.KEEP_NAME
        out: Vector = []
        for window in windows:
            assert isinstance(window, fn.Window)
            value = func(window, params)
            if value is not None:
                out.append((window.labels if keep_name else fn.drop_name(window.labels), value))
        return fn.check_unique(out)

    def _binary(self, node: plan.Binary, t: float) -> Value:
        operation = node.operation
        lhs, rhs = self.eval(node.lhs, t), self.eval(node.rhs, t)
        if isinstance(lhs, float):
            if isinstance(rhs, float):
                return operation.scalars(lhs, rhs)
            return operation.vector_scalar(self.as_vector(rhs), lhs, swapped=True)
        if isinstance(rhs, float):
            return operation.vector_scalar(self.as_vector(lhs), rhs, swapped=False)
        left, right = self.as_vector(lhs), self.as_vector(rhs)
        if operation.op in {"and", "or", "unless"}:
            return operation.set_operation(left, right)
        try:
            return operation.vectors(left, right)
        except PromQLError as exc:
            if exc.offset is None:
                exc.offset = node.offset  # _located puts it into the message
            raise
