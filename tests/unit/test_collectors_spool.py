"""The disk spool: framed segments, torn and corrupt records skipped, size cap, replay order."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from collectors.loop import Collector, can_wait
from collectors.metrics import CollectorMetrics
from collectors.sink import Backoff, Batch, Sink
from collectors.spool import Spool, decode_item, encode_item
from siem.memory import MemoryStore
from siem.model import STALE_NAN, Event, Sample, WriteResult, is_stale, make_labels, value_bits
from vigil.errors import ConfigError
from vigil.settings import from_mapping


def sample(n: int) -> Sample:
    return Sample(make_labels("scrape_counter", job="j"), float(n), float(n))


def event(n: int) -> Event:
    doc = {"@timestamp": "2024-05-01T12:00:00Z", "event": {"dataset": "t"}, "n": n}
    return Event.from_doc(doc, source="syslog", position=n)


def make_spool(
    path: Path, *, max_bytes: int = 1 << 20, segment_bytes: int = 1 << 20, now: float = 990.0
) -> tuple[Spool, CollectorRegistry]:
    registry = CollectorRegistry()
    spool = Spool(
        path,
        CollectorMetrics(registry),
        max_bytes=max_bytes,
        segment_bytes=segment_bytes,
        clock=lambda: now,
    )
    return spool, registry


def drain(spool: Spool, kind: str = "sample") -> list[list[Any]]:
    out = []
    while (record := spool.lane(kind).peek()) is not None:
        out.append(record.items)
        spool.popped(kind)
    return out


def metric(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name)
    assert value is not None, name
    return value


def test_spool_items_round_trip_exactly() -> None:
    odd = Event("id1", 1.5, "d", {"msg": "lone \udc80 and \x00", "n": [1, 2.5, None]}, "{}")
    nan = Sample(make_labels("m", a="é"), 2.0, math.nan)
    back = decode_item(encode_item(odd))
    assert back == odd and isinstance(back, Event) and back.text == "{}"
    got = decode_item(encode_item(nan))
    assert isinstance(got, Sample) and got.labels == nan.labels and math.isnan(got.value)
    assert not is_stale(got.value)
    # Through the JSON of a record: the stale marker stays one, and -0.0 and Inf as written.
    for value in (STALE_NAN, -0.0, math.inf, -math.inf):
        raw = json.loads(json.dumps(encode_item(Sample(nan.labels, 3.0, value))))
        back = decode_item(raw)
        assert isinstance(back, Sample) and value_bits(back.value) == value_bits(value)
    with pytest.raises(ValueError):  # bits that are not a NaN's are not a spooled value
        decode_item(["s", [], 1.0, "nan:3ff0000000000000"])


def test_spool_replays_in_order_across_segments_and_deletes_them(tmp_path: Path) -> None:
    spool, registry = make_spool(tmp_path, segment_bytes=300)
    for n in range(20):
        assert spool.append("sample", [sample(n), sample(n + 100)])
    assert len(list((tmp_path / "sample").glob("*.seg"))) > 3
    assert metric(registry, "vigil_collector_spool_bytes") == spool.bytes() > 0
    assert metric(registry, "vigil_collector_spool_oldest_seconds") == 0.0
    later, registry = make_spool(tmp_path, segment_bytes=300, now=1000.0)  # a restart
    assert metric(registry, "vigil_collector_spool_bytes") == spool.bytes()
    assert metric(registry, "vigil_collector_spool_oldest_seconds") == 10.0
    assert drain(later) == [[sample(n), sample(n + 100)] for n in range(20)]
    assert list((tmp_path / "sample").glob("*.seg")) == []
    assert metric(registry, "vigil_collector_spool_bytes") == 0
    assert metric(registry, "vigil_collector_spool_oldest_seconds") == 0


def test_spool_reopened_resumes_after_the_last_replayed_record(tmp_path: Path) -> None:
    spool, _ = make_spool(tmp_path)
    for n in range(3):
        spool.append("event", [event(n)])
    spool.popped("event")
    again, _ = make_spool(tmp_path)
    assert drain(again, "event") == [[event(1)], [event(2)]]


def test_spool_torn_tail_is_skipped_and_counted(tmp_path: Path) -> None:
    spool, _ = make_spool(tmp_path)
    for n in range(3):
        spool.append("sample", [sample(n)])
    (segment,) = (tmp_path / "sample").glob("*.seg")
    data = segment.read_bytes()
    segment.write_bytes(data[:-7])  # a crash in the middle of the last write
    again, registry = make_spool(tmp_path)
    again.append("sample", [sample(3)])  # new records after a torn tail still replay
    assert drain(again) == [[sample(0)], [sample(1)], [sample(3)]]
    assert metric(registry, "vigil_collector_spool_corrupt_records_total") == 1


def spool_with_a_bad_second_record(path: Path) -> None:
    """Three records of one sample each under ``path``; the second with one flipped bit."""
    spool, _ = make_spool(path)
    for n in range(3):
        spool.append("sample", [sample(n)])
    (segment,) = (path / "sample").glob("*.seg")
    data = bytearray(segment.read_bytes())
    third = len(data) // 3
    data[third + third // 2] ^= 0x20  # in the second record's payload
    segment.write_bytes(bytes(data))


def test_spool_bad_checksum_skips_only_that_record(tmp_path: Path) -> None:
    spool_with_a_bad_second_record(tmp_path)
    again, registry = make_spool(tmp_path)
    assert drain(again) == [[sample(0)], [sample(2)]]
    assert metric(registry, "vigil_collector_spool_corrupt_records_total") == 1


def test_spool_peek_many_stops_before_a_corrupt_record_and_counts_it_once(
    tmp_path: Path,
) -> None:
    spool_with_a_bad_second_record(tmp_path)
    again, registry = make_spool(tmp_path)
    lane = again.lane("sample")
    assert [r.items for r in lane.peek_many(100)] == [[sample(0)]]
    assert metric(registry, "vigil_collector_spool_corrupt_records_total") == 0
    again.popped("sample")  # the head moves on: past the corrupt record, counted once
    assert [r.items for r in lane.peek_many(100)] == [[sample(2)]]
    assert metric(registry, "vigil_collector_spool_corrupt_records_total") == 1


def test_spool_garbage_segment_is_skipped_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "sample").mkdir()
    (tmp_path / "sample" / "000000000001.seg").write_bytes(b"\xff" * 100)
    (tmp_path / "sample" / "position").write_text("not a position")
    spool, registry = make_spool(tmp_path)
    assert drain(spool) == []
    spool.append("sample", [sample(1)])
    assert drain(spool) == [[sample(1)]]
    assert metric(registry, "vigil_collector_spool_corrupt_records_total") == 1


def test_spool_size_cap_drops_and_counts_items(tmp_path: Path) -> None:
    spool, registry = make_spool(tmp_path, max_bytes=400)
    kept = 0
    for n in range(30):
        kept += spool.append("sample", [sample(n), sample(n)])
    assert 0 < kept < 30
    assert metric(registry, "vigil_collector_spool_dropped_items_total") == 2 * (30 - kept)
    assert drain(spool) == [[sample(n), sample(n)] for n in range(kept)]


class DownStore(MemoryStore):
    """A MemoryStore that raises like a locked database while ``down``; records write
    order and counts the writes that landed."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True
        self.order: list[float] = []
        self.writes = 0

    def write(self, events: Iterable[Event] = (), samples: Iterable[Sample] = ()) -> WriteResult:
        if self.down:
            raise OSError("database is locked")
        self.writes += 1
        samples = list(samples)
        self.order.extend(s.timestamp for s in samples)
        return super().write(events, samples)


