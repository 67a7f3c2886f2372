"""PromQL functions of instant vectors and their values: math, rounding, clamping, dates,
sorting, label rewriting, and Go's number formatting (for ``count_values``).

Where Python raises and Go returns a value (``log(-1)``, ``exp(1000)``,
``ceil(Inf)``), these return Go's value, as Prometheus' ``promql/functions.go`` does.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import re2

from alerting.promql_functions import Vector, divide, drop_name
from siem.model import Labels


def _sgn(value: float) -> float:
    if value > 0:
        return 1.0
    if value < 0:
        return -1.0
    return value  # 0, -0 and NaN stay


def _guard(func: Callable[[float], float]) -> Callable[[float], float]:
    """``func`` with Go's results where Python raises: NaN outside the domain, ±Inf on overflow."""

    def apply(value: float) -> float:
        try:
            return func(value)
        except OverflowError:
            return math.inf
        except ValueError:
            return math.nan

    return apply


def _ln(value: float) -> float:
    if value == 0:
        return -math.inf
    return math.log(value) if value > 0 or math.isnan(value) else math.nan


def _log_base(base: Callable[[float], float]) -> Callable[[float], float]:
    def apply(value: float) -> float:
        if value == 0:
            return -math.inf
        return base(value) if value > 0 or math.isnan(value) else math.nan

    return apply


def _atanh(value: float) -> float:
    if value == 1:
        return math.inf
    if value == -1:
        return -math.inf
    return _guard(math.atanh)(value)


def _float_func(func: Callable[[float], float]) -> Callable[[float], float]:
    """Go's ``math.Ceil``/``math.Floor``: ±Inf and NaN pass through (Python would raise)."""

    def apply(value: float) -> float:
        return value if math.isinf(value) or math.isnan(value) else float(func(value))

    return apply


MATH_FUNCTIONS: dict[str, Callable[[float], float]] = {
    "abs": abs,
    "ceil": _float_func(math.ceil),
    "floor": _float_func(math.floor),
    "exp": _guard(math.exp),
    "sqrt": _guard(math.sqrt),
    "ln": _ln,
    "log2": _log_base(math.log2),
    "log10": _log_base(math.log10),
    "sgn": _sgn,
    "sin": _guard(math.sin),
    "cos": _guard(math.cos),
    "tan": _guard(math.tan),
    "asin": _guard(math.asin),
    "acos": _guard(math.acos),
    "atan": math.atan,
    "sinh": _guard(math.sinh),
    "cosh": _guard(math.cosh),
    "tanh": math.tanh,
    "asinh": math.asinh,
    "acosh": _guard(math.acosh),
    "atanh": _atanh,
    "deg": lambda v: v * 180 / math.pi,
    "rad": lambda v: v * math.pi / 180,
}
"""Functions of one value, applied to every sample; all drop ``__name__``."""


def round_to(value: float, to_nearest: float) -> float:
    """``round(v, to_nearest)``: half rounds up, as Prometheus' ``floor(v / n + 0.5) * n``."""
    inverse = divide(1.0, to_nearest)
    scaled = value * inverse + 0.5
    if math.isinf(scaled) or math.isnan(scaled):
        return divide(scaled, inverse)
    return divide(math.floor(scaled), inverse)


def _date(value: float) -> dt.datetime | None:
    """The UTC time of a unix timestamp, truncated to seconds like Go's ``time.Unix``."""
    try:
        return dt.datetime.fromtimestamp(int(value), dt.UTC)
    except (ValueError, OverflowError, OSError):
        return None  # NaN, Inf or out of range: no sample


