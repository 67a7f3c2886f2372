"""The sink: retries with backoff keep the data; callbacks run only after a write."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry

from collectors.metrics import CollectorMetrics
from collectors.sink import Backoff, Batch, Sink
from siem.memory import MemoryStore
from siem.model import Event, EventQuery, Sample, WriteResult, make_labels


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


def make_sink(store: MemoryStore, **kwargs: int) -> tuple[Sink, CollectorRegistry, FakeTime]:
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
