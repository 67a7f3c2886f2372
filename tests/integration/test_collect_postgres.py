"""The PostgreSQL poller against the real server: exporter names, sane values, failures."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import PG_ADMIN_URL, free_port, require_server
from prometheus_client import CollectorRegistry

from collectors.loop import Collector
from collectors.metrics import CollectorMetrics
from collectors.postgres import EXPORTER_METRICS, VIGIL_METRICS, PollResult, PostgresPoller
from siem.memory import MemoryStore
from siem.model import Matcher
from siem.sqlite import SqliteStore
from vigil.settings import from_mapping

pytestmark = pytest.mark.postgres

META = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


@pytest.fixture
def pgdb(pg_available: str | None) -> Iterator[str]:
    """The libpq URL of a new, empty database, dropped afterwards."""
    if pg_available is not None:
        require_server("PostgreSQL on 127.0.0.1:5432", pg_available)
    name = f"vigil_pgm_{uuid.uuid4().hex[:12]}"
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def dbname(url: str) -> str:
    return url.rsplit("/", 1)[1]


def metrics() -> CollectorMetrics:
    return CollectorMetrics(CollectorRegistry(), time.time)


def values(result: PollResult, name: str, **labels: str) -> list[float]:
    """Values of the samples named ``name`` whose labels include ``labels``."""
    rv = []
    for sample in result.samples:
        have = dict(sample.labels)
        if have["__name__"] == name and all(have.get(k) == v for k, v in labels.items()):
            rv.append(sample.value)
    return rv


def one(result: PollResult, name: str, **labels: str) -> float:
    (value,) = values(result, name, **labels)
    return value


def run(url: str, *statements: str) -> None:
    """Run ``statements`` on a new connection, then close it (which flushes its statistics)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def test_postgres_poll_writes_exporter_names_with_their_labels(pgdb: str) -> None:
    run(pgdb, "CREATE TABLE items (id int)", "INSERT INTO items SELECT generate_series(1, 100)")
    result = PostgresPoller(pgdb, metrics()).poll()
    assert result.error is None
    declared = {**EXPORTER_METRICS, **VIGIL_METRICS}
    seen = set()
    for sample in result.samples:
        labels = dict(sample.labels)
        name = labels.pop("__name__")
        assert labels.pop("job") == "postgres"
        assert labels.pop("instance") == "127.0.0.1:5432"
        seen.add(name)
        if name not in META:
            assert set(labels) == set(declared[name]), name
    # pg_replication_lag_seconds is 0 on a primary, but written.
    assert seen == set(declared) | META
    assert one(result, "up") == 1
    assert one(result, "pg_up") == 1
    db = dbname(pgdb)
    assert one(result, "pg_database_size_bytes", datname=db) > 1_000_000
    assert one(result, "pg_stat_user_tables_table_size_bytes", relname="items") > 0
    assert one(result, "pg_stat_user_tables_n_live_tup", relname="items") == 100
    assert one(result, "pg_replication_is_replica") == 0
    assert one(result, "scrape_samples_scraped") == len(result.samples) - 3


def test_postgres_poll_commit_increases_xact_commit_and_rollback(pgdb: str) -> None:
    poller = PostgresPoller(pgdb, metrics())
    db = dbname(pgdb)
    before = poller.poll()
    with psycopg.connect(pgdb, connect_timeout=5) as conn:
        for _ in range(5):
            conn.execute("SELECT 1")
            conn.commit()
        conn.execute("SELECT 1")
        conn.rollback()
    after = poller.poll()
    commits = one(after, "pg_stat_database_xact_commit", datname=db)
    assert commits - one(before, "pg_stat_database_xact_commit", datname=db) >= 5
    rollbacks = one(after, "pg_stat_database_xact_rollback", datname=db)
    assert rollbacks - one(before, "pg_stat_database_xact_rollback", datname=db) >= 1
    assert one(after, "pg_stat_database_blks_hit", datname=db) > 0


def test_postgres_poll_open_transaction_shows_in_max_tx_duration(pgdb: str) -> None:
    db = dbname(pgdb)
    with psycopg.connect(pgdb, connect_timeout=5) as conn:
        conn.execute("SELECT 1")  # opens a transaction, left idle
        time.sleep(0.3)
        result = PostgresPoller(pgdb, metrics()).poll()
        conn.rollback()
    state = "idle in transaction"
    assert one(result, "pg_stat_activity_count", datname=db, state=state) == 1
    assert one(result, "pg_stat_activity_max_tx_duration", datname=db, state=state) >= 0.3
    assert one(result, "pg_long_running_transactions_oldest_timestamp_seconds") >= 0.3
    assert one(result, "pg_stat_activity_count", datname=db, state="active") == 0