def make_sink(
    store: Any, path: Path, max_bytes: int = 1 << 20, **kwargs: Any
) -> tuple[Sink, CollectorRegistry]:
    """A sink spooling under ``path``, on a clock that only moves when the sink sleeps."""
    registry = CollectorRegistry()
    metrics = CollectorMetrics(registry)
    spool = Spool(path, metrics, max_bytes=max_bytes)
    now = [100.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    sink = Sink(
        store,
        metrics,
        backoff=Backoff(1.0, 1.0),
        clock=lambda: now[0],
        sleep=sleep,
        spool=spool,
        **kwargs,
    )
    return sink, registry


def spool_scrapes(sink: Sink, count: int) -> None:
    """``count`` scrapes (values 0, 1, …) while the store is down: each flush fails."""
    for n in range(count):
        sink.submit(Batch(samples=(sample(n),)))
        assert not sink.flush(0.0)


def test_sink_spools_scrapes_while_store_is_down_and_replays_in_order(tmp_path: Path) -> None:
    store = DownStore()
    sink, registry = make_sink(store, tmp_path)
    committed: list[int] = []
    sink.submit(Batch(events=(event(1),), on_written=lambda: committed.append(1)))
    spool_scrapes(sink, 10)
    # The tailer's batch waits in memory with its checkpoint; the scrapes are on disk.
    assert sink.pending_items() == 1
    assert metric(registry, "vigil_collector_spool_bytes") > 0
    store.down = False
    sink.submit(Batch(samples=(sample(10),)))  # newer than the spool: written after it
    assert sink.flush(1.0)
    assert store.order == [float(n) for n in range(11)]
    assert committed == [1]
    assert metric(registry, "vigil_collector_spool_bytes") == 0
    assert metric(registry, "vigil_collector_samples_total") == 11


def test_sink_spool_after_keeps_a_few_items_in_memory(tmp_path: Path) -> None:
    store = DownStore()
    sink, registry = make_sink(store, tmp_path, spool_after=5)
    for n in range(4):
        sink.submit(Batch(samples=(sample(n),)))
        sink.flush(0.0)
    assert sink.pending_items() == 4 and metric(registry, "vigil_collector_spool_bytes") == 0
    sink.submit(Batch(samples=(sample(4),)))
    assert sink.pending_items() == 0 and metric(registry, "vigil_collector_spool_bytes") > 0
    store.down = False
    assert sink.flush(1.0) and store.order == [float(n) for n in range(5)]


def test_sink_unwritten_at_shutdown_is_replayed_by_the_next_sink(tmp_path: Path) -> None:
    store = DownStore()
    sink, _ = make_sink(store, tmp_path, spool_after=1000)
    for n in range(3):
        sink.submit(Batch(samples=(sample(n),)))
    assert not sink.flush(0.0)
    sink.spool_unwritten()
    store.down = False
    restarted, _ = make_sink(store, tmp_path)
    assert restarted.flush(1.0)
    assert store.order == [0.0, 1.0, 2.0]


class CountingSource:
    def __init__(self, keeps_data: bool) -> None:
        self.keeps_data = keeps_data
        self.calls = 0

    def collect(self) -> list[Batch]:
        self.calls += 1
        if self.keeps_data:
            return [Batch(events=(event(self.calls),), on_written=lambda: None)]
        return [Batch(samples=(sample(self.calls),))]


def test_collector_full_sink_still_reads_sources_that_cannot_wait(tmp_path: Path) -> None:
    settings = from_mapping({"data_dir": str(tmp_path), "collect": {"scrape_stack": False}})
    store = DownStore()
    tailer, scraper = CountingSource(True), CountingSource(False)
    collector = Collector(settings, store, registry=CollectorRegistry(), sources=[tailer, scraper])
    assert collector.sink.spooling and can_wait(tailer) and not can_wait(scraper)
    # A small queue and no backoff, so the test needs no waiting.
    collector.sink, _ = make_sink(store, tmp_path / "spool", max_pending=2)
    for _ in range(5):
        collector.collect()
        collector.sink.flush(0.0, wait=threading.Event().wait)
    assert tailer.calls == 2 and scraper.calls == 5  # the tailer's log file keeps its data
    store.down = False
    assert collector.sink.flush(1.0)
    assert store.order == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_sink_full_spool_drops_counts_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = DownStore()
    sink, registry = make_sink(store, tmp_path, max_bytes=300)
    for n in range(10):
        sink.submit(Batch(samples=(sample(n),)))
        sink.flush(0.0)
    dropped = metric(registry, "vigil_collector_spool_dropped_items_total")
    assert 0 < dropped < 10
    assert "spool full; dropped 1 samples" in caplog.text
    store.down = False
    assert sink.flush(1.0)
    # What fit is stored, in order; the rest was dropped, and nothing else is missing.
    assert store.order == [float(n) for n in range(10 - int(dropped))]


def test_collector_spool_setting_turns_it_off_and_is_checked(tmp_path: Path) -> None:
    off = from_mapping({"data_dir": str(tmp_path), "collect": {"spool_max_bytes": 0}})
    assert not Collector(off, MemoryStore(), registry=CollectorRegistry(), sources=[]).sink.spooling
    with pytest.raises(ConfigError, match=r"collect\.spool_max_bytes: must not be negative"):
        from_mapping({"collect": {"spool_max_bytes": -1}})


def test_sink_replays_many_spooled_records_per_write_in_order(tmp_path: Path) -> None:
    # One scrape per record: replaying them one write each would take a request per
    # interval of the outage; they go max_write items at a time instead.
    store = DownStore()
    sink, registry = make_sink(store, tmp_path, max_write=20)
    spool_scrapes(sink, 50)
    store.down = False
    assert sink.flush(1.0)
    assert store.order == [float(n) for n in range(50)]
    assert store.writes == 3  # 20 + 20 + 10
    assert metric(registry, "vigil_collector_spool_bytes") == 0
    assert metric(registry, "vigil_collector_samples_total") == 50
