"""One contract for every Store backend: MemoryStore (the reference), SqliteStore and
ElasticsearchStore (on osmem-server, an in-memory OpenSearch-compatible server)."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from siem import SiemError, limits
from siem import aggregations as agg
from siem.elasticsearch import ElasticsearchStore
from siem.memory import MemoryStore
from siem.model import (
    STALE_NAN,
    Event,
    EventQuery,
    Matcher,
    MetricMetadata,
    Sample,
    Store,
    is_stale,
    make_labels,
    value_bits,
)
from siem.retention import RetentionPolicy
from siem.sqlite import SqliteStore

T0 = 1_700_000_000.0


BACKENDS = ["memory", "sqlite", "elasticsearch"]


def open_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The store named by ``request.param``, closed after the test (a fixture's body)."""
    rv: Store
    if request.param == "memory":
        rv = MemoryStore()
    elif request.param == "sqlite":
        rv = SqliteStore(tmp_path / "siem.db")
    else:
        # osmem-server (OpenSearch-compatible) refuses the 8.x compatibility media types;
        # refresh="true": the contract reads right after writing.
        rv = ElasticsearchStore(
            request.getfixturevalue("es_url"), compat_headers=False, refresh="true"
        )
    yield rv
    rv.close()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield from open_backend(request, tmp_path)


def event(n: int, dataset: str = "shop.auth", ts: float | None = None, **doc: Any) -> Event:
    body: dict[str, Any] = {"event": {"dataset": dataset}, "message": f"event {n}", **doc}
    return Event(f"id{n:03d}", T0 + n if ts is None else ts, dataset, body)


def auth_events() -> list[Event]:
    return [
        event(1, source={"ip": "10.0.0.1"}, user={"name": "admin"}, event_outcome="failure"),
        event(2, source={"ip": "10.0.0.2"}, user={"name": "alice"}),
        event(3, source={"ip": "10.0.0.1"}, user={"name": "administrator"}),
        event(4, "shop.access", http={"response": {"status_code": 503}}, tags=["slow", "v2"]),
        event(5, "shop.access", http={"response": {"status_code": 200}}, message="GET /cart"),
        event(6, "shop.access", **{"source.ip": "192.168.1.9", "http.response.status_code": 502}),
        event(7, "shop.app", message="Connection REFUSED by db", error={"message": "boom"}),
    ]


def ids(events: list[Event]) -> list[str]:
    return [e.id for e in events]


def test_store_write_events_is_idempotent(store: Store) -> None:
    first = store.write(events=auth_events())
    again = store.write(events=[*auth_events()[:3], event(8)])
    assert (first.events, first.duplicate_events) == (7, 0)
    assert (again.events, again.duplicate_events) == (1, 3)
    assert len(store.search(EventQuery(limit=1000))) == 8


def test_store_write_duplicate_within_one_batch_is_counted(store: Store) -> None:
    labels = make_labels("up", job="shop")
    rv = store.write(
        events=[event(1), event(1)], samples=[Sample(labels, T0, 1.0), Sample(labels, T0, 0.0)]
    )
    assert rv.events == 1 and rv.duplicate_events == 1
    assert rv.samples == 1 and rv.duplicate_samples == 1
    (series,) = store.select([Matcher("__name__", "=", "up")], T0, T0)
    assert series.points == ((T0, 1.0),)


def test_store_write_samples_is_idempotent(store: Store) -> None:
    labels = make_labels("up", job="shop", instance="a")
    first = store.write(samples=[Sample(labels, T0, 1.0), Sample(labels, T0 + 5, 1.0)])
    again = store.write(samples=[Sample(labels, T0 + 5, 0.0), Sample(labels, T0 + 10, 0.0)])
    assert (first.samples, first.duplicate_samples) == (2, 0)
    assert (again.samples, again.duplicate_samples) == (1, 1)
    (series,) = store.select([Matcher("__name__", "=", "up")], 0, T0 + 100)
    assert series.points == ((T0, 1.0), (T0 + 5, 1.0), (T0 + 10, 0.0))


def test_store_write_empty_batch(store: Store) -> None:
    assert store.write() == store.write(events=[], samples=[])
    assert store.search(EventQuery()) == []


