"""The PromQL evaluator over a real in-memory store; expected numbers are worked out by hand."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pytest

from alerting.promql import Engine, InstantSample, PromQLError
from siem.memory import MemoryStore
from siem.model import Columns, Matcher, Sample, Series, make_labels

T0 = 1_700_000_000.0
ERROR_RATIO = (
    'sum(rate(shop_http_requests_total{status=~"5.."}[1m]))'
    " / sum(rate(shop_http_requests_total[1m])) > 0.05"
)
CHECKOUT_P95 = (
    "histogram_quantile(0.95, sum by (le) "
    '(rate(shop_http_request_duration_seconds_bucket{route="/api/checkout"}[1m]))) > 0.5'
)


class CountingStore(MemoryStore):
    """A MemoryStore that counts reads (``select`` and ``select_columns`` calls)."""

    def __init__(self) -> None:
        super().__init__()
        self.selects = 0

    def select(self, matchers: Sequence[Matcher], start: float, end: float) -> list[Series]:
        self.selects += 1
        return super().select(matchers, start, end)

    def select_columns(
        self, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[Columns]:
        self.selects += 1
        return super().select_columns(matchers, start, end)


def engine_with(*series: tuple[str, dict[str, str], list[tuple[float, float]]]) -> Engine:
    store = CountingStore()
    store.write(
        samples=[
            Sample(make_labels(name, **labels), T0 + offset, value)
            for name, labels, points in series
            for offset, value in points
        ]
    )
    return Engine(store)


def counter(slope: float, base: float = 1000.0, until: int = 120) -> list[tuple[float, float]]:
    """A counter scraped every 10 s at T0+5, T0+15...: ``base + slope * seconds``."""
    return [(float(t), base + slope * t) for t in range(5, until, 10)]


def values(result: list[InstantSample] | float) -> dict[tuple[tuple[str, str], ...], float]:
    assert not isinstance(result, float)
    return {s.labels: s.value for s in result}


def test_selector_latest_sample_keeps_name() -> None:
    engine = engine_with(("up", {"job": "shop"}, [(0, 1.0), (10, 0.0)]))
    assert engine.instant("up", T0 + 15) == [
        InstantSample(make_labels("up", job="shop"), 0.0),
    ]
    assert engine.instant("up", T0 + 5) == [InstantSample(make_labels("up", job="shop"), 1.0)]


def test_selector_stale_after_lookback() -> None:
    engine = engine_with(("up", {"job": "shop"}, [(0, 1.0)]))
    assert values(engine.instant("up", T0 + 299)) == {make_labels("up", job="shop"): 1.0}
    assert engine.instant("up", T0 + 300) == []
    assert engine.instant("up", T0 - 1) == []


def test_selector_matchers() -> None:
    engine = engine_with(
        ("m", {"status": "200"}, [(0, 1.0)]),
        ("m", {"status": "502"}, [(0, 2.0)]),
        ("m", {"status": "404"}, [(0, 3.0)]),
    )
    assert len(values(engine.instant('m{status=~"5.."}', T0))) == 1
    assert sorted(values(engine.instant('m{status!~"5.."}', T0)).values()) == [1.0, 3.0]
    assert sorted(values(engine.instant('m{status!="200"}', T0)).values()) == [2.0, 3.0]
    assert values(engine.instant('{__name__="m", status="404"}', T0)) == {
        make_labels("m", status="404"): 3.0
    }


def test_selector_offset() -> None:
    engine = engine_with(("g", {}, [(0, 1.0), (60, 2.0)]))
    assert values(engine.instant("g offset 1m", T0 + 60)) == {make_labels("g"): 1.0}


def test_rate_and_increase_extrapolate_to_window_edges() -> None:
    # Window (T0, T0+60]: samples at +5..+55 = 100..150; 5 s to each edge is
    # under 1.1 intervals, so the 50 s of data extrapolate to 60 s: 50 * 60/50.
    engine = engine_with(("c_total", {}, [(5 + 10 * i, 100.0 + 10 * i) for i in range(6)]))
    assert values(engine.instant("increase(c_total[1m])", T0 + 60)) == {(): pytest.approx(60.0)}
    assert values(engine.instant("rate(c_total[1m])", T0 + 60)) == {(): pytest.approx(1.0)}


def test_rate_counter_reset() -> None:
    # 100, 110, 120, reset, 5, 15, 25: increase 20 + 25 = 45 over 50 s, x 60/50.
    points = [(5.0, 100.0), (15, 110), (25, 120), (35, 5), (45, 15), (55, 25)]
    engine = engine_with(("c_total", {}, points))
    assert values(engine.instant("increase(c_total[1m])", T0 + 60)) == {(): pytest.approx(54.0)}
    assert values(engine.instant("rate(c_total[1m])", T0 + 60)) == {(): pytest.approx(0.9)}


def test_rate_does_not_extrapolate_below_zero() -> None:
    # 2..52: the counter was 0 two seconds before the first sample, so the
    # start extrapolates 2 s, not 5 s: 50 * (50 + 2 + 5) / 50 = 57.
    engine = engine_with(("c_total", {}, [(5 + 10 * i, 2.0 + 10 * i) for i in range(6)]))
    assert values(engine.instant("increase(c_total[1m])", T0 + 60)) == {(): pytest.approx(57.0)}


def test_rate_far_from_edges_extrapolates_half_an_interval() -> None:
    # Samples at +20, +30, +40 (100, 110, 120): edges are 20 s away (> 11 s), so
    # each side extrapolates by 5 s: 20 * 30/20 = 30 over the 60 s window.
    engine = engine_with(("c_total", {}, [(20, 100.0), (30, 110.0), (40, 120.0)]))
    assert values(engine.instant("increase(c_total[1m])", T0 + 60)) == {(): pytest.approx(30.0)}
    assert values(engine.instant("rate(c_total[1m])", T0 + 60)) == {(): pytest.approx(0.5)}


def test_rate_needs_two_samples() -> None:
    engine = engine_with(("c_total", {}, [(30, 100.0)]))
    assert engine.instant("rate(c_total[1m])", T0 + 60) == []


def test_irate_last_two_samples_with_reset() -> None:
    engine = engine_with(("c_total", {"a": "1"}, [(0, 100.0), (10, 130.0), (20, 150.0)]))
    assert values(engine.instant("irate(c_total[1m])", T0 + 20)) == {(("a", "1"),): 2.0}
    reset = engine_with(("c_total", {}, [(0, 100.0), (10, 130.0), (20, 5.0)]))
    assert values(reset.instant("irate(c_total[1m])", T0 + 20)) == {(): 0.5}


@pytest.mark.parametrize(
    ("func", "expected"),
    [
        ("avg_over_time", 4.0),
        ("sum_over_time", 12.0),
        ("min_over_time", 1.0),
        ("max_over_time", 8.0),
        ("count_over_time", 3.0),
    ],
)
def test_over_time_functions(func: str, expected: float) -> None:
    # The sample at +0 is outside the left-open window (T0, T0+60].
    engine = engine_with(("g", {}, [(0, 100.0), (10, 1.0), (20, 8.0), (60, 3.0)]))
    assert values(engine.instant(f"{func}(g[1m])", T0 + 60)) == {(): expected}


def test_aggregations_by_and_without() -> None:
    engine = engine_with(
        ("r", {"route": "/a", "instance": "i1"}, [(0, 1.0)]),
        ("r", {"route": "/a", "instance": "i2"}, [(0, 3.0)]),
        ("r", {"route": "/b", "instance": "i1"}, [(0, 10.0)]),
    )
    assert values(engine.instant("sum(r)", T0)) == {(): 14.0}
    assert values(engine.instant("sum by (route) (r)", T0)) == {
        (("route", "/a"),): 4.0,
        (("route", "/b"),): 10.0,
    }
    assert values(engine.instant("avg without (instance) (r)", T0)) == {
        (("route", "/a"),): 2.0,
        (("route", "/b"),): 10.0,
    }
    assert values(engine.instant("min by (instance) (r)", T0)) == {
        (("instance", "i1"),): 1.0,
        (("instance", "i2"),): 3.0,
    }
    assert values(engine.instant("max(r) by (route)", T0))[(("route", "/a"),)] == 3.0
    assert values(engine.instant("count(r)", T0)) == {(): 3.0}
    assert engine.instant("sum(nothing)", T0) == []


def bucket_engine(
    rates: Mapping[str, float], *, route: str = "/api/checkout", name: str = "h_bucket"
) -> Engine:
    series = [
        (name, {"le": le, "instance": inst, "route": route}, counter(rate))
        for le, rate in rates.items()
        for inst in ("i1", "i2")
    ]
    return engine_with(*series)


def test_histogram_quantile_interpolates_within_bucket() -> None:
    # Cumulative per-second rates 1, 2, 5, 10, 10 (x2 instances). φ=0.95 →
    # rank 9.5 of 10 falls in (0.5, 1] holding 5: 0.5 + 0.5 * (9.5 - 5) / 5 = 0.95.
    engine = bucket_engine({"0.1": 1, "0.25": 2, "0.5": 5, "1": 10, "+Inf": 10})
    expr = "histogram_quantile({}, sum by (le) (rate(h_bucket[1m])))"
    assert values(engine.instant(expr.format(0.95), T0 + 60)) == {(): pytest.approx(0.95)}
    # φ=0.5 → rank 5 reached exactly at the top of (0.25, 0.5].
    assert values(engine.instant(expr.format(0.5), T0 + 60)) == {(): pytest.approx(0.5)}
    # φ=0.05 → rank 0.5 in the first bucket, interpolated from 0: 0.1 * 0.5/1.
    assert values(engine.instant(expr.format(0.05), T0 + 60)) == {(): pytest.approx(0.05)}


def test_histogram_quantile_in_inf_bucket_is_highest_finite_bound() -> None:
    engine = bucket_engine({"0.1": 1, "1": 9, "+Inf": 10})
    expr = "histogram_quantile(0.95, sum by (le, route) (rate(h_bucket[1m])))"
    assert values(engine.instant(expr, T0 + 60)) == {
        (("route", "/api/checkout"),): pytest.approx(1.0)
    }


def test_histogram_quantile_without_inf_bucket_is_nan() -> None:
    engine = bucket_engine({"0.1": 1, "1": 9})
    rv = values(
        engine.instant("histogram_quantile(0.9, sum by (le) (rate(h_bucket[1m])))", T0 + 60)
    )
    assert math.isnan(rv[()])


def test_histogram_quantile_keeps_other_labels_and_drops_le() -> None:
    engine = bucket_engine({"0.5": 1, "+Inf": 2})
    rv = values(engine.instant("histogram_quantile(0.5, rate(h_bucket[1m]))", T0 + 60))
    assert set(rv) == {
        (("instance", "i1"), ("route", "/api/checkout")),
        (("instance", "i2"), ("route", "/api/checkout")),
    }
    assert all(v == pytest.approx(0.5) for v in rv.values())


def shop_requests(ok_rate: float, error_rate: float) -> Engine:
    series = []
    for inst in ("127.0.0.1:8001", "127.0.0.1:8002"):
        series.append(
            ("shop_http_requests_total", {"instance": inst, "status": "200"}, counter(ok_rate))
        )
        series.append(
            ("shop_http_requests_total", {"instance": inst, "status": "404"}, counter(0.5))
        )
        if error_rate:
            labels = {"instance": inst, "status": "502"}
            series.append(("shop_http_requests_total", labels, counter(error_rate)))
    return engine_with(*series)


def test_shipped_error_ratio_fires_above_five_percent() -> None:
    # Per instance 8.5 + 0.5 + 1 = 10 requests/s, 1 of them 502: ratio 0.1.
    engine = shop_requests(ok_rate=8.5, error_rate=1.0)
    assert values(engine.instant(ERROR_RATIO, T0 + 60)) == {(): pytest.approx(0.1)}


def test_shipped_error_ratio_quiet_when_healthy() -> None:
    assert shop_requests(ok_rate=9.3, error_rate=0.2).instant(ERROR_RATIO, T0 + 60) == []
    assert shop_requests(ok_rate=9.5, error_rate=0.0).instant(ERROR_RATIO, T0 + 60) == []


def test_shipped_checkout_p95() -> None:
    slow = {"0.1": 1, "0.25": 2, "0.5": 5, "1": 10, "+Inf": 10}
    fast = {"0.1": 9, "0.25": 10, "0.5": 10, "1": 10, "+Inf": 10}
    name = "shop_http_request_duration_seconds_bucket"
    firing = bucket_engine(slow, name=name).instant(CHECKOUT_P95, T0 + 60)
    assert values(firing) == {(): pytest.approx(0.95)}
    assert bucket_engine(fast, name=name).instant(CHECKOUT_P95, T0 + 60) == []
    assert bucket_engine(slow, name=name, route="/").instant(CHECKOUT_P95, T0 + 60) == []


def test_shipped_up_equals_zero() -> None:
    engine = engine_with(
        ("up", {"job": "shop", "instance": "a"}, [(0, 1.0)]),
        ("up", {"job": "shop", "instance": "b"}, [(0, 0.0)]),
    )
    assert engine.instant("up == 0", T0) == [
        InstantSample(make_labels("up", job="shop", instance="b"), 0.0)
    ]


def test_arithmetic_one_to_one_ignores_name() -> None:
    engine = engine_with(
        ("a", {"x": "1"}, [(0, 6.0)]),
        ("a", {"x": "2"}, [(0, 1.0)]),
        ("b", {"x": "1"}, [(0, 3.0)]),
        ("b", {"x": "3"}, [(0, 3.0)]),
    )
    assert values(engine.instant("a / b", T0)) == {(("x", "1"),): 2.0}
    assert values(engine.instant("a - b", T0)) == {(("x", "1"),): 3.0}
    assert values(engine.instant("a * 2", T0)) == {(("x", "1"),): 12.0, (("x", "2"),): 2.0}
    assert values(engine.instant("10 - a", T0)) == {(("x", "1"),): 4.0, (("x", "2"),): 9.0}
    assert values(engine.instant("-a", T0))[(("x", "1"),)] == -6.0
    assert values(engine.instant("a % 4 + 2 ^ 2", T0))[(("x", "1"),)] == 6.0
    assert engine.instant("(1 + 2) * 3", T0) == 9.0


def test_arithmetic_on_and_ignoring() -> None:
    engine = engine_with(
        ("errors", {"job": "shop", "route": "/a"}, [(0, 2.0)]),
        ("requests", {"job": "shop", "route": "/a", "kind": "all"}, [(0, 8.0)]),
        ("capacity", {"job": "shop", "pool": "p"}, [(0, 4.0)]),
    )
    assert values(engine.instant("errors / ignoring(kind) requests", T0)) == {
        (("job", "shop"), ("route", "/a")): 0.25
    }
    assert values(engine.instant("errors / on(job, route) requests", T0)) == {
        (("job", "shop"), ("route", "/a")): 0.25
    }
    assert engine.instant("errors / requests", T0) == []
    assert values(engine.instant("errors * on(job) group_left(pool) capacity", T0)) == {
        (("job", "shop"), ("pool", "p"), ("route", "/a")): 8.0
    }


def test_arithmetic_many_to_one_needs_group_left() -> None:
    engine = engine_with(
        ("a", {"job": "j", "i": "1"}, [(0, 1.0)]),
        ("a", {"job": "j", "i": "2"}, [(0, 1.0)]),
        ("b", {"job": "j"}, [(0, 1.0)]),
    )
    with pytest.raises(PromQLError, match="group_left/group_right"):
        engine.instant("a + on(job) b", T0)
    with pytest.raises(PromQLError, match="many-to-many matching not allowed"):
        engine.instant("b + on(job) a", T0)


def test_division_by_zero_like_prometheus() -> None:
    engine = engine_with(
        ("a", {"x": "p"}, [(0, 1.0)]), ("a", {"x": "z"}, [(0, 0.0)]), ("a", {"x": "n"}, [(0, -1.0)])
    )
    rv = values(engine.instant("a / 0", T0))
    assert rv[(("x", "p"),)] == math.inf
    assert rv[(("x", "n"),)] == -math.inf
    assert math.isnan(rv[(("x", "z"),)])
    assert math.isnan(values(engine.instant("a % 0", T0))[(("x", "p"),)])


def test_comparison_filters_and_bool() -> None:
    engine = engine_with(("m", {"x": "1"}, [(0, 1.0)]), ("m", {"x": "5"}, [(0, 5.0)]))
    assert engine.instant("m > 2", T0) == [InstantSample(make_labels("m", x="5"), 5.0)]
    assert engine.instant("2 < m", T0) == [InstantSample(make_labels("m", x="5"), 5.0)]
    assert values(engine.instant("m > bool 2", T0)) == {(("x", "1"),): 0.0, (("x", "5"),): 1.0}
    assert values(engine.instant("m >= bool m", T0)) == {(("x", "1"),): 1.0, (("x", "5"),): 1.0}
    assert len(values(engine.instant("m != 1", T0))) == 1
    assert engine.instant("1 < bool 2", T0) == 1.0
    assert engine.instant("2 <= bool 1", T0) == 0.0


def test_set_operators() -> None:
    engine = engine_with(
        ("a", {"x": "1"}, [(0, 1.0)]),
        ("a", {"x": "2"}, [(0, 2.0)]),
        ("b", {"x": "2"}, [(0, 20.0)]),
        ("b", {"x": "3"}, [(0, 30.0)]),
    )
    assert values(engine.instant("a and b", T0)) == {make_labels("a", x="2"): 2.0}
    assert values(engine.instant("a unless b", T0)) == {make_labels("a", x="1"): 1.0}
    assert values(engine.instant("a or b", T0)) == {
        make_labels("a", x="1"): 1.0,
        make_labels("a", x="2"): 2.0,
        make_labels("b", x="3"): 30.0,
    }
    assert len(values(engine.instant("a and on() b", T0))) == 2
    assert values(engine.instant("sum(nothing) or vector(0)", T0)) == {(): 0.0}


def test_absent() -> None:
    engine = engine_with(("up", {"job": "shop"}, [(0, 1.0)]))
    assert engine.instant('absent(up{job="shop"})', T0) == []
    assert engine.instant('absent(up{job="web", instance=~".+"})', T0) == [
        InstantSample((("job", "web"),), 1.0)
    ]
    assert engine.instant("absent(sum(nothing))", T0) == [InstantSample((), 1.0)]


def test_clamp_and_abs_drop_name() -> None:
    engine = engine_with(("g", {"x": "a"}, [(0, -3.0)]), ("g", {"x": "b"}, [(0, 7.0)]))
    assert values(engine.instant("abs(g)", T0)) == {(("x", "a"),): 3.0, (("x", "b"),): 7.0}
    assert values(engine.instant("clamp_min(g, 0)", T0)) == {(("x", "a"),): 0.0, (("x", "b"),): 7.0}
    assert values(engine.instant("clamp_max(g, 5)", T0)) == {
        (("x", "a"),): -3.0,
        (("x", "b"),): 5.0,
    }
    assert engine.instant("scalar(g{x='b'}) * 2", T0) == 14.0
    assert engine.instant("time()", T0) == T0
    assert engine.instant("time()", 100) == 100.0


def test_same_labelset_after_dropping_name_is_an_error() -> None:
    engine = engine_with(("a_total", {}, counter(1)), ("b_total", {}, counter(1)))
    with pytest.raises(PromQLError, match="same labelset"):
        engine.instant('rate({__name__=~"a_total|b_total"}[1m])', T0 + 60)


def test_range_one_select_per_selector() -> None:
    engine = shop_requests(ok_rate=8.5, error_rate=1.0)
    store = engine.store
    assert isinstance(store, CountingStore)
    rv = engine.range(ERROR_RATIO.replace(" > 0.05", ""), T0 + 60, T0 + 110, 10)
    assert store.selects == 2
    assert len(rv) == 1 and rv[0].labels == ()
    assert [t for t, _ in rv[0].points] == [T0 + 60 + 10 * i for i in range(6)]
    assert all(v == pytest.approx(0.1) for _, v in rv[0].points)


def test_range_series_appear_and_go_stale() -> None:
    engine = engine_with(("g", {"x": "1"}, [(0, 1.0), (100, 2.0)]), ("g", {"x": "2"}, [(250, 5.0)]))
    short = Engine(engine.store, lookback=60)
    rv = short.range("g", T0, T0 + 300, 100)
    assert rv == [
        Series(make_labels("g", x="1"), ((T0, 1.0), (T0 + 100, 2.0))),
        Series(make_labels("g", x="2"), ((T0 + 300, 5.0),)),
    ]
    assert short.range("1 + 1", T0, T0 + 10, 5) == [
        Series((), ((T0, 2.0), (T0 + 5, 2.0), (T0 + 10, 2.0)))
    ]


def test_range_rejects_bad_steps() -> None:
    engine = engine_with()
    with pytest.raises(PromQLError, match="step > 0"):
        engine.range("1", T0, T0 + 10, 0)
    with pytest.raises(PromQLError, match="too many steps"):
        engine.range("1", T0, T0 + 1_000_000, 1)


def test_check_accepts_shipped_expressions() -> None:
    engine = engine_with()
    for expr in (ERROR_RATIO, CHECKOUT_P95, "up == 0"):
        engine.check(expr)


@pytest.mark.parametrize(
    ("expr", "column", "reason"),
    [
        ("sum(rate(x[1m])", 4, "unclosed left parenthesis"),
        ("foo bar", 5, "invalid promql query"),
        ("rate(x[1m]) > ", 14, "end of input.*invalid promql query"),
        ("x{a=1}", 5, "unexpected character inside braces"),
        ("x[5x]", 3, "bad number or duration"),
        ("nofunc(x)", 1, "unknown function"),
        ("a[5m]]", 6, "unexpected right bracket"),
    ],
)
def test_parse_error_names_position(expr: str, column: int, reason: str) -> None:
    with pytest.raises(PromQLError, match=f"^column {column} .*{reason}") as info:
        engine_with().check(expr)
    assert info.value.column == column
    assert info.value.offset == column - 1


def test_parse_error_on_second_line() -> None:
    with pytest.raises(PromQLError, match="line 2, column 3") as info:
        engine_with().check("sum(x)\n  bar")
    assert info.value.line == 2


@pytest.mark.parametrize(
    ("expr", "construct"),
    [
        ("histogram_count(x)", r"native histograms: histogram_count\(\)"),
        ("sum(histogram_avg(x))", r"native histograms: histogram_avg\(\)"),
        ("limit_ratio(0.5, x)", "aggregation limit_ratio"),
        ("info(x)", r"function: info\(\)"),
        ("x[5m]", "range vector"),
    ],
)
def test_unsupported_construct_is_named(expr: str, construct: str) -> None:
    with pytest.raises(PromQLError, match=construct):
        engine_with().check(expr)
