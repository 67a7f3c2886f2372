"""A writer process and reader processes on one SQLite file at the same time (WAL)."""

from __future__ import annotations

import multiprocessing
import traceback
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as StartSignal
from pathlib import Path
from typing import Any

from siem.model import Event, EventQuery, Matcher, Sample, make_labels
from siem.sqlite import SqliteStore

BATCHES = 40
BATCH = 200
T0 = 1_700_000_000.0


def _writer(path: str, start: StartSignal, out: Queue[Any]) -> None:
    try:
        store = SqliteStore(path)
        start.wait(30)
        labels = make_labels("batches_total", job="writer")
        for b in range(BATCHES):
            events = [
                Event(f"{b}-{i}", T0 + b, "test.batch", {"batch": b, "i": i}) for i in range(BATCH)
            ]
            points = [Sample(make_labels("x", i=str(i)), T0 + b, float(b)) for i in range(BATCH)]
            store.write(events=events, samples=[*points, Sample(labels, T0 + b, b + 1.0)])
        store.close()
        out.put(("writer", "ok", BATCHES))
    except BaseException:
        out.put(("writer", "error", traceback.format_exc()))


def _reader(path: str, start: StartSignal, out: Queue[Any]) -> None:
    try:
        store = SqliteStore(path)
        start.wait(30)
        seen: list[int] = []
        while not seen or seen[-1] < BATCHES * BATCH:
            counts = store.count_by(EventQuery(dataset="test.batch"), "batch")
            total = sum(counts.values())
            # A batch is one transaction: a reader sees all of it or none of it.
            assert all(n == BATCH for n in counts.values()), counts
            marker = store.select([Matcher("__name__", "=", "batches_total")], 0, T0 + BATCHES)
            committed = int(marker[0].points[-1][1]) if marker else 0
            assert committed * BATCH >= total
            assert not seen or total >= seen[-1]
            seen.append(total)
        store.close()
        out.put(("reader", "ok", len(seen)))
    except BaseException:
        out.put(("reader", "error", traceback.format_exc()))


def test_sqlite_store_writer_and_readers_in_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "siem.db")
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    out: Queue[Any] = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(path, start, out))]
    procs += [ctx.Process(target=_reader, args=(path, start, out)) for _ in range(2)]
    for proc in procs:
        proc.start()
    start.set()
    results = [out.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(30)
    errors = [detail for _, status, detail in results if status != "ok"]
    assert errors == [], "\n".join(errors)
    assert sorted(role for role, _, _ in results) == ["reader", "reader", "writer"]
    assert all(proc.exitcode == 0 for proc in procs)

    store = SqliteStore(path)
    try:
        assert len(store.search(EventQuery(dataset="test.batch", limit=10**6))) == BATCHES * BATCH
        series = store.select([Matcher("__name__", "=", "x")], 0, T0 + BATCHES)
        assert len(series) == BATCH and all(len(s.points) == BATCHES for s in series)
    finally:
        store.close()
