"""Retention in the store contract: ``prune(policy, now)`` and ``stats()`` behave alike on
the memory, SQLite and Elasticsearch (osmem-server) backends; the size cap and the file's
space on SQLite (and the memory store's estimate)."""

from __future__ import annotations

import http.server
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from test_store_contract import BACKENDS, T0, event, open_backend

from siem import SiemError, limits
from siem.elasticsearch import ElasticsearchStore
from siem.memory import MemoryStore
from siem.model import EventQuery, Matcher, Sample, Store, make_labels
from siem.retention import RetentionPolicy
from siem.sqlite import SqliteStore

DAY = 86400.0


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield from open_backend(request, tmp_path)


def policy(**kwargs: object) -> RetentionPolicy:
    kwargs.setdefault("pause_s", 0.0)
    return RetentionPolicy(**kwargs)  # type: ignore[arg-type]


def write_week(store: Store) -> None:
    """Events of three datasets and samples of two series, one a day for T0-6d … T0."""
    events = []
    samples = []
    for day in range(7):
        ts = T0 - day * DAY
        events.append(event(day, "shop.access", ts=ts))
        events.append(event(10 + day, "shop.app", ts=ts))
        events.append(event(20 + day, "vigil.audit", ts=ts))
        samples.append(Sample(make_labels("up", job="shop"), ts, 1.0))
        samples.append(Sample(make_labels("up", job="vigil"), ts, 1.0))
    store.write(events=events, samples=samples)


def datasets_left(store: Store) -> dict[str, int]:
    found: dict[str, int] = {}
    for e in store.search(EventQuery(limit=1000)):
        found[e.dataset] = found.get(e.dataset, 0) + 1
    return found


def points_left(store: Store) -> int:
    return sum(len(s.points) for s in store.select([Matcher("__name__", "=", "up")], 0, T0 + 1))


RETENTION = {"default": 3 * DAY + 1, "shop.access": 1 * DAY + 1, "vigil.audit": 0}


def test_store_prune_removes_what_is_older_than_its_datasets_max_age(store: Store) -> None:
    write_week(store)
    rv = store.prune(policy(events_max_age_s=RETENTION, samples_max_age_s=2 * DAY + 1), now=T0)
    # shop.access keeps today and yesterday, shop.app (default) 4 days, vigil.audit all.
    assert dict(rv.events) == {"shop.access": 5, "shop.app": 3}
    assert rv.samples == 2 * 4
    assert not rv.dry_run and rv.size_cap_events == 0
    assert datasets_left(store) == {"shop.access": 2, "shop.app": 4, "vigil.audit": 7}
    assert points_left(store) == 2 * 3
    # Nothing more to do at the same time; a day later, a day more goes.
    assert (
        store.prune(policy(events_max_age_s=RETENTION, samples_max_age_s=0), T0).total_events == 0
    )
    later = store.prune(policy(events_max_age_s=RETENTION, samples_max_age_s=0), T0 + DAY)
    assert dict(later.events) == {"shop.access": 1, "shop.app": 1}
    assert later.samples == 0


def test_store_prune_dry_run_counts_and_removes_nothing(store: Store) -> None:
    write_week(store)
    rv = store.prune(
        policy(events_max_age_s=RETENTION, samples_max_age_s=2 * DAY + 1), T0, dry_run=True
    )
    assert rv.dry_run
    assert dict(rv.events) == {"shop.access": 5, "shop.app": 3}
    assert rv.samples == 8
    assert datasets_left(store) == {"shop.access": 7, "shop.app": 7, "vigil.audit": 7}
    assert points_left(store) == 14


def test_store_prune_without_default_entry_keeps_30_days(store: Store) -> None:
    store.write(events=[event(1, "x", ts=T0 - 31 * DAY), event(2, "x", ts=T0 - 29 * DAY)])
    rv = store.prune(policy(events_max_age_s={"y": DAY}), T0)
    assert dict(rv.events) == {"x": 1}


def test_store_prune_in_small_chunks_removes_everything_due(store: Store) -> None:
    labels = make_labels("up", job="shop")
    store.write(
        events=[event(n, ts=T0 - 100 + n) for n in range(25)],
        samples=[Sample(labels, T0 - 100 + n, 1.0) for n in range(25)],
    )
    rv = store.prune(policy(events_max_age_s={"default": 90}, samples_max_age_s=90, chunk=4), T0)
    assert rv.total_events == 10 and rv.samples == 10
    assert min(e.timestamp for e in store.search(EventQuery(limit=100))) == T0 - 90


