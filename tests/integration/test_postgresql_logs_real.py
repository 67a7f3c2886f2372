"""The PostgreSQL log parsers on what a real server wrote (stderr and jsonlog), via the Collector.

A throwaway cluster of our own (Debian's PostgreSQL 15 ``initdb``/``pg_ctl``,
run as the ``postgres`` OS user when we are root, as initdb demands) logs a
slow statement, an error with a statement over several lines, failed logins,
a deadlock and a checkpoint; the collector reads its log files through
``collect.files``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import free_port, require_server
from prometheus_client import CollectorRegistry

from collectors.loop import Collector
from collectors.metrics import CollectorMetrics
from collectors.pglog import SOURCE, PostgresLogSource
from collectors.tail import ROTATED_QUIET_S, Checkpoints, Tailer
from siem.model import EventQuery
from siem.sqlite import SqliteStore
from vigil.settings import from_mapping

PG_BIN = Path("/usr/lib/postgresql/15/bin")
INITDB_OPTIONS = ["-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C", "--auth-local=trust"]
# Debian's '%m [%p] %q%u@%d ' (tests/files/postgresql-stderr.log) with SQLSTATE and client.
PREFIX = "%m [%p] %e %q%u@%d %r "
BAD_STATEMENT = "SELECT *\n  FROM no_such_table\n WHERE id = 1"


def _as_postgres(argv: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres OS user then."""
    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser")
    if runuser is None:
        require_server("postgresql", "running as root and runuser is missing")
    return [str(runuser), "-u", "postgres", "--", *argv]


@pytest.fixture
def cluster() -> Iterator[tuple[Path, int]]:
    """A running cluster logging to ``<data>/log``: (data directory, port)."""
    if not (PG_BIN / "initdb").exists():
        require_server("postgresql", f"{PG_BIN}/initdb is not installed")
    # Not under tmp_path: pytest's root-owned 0700 base is closed to the postgres user.
    base = Path(tempfile.mkdtemp(prefix="vigil-pglogs-"))
    data = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    port = free_port()
    started = False
    try:
        init = subprocess.run(
            _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), *INITDB_OPTIONS]),
            capture_output=True,
            timeout=120,
        )
        if init.returncode != 0:
            require_server("postgresql", f"initdb failed: {init.stderr[-500:]!r}")
        (data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host postgres postgres 127.0.0.1/32 trust\n"
            "host postgres alice 127.0.0.1/32 scram-sha-256\n"
        )
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{data}'\n"
                "logging_collector = on\nlog_destination = 'stderr,jsonlog'\n"
                "log_directory = 'log'\nlog_min_duration_statement = 0\n"
                "log_connections = on\nlog_checkpoints = on\n"
                f"log_line_prefix = '{PREFIX}'\nlog_timezone = 'UTC'\n"
                "deadlock_timeout = '100ms'\nshared_buffers = '16MB'\nmax_connections = 20\n"
            )
        start = subprocess.run(
            _as_postgres(
                [str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "pg.out"), "start"]
            ),
            capture_output=True,
            timeout=90,
        )
        if start.returncode != 0:
            require_server("postgresql", f"pg_ctl start failed: {start.stdout[-500:]!r}")
        started = True
        yield data, port
    finally:
        if started:
            subprocess.run(
                _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(base, ignore_errors=True)


def _connect(port: int, **kw: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host="127.0.0.1", port=port, dbname="postgres", connect_timeout=10, sslmode="disable", **kw
    )


def _deadlock(port: int) -> None:
    """Two sessions lock two rows in opposite orders; PostgreSQL aborts one."""
    with _connect(port, user="postgres", autocommit=True) as setup:
        setup.execute("CREATE TABLE pairs (id int PRIMARY KEY, v int)")
        setup.execute("INSERT INTO pairs VALUES (1, 0), (2, 0)")
        a = _connect(port, user="postgres")
        b = _connect(port, user="postgres")
        try:
            a.execute("UPDATE pairs SET v = 1 WHERE id = 1")
            b.execute("UPDATE pairs SET v = 2 WHERE id = 2")
            errors: list[Exception] = []

            def a_takes_2() -> None:
                try:
                    a.execute("UPDATE pairs SET v = 1 WHERE id = 2")
                except psycopg.Error as exc:
                    errors.append(exc)

            waiter = threading.Thread(target=a_takes_2)
            waiter.start()
            for _ in range(200):  # until a waits for b's lock (at most 10 s)
                row = setup.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                ).fetchone()
                if row and row[0]:
                    break
                time.sleep(0.05)
            try:
                b.execute("UPDATE pairs SET v = 2 WHERE id = 1")
            except psycopg.Error as exc:
                errors.append(exc)
            waiter.join(30)
            assert any(isinstance(e, psycopg.errors.DeadlockDetected) for e in errors)
        finally:
            a.close()
            b.close()


