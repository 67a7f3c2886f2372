"""Poison never blocks: hostile lines become error events, rejected items are dead-lettered.

Through the real tailer → sink → ``SqliteStore`` of a ``Collector``: a log file
mixing good lines with a lone surrogate escape, JSON nested 50 000 deep, a
line larger than the tailer's read size, invalid UTF-8, NUL bytes and NaN.
Every good line is stored once, every hostile one as a ``vigil.collector.error``
event with its raw text and ``error.message``, the checkpoint reaches the end
of the file, a restart stores nothing twice, and samples keep landing.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from prometheus_client import CollectorRegistry

from collectors.ecs import ERROR_DATASET
from collectors.loop import Collector
from collectors.sink import Batch
from siem.model import Event, EventQuery, Matcher, Sample, make_labels
from siem.sqlite import SqliteStore
from vigil.settings import Settings, from_mapping

POISON = {
    "lone surrogate": b'{"@timestamp": "2024-05-01T12:00:00Z", "message": "\\ud800"}',
    "deep nesting": b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    "huge line": b'{"message": "' + b"x" * (3 << 20) + b'"}',
    "invalid UTF-8": b'{"@timestamp": "2024-05-01T12:00:00Z", "message": "\xc3\x28"}',
    "NUL byte": b'{"@timestamp": "2024-05-01T12:00:00Z",\x00 "message": "x"}',
    "NaN": b'{"@timestamp": "2024-05-01T12:00:00Z", "value": NaN}',
}


def settings_for(data_dir: Path) -> Settings:
    return from_mapping(
        {"data_dir": str(data_dir), "collect": {"scrape": {}, "scrape_stack": False}}
    )


def good(n: int) -> bytes:
    doc = {"@timestamp": "2024-05-01T12:00:00Z", "event": {"dataset": "shop.app"}, "n": n}
    return json.dumps(doc).encode()


class Scrapes:
    """A scraper stand-in: one ``up`` sample per pass."""

    def __init__(self) -> None:
        self.passes = 0

    def collect(self) -> list[Batch]:
        self.passes += 1
        labels = make_labels("up", job="vigil", instance="collector")
        return [Batch(samples=(Sample(labels, 1_714_564_800.0 + self.passes, 1.0),))]


def drain(collector: Collector, log: Path) -> None:
    """Passes until the checkpoint of ``log`` is at its end (bounded)."""
    checkpoints = log.parent.parent / "collect-checkpoints.json"
    for _ in range(50):
        assert collector.run_once(flush_timeout_s=5.0)
        if checkpoints.exists():
            files = json.loads(checkpoints.read_text())["files"]
            if files.get(str(log.resolve()), {}).get("offset") == log.stat().st_size:
                return
    raise AssertionError("the collector never reached the end of the file")


def test_poison_lines_become_error_events_and_never_block(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "app.log"
    log.parent.mkdir()
    lines = [good(0)]
    for n, raw in enumerate(POISON.values(), start=1):
        lines += [raw, good(n)]
    log.write_bytes(b"\n".join(lines) + b"\n")
    db = tmp_path / "siem.db"
    store = SqliteStore(db)
    registry = CollectorRegistry()
    try:
        collector = Collector(settings_for(tmp_path), store, registry=registry)
        scrapes = Scrapes()
        collector.sources = [scrapes, *collector.sources]
        drain(collector, log)
        stored = store.search(EventQuery(dataset="shop.app", limit=100))
        assert sorted(e.doc["n"] for e in stored) == list(range(len(POISON) + 1))
        errors = store.search(EventQuery(dataset=ERROR_DATASET, limit=100))
        # The huge line is stored in pieces of the tailer's read size, never dropped.
        assert len(errors) >= len(POISON)
        assert all(e.get("error.message") and e.get("event.original") for e in errors)
        reasons = " | ".join(str(e.get("error.message")) for e in errors)
        for words in ("surrogate", "nested deeper", "not UTF-8", "not JSON"):
            assert words in reasons
        originals = "".join(str(e.get("event.original")) for e in errors)
        assert "\\ud800" in originals and "\x00" in originals and "\\xc3(" in originals
        assert len(originals) >= 3 << 20
        samples = store.select([Matcher("__name__", "=", "up")], 0.0, 2e9)
        assert len(samples[0].points) == scrapes.passes
        assert registry.get_sample_value("vigil_collector_dead_letter_items_total") == 0
    finally:
        store.close()
    checkpoint = json.loads((tmp_path / "collect-checkpoints.json").read_text())
    assert checkpoint["files"][str(log.resolve())]["offset"] == log.stat().st_size
    # A restart re-reads nothing: every event is stored once.
    again = SqliteStore(db)
    try:
        assert Collector(settings_for(tmp_path), again, registry=CollectorRegistry()).run_once()
    finally:
        again.close()
    with sqlite3.connect(db) as conn:
        (total,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
    conn.close()
    assert total == len(stored) + len(errors)


class BuggySource:
    """A source producing, once, events of which one the store must reject."""

    def __init__(self) -> None:
        self.done = False

    def collect(self) -> list[Batch]:
        if self.done:
            return []
        self.done = True
        events = [
            Event.from_doc(
                {"@timestamp": "2024-05-01T12:00:00Z", "event": {"dataset": "buggy"}, "n": n},
                source="buggy",
                position=n,
            )
            for n in range(10)
        ]
        bad = {"@timestamp": "2024-05-01T12:00:00Z", "event": {"dataset": "buggy"}, "x": "\udfff"}
        events[4] = Event.from_doc(bad, source="buggy", position=4)
        return [Batch(events=tuple(events))]


def test_poison_item_the_store_rejects_goes_to_the_dead_letter_file(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "app.log").write_bytes(good(0) + b"\n")
    store = SqliteStore(tmp_path / "siem.db")
    registry = CollectorRegistry()
    try:
        collector = Collector(settings_for(tmp_path), store, registry=registry)
        collector.sources.append(BuggySource())
        assert collector.run_once(flush_timeout_s=5.0)
        buggy = store.search(EventQuery(dataset="buggy", limit=100))
        assert sorted(e.doc["n"] for e in buggy) == [0, 1, 2, 3, 5, 6, 7, 8, 9]
        assert len(store.search(EventQuery(dataset="shop.app"))) == 1
    finally:
        store.close()
    (dead,) = (tmp_path / "dead-letter").glob("collector-*.jsonl")
    (line,) = dead.read_text(encoding="ascii").splitlines()
    record = json.loads(line)
    assert record["kind"] == "event"
    assert "surrogate" in record["error"]["message"]
    assert json.loads(record["item"]["doc"])["x"] == "\udfff"
    assert registry.get_sample_value("vigil_collector_dead_letter_items_total") == 1
    assert registry.get_sample_value("vigil_collector_dead_letter_bytes") == dead.stat().st_size
    assert registry.get_sample_value("vigil_collector_write_errors_total") == 0
