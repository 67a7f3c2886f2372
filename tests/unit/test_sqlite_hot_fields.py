"""SqliteStore's hot fields: indexed generated columns give the answers of the JSON walk
(MemoryStore is the reference), are used by the query plan, and are added in place to a
``siem.db`` written before they existed."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any
from unittest.mock import patch

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import siem.sqlite
from siem import aggregations as agg
from siem.memory import MemoryStore
from siem.model import Event, EventQuery
from siem.sqlite import HOT_COLUMNS, SqliteStore

T0 = 1_700_000_000.0
_values = st.one_of(
    st.sampled_from(["alice", "bob", "true", "false", "7", "7.0", "", "[1]"]),
    st.sampled_from([7, 7.0, 0.5, -1, True, False, None, 2**63 - 1]),
)
KQL = ["user.name: 7", "user.name: true", "user.name: al*", "user.name > 0", "user.name: *"]
KQL += ["not user.name: alice", "event.dataset: a and user.name: bob", 'user.name: "[1]"']
_field = st.one_of(_values, st.lists(_values, max_size=2), st.just({"k": "v"}))


def _events(values: list[tuple[str, Any, bool]]) -> list[Event]:
    rv = []
    for n, (dataset, value, flat) in enumerate(values):
        doc: dict[str, Any] = {"event": {"dataset": dataset}, "message": f"m{n}"}
        if value is ...:  # no user.name at all
            pass
        elif flat:
            doc["user.name"] = value
        else:
            doc["user"] = {"name": value}
        rv.append(Event(f"e{n:04d}", T0 + n, dataset, doc))
    return rv


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.one_of(_field, st.just(...)), st.booleans()),
        max_size=12,
    ),
    kql=st.sampled_from(KQL),
    whole_index=st.booleans(),
)
def test_hot_field_terms_and_search_match_memory(
    tmp_path_factory: Any, values: list[tuple[str, Any, bool]], kql: str, whole_index: bool
) -> None:
    """Both plans of a terms aggregation: walking the whole index (past 50,000 events in
    the time range) and the time range alone."""
    events = _events(values)
    sqlite = SqliteStore(tmp_path_factory.mktemp("hot") / "siem.db")
    memory = MemoryStore()
    try:
        for store in (sqlite, memory):
            store.write(events=events)
        for query in (EventQuery(limit=100), EventQuery(limit=100, kql=kql)):
            assert sqlite.search(query) == memory.search(query)
            with patch.object(siem.sqlite, "_MANY_EVENTS", 0 if whole_index else 50_000):
                for request in (agg.Terms("user.name", 20), agg.Cardinality("user.name")):
                    assert sqlite.aggregate(query, request) == memory.aggregate(query, request)
                assert sqlite.count_by(query, "user.name") == memory.count_by(query, "user.name")
    finally:
        sqlite.close()


def _plan(db: Path, sql: str, args: list[Any]) -> str:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}", args).fetchall()
    conn.close()
    return " | ".join(row[-1] for row in rows)


def _old_db(db: Path) -> sqlite3.Connection:
    """The events table as the store created it before hot fields existed."""
    old = sqlite3.connect(db)
    old.execute(
        "CREATE TABLE events (id TEXT PRIMARY KEY, ts REAL NOT NULL, dataset TEXT NOT NULL, "
        "doc TEXT NOT NULL)"
    )
    return old


def _columns(db: Path) -> list[tuple[Any, ...]]:
    typed = ", ".join(f"typeof({c}), {c}" for c in HOT_COLUMNS.values())
    with sqlite3.connect(db) as conn:
        rows = conn.execute(f"SELECT id, {typed} FROM events ORDER BY id").fetchall()
    conn.close()
    return rows


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(st.tuples(st.just("a"), _field, st.booleans()), max_size=8))
def test_written_hot_values_equal_the_migrated_ones(
    tmp_path_factory: Any, values: list[tuple[str, Any, bool]]
) -> None:
    """The writer computes the columns in Python, a migration in SQL: the same values."""
    events = _events(values)
    written, migrated = (tmp_path_factory.mktemp("hot") / "siem.db" for _ in range(2))
    store = SqliteStore(written)
    store.write(events=events)
    store.close()
    old = _old_db(migrated)
    old.executemany(
        "INSERT INTO events VALUES (?, ?, ?, ?)",
        [(e.id, e.timestamp, e.dataset, json.dumps(e.doc)) for e in events],
    )
    old.commit()
    old.close()
    SqliteStore(migrated).close()
    assert _columns(written) == _columns(migrated)


def test_an_old_siem_db_gets_the_hot_columns_in_place(tmp_path: Path) -> None:
    db = tmp_path / "siem.db"
    old = _old_db(db)
    docs = [
        {"http": {"response": {"status_code": code}}, "url": {"path": "/x"}} for code in (200, 503)
    ]
    old.executemany(
        "INSERT INTO events VALUES (?, ?, 'shop.access', ?)",
        [(f"id{n}", T0 + n, json.dumps(doc)) for n, doc in enumerate(docs)],
    )
    old.commit()
    old.close()
    store = SqliteStore(db)
    try:
        hits = store.search(EventQuery(kql="http.response.status_code: 503"))
        assert [e.id for e in hits] == ["id1"]
        top = store.aggregate(EventQuery(), agg.Terms("http.response.status_code", 5))
        assert top == agg.TermsResult((("200", 1), ("503", 1)))
    finally:
        store.close()
    SqliteStore(db).close()  # opening again changes nothing
    with sqlite3.connect(db) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_xinfo(events)")}
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(events)")}
    conn.close()
    assert set(HOT_COLUMNS.values()) <= columns
    assert {f"events_{c}" for c in HOT_COLUMNS.values()} <= indexes


def test_searches_on_hot_fields_use_their_index(tmp_path: Path) -> None:
    from siem.sqlite import _where

    db = tmp_path / "siem.db"
    SqliteStore(db).close()
    for field, column in HOT_COLUMNS.items():
        where, args = _where(EventQuery(start=T0, end=T0 + 86_400, kql=f"{field}: x"))
        sql = f"SELECT id FROM events WHERE {where} ORDER BY ts DESC, id DESC LIMIT 100"
        assert f"INDEX events_{column} " in _plan(db, sql, args), field


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    interval=st.sampled_from([0.1, 0.3, 7.3, 60.0, 1e-3]),
    start=st.floats(1_700_000_000.0, 1_700_000_100.0),
    picks=st.lists(st.tuples(st.integers(0, 30), st.integers(-2, 2)), max_size=30),
)
def test_histogram_buckets_match_memory_at_the_edges(
    tmp_path_factory: Any, interval: float, start: float, picks: list[tuple[int, int]]
) -> None:
    """Events a few floats either side of bucket boundaries land where MemoryStore puts them;
    1e-3 s over 2 s is 2,000 buckets, past the per-bucket COUNT path."""
    request = agg.DateHistogram(interval, start, start + max(2.0, 31 * interval))
    first = request.first_bucket()
    times = []
    for k, ulps in picks:
        ts = first + k * interval
        for _ in range(abs(ulps)):
            ts = math.nextafter(ts, math.copysign(math.inf, ulps))
        times.append(ts)
    events = [Event(f"e{n}", ts, "a", {"message": "m"}) for n, ts in enumerate(times)]
    sqlite = SqliteStore(tmp_path_factory.mktemp("hist") / "siem.db")
    memory = MemoryStore()
    try:
        for store in (sqlite, memory):
            store.write(events=events)
        assert sqlite.aggregate(EventQuery(), request) == memory.aggregate(EventQuery(), request)
    finally:
        sqlite.close()
