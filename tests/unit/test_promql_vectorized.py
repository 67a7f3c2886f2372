"""The vectorised range path gives the per-step path's answers.

``alerting.promql_vectorized`` evaluates a range query for all steps at once;
the per-step evaluator (``VECTORIZED = False``) is the reference, checked
against Prometheus by the oracle and upstream tests. Both run here on the
oracle's data set (counters with resets, gaps, churning series, NaN, ±Inf,
values near the float maximum, classic histograms) plus staleness markers,
on the in-memory and the SQLite store, at several steps, and must agree to
1e-12 relative (the vectorised sums are Kahan-Neumaier where the per-step path
may take ``math.fsum``: the last bit may differ).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from promql_oracle import HOUR, T0, generate

import alerting.promql as promql
from alerting.promql import Engine, PromQLError
from siem import limits
from siem.memory import MemoryStore
from siem.model import STALE_NAN, Sample, Series, make_labels
from siem.retention import RetentionPolicy
from siem.sqlite import SqliteStore

VECTORISED = [
    "rate(http_requests_total[5m])",
    "increase(http_requests_total[1m])",
    "delta(node_temperature_celsius[5m])",
    "rate(batch_items_processed_total[2m])",
    "increase(worker_queue_depth[5m] offset 10m)",
    "rate(special_values[5m])",
    "delta(special_values[1m])",
    "increase(huge_values[5m])",
    "rate(up[30s])",
    "rate(stale_total[5m])",
    "max_over_time(node_temperature_celsius[5m])",
    "min_over_time(special_values[2m])",
    "max_over_time(special_values[2m])",
    "min_over_time(worker_queue_depth[10m] offset -5m)",
    "count_over_time(batch_items_processed_total[5m])",
    "last_over_time(worker_queue_depth[5m])",
    "first_over_time(stale_total[5m])",
    "present_over_time(up[1m])",
    "sum by (code) (rate(http_requests_total[5m]))",
    "sum without (instance) (increase(http_requests_total[5m]))",
    "sum(rate(special_values[5m]))",
    "sum(increase(huge_values[5m]))",
    "avg by (job) (rate(http_requests_total[5m]))",
    "avg(delta(huge_values[5m]))",
    "avg(max_over_time(special_values[5m]))",
    "min by (instance) (rate(http_requests_total[5m]))",
    "max(min_over_time(special_values[5m]))",
    "count by (pod) (last_over_time(worker_queue_depth[5m]))",
    "group by (job) (rate(http_requests_total[5m]))",
    "sum by (job) (sum by (job, code) (rate(http_requests_total[5m])))",
    "histogram_quantile(0.9, sum by (le) (rate(request_duration_seconds_bucket[5m])))",
    "histogram_quantile(0.5, rate(request_duration_seconds_bucket[5m]))",
    "histogram_quantile(0, sum by (le, instance) (increase(request_duration_seconds_bucket[2m])))",
    "histogram_quantile(1.5, sum by (le) (rate(request_duration_seconds_bucket[5m])))",
    "sum(rate(no_such_metric[5m]))",
]
"""Expressions the vectorised path covers."""
STEPS = (15.0, 60.0, 7.0, 3600.0)


def samples() -> list[Sample]:
    """The oracle's data, and a counter with staleness markers (a restart, a scrape gap)."""
    data = generate(span=2 * HOUR)
    labels = make_labels("stale_total", job="x")
    value = 0.0
    for i in range(2 * HOUR // 15):
        t = T0 + 15 * i + 3
        if i in {100, 101, 300}:
            data.append(Sample(labels, t, STALE_NAN))
            continue
        value = 1.0 if i == 250 else value + i % 7
        data.append(Sample(labels, t, value))
    return data


@pytest.fixture(scope="module", params=["memory", "sqlite"])
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    data = samples()
    if request.param == "memory":
        store = MemoryStore()
        store.write(samples=data)
        yield Engine(store)
        return
    sqlite = SqliteStore(tmp_path_factory.mktemp("vectorized") / "siem.db")
    sqlite.write(samples=data)
    yield Engine(sqlite)
    sqlite.close()


def both(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, expr: str, step: float
) -> tuple[list[Series], list[Series], int]:
    """(vectorised, per-step) answers and how often the vectorised path answered."""
    used = 0
    real = promql.vectorized_series

    def counted(*args: object, **kwargs: object) -> list[Series]:
        nonlocal used
        used += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(promql, "vectorized_series", counted)
    start, end = T0 + 1800 + 1, T0 + 1800 + 1 + HOUR
    fast = engine.range(expr, start, end, step)
    monkeypatch.setattr(promql, "VECTORIZED", False)
    slow = engine.range(expr, start, end, step)
    monkeypatch.setattr(promql, "VECTORIZED", True)
    return fast, slow, used


def same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if a == b:
        return True
    return abs(a - b) <= 1e-12 * max(abs(a), abs(b))


def assert_same(fast: list[Series], slow: list[Series]) -> None:
    assert [s.labels for s in fast] == [s.labels for s in slow]
    for f, s in zip(fast, slow, strict=True):
        assert [t for t, _ in f.points] == [t for t, _ in s.points], f.labels
        wrong = [
            (t, a, b) for (t, a), (_, b) in zip(f.points, s.points, strict=True) if not same(a, b)
        ]
        assert not wrong, (f.labels, wrong[:3])


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("expr", VECTORISED)
def test_vectorised_range_gives_the_per_step_answer(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, expr: str, step: float
) -> None:
    fast, slow, used = both(engine, monkeypatch, expr, step)
    assert used == 1, "the vectorised path did not run"
    assert_same(fast, slow)
    if "no_such" not in expr and step < HOUR:
        assert any(s.points for s in slow)  # not vacuous


@pytest.mark.parametrize(
    "expr",
    [
        "rate(http_requests_total[5m]) * 2",  # binary operators: per step, over a vectorised rate
        'sum by (job) (rate(http_requests_total{code="500"}[5m]))'
        " / sum by (job) (rate(http_requests_total[5m]))",
        "topk(3, rate(http_requests_total[5m]))",
        "quantile(0.5, rate(http_requests_total[5m]))",
        "max_over_time(sum(rate(http_requests_total[5m]))[10m:1m])",  # inner steps: per step
        "rate(http_requests_total[5m] @ end())",
        "sum_over_time(node_temperature_celsius[5m])",
    ],
)
def test_expressions_with_vectorised_parts_give_the_per_step_answer(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, expr: str
) -> None:
    fast, slow, used = both(engine, monkeypatch, expr, 60.0)
    assert used == 0  # the whole expression is not vectorised
    assert fast
    assert_same(fast, slow)


def test_colliding_labels_fail_as_on_the_per_step_path(engine: Engine) -> None:
    """``up`` and ``request_duration_seconds_count`` share {instance, job} once the name goes."""
    expr = 'sum by (instance, job) (rate({__name__=~"up|request_duration_seconds_count"}[5m]))'
    with pytest.raises(PromQLError, match="same labelset"):
        engine.range(expr, T0 + 1800, T0 + 1800 + HOUR, 60)


def test_vectorised_range_counts_its_points_against_the_sample_limit(engine: Engine) -> None:
    expr = "rate(http_requests_total[5m])"  # 24 series × 241 steps
    loaded = Engine(engine.store, max_samples=10**9)
    with limits.QueryBudget(10**9, 30).active() as budget:
        loaded.range(expr, T0 + 1800, T0 + 1800 + HOUR, 15)
    assert budget.samples >= 24 * 241
    small = Engine(engine.store, max_samples=budget.samples - 1)
    with pytest.raises(limits.TooManySamplesError):
        small.range(expr, T0 + 1800, T0 + 1800 + HOUR, 15)


def test_vectorised_blocks_count_against_the_sample_limit_while_held(engine: Engine) -> None:
    """``sum(rate(x[5m]))`` holds a 24 × 241 block of rates before it sums them: a limit
    that the loaded samples and the 241 result points fit in, but not that block, fails."""
    expr = "sum(rate(http_requests_total[5m]))"
    with limits.QueryBudget(10**9, 30).active() as budget:
        Engine(engine.store).range(expr, T0 + 1800, T0 + 1800 + HOUR, 15)
    held_at_the_end = budget.samples  # loaded samples + 241 points
    with pytest.raises(limits.TooManySamplesError):
        Engine(engine.store, max_samples=held_at_the_end + 1000).range(
            expr, T0 + 1800, T0 + 1800 + HOUR, 15
        )
    assert Engine(engine.store, max_samples=held_at_the_end + 24 * 241 + 241).range(
        expr, T0 + 1800, T0 + 1800 + HOUR, 15
    )


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_reads_see_writes_and_deletions_after_an_earlier_read(kind: str, tmp_path: Path) -> None:
    """The in-memory store keeps sorted columns per series between reads: a write and a
    deletion must show in the next query, on either store."""
    store: MemoryStore | SqliteStore = (
        MemoryStore() if kind == "memory" else SqliteStore(tmp_path / "siem.db")
    )
    labels = make_labels("c_total", job="x")
    store.write(samples=[Sample(labels, T0 + 15 * i, float(i)) for i in range(20)])
    engine = Engine(store)
    before = engine.range("increase(c_total[10m])", T0 + 300, T0 + 300, 60)
    assert [v for _, v in before[0].points] == [pytest.approx(20.0)]  # 19, extrapolated
    store.write(samples=[Sample(labels, T0 + 15 * 20, 100.0), Sample(labels, T0 + 15 * 21, -0.0)])
    (series,) = store.select([], T0 + 15 * 20, T0 + 15 * 21)
    assert series.points[0] == (T0 + 300, 100.0) and math.copysign(1, series.points[1][1]) < 0
    after = engine.range("max_over_time(c_total[10m])", T0 + 300, T0 + 300, 60)
    assert after[0].points == ((T0 + 300, 100.0),)
    store.delete_before(T0 + 300, RetentionPolicy())
    assert engine.range("count_over_time(c_total[10m])", T0 + 315, T0 + 315, 60)[0].points == (
        (T0 + 315, 2.0),
    )
    if isinstance(store, SqliteStore):
        store.close()