def test_postgres_poll_lock_wait_shows_in_pg_locks(pgdb: str) -> None:
    db = dbname(pgdb)
    run(pgdb, "CREATE TABLE items (id int)")
    waited: list[Any] = []
    with psycopg.connect(pgdb, connect_timeout=5) as holder:
        holder.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")

        def reader() -> None:
            with psycopg.connect(pgdb, connect_timeout=5, autocommit=True) as conn:
                conn.execute("SET lock_timeout = '20s'")
                waited.append(conn.execute("SELECT count(*) FROM items").fetchone())

        thread = threading.Thread(target=reader)
        thread.start()
        poller = PostgresPoller(pgdb, metrics(), timeout_s=5.0, max_tables=0)
        result = poller.poll()
        for _ in range(50):  # the reader may not have reached the lock yet
            if one(result, "pg_locks_waiting", datname=db, mode="accesssharelock") >= 1:
                break
            time.sleep(0.1)
            result = poller.poll()
        holder.commit()
    thread.join(timeout=30)
    assert waited == [(0,)]
    assert one(result, "pg_locks_waiting", datname=db, mode="accesssharelock") == 1
    assert one(result, "pg_locks_count", datname=db, mode="accessexclusivelock") >= 1
    assert one(result, "pg_locks_count", datname=db, mode="accesssharelock") >= 1
    assert one(result, "pg_locks_count", datname=db, mode="sireadlock") == 0


def test_postgres_poll_dead_tuples_after_deletes(pgdb: str) -> None:
    run(
        pgdb,
        "CREATE TABLE items (id int) WITH (autovacuum_enabled = false)",
        "INSERT INTO items SELECT generate_series(1, 1000)",
        "DELETE FROM items WHERE id <= 400",
    )
    result = PostgresPoller(pgdb, metrics()).poll()
    labels = {"datname": dbname(pgdb), "schemaname": "public", "relname": "items"}
    assert one(result, "pg_stat_user_tables_n_dead_tup", **labels) == 400
    assert one(result, "pg_stat_user_tables_n_live_tup", **labels) == 600
    assert one(result, "pg_stat_user_tables_n_tup_del", **labels) == 400


def test_postgres_poll_keeps_only_the_largest_tables(pgdb: str) -> None:
    run(
        pgdb,
        *(f"CREATE TABLE small_{n} (id int)" for n in range(5)),
        "CREATE TABLE big (id int)",
        "INSERT INTO big SELECT generate_series(1, 5000)",
    )
    result = PostgresPoller(pgdb, metrics(), max_tables=2).poll()
    tables = {
        dict(s.labels)["relname"]
        for s in result.samples
        if dict(s.labels)["__name__"] == "pg_stat_user_tables_n_dead_tup"
    }
    assert len(tables) == 2 and "big" in tables
    assert one(result, "pg_stat_user_tables_omitted", datname=dbname(pgdb)) == 4


def test_postgres_poll_refused_connection_gives_up_0() -> None:
    counters = metrics()
    poller = PostgresPoller(f"postgresql://postgres@127.0.0.1:{free_port()}/shop", counters)
    result = poller.poll()
    assert result.error is not None and "refused" in result.error.lower()
    assert one(result, "up") == 0
    assert one(result, "pg_up") == 0
    assert values(result, "pg_stat_database_xact_commit") == []
    assert counters.scrape_errors.labels("postgres")._value.get() == 1


def test_postgres_poll_statement_timeout_is_honoured(pgdb: str) -> None:
    run(pgdb, "CREATE TABLE items (id int)")
    poller = PostgresPoller(pgdb, metrics(), timeout_s=0.5)
    with psycopg.connect(pgdb, connect_timeout=5) as holder:
        # pg_table_size() of the table scan then waits for the lock until the timeout.
        holder.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        result = poller.poll()
        holder.rollback()
    assert result.error is not None and "statement timeout" in result.error
    assert one(result, "up") == 0
    # The next poll opens a new connection and succeeds.
    assert one(poller.poll(), "up") == 1