def test_store_search_newest_first_with_limit(store: Store) -> None:
    store.write(events=auth_events())
    assert ids(store.search(EventQuery(limit=3))) == ["id007", "id006", "id005"]
    assert store.search(EventQuery(limit=1))[0].doc["error"] == {"message": "boom"}


def test_store_search_same_timestamp_orders_by_id(store: Store) -> None:
    store.write(events=[event(1, ts=T0), event(2, ts=T0), event(3, ts=T0 - 1)])
    assert ids(store.search(EventQuery())) == ["id002", "id001", "id003"]


def test_store_search_by_dataset_and_time_range(store: Store) -> None:
    store.write(events=auth_events())
    assert ids(store.search(EventQuery(dataset="shop.auth"))) == ["id003", "id002", "id001"]
    # [start, end): the start is included, the end is not.
    in_range = store.search(EventQuery(dataset="shop.access", start=T0 + 4, end=T0 + 6))
    assert ids(in_range) == ["id005", "id004"]
    assert store.search(EventQuery(dataset="nope")) == []


@pytest.mark.parametrize(
    ("equals", "expected"),
    [
        ((("source.ip", "10.0.0.1"),), ["id003", "id001"]),
        ((("source.ip", "10.0.0.1"), ("user.name", "admin")), ["id001"]),
        ((("http.response.status_code", 503),), ["id004"]),
        ((("http.response.status_code", "503"),), ["id004"]),
        ((("http.response.status_code", 502),), ["id006"]),  # flat ECS key
        ((("source.ip", "192.168.1.9"),), ["id006"]),
        ((("tags", "v2"),), ["id004"]),  # any element of a list
        ((("user.name", "bob"),), []),
    ],
)
def test_store_search_by_field_equality(
    store: Store, equals: tuple[tuple[str, Any], ...], expected: list[str]
) -> None:
    store.write(events=auth_events())
    assert ids(store.search(EventQuery(equals=equals))) == expected


@pytest.mark.parametrize(
    ("kql", "expected"),
    [
        ("source.ip:10.0.0.1", ["id003", "id001"]),
        ("source.ip:10.0.0.*", ["id003", "id002", "id001"]),
        ("user.name:adm*", ["id003", "id001"]),
        ('user.name:"adm*"', []),
        ("user.name:(alice or admin)", ["id002", "id001"]),
        ("http.response.status_code >= 500", ["id006", "id004"]),
        ("http.response.status_code < 500", ["id005"]),
        ("http.response.status_code:503", ["id004"]),
        ("http.response.status_code:5*", ["id006", "id004"]),
        ("tags:slow and tags:v2", ["id004"]),
        ("error.message:*", ["id007"]),
        ("not source.ip:* and not http.response.status_code:*", ["id007"]),
        ("refused", ["id007"]),
        ('"connection refused"', ["id007"]),
        ("get and cart", ["id005"]),
        ("source.ip:10.0.0.1 and not (user.name:admin or user.name:bob)", ["id003"]),
        ("event.dataset:shop.access and http.response.status_code >= 500", ["id006", "id004"]),
        ("source:*", ["id003", "id002", "id001"]),  # "source.ip" flat key is no object
        ("source:10.0.0.1", []),  # an object never equals a value
        ("user.name:%", []),  # LIKE metacharacters are literal
        ("", ["id007", "id006", "id005", "id004", "id003", "id002", "id001"]),
    ],
)
def test_store_search_by_kql(store: Store, kql: str, expected: list[str]) -> None:
    store.write(events=auth_events())
    assert ids(store.search(EventQuery(kql=kql))) == expected


def test_store_search_combines_dataset_equality_and_kql(store: Store) -> None:
    store.write(events=auth_events())
    query = EventQuery(dataset="shop.auth", equals=(("source.ip", "10.0.0.1"),), kql="adm*")
    assert ids(store.search(query)) == []
    query = EventQuery(dataset="shop.auth", equals=(("source.ip", "10.0.0.1"),), kql="user.name:a*")
    assert ids(store.search(query)) == ["id003", "id001"]


