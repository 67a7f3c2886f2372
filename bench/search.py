"""Search benchmark: KQL searches and aggregations over N events in SQLite, and plain SQL.

Fills one SQLite file with N shop access events spread over 24 hours (default
1,000,000; ``--events`` for quick runs, ``--db`` to keep and reuse the file),
then runs each case ``--runs`` times through ``SqliteStore`` (KQL compiled by
``siem.kql``, the path ``/api/events`` and ``vigil search`` take) and as the
SQL a person would write for the same question on the same file (the
baseline), and prints p50/p95 and the ratio of the p50s. Searches are
Discover's: newest first, 100 rows, over the whole 24 hours.

    .venv/bin/python bench/search.py [--events 1000000] [--runs 7] [--db PATH]
"""

from __future__ import annotations

import argparse
import functools
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from siem import aggregations as agg
from siem.model import Event, EventQuery
from siem.sqlite import SqliteStore

T0 = 1_700_000_000.0
SPAN_S = 86_400.0
GOAL_P95_MS = 300.0
BATCH = 20_000


def fill(store: SqliteStore, n: int) -> None:
    """N access events over 24 h: 1 % 503s, 0.5 % slow, 0.2 % "timeout" messages."""
    for first in range(0, n, BATCH):
        batch = []
        for i in range(first, min(first + BATCH, n)):
            status = 503 if i % 100 == 7 else 200
            duration = 2_000_000_000 if i % 200 == 3 else 12_000_000 + i % 1000
            message = f"GET /products/{i % 500} {status}" + (
                " upstream timeout" if i % 500 == 9 else ""
            )
            doc = {
                "event": {"dataset": "shop.access", "duration": duration},
                "http": {"request": {"method": "GET"}, "response": {"status_code": status}},
                "url": {"path": f"/products/{i % 500}"},
                "source": {"ip": f"10.0.{i % 7}.{i % 250}"},
                "message": message,
            }
            ts = T0 + SPAN_S * i / n
            batch.append(Event(f"{i:012d}", ts, "shop.access", doc, text=json.dumps(doc)))
        store.write(events=batch)


SEARCHES: list[tuple[str, str, str]] = [
    # (name, KQL, hand-written SQL WHERE clause for the same question)
    (
        "equality",
        "http.response.status_code: 503",
        "json_extract(doc, '$.http.response.status_code') = 503",
    ),
    ("range", "event.duration > 1000000000", "json_extract(doc, '$.event.duration') > 1000000000"),
    ("wildcard", "url.path: /products/42*", "json_extract(doc, '$.url.path') LIKE '/products/42%'"),
    ("free text", "timeout", "json_extract(doc, '$.message') LIKE '%timeout%'"),
    (
        "no match (scan)",
        "url.path: /products/499 and http.response.status_code: 503",
        "json_extract(doc, '$.url.path') = '/products/499' "
        "AND json_extract(doc, '$.http.response.status_code') = 503",
    ),
]


def _fetch(conn: sqlite3.Connection, sql: str, params: tuple[float, ...]) -> list[Any]:
    return conn.execute(sql, params).fetchall()


def timings(run: Callable[[], Any], runs: int) -> list[float]:
    rv = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        rv.append((time.perf_counter() - started) * 1000)
    return rv


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def report(name: str, ours: list[float], baseline: list[float]) -> None:
    p50, base50 = statistics.median(ours), statistics.median(baseline)
    verdict = "ok" if p95(ours) < GOAL_P95_MS else "over"
    print(
        f"  {name:<16} p50 {p50:8.1f} ms  p95 {p95(ours):8.1f} ms  "
        f"(SQL p50 {base50:8.1f} ms, x{p50 / base50:5.2f})  "
        f"goal p95 < {GOAL_P95_MS:.0f} ms: {verdict}"
    )


def aggregations(
    store: SqliteStore, conn: sqlite3.Connection, label: str, start: float, end: float, runs: int
) -> None:
    """A terms and a date-histogram aggregation over [start, end), next to plain SQL."""
    everything = EventQuery(start=start, end=end)
    terms = agg.Terms("source.ip", 10)
    report(
        f"terms {label}",
        timings(lambda: store.aggregate(everything, terms), runs),
        timings(
            lambda: conn.execute(
                "SELECT json_extract(doc, '$.source.ip') AS v, COUNT(*) AS n FROM events "
                "WHERE ts >= ? AND ts < ? GROUP BY v ORDER BY n DESC LIMIT 10",
                (start, end),
            ).fetchall(),
            runs,
        ),
    )
    histogram = agg.DateHistogram(agg.auto_interval(end - start), start, end)
    report(
        f"histogram {label}",
        timings(lambda: store.aggregate(everything, histogram), runs),
        timings(
            lambda: conn.execute(
                "SELECT CAST((ts - ?) / ? AS INTEGER) AS k, COUNT(*) FROM events "
                "WHERE ts >= ? AND ts < ? GROUP BY k",
                (start, histogram.interval_s, start, end),
            ).fetchall(),
            runs,
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--db", help="SQLite file to fill (when empty) and keep")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.db) if args.db else Path(tmp) / "search.db"
        store = SqliteStore(path)
        conn = sqlite3.connect(path)
        try:
            (have,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
            if have != args.events:
                conn.execute("DELETE FROM events")
                conn.commit()
                started = time.perf_counter()
                fill(store, args.events)
                print(f"  filled {args.events:,} events in {time.perf_counter() - started:.1f} s")
            start, end = T0, T0 + SPAN_S
            print(f"  {args.events:,} events, {args.runs} runs per case, newest 100 over 24 h")
            for name, text, where in SEARCHES:
                query = EventQuery(start=start, end=end, limit=100, kql=text)
                sql = (
                    f"SELECT id, ts, dataset, doc FROM events WHERE ts >= ? AND ts < ? AND {where} "
                    "ORDER BY ts DESC, id DESC LIMIT 100"
                )
                report(
                    name,
                    timings(functools.partial(store.search, query), args.runs),
                    timings(functools.partial(_fetch, conn, sql, (start, end)), args.runs),
                )
            for label, lo in (("24 h", start), ("15 min", end - 900.0)):
                aggregations(store, conn, label, lo, end, args.runs)
        finally:
            conn.close()
            store.close()


if __name__ == "__main__":
    main()
