"""PromQL binary operators with their matching modifiers, with Go's float semantics.

Follows Prometheus' ``promql/engine.go`` (``VectorBinop``, ``vectorElemBinop``,
``resultMetric``): arithmetic and ``bool`` comparisons drop ``__name__``,
filtering comparisons keep the left-hand sample, ``%`` is Go's ``math.Mod``
(the sign of the dividend), ``^`` is ``math.Pow``, ``atan2`` is ``math.Atan2``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from alerting.promql_functions import (
    PromQLError,
    Vector,
    check_unique,
    divide,
    drop_name,
    show,
)
from siem.model import METRIC_NAME, Labels

ARITHMETIC = frozenset({"+", "-", "*", "/", "%", "^", "atan2"})
COMPARISON = frozenset({"==", "!=", ">", "<", ">=", "<="})
SET_OPERATORS = frozenset({"and", "or", "unless"})


@dataclass(frozen=True)
class Operation:
    """A binary operator with its modifiers: ``bool``, ``on``/``ignoring``, ``group_*``."""

    op: str
    return_bool: bool = False
    on: bool = False
    names: tuple[str, ...] = ()
    card: str = "one-to-one"  # or "many-to-one", "one-to-many", "many-to-many"
    include: tuple[str, ...] = ()

    def apply(self, a: float, b: float) -> tuple[float, bool]:
        """``a op b`` with Go float semantics; a comparison gives ``(a, outcome)``."""
        if self.op in COMPARISON:
            return a, _COMPARE[self.op](a, b)
        return _ARITH[self.op](a, b), True

    def scalars(self, a: float, b: float) -> float:
        """Scalar op scalar; comparisons need ``bool`` (the parser enforces it) and give 0/1."""
        value, keep = self.apply(a, b)
        return (1.0 if keep else 0.0) if self.op in COMPARISON else value

    def vector_scalar(self, vector: Vector, scalar: float, *, swapped: bool) -> Vector:
        """Vector op scalar (or scalar op vector when ``swapped``)."""
        rv: Vector = []
        drop = self.op in ARITHMETIC or self.return_bool
        for labels, sample in vector:
            a, b = (scalar, sample) if swapped else (sample, scalar)
            value, keep = self.apply(a, b)
            if self.op in COMPARISON:
                value = sample  # a comparison keeps the vector's value, whichever side it is on
                if self.return_bool:
                    value, keep = (1.0 if keep else 0.0), True
            if keep:
                rv.append((drop_name(labels) if drop else labels, value))
        return check_unique(rv) if drop else rv

    def signature(self, labels: Labels) -> tuple[str, ...] | Labels:
        """What two samples must share to match: ``on`` labels, or all but ``ignoring``."""
        if self.on:
            as_dict = dict(labels)
            return tuple(as_dict.get(name, "") for name in self.names)
        skip = set(self.names) | {METRIC_NAME}
        return tuple(pair for pair in labels if pair[0] not in skip)

    def set_operation(self, lhs: Vector, rhs: Vector) -> Vector:
        """``and``, ``or``, ``unless``: many-to-many, keyed by the signature."""
        right = {self.signature(labels) for labels, _ in rhs}
        if self.op == "and":
            return [s for s in lhs if self.signature(s[0]) in right]
        if self.op == "unless":
            return [s for s in lhs if self.signature(s[0]) not in right]
        left = {self.signature(labels) for labels, _ in lhs}
        return lhs + [s for s in rhs if self.signature(s[0]) not in left]

    def vectors(self, lhs: Vector, rhs: Vector) -> Vector:
        """Arithmetic or comparison between vectors: one-to-one or group_left/right."""
        one_to_many = self.card == "one-to-many"
        many, one = (rhs, lhs) if one_to_many else (lhs, rhs)
        ones: dict[object, tuple[Labels, float]] = {}
        for labels, value in one:
            sig = self.signature(labels)
            if sig in ones:
                side = "left" if one_to_many else "right"
                raise PromQLError(
                    f"found duplicate series for the match group on the {side} hand-side of "
                    f"the operation: {show(labels)}; many-to-many matching not allowed: "
                    "matching labels must be unique on one side"
                )
            ones[sig] = (labels, value)
        matched: dict[object, set[Labels]] = {}
        rv: Vector = []
        for labels, value in many:
            sig = self.signature(labels)
            if sig not in ones:
                continue
            one_labels, other = ones[sig]
            if self.card == "one-to-one":
                # checked before filtering, as Prometheus does
                if sig in matched:
                    raise PromQLError(
                        "multiple matches for labels: many-to-one matching must be explicit "
                        "(group_left/group_right)"
                    )
                matched[sig] = set()
            result, keep = self.apply(*((other, value) if one_to_many else (value, other)))
            if self.return_bool:
                result, keep = (1.0 if keep else 0.0), True
            if not keep:
                continue
            metric = self._result_labels(labels, one_labels)
            seen = matched.setdefault(sig, set())
            if metric in seen:
                raise PromQLError(
                    "multiple matches for labels: grouping labels must ensure unique matches"
                )
            seen.add(metric)
            rv.append((metric, result))
        return rv

    def _result_labels(self, many: Labels, one: Labels) -> Labels:
        """Labels of a vector/vector result, as Prometheus' ``resultMetric`` builds them."""
        labels = dict(many)
        if self.op in ARITHMETIC or self.return_bool:
            labels.pop(METRIC_NAME, None)
        if self.card == "one-to-one":
            if self.on:
                labels = {k: v for k, v in labels.items() if k in self.names}
            else:
                for name in self.names:
                    labels.pop(name, None)
        one_dict = dict(one)
        for name in self.include:
            if one_dict.get(name):
                labels[name] = one_dict[name]
            else:
                labels.pop(name, None)
        return tuple(sorted(labels.items()))


def _modulo(a: float, b: float) -> float:
    try:
        return math.fmod(a, b)
    except ValueError:  # fmod(x, 0) and fmod(±inf, y) are NaN in Go
        return math.nan


def _power(a: float, b: float) -> float:
    """Go's ``math.Pow``: ``0 ^ -1`` is +Inf (``-0 ^ -3`` is -Inf), an overflow is ±Inf."""
    try:
        return math.pow(a, b)
    except OverflowError:
        odd = b.is_integer() and b % 2 == 1
        return math.copysign(math.inf, a) if odd else math.inf
    except ValueError:  # zero to a negative power; a negative base with a fraction is NaN
        if a == 0:
            odd = b.is_integer() and b % 2 == 1
            return math.copysign(math.inf, a) if odd else math.inf
        return math.nan


_ARITH: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": divide,
    "%": _modulo,
    "^": _power,
    "atan2": math.atan2,
}
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
}
