"""PostgreSQL's server log without configuration: which server, which file, and what
happens while the file cannot be read (one warning, a metric, a retry, no crash)."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
import pytest
from conftest import PG_ADMIN_URL, require_server
from prometheus_client import CollectorRegistry

from collectors.metrics import CollectorMetrics
from collectors.pglog import (
    RETRY_S,
    SOURCE,
    PostgresLogSource,
    debian_log,
    discover,
    is_local,
    pglog_from,
)
from collectors.tail import Checkpoints, Tailer
from vigil.settings import Settings, from_mapping

STDERR_LINES = (
    b"2026-11-29 10:00:00.123 UTC [4242] shop@shopdb ERROR:  division by zero\n"
    b"2026-11-29 10:00:00.123 UTC [4242] shop@shopdb STATEMENT:  SELECT 1/0\n"
    b"2026-11-29 10:00:01.000 UTC [4243] LOG:  checkpoint starting: time\n"
)


def settings_for(tmp_path: Path, **collect: object) -> Settings:
    shop = {"db": "postgresql+psycopg://postgres@127.0.0.1:5432/shop"}
    return from_mapping({"data_dir": str(tmp_path), "shop": shop, "collect": collect})


def source_for(
    tmp_path: Path, path: Path, registry: CollectorRegistry
) -> tuple[PostgresLogSource, list[float]]:
    """A source tailing ``path`` and its clock (a one-item list to move)."""
    metrics = CollectorMetrics(registry)
    tailer = Tailer(tmp_path, [], Checkpoints(tmp_path / "cp.json"), metrics)
    now = [0.0]
    source = PostgresLogSource(
        tailer,
        metrics,
        url=None,
        path=path,
        fallback_prefix="%m [%p] %q%u@%d ",
        clock=lambda: now[0],
    )
    return source, now


def test_local_servers_only() -> None:
    assert is_local("postgresql://postgres@127.0.0.1:5432/shop")
    assert is_local("postgresql://postgres@localhost/shop")
    assert is_local("postgresql://[::1]:5432/shop")
    assert is_local("postgresql:///shop")  # the Unix socket
    assert is_local("postgresql:///shop?host=/var/run/postgresql")
    assert not is_local("postgresql://10.0.0.5/shop")
    assert not is_local("postgresql://db.example.com/shop")  # a name may be anywhere
    assert not is_local("postgresql://127.0.0.1,10.0.0.5/shop")
    assert not is_local("not a url ::: %")


def test_debian_cluster_log_path() -> None:
    assert debian_log("15/main") == Path("/var/log/postgresql/postgresql-15-main.log")
    assert debian_log("16/reporting") == Path("/var/log/postgresql/postgresql-16-reporting.log")


def test_which_server_log_is_read(tmp_path: Path) -> None:
    metrics = CollectorMetrics(CollectorRegistry())
    checkpoints = Checkpoints(tmp_path / "cp.json")

    def source(settings: Settings) -> PostgresLogSource | None:
        return pglog_from(settings, checkpoints, metrics)

    assert source(settings_for(tmp_path)) is not None  # the shop's PostgreSQL, on loopback
    assert source(settings_for(tmp_path, postgresql_log="off")) is None
    assert source(settings_for(tmp_path, postgres="off")) is None  # no server, no discovery
    assert source(settings_for(tmp_path, postgres="postgresql://db.example/shop")) is None
    sqlite = from_mapping({"data_dir": str(tmp_path)})
    assert source(sqlite) is None
    # A path given is read even without a server to ask.
    given = source(
        from_mapping({"data_dir": str(tmp_path), "collect": {"postgresql_log": "pg.log"}})
    )
    assert given is not None
    given.collect()
    assert given.health.problem is not None and str(tmp_path / "pg.log") in given.health.problem


def test_missing_log_warns_once_counts_and_is_read_once_it_appears(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    path = tmp_path / "postgresql-15-main.log"
    source, now = source_for(tmp_path, path, registry)

    def metric(name: str) -> float | None:
        return registry.get_sample_value(name, {"source": SOURCE})

    with caplog.at_level(logging.WARNING, logger="vigil.collect"):
        assert source.collect() == []
        now[0] += RETRY_S
        assert source.collect() == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(path) in warnings[0] and "collect.postgresql_log" in warnings[0]
    assert metric("vigil_collector_source_up") == 0
    assert metric("vigil_collector_source_failures_total") == 2

    path.write_bytes(STDERR_LINES)
    now[0] += RETRY_S
    events = [e for b in source.collect() for e in b.events]
    assert metric("vigil_collector_source_up") == 1
    # The last group waits for a line after it (or a quiet file); the error is whole.
    (error,) = [e for e in events if e.get("log.level") == "error"]
    assert error.get("error.message") == "division by zero"
    assert error.get("postgresql.log.query") == "SELECT 1/0"
    assert error.get("postgresql.log.database") == "shopdb"


def test_unreadable_log_names_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "dir-not-file.log"
    path.mkdir()  # opening a directory fails for root too
    source, _ = source_for(tmp_path, path, CollectorRegistry())
    assert source.collect() == []
    assert source.health.problem is not None
    assert str(path) in source.health.problem and "collect.postgresql_log" in source.health.problem


def test_a_collect_files_entry_for_the_log_wins(tmp_path: Path) -> None:
    path = tmp_path / "pg" / "postgresql.log"
    path.parent.mkdir()
    path.write_bytes(STDERR_LINES)
    settings = settings_for(
        tmp_path,
        postgresql_log=str(path),
        postgres="off",
        files={str(tmp_path / "pg" / "*.log"): "postgresql_stderr"},
    )
    source = pglog_from(
        settings, Checkpoints(tmp_path / "cp.json"), CollectorMetrics(CollectorRegistry())
    )
    assert source is not None
    assert source.collect() == []  # left to the collect.files entry: not read twice
    assert source.left_to == path and not source.files


def test_discovery_on_the_machines_server_matches_what_it_says() -> None:
    """The real server (Debian's 15/main here: logging_collector off) is asked where it logs."""
    try:
        conn = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        require_server("PostgreSQL on 127.0.0.1:5432", str(exc))
    with conn:
        found = discover(conn)
        collector, prefix, cluster = (
            conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in ("logging_collector", "log_line_prefix", "cluster_name")
        )
    assert found.prefix == prefix
    if collector == "off":
        assert found.path == debian_log(cluster)
        assert found.parser == "postgresql_stderr"
    else:
        assert found.path.is_absolute()
