"""PromQL text to an evaluation plan: frozen nodes, type-checked, with every check done here.

``compile_expr`` parses with ``promql_parser`` and converts the syntax tree into
the small node types below, so that everything Vigil cannot evaluate (native
histogram functions, experimental ``info``/``limit_ratio``...) and every bad
constant argument (a regex in ``label_replace``, a label name) is a
``PromQLError`` with a position when a rule is loaded, never an error while
evaluating it.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import promql_parser as pp

from alerting import promql_functions as fn
from alerting import promql_ops as ops
from alerting import promql_vector_functions as vf
from alerting.promql_functions import PromQLError
from alerting.promql_syntax import check_shape, find_regex, locate_parse_error, parse, tokens
from siem.model import METRIC_NAME, Labels, Matcher, MatcherError

Kind = Literal["scalar", "vector", "matrix", "string"]


@dataclass(frozen=True)
class Number:
    value: float


@dataclass(frozen=True)
class String:
    value: str


At = float | Literal["start", "end"] | None
"""An ``@`` modifier: a fixed time, the query's ``start()``/``end()``, or none."""


@dataclass(frozen=True)
class Selector:
    matchers: tuple[Matcher, ...]
    offset: float
    range: float | None  # seconds for a range vector selector, None for an instant one
    at: At = None


@dataclass(frozen=True)
class Subquery:
    expr: Node
    range: float
    step: float | None  # None: the engine's default subquery step
    offset: float
    at: At = None


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Node, ...]
    absent_labels: Labels = ()


@dataclass(frozen=True)
class Aggregate:
    op: str
    mode: str | None  # "by", "without" or None
    names: tuple[str, ...]
    expr: Node
    param: Node | None = None


@dataclass(frozen=True)
class Binary:
    operation: ops.Operation
    lhs: Node
    rhs: Node
    offset: int | None = None  # of the operator in the text, for evaluation errors


@dataclass(frozen=True)
class Negate:
    expr: Node


Node = Number | String | Selector | Subquery | Call | Aggregate | Binary | Negate

_MATCH_OPS: dict[str, Literal["=", "!=", "=~", "!~"]] = {
    "Equal": "=",
    "NotEqual": "!=",
    "Re": "=~",
    "NotRe": "!~",
}
_CARDINALITY = {
    "OneToOne": "one-to-one",
    "ManyToOne": "many-to-one",
    "OneToMany": "one-to-many",
    "ManyToMany": "many-to-many",
}
_RENAMED = {"holt_winters": "double_exponential_smoothing"}
"""Prometheus 2 names the parser (which follows Prometheus 3) no longer knows."""

_NEGATIVE_AT = re.compile(r"@\s*-")

SUPPORTED_FUNCTIONS = (
    frozenset(fn.RANGE_FUNCTIONS)
    | frozenset(vf.MATH_FUNCTIONS)
    | frozenset(vf.DATE_FUNCTIONS)
    | {
        "absent",
        "absent_over_time",
        "clamp",
        "clamp_max",
        "clamp_min",
        "histogram_fraction",
        "histogram_quantile",
        "histogram_quantiles",
        "label_join",
        "max_of",
        "min_of",
        "start",
        "end",
        "step",
        "range",
        "label_replace",
        "pi",
        "round",
        "scalar",
        "sort",
        "sort_by_label",
        "sort_by_label_desc",
        "sort_desc",
        "time",
        "timestamp",
        "vector",
    }
)
"""Every function Vigil evaluates: all of Prometheus' except the native-histogram ones."""
SCALAR_FUNCTIONS = frozenset(
    {"time", "scalar", "pi", "step", "range", "start", "end", "min_of", "max_of"}
)
"""Functions returning a scalar."""
AGGREGATIONS = frozenset(
    {
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "limitk",
        "count_values",
        "quantile",
    }
)


