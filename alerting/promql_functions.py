"""PromQL functions, aggregations and operators over evaluated values.

Everything here works on data already selected and sliced by the evaluator in
``alerting.promql``; nothing touches the store. The formulas follow Prometheus
3's ``promql/functions.go`` and ``promql/quantile.go`` (floats only: native
histograms are refused when an expression is compiled), including its
compensated (Kahan-Neumaier) summation in ``sum_over_time``, ``avg_over_time``,
``deriv``/``predict_linear`` and the variance functions.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from siem.model import METRIC_NAME, Labels
from vigil.errors import VigilError

_SHOWN = 300  # characters of the expression an error message repeats


class PromQLError(VigilError):
    """A PromQL expression is malformed, unsupported, or fails to evaluate.

    Parse errors carry ``expr`` and the 0-based ``offset`` of the problem and
    name its line and column in the message.
    """

    def __init__(self, message: str, *, expr: str | None = None, offset: int | None = None) -> None:
        self.expr = expr
        self.offset = offset
        self.line: int | None = None
        self.column: int | None = None
        if expr is not None and offset is not None:
            before = expr[:offset]
            self.line = before.count("\n") + 1
            self.column = offset - (before.rfind("\n") + 1) + 1
            near = expr[offset : offset + 20].split("\n", 1)[0].strip()
            where = (
                f"line {self.line}, column {self.column}"
                if "\n" in expr
                else f"column {self.column}"
            )
            message = (
                f"{where}" + (f" near {near!r}" if near else " (end of input)") + f": {message}"
            )
        if expr is not None:
            shown = expr.strip()
            if len(shown) > _SHOWN:  # a 16 KB expression need not come back whole
                shown = shown[:_SHOWN] + "..."
            message = f"{message} in {shown!r}"
        super().__init__(message)


Vector = list[tuple[Labels, float]]
"""An instant vector: (labels, value) per series, at one evaluation time."""


@dataclass(slots=True)  # not frozen: built per series and step, and frozen init is slower
class Window:
    """The points of one series inside a range's window ``(start, end]``, evaluated at ``at``."""

    labels: Labels
    times: Sequence[float]
    values: Sequence[float]
    start: float
    end: float
    resets: Sequence[float] | None = None
    """The value before each counter reset in the window, in order, when known."""
    at: float = 0.0
    """The evaluation time (``predict_linear`` extrapolates from it)."""


class Span(Sequence[float]):
    """``data[lo:hi]`` without copying until iterated: ``rate`` reads only the ends.

    >>> Span([1.0, 2.0, 3.0, 4.0], 1, 3)[-1]
    3.0
    """

    def __init__(self, data: Sequence[float], lo: int, hi: int) -> None:
        self._data, self._lo, self._hi = data, lo, hi

    def __len__(self) -> int:
        return self._hi - self._lo

    @overload
    def __getitem__(self, index: int) -> float: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[float]: ...

    def __getitem__(self, index: int | slice) -> float | Sequence[float]:
        if isinstance(index, slice):
            return self._data[self._lo : self._hi][index]
        n = self._hi - self._lo
        if not -n <= index < n:
            raise IndexError(index)
        return self._data[self._lo + index if index >= 0 else self._hi + index]

    def __iter__(self) -> Iterator[float]:
        return iter(self._data[self._lo : self._hi])


@functools.lru_cache(maxsize=65_536)
def drop_name(labels: Labels) -> Labels:
    """The labels without ``__name__``, as functions and arithmetic leave them (cached:
    a range query asks for the same series' labels at every step)."""
    if not labels or labels[0][0] != METRIC_NAME:  # sorted: "__name__" comes first if present
        return tuple(pair for pair in labels if pair[0] != METRIC_NAME)
    return labels[1:]


