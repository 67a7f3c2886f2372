"""The store fails as a whole (locked, read-only, disk full): the collector waits, loses nothing.

Each test runs the real ``Collector`` (tailer → sink → ``SqliteStore``) in a
thread while a writer appends numbered ECS lines to a log file, breaks the
store for a while, repairs it, and then counts from the store: every line
written is stored exactly once (0 lost, 0 duplicated), nothing went to the
dead-letter file (a store that is down is not poison), and a restarted
collector re-reads nothing new.

Read-only and disk-full need root: ``chattr +i`` (immutable files, which
also stop writes through descriptors already open) and a size-capped tmpfs.
Where that is impossible they skip, or fail when CI=true.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import privileged
from prometheus_client import CollectorRegistry

import siem.sqlite
from collectors.loop import Collector
from siem.sqlite import SqliteStore
from vigil.settings import Settings, from_mapping

OUTAGE_S = 2.0
WAIT_S = 60.0  # an upper bound for catching up, never reached when things work


def settings_for(data_dir: Path) -> Settings:
    return from_mapping(
        {
            "data_dir": str(data_dir),
            "collect": {"scrape": {}, "scrape_stack": False, "interval_s": 0.1},
        }
    )


class Writer:
    """Appends numbered ECS lines to ``path`` from a thread, like a busy app."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.written = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            while not self._stop.is_set():
                for _ in range(50):
                    doc = {
                        "@timestamp": "2024-05-01T12:00:00.000Z",
                        "event": {"dataset": "shop.app"},
                        "message": f"line {self.written}",
                        "n": self.written,
                    }
                    fh.write(json.dumps(doc) + "\n")
                    self.written += 1
                fh.flush()
                self._stop.wait(0.02)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def running(collector: Collector) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=collector.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=WAIT_S)
        assert not thread.is_alive(), "the collector did not stop"


def counts(db: Path) -> dict[int, int]:
    """How many stored events each line number has (read with a fresh connection)."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT json_extract(doc, '$.n'), COUNT(*) FROM events "
            "WHERE dataset = 'shop.app' GROUP BY 1"
        ).fetchall()
    finally:
        conn.close()
    return {int(n): int(c) for n, c in rows}


def wait_for(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, "the collector did not catch up"
        time.sleep(0.1)


def survive(
    tmp_path: Path, db: Path, outage: Callable[[], contextlib.AbstractContextManager[None]]
) -> float:
    """Run the collector and a writer through ``outage``; assert 0 lost and 0 duplicated.

    Returns how many store writes failed (and were retried) meanwhile.
    """
    data = tmp_path / "data"
    registry = CollectorRegistry()
    store = SqliteStore(db)
    try:
        collector = Collector(settings_for(data), store, registry=registry)
        with running(collector):
            with Writer(data / "logs" / "app.log") as writer:
                wait_for(lambda: len(counts(db)) > 0)
                with outage():
                    time.sleep(OUTAGE_S)
                time.sleep(0.3)
            total = writer.written
            wait_for(lambda: len(counts(db)) == total)
    finally:
        store.close()
    stored = counts(db)
    assert sorted(stored) == list(range(total)), "lines lost"
    assert set(stored.values()) == {1}, "lines duplicated"
    assert not (data / "dead-letter").exists(), "a store outage is not poison"
    assert registry.get_sample_value("vigil_collector_dead_letter_items_total") == 0
    # A restart reads from the checkpoints: nothing new, nothing twice.
    again = SqliteStore(db)
    try:
        assert Collector(settings_for(data), again, registry=CollectorRegistry()).run_once()
    finally:
        again.close()
    assert counts(db) == stored
    return registry.get_sample_value("vigil_collector_write_errors_total") or 0.0


def test_store_failures_locked_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A short busy timeout turns the lock into failed writes (as a 45 s lock does).
    monkeypatch.setattr(siem.sqlite, "BUSY_TIMEOUT_S", 0.2)
    db = tmp_path / "store" / "siem.db"

    @contextlib.contextmanager
    def locked() -> Iterator[None]:
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()

    assert survive(tmp_path, db, locked) > 0


def test_store_failures_read_only_files(tmp_path: Path) -> None:
    db = tmp_path / "store" / "siem.db"
    files = [str(db), f"{db}-wal"]

    @contextlib.contextmanager
    def read_only() -> Iterator[None]:
        # Immutable files: unlike chmod, this stops root, and the collector's open
        # descriptors too (a read-only remount refuses while files are open for writing).
        privileged("chattr", "+i", *files)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", *files], check=True)

    assert survive(tmp_path, db, read_only) > 0


def test_store_failures_disk_full(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    privileged("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(store_dir))
    try:
        db = store_dir / "siem.db"

        @contextlib.contextmanager
        def full() -> Iterator[None]:
            filler = store_dir / "filler"
            # ENOSPC ends the loop: the disk is full.
            with filler.open("wb", buffering=0) as fh, contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * 65536)
            try:
                yield
            finally:
                filler.unlink()

        assert survive(tmp_path, db, full) > 0
    finally:
        subprocess.run(["umount", "-l", str(store_dir)], check=True)
