"""A PromQL evaluator over stored samples, with Prometheus semantics for its subset.

Expressions are parsed by ``promql_parser`` and compiled once into a small
plan of frozen nodes; evaluation selects each selector's series from the
``Store`` once for the whole time span and slices them in memory per step.

>>> engine = Engine(store)                                          # doctest: +SKIP
>>> engine.instant('sum by (job) (rate(http_requests_total[1m]))', at=now)  # doctest: +SKIP
[InstantSample(labels=(('job', 'shop'),), value=12.5)]

Supported: selectors with matchers, ``[range]``, ``offset``; ``rate``, ``irate``,
``increase``, ``*_over_time`` (avg, sum, min, max, count), ``histogram_quantile``,
``absent``, ``abs``, ``clamp_min``, ``clamp_max``, ``vector``, ``scalar``,
``time``; ``sum/avg/min/max/count`` with ``by``/``without``; ``+ - * / % ^``,
comparisons with and without ``bool``, ``and/or/unless``, ``on``/``ignoring``,
``group_left``/``group_right``. Windows are left-open, as in Prometheus 3:
an instant selector takes the newest sample in ``(t - lookback, t]``, a range
selector the samples in ``(t - range, t]``.

Limits: ``promql_syntax.check_shape`` rejects too long or too deep text before
the parser sees it; regex matchers are RE2 (``siem.model.Matcher``); every
evaluation runs under a ``siem.limits.QueryBudget`` (samples, deadline,
cancellation), checked per step and per series.
"""

from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass
from typing import Literal

import promql_parser as pp

from alerting import promql_functions as fn
from alerting.promql_functions import PromQLError
from alerting.promql_syntax import (
    MAX_DEPTH,
    MAX_LENGTH,
    check_shape,
    find_regex,
    locate_parse_error,
    parse,
)
from siem import limits
from siem.model import METRIC_NAME, Labels, Matcher, MatcherError, Series, Store

__all__ = ["MAX_DEPTH", "MAX_LENGTH", "Engine", "InstantSample", "PromQLError", "check_shape"]

MAX_STEPS = 11_000
"""Most points a range evaluation computes per series, as Prometheus limits it."""

Vector = fn.Vector
Value = Vector | float


@dataclass(frozen=True)
class InstantSample:
    """One element of an instant vector result.

    ``labels`` lose ``__name__`` where Prometheus drops it (functions,
    aggregations, arithmetic, ``bool`` comparisons).
    """

    labels: Labels
    value: float


@dataclass(frozen=True)
class _Number:
    value: float


@dataclass(frozen=True)
class _Selector:
    matchers: tuple[Matcher, ...]
    offset: float
    range: float | None  # seconds for a range vector selector, None for an instant one


@dataclass(frozen=True)
class _Call:
    name: str
    args: tuple[_Node, ...]
    absent_labels: Labels = ()


@dataclass(frozen=True)
class _Aggregate:
    op: str
    mode: str | None  # "by", "without" or None
    names: tuple[str, ...]
    expr: _Node


@dataclass(frozen=True)
class _Binary:
    operation: fn.Operation
    lhs: _Node
    rhs: _Node


@dataclass(frozen=True)
class _Negate:
    expr: _Node


_Node = _Number | _Selector | _Call | _Aggregate | _Binary | _Negate

_MATCH_OPS: dict[str, Literal["=", "!=", "=~", "!~"]] = {
    "Equal": "=",
    "NotEqual": "!=",
    "Re": "=~",
    "NotRe": "!~",
}
_VECTOR_FUNCTIONS = {"abs", "clamp_min", "clamp_max", "histogram_quantile", "absent"}
_OTHER_FUNCTIONS = {"vector", "scalar", "time"}
_CARDINALITY = {
    "OneToOne": "one-to-one",
    "ManyToOne": "many-to-one",
    "OneToMany": "one-to-many",
    "ManyToMany": "many-to-many",
}


@functools.lru_cache(maxsize=512)
def _compile(text: str) -> _Node:
    """Check the shape of ``text``, parse it and convert it to a plan, or raise ``PromQLError``."""
    check_shape(text)
    try:
        expr = parse(text)
    except ValueError as exc:
        message = str(exc)
        raise PromQLError(message, expr=text, offset=locate_parse_error(text, message)) from None
    rv = _convert(expr, text)
    if isinstance(rv, _Selector) and rv.range is not None:
        raise PromQLError(
            "a range vector cannot be the result of an expression; "
            "wrap it in a function such as rate() or avg_over_time()",
            expr=text,
        )
    return rv