def kahan_inc(inc: float, total: float, c: float) -> tuple[float, float]:
    """One step of Kahan-Neumaier summation, as Prometheus' ``kahansum.Inc``."""
    t = total + inc
    if math.isinf(t):
        c = 0.0
    elif abs(total) >= abs(inc):
        c += (total - t) + inc
    else:
        c += (inc - t) + total
    return t, c


def _kahan(values: Sequence[float]) -> tuple[float, float]:
    """Compensated sum and its compensation term (``kahan_inc`` inlined: this runs per
    sample of every ``sum``, ``avg`` and ``*_over_time``)."""
    total = c = 0.0
    for inc in values:
        t = total + inc
        if abs(total) >= abs(inc):
            c += (total - t) + inc
        else:
            c += (inc - t) + total
        total = t
    return total, c


def kahan_sum(values: Sequence[float]) -> float:
    """Compensated sum; ``inf + -inf`` is NaN, as in Go.

    Where nothing cancels, ``math.fsum`` (exactly rounded, in C) gives the same
    number much faster; with cancellation Prometheus' Kahan-Neumaier loop runs, so
    its answer (even where it is off, as for ``1e220 + 1 - 1e220 + ...``) is kept.
    """
    fast = _fast_sum(values)
    if fast is not None:
        return fast
    total, c = _kahan(values)
    # once the total is infinite it stays so (or NaN), and the compensation is moot
    return total if math.isinf(total) or math.isnan(total) else total + c


def kahan_mean(values: Sequence[float]) -> float:
    """Mean as Prometheus 3's ``avg``: a compensated sum, switching to an incremental
    mean once the sum would overflow (so values near the float maximum stay finite)."""
    fast = _fast_sum(values)
    if fast is not None:
        return fast / len(values)
    total, c = _kahan(values)
    if math.isfinite(total):  # no overflow: the direct mean, as Prometheus computes it
        count = len(values)
        return total / count + c / count
    return _overflowing_mean(values)


def _fast_sum(values: Sequence[float]) -> float | None:
    """The sum by ``math.fsum`` when Kahan-Neumaier summation gives the same number
    (but for the last bit in rare cases): finite values that do not cancel (their
    absolute sum at most twice the sum's), so the compensated sum's error stays
    below the last bit. Else ``None``: Prometheus' loop must run."""
    try:
        total = math.fsum(values)
        magnitude = math.fsum(map(abs, values))
    except (OverflowError, ValueError):  # an intermediate overflow, inf - inf
        return None
    if math.isfinite(magnitude) and magnitude <= 2 * abs(total):
        return total
    return None


def _overflowing_mean(values: Sequence[float]) -> float:
    total, c, mean = values[0], 0.0, 0.0
    incremental = False
    count = 1.0
    for i in range(1, len(values)):
        value = values[i]
        count = float(i + 1)
        if not incremental:
            new_total, new_c = kahan_inc(value, total, c)
            if not math.isinf(new_total):
                total, c = new_total, new_c
                continue
            incremental = True
            mean = total / (count - 1)
            c /= count - 1
        q = (count - 1) / count
        mean, c = kahan_inc(value / count, q * mean, q * c)
    if incremental:
        return mean + c
    return total / count + c / count


def _extrapolated(window: Window, *, is_counter: bool, is_rate: bool) -> float | None:
    """``rate``, ``increase`` and ``delta``, extrapolated to the window's edges like Prometheus.

    For counters, resets (a value lower than the one before) count as a restart
    from zero, and the extrapolation never goes below the counter's zero point.
    The increase is extrapolated to a boundary when the first/last sample is
    within 1.1 average intervals of it, else by half an interval.
    """
    times, values = window.times, window.values
    if len(values) < 2:
        return None
    result = values[-1] - values[0]
    if is_counter:
        if window.resets is not None:
            for before in window.resets:
                result += before
        else:
            previous = values[0]
            for value in values:
                if value < previous:
                    result += previous
                previous = value
    return extrapolate(
        result,
        times[0],
        times[-1],
        values[0],
        len(values),
        window.start,
        window.end,
        is_counter=is_counter,
        is_rate=is_rate,
    )


