"""No query exhausts a process: shape limits, RE2 matchers, sample and time budgets."""

from __future__ import annotations

import itertools
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerting.promql import MAX_DEPTH, MAX_LENGTH, Engine, PromQLError, check_shape
from siem.limits import (
    QueryBudget,
    QueryCancelledError,
    QueryTimeoutError,
    TooManySamplesError,
)
from siem.memory import MemoryStore
from siem.model import Event, EventQuery, Matcher, MatcherError, Sample, make_labels
from siem.sqlite import SqliteStore

NOW = 1_700_000_000.0

DEEP_SHAPES = {
    "parens": lambda n: "(" * n + "1" + ")" * n,
    "unary": lambda n: "-" * n + "1",
    "chain": lambda n: " + ".join(["x"] * (n + 1)),
    "calls": lambda n: "sum(" * n + "x" + ")" * n,
    "mixed": lambda n: "abs(-(" * n + "x" + "))" * n,
}


def _samples(series: int, points: int, step: float = 10.0) -> list[Sample]:
    return [
        Sample(make_labels("req_total", pod=str(s)), NOW - (points - i) * step, float(i))
        for s in range(series)
        for i in range(points)
    ]


@pytest.fixture
def store() -> MemoryStore:
    rv = MemoryStore()
    rv.write(samples=_samples(series=10, points=100))
    return rv


@pytest.mark.parametrize(("shape",), [(name,) for name in DEEP_SHAPES])
def test_check_shape_rejects_too_deep_with_position(shape: str) -> None:
    text = DEEP_SHAPES[shape](MAX_DEPTH + 5)
    with pytest.raises(PromQLError, match="nests deeper than the limit") as info:
        check_shape(text)
    assert info.value.offset is not None and 0 < info.value.offset < len(text)
    assert "column" in str(info.value)


@pytest.mark.parametrize(("shape",), [(name,) for name in DEEP_SHAPES])
def test_engine_evaluates_deep_but_allowed_expressions(shape: str, store: MemoryStore) -> None:
    depth = MAX_DEPTH // 3  # ("abs(-(" adds three levels per repetition)
    rv = Engine(store).instant(DEEP_SHAPES[shape](depth), NOW)
    assert rv is not None


def test_check_shape_rejects_too_long() -> None:
    text = "x{a=" + '"' + "a" * MAX_LENGTH + '"}'
    with pytest.raises(PromQLError, match="longer than the limit"):
        Engine(MemoryStore()).instant(text, NOW)


def test_check_shape_ignores_operators_in_strings_matchers_and_comments() -> None:
    check_shape('x{a="' + "(-" * 500 + '", b!~"' + "+" * 500 + '"} # ' + "(" * 500)