def _days_in_month(when: dt.datetime) -> float:
    after = (when.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return float((after - dt.timedelta(days=1)).day)


DATE_FUNCTIONS: dict[str, Callable[[dt.datetime], float]] = {
    "day_of_month": lambda d: float(d.day),
    "day_of_week": lambda d: float(d.isoweekday() % 7),
    "day_of_year": lambda d: float(d.timetuple().tm_yday),
    "days_in_month": _days_in_month,
    "hour": lambda d: float(d.hour),
    "minute": lambda d: float(d.minute),
    "month": lambda d: float(d.month),
    "year": lambda d: float(d.year),
}
"""Date parts of a unix time in UTC (``time()`` when called without an argument)."""


def date_part(name: str, value: float) -> float | None:
    when = _date(value)
    return None if when is None else DATE_FUNCTIONS[name](when)


def map_values(vector: Vector, func: Callable[[float], float]) -> Vector:
    """Apply ``func`` to every value and drop ``__name__`` (``abs``, ``clamp_min``...)."""
    return [(drop_name(labels), func(value)) for labels, value in vector]


def clamp(vector: Vector, low: float, high: float) -> Vector:
    """``clamp(v, low, high)``; nothing when ``high < low``; NaN bounds give NaN."""
    if high < low:
        return []
    return map_values(vector, lambda v: go_max(low, go_min(high, v)))


def go_min(a: float, b: float) -> float:
    """Go's ``math.Min``: NaN if either is NaN (Python's ``min`` keeps the first argument)."""
    if a != a or b != b:
        return math.nan
    if a == b == 0:  # -0 is the smaller zero, as in Go
        return a if math.copysign(1.0, a) < 0 else b
    return a if a < b else b


def go_max(a: float, b: float) -> float:
    """Go's ``math.Max``: NaN if either is NaN."""
    if a != a or b != b:
        return math.nan
    if a == b == 0:
        return b if math.copysign(1.0, a) < 0 else a
    return a if a > b else b


def sort_by_value(vector: Vector, *, descending: bool) -> Vector:
    """``sort``/``sort_desc``: by value, NaN last either way."""
    numbers = [s for s in vector if not math.isnan(s[1])]
    nans = [s for s in vector if math.isnan(s[1])]
    return sorted(numbers, key=lambda s: s[1], reverse=descending) + nans


def natural_key(text: str) -> list[Any]:
    """Natural sort order (``a2 < a10``), as ``sort_by_label`` uses."""
    parts: list[Any] = []
    digits = ""
    for char in text:
        if char.isdigit():
            digits += char
            continue
        if digits:
            parts.append((0, int(digits), digits))
            digits = ""
        parts.append((1, char, ""))
    if digits:
        parts.append((0, int(digits), digits))
    return parts


def sort_by_label(vector: Vector, names: Sequence[str], *, descending: bool) -> Vector:
    """``sort_by_label``/``sort_by_label_desc``: by the named labels, then all labels."""

    def key(sample: tuple[Labels, float]) -> tuple[list[list[Any]], Labels]:
        as_dict = dict(sample[0])
        return [natural_key(as_dict.get(name, "")) for name in names], sample[0]

    return sorted(vector, key=key, reverse=descending)


def expand_template(template: str, match: Any) -> str:
    """Go's ``regexp.Expand``: ``$1``, ``${1}``, ``$name``, ``${name}``, ``$$``; unknown: empty."""
    out: list[str] = []
    i, n = 0, len(template)
    while i < n:
        char = template[i]
        if char != "$" or i + 1 >= n:
            out.append(char)
            i += 1
            continue
        nxt = template[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
            continue
        if nxt == "{":
            close = template.find("}", i + 2)
            name = template[i + 2 : close] if close > 0 else ""
            if close < 0 or not name or not _is_word(name):
                out.append(char)
                i += 1
                continue
            i = close + 1
        else:
            j = i + 1
            while j < n and (template[j].isalnum() or template[j] == "_"):
                j += 1
            name = template[i + 1 : j]
            if not name:
                out.append(char)
                i += 1
                continue
            i = j
        out.append(_group(match, name))
    return "".join(out)


def _is_word(name: str) -> bool:
    return all(c.isalnum() or c == "_" for c in name)


def _group(match: Any, name: str) -> str:
    try:
        value = match.group(int(name)) if name.isdigit() else match.group(name)
    except (IndexError, KeyError, ValueError, TypeError):
        return ""
    return value or ""


def format_float(value: float) -> str:
    """Go's ``strconv.FormatFloat(v, 'f', -1, 64)``: shortest digits, never an exponent."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    return format(Decimal(repr(value)).normalize(), "f")


def set_label(labels: Labels, name: str, value: str) -> Labels:
    """``labels`` with ``name`` set to ``value``; an empty value removes the label."""
    kept = [pair for pair in labels if pair[0] != name]
    if value:
        kept.append((name, value))
    return tuple(sorted(kept))


def label_replace(
    sample: tuple[Labels, float], dst: str, replacement: str, src: str, regex: str
) -> tuple[Labels, float]:
    labels, value = sample
    match = label_regex(regex).match(dict(labels).get(src, ""))
    if match is None:
        return sample
    return set_label(labels, dst, expand_template(replacement, match)), value


@functools.lru_cache(maxsize=256)
def label_regex(pattern: str) -> Any:
    """``label_replace``'s regex, anchored as Prometheus anchors it; ValueError if RE2 refuses."""
    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(f"^(?s:{pattern})$", options)
    except (re2.error, TypeError) as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(str(reason)) from None