def test_store_prune_stops_when_cancelled(store: Store) -> None:
    store.write(events=[event(n, ts=T0 - 100 + n) for n in range(12)])
    budget = limits.QueryBudget(max_samples=0, timeout_s=0)

    class CancelOnPause(RetentionPolicy):
        def pause(self) -> None:
            budget.cancel()  # the collector's stop, arriving between two chunks
            super().pause()

    with budget.active(), pytest.raises(limits.QueryCancelledError):
        store.prune(CancelOnPause(events_max_age_s={"default": 1}, chunk=5, pause_s=0), T0)
    # The first chunk went; the rest is left for the next prune.
    assert len(store.search(EventQuery(limit=100))) == 7


def test_store_stats_per_dataset_and_samples(store: Store) -> None:
    assert store.stats().datasets == () and store.stats().samples == 0
    write_week(store)
    store.write(events=[event(99, "shop.app", ts=T0 + 1, message="x" * 5000)])
    stats = store.stats()
    by_name = {d.dataset: d for d in stats.datasets}
    assert sorted(by_name) == ["shop.access", "shop.app", "vigil.audit"]
    assert [d.dataset for d in stats.datasets] == sorted(by_name)
    assert (by_name["shop.app"].events, by_name["shop.access"].events) == (8, 7)
    assert by_name["shop.access"].oldest == T0 - 6 * DAY
    assert by_name["shop.access"].newest == T0
    assert by_name["shop.app"].newest == T0 + 1
    # The 5 kB document weighs: estimated or measured, shop.app is the biggest.
    assert by_name["shop.app"].bytes > by_name["vigil.audit"].bytes > 0
    assert stats.events == 22
    assert (stats.series, stats.samples) == (2, 14)
    assert (stats.oldest_sample, stats.newest_sample) == (T0 - 6 * DAY, T0)
    assert stats.total_bytes >= sum(d.bytes for d in stats.datasets) > 0


def test_store_stats_after_prune(store: Store) -> None:
    write_week(store)
    store.prune(policy(events_max_age_s={"default": DAY + 1}, samples_max_age_s=DAY + 1), T0)
    stats = store.stats()
    assert {d.dataset: (d.events, d.oldest) for d in stats.datasets} == {
        name: (2, T0 - DAY) for name in ("shop.access", "shop.app", "vigil.audit")
    }
    assert (stats.samples, stats.oldest_sample) == (4, T0 - DAY)


# The size cap: SQLite (pages in use) and the memory store (its estimate).


@pytest.fixture(params=["memory", "sqlite"])
def capped(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoryStore | SqliteStore]:
    rv: MemoryStore | SqliteStore
    rv = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "siem.db")
    yield rv
    rv.close()


def write_history(store: Store, n: int = 2000) -> None:
    """``n`` events of ~1 kB over two datasets and a sample a second, T0 - n … T0."""
    labels = make_labels("up", job="shop")
    store.write(
        events=[
            event(n_, "shop.access" if n_ % 2 else "shop.app", ts=T0 - n + n_, body="x" * 1000)
            for n_ in range(n)
        ],
        samples=[Sample(labels, T0 - n + n_, 1.0) for n_ in range(n)],
    )


def test_store_size_cap_removes_the_oldest_first_across_datasets(
    capped: MemoryStore | SqliteStore,
) -> None:
    write_history(capped)
    cap = capped.used_bytes() // 2
    rv = capped.prune(
        policy(events_max_age_s={"default": 0}, samples_max_age_s=0, max_bytes=cap), T0
    )
    assert capped.used_bytes() <= cap
    kept = capped.search(EventQuery(limit=5000))
    assert rv.total_events + len(kept) == 2000
    assert rv.size_cap_events == rv.total_events > 0
    assert set(rv.events) == {"shop.access", "shop.app"}
    # Oldest first: what is left is the newest, without gaps, in both datasets.
    assert sorted(e.timestamp for e in kept) == [T0 - len(kept) + i for i in range(len(kept))]
    (series,) = capped.select([Matcher("__name__", "=", "up")], 0, T0)
    assert series.points[0][0] > T0 - 2000 and rv.samples == rv.size_cap_samples > 0
    # Not more than needed: at most a slice of time beyond half.
    assert len(kept) >= 2000 * 0.3


def test_store_size_cap_dry_run_reports_the_excess(capped: MemoryStore | SqliteStore) -> None:
    write_history(capped, 200)
    used = capped.used_bytes()
    rv = capped.prune(policy(max_bytes=used - 1000), T0, dry_run=True)
    assert rv.over_cap_bytes == 1000 and rv.total_events == 0
    assert capped.used_bytes() == used


