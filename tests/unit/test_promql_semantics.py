"""Prometheus 3 semantics the upstream scripts do not pin down, checked by hand-computed values."""

from __future__ import annotations

import math
import sys

import pytest
from test_promql import T0, engine_with

from alerting.promql import InstantSample, Matrix, PromQLError
from siem import limits
from siem.model import STALE_NAN, Series, make_labels


def test_avg_near_float_max_stays_finite() -> None:
    big = sys.float_info.max
    engine = engine_with(("g", {"i": "1"}, [(0, big)]), ("g", {"i": "2"}, [(0, big)]))
    [sample] = engine.instant("avg(g)", T0)  # type: ignore[misc]
    assert sample.value == big  # a plain sum would overflow to +Inf
    engine = engine_with(("g", {}, [(0, big), (10, big)]))
    [sample] = engine.instant("avg_over_time(g[1m])", T0 + 10)  # type: ignore[misc]
    assert sample.value == big


def test_sum_is_compensated() -> None:
    engine = engine_with(
        ("g", {"i": "1"}, [(0, 1e100)]),
        ("g", {"i": "2"}, [(0, 1.0)]),
        ("g", {"i": "3"}, [(0, -1e100)]),
    )
    [sample] = engine.instant("sum(g)", T0)  # type: ignore[misc]
    assert sample.value == 1.0  # naive left-to-right addition gives 0


def test_stale_marker_ends_series_and_is_skipped_in_ranges() -> None:
    engine = engine_with(("up", {}, [(0, 1.0), (10, 2.0), (20, STALE_NAN), (30, 3.0)]))
    assert engine.instant("up", T0 + 15) == [InstantSample(make_labels("up"), 2.0)]
    assert engine.instant("up", T0 + 25) == []  # without the marker: 2.0 for 5 minutes
    assert engine.instant("up", T0 + 30) == [InstantSample(make_labels("up"), 3.0)]
    [count] = engine.instant("count_over_time(up[1m])", T0 + 30)  # type: ignore[misc]
    assert count.value == 3.0


def test_instant_query_of_range_vector_is_a_matrix() -> None:
    engine = engine_with(("m", {"a": "b"}, [(0, 1.0), (15, 2.0), (30, 3.0)]))
    result = engine.query("m[30s]", T0 + 30)
    # left-open window (T0, T0+30]: the sample at T0 is out
    assert result == Matrix((Series(make_labels("m", a="b"), ((T0 + 15, 2.0), (T0 + 30, 3.0))),))
    assert engine.value_type("m[30s]") == "matrix"
    assert engine.query("1 + 1", T0) == 2.0
    assert engine.query('"text"', T0) == "text"
    with pytest.raises(PromQLError, match="range vector"):
        engine.instant("m[30s]", T0)


def test_holt_winters_is_double_exponential_smoothing() -> None:
    engine = engine_with(("g", {}, [(0, 1.0), (10, 3.0), (20, 4.0), (30, 8.0)]))
    old = engine.instant("holt_winters(g[1m], 0.5, 0.5)", T0 + 30)
    new = engine.instant("double_exponential_smoothing(g[1m], 0.5, 0.5)", T0 + 30)
    # s1=1, b=2; i=1: s=0.5*3+0.5*(1+2)=3; i=2: b=0.5*(3-1)+0.5*2=2, s=0.5*4+0.5*(3+2)=4.5;
    # i=3: b=0.5*(4.5-3)+0.5*2=1.75, s=0.5*8+0.5*(4.5+1.75)=7.125
    assert old == new == [InstantSample((), 7.125)]
    with pytest.raises(PromQLError, match="smoothing factor"):
        engine.instant("holt_winters(g[1m], 1, 0.5)", T0 + 30)


def test_subquery_steps_are_absolute_multiples_of_the_step() -> None:
    # samples every 10 s at T0+0..T0+120; T0 is a multiple of 20 s
    engine = engine_with(("g", {}, [(t, float(t)) for t in range(0, 130, 10)]))
    # at T0+65, [30s:20s] evaluates g at T0+40 and T0+60 (not T0+45, T0+65)
    [sample] = engine.instant("sum_over_time(g[30s:20s])", T0 + 65)  # type: ignore[misc]
    assert sample.value == 40.0 + 60.0
    [sample] = engine.instant("count_over_time(g[60s:20s] offset 20s)", T0 + 65)  # type: ignore[misc]
    assert sample.value == 3.0  # T0+0 is excluded: (T0-15, T0+45] holds T0, T0+20, T0+40