def test_store_count_by_field(store: Store) -> None:
    store.write(events=auth_events())
    assert store.count_by(EventQuery(dataset="shop.auth"), "source.ip") == {
        "10.0.0.1": 2,
        "10.0.0.2": 1,
    }
    # No limit applies; missing fields are not counted; flat keys count too.
    assert store.count_by(EventQuery(limit=1), "source.ip") == {
        "10.0.0.1": 2,
        "10.0.0.2": 1,
        "192.168.1.9": 1,
    }
    assert store.count_by(EventQuery(kql="http.response.status_code:*"), "event.dataset") == {
        "shop.access": 3
    }
    assert store.count_by(
        EventQuery(kql="http.response.status_code:*"), "http.response.status_code"
    ) == {
        "503": 1,
        "200": 1,
        "502": 1,
    }


def _samples() -> list[Sample]:
    rv = []
    for instance in ("a:1", "b:2"):
        for code in ("200", "500"):
            labels = make_labels("http_requests_total", job="shop", instance=instance, code=code)
            rv += [Sample(labels, T0 + i * 5, float(i)) for i in range(5)]
        rv.append(Sample(make_labels("up", job="shop", instance=instance), T0, 1.0))
    return rv


def _instances_codes(series: list[Any]) -> list[tuple[str, str]]:
    return [(dict(s.labels)["instance"], dict(s.labels).get("code", "")) for s in series]


@pytest.mark.parametrize(
    ("matchers", "expected"),
    [
        ([Matcher("__name__", "=", "up")], [("a:1", ""), ("b:2", "")]),
        (
            [Matcher("__name__", "=", "http_requests_total"), Matcher("code", "=", "500")],
            [("a:1", "500"), ("b:2", "500")],
        ),
        (
            [Matcher("__name__", "=", "http_requests_total"), Matcher("code", "!=", "500")],
            [("a:1", "200"), ("b:2", "200")],
        ),
        (
            [Matcher("__name__", "=", "http_requests_total"), Matcher("code", "=~", "5..")],
            [("a:1", "500"), ("b:2", "500")],
        ),
        (
            [Matcher("__name__", "=", "http_requests_total"), Matcher("instance", "!~", "a.*")],
            [("b:2", "200"), ("b:2", "500")],
        ),
        ([Matcher("__name__", "=~", "up|http_.*"), Matcher("instance", "=", "a:1")], None),
        ([Matcher("code", "=~", "2.*")], [("a:1", "200"), ("b:2", "200")]),
        ([Matcher("instance", "=~", "a")], []),  # regexes are anchored
        ([Matcher("__name__", "=", "nope")], []),
    ],
)
def test_store_select_matchers(
    store: Store, matchers: list[Matcher], expected: list[tuple[str, str]] | None
) -> None:
    store.write(samples=_samples())
    series = store.select(matchers, 0, T0 + 1000)
    if expected is None:
        assert sorted(s.name for s in series) == ["http_requests_total"] * 2 + ["up"]
    else:
        assert _instances_codes(series) == expected
    assert [s.labels for s in series] == sorted(s.labels for s in series)


def test_store_select_points_in_closed_range(store: Store) -> None:
    store.write(samples=_samples())
    matchers = [Matcher("__name__", "=", "http_requests_total"), Matcher("instance", "=", "a:1")]
    series = store.select(matchers, T0 + 5, T0 + 15)
    assert [s.points for s in series] == [((T0 + 5, 1.0), (T0 + 10, 2.0), (T0 + 15, 3.0))] * 2
    # A series without points in the range is left out.
    assert store.select([Matcher("__name__", "=", "up")], T0 + 1, T0 + 100) == []


def test_store_select_keeps_special_values(store: Store) -> None:
    labels = make_labels("latency_seconds", quantile="0.99")
    store.write(samples=[Sample(labels, T0, math.nan), Sample(labels, T0 + 1, math.inf)])
    (series,) = store.select([Matcher("__name__", "=", "latency_seconds")], T0, T0 + 1)
    assert math.isnan(series.points[0][1])
    assert series.points[1] == (T0 + 1, math.inf)


