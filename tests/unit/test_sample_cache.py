"""``alerting.sample_cache``: rules evaluated from the in-memory head give exactly what
reading the store gives.

Two stores get the same random writes — new series appearing, gaps, NaN,
staleness markers, late and out-of-order samples, retention deleting inside the
rules' windows — and two engines evaluate the same rules over them, one with the
cache and one without; every series either engine writes (recording rules,
``ALERTS``, staleness markers) must be the same, bit for bit.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from alerting.engine import AlertEngine
from alerting.promql import Engine
from alerting.promql_plan import compile_expr
from alerting.rules import load_rules
from alerting.sample_cache import SampleCache, reach
from alerting.state import AlertBook, AlertDB
from siem.memory import MemoryStore
from siem.model import STALE_NAN, Matcher, Sample, Store, make_labels, value_bits
from siem.retention import RetentionPolicy
from siem.sqlite import SqliteStore

T0 = 1_700_000_000.0
PASSES = 80

RULES = [
    ("rec:rate", "sum by (service) (rate(m_counter[30s]))"),
    ("rec:max", "max by (service) (m_gauge)"),
    ("rec:gauge", "m_gauge"),
    ("rec:offset", "m_gauge offset 20s"),
    ("rec:count", "count_over_time(m_gauge[1m])"),
    ("rec:ts", "timestamp(m_gauge)"),
    ("rec:avg", "avg_over_time(m_gauge[45s] offset 10s)"),
    ("rec:chain", "sum(rec:max) + count(rec:rate)"),  # outputs of this pass' rules
    ("rec:sub", "max_over_time(m_gauge[1m:10s])"),
    ("rec:absent", "absent(m_missing)"),
    ("rec:regex", 'm_gauge{service=~"s[12]", instance!="i0"}'),
    ("rec:long", 'rate(m_counter{instance="i1"}[8m])'),  # longer than max_window_s
    ("rec:nan", "m_gauge != m_gauge"),
]
ALERTS = [
    ("HighGauge", "m_gauge > 50"),
    ("FastCounter", "sum by (service) (rate(m_counter[1m])) > 3"),
    ("Chained", "rec:chain > 100"),
]


def rules_file(path: Path) -> Path:
    rules = [{"record": name, "expr": expr} for name, expr in RULES]
    rules += [{"alert": name, "expr": expr} for name, expr in ALERTS]
    path.write_text(json.dumps({"groups": [{"name": "g", "rules": rules}]}), encoding="utf-8")
    return path


def engine(
    store: Store, path: Path, name: str, registry: CollectorRegistry, **kw: object
) -> AlertEngine:
    groups = load_rules([rules_file(path / "rules.yaml")], default_interval=1.0)
    return AlertEngine(
        store,
        groups,
        AlertBook(AlertDB(path / f"{name}.db")),
        [],
        registry=registry,
        **kw,  # type: ignore[arg-type]
    )


def writes(rng: random.Random, t: float, counters: dict[tuple[str, str], float]) -> list[Sample]:
    """One scrape at ``t`` (some series missing, a few new ones), plus late samples."""
    out = []
    services = 3 + int((t - T0) // 40)  # new series keep appearing
    for s in range(services):
        for i in range(3):
            labels = {"service": f"s{s}", "instance": f"i{i}"}
            if rng.random() < 0.85:
                key = (f"s{s}", f"i{i}")
                step = rng.choice([1.0, 2.0, 5.0]) if rng.random() > 0.05 else -counters.get(key, 0)
                counters[key] = counters.get(key, 0.0) + step  # a reset now and then
                out.append(Sample(make_labels("m_counter", **labels), t, counters[key]))
            roll = rng.random()
            value = (
                STALE_NAN if roll < 0.05 else math.nan if roll < 0.08 else float(rng.randint(0, 99))
            )
            if rng.random() < 0.8:
                out.append(Sample(make_labels("m_gauge", **labels), t, value))
    for _ in range(rng.randint(0, 3)):  # late and out-of-order, some older than any window
        late = t - rng.choice([0.5, 3.0, 17.0, 44.0, 200.0, 400.0])
        s, i = rng.randrange(services), rng.randrange(3)
        name = rng.choice(["m_gauge", "m_counter"])
        out.append(Sample(make_labels(name, service=f"s{s}", instance=f"i{i}"), late, rng.random()))
    return out


def everything(store: Store, end: float) -> list[tuple[object, tuple[tuple[float, int], ...]]]:
    """Every series with its points, values by their bits (NaN and markers compare)."""
    return [
        (s.labels, tuple((t, value_bits(v)) for t, v in s.points))
        for s in store.select([Matcher("__name__", "=~", ".+")], 0, end + 10)
    ]


def hits(registry: CollectorRegistry, result: str) -> float:
    return (
        registry.get_sample_value("vigil_alert_sample_cache_reads_total", {"result": result}) or 0.0
    )


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("seed", [1, 2])
def test_cached_evaluation_writes_what_direct_reads_write(
    tmp_path: Path, kind: str, seed: int
) -> None:
    def new_store(name: str) -> Store:
        return MemoryStore() if kind == "memory" else SqliteStore(tmp_path / f"{name}.sqlite")

    cached_store, direct_store = new_store("cached"), new_store("direct")
    reg_cached, reg_direct = CollectorRegistry(), CollectorRegistry()
    cached = engine(cached_store, tmp_path, "cached", reg_cached, cache_max_window_s=300.0)
    direct = engine(direct_store, tmp_path, "direct", reg_direct, cache_max_samples=0)
    assert cached.cache is not None and direct.cache is None
    rng = random.Random(seed)
    counters: dict[tuple[str, str], float] = {}
    t = T0
    for n in range(PASSES):
        # off the millisecond grid now and then: windows end at the time rounded to it
        t += rng.choice([1.0, 1.0, 2.0, 3.5, 0.9996, 1.0003])
        batch = writes(rng, t, counters)
        ahead = [Sample(make_labels("m_gauge", service="s0", instance="i9"), t + 0.5, 7.0)]
        for store in (cached_store, direct_store):
            store.write(samples=batch + ahead)  # a sample past the evaluation time too
            if n % 37 == 36:  # retention deletes inside the windows the rules read
                store.prune(RetentionPolicy(samples_max_age_s=25.0), t)
        cached.run_once(t)
        direct.run_once(t)
        assert everything(cached_store, t) == everything(direct_store, t), f"pass {n} at {t}"
    assert {a.name for a in cached.book.alerts()} == {a.name for a in direct.book.alerts()}
    # the cache answered every read but the 8m window's and the subquery's, each pass
    assert hits(reg_cached, "miss") == 2 * PASSES
    assert hits(reg_cached, "hit") >= 10 * PASSES


def test_a_full_cache_leaves_names_to_the_store_and_counts_them(tmp_path: Path) -> None:
    cached_store, direct_store = SqliteStore(tmp_path / "c.db"), SqliteStore(tmp_path / "d.db")
    registry = CollectorRegistry()
    cached = engine(cached_store, tmp_path, "cached", registry, cache_max_samples=60)
    direct = engine(direct_store, tmp_path, "direct", CollectorRegistry(), cache_max_samples=0)
    rng = random.Random(5)
    counters: dict[tuple[str, str], float] = {}
    t = T0
    for _ in range(40):
        t += 1.0
        batch = writes(rng, t, counters)
        cached_store.write(samples=batch)
        direct_store.write(samples=batch)
        cached.run_once(t)
        direct.run_once(t)
        assert everything(cached_store, t) == everything(direct_store, t)
    assert registry.get_sample_value("vigil_alert_sample_cache_overflows_total")
    held = registry.get_sample_value("vigil_alert_sample_cache_samples")
    assert held is not None and held <= 60


def test_the_cache_reads_only_new_samples_each_pass(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    registry = CollectorRegistry()
    cached = engine(store, tmp_path, "cached", registry)
    rng = random.Random(3)
    counters: dict[tuple[str, str], float] = {}
    t = T0
    for _ in range(30):
        t += 1.0
        store.write(samples=writes(rng, t, counters))
        cached.run_once(t)
    before = registry.get_sample_value("vigil_alert_sample_cache_new_samples_total") or 0.0
    batch = [Sample(make_labels("m_gauge", service="s0", instance="i0"), t + 1, 1.0)]
    store.write(samples=batch)
    cached.run_once(t + 1)
    after = registry.get_sample_value("vigil_alert_sample_cache_new_samples_total") or 0.0
    # the one sample written, and what the pass itself wrote before (records, ALERTS)
    recorded = len(store.select([Matcher("__name__", "=~", "rec:.*|ALERTS")], t, t))
    assert after - before == 1 + recorded
    assert SampleCache.supports(store) and SampleCache.supports(MemoryStore())


def test_a_store_whose_log_no_longer_reaches_the_cursor_reloads(tmp_path: Path) -> None:
    store = MemoryStore()
    registry = CollectorRegistry()
    cached = engine(store, tmp_path, "cached", registry)
    rng = random.Random(9)
    counters: dict[tuple[str, str], float] = {}
    t = T0
    for _ in range(5):
        t += 1.0
        store.write(samples=writes(rng, t, counters))
        cached.run_once(t)
    assert cached.cache is not None
    cached.cache.cursor = -5  # as if the log had been trimmed past it
    t += 1.0
    store.write(samples=writes(rng, t, counters))
    cached.run_once(t)
    assert registry.get_sample_value("vigil_alert_sample_cache_reloads_total") == 2.0
    recorded = store.select([Matcher("__name__", "=", "rec:max")], t, t)
    want = Engine(store).instant("max by (service) (m_gauge)", t)
    assert isinstance(want, list)
    assert [(dict(s.labels)["service"], s.points[0][1]) for s in recorded] == [
        (dict(w.labels)["service"], w.value) for w in want
    ]


@pytest.mark.parametrize(
    ("expr", "want"),
    [
        ("x", {"x": {0.0}}),
        ("x offset 1m", {"x": {60.0}}),
        ("rate(x[5m] offset 1m) > y", {"x": {360.0}, "y": {0.0}}),
        ("x + max_over_time(y[1m:10s])", {"x": {300.0}, "y": {360.0}}),
        ("x @ 100", {}),
        ('{__name__=~"x|y"}', {}),
    ],
)
def test_reach_is_how_far_back_each_selector_reads(expr: str, want: dict[str, set[float]]) -> None:
    assert reach(compile_expr(expr), 300.0) == want
    shifted = {name: {b + 5.0 for b in backs} for name, backs in want.items()}
    assert reach(compile_expr(expr), 300.0, 5.0) == shifted  # a group's query_offset


@pytest.mark.parametrize("expr", ["m_gauge", "timestamp(m_gauge)", "m_gauge offset 7s"])
def test_an_instant_selector_reading_only_the_newest_sample_agrees_with_the_whole_window(
    expr: str,
) -> None:
    """An instant query reads each series' newest sample only; a one-step range query
    reads the whole lookback (the per-step reference): the same values, off the
    millisecond grid too, where a sample at the very time is past the rounded end."""
    store = MemoryStore()
    rng = random.Random(4)
    counters: dict[tuple[str, str], float] = {}
    t = T0 + 0.0004
    engine = Engine(store)
    for _ in range(60):
        t += rng.choice([1.0, 0.9996, 1.0007, 2.5])
        store.write(samples=writes(rng, t, counters))
        at = t + rng.choice([0.0, -0.0004, 0.0003])
        instant = engine.instant(expr, at)
        assert isinstance(instant, list)
        ranged = engine.range(expr, at, at, 1.0)
        got = [(s.labels, value_bits(s.value)) for s in instant]
        assert got == [(s.labels, value_bits(s.points[0][1])) for s in ranged]