@functools.lru_cache(maxsize=1024)
def compile_expr(text: str) -> Node:
    """Check the shape of ``text``, parse it and convert it to a plan, or raise ``PromQLError``."""
    check_shape(text)
    source = _normalise(text)
    try:
        expr = parse(source)
    except ValueError as exc:
        message = str(exc)
        raise PromQLError(message, expr=text, offset=locate_parse_error(source, message)) from None
    return _Converter(text).convert(expr)


def _normalise(text: str) -> str:
    """What the parser needs to read ``text`` as Prometheus does.

    Backtick strings are raw in PromQL (``\\d`` is two characters) but the
    parser reads escapes in them, so they become double-quoted strings with
    their backslashes escaped; ``holt_winters(`` becomes
    ``double_exponential_smoothing(``, its Prometheus 3 name.
    """
    if "`" not in text and not any(old in text for old in _RENAMED):
        return text
    found = tokens(text)
    out: list[str] = []
    done = 0
    for i, (kind_, tok, offset) in enumerate(found):
        if kind_ == "string" and tok.startswith("`"):
            raw = tok[1:-1]
            escaped = raw.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            new = f'"{escaped}"'
        elif kind_ == "word" and tok in _RENAMED and i + 1 < len(found) and found[i + 1][1] == "(":
            new = _RENAMED[tok]
        else:
            continue
        out.append(text[done:offset])
        out.append(new)
        done = offset + len(tok)
    out.append(text[done:])
    return "".join(out)


def kind(node: Node) -> Kind:
    """The value type ``node`` evaluates to."""
    if isinstance(node, Number):
        return "scalar"
    if isinstance(node, String):
        return "string"
    if isinstance(node, Selector):
        return "vector" if node.range is None else "matrix"
    if isinstance(node, Subquery):
        return "matrix"
    if isinstance(node, Call):
        return "scalar" if node.name in SCALAR_FUNCTIONS else "vector"
    if isinstance(node, Aggregate):
        return "vector"
    if isinstance(node, Negate):
        return kind(node.expr)
    if kind(node.lhs) == "scalar" and kind(node.rhs) == "scalar":
        return "scalar"
    return "vector"


def _seconds(delta: Any) -> float:
    return float(delta.total_seconds()) if delta is not None else 0.0


_WORD_OPERATORS = frozenset({"and", "or", "unless", "atan2"})
_SYMBOL_OPERATORS = frozenset({"+", "-", "*", "/", "%", "^", "==", "!=", ">", "<", ">=", "<="})


def _operators(text: str) -> list[tuple[str, int]]:
    """Binary and unary operators outside brackets and braces, in text order, with offsets.

    The syntax tree visited in order (left operand, operator, right operand)
    meets them in the same order, which gives each operator node its position.
    """
    rv: list[tuple[str, int]] = []
    nested = 0  # inside [] or {}
    previous = ""
    for kind_, tok, offset in tokens(text):
        if tok in "[{":
            nested += 1
        elif tok in "]}":
            nested = max(0, nested - 1)
        elif (
            not nested
            and previous.lower() not in {"offset", "@"}
            and (
                (kind_ == "op" and tok in _SYMBOL_OPERATORS)
                or (kind_ == "word" and tok.lower() in _WORD_OPERATORS)
            )
        ):
            rv.append((tok.lower(), offset))
        previous = tok
    return rv


