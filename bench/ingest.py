"""Ingest benchmark: log lines → tailer → parser → sink → store, next to a naive loop.

Writes ``--lines`` realistic ECS JSON access-log lines (formatted by the same
``ecs_logging`` formatter the shop uses, with the fields ``shop/app.py`` logs,
each with its own timestamp) to a file, then measures, in the same run:

- **naive** (the baseline): ``json.loads`` per line and ``executemany`` into one
  table with an id primary key and a (dataset, ts) index, 5 000 rows per
  transaction;
- **vigil**: the real path, ``Tailer.collect()`` until the file is read, each
  batch through ``Sink`` into a fresh ``SqliteStore`` (checkpoints committed);
- the same real path for each third-party parser (haproxy, nginx combined and
  JSON, nginx error, PostgreSQL jsonlog and stderr) over ``--parser-lines``
  lines made by repeating the sample files of ``tests/files/`` (real output of
  those servers), and for the shop's lines into ``ElasticsearchStore`` on
  osmem-server (``--es-lines``; skipped when osmem-server cannot start).

Prints lines/s and events/s (wall), CPU seconds, events per CPU second (the
rate on one core, which a shared machine does not distort as much), bytes on
disk per event (SQLite) and the ratio of events/s to the naive baseline. The
goal is 150 000 events/s on one core for the shop's lines, never below naive.

    .venv/bin/python bench/ingest.py [--lines 1000000] [--parser-lines 100000] [--es-lines 5000]
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
from collectors.parsers import Parser, get_parser
from collectors.sink import Sink
from collectors.tail import Tailer
from siem import aggregations as agg
from siem.model import EventQuery, Store
from siem.sqlite import SqliteStore

GOAL_EVENTS_PER_S = 150_000
T0 = 1_714_564_800.0
ROUTES = ("/", "/products/<int:pid>", "/api/cart", "/api/checkout", "/api/version")
SAMPLES = Path(__file__).parents[1] / "tests" / "files"
FORMATS = (  # (label, parser, sample file): what `collect.files` reads in the demo
    ("haproxy", "haproxy", "haproxy-httplog-syslog.log"),
    ("nginx", "nginx", "nginx-access-combined.log"),
    ("nginx json", "nginx", "nginx-access-json.log"),
    ("nginx err", "nginx_error", "nginx-error.log"),
    ("pg json", "postgresql", "postgresql-jsonlog.json"),
    ("pg stderr", "postgresql_stderr", "postgresql-stderr.log"),
)


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


def run_vigil(
    log_file: Path, work: Path, store: Store | None = None, parser: Parser | None = None
) -> int:
    """The real path into ``store`` (a fresh SqliteStore under ``work`` when None),
    with ``parser`` (ECS when None); returns how many events the store holds afterwards."""
    metrics = CollectorMetrics(CollectorRegistry())
    store = store or SqliteStore(work / "siem.db")
    try:
        checkpoints = Checkpoints(work / "checkpoints.json")
        name = str(log_file)
        if parser is None:
            tailer = Tailer(work, [name], checkpoints, metrics)
        else:
            tailer = Tailer(work, [], checkpoints, metrics, parsers={name: parser})
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
        count = store.aggregate(EventQuery(), agg.Count())
    finally:
        store.close()
    assert isinstance(count, agg.CountResult)
    return count.count


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


def repeated(sample: Path, lines: int) -> list[bytes]:
    """``lines`` lines: the sample file over and over (multi-line events stay whole)."""
    text = sample.read_bytes().splitlines(keepends=True)
    rounds = max(1, lines // len(text))
    return text * rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="access-log lines to ingest")
    parser.add_argument(
        "--parser-lines", type=int, default=100_000, help="lines per third-party log format"
    )
    parser.add_argument(
        "--es-lines", type=int, default=5_000, help="access-log lines into Elasticsearch"
    )
    args = parser.parse_args()
    logging.getLogger("vigil").setLevel(logging.WARNING)
    tune_gc()  # as `vigil collect` does; the naive loop gets the same setting
    with tempfile.TemporaryDirectory(prefix="vigil-bench-ingest-") as tmp:
        work = Path(tmp)
        log_file = work / "logs" / "access.log"
        log_file.parent.mkdir()
        shop_lines = access_lines(args.lines)
        with log_file.open("wb") as fh:
            fh.writelines(shop_lines)
        size = log_file.stat().st_size
        print(f"{args.lines:,} lines, {size / args.lines:.0f} bytes/line, on {os.cpu_count()} CPUs")
        print(
            f"{'path':<17} {'lines':>9} {'events':>9} {'lines/s':>9} {'events/s':>9} "
            f"{'CPU s':>6} {'ev/CPU s':>9} {'disk B/ev':>9} {'x naive':>7}"
        )
        naive = 0.0

        def row(
            label: str, lines: int, run: Callable[[], int], db: Path | None
        ) -> tuple[int, float]:
            events, wall, cpu = measured(run)
            rate = events / wall
            disk = f"{disk_bytes(db) / events:>9,.0f}" if db is not None and events else f"{'-':>9}"
            print(
                f"{label:<17} {lines:>9,} {events:>9,} {lines / wall:>9,.0f} {rate:>9,.0f} "
                f"{cpu:>6.1f} {events / cpu:>9,.0f} {disk} {rate / (naive or rate):>7.2f}"
            )
            return events, rate

        run: Callable[[], int] = functools.partial(run_naive, log_file, work)
        _, naive = row("naive", args.lines, run, work / "naive.db")
        shop = work / "shop"
        shop.mkdir()
        run = functools.partial(run_vigil, log_file, shop)
        events, vigil = row("vigil (shop ecs)", args.lines, run, shop / "siem.db")
        if events != args.lines:
            raise SystemExit(f"vigil: stored {events:,} events of {args.lines:,} lines")
        for label, name, sample in FORMATS:
            fmt = work / name.replace("_", "-") / label.replace(" ", "-")
            fmt.mkdir(parents=True)
            lines = repeated(SAMPLES / sample, args.parser_lines)
            path = fmt / sample
            path.write_bytes(b"".join(lines))
            run = functools.partial(run_vigil, path, fmt, None, get_parser(name))
            row(f"vigil ({label})", len(lines), run, fmt / "siem.db")
        es_row(args.es_lines, shop_lines, work, row)
        ratio = vigil / naive
        verdict = "met" if vigil >= GOAL_EVENTS_PER_S else "NOT met"
        print(
            f"vigil/naive {ratio:.2f}; goal {GOAL_EVENTS_PER_S:,} events/s {verdict}"
            f"{'' if ratio >= 1 else '; BELOW the naive baseline'}"
        )


def es_row(
    lines: int,
    shop_lines: list[bytes],
    work: Path,
    row: Callable[[str, int, Callable[[], int], Path | None], tuple[int, float]],
) -> None:
    """The shop's lines into ElasticsearchStore on a fresh osmem-server."""
    try:
        from osmem_server import OsmemServer

        from siem.elasticsearch import ElasticsearchStore

        server = OsmemServer.start(japanese=False)
    except Exception as exc:  # not installed or cannot start: the other rows still count
        print(f"vigil (es): skipped, osmem-server did not start: {exc}")
        return
    try:
        es = work / "es"
        es.mkdir()
        path = es / "access.log"
        path.write_bytes(b"".join(shop_lines[:lines]))
        # osmem-server refuses the 8.x compatibility media types, as in the tests.
        store = ElasticsearchStore(server.url, compat_headers=False)
        row("vigil (es, osmem)", lines, functools.partial(run_vigil, path, es, store), None)
    finally:
        server.close()


if __name__ == "__main__":
    main()