def test_promql_parser_survives_every_accepted_depth_in_a_subprocess() -> None:
    # The limit must sit well below where the Rust parser overflows its stack (a
    # segfault kills the whole process, so only a subprocess can observe it). Parse
    # each shape at 8x the accepted depth, in a thread as the web server does.
    script = textwrap.dedent(
        """
        import sys, threading
        import promql_parser as pp
        texts = sys.stdin.read().split("\\0")
        def run():
            for text in texts:
                try:
                    pp.parse(text)
                except BaseException:
                    pass
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        print("survived", len(texts))
        """
    )
    texts = [make(_deepest_accepted(make) * 8) for make in DEEP_SHAPES.values()]
    done = subprocess.run(
        [sys.executable, "-c", script],
        input="\0".join(texts),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"survived {len(texts)}"


def _deepest_accepted(make: Callable[[int], str]) -> int:
    n = 1
    while True:
        try:
            check_shape(make(n + 1))
        except PromQLError:
            return n
        n += 1


def test_matcher_backtracking_regex_runs_in_linear_time() -> None:
    # Python's re needs ~2^n steps for this; RE2 answers at once.
    matcher = Matcher("__name__", "=~", r"(\w+)+x")
    assert not matcher.matches({"__name__": "a" * 5000})
    assert matcher.matches({"__name__": "a" * 50 + "x"})


@pytest.mark.parametrize(
    ("pattern", "value", "hit"),
    [
        (r"\pL+", "żółw", True),
        ("[[:alpha:]]+", "shop", True),
        ("[[:alpha:]]+", "shop1", False),
        ("sh", "shop", False),  # anchored at both ends
        ("a|b", "ab", False),  # ^(?:a|b)$, not ^a|b$
        ("a.b", "a\nb", True),  # "." matches a newline, as in Prometheus
        ("", "", True),
    ],
)
def test_matcher_uses_re2_syntax_anchored(pattern: str, value: str, hit: bool) -> None:
    assert Matcher("job", "=~", pattern).matches({"job": value}) is hit
    assert Matcher("job", "!~", pattern).matches({"job": value}) is not hit


@pytest.mark.parametrize(("pattern",), [(r"(a)\1",), ("(?=a)",), ("(",), ("\ud800",)])
def test_matcher_rejects_what_re2_rejects(pattern: str) -> None:
    with pytest.raises(MatcherError, match="invalid regex"):
        Matcher("job", "=~", pattern)


def test_engine_regex_re2_rejects_is_a_located_promql_error() -> None:
    # The parser accepts a{1001}; RE2 (like Prometheus) caps repetition at 1000.
    with pytest.raises(PromQLError, match=r"invalid regex 'a\{1001\}'") as info:
        Engine(MemoryStore()).instant('x{job="shop", a=~"a{1001}"}', NOW)
    assert info.value.offset == len('x{job="shop", a=~')
    assert "column 18" in str(info.value)


def test_engine_regex_over_many_series_answers(store: MemoryStore) -> None:
    store.write(samples=[Sample(make_labels("a" * 40, pod="x"), NOW, 1.0)])
    assert Engine(store).instant(r'{__name__=~"(\\w+)+x"}', NOW) == []


def test_engine_range_over_sample_limit_fails_like_prometheus(store: MemoryStore) -> None:
    with pytest.raises(TooManySamplesError, match="would load too many samples into memory"):
        Engine(store, max_samples=500).range("req_total", NOW - 1000, NOW, 10)
    series = Engine(store, max_samples=10_000).range("req_total", NOW - 1000, NOW, 10)
    assert len(series) == 10


def test_engine_result_points_count_against_the_limit(store: MemoryStore) -> None:
    # 1 + 1 loads nothing from the store; 101 steps of one point each do count.
    with pytest.raises(TooManySamplesError):
        Engine(store, max_samples=50).range("1 + 1", NOW - 1000, NOW, 10)


def test_engine_times_out_at_its_deadline(store: MemoryStore) -> None:
    ticks = itertools.count()
    budget = QueryBudget(timeout_s=5.0, clock=lambda: float(next(ticks)))
    with budget.active(), pytest.raises(QueryTimeoutError, match="query timed out in"):
        Engine(store).range("rate(req_total[5m])", NOW - 1000, NOW, 10)


def test_engine_stops_when_cancelled(store: MemoryStore) -> None:
    budget = QueryBudget()
    budget.cancel()
    with budget.active(), pytest.raises(QueryCancelledError):
        Engine(store).instant("req_total", NOW)


def test_engine_without_scope_is_unlimited_by_default(store: MemoryStore) -> None:
    assert len(Engine(store).range("req_total", NOW - 1000, NOW, 10)) == 10


def _events(n: int) -> list[Event]:
    return [
        Event.from_doc(
            {"@timestamp": "2023-11-14T22:13:20Z", "event": {"dataset": "shop.access"}, "n": i},
            source="t",
            position=i,
        )
        for i in range(n)
    ]


def test_sqlite_search_is_interrupted_inside_sqlite_when_cancelled(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "siem.db")
    store.write(events=_events(3000))
    budget = QueryBudget()
    budget.cancel()
    with budget.active(), pytest.raises(QueryCancelledError) as info:
        store.search(EventQuery(kql="n >= 0", limit=10))
    # The progress handler stopped the statement itself, not a check after it.
    assert isinstance(info.value.__context__, sqlite3.OperationalError)
    assert len(store.search(EventQuery(kql="n >= 0", limit=10))) == 10  # connection reusable
    store.close()


def test_sqlite_select_stops_at_the_sample_limit(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "siem.db")
    store.write(samples=_samples(series=3, points=5000))
    with QueryBudget(max_samples=4000).active() as budget, pytest.raises(TooManySamplesError):
        store.select([Matcher("__name__", "=", "req_total")], 0, NOW)
    # Streaming: it stopped near the limit, not after holding all 15,000 samples.
    assert budget.samples < 4000 + 4096 + 1
    store.close()


@pytest.mark.parametrize(("backend",), [("memory",), ("sqlite",)])
def test_store_count_by_times_out(backend: str, tmp_path: Path) -> None:
    store = MemoryStore() if backend == "memory" else SqliteStore(tmp_path / "siem.db")
    store.write(events=_events(3000))
    ticks = itertools.count()
    budget = QueryBudget(timeout_s=1.0, clock=lambda: float(next(ticks)))
    with budget.active(), pytest.raises(QueryTimeoutError):
        store.count_by(EventQuery(kql="n >= 0"), "n")
    store.close()


_TOKENS = st.sampled_from(
    [
        "up", "req_total", "rate(", "sum", " by (pod)", "(", ")", "[5m]", "[", "]", "{",
        "}", 'pod="1"', 'pod=~"(\\\\w+)+"', "!~", ",", " + ", " - ", "-", " * ", " / ",
        " and ", " or ", " offset 1m", "1", "0.5", "histogram_quantile(", "abs(",
        "count_over_time(", "time()", "vector(", "scalar(", " == bool ", " > ", " on(pod) ",
        " group_left ", "@", ":", "'", '"', "#", "\n", "1e309", "NaN", "Inf", "topk(",
    ]
)  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(st.lists(_TOKENS, max_size=25).map("".join), st.text(max_size=60)))
def test_promql_fuzz_any_text_is_a_result_or_a_promql_error(text: str) -> None:
    engine = Engine(_FUZZ_STORE)
    try:
        engine.instant(text, NOW)
        engine.range(text, NOW - 60, NOW, 15)
    except PromQLError as exc:
        assert str(exc)