def test_collector_polls_the_shops_postgres_database(pgdb: str, tmp_path: Path) -> None:
    shop_url = pgdb.replace("postgresql://", "postgresql+psycopg://")
    settings = from_mapping(
        {
            "data_dir": str(tmp_path),
            "shop": {"db": shop_url},
            "collect": {"scrape_stack": False, "tail": []},
        }
    )
    store = MemoryStore()
    assert Collector(settings, store, registry=CollectorRegistry()).run_once()
    job = [Matcher("job", "=", "postgres")]
    (up,) = store.select([Matcher("__name__", "=", "up"), *job], 0, 1e12)
    assert up.points[-1][1] == 1
    size = [Matcher("__name__", "=", "pg_database_size_bytes"), *job]
    (series,) = store.select([*size, Matcher("datname", "=", dbname(pgdb))], 0, 1e12)
    assert series.points[-1][1] > 0


def test_collector_with_postgres_down_stores_up_0(tmp_path: Path) -> None:
    settings = from_mapping(
        {
            "data_dir": str(tmp_path),
            "collect": {
                "scrape_stack": False,
                "tail": [],
                "postgres": f"postgresql://postgres@127.0.0.1:{free_port()}/shop",
            },
        }
    )
    store = MemoryStore()
    assert Collector(settings, store, registry=CollectorRegistry()).run_once()
    (up,) = store.select([Matcher("__name__", "=", "up"), Matcher("job", "=", "postgres")], 0, 1e12)
    assert up.points[-1][1] == 0


class FreezingProxy:
    """A TCP proxy to PostgreSQL that stops forwarding when ``frozen`` is set (a hung server)."""

    def __init__(self, upstream_port: int) -> None:
        self.frozen = threading.Event()
        self.closed = threading.Event()
        self._upstream = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            server = socket.create_connection(("127.0.0.1", self._upstream), timeout=5)
            self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                thread = threading.Thread(target=self._pipe, args=(a, b), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.2)
        while not self.closed.is_set():
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            while self.frozen.is_set() and not self.closed.is_set():
                time.sleep(0.05)  # hold the bytes: the peer waits, as on a hung server
            with contextlib.suppress(OSError):
                dst.sendall(data)

    def close(self) -> None:
        self.closed.set()
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(timeout=5)


def test_postgres_poll_gives_up_on_a_server_that_hangs(pgdb: str) -> None:
    proxy = FreezingProxy(5432)
    try:
        counters = metrics()
        poller = PostgresPoller(
            f"postgresql://postgres@127.0.0.1:{proxy.port}/{dbname(pgdb)}",
            counters,
            timeout_s=0.5,
        )
        assert one(poller.poll(), "up") == 1
        proxy.frozen.set()
        hung = poller.poll()  # waits 2 * 0.5 + 1 s, then gives up
        assert hung.error is not None and "no answer" in hung.error
        assert one(hung, "up") == 0
        # The stuck query is not stacked on: the next poll fails at once.
        again = poller.poll()
        assert again.error == "previous poll still waiting for the server"
        assert counters.scrape_errors.labels("postgres")._value.get() == 2
    finally:
        proxy.close()


def test_vigil_collect_polls_the_database_named_by_vigil_shop_db(pgdb: str, tmp_path: Path) -> None:
    # What `vigil up` does: its collector child inherits VIGIL_SHOP_DB.
    env = {
        **os.environ,
        "VIGIL_DATA_DIR": str(tmp_path),
        "VIGIL_COLLECT_SCRAPE_STACK": "false",
        "VIGIL_SHOP_DB": pgdb.replace("postgresql://", "postgresql+psycopg://"),
    }
    env.pop("VIGIL_CONFIG", None)
    env.pop("VIGIL_COLLECT_POSTGRES", None)
    subprocess.run(
        [sys.executable, "-m", "vigil.cli", "collect", "--once"],
        env=env,
        cwd=tmp_path,
        check=True,
        timeout=60,
        capture_output=True,
    )
    store = SqliteStore(tmp_path / "siem.db")
    try:
        job = [Matcher("job", "=", "postgres")]
        (up,) = store.select([Matcher("__name__", "=", "up"), *job], 0, 1e12)
        assert up.points[-1][1] == 1
        size = [Matcher("__name__", "=", "pg_database_size_bytes"), *job]
        (series,) = store.select([*size, Matcher("datname", "=", dbname(pgdb))], 0, 1e12)
        assert series.points[-1][1] > 1_000_000
    finally:
        store.close()
