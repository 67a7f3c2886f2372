"""Every supported function, aggregation and operator, fed hypothesis-chosen arguments:
evaluation gives a result or a ``PromQLError``, never another exception."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerting import promql_functions as fn
from alerting import promql_plan as plan
from alerting.promql import Engine, PromQLError
from alerting.promql_plan import AGGREGATIONS, SUPPORTED_FUNCTIONS
from siem.memory import MemoryStore
from siem.model import STALE_NAN, Sample, make_labels

NOW = 1_700_000_000.0
_VALUES = [0.0, 1.0, -1.0, 1e308, -1e308, math.inf, -math.inf, math.nan, 0.5, 3.0, 2.0]

_STORE = MemoryStore()
_STORE.write(
    samples=[
        Sample(
            make_labels(name, pod=str(pod), le=le),
            NOW - 600 + 15 * k,
            STALE_NAN if (k + pod) % 17 == 16 else _VALUES[(k * (pod + 1)) % len(_VALUES)],
        )
        for name in ("a", "b")
        for pod in range(3)
        for le in ("0.5", "+Inf")
        for k in range(41)
    ]
)

_SCALAR = st.sampled_from(["1", "0", "-1", "0.5", "NaN", "Inf", "-Inf", "1e309", "time()"])
_VECTOR = st.sampled_from(
    [
        "a",
        'b{pod="1"}',
        "a offset -1m",
        "a @ end()",
        "-a",
        "vector(2)",
        "rate(a[1m])",
        "c",
        "a @ -5",
    ]
)
_MATRIX = st.sampled_from(["a[2m]", "b[5m] offset 1m", "a[1m:15s]", "a[3m] @ start()", "b[30s:]"])
_STRING = st.sampled_from(['"pod"', '"le"', '""', '"x"', '"(.*)"', '"$1-${pod}"', '"[[:alpha:]]+"'])


_SIGNATURES = {
    "quantile_over_time": "sm",
    "predict_linear": "ms",
    "double_exponential_smoothing": "mss",
    "holt_winters": "mss",
    "absent_over_time": "m",
    "clamp": "vss",
    "clamp_min": "vs",
    "clamp_max": "vs",
    "round": "vs",
    "histogram_quantile": "sv",
    "histogram_quantiles": "vSss",
    "histogram_fraction": "ssv",
    "label_replace": "vSSSS",
    "label_join": "vSSSS",
    "sort_by_label": "vSS",
    "sort_by_label_desc": "vS",
    "vector": "s",
    "scalar": "v",
    "min_of": "ss",
    "max_of": "ss",
}
_BY_KIND = {"s": _SCALAR, "v": _VECTOR, "m": _MATRIX, "S": _STRING}


def _signature(name: str) -> str:
    if name in _SIGNATURES:
        return _SIGNATURES[name]
    if name in fn.RANGE_FUNCTIONS:
        return "m"
    if name in plan.SCALAR_FUNCTIONS:
        return ""
    return "v"


@st.composite
def _call(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(sorted(SUPPORTED_FUNCTIONS | {"holt_winters"})))
    if draw(st.integers(0, 9)) == 0:  # now and then any arguments at all
        args = draw(st.lists(st.one_of(_SCALAR, _VECTOR, _MATRIX, _STRING), max_size=5))
    else:
        args = [draw(_BY_KIND[kind]) for kind in _signature(name)]
    return f"{name}({', '.join(args)})"


@st.composite
def _aggregation(draw: st.DrawFn) -> str:
    op = draw(st.sampled_from(sorted(AGGREGATIONS)))
    grouping = draw(st.sampled_from(["", " by (pod)", " without (le)", " by ()"]))
    param = draw(st.one_of(_SCALAR, _STRING).map(lambda p: p + ", ")) if draw(st.booleans()) else ""
    inner = draw(st.one_of(_VECTOR, _call()))
    return f"{op}{grouping} ({param}{inner})"


_EXPR = st.one_of(_call(), _aggregation(), _VECTOR, _MATRIX)
_OPERATOR = st.sampled_from(
    [" + ", " % ", " ^ ", " atan2 ", " > ", " == bool ", " and ", " or ", " unless ",
     " * on(pod) group_left ", " / ignoring(le) ", " < on() group_right ", " != bool on(pod) "]
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lhs=_EXPR, op=_OPERATOR, rhs=_EXPR, binary=st.booleans())
def test_any_function_or_aggregation_gives_a_result_or_a_promql_error(
    lhs: str, op: str, rhs: str, binary: bool
) -> None:
    engine = Engine(_STORE)
    text = f"({lhs}){op}({rhs})" if binary else lhs
    try:
        engine.query(text, NOW)
        engine.range(text, NOW - 120, NOW, 30)
    except PromQLError as exc:
        assert str(exc)