class _Converter:
    def __init__(self, text: str) -> None:
        self.text = text
        self.operators = _operators(text)
        self.next_operator = 0
        self.positions = True  # until an operator is not where the tree says

    def operator_offset(self, op: str) -> int | None:
        """Offset of the next operator in the text if it is ``op``; else positions stop."""
        if self.positions and self.next_operator < len(self.operators):
            tok, offset = self.operators[self.next_operator]
            if tok == op:
                self.next_operator += 1
                return offset
        self.positions = False
        return None

    def error(self, message: str, needle: str | None = None) -> PromQLError:
        offset = self.text.find(needle) if needle else -1
        return PromQLError(message, expr=self.text, offset=offset if offset >= 0 else None)

    def unsupported(self, what: str, needle: str | None = None) -> PromQLError:
        return self.error(f"unsupported in Vigil: {what}", needle)

    def convert(self, expr: Any) -> Node:
        if isinstance(expr, pp.ParenExpr):
            return self.convert(expr.expr)
        if isinstance(expr, pp.NumberLiteral):
            value = float(expr.val)
            if math.copysign(1.0, value) < 0 and not math.isnan(value):
                self.operator_offset("-")  # "-1" is one literal, its "-" no operator node
            return Number(value)
        if isinstance(expr, pp.StringLiteral):
            return String(str(expr.val))
        if isinstance(expr, pp.VectorSelector):
            return self.selector(expr, None)
        if isinstance(expr, pp.MatrixSelector):
            return self.selector(expr.vector_selector, _seconds(expr.range))
        if isinstance(expr, pp.SubqueryExpr):
            step = _seconds(expr.step) if expr.step is not None else None
            return Subquery(
                self.convert(expr.expr),
                _seconds(expr.range),
                step or None,
                _seconds(expr.offset),
                self.at(expr.at),
            )
        if isinstance(expr, pp.UnaryExpr):
            self.operator_offset("-")
            return Negate(self.convert(expr.expr))
        if isinstance(expr, pp.Call):
            return self.call(expr)
        if isinstance(expr, pp.AggregateExpr):
            return self.aggregate(expr)
        if isinstance(expr, pp.BinaryExpr):
            return self.binary(expr)
        raise self.unsupported(type(expr).__name__)

    def at(self, modifier: Any) -> At:
        if modifier is None:
            return None
        if _NEGATIVE_AT.search(self.text):
            # the parser cannot represent it (reading it panics in Rust)
            raise self.unsupported("@ with a time before 1970-01-01", "@")
        kind_ = str(modifier.type).rsplit(".", 1)[-1]
        if kind_ == "Start":
            return "start"
        if kind_ == "End":
            return "end"
        try:
            when = modifier.at
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # pyo3 panics on a time before 1970 (PanicException)
            raise self.unsupported("@ with a time before 1970-01-01", "@") from None
        return float(when.timestamp())

    def selector(self, vs: Any, range_s: float | None) -> Selector:
        if vs.matchers.or_matchers:
            raise self.unsupported("'or' inside a label matcher", " or ")
        try:
            matchers = [
                Matcher(m.name, _MATCH_OPS[str(m.op).rsplit(".", 1)[-1]], m.value)
                for m in vs.matchers.matchers
            ]
        except MatcherError as exc:
            raise PromQLError(
                str(exc), expr=self.text, offset=find_regex(self.text, exc.pattern)
            ) from None
        if vs.name is not None:
            matchers.insert(0, Matcher(METRIC_NAME, "=", vs.name))
        return Selector(tuple(matchers), _seconds(vs.offset), range_s, self.at(vs.at))

    def call(self, expr: Any) -> Call:
        name = str(expr.func.name)
        if name not in SUPPORTED_FUNCTIONS:
            reason = "native histograms" if name.startswith("histogram_") else "function"
            raise self.unsupported(f"{reason}: {name}()", name)
        args = tuple(self.convert(arg) for arg in expr.args)
        absent_labels: Labels = ()
        if name in {"absent", "absent_over_time"} and isinstance(args[0], Selector):
            absent_labels = _absent_labels(args[0])
        if name == "label_replace":
            self.check_label_replace(args)
        if name == "histogram_quantiles":
            self.check_label_name(args[1], name)
        if name == "label_join":
            for arg in (args[1], *args[3:]):
                self.check_label_name(arg, name)
        return Call(name, args, absent_labels)

    def check_label_name(self, arg: Node, function: str) -> None:
        assert isinstance(arg, String)  # the parser checks argument types
        if not arg.value:  # Prometheus 3 takes any non-empty UTF-8 label name
            raise self.error(f"empty label name in {function}()", function)

    def check_label_replace(self, args: tuple[Node, ...]) -> None:
        self.check_label_name(args[1], "label_replace")
        regex = args[4]
        assert isinstance(regex, String)
        try:
            vf.label_regex(regex.value)
        except ValueError as exc:
            raise self.error(
                f"invalid regular expression in label_replace(): {exc}", regex.value
            ) from None

    def aggregate(self, expr: Any) -> Aggregate:
        op = str(expr.op)
        if op not in AGGREGATIONS:
            raise self.unsupported(f"aggregation {op}", op)
        mode: str | None = None
        names: tuple[str, ...] = ()
        if expr.modifier is not None:
            mode = "by" if expr.modifier.type == pp.AggModifierType.By else "without"
            names = tuple(expr.modifier.labels)
        param = self.convert(expr.param) if expr.param is not None else None
        wanted = "string" if op == "count_values" else "scalar"
        if param is not None and kind(param) != wanted:
            raise self.error(f"expected type {wanted} in aggregation parameter of {op}", op)
        if op == "count_values":
            assert isinstance(param, String)
            if not param.value:
                raise self.error("empty label name in count_values", op)
        return Aggregate(op, mode, names, self.convert(expr.expr), param)

    def binary(self, expr: Any) -> Binary:
        op = str(expr.op)
        if op not in ops.ARITHMETIC | ops.COMPARISON | ops.SET_OPERATORS:
            raise self.unsupported(f"operator {op}", op)
        operation = ops.Operation(op)
        modifier = expr.modifier
        if modifier is not None:
            fill = getattr(modifier, "fill_values", None)
            if fill is not None and (fill.lhs is not None or fill.rhs is not None):
                raise self.unsupported("fill modifier", "fill")
            matching = modifier.matching
            operation = ops.Operation(
                op,
                return_bool=modifier.return_bool,
                on=matching is not None and matching.type == pp.LabelModifierType.Include,
                names=tuple(matching.labels) if matching is not None else (),
                card=_CARDINALITY[str(modifier.card).rsplit(".", 1)[-1]],
                include=tuple(modifier.group_labels or ()),
            )
        lhs = self.convert(expr.lhs)
        offset = self.operator_offset(op)
        return Binary(operation, lhs, self.convert(expr.rhs), offset)