def test_elasticsearch_store_refuses_a_size_cap(es_url: str) -> None:
    es = ElasticsearchStore(es_url, compat_headers=False)
    try:
        with pytest.raises(SiemError, match="max_bytes applies to the SQLite store only"):
            es.prune(policy(max_bytes=1000), T0)
    finally:
        es.close()


# SQLite: the file's space, and writers between chunks.


def test_sqlite_prune_gives_space_back_to_the_file_system(tmp_path: Path) -> None:
    path = tmp_path / "siem.db"
    store = SqliteStore(path)
    try:
        write_history(store, 3000)
        before = store.stats()
        rv = store.prune(policy(events_max_age_s={"default": 300}, samples_max_age_s=300), T0)
        after = store.stats()
    finally:
        store.close()
    assert rv.total_events == 2700 and rv.reclaimed_bytes > 2_000_000
    assert after.free_bytes == 0
    with sqlite3.connect(path) as conn:
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    assert pages * page_size < (before.total_bytes - before.free_bytes) / 3
    assert path.stat().st_size < before.total_bytes


def test_sqlite_older_file_keeps_free_pages_until_vacuum(tmp_path: Path) -> None:
    path = tmp_path / "siem.db"
    with sqlite3.connect(path) as conn:  # a file made before auto_vacuum was set
        conn.execute("CREATE TABLE old (x)")
    store = SqliteStore(path)
    try:
        write_history(store, 1000)
        rv = store.prune(policy(events_max_age_s={"default": 100}), T0)
        assert rv.total_events == 900 and rv.reclaimed_bytes == 0
        assert store.stats().free_bytes > 800_000
        assert store.vacuum() > 800_000
        assert store.stats().free_bytes == 0
        assert len(store.search(EventQuery(limit=1000))) == 100
        # Converted: the next prune gives its pages back.
        assert store.prune(policy(events_max_age_s={"default": 50}), T0).reclaimed_bytes > 0
    finally:
        store.close()


def test_sqlite_prune_lets_writers_in_between_chunks(tmp_path: Path) -> None:
    path = tmp_path / "siem.db"
    store = SqliteStore(path)
    writer = sqlite3.connect(path, timeout=0, isolation_level=None)  # never waits for the lock
    written: list[int] = []

    class WriteOnPause(RetentionPolicy):
        def pause(self) -> None:
            n = len(written)
            writer.execute(
                "INSERT INTO events (id, ts, dataset, doc) VALUES (?, ?, 'w', '{}')",
                (f"w{n}", T0 + n),
            )
            written.append(n)

    try:
        store.write(events=[event(n, ts=T0 - 100 + n) for n in range(20)])
        rv = store.prune(WriteOnPause(events_max_age_s={"default": 50}, chunk=3), T0)
        assert rv.total_events == 20 and len(written) == 6  # 3+3+3+3+3+3, then 2
        assert {e.dataset for e in store.search(EventQuery(limit=100))} == {"w"}
    finally:
        writer.close()
        store.close()


# Real Elasticsearch answers osmem-server does not give: failures inside a
# `_delete_by_query` answer, `timed_out`, replicas and deleted documents in `_stats`
# (osmem-server frees deleted documents at once and has no replicas to report).

_DELETE_FAILED = {  # shaped after a real cluster's answer (gbif/pipelines#197), status 409
    "took": 1671,
    "timed_out": False,
    "total": 5000,
    "deleted": 1200,
    "batches": 1,
    "version_conflicts": 0,
    "noops": 0,
    "retries": {"bulk": 0, "search": 0},
    "throttled_millis": 0,
    "requests_per_second": -1.0,
    "throttled_until_millis": 0,
    "failures": [
        {
            "index": "vigil-events-shop.app",
            "id": "e001",
            "cause": {
                "type": "es_rejected_execution_exception",
                "reason": "rejected execution of coordinating operation",
            },
            "status": 429,
        }
    ],
}
_SPANS = {
    "took": 3,
    "timed_out": False,
    "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
    "hits": {"total": {"value": 7, "relation": "eq"}, "max_score": None, "hits": []},
    "aggregations": {
        "datasets": {
            "doc_count_error_upper_bound": 0,
            "sum_other_doc_count": 0,
            "buckets": [
                {
                    "key": "shop.app",
                    "doc_count": 7,
                    "oldest": {"value": 1.6e9},
                    "newest": {"value": 1.7e9},
                }
            ],
        }
    },
}
_STATS = {  # Elasticsearch 8: replicas in `total`, deleted documents not merged yet
    "_shards": {"total": 4, "successful": 4, "failed": 0},
    "_all": {},
    "indices": {
        "vigil-events-shop.app": {
            "uuid": "dTcIzwvHQ3GxFaVB5qeXpQ",
            "health": "green",
            "status": "open",
            "primaries": {
                "docs": {"count": 7, "deleted": 3},
                "store": {"size_in_bytes": 20931, "reserved_in_bytes": 0},
            },
            "total": {
                "docs": {"count": 14, "deleted": 6},
                "store": {"size_in_bytes": 41862, "reserved_in_bytes": 0},
            },
        },
        "vigil-samples": {
            "uuid": "Qb4kcb9SRr2lb3SlFfGD3g",
            "health": "green",
            "status": "open",
            "primaries": {"store": {"size_in_bytes": 4100, "reserved_in_bytes": 0}},
            "total": {"store": {"size_in_bytes": 8200, "reserved_in_bytes": 0}},
        },
    },
}
_SAMPLES = {
    "took": 1,
    "timed_out": False,
    "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
    "hits": {"total": {"value": 40, "relation": "eq"}, "max_score": None, "hits": []},
    "aggregations": {
        "series": {"value": 2},
        "oldest": {"value": 1.6e9},
        "newest": {"value": 1.7e9},
    },
}


