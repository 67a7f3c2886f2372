"""Scrapes during a store outage go to the disk spool and land once, also across a kill -9.

A real HTTP target serves ``spool_test_scrapes_total``, a counter incremented
per scrape it answers, so the store must end up with the values 1..N (N the
scrapes served), each once, and one ``up == 1`` sample per scrape. The store
is broken meanwhile (a lock held with a short busy timeout, or ``chattr +i``
on its files), while the collector keeps scraping.

``VIGIL_TEST_SPOOL_OUTAGE_S`` sets the outage length (default 3 s, for CI);
the five-minute outage on Elasticsearch is tests/reliability/test_es_outage.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import free_port, privileged
from prometheus_client import CollectorRegistry
from scrape_target import Target

import siem.sqlite
from collectors.loop import Collector
from siem.sqlite import SqliteStore
from vigil.settings import from_mapping

REPO = Path(__file__).resolve().parents[2]
OUTAGE_S = float(os.environ.get("VIGIL_TEST_SPOOL_OUTAGE_S", "3"))
WAIT_S = 60.0 + OUTAGE_S  # an upper bound for catching up, never reached when things work


@pytest.fixture
def target() -> Iterator[Target]:
    served = Target(wait_s=WAIT_S)
    try:
        yield served
    finally:
        served.close()


def stored(db: Path) -> tuple[dict[int, int], int]:
    """How many samples carry each counter value, and how many ``up == 1`` samples there are."""
    if not db.exists():  # before the collector created it
        return {}, 0
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT s.value, COUNT(*) FROM samples s JOIN series r ON r.id = s.series_id"
            " WHERE r.name = 'spool_test_scrapes_total' GROUP BY s.value"
        ).fetchall()
        (up,) = conn.execute(
            "SELECT COUNT(*) FROM samples s JOIN series r ON r.id = s.series_id"
            " WHERE r.name = 'up' AND s.value = 1"
        ).fetchone()
    except sqlite3.OperationalError:  # before the collector created the tables
        return {}, 0
    finally:
        conn.close()
    return {int(v): int(c) for v, c in rows}, int(up)


def assert_each_scrape_once(db: Path, served: int) -> None:
    values, up = stored(db)
    assert sorted(values) == list(range(1, served + 1)), "scrapes lost"
    assert set(values.values()) == {1}, "scrapes duplicated"
    assert up == served


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def spool_segments(data: Path) -> list[Path]:
    return sorted((data / "spool").glob("*/*.seg"))


def test_spool_store_outage_loses_and_duplicates_no_scrape(
    tmp_path: Path, target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A short busy timeout turns the lock into failed writes, as a long lock does.
    monkeypatch.setattr(siem.sqlite, "BUSY_TIMEOUT_S", 0.2)
    data, db = tmp_path / "data", tmp_path / "siem.db"
    settings = from_mapping(
        {
            "data_dir": str(data),
            "collect": {
                "scrape": {"spooltest": {"targets": [target.address], "timeout_s": 1.0}},
                "scrape_stack": False,
                "tail": [],
                "interval_s": 0.1,
            },
        }
    )
    registry = CollectorRegistry()
    store = SqliteStore(db)

    def metric(name: str) -> float:
        value = registry.get_sample_value(name)
        assert value is not None, name
        return value

    stop = threading.Event()
    try:
        collector = Collector(settings, store, registry=registry)
        thread = threading.Thread(target=collector.run, args=(stop,), daemon=True)
        thread.start()
        wait_for(lambda: len(stored(db)[0]) > 0, "no scrape stored")
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        spooled_before = target.served
        peak_bytes = peak_age = 0.0
        until = time.monotonic() + OUTAGE_S
        while time.monotonic() < until:
            peak_bytes = max(peak_bytes, metric("vigil_collector_spool_bytes"))
            peak_age = max(peak_age, metric("vigil_collector_spool_oldest_seconds"))
            time.sleep(0.05)
        holder.execute("ROLLBACK")
        holder.close()
        assert target.served > spooled_before + 5, "scrapes stopped during the outage"
        wait_for(lambda: metric("vigil_collector_spool_bytes") == 0, "the spool was not replayed")
        served = target.hold()
        stop.set()
        thread.join(WAIT_S)
        assert not thread.is_alive(), "the collector did not stop"
    finally:
        stop.set()
        target.release()
        store.close()
    assert_each_scrape_once(db, served)
    assert peak_bytes > 0 and peak_age > 0
    assert metric("vigil_collector_spool_oldest_seconds") == 0
    assert metric("vigil_collector_spool_dropped_items_total") == 0
    assert metric("vigil_collector_dead_letter_items_total") == 0
    assert spool_segments(data) == []


def start_collector(tmp_path: Path, target: Target, run: int) -> subprocess.Popen[bytes]:
    """A ``vigil collect`` process scraping ``target`` every 0.1 s into
    ``tmp_path/data/siem.db``; its stderr goes to ``collector-<run>.stderr``."""
    config = tmp_path / "vigil.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            collect:
              scrape_stack: false
              tail: []
              interval_s: 0.1
              scrape:
                spooltest:
                  targets: ["{target.address}"]
                  timeout_s: 1.0
            """
        )
    )
    env = dict(
        os.environ, VIGIL_DATA_DIR=str(tmp_path / "data"), VIGIL_COLLECT_PORT=str(free_port())
    )
    with (tmp_path / f"collector-{run}.stderr").open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "vigil.cli", "--config", str(config), "collect"],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