def _unsupported(what: str, text: str) -> PromQLError:
    return PromQLError(
        f"unsupported construct: {what} (Vigil evaluates a PromQL subset)", expr=text
    )


def _convert(expr: object, text: str) -> _Node:
    if isinstance(expr, pp.ParenExpr):
        return _convert(expr.expr, text)
    if isinstance(expr, pp.NumberLiteral):
        return _Number(float(expr.val))
    if isinstance(expr, pp.VectorSelector):
        return _selector(expr, None, text)
    if isinstance(expr, pp.MatrixSelector):
        return _selector(expr.vector_selector, expr.range.total_seconds(), text)
    if isinstance(expr, pp.UnaryExpr):
        return _Negate(_convert(expr.expr, text))
    if isinstance(expr, pp.Call):
        return _call(expr, text)
    if isinstance(expr, pp.AggregateExpr):
        return _aggregate(expr, text)
    if isinstance(expr, pp.BinaryExpr):
        return _binary(expr, text)
    if isinstance(expr, pp.SubqueryExpr):
        raise _unsupported("subquery", text)
    if isinstance(expr, pp.StringLiteral):
        raise _unsupported("string literal", text)
    raise _unsupported(type(expr).__name__, text)


def _selector(vs: pp.VectorSelector, range_s: float | None, text: str) -> _Selector:
    if vs.at is not None:
        raise _unsupported("@ modifier", text)
    if vs.matchers.or_matchers:
        raise _unsupported("'or' inside a label matcher", text)
    try:
        matchers = [
            Matcher(m.name, _MATCH_OPS[str(m.op).rsplit(".", 1)[-1]], m.value)
            for m in vs.matchers.matchers
        ]
    except MatcherError as exc:
        raise PromQLError(str(exc), expr=text, offset=find_regex(text, exc.pattern)) from None
    if vs.name is not None:
        matchers.insert(0, Matcher(METRIC_NAME, "=", vs.name))
    offset = vs.offset.total_seconds() if vs.offset is not None else 0.0
    return _Selector(tuple(matchers), offset, range_s)


def _call(expr: pp.Call, text: str) -> _Call:
    name = expr.func.name
    if name not in fn.RANGE_FUNCTIONS and name not in _VECTOR_FUNCTIONS | _OTHER_FUNCTIONS:
        raise _unsupported(f"function {name}()", text)
    args = tuple(_convert(arg, text) for arg in expr.args)
    absent_labels: Labels = ()
    if name == "absent" and isinstance(args[0], _Selector):
        absent_labels = _absent_labels(args[0])
    return _Call(name, args, absent_labels)


def _absent_labels(selector: _Selector) -> Labels:
    """Labels of ``absent(sel)``: the selector's equality matchers, minus repeated names."""
    equal = [m for m in selector.matchers if m.op == "=" and m.name != METRIC_NAME]
    names = [m.name for m in equal]
    return tuple(sorted((m.name, m.value) for m in equal if names.count(m.name) == 1))


def _aggregate(expr: pp.AggregateExpr, text: str) -> _Aggregate:
    op = str(expr.op)
    if op not in fn.AGGREGATIONS:
        raise _unsupported(f"aggregation {op}", text)
    mode: str | None = None
    names: tuple[str, ...] = ()
    if expr.modifier is not None:
        mode = "by" if expr.modifier.type == pp.AggModifierType.By else "without"
        names = tuple(expr.modifier.labels)
    return _Aggregate(op, mode, names, _convert(expr.expr, text))


def _binary(expr: pp.BinaryExpr, text: str) -> _Binary:
    op = str(expr.op)
    if op not in fn.ARITHMETIC | fn.COMPARISON | fn.SET_OPERATORS:
        raise _unsupported(f"operator {op}", text)
    operation = fn.Operation(op)
    modifier = expr.modifier
    if modifier is not None:
        fill = modifier.fill_values
        if fill is not None and (fill.lhs is not None or fill.rhs is not None):
            raise _unsupported("fill modifier", text)
        matching = modifier.matching
        operation = fn.Operation(
            op,
            return_bool=modifier.return_bool,
            on=matching is not None and matching.type == pp.LabelModifierType.Include,
            names=tuple(matching.labels) if matching is not None else (),
            card=_CARDINALITY[str(modifier.card).rsplit(".", 1)[-1]],
            include=tuple(modifier.group_labels or ()),
        )
    return _Binary(operation, _convert(expr.lhs, text), _convert(expr.rhs, text))