def test_at_modifier_with_start_and_end_in_range_query() -> None:
    engine = engine_with(("g", {}, [(t, float(t)) for t in range(0, 130, 10)]))
    [fixed] = engine.range("g @ end()", T0 + 20, T0 + 60, 20)
    assert [v for _, v in fixed.points] == [60.0, 60.0, 60.0]
    [first] = engine.range("g @ start()", T0 + 20, T0 + 60, 20)
    assert [v for _, v in first.points] == [20.0, 20.0, 20.0]
    # end() is the query's end as asked, even off the step grid (steps 20, 40, 60)
    [unaligned] = engine.range("g @ end()", T0 + 20, T0 + 75, 20)
    assert [v for _, v in unaligned.points] == [70.0, 70.0, 70.0]
    [pinned] = engine.range(f"g @ {T0 + 100:.0f}", T0 + 20, T0 + 60, 20)
    assert [v for _, v in pinned.points] == [100.0, 100.0, 100.0]


def test_negative_offset_looks_ahead() -> None:
    engine = engine_with(("g", {}, [(0, 1.0), (60, 2.0)]))
    assert engine.instant("g offset -1m", T0) == [InstantSample(make_labels("g"), 2.0)]


def test_native_histogram_functions_are_refused_at_check_time_with_position() -> None:
    engine = engine_with()
    with pytest.raises(PromQLError, match="native histograms") as info:
        engine.check("sum(rate(x[5m])) / histogram_sum(y)")
    assert info.value.column == 20


def test_bad_label_replace_regex_is_a_check_time_error() -> None:
    with pytest.raises(PromQLError, match="invalid regular expression") as info:
        engine_with().check('label_replace(up, "a", "$1", "b", "(unclosed")')
    assert info.value.column is not None


def test_many_to_many_matching_is_an_error() -> None:
    engine = engine_with(
        ("a", {"job": "x", "i": "1"}, [(0, 1.0)]),
        ("a", {"job": "x", "i": "2"}, [(0, 1.0)]),
        ("b", {"job": "x", "k": "1"}, [(0, 1.0)]),
        ("b", {"job": "x", "k": "2"}, [(0, 1.0)]),
    )
    with pytest.raises(PromQLError, match="many-to-many matching not allowed") as info:
        engine.instant("sum(a) + a * on(job) group_left b", T0)
    assert "sum(a) + a * on(job) group_left b" in str(info.value)
    assert info.value.column == 12  # the "*"
    with pytest.raises(PromQLError, match="many-to-one matching must be explicit") as info:
        engine.range("-1 - b < on(job) sum by (job) (a)", T0, T0 + 60, 30)
    assert info.value.column == 8  # the "<", past the "-" of the literal "-1" and the "-"


def test_sort_and_topk_keep_their_order_in_instant_results() -> None:
    engine = engine_with(
        ("g", {"i": "a"}, [(0, 3.0)]),
        ("g", {"i": "b"}, [(0, math.nan)]),
        ("g", {"i": "c"}, [(0, 1.0)]),
        ("g", {"i": "d"}, [(0, 2.0)]),
    )
    order = [s.labels[1][1] for s in engine.instant("sort_desc(g)", T0)]  # type: ignore[union-attr]
    assert order == ["a", "d", "c", "b"]  # NaN last
    order = [s.labels[1][1] for s in engine.instant("topk(2, g)", T0)]  # type: ignore[union-attr]
    assert order == ["a", "d"]
    order = [s.labels[1][1] for s in engine.instant("bottomk(2, g)", T0)]  # type: ignore[union-attr]
    assert order == ["c", "d"]


def test_count_values_formats_like_go() -> None:
    engine = engine_with(("g", {"i": "1"}, [(0, 1e21)]), ("g", {"i": "2"}, [(0, 0.5)]))
    result = engine.instant('count_values("v", g)', T0)
    assert result == [
        InstantSample((("v", "0.5"),), 1.0),
        InstantSample((("v", "1000000000000000000000"),), 1.0),
    ]