def extrapolate(
    result: float,
    first_t: float,
    last_t: float,
    first_value: float,
    count: int,
    start: float,
    end: float,
    is_counter: bool,
    is_rate: bool,
) -> float:
    """Prometheus' ``extrapolatedRate`` for the difference ``result`` of ``count`` >= 2 samples
    from ``first_t`` to ``last_t`` in the window ``(start, end]``."""
    # durations from integer milliseconds, as Prometheus keeps timestamps: float seconds
    # near 1.7e9 differ by ~1e-7 s from the exact difference
    first_ms, last_ms = round(first_t * 1000), round(last_t * 1000)
    sampled = (last_ms - first_ms) / 1000
    average = sampled / (count - 1)
    threshold = average * 1.1
    to_start = (first_ms - round(start * 1000)) / 1000
    to_end = (round(end * 1000) - last_ms) / 1000
    if to_start >= threshold:
        to_start = average / 2
    if is_counter and result > 0 and first_value >= 0:
        to_zero = sampled * (first_value / result)
        if to_zero < to_start:
            to_start = to_zero
    if to_end >= threshold:
        to_end = average / 2
    factor = (sampled + to_start + to_end) / sampled if sampled else 1.0
    if is_rate:
        # both edges are on the millisecond grid: the width is the range, exactly
        factor /= round((end - start) * 1000) / 1000
    return result * factor


def rate(window: Window, _: Sequence[float] = ()) -> float | None:
    """Per-second increase of a counter over the window (``rate``)."""
    return _extrapolated(window, is_counter=True, is_rate=True)


def increase(window: Window, _: Sequence[float] = ()) -> float | None:
    """Increase of a counter over the window (``increase``)."""
    return _extrapolated(window, is_counter=True, is_rate=False)


def delta(window: Window, _: Sequence[float] = ()) -> float | None:
    """Difference of a gauge over the window, extrapolated (``delta``)."""
    return _extrapolated(window, is_counter=False, is_rate=False)


def _instant_value(window: Window, *, is_rate: bool) -> float | None:
    """``irate``/``idelta``: between the last two samples; for ``irate`` a reset counts from 0."""
    if len(window.values) < 2:
        return None
    last, before = window.values[-1], window.values[-2]
    elapsed_ms = round(window.times[-1] * 1000) - round(window.times[-2] * 1000)
    if elapsed_ms == 0:
        return None
    result = last if is_rate and last < before else last - before
    return result / (elapsed_ms / 1000) if is_rate else result


def irate(window: Window, _: Sequence[float] = ()) -> float | None:
    """Per-second rate between the last two samples (``irate``)."""
    return _instant_value(window, is_rate=True)


def idelta(window: Window, _: Sequence[float] = ()) -> float | None:
    """Difference between the last two samples (``idelta``)."""
    return _instant_value(window, is_rate=False)


def _linear_regression(
    times: Sequence[float], values: Sequence[float], origin: float
) -> tuple[float, float]:
    """Least-squares slope and intercept at ``origin``, as Prometheus' ``linearRegression``:
    each x is the sample's distance from ``origin`` in whole milliseconds, in seconds."""
    first = values[0]
    constant = all(v == first for v in values)
    if constant:
        return (math.nan, math.nan) if math.isinf(first) else (0.0, first)
    n = float(len(values))
    origin_ms = round(origin * 1000)
    sum_x = c_x = sum_y = c_y = sum_xy = c_xy = sum_x2 = c_x2 = 0.0
    for t, y in zip(times, values, strict=True):
        x = (round(t * 1000) - origin_ms) / 1e3
        sum_x, c_x = kahan_inc(x, sum_x, c_x)
        sum_y, c_y = kahan_inc(y, sum_y, c_y)
        sum_xy, c_xy = kahan_inc(x * y, sum_xy, c_xy)
        sum_x2, c_x2 = kahan_inc(x * x, sum_x2, c_x2)
    sum_x += c_x
    sum_y += c_y
    sum_xy += c_xy
    sum_x2 += c_x2
    cov_xy = sum_xy - sum_x * sum_y / n
    var_x = sum_x2 - sum_x * sum_x / n
    slope = divide(cov_xy, var_x)
    return slope, sum_y / n - slope * sum_x / n