def _selectors(node: _Node) -> list[_Selector]:
    if isinstance(node, _Selector):
        return [node]
    if isinstance(node, _Call):
        return [s for arg in node.args for s in _selectors(arg)]
    if isinstance(node, _Aggregate | _Negate):
        return _selectors(node.expr)
    if isinstance(node, _Binary):
        return _selectors(node.lhs) + _selectors(node.rhs)
    return []


@dataclass(frozen=True)
class _Stored:
    labels: Labels
    times: list[float]
    values: list[float]
    # Counter resets, found once per query: index j where values[j] < values[j - 1],
    # and values[j - 1]. A window then adds its resets without walking every sample,
    # so rate(x[1d]) at short steps costs per reset, not per sample and step.
    reset_at: list[int]
    reset_by: list[float]


def _stored(series: Series) -> _Stored:
    times = [p[0] for p in series.points]
    values = [p[1] for p in series.points]
    reset_at = [j for j in range(1, len(values)) if values[j] < values[j - 1]]
    return _Stored(series.labels, times, values, reset_at, [values[j - 1] for j in reset_at])


class Engine:
    """Evaluates PromQL over a ``Store``; safe to share, holds no per-query state.

    Each evaluation runs under the ``siem.limits.QueryBudget`` in scope (the web
    API opens one per request, with cancellation), else under a fresh one with
    this engine's ``max_samples`` and ``timeout_s`` (Prometheus'
    ``--query.max-samples`` and ``--query.timeout``). Samples loaded by the
    store and points held in a range result count against the budget.
    """

    def __init__(
        self,
        store: Store,
        *,
        lookback: float = 300.0,
        max_samples: int = limits.DEFAULT_MAX_SAMPLES,
        timeout_s: float = limits.DEFAULT_TIMEOUT_S,
    ) -> None:
        self.store = store
        self.lookback = lookback
        self.max_samples = max_samples
        self.timeout_s = timeout_s

    def check(self, expr: str) -> None:
        """Parse ``expr`` and verify it uses only supported constructs (for rule loading)."""
        _compile(expr)

    def new_budget(self) -> limits.QueryBudget:
        """A budget with this engine's limits, e.g. for an event query run beside it."""
        return limits.QueryBudget(self.max_samples, self.timeout_s)

    def _budget(self) -> limits.QueryBudget:
        return limits.current() or self.new_budget()

    def instant(self, expr: str, at: float) -> list[InstantSample] | float:
        """The value of ``expr`` at time ``at``: a vector sorted by labels, or a scalar."""
        node, at = _compile(expr), float(at)
        with self._budget().active() as budget:
            evaluation = _Evaluation(self._fetch(node, at, at), self.lookback, budget)
            rv = evaluation.eval(node, at)
        if isinstance(rv, float):
            return rv
        fn.check_unique(rv)
        return [InstantSample(labels, value) for labels, value in sorted(rv)]

    def range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        """``expr`` at ``start``, ``start + step``... up to ``end``: one Series per label set.

        A scalar result comes back as one Series with no labels.
        """
        if step <= 0 or end < start:
            raise PromQLError(
                f"bad range: need step > 0 and end >= start (got {start}..{end}/{step})"
            )
        count = math.floor((end - start) / step + 1e-9) + 1
        if count > MAX_STEPS:
            raise PromQLError(f"too many steps ({count} > {MAX_STEPS}); use a larger step")
        node = _compile(expr)
        with self._budget().active() as budget:
            evaluation = _Evaluation(self._fetch(node, start, end), self.lookback, budget)
            budget.stage = "expression evaluation"
            points: dict[Labels, list[tuple[float, float]]] = {}
            for i in range(count):
                budget.check()
                t = float(start + i * step)
                rv = evaluation.eval(node, t)
                if isinstance(rv, float):
                    rv = [((), rv)]
                fn.check_unique(rv)
                budget.take(len(rv))
                for labels, value in rv:
                    points.setdefault(labels, []).append((t, value))
        return [Series(labels, tuple(pts)) for labels, pts in sorted(points.items())]

    def _fetch(self, node: _Node, start: float, end: float) -> dict[_Selector, list[_Stored]]:
        """One ``store.select`` per distinct selector, covering every step's window."""
        data: dict[_Selector, list[_Stored]] = {}
        for selector in _selectors(node):
            if selector in data:
                continue
            limits.check()
            width = selector.range if selector.range is not None else self.lookback
            found = self.store.select(
                selector.matchers, start - selector.offset - width, end - selector.offset
            )
            data[selector] = [_stored(s) for s in found]
        return data