def test_modulo_power_and_atan2_follow_go() -> None:
    engine = engine_with()
    assert engine.instant("-7 % 3", T0) == -1.0  # sign of the dividend
    assert engine.instant("0 ^ -1", T0) == math.inf
    assert engine.instant("2 ^ 3 ^ 2", T0) == 512.0  # right-associative
    assert engine.instant("1 atan2 1", T0) == pytest.approx(math.pi / 4)


def test_time_functions_take_a_vector_argument() -> None:
    # 2024-02-29T13:45:00Z, a Thursday
    engine = engine_with(("ts", {}, [(0, 1709214300.0)]))
    expected = {
        "day_of_month": 29,
        "day_of_week": 4,
        "day_of_year": 60,
        "days_in_month": 29,
        "hour": 13,
        "minute": 45,
        "month": 2,
        "year": 2024,
    }
    for name, value in expected.items():
        assert engine.instant(f"{name}(ts)", T0) == [InstantSample((), float(value))], name


_CONSISTENCY = [
    "rate(c[1m])",
    "increase(c[90s])",
    "delta(g[2m] offset 30s)",
    "sum by (pod) (rate(c[1m]))",
    "irate(c[1m])",
    "resets(c[5m])",
    "changes(g[5m])",
    "avg_over_time(g[1m:20s])",
    "max_over_time(rate(c[1m])[2m:30s])",
    "quantile_over_time(0.9, g[3m])",
    "deriv(g[2m])",
    "predict_linear(g[2m], 60)",
    "topk(1, g)",
    "g > on(pod) group_left c",
    "absent_over_time(g[30s])",
    "timestamp(g)",
    'label_replace(g, "p", "x$1", "pod", "(.*)")',
    "sum_over_time(g[1m])",
    "last_over_time(g[2m] offset 1m)",
    "quantile_over_time(0.25, c[2m])",
    "holt_winters(g[3m], 0.3, 0.6)",
    "present_over_time(c[30s])",
    "stddev_over_time(g[100s])",
    "resets(c[2m])",
]


@pytest.mark.parametrize("expr", _CONSISTENCY)
def test_range_query_equals_instant_query_at_every_step(expr: str) -> None:
    # counters with a reset and a gap, gauges with a staleness marker
    c_a = [(t, float(t if t < 200 else t - 200)) for t in range(0, 400, 15) if not 100 < t < 160]
    c_b = [(t, 2.0 * t) for t in range(5, 400, 10)]
    g_a = [(t, math.sin(t / 30)) for t in range(0, 400, 15)]
    g_a[10] = (g_a[10][0], STALE_NAN)
    g_b = [(t, float(t % 70)) for t in range(0, 400, 20)]
    engine = engine_with(
        ("c", {"pod": "a"}, c_a),
        ("c", {"pod": "b"}, c_b),
        ("g", {"pod": "a"}, g_a),
        ("g", {"pod": "b"}, g_b),
    )
    start, end, step = T0 + 60, T0 + 390, 15.0
    by_step: dict[float, dict[object, float]] = {}
    for series in engine.range(expr, start, end, step):
        for t, value in series.points:
            by_step.setdefault(t, {})[series.labels] = value
    t = start
    while t <= end:
        result = engine.instant(expr, t)
        assert isinstance(result, list)
        want = {s.labels: s.value for s in result}
        got = by_step.get(t, {})
        assert got.keys() == want.keys(), (expr, t)
        for labels, value in want.items():
            assert got[labels] == pytest.approx(value, nan_ok=True), (expr, t, labels)
        t += step


def test_backtick_strings_are_raw() -> None:
    engine = engine_with(("m", {"a": "123", "b": 'x\\y"'}, [(0, 1.0)]))
    assert len(engine.instant(r"m{a=~`\d+`}", T0)) == 1  # type: ignore[arg-type]
    assert len(engine.instant('m{b=`x\\y"`}', T0)) == 1  # type: ignore[arg-type]
    [sample] = engine.instant(r'label_replace(m, "c", "$1", "a", `(\d)\d+`)', T0)  # type: ignore[misc]
    assert dict(sample.labels)["c"] == "1"
    # the old name is only a function name, not a label or a string
    assert engine.instant('m{holt_winters="holt_winters("}', T0) == []


