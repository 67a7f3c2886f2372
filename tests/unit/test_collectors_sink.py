"""The sink: retries with backoff keep the data; callbacks run only after a write."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from collectors.metrics import CollectorMetrics
from collectors.sink import Backoff, Batch, Sink, store_is_down
from siem import SiemError
from siem.memory import MemoryStore
from siem.model import Event, EventQuery, Matcher, Sample, WriteResult, make_labels
from siem.sqlite import SqliteStore


class FailingStore(MemoryStore):
    """A MemoryStore whose first ``failures`` writes raise, like a locked database."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls = 0

    def write(self, events: Iterable[Event] = (), samples: Iterable[Sample] = ()) -> WriteResult:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise OSError("database is locked")
        return super().write(events, samples)


class FakeTime:
    """A clock that only moves when the sink sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def event(n: int) -> Event:
    return Event.from_doc(
        {"@timestamp": "2024-05-01T12:00:00Z", "event": {"dataset": "t"}}, source="s", position=n
    )


def sample(n: int) -> Sample:
    return Sample(make_labels("up", job="j", instance=str(n)), 1.0, 1.0)


def make_sink(store: Any, **kwargs: Any) -> tuple[Sink, CollectorRegistry, FakeTime]:
    registry = CollectorRegistry()
    fake = FakeTime()
    sink = Sink(
        store,
        CollectorMetrics(registry, clock=lambda: 1714564810.0),
        backoff=Backoff(initial_s=1.0, max_s=4.0),
        clock=lambda: fake.now,
        sleep=fake.sleep,
        **kwargs,
    )
    return sink, registry, fake


def test_sink_retries_with_backoff_and_keeps_data() -> None:
    store = FailingStore(failures=4)
    sink, registry, fake = make_sink(store)
    committed: list[str] = []
    sink.submit(Batch(events=(event(1), event(2)), on_written=lambda: committed.append("a")))
    sink.submit(Batch(samples=(sample(1),)))
    assert sink.pending_items() == 3
    assert sink.flush(timeout_s=60.0)
    # Events and samples are separate lanes backing off side by side: 2 failures each.
    assert fake.sleeps == [1.0, 2.0]
    assert committed == ["a"]
    assert len(store.search(EventQuery(dataset="t"))) == 2
    assert registry.get_sample_value("vigil_collector_write_errors_total") == 4
    assert registry.get_sample_value("vigil_collector_events_total") == 2
    assert registry.get_sample_value("vigil_collector_samples_total") == 1
    assert registry.get_sample_value("vigil_collector_pending_items") == 0
    assert registry.get_sample_value("vigil_collector_lag_seconds") == 10.0


def test_sink_backoff_doubles_up_to_max() -> None:
    store = FailingStore(failures=4)
    sink, _, fake = make_sink(store)
    sink.submit(Batch(events=(event(1), event(2))))
    assert sink.flush(timeout_s=60.0)
    assert fake.sleeps == [1.0, 2.0, 4.0, 4.0]  # doubling, capped at max_s
    assert len(store.search(EventQuery(dataset="t"))) == 2


def test_sink_flush_timeout_keeps_pending_and_skips_callback() -> None:
    store = FailingStore(failures=100)
    sink, _, fake = make_sink(store)
    committed: list[str] = []
    sink.submit(Batch(events=(event(1),), on_written=lambda: committed.append("a")))
    assert not sink.flush(timeout_s=5.0)
    assert fake.now - 100.0 <= 5.0
    assert committed == []
    assert sink.pending_items() == 1
    store.failures = 0
    assert sink.flush(timeout_s=10.0)
    assert committed == ["a"]


def test_sink_interruptible_wait_stops_flush() -> None:
    sink, _, _ = make_sink(FailingStore(failures=100))
    sink.submit(Batch(events=(event(1),)))
    assert not sink.flush(timeout_s=60.0, wait=lambda seconds: True)
    assert sink.pending_items() == 1


def test_sink_coalesces_batches_up_to_max_write() -> None:
    store = FailingStore(failures=0)
    sink, _, _ = make_sink(store, max_write=3)
    for n in range(5):
        sink.submit(Batch(events=(event(n),)))
    assert sink.flush(timeout_s=1.0)
    assert store.calls == 2  # 3 + 2


def test_sink_has_room_until_max_pending() -> None:
    sink, _, _ = make_sink(FailingStore(failures=0), max_pending=2)
    sink.submit(Batch(events=(event(1),)))
    assert sink.has_room()
    sink.submit(Batch(samples=(sample(1),)))
    assert not sink.has_room()
    sink.submit(Batch())  # nothing to write and nothing to run: not queued
    assert sink.pending_items() == 2


def test_sink_counts_duplicates() -> None:
    store = FailingStore(failures=0)
    sink, registry, _ = make_sink(store)
    sink.submit(Batch(events=(event(1),)))
    sink.submit(Batch(events=(event(1),)))
    assert sink.flush(timeout_s=1.0)
    assert registry.get_sample_value("vigil_collector_duplicate_events_total") == 1


class EventsDownStore(MemoryStore):
    """Event writes fail as if the database were locked; samples are written."""

    def write(self, events: Iterable[Event] = (), samples: Iterable[Sample] = ()) -> WriteResult:
        events = list(events)
        if events:
            raise sqlite3.OperationalError("database is locked")
        return super().write(events, samples)


def test_sink_samples_keep_landing_while_event_writes_fail() -> None:
    store = EventsDownStore()
    sink, registry, _ = make_sink(store)
    committed: list[str] = []
    sink.submit(Batch(events=(event(1),), on_written=lambda: committed.append("a")))
    for n in range(3):  # three collector passes, each with a scrape
        sink.submit(Batch(samples=(sample(n),)))
        assert not sink.flush(timeout_s=2.0)
        assert len(store.select([Matcher("__name__", "=", "up")], 0.0, 2.0)) == n + 1
    assert committed == []  # the event is still queued, its checkpoint not committed
    assert sink.pending_items() == 1
    assert registry.get_sample_value("vigil_collector_dead_letter_items_total") == 0


def test_sink_store_down_is_retried_not_dead_lettered(tmp_path: Path) -> None:
    store = FailingStore(failures=3)  # OSError: the store, not the data
    sink, registry, _ = make_sink(store, dead_letter_dir=tmp_path)
    sink.submit(Batch(events=(event(1), event(2))))
    assert sink.flush(timeout_s=60.0)
    assert len(store.search(EventQuery(dataset="t"))) == 2
    assert registry.get_sample_value("vigil_collector_write_errors_total") == 3
    assert registry.get_sample_value("vigil_collector_dead_letter_items_total") == 0
    assert list(tmp_path.iterdir()) == []


def poison_event(n: int) -> Event:
    """An event SQLite cannot take: a lone surrogate is not UTF-8 text."""
    doc = {"@timestamp": "2024-05-01T12:00:00Z", "event": {"dataset": "t"}, "bad": "\ud800"}
    return Event.from_doc(doc, source="s", position=n)


def test_sink_bisects_a_rejected_batch_and_dead_letters_only_the_bad_items(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "siem.db")
    try:
        sink, registry, _ = make_sink(store, dead_letter_dir=tmp_path / "dead-letter")
        committed: list[int] = []
        for b in range(4):  # four tailer reads, one poison event in the second and the last
            events = tuple(
                poison_event(n) if n in (13, 38) else event(n) for n in range(b * 10, b * 10 + 10)
            )
            sink.submit(Batch(events=events, on_written=lambda b=b: committed.append(b)))
        sink.submit(Batch(samples=(sample(1),)))
        assert sink.flush(timeout_s=1.0)
        stored = {e.id for e in store.search(EventQuery(dataset="t", limit=100))}
        assert stored == {event(n).id for n in range(40) if n not in (13, 38)}
        assert committed == [0, 1, 2, 3]  # every checkpoint advanced, in order
        files = list((tmp_path / "dead-letter").glob("collector-*.jsonl"))
        assert len(files) == 1
        lines = [json.loads(line) for line in files[0].read_text(encoding="ascii").splitlines()]
        assert [line["item"]["id"] for line in lines] == [poison_event(13).id, poison_event(38).id]
        assert all(line["kind"] == "event" and line["error"]["message"] for line in lines)
        assert json.loads(lines[0]["item"]["doc"])["bad"] == "\ud800"  # escaped, recoverable
        assert registry.get_sample_value("vigil_collector_dead_letter_items_total") == 2
        assert (
            registry.get_sample_value("vigil_collector_dead_letter_bytes")
            == files[0].stat().st_size
        )
        assert registry.get_sample_value("vigil_collector_events_total") == 38
        assert registry.get_sample_value("vigil_collector_write_errors_total") == 0
        assert len(store.select([Matcher("__name__", "=", "up")], 0.0, 2.0)) == 1
    finally:
        store.close()


def test_sink_non_finite_sample_is_dead_lettered(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "siem.db")
    try:
        sink, registry, _ = make_sink(store, dead_letter_dir=tmp_path / "dl")
        bad = Sample(make_labels("up", job="j", instance="bad"), float("inf"), 1.0)
        sink.submit(Batch(samples=(sample(1), bad, sample(2))))
        assert sink.flush(timeout_s=1.0)
        assert len(store.select([Matcher("__name__", "=", "up")], 0.0, 2.0)) == 2
        assert registry.get_sample_value("vigil_collector_dead_letter_items_total") == 1
        (line,) = next((tmp_path / "dl").iterdir()).read_text().splitlines()
        assert json.loads(line)["item"]["timestamp"] == "inf"
    finally:
        store.close()


def test_sink_store_is_down_tells_store_errors_from_bad_data(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    holder = sqlite3.connect(db, isolation_level=None, timeout=0)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(db, timeout=0)
    with pytest.raises(sqlite3.Error) as locked:
        other.execute("INSERT INTO t VALUES (1)")
    assert store_is_down(locked.value)
    assert store_is_down(SiemError("wrapped")) is False
    wrapped = SiemError("x.db: database is locked")
    wrapped.__cause__ = locked.value
    assert store_is_down(wrapped)
    assert store_is_down(OSError(28, "No space left on device"))
    with pytest.raises(sqlite3.Error) as malformed:
        other.execute("SELECT json('{')")
    assert not store_is_down(malformed.value)
    assert not store_is_down(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"))
    assert store_is_down(SiemError("x.db: the store is closed"))
    assert store_is_down(RuntimeError("something unknown"))  # retry, never dead-letter blindly
    holder.close()
    other.close()


class SwitchedStore(MemoryStore):
    """A MemoryStore that is down (every write raises) while ``down`` is True."""

    down = True

    def write(self, events: Iterable[Event] = (), samples: Iterable[Sample] = ()) -> WriteResult:
        if self.down:
            raise OSError("connection refused")
        return super().write(events, samples)


def test_sink_store_back_ends_the_other_lanes_backoff() -> None:
    # After a long outage a lane may back off for max_s; once the other lane's write
    # lands the store is back, and the lane retries at once instead.
    store = SwitchedStore()
    fake = FakeTime()
    sink = Sink(
        store,
        CollectorMetrics(CollectorRegistry(), clock=lambda: 1714564810.0),
        backoff=Backoff(initial_s=1.0, max_s=60.0),
        clock=lambda: fake.now,
        sleep=fake.sleep,
    )
    sink.submit(Batch(samples=(sample(1),)))
    assert not sink.flush(timeout_s=40.0)  # fails at 100, 101, 103, 107, 115, 131: next 163
    sink.submit(Batch(events=(event(1),), on_written=lambda: None))
    assert not sink.flush(timeout_s=0.0)  # the event fails at 140: next try at 141
    store.down = False
    assert sink.flush(timeout_s=60.0)
    assert fake.now == pytest.approx(141.0)
    assert len(store.select([Matcher("__name__", "=", "up")], 0.0, 2.0)) == 1