def test_store_keeps_special_values_bit_for_bit(store: Store) -> None:
    # The stale marker must stay apart from NaN: PromQL ends a series at it, while a NaN
    # is a value (that poisons a sum for the 5-minute lookback).
    labels = make_labels("job:requests:rate5m", job="shop")
    values = [STALE_NAN, math.nan, math.inf, -math.inf, -0.0, 0.0, 1.5, -math.nan]
    written = [Sample(labels, T0 + n, v) for n, v in enumerate(values)]
    assert store.write(samples=written).samples == len(values)
    (series,) = store.select([Matcher("__name__", "=", "job:requests:rate5m")], T0, T0 + 100)
    assert [t for t, _ in series.points] == [s.timestamp for s in written]
    assert [value_bits(v) for _, v in series.points] == [value_bits(v) for v in values]
    assert [is_stale(v) for _, v in series.points] == [True] + [False] * (len(values) - 1)
    # Written again: every one is a duplicate, whatever its value (NaN is never == NaN).
    assert store.write(samples=written).duplicate_samples == len(values)


def test_store_concurrent_threads_write_and_read(store: Store) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                labels = make_labels("t", thread=str(n))
                store.write(events=[event(n * 100 + i)], samples=[Sample(labels, T0 + i, 1.0)])
                store.search(EventQuery(limit=5))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(store.search(EventQuery(limit=1000))) == 80
    assert len(store.select([Matcher("__name__", "=", "t")], 0, T0 + 100)) == 4


def test_sqlite_store_data_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "siem.db"
    store = SqliteStore(path)
    store.write(events=auth_events(), samples=_samples())
    store.close()
    reopened = SqliteStore(path)
    try:
        assert ids(reopened.search(EventQuery(dataset="shop.auth"))) == ["id003", "id002", "id001"]
        assert reopened.search(EventQuery(limit=1))[0].doc == auth_events()[-1].doc
        up = reopened.select([Matcher("__name__", "=", "up")], 0, T0 + 100)
        assert [s.points for s in up] == [((T0, 1.0),), ((T0, 1.0),)]
        # Writing again after the restart is still idempotent (series ids are found, not remade).
        rv = reopened.write(events=auth_events()[:1], samples=_samples())
        assert (rv.events, rv.duplicate_events, rv.samples) == (0, 1, 0)
    finally:
        reopened.close()