@contextlib.contextmanager
def collector(tmp_path: Path, target: Target, run: int) -> Iterator[subprocess.Popen[bytes]]:
    """:func:`start_collector`, killed on the way out if it still runs."""
    proc = start_collector(tmp_path, target, run)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def kill(proc: subprocess.Popen[bytes]) -> None:
    assert proc.poll() is None, "the collector exited"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_spool_locked_store_is_noticed_within_the_busy_timeout(
    tmp_path: Path, target: Target
) -> None:
    # store.sqlite_busy_timeout_s (2 s by default) ends a write waiting on the lock: the
    # collector goes on scraping, into the spool. With the 30 s the other processes wait,
    # its loop would stand still in the first write for 30 s.
    data, db = tmp_path / "data", tmp_path / "data" / "siem.db"
    with collector(tmp_path, target, 1) as proc:
        wait_for(lambda: len(stored(db)[0]) > 0, "no scrape stored")
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            at_lock, locked = target.served, time.monotonic()
            deadline = locked + 15
            while not (spool_segments(data) and target.served > at_lock + 5):
                assert time.monotonic() < deadline, "the locked store held the collector up"
                time.sleep(0.05)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        wait_for(lambda: spool_segments(data) == [], "the spool was not replayed")
        served = target.hold()
        wait_for(lambda: len(stored(db)[0]) >= served, "the last scrapes were not stored")
        kill(proc)
    assert_each_scrape_once(db, served)


def test_spool_kill_9_with_a_spool_then_replays_it_once(tmp_path: Path, target: Target) -> None:
    data, db = tmp_path / "data", tmp_path / "data" / "siem.db"
    files = [str(db), f"{db}-wal"]
    with collector(tmp_path, target, 1) as first:
        wait_for(lambda: len(stored(db)[0]) > 0, "no scrape stored")
        # Immutable files: every write fails at once, as on a read-only disk.
        privileged("chattr", "+i", *files)
        try:
            at_outage = target.served
            wait_for(
                lambda: target.served > at_outage + 10 and bool(spool_segments(data)),
                "nothing spooled",
            )
            target.hold()  # the collector waits on a scrape: all before it are spooled
            kill(first)
        finally:
            subprocess.run(["chattr", "-i", *files], check=True)
        assert sum(p.stat().st_size for p in spool_segments(data)) > 0
        target.release()
    with collector(tmp_path, target, 2) as second:
        wait_for(lambda: spool_segments(data) == [], "the spool was not replayed")
        served = target.hold()
        wait_for(lambda: len(stored(db)[0]) >= served, "the last scrapes were not stored")
        kill(second)
    assert_each_scrape_once(db, served)
    log = (tmp_path / "collector-2.stderr").read_text(errors="replace")
    assert "spool full" not in log and "Traceback" not in log