def make_logs(port: int) -> None:
    """The workload whose log lines the tests read."""
    with _connect(port, user="postgres", autocommit=True) as conn:
        conn.execute("CREATE ROLE alice LOGIN PASSWORD 'right'")
        conn.execute("SELECT pg_sleep(0.05)")
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute(BAD_STATEMENT)
        conn.execute("CHECKPOINT")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _connect(port, user="alice", password="wrong").close()
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
        psycopg.connect(
            host="127.0.0.1", port=port, dbname="template1", user="mallory", sslmode="disable"
        ).close()
    _deadlock(port)


def _check(docs: list[dict[str, Any]]) -> None:
    """What either file says about the workload."""
    pg = [d["postgresql"]["log"] for d in docs]
    slow = [d for d, p in zip(docs, pg, strict=True) if "pg_sleep(0.05)" in p.get("query", "")]
    assert slow and slow[0]["event"]["action"] == "statement"
    assert slow[0]["event"]["duration"] >= 50_000_000  # pg_sleep(0.05) took 50 ms at least
    assert slow[0]["user"]["name"] == "postgres"
    assert slow[0]["postgresql"]["log"]["database"] == "postgres"
    error = next(d for d, p in zip(docs, pg, strict=True) if p.get("sql_state_code") == "42P01")
    assert error["log"]["level"] == "error"
    assert error["event"]["outcome"] == "failure"
    assert error["message"].startswith('relation "no_such_table" does not exist')
    assert error["postgresql"]["log"]["query"] == BAD_STATEMENT  # all its lines, one event
    assert error["source"]["ip"] == "127.0.0.1"
    failed = [d for d in docs if d["event"].get("action") == "authentication-failed"]
    assert {d["user"]["name"] for d in failed} == {"alice", "mallory"}
    assert all(d["event"]["category"] == ["authentication"] for d in failed)
    assert all(d["event"]["outcome"] == "failure" for d in failed)
    # Its DETAIL line (stderr: a line of its own) is part of the event.
    assert any("pg_hba.conf line" in d["postgresql"]["log"].get("detail", "") for d in failed)
    deadlock = next(d for d in docs if d["event"].get("action") == "deadlock")
    assert deadlock["postgresql"]["log"]["sql_state_code"] == "40P01"
    assert "Process" in deadlock["postgresql"]["log"]["detail"]  # who waited for whom
    assert "UPDATE pairs" in deadlock["postgresql"]["log"]["query"]
    done = next(d for d in docs if d["event"].get("action") == "checkpoint-completed")
    checkpoint = done["postgresql"]["log"]["checkpoint"]
    assert isinstance(checkpoint["buffers_written"], int) and checkpoint["buffers_written"] > 0
    assert checkpoint["total_s"] >= 0 and done["event"]["duration"] >= 0
    started = next(d for d in docs if d["event"].get("action") == "checkpoint-started")
    assert "immediate" in started["postgresql"]["log"]["checkpoint"]["flags"]