def test_sqlite_store_uses_wal(tmp_path: Path) -> None:
    import sqlite3

    SqliteStore(tmp_path / "siem.db").close()
    with sqlite3.connect(tmp_path / "siem.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_sqlite_store_closed_store_refuses(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "siem.db")
    store.close()
    with pytest.raises(SiemError, match="the store is closed"):
        store.search(EventQuery())


def test_sqlite_store_unopenable_path_names_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(SiemError, match="file"):
        SqliteStore(tmp_path / "file" / "siem.db")


def test_sqlite_store_rejects_non_finite_timestamp(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "siem.db")
    try:
        with pytest.raises(SiemError, match="not a finite number"):
            store.write(samples=[Sample(make_labels("up"), math.nan, 1.0)])
        assert store.write(samples=[Sample(make_labels("up"), T0, 1.0)]).samples == 1
    finally:
        store.close()


def test_sqlite_store_keeps_documents_with_nan(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "siem.db")
    try:
        store.write(events=[event(1, value=math.nan), event(2)])
        assert ids(store.search(EventQuery(kql="event*"))) == ["id002", "id001"]
        assert store.search(EventQuery(kql="value:*"))[0].doc["value"] == "nan"
    finally:
        store.close()


# Aggregations: the same answers from every backend (siem.aggregations states the semantics).


def test_store_aggregate_count_follows_the_query(store: Store) -> None:
    store.write(events=auth_events())
    assert store.aggregate(EventQuery(), agg.Count()) == agg.CountResult(7)
    rv = store.aggregate(EventQuery(kql="event.dataset: shop.access"), agg.Count())
    assert rv == agg.CountResult(3)


def test_store_aggregate_terms_top_values_other_and_missing(store: Store) -> None:
    store.write(events=[*auth_events(), event(8, user={"name": "alice"})])
    rv = store.aggregate(EventQuery(), agg.Terms("user.name", size=1))
    # alice twice; admin and administrator once each are "other"; 4 events have no user.
    assert rv == agg.TermsResult((("alice", 2),), other=2, missing=4)
    full = store.aggregate(EventQuery(), agg.Terms("event.dataset", size=10))
    # Ties break on the value, ascending, as Elasticsearch orders terms buckets.
    assert full == agg.TermsResult((("shop.auth", 4), ("shop.access", 3), ("shop.app", 1)))


def test_store_aggregate_terms_of_numbers_and_flat_keys(store: Store) -> None:
    store.write(events=auth_events())
    rv = store.aggregate(EventQuery(), agg.Terms("http.response.status_code", size=5))
    assert isinstance(rv, agg.TermsResult)
    assert sorted(rv.buckets) == [("200", 1), ("502", 1), ("503", 1)]
    assert rv.missing == 4


def test_store_aggregate_date_histogram_aligned_with_empty_buckets(store: Store) -> None:
    base = 1_700_000_100.0  # a multiple of 60 s since the epoch: bucket boundaries
    times = [base - 1, base + 5, base + 59.5, base + 61, base + 200, base + 240]
    store.write(events=[event(n, ts=t) for n, t in enumerate(times)])
    request = agg.DateHistogram(60.0, start=base + 30, end=base + 240)
    rv = store.aggregate(EventQuery(), request)
    # The first bucket starts at base (aligned), not at start; base - 1 and base + 5
    # are outside [start, end) and base + 240 is at end: none of them counts.
    assert rv == agg.HistogramResult(
        60.0,
        ((base, 1), (base + 60, 1), (base + 120, 0), (base + 180, 1)),
    )


def test_store_aggregate_date_histogram_follows_the_query(store: Store) -> None:
    store.write(events=auth_events())
    request = agg.DateHistogram(2.0, start=T0, end=T0 + 8)
    rv = store.aggregate(EventQuery(kql="event.dataset: shop.access"), request)
    assert rv == agg.HistogramResult(2.0, ((T0, 0), (T0 + 2, 0), (T0 + 4, 2), (T0 + 6, 1)))


def test_store_aggregate_percentiles_interpolate_numbers_only(store: Store) -> None:
    values: list[Any] = [10, 20, 30, 40, 50.5, "60", True, None]
    store.write(
        events=[event(n, duration=v) for n, v in enumerate(values)] + [event(99)],
    )
    rv = store.aggregate(EventQuery(), agg.Percentiles("duration", (0.0, 50.0, 90.0, 100.0)))
    # Numbers 10, 20, 30, 40, 50.5 (not the string, the boolean or null): rank p/100*(n-1).
    assert rv == agg.PercentilesResult(((0.0, 10.0), (50.0, 30.0), (90.0, 46.3), (100.0, 50.5)))
    empty = store.aggregate(EventQuery(), agg.Percentiles("nothing", (50.0,)))
    assert empty == agg.PercentilesResult(((50.0, None),))


def test_store_aggregate_cardinality_is_exact(store: Store) -> None:
    store.write(events=auth_events())
    assert store.aggregate(EventQuery(), agg.Cardinality("source.ip")) == agg.CardinalityResult(3)
    rv = store.aggregate(EventQuery(dataset="shop.auth"), agg.Cardinality("source.ip"))
    assert rv == agg.CardinalityResult(2)


def test_store_aggregate_runs_under_the_query_budget(store: Store) -> None:
    store.write(events=[event(n, user={"name": f"u{n}"}) for n in range(50)])
    budget = limits.QueryBudget(max_samples=10, timeout_s=0)
    with budget.active(), pytest.raises(limits.TooManySamplesError):
        store.aggregate(EventQuery(), agg.Terms("user.name"))
    cancelled = limits.QueryBudget(max_samples=0, timeout_s=0)
    cancelled.cancel()
    with cancelled.active(), pytest.raises(limits.QueryCancelledError):
        store.aggregate(EventQuery(), agg.DateHistogram(1.0, T0, T0 + 60))


def test_aggregation_requests_reject_bad_parameters() -> None:
    with pytest.raises(agg.AggregationError):
        agg.Terms("user.name", size=0)
    with pytest.raises(agg.AggregationError):
        agg.DateHistogram(0.0, T0, T0 + 60)
    with pytest.raises(agg.AggregationError):
        agg.DateHistogram(1.0, T0, T0 + 86400 * 365)
    with pytest.raises(agg.AggregationError):
        agg.Percentiles("x", (101.0,))
    for bad in ("", 'a"b', "$.x", "x.y]"):
        with pytest.raises(agg.AggregationError, match="invalid field name"):
            agg.Terms(bad)
        with pytest.raises(agg.AggregationError, match="invalid field name"):
            agg.Cardinality(bad)


def test_aggregation_auto_interval_gives_at_most_100_buckets() -> None:
    assert agg.auto_interval(900) == 10.0
    assert agg.auto_interval(3600) == 60.0
    assert agg.auto_interval(86400) == 900.0
    assert agg.auto_interval(7 * 86400) == 7200.0
    for span in (1.0, 59.0, 3601.0, 40 * 86400.0):
        assert span / agg.auto_interval(span) <= 100


def test_store_search_after_pages_newest_first_without_repeats(store: Store) -> None:
    # Two events share a timestamp: the id breaks the tie, so no page repeats or skips one.
    store.write(events=[event(n, ts=T0 + n // 2) for n in range(7)])
    seen: list[str] = []
    after = None
    while True:
        page = store.search(EventQuery(limit=3, after=after))
        if not page:
            break
        seen.extend(ids(page))
        after = (page[-1].timestamp, page[-1].id)
    assert seen == [f"id{n:03d}" for n in (6, 5, 4, 3, 2, 1, 0)]


# -- series look-ups and metadata: the same answers without reading samples ----------------------


def _lookup_samples() -> list[Sample]:
    """``_samples()`` (T0..T0+20) plus a series with a gap: points at T0+1000 and T0+2000."""
    disk = make_labels("disk_free_bytes", job="node", instance="c:3", mount="/", empty="")
    return [*_samples(), Sample(disk, T0 + 1000, 5.0), Sample(disk, T0 + 2000, 4.0)]


@pytest.mark.parametrize(
    "matchers",
    [
        [Matcher("__name__", "=", "up")],
        [Matcher("__name__", "=", "http_requests_total"), Matcher("code", "!=", "500")],
        [Matcher("__name__", "=~", "up|http_.*"), Matcher("instance", "=", "a:1")],
        [Matcher("code", "=~", "2.*")],
        [Matcher("instance", "=~", "a")],
        [Matcher("__name__", "=", "nope")],
    ],
)
def test_store_series_lookup_answers_like_select(store: Store, matchers: list[Matcher]) -> None:
    store.write(samples=_lookup_samples())
    for start, end in ((0, T0 + 5000), (T0 + 5, T0 + 15), (T0 + 1, T0 + 999)):
        expected = [s.labels for s in store.select(matchers, start, end)]
        assert store.series(matchers, start, end) == expected


def test_store_series_lookup_time_range_limit_and_all_time(store: Store) -> None:
    store.write(samples=_lookup_samples())
    every = [Matcher("__name__", "=~", ".+")]
    # No bounds: all retained time; one bound: open on the other side.
    assert [dict(s)["__name__"] for s in store.series(every)] == [
        "disk_free_bytes",
        *["http_requests_total"] * 4,
        "up",
        "up",
    ]
    assert [dict(s)["__name__"] for s in store.series(every, start=T0 + 21)] == ["disk_free_bytes"]
    assert len(store.series(every, end=T0)) == 6
    # Closed range, and a range inside the gap between two points finds nothing.
    assert len(store.series(every, T0 + 20, T0 + 1000)) == 5
    assert store.series(every, T0 + 1001, T0 + 1999) == []
    # The limit keeps the first series of the sorted answer.
    assert store.series(every, limit=2) == store.series(every)[:2]
    assert store.series(every, T0 + 1, T0 + 999, limit=1) == [
        make_labels("http_requests_total", job="shop", instance="a:1", code="200")
    ]


def test_store_label_names_and_values(store: Store) -> None:
    store.write(samples=_lookup_samples())
    # A label with an empty value is absent, as in Prometheus.
    assert store.label_names() == ["__name__", "code", "instance", "job", "mount"]
    assert store.label_names([Matcher("__name__", "=", "up")]) == ["__name__", "instance", "job"]
    assert store.label_names(start=T0 + 21) == ["__name__", "instance", "job", "mount"]
    assert store.label_names(end=T0 + 20, limit=2) == ["__name__", "code"]
    assert store.label_values("__name__") == ["disk_free_bytes", "http_requests_total", "up"]
    assert store.label_values("__name__", start=T0 + 1, end=T0 + 999) == ["http_requests_total"]
    assert store.label_values("__name__", limit=1) == ["disk_free_bytes"]
    assert store.label_values("__name__", [Matcher("code", "=", "500")]) == ["http_requests_total"]
    assert store.label_values("instance") == ["a:1", "b:2", "c:3"]
    assert store.label_values("instance", [Matcher("job", "=", "shop")], limit=1) == ["a:1"]
    assert store.label_values("instance", start=T0 + 1, end=T0 + 999) == ["a:1", "b:2"]
    assert store.label_values("empty") == []
    assert store.label_values("nope") == []


def test_store_lookups_hold_series_not_samples(store: Store) -> None:
    labels = [make_labels("busy", shard=str(n)) for n in range(3)]
    store.write(samples=[Sample(lab, T0 + i, float(i)) for lab in labels for i in range(100)])
    matchers = [Matcher("__name__", "=", "busy")]
    budget = limits.QueryBudget(max_samples=10, timeout_s=0)
    with budget.active():
        assert store.series(matchers, T0, T0 + 100) == labels
        assert store.label_values("shard", matchers) == ["0", "1", "2"]
        assert store.label_names(matchers) == ["__name__", "shard"]
        with pytest.raises(limits.TooManySamplesError):
            store.select(matchers, T0, T0 + 100)  # 300 samples: what the look-ups avoid
    cancelled = limits.QueryBudget(max_samples=0, timeout_s=0)
    cancelled.cancel()
    with cancelled.active(), pytest.raises(limits.QueryCancelledError):
        store.series(matchers)


def test_store_metadata_latest_wins_per_family(store: Store) -> None:
    assert store.metadata() == []
    requests = MetricMetadata("http_requests_total", "counter", "Requests served.")
    latency = MetricMetadata("latency_seconds", "histogram", "Latency.", "seconds")
    assert store.write_metadata([requests, latency]) == 2
    assert store.write_metadata([]) == 0
    changed = MetricMetadata("http_requests_total", "counter", "Requests served, by code.")
    store.write_metadata([changed])
    assert store.metadata() == [changed, latency]
    assert store.metadata("latency_seconds") == [latency]
    assert store.metadata("nope") == []
    assert store.metadata(limit=1) == [changed]
    odd = MetricMetadata("odd:metric_total", "unknown", 'Quotes " and \\ and\nnewlines, ünïcode.')
    store.write_metadata([odd])
    assert store.metadata("odd:metric_total") == [odd]


def test_sqlite_store_opens_a_file_from_before_metadata(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "siem.db"
    store = SqliteStore(path)
    store.write(samples=_lookup_samples())
    store.close()
    with sqlite3.connect(path) as conn:  # as a file written before this table existed
        conn.execute("DROP TABLE metric_metadata")
    reopened = SqliteStore(path)
    try:
        assert reopened.label_values("__name__", end=T0) == ["http_requests_total", "up"]
        assert reopened.metadata() == []
        reopened.write_metadata([MetricMetadata("up", "gauge")])
        assert reopened.metadata() == [MetricMetadata("up", "gauge")]
    finally:
        reopened.close()


def test_sqlite_store_migrates_a_file_from_before_the_special_column(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "siem.db"
    labels = make_labels("up", job="shop")
    with sqlite3.connect(path) as conn:  # the samples table as Vigil made it before
        conn.execute(
            "CREATE TABLE series (id INTEGER PRIMARY KEY, labels_key TEXT NOT NULL UNIQUE, "
            "labels TEXT NOT NULL, name TEXT NOT NULL)"
        )
        conn.execute(
            "CREATE TABLE samples (series_id INTEGER NOT NULL REFERENCES series (id), "
            "ts REAL NOT NULL, value REAL, PRIMARY KEY (series_id, ts)) WITHOUT ROWID"
        )
        conn.execute(
            "INSERT INTO series VALUES (1, ?, ?, 'up')",
            ('[["__name__","up"],["job","shop"]]', '{"__name__":"up","job":"shop"}'),
        )
        conn.executemany("INSERT INTO samples VALUES (1, ?, ?)", [(T0, 1.0), (T0 + 1, None)])
    for _ in range(2):  # migrated once; opening it again changes nothing
        store = SqliteStore(path)
        try:
            store.write(samples=[Sample(labels, T0 + 2, STALE_NAN)])
            (series,) = store.select([Matcher("__name__", "=", "up")], T0, T0 + 2)
        finally:
            store.close()
        old_nan, stale = series.points[1][1], series.points[2][1]
        assert series.points[0] == (T0, 1.0)
        assert value_bits(old_nan) == value_bits(math.nan) and is_stale(stale)


def test_elasticsearch_series_lookup_pages_through_the_keys(
    es_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import siem.elasticsearch

    monkeypatch.setattr(siem.elasticsearch, "PAGE_SIZE", 2)  # 7 series: 4 requests
    store = ElasticsearchStore(es_url, compat_headers=False)
    try:
        store.write(samples=_lookup_samples())
        assert len(store.series([Matcher("job", "=~", ".+")])) == 7
        assert store.label_values("instance") == ["a:1", "b:2", "c:3"]
        names = ["disk_free_bytes", "http_requests_total", "up"]
        assert store.label_values("__name__") == names  # the distinct names, 2 pages
    finally:
        store.close()


@pytest.fixture(params=["memory", "sqlite"])
def logging_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The stores that log their writes for ``samples_since`` (Elasticsearch does not)."""
    yield from open_backend(request, tmp_path)


def test_samples_since_gives_what_was_stored_after_the_cursor(logging_store: Store) -> None:
    since = logging_store.samples_since  # type: ignore[attr-defined]
    up = make_labels("up", job="shop")
    logging_store.write(samples=[Sample(up, T0, 1.0)])
    cursor = since(None).cursor
    assert since(cursor).samples == []
    logging_store.write(
        samples=[
            Sample(up, T0, 9.0),  # a duplicate: refused, so not among them
            Sample(up, T0 + 2, STALE_NAN),
            Sample(up, T0 - 60, 3.0),  # late and out of order
        ]
    )
    changes = since(cursor)
    assert not changes.reset and changes.deleted_before == -math.inf
    got = sorted((labels, t, value_bits(v)) for labels, t, v in changes.samples)
    assert got == [(up, T0 - 60, value_bits(3.0)), (up, T0 + 2, value_bits(STALE_NAN))]
    assert since(changes.cursor).samples == []
    logging_store.prune(RetentionPolicy(samples_max_age_s=30.0), T0 + 20)
    after = since(changes.cursor)
    assert after.deleted_before == T0 - 10 and after.samples == []
    assert since(after.cursor + 1_000).reset  # a cursor the store never gave


def test_sqlite_sample_log_trimmed_past_a_cursor_says_reset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    import siem.sqlite

    store = SqliteStore(tmp_path / "siem.db")
    try:
        up = make_labels("up", job="shop")
        store.write(samples=[Sample(up, T0, 1.0)])
        old = store.samples_since(None).cursor
        monkeypatch.setattr(siem.sqlite, "SAMPLE_LOG_KEEP_S", 0.0)
        monkeypatch.setattr(siem.sqlite, "_LOG_TRIM_EVERY_S", 0.0)
        store.write(samples=[Sample(up, T0 + 1, 2.0)])
        store.write(samples=[Sample(up, T0 + 2, 3.0)])  # trims what the first writes logged
        assert store.samples_since(old).reset
        with sqlite3.connect(tmp_path / "siem.db") as conn:
            (logged,) = conn.execute("SELECT COUNT(*) FROM sample_log").fetchone()
        assert logged <= 1
    finally:
        store.close()
