"""Store write benchmark: events/s and samples/s of SqliteStore against MemoryStore.

Writes the same realistic ECS events (a shop access log line) and samples
(scraped counters, 50 series) in batches of 1, 100 and 1000, on a fresh
temporary SQLite file per case, and prints throughput with the ratio to
MemoryStore measured in the same run (the baseline: same API, no disk).
Bounded: a fixed number of items per case.

    .venv/bin/python bench/store_write.py [--items 20000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from siem.memory import MemoryStore
from siem.model import Event, Sample, Store, make_labels
from siem.sqlite import SqliteStore

T0 = 1_700_000_000.0
BATCH_SIZES = (1, 100, 1000)


def make_events(n: int) -> list[Event]:
    rv = []
    for i in range(n):
        doc = {
            "@timestamp": "2024-05-01T12:00:00Z",
            "event": {"dataset": "shop.access", "duration": 12_000_000 + i},
            "http": {"request": {"method": "GET"}, "response": {"status_code": 200}},
            "url": {"original": f"/products/{i % 500}"},
            "source": {"ip": f"10.0.{i % 7}.{i % 250}"},
            "message": f"GET /products/{i % 500} 200",
        }
        rv.append(Event.from_doc(doc, source="bench/access.log", position=i))
    return rv


def make_samples(n: int) -> list[Sample]:
    series = [
        make_labels(
            "http_requests_total",
            job="shop",
            instance=f"127.0.0.1:{8000 + s % 2}",
            route=f"/r{s}",
            code="200",
        )
        for s in range(50)
    ]
    return [Sample(series[i % 50], T0 + i // 50, float(i)) for i in range(n)]


def throughput(open_store: Callable[[], Store], kind: str, items: list[Any], batch: int) -> float:
    store = open_store()
    try:
        started = time.perf_counter()
        for i in range(0, len(items), batch):
            chunk = items[i : i + batch]
            if kind == "events":
                store.write(events=chunk)
            else:
                store.write(samples=chunk)
        return len(items) / (time.perf_counter() - started)
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000, help="items per case (batch 1: /10)")
    args = parser.parse_args()
    data = {"events": make_events(args.items), "samples": make_samples(args.items)}
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        files = iter(range(10**6))

        def sqlite() -> Store:
            return SqliteStore(Path(tmp) / f"siem-{next(files)}.db")

        print(
            f"{'kind':<8} {'batch':>6} {'items':>7} {'memory/s':>12} {'sqlite/s':>12} {'ratio':>7}"
        )
        for kind, items in data.items():
            for batch in BATCH_SIZES:
                # One transaction per item is slow by design: fewer items keep the run short.
                subset = items[: max(args.items // 10, 1)] if batch == 1 else items
                memory = throughput(MemoryStore, kind, subset, batch)
                disk = throughput(sqlite, kind, subset, batch)
                print(
                    f"{kind:<8} {batch:>6} {len(subset):>7} {memory:>12,.0f} {disk:>12,.0f} "
                    f"{disk / memory:>7.3f}"
                )


if __name__ == "__main__":
    main()