def test_postgresql_parsers_read_a_real_servers_stderr_and_jsonlog(
    cluster: tuple[Path, int], tmp_path: Path
) -> None:
    data, port = cluster
    make_logs(port)
    logs = data / "log"
    settings = from_mapping(
        {
            "data_dir": str(tmp_path / "vigil"),
            "collect": {
                "tail": [],
                "scrape_stack": False,
                "postgresql_log_line_prefix": PREFIX,
                "files": {
                    str(logs / "*.log"): "postgresql_stderr",
                    str(logs / "*.json"): "postgresql",
                },
            },
        }
    )
    store = SqliteStore(tmp_path / "siem.db")
    collector = Collector(settings, store, registry=CollectorRegistry())
    deadline = time.monotonic() + 30
    while True:  # the logging collector writes the last lines a moment later
        collector.run_once()
        events = store.search(EventQuery(dataset="postgresql.log", limit=5000))
        deadlocks = {
            e.doc["log"]["file"]["path"]
            for e in events
            if e.doc["event"].get("action") == "deadlock"
        }
        if len(deadlocks) == 2:  # in both files
            break
        assert time.monotonic() < deadline, "the deadlock never reached the store"
        time.sleep(0.2)
    assert not store.search(EventQuery(dataset="vigil.collector.error", limit=10))
    by_file: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_file.setdefault(event.doc["log"]["file"]["path"], []).append(event.doc)
    for path, docs in by_file.items():
        assert path.endswith((".log", ".json"))
        _check(docs)
    # The stderr file's last message waits for the next line, or for the file to be quiet.
    stderr_file = next(p for p in logs.glob("*.log"))
    stored = len(by_file[str(stderr_file.resolve())])
    with _connect(port, user="postgres", autocommit=True) as conn:
        conn.execute("SELECT 'last words'")
    name = str(stderr_file.resolve())
    deadline = time.monotonic() + 30
    while True:
        time.sleep(0.2)
        quiet = time.time() - ROTATED_QUIET_S - 1  # as if nothing was written for a while
        os.utime(stderr_file, (quiet, quiet))
        collector.run_once()
        after = store.search(EventQuery(dataset="postgresql.log", limit=5000))
        stderr_docs = [e.doc for e in after if e.doc["log"]["file"]["path"] == name]
        if any("'last words'" in d["postgresql"]["log"].get("query", "") for d in stderr_docs):
            break
        assert time.monotonic() < deadline, "the last message of a quiet file was never stored"
    assert len(stderr_docs) > stored


def test_collector_finds_the_servers_jsonlog_by_asking_it(
    cluster: tuple[Path, int], tmp_path: Path
) -> None:
    """With logging_collector on, the collector asks pg_current_logfile('jsonlog') (a path
    relative to the data directory) and tails it; a role without pg_monitor is told
    how to fix that, and the source works once it has it."""
    data, port = cluster
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable"
    settings = from_mapping(
        {
            "data_dir": str(tmp_path / "vigil"),
            "collect": {"tail": [], "scrape_stack": False, "postgres": url},
        }
    )
    store = SqliteStore(tmp_path / "siem.db")
    registry = CollectorRegistry()
    collector = Collector(settings, store, registry=registry)
    with _connect(port, user="postgres", autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute(BAD_STATEMENT)
        conn.execute("CREATE ROLE alice LOGIN PASSWORD 'right'")
    deadline = time.monotonic() + 30
    while True:
        collector.run_once()
        errors = store.search(EventQuery(dataset="postgresql.log", kql="log.level:error"))
        if any(e.get("postgresql.log.sql_state_code") == "42P01" for e in errors):
            break
        assert time.monotonic() < deadline, "the error never reached the store"
        time.sleep(0.2)
    (server_log,) = [s for s in collector.sources if isinstance(s, PostgresLogSource)]
    (path,) = server_log.files
    assert path.suffix == ".json" and path.parent.resolve() == (data / "log").resolve()
    assert registry.get_sample_value("vigil_collector_source_up", {"source": SOURCE}) == 1
    collector.close()
    store.close()

    metrics = CollectorMetrics(CollectorRegistry())
    alice = PostgresLogSource(
        Tailer(tmp_path, [], Checkpoints(tmp_path / "cp.json"), metrics),
        metrics,
        url=f"postgresql://alice:right@127.0.0.1:{port}/postgres?sslmode=disable",
        retry_s=0,
    )
    assert alice.collect() == []
    assert alice.health.problem is not None
    grant = "GRANT EXECUTE ON FUNCTION pg_current_logfile(text) TO alice"
    assert grant in alice.health.problem
    with _connect(port, user="postgres", autocommit=True) as conn:
        conn.execute(grant)
    alice.collect()  # the relative path needs data_directory: pg_read_all_settings
    assert alice.health.problem is not None
    assert "GRANT pg_monitor TO alice" in alice.health.problem
    with _connect(port, user="postgres", autocommit=True) as conn:
        conn.execute("GRANT pg_monitor TO alice")
    alice.collect()
    assert alice.health.problem is None
    assert list(alice.files) == [path]