class _Evaluation:
    """One evaluation over data fetched in advance; ``eval`` runs per step."""

    def __init__(
        self, data: dict[_Selector, list[_Stored]], lookback: float, budget: limits.QueryBudget
    ) -> None:
        self.data = data
        self.lookback = lookback
        self.budget = budget

    def eval(self, node: _Node, t: float) -> Value:
        if isinstance(node, _Number):
            return node.value
        if isinstance(node, _Selector):
            return self._instant_selector(node, t)
        if isinstance(node, _Negate):
            inner = self.eval(node.expr, t)
            if isinstance(inner, float):
                return -inner
            return fn.check_unique([(fn.drop_name(labels), -value) for labels, value in inner])
        if isinstance(node, _Aggregate):
            return fn.aggregate(node.op, self._vector(node.expr, t), node.mode, node.names)
        if isinstance(node, _Call):
            return self._call(node, t)
        return self._binary(node, t)

    def _vector(self, node: _Node, t: float) -> Vector:
        rv = self.eval(node, t)
        if isinstance(rv, float):
            raise PromQLError("expected an instant vector, got a scalar")
        return rv

    def _scalar(self, node: _Node, t: float) -> float:
        rv = self.eval(node, t)
        if not isinstance(rv, float):
            raise PromQLError("expected a scalar, got an instant vector")
        return rv

    def _instant_selector(self, selector: _Selector, t: float) -> Vector:
        ref = t - selector.offset
        rv: Vector = []
        for stored in self.data[selector]:
            hi = bisect.bisect_right(stored.times, ref)
            if hi and stored.times[hi - 1] > ref - self.lookback:
                rv.append((stored.labels, stored.values[hi - 1]))
        return rv

    def _windows(self, selector: _Selector, t: float) -> list[fn.Window]:
        assert selector.range is not None  # the parser only allows matrices here
        end = t - selector.offset
        start = end - selector.range
        rv = []
        for stored in self.data[selector]:
            self.budget.check()
            lo = bisect.bisect_right(stored.times, start)
            hi = bisect.bisect_right(stored.times, end)
            if lo < hi:
                # resets strictly inside the window: j in (lo, hi)
                r_lo = bisect.bisect_right(stored.reset_at, lo)
                r_hi = bisect.bisect_left(stored.reset_at, hi)
                window = fn.Window(
                    stored.labels,
                    fn.Span(stored.times, lo, hi),
                    fn.Span(stored.values, lo, hi),
                    start,
                    end,
                    stored.reset_by[r_lo:r_hi],
                )
                rv.append(window)
        return rv

    def _call(self, node: _Call, t: float) -> Value:
        name, args = node.name, node.args
        if name in fn.RANGE_FUNCTIONS:
            assert isinstance(args[0], _Selector)
            func = fn.RANGE_FUNCTIONS[name]
            out: Vector = []
            for window in self._windows(args[0], t):
                value = func(window)
                if value is not None:
                    out.append((fn.drop_name(window.labels), value))
            return fn.check_unique(out)
        if name == "time":
            return float(t)
        if name == "vector":
            return [((), self._scalar(args[0], t))]
        if name == "scalar":
            vector = self._vector(args[0], t)
            return vector[0][1] if len(vector) == 1 else math.nan
        if name == "histogram_quantile":
            return fn.check_unique(
                fn.histogram_quantile(self._scalar(args[0], t), self._vector(args[1], t))
            )
        vector = self._vector(args[0], t)
        if name == "absent":
            return [] if vector else [(node.absent_labels, 1.0)]
        if name == "abs":
            return fn.check_unique(fn.map_values(vector, abs))
        bound = self._scalar(args[1], t)
        clamp = fn.clamp_min if name == "clamp_min" else fn.clamp_max
        return fn.check_unique(clamp(vector, bound))

    def _binary(self, node: _Binary, t: float) -> Value:
        operation = node.operation
        lhs, rhs = self.eval(node.lhs, t), self.eval(node.rhs, t)
        if isinstance(lhs, float):
            if isinstance(rhs, float):
                return operation.scalars(lhs, rhs)
            return operation.vector_scalar(rhs, lhs, swapped=True)
        if isinstance(rhs, float):
            return operation.vector_scalar(lhs, rhs, swapped=False)
        if operation.op in fn.SET_OPERATORS:
            return operation.set_operation(lhs, rhs)
        return operation.vectors(lhs, rhs)