class _RecordedCluster(http.server.BaseHTTPRequestHandler):
    """Answers with recorded bodies by (method, path); remembers the requests."""

    answers: ClassVar[dict[tuple[str, str], tuple[int, dict[str, Any]]]] = {}
    seen: ClassVar[list[str]] = []

    def _answer(self, status: int = 200, body: dict[str, Any] | None = None) -> None:
        raw = json.dumps(body if body is not None else {"acknowledged": True}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Length", str(len(raw) if self.command != "HEAD" else 0))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append(f"{self.command} {self.path} {body.decode()}")
        path = self.path.split("?")[0]
        self._answer(*self.answers.get((self.command, path), (200, None)))

    do_HEAD = do_PUT = do_POST = do_GET = _handle

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def recorded() -> Iterator[tuple[str, type[_RecordedCluster]]]:
    handler = type("Cluster", (_RecordedCluster,), {"answers": {}, "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


_TIMED_OUT = {**_DELETE_FAILED, "timed_out": True, "failures": [], "deleted": 10}


@pytest.mark.parametrize(
    ("status", "answer", "expected"),
    [
        (
            409,
            _DELETE_FAILED,
            [
                "delete by query on vigil-events-shop.app stopped after 1,200 deleted",
                "es_rejected_execution_exception",
                "status 429",
            ],
        ),
        (200, _TIMED_OUT, ["stopped after 10 deleted (0 failure(s)): timed out"]),
    ],
)
def test_elasticsearch_prune_failed_answer_names_the_cause_and_what_was_deleted(
    recorded: tuple[str, type[_RecordedCluster]],
    status: int,
    answer: dict[str, Any],
    expected: list[str],
) -> None:
    url, cluster = recorded
    cluster.answers[("POST", "/vigil-events-*/_search")] = (200, _SPANS)
    cluster.answers[("POST", "/vigil-events-shop.app/_delete_by_query")] = (status, answer)
    store = ElasticsearchStore(url, compat_headers=False)
    try:
        with pytest.raises(SiemError) as caught:
            store.prune(policy(events_max_age_s={"default": DAY}), now=1.7e9)
    finally:
        store.close()
    for part in expected:
        assert part in str(caught.value)
    (request,) = [r for r in cluster.seen if "_delete_by_query" in r]
    assert "conflicts=proceed" in request and '"max_docs":5000' in request


def test_elasticsearch_stats_count_primary_shards_only(
    recorded: tuple[str, type[_RecordedCluster]],
) -> None:
    url, cluster = recorded
    cluster.answers[("POST", "/vigil-events-*/_search")] = (200, _SPANS)
    cluster.answers[("POST", "/vigil-samples/_search")] = (200, _SAMPLES)
    cluster.answers[("GET", "/vigil-events-*,vigil-samples/_stats/store")] = (200, _STATS)
    store = ElasticsearchStore(url, compat_headers=False)
    try:
        stats = store.stats()
    finally:
        store.close()
    (app,) = stats.datasets
    assert (app.dataset, app.events, app.bytes) == ("shop.app", 7, 20931)
    assert (app.oldest, app.newest) == (1.6e9, 1.7e9)
    assert (stats.series, stats.samples, stats.samples_bytes) == (2, 40, 4100)
    assert stats.total_bytes == 20931 + 4100 and stats.bytes_exact