def divide(a: float, b: float) -> float:
    """``a / b`` with IEEE results for a zero divisor, as in Go."""
    if b != 0:
        return a / b
    if a == 0 or math.isnan(a):
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def deriv(window: Window, _: Sequence[float] = ()) -> float | None:
    """Per-second slope by simple linear regression (``deriv``)."""
    if len(window.values) < 2:
        return None
    return _linear_regression(window.times, window.values, window.times[0])[0]


def predict_linear(window: Window, params: Sequence[float]) -> float | None:
    """Value predicted ``params[0]`` seconds after the evaluation time (``predict_linear``)."""
    if len(window.values) < 2:
        return None
    slope, intercept = _linear_regression(window.times, window.values, window.at)
    return slope * params[0] + intercept


def double_exponential_smoothing(window: Window, params: Sequence[float]) -> float | None:
    """Holt's linear smoothing (``double_exponential_smoothing``, formerly ``holt_winters``).

    The factors must lie strictly between 0 and 1, else evaluation fails, as in Prometheus.
    """
    sf, tf = params
    if not 0 < sf < 1:
        raise PromQLError(f"invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:f}")
    if not 0 < tf < 1:
        raise PromQLError(f"invalid trend factor. Expected: 0 < tf < 1, got: {tf:f}")
    values = window.values
    if len(values) < 2:
        return None
    s0, s1, b = 0.0, values[0], values[1] - values[0]
    for i in range(1, len(values)):
        x = sf * values[i]
        if i > 1:
            b = tf * (s1 - s0) + (1 - tf) * b
        y = (1 - sf) * (s1 + b)
        s0, s1 = s1, x + y
    return s1


def changes(window: Window, _: Sequence[float] = ()) -> float | None:
    """How often the value changed in the window; NaN to NaN is no change."""
    values = window.values
    if not values:
        return None
    count = 0
    previous = values[0]
    for value in values:
        if value != previous and not (math.isnan(value) and math.isnan(previous)):
            count += 1
        previous = value
    return float(count)


def resets(window: Window, _: Sequence[float] = ()) -> float | None:
    """How often a counter reset (decreased) in the window."""
    values = window.values
    if not values:
        return None
    if window.resets is not None:
        return float(len(window.resets))
    return float(sum(1 for i in range(1, len(values)) if values[i] < values[i - 1]))


def quantile(q: float, values: Sequence[float]) -> float:
    """The ``q``-quantile of ``values`` with linear interpolation, as Prometheus' ``quantile``."""
    if not values or math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(values, key=_nan_first)
    n = len(ordered)
    rank = q * (n - 1)
    lower = max(0, math.floor(rank))
    upper = min(n - 1, lower + 1)
    weight = rank - math.floor(rank)
    return ordered[lower] * (1 - weight) + ordered[upper] * weight


def _nan_first(value: float) -> tuple[bool, float]:
    """Sort key of Go's ``sort.Sort(vectorByValueHeap)``: NaN before every number."""
    return (not math.isnan(value), value if not math.isnan(value) else 0.0)


def variance(values: Sequence[float]) -> float:
    """Population variance by Welford's method with compensation (``stdvar_over_time``)."""
    count = mean = c_mean = aux = c_aux = 0.0
    for value in values:
        count += 1
        step = value - (mean + c_mean)
        mean, c_mean = kahan_inc(step / count, mean, c_mean)
        aux, c_aux = kahan_inc(step * (value - (mean + c_mean)), aux, c_aux)
    return (aux + c_aux) / count