def test_subquery_results_count_against_the_sample_limit() -> None:
    engine = engine_with(
        *[("g", {"i": str(i)}, [(t, 1.0) for t in range(0, 600, 10)]) for i in range(50)]
    )
    budget = limits.QueryBudget(max_samples=5_000, timeout_s=10)
    # 50 series x 60 samples load 3,000; 50 series x 600 one-second inner steps hold 30,000
    with budget.active(), pytest.raises(limits.TooManySamplesError):
        engine.instant("max_over_time(g[10m:1s])", T0 + 600)


def test_durations_are_whole_milliseconds_as_prometheus_takes_them() -> None:
    """Times near 1.7e9 s are float seconds in Vigil, whose differences are off by up to
    ~2e-7 s; every duration is a difference of whole milliseconds, as Prometheus takes it
    from its int64 timestamps, so the answers are Prometheus' to the last bit."""
    points = [(0.321, 100.0), (15.654, 115.333), (29.987, 129.666)]
    line = [(offset, 2 * offset) for offset, _ in points]
    engine = engine_with(("c", {}, points), ("g", {}, line))

    def value(expr: str) -> float:
        [sample] = engine.instant(expr, T0 + 30.2)  # type: ignore[misc]
        return sample.value

    # 14.333 s between the last two; the difference of the float times is 14.3329999...
    assert value("irate(c[1m])") == (129.666 - 115.333) / 14.333
    assert value("idelta(c[1m])") == 129.666 - 115.333
    # window (T0 + 0.2, T0 + 30.2]: 29.666 s sampled, 0.121 s to the start, 0.213 s to the end
    increase = 129.666 - 100.0
    assert value("rate(c[30s])") == increase * ((29.666 + 0.121 + 0.213) / 29.666 / 30)
    assert value("deriv(g[1m])") == pytest.approx(2.0, rel=1e-15, abs=0)
    # the regression's x is relative to the evaluation time (T0 + 30.2)
    assert value("predict_linear(g[1m], 10)") == pytest.approx(2 * 40.2, rel=1e-15, abs=0)


def test_clamp_of_nan_is_nan_as_go_math_min_max() -> None:
    engine = engine_with(("g", {"v": "nan"}, [(0, math.nan)]), ("g", {"v": "2"}, [(0, 2.0)]))
    for expr in ("clamp_max(g, 1)", "clamp_min(g, 3)", "clamp(g, 0, 1)"):
        got = {dict(s.labels)["v"]: s.value for s in engine.instant(expr, T0)}  # type: ignore[union-attr]
        assert math.isnan(got["nan"]), expr  # Python's min(1, nan) would give 1
        assert (
            got["2"]
            == {"clamp_max(g, 1)": 1.0, "clamp_min(g, 3)": 3.0, "clamp(g, 0, 1)": 1.0}[expr]
        )
    [bounded] = engine.instant('clamp(g{v="2"}, nan, 5)', T0)  # type: ignore[misc]
    assert math.isnan(bounded.value)


def test_histogram_quantile_ignores_float_noise_between_buckets() -> None:
    """Counts within a relative 1e-12 of the bucket below are taken as equal (Prometheus 3's
    small-delta tolerance): φ = 1 ends in the first bucket, not in float noise above it."""
    noisy = 10.000000000001
    engine = engine_with(
        ("h_bucket", {"le": "1"}, [(0, 10.0)]),
        ("h_bucket", {"le": "2"}, [(0, noisy)]),
        ("h_bucket", {"le": "+Inf"}, [(0, noisy)]),
    )
    [top] = engine.instant("histogram_quantile(1, h_bucket)", T0)  # type: ignore[misc]
    assert top.value == 1.0  # without the tolerance: 2.0, the second bucket's bound
    [median] = engine.instant("histogram_quantile(0.5, h_bucket)", T0)  # type: ignore[misc]
    assert median.value == 0.5