_FUZZ_STORE = MemoryStore()
_FUZZ_STORE.write(samples=_samples(series=3, points=20))


def test_alert_event_rule_runs_under_the_evaluator_limits(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from alerting.engine import AlertEngine
    from alerting.rules import load_rules
    from alerting.state import AlertBook, AlertDB

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: Many\n        event:\n"
        "          dataset: shop.access\n          query: 'n >= 0'\n          group_by: n\n"
        "          window: 1d\n          threshold: 0\n",
        encoding="utf-8",
    )
    store = MemoryStore()
    store.write(events=_events(50))
    (rule,) = load_rules([rules])[0].rules
    at = NOW + 1

    def engine(max_samples: int) -> AlertEngine:
        return AlertEngine(
            store,
            [],
            AlertBook(AlertDB(tmp_path / f"alerts-{max_samples}.db")),
            [],
            evaluator=Engine(store, max_samples=max_samples),
            registry=CollectorRegistry(),
        )

    assert len(engine(1000).hits(rule, at)) == 50  # one group per value of n
    with pytest.raises(TooManySamplesError):
        engine(10).hits(rule, at)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=2, max_size=40
    ),
    width=st.integers(min_value=2, max_value=40),
)
def test_rate_with_precomputed_resets_equals_walking_the_window(
    values: list[float], width: int
) -> None:
    from alerting import promql_functions as fn

    store = MemoryStore()
    labels = make_labels("c_total")
    times = [NOW + 10 * i for i in range(len(values))]
    store.write(samples=[Sample(labels, t, v) for t, v in zip(times, values, strict=True)])
    window = 10.0 * width
    end = times[-1]
    series = Engine(store).range(f"increase(c_total[{int(window)}s])", times[0], end, 10)
    got = dict(series[0].points) if series else {}
    for t in times:
        inside = [i for i, ts in enumerate(times) if t - window < ts <= t]
        expected = fn.increase(
            fn.Window(
                labels,
                [times[i] for i in inside],
                [values[i] for i in inside],
                t - window,
                t,
            )
        )
        assert got.get(t) == expected


@settings(max_examples=150, deadline=None)
@given(
    pattern=st.text(max_size=30),
    value=st.text(st.characters(blacklist_categories=()), max_size=30),  # surrogates too
)
def test_matcher_fuzz_any_pattern_matches_or_is_a_matcher_error(pattern: str, value: str) -> None:
    try:
        matcher = Matcher("job", "=~", pattern)
    except MatcherError as exc:
        assert repr(pattern) in str(exc) or "invalid regex" in str(exc)
        return
    assert matcher.matches({"job": value}) in (True, False)
    assert Matcher("job", "!~", pattern).matches({"job": value}) is not matcher.matches(
        {"job": value}
    )


@pytest.mark.parametrize(("backend",), [("memory",), ("sqlite",)])
def test_store_count_by_groups_count_against_the_limit(backend: str, tmp_path: Path) -> None:
    store = MemoryStore() if backend == "memory" else SqliteStore(tmp_path / "siem.db")
    store.write(events=_events(300))  # 300 distinct values of n
    with QueryBudget(max_samples=100).active(), pytest.raises(TooManySamplesError):
        store.count_by(EventQuery(kql="n >= 0"), "n")
    with QueryBudget(max_samples=1000).active():
        assert len(store.count_by(EventQuery(kql="n >= 0"), "n")) == 300
    store.close()
