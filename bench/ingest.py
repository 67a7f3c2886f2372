"""Ingest benchmark: shop access-log lines → tailer → parser → sink → SqliteStore.

Writes ``--lines`` realistic ECS JSON access-log lines (formatted by the same
``ecs_logging`` formatter the shop uses, with the fields ``shop/app.py`` logs,
each with its own timestamp) to a file, then measures, in the same run:

- **vigil**: the real path, ``Tailer.collect()`` until the file is read, each
  batch through ``Sink`` into a fresh ``SqliteStore`` (checkpoints committed);
- **naive**: ``json.loads`` per line and ``executemany`` into one table with an
  id primary key and a (dataset, ts) index, 5 000 rows per transaction.

Prints events/s (wall), CPU seconds, events per CPU second (the rate on one
core, which a shared machine does not distort as much), bytes on disk per
event and the ratio vigil/naive of events/s. The goal is 150 000 events/s on
one core, never below naive.

    .venv/bin/python bench/ingest.py [--lines 1000000]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import ecs_logging
from prometheus_client import CollectorRegistry

from collectors.checkpoints import Checkpoints
from collectors.loop import tune_gc
from collectors.metrics import CollectorMetrics
from collectors.sink import Sink
from collectors.tail import Tailer
from siem.sqlite import SqliteStore

GOAL_EVENTS_PER_S = 150_000
T0 = 1_714_564_800.0
ROUTES = ("/", "/products/<int:pid>", "/api/cart", "/api/checkout", "/api/version")


def access_lines(n: int) -> list[bytes]:
    """``n`` distinct access-log lines as the shop's ECS formatter writes them."""
    formatter = ecs_logging.StdlibFormatter(exclude_fields=["log.original", "log.origin"])
    templates: list[str] = []
    for i in range(1000):
        route = ROUTES[i % len(ROUTES)]
        path = route.replace("<int:pid>", str(i % 97))
        status = 500 if i % 50 == 0 else 200
        record = logging.LogRecord(
            f"vigil.shop.access.{i % 2}", logging.INFO, __file__, 1, "", None, None
        )
        record.msg = f"GET {path} {status}"
        record.created = T0
        record.msecs = 0.0
        fields = {
            "event.dataset": "shop.access",
            "service.name": "shop",
            "service.node.name": f"shop-{i % 2 + 1}",
            "event.kind": "event",
            "event.category": ["web"],
            "event.type": ["access"],
            "event.outcome": "failure" if status >= 400 else "success",
            "event.duration": 1_000_000 + i * 7919,
            "source.ip": f"10.0.{i % 7}.{i % 250}",
            "http.request.method": "GET",
            "http.response.status_code": status,
            "url.original": path,
            "url.path": path,
            "user_agent.original": "vigil-loadtest/1.0 (+https://example.test)",
            "labels.route": route,
            "labels.release": "v1",
        }
        if i % 3 == 0:
            fields["user.name"] = f"user{i % 40}"
        for key, value in fields.items():
            setattr(record, key, value)
        templates.append(formatter.format(record))
    stamp = '"@timestamp":"2024-05-01T12:00:00.000Z"'
    assert stamp in templates[0], templates[0][:80]
    rv = []
    for i in range(n):
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(T0 + i // 1000))
        line = templates[i % len(templates)].replace(
            stamp, f'"@timestamp":"{when}.{i % 1000:03d}Z"'
        )
        rv.append(line.encode() + b"\n")
    return rv


def measured(run: Callable[[], int]) -> tuple[int, float, float]:
    """(events, wall seconds, CPU seconds of this process) of ``run()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    events = run()
    return events, time.perf_counter() - wall, time.process_time() - cpu


def disk_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))


def run_vigil(log_file: Path, work: Path) -> int:
    """The real path; returns how many events the store holds afterwards."""
    metrics = CollectorMetrics(CollectorRegistry())
    store = SqliteStore(work / "siem.db")
    try:
        checkpoints = Checkpoints(work / "checkpoints.json")
        tailer = Tailer(work, [str(log_file)], checkpoints, metrics)
        sink = Sink(store, metrics, dead_letter_dir=work / "dead-letter")
        while True:
            batches = tailer.collect()
            if not batches:
                break
            for batch in batches:
                sink.submit(batch)
            if not sink.has_room():
                sink.flush(60.0)
        assert sink.flush(60.0), "the sink could not write everything"
    finally:
        store.close()
    with sqlite3.connect(work / "siem.db") as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
    conn.close()
    return int(count)


def run_naive(log_file: Path, work: Path) -> int:
    """json.loads per line, executemany into one indexed table."""
    conn = sqlite3.connect(work / "naive.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(
        "CREATE TABLE events (id TEXT PRIMARY KEY, ts TEXT, dataset TEXT, doc TEXT NOT NULL)"
    )
    conn.execute("CREATE INDEX events_dataset_ts ON events (dataset, ts)")
    rows: list[tuple[str, str, str, str]] = []

    def write() -> None:
        conn.execute("BEGIN")
        conn.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
        rows.clear()

    name = str(log_file)
    with log_file.open("rb") as fh:
        offset = 0
        for line in fh:
            doc = json.loads(line)
            event_id = hashlib.sha256(f"{name}\x00{offset}".encode()).hexdigest()[:32]
            rows.append((event_id, doc["@timestamp"], doc["event"]["dataset"], json.dumps(doc)))
            offset += len(line)
            if len(rows) >= 5000:
                write()
    if rows:
        write()
    (count,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
    conn.close()
    return int(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="access-log lines to ingest")
    args = parser.parse_args()
    logging.getLogger("vigil").setLevel(logging.WARNING)
    tune_gc()  # as `vigil collect` does; the naive loop gets the same setting
    with tempfile.TemporaryDirectory(prefix="vigil-bench-ingest-") as tmp:
        work = Path(tmp)
        log_file = work / "logs" / "access.log"
        log_file.parent.mkdir()
        with log_file.open("wb") as fh:
            fh.writelines(access_lines(args.lines))
        size = log_file.stat().st_size
        print(f"{args.lines:,} lines, {size / args.lines:.0f} bytes/line, on {os.cpu_count()} CPUs")
        print(
            f"{'path':<7} {'events':>9} {'events/s':>10} {'CPU s':>7} {'ev/CPU s':>9} "
            f"{'disk B/ev':>10}"
        )
        results = {}
        for label, run, db in (
            ("naive", run_naive, work / "naive.db"),
            ("vigil", run_vigil, work / "siem.db"),
        ):
            events, wall, cpu = measured(functools.partial(run, log_file, work))
            if events != args.lines:
                raise SystemExit(f"{label}: stored {events:,} events of {args.lines:,} lines")
            rate = events / wall
            results[label] = rate
            print(
                f"{label:<7} {events:>9,} {rate:>10,.0f} {cpu:>7.1f} {events / cpu:>9,.0f} "
                f"{disk_bytes(db) / events:>10,.0f}"
            )
        ratio = results["vigil"] / results["naive"]
        verdict = "met" if results["vigil"] >= GOAL_EVENTS_PER_S else "NOT met"
        print(
            f"vigil/naive {ratio:.2f}; goal {GOAL_EVENTS_PER_S:,} events/s {verdict}"
            f"{'' if ratio >= 1 else '; BELOW the naive baseline'}"
        )


if __name__ == "__main__":
    main()
