"""The collector loop and ``vigil collect``: passes, stop, backpressure, CLI."""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from collectors.cli import add_commands
from collectors.loop import Collector
from collectors.sink import Batch, Sink
from siem.memory import MemoryStore
from siem.model import EventQuery, Matcher, Sample, make_labels
from vigil.settings import Settings, from_mapping


def settings_for(data_dir: Path) -> Settings:
    return from_mapping(
        {
            "data_dir": str(data_dir),
            "collect": {"scrape": {}, "scrape_stack": False, "interval_s": 0.01},
        }
    )


def log_line(n: int) -> str:
    return json.dumps(
        {"@timestamp": "2024-05-01T12:00:00Z", "event": {"dataset": "shop.app"}, "n": n}
    )


def test_loop_run_once_stores_log_events(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "app.log").write_text(log_line(1) + "\n" + log_line(2) + "\n")
    store = MemoryStore()
    collector = Collector(settings_for(tmp_path), store, registry=CollectorRegistry())
    assert collector.run_once()
    assert len(store.search(EventQuery(dataset="shop.app"))) == 2
    assert (tmp_path / "collect-checkpoints.json").exists()


class OneShot:
    """A source that yields one batch of samples, then asks the loop to stop."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.calls = 0

    def collect(self) -> list[Batch]:
        self.calls += 1
        self.stop.set()
        return [Batch(samples=(Sample(make_labels("up", job="j", instance="i"), 1.0, 1.0),))]


def test_loop_run_flushes_on_stop(tmp_path: Path) -> None:
    stop = threading.Event()
    source = OneShot(stop)
    store = MemoryStore()
    collector = Collector(
        settings_for(tmp_path), store, registry=CollectorRegistry(), sources=[source]
    )
    assert collector.run(stop)
    assert source.calls == 1
    assert len(store.select([Matcher("__name__", "=", "up")], 0, 10)) == 1


def test_loop_full_sink_skips_collection(tmp_path: Path) -> None:
    stop = threading.Event()
    source = OneShot(stop)
    registry = CollectorRegistry()
    collector = Collector(
        settings_for(tmp_path), MemoryStore(), registry=registry, sources=[source]
    )
    collector.sink = Sink(MemoryStore(), collector.metrics, max_pending=0)
    collector.collect()
    assert source.calls == 0
    assert registry.get_sample_value("vigil_collector_backpressure_skips_total") == 1


def test_loop_cli_adds_collect_command() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["collect", "--once"])
    assert args.once is True
    assert args.func.__name__ == "cmd_collect"


class Backlog:
    """A source with ``chunks`` batches to read, one per call, behind until read."""

    def __init__(self, chunks: int) -> None:
        self.left = chunks
        self.calls = 0

    def collect(self) -> list[Batch]:
        self.calls += 1
        if self.left == 0:
            return []
        self.left -= 1
        n = self.left
        return [Batch(samples=(Sample(make_labels("backlog", n=str(n)), 1.0, 1.0),))]

    def behind(self) -> bool:
        return self.left > 0


class Counting:
    """A source without ``behind()``: read once per pass."""

    def __init__(self) -> None:
        self.calls = 0

    def collect(self) -> list[Batch]:
        self.calls += 1
        return []


def test_loop_catches_up_while_a_source_is_behind(tmp_path: Path) -> None:
    backlog, scraper = Backlog(chunks=50), Counting()
    store = MemoryStore()
    collector = Collector(
        settings_for(tmp_path), store, registry=CollectorRegistry(), sources=[backlog, scraper]
    )
    collector.collect()
    collector.catch_up(threading.Event(), deadline=time.monotonic() + 60.0)
    assert backlog.left == 0
    assert backlog.calls == 50
    assert scraper.calls == 1  # scrapes only once per interval
    assert len(store.select([Matcher("__name__", "=", "backlog")], 0.0, 2.0)) == 50


def test_loop_catch_up_reads_nothing_while_the_sink_is_full(tmp_path: Path) -> None:
    backlog = Backlog(chunks=50)
    collector = Collector(
        settings_for(tmp_path), MemoryStore(), registry=CollectorRegistry(), sources=[backlog]
    )
    collector.sink = Sink(MemoryStore(), collector.metrics, max_pending=5)
    collector.sink.submit(
        Batch(samples=tuple(Sample(make_labels("up", n=str(n)), 1.0, 1.0) for n in range(5)))
    )
    collector.catch_up(threading.Event(), deadline=time.monotonic() + 60.0)
    assert backlog.calls == 0  # memory stays bounded by max_pending, whatever the backlog


class Stuck:
    """Behind for ever, but has nothing to give (a writer in the middle of a line)."""

    def __init__(self) -> None:
        self.calls = 0

    def collect(self) -> list[Batch]:
        self.calls += 1
        return []

    def behind(self) -> bool:
        return True


def test_loop_catch_up_does_not_spin_on_a_source_with_nothing_to_give(tmp_path: Path) -> None:
    stuck = Stuck()
    collector = Collector(
        settings_for(tmp_path), MemoryStore(), registry=CollectorRegistry(), sources=[stuck]
    )
    collector.catch_up(threading.Event(), deadline=time.monotonic() + 60.0)
    assert stuck.calls == 1