def _absent_labels(selector: Selector) -> Labels:
    """Labels of ``absent(sel)``, as Prometheus' ``createLabelsForAbsentFunction`` builds them:
    each name's first equality matcher, removed again by any later matcher on that name."""
    labels: dict[str, str] = {}
    has: set[str] = set()
    for m in selector.matchers:
        if m.name == METRIC_NAME:
            continue
        if m.op == "=" and m.name not in has:
            labels[m.name] = m.value
            has.add(m.name)
        else:
            labels.pop(m.name, None)
    return tuple(sorted(labels.items()))


def selectors(node: Node) -> list[Selector]:
    """Every selector in ``node``, in order."""
    if isinstance(node, Selector):
        return [node]
    if isinstance(node, Call):
        return [s for arg in node.args for s in selectors(arg)]
    if isinstance(node, Aggregate | Negate | Subquery):
        return selectors(node.expr)
    if isinstance(node, Binary):
        return selectors(node.lhs) + selectors(node.rhs)
    return []


def has_subquery(node: Node) -> bool:
    """Whether ``node`` holds a subquery (its instant selectors are read at many times)."""
    if isinstance(node, Subquery):
        return True
    if isinstance(node, Call):
        return any(has_subquery(arg) for arg in node.args)
    if isinstance(node, Aggregate):
        return has_subquery(node.expr) or (node.param is not None and has_subquery(node.param))
    if isinstance(node, Negate):
        return has_subquery(node.expr)
    if isinstance(node, Binary):
        return has_subquery(node.lhs) or has_subquery(node.rhs)
    return False