def _min_max(values: Sequence[float], *, max_: bool) -> float:
    """Minimum or maximum where NaN loses against any number, as in Prometheus."""
    rv = values[0]
    for value in values:
        if (value > rv if max_ else value < rv) or math.isnan(rv):
            rv = value
    return rv


def _mad(values: Sequence[float]) -> float:
    if any(math.isnan(v) for v in values):
        return math.nan
    median = quantile(0.5, values)
    return quantile(0.5, [abs(v - median) for v in values])


def _ts_of(values: Sequence[float], times: Sequence[float], *, max_: bool) -> float:
    best, when = values[0], times[0]
    for value, t in zip(values, times, strict=True):
        if (value >= best if max_ else value <= best) or math.isnan(best):
            best, when = value, t
    return when


RangeFunction = Callable[[Window, Sequence[float]], "float | None"]


def _over_time(reduce: Callable[[Sequence[float]], float]) -> RangeFunction:
    def apply(window: Window, _: Sequence[float] = ()) -> float | None:
        return reduce(window.values) if window.values else None

    return apply


def _with_times(reduce: Callable[[Window], float]) -> RangeFunction:
    def apply(window: Window, _: Sequence[float] = ()) -> float | None:
        return reduce(window) if window.values else None

    return apply


def _quantile_over_time(window: Window, params: Sequence[float]) -> float | None:
    return quantile(params[0], window.values) if window.values else None


RANGE_FUNCTIONS: dict[str, RangeFunction] = {
    "rate": rate,
    "irate": irate,
    "increase": increase,
    "delta": delta,
    "idelta": idelta,
    "deriv": deriv,
    "predict_linear": predict_linear,
    "double_exponential_smoothing": double_exponential_smoothing,
    "changes": changes,
    "resets": resets,
    "avg_over_time": _over_time(kahan_mean),
    "sum_over_time": _over_time(kahan_sum),
    "min_over_time": _over_time(lambda vs: _min_max(vs, max_=False)),
    "max_over_time": _over_time(lambda vs: _min_max(vs, max_=True)),
    "count_over_time": _over_time(lambda vs: float(len(vs))),
    "last_over_time": _over_time(lambda vs: vs[-1]),
    "first_over_time": _over_time(lambda vs: vs[0]),
    "present_over_time": _over_time(lambda vs: 1.0),
    "quantile_over_time": _quantile_over_time,
    "stddev_over_time": _over_time(lambda vs: math.sqrt(variance(vs))),
    "stdvar_over_time": _over_time(variance),
    "mad_over_time": _over_time(_mad),
    "ts_of_first_over_time": _with_times(lambda w: w.times[0]),
    "ts_of_last_over_time": _with_times(lambda w: w.times[-1]),
    "ts_of_max_over_time": _with_times(lambda w: _ts_of(w.values, w.times, max_=True)),
    "ts_of_min_over_time": _with_times(lambda w: _ts_of(w.values, w.times, max_=False)),
}
"""Functions of one range vector, applied per series; ``None`` means no output sample.

Their scalar parameters (``quantile_over_time``'s φ, ``predict_linear``'s
seconds, the smoothing factors) come as the second argument, in order.
"""
KEEP_NAME = frozenset({"last_over_time", "first_over_time"})
"""Range functions that keep ``__name__``, as in Prometheus 3 (they act like ``offset``)."""
MATRIX_ARG = {"quantile_over_time": 1}
"""Position of the range-vector argument where it is not the first one."""


def check_unique(vector: Vector) -> Vector:
    """``vector`` itself, after checking no two samples share a label set."""
    seen: set[Labels] = set()
    for labels, _ in vector:
        if labels in seen:
            raise PromQLError(
                f"vector cannot contain metrics with the same labelset {show(labels)}; "
                "aggregate or add label matchers so each series stays distinct"
            )
        seen.add(labels)
    return vector


def show(labels: Labels) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in labels) + "}"
