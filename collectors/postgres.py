"""Poll a PostgreSQL server into samples named like the community postgres_exporter.

So that postgres_exporter's dashboards and alert rules apply unchanged, every
metric that exporter has keeps its name and label names. They were checked in
github.com/prometheus-community/postgres_exporter at commit dbb1987e2f0d
(2026-08-18):

- ``collector/pg_stat_database.go``: ``pg_stat_database_{numbackends,
  xact_commit, xact_rollback, blks_read, blks_hit, tup_returned, tup_fetched,
  tup_inserted, tup_updated, tup_deleted, conflicts, temp_files, temp_bytes,
  deadlocks}`` with labels ``datid, datname``. The cache hit ratio is computed
  at query time from the ``blks_hit`` and ``blks_read`` counters, as with the
  exporter.
- ``collector/pg_stat_activity.go``: ``pg_stat_activity_count`` and
  ``pg_stat_activity_max_tx_duration``. The exporter's labels are
  ``datname, state, usename, application_name, backend_type, wait_event_type,
  wait_event``. Here only ``datname, state`` are kept, because the others grow
  with every client (this is the label set of the exporter's older built-in
  query).
- ``collector/pg_long_running_transactions.go``: ``pg_long_running_transactions``
  and ``pg_long_running_transactions_oldest_timestamp_seconds`` (no labels).
- ``collector/pg_locks.go``: ``pg_locks_count`` with ``datname, mode``; modes
  are in lower case, and every (database, mode) pair is written, even at 0.
- ``collector/pg_database.go``: ``pg_database_size_bytes`` with ``datname``.
- ``collector/pg_stat_user_tables.go``: ``pg_stat_user_tables_{seq_scan,
  idx_scan, n_tup_ins, n_tup_upd, n_tup_del, n_live_tup, n_dead_tup,
  table_size_bytes, index_size_bytes}`` with ``datname, schemaname, relname``.
  Only the ``collect.postgres_max_tables`` largest tables are written.
- ``collector/pg_replication.go``: ``pg_replication_lag_seconds`` and
  ``pg_replication_is_replica`` (no labels).
- ``exporter/postgres_exporter.go``: ``pg_up`` (namespace ``pg``, name ``up``).

Vigil adds a few metrics that the exporter does not have (:data:`VIGIL_METRICS`):
``pg_locks_waiting`` (locks not granted yet, by ``datname, mode``),
``pg_stat_activity_max_query_duration`` (age of the oldest running statement,
by ``datname``) and ``pg_stat_user_tables_omitted`` (tables left out by the
limit). Each poll also writes ``up``, ``scrape_duration_seconds`` and
``scrape_samples_scraped`` for ``job="postgres"``, as the scraper does for its
targets.

A server that is down, refuses the connection, is too slow or answers an error
gives ``up 0`` and ``pg_up 0``. The error is counted in
``vigil_collector_scrape_errors_total{job="postgres"}`` and logged; it is never
raised.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import psycopg

from collectors.metrics import CollectorMetrics
from collectors.sink import Batch
from siem.model import Sample, make_labels
from vigil.settings import Settings

log = logging.getLogger("vigil.collect.postgres")

JOB = "postgres"
PASSWORD_ENV = "VIGIL_POSTGRES_PASSWORD"

#: Names and label names of the postgres_exporter metrics this poller writes.
EXPORTER_METRICS: dict[str, tuple[str, ...]] = {
    **{
        f"pg_stat_database_{col}": ("datid", "datname")
        for col in (
            "numbackends",
            "xact_commit",
            "xact_rollback",
            "blks_read",
            "blks_hit",
            "tup_returned",
            "tup_fetched",
            "tup_inserted",
            "tup_updated",
            "tup_deleted",
            "conflicts",
            "temp_files",
            "temp_bytes",
            "deadlocks",
        )
    },
    "pg_stat_activity_count": ("datname", "state"),
    "pg_stat_activity_max_tx_duration": ("datname", "state"),
    "pg_long_running_transactions": (),
    "pg_long_running_transactions_oldest_timestamp_seconds": (),
    "pg_locks_count": ("datname", "mode"),
    "pg_database_size_bytes": ("datname",),
    **{
        f"pg_stat_user_tables_{col}": ("datname", "schemaname", "relname")
        for col in (
            "seq_scan",
            "idx_scan",
            "n_tup_ins",
            "n_tup_upd",
            "n_tup_del",
            "n_live_tup",
            "n_dead_tup",
            "table_size_bytes",
            "index_size_bytes",
        )
    },
    "pg_replication_lag_seconds": (),
    "pg_replication_is_replica": (),
    "pg_up": (),
}

#: Vigil's own additions, under the same ``pg_`` prefix.
VIGIL_METRICS: dict[str, tuple[str, ...]] = {
    "pg_locks_waiting": ("datname", "mode"),
    "pg_stat_activity_max_query_duration": ("datname",),
    "pg_stat_user_tables_omitted": ("datname",),
}

_DATABASE_COLUMNS = tuple(
    name.removeprefix("pg_stat_database_")
    for name in EXPORTER_METRICS
    if name.startswith("pg_stat_database_")
)
_TABLE_COLUMNS: tuple[str, ...] = ("seq_scan", "idx_scan", "n_tup_ins", "n_tup_upd")
_TABLE_COLUMNS += ("n_tup_del", "n_live_tup", "n_dead_tup")

# The exporter's state and lock-mode lists: every pair is written, also at 0,
# so a rate or a comparison never sees a series vanish.
_STATES = (
    "active",
    "idle",
    "idle in transaction",
    "idle in transaction (aborted)",
    "fastpath function call",
    "disabled",
)
_LOCK_MODES = (
    "accesssharelock",
    "rowsharelock",
    "rowexclusivelock",
    "shareupdateexclusivelock",
    "sharelock",
    "sharerowexclusivelock",
    "exclusivelock",
    "accessexclusivelock",
    "sireadlock",
)

_DATABASES_SQL = f"""
SELECT datid::text, datname, {", ".join(_DATABASE_COLUMNS)}
FROM pg_stat_database WHERE datname IS NOT NULL
"""
_ACTIVITY_SQL = """
SELECT d.datname, s.state, count(a.pid),
       COALESCE(max(EXTRACT(EPOCH FROM now() - a.xact_start)), 0)::float8
FROM pg_database d CROSS JOIN unnest(%(states)s::text[]) AS s(state)
LEFT JOIN pg_stat_activity a
  ON a.datname = d.datname AND a.state = s.state AND a.pid <> pg_backend_pid()
WHERE d.datallowconn
GROUP BY d.datname, s.state
"""
_QUERY_AGE_SQL = """
SELECT d.datname,
       COALESCE(max(EXTRACT(EPOCH FROM now() - a.query_start)), 0)::float8
FROM pg_database d
LEFT JOIN pg_stat_activity a
  ON a.datname = d.datname AND a.state = 'active' AND a.pid <> pg_backend_pid()
WHERE d.datallowconn
GROUP BY d.datname
"""
_LONG_TX_SQL = """
SELECT count(*), COALESCE(max(EXTRACT(EPOCH FROM clock_timestamp() - xact_start)), 0)::float8
FROM pg_stat_activity
WHERE state IS DISTINCT FROM 'idle' AND query NOT LIKE 'autovacuum:%'
  AND xact_start IS NOT NULL AND pid <> pg_backend_pid()
"""
_LOCKS_SQL = """
SELECT d.datname, m.mode,
       count(l.locktype), count(l.locktype) FILTER (WHERE NOT l.granted)
FROM pg_database d CROSS JOIN unnest(%(modes)s::text[]) AS m(mode)
LEFT JOIN pg_locks l ON l.database = d.oid AND lower(l.mode) = m.mode
WHERE d.datallowconn
GROUP BY d.datname, m.mode
"""
_SIZES_SQL = """
SELECT datname, pg_database_size(oid)::float8 FROM pg_database
WHERE datallowconn AND has_database_privilege(oid, 'CONNECT')
"""
# Largest first, so the limit keeps the tables that matter for disk space.
_TABLES_SQL = f"""
SELECT current_database(), schemaname, relname, {", ".join(_TABLE_COLUMNS)},
       pg_table_size(relid)::float8, pg_indexes_size(relid)::float8,
       count(*) OVER ()
FROM pg_stat_user_tables
ORDER BY pg_total_relation_size(relid) DESC, schemaname, relname
LIMIT %(limit)s
"""
_REPLICATION_SQL = """
SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0
            WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE GREATEST(0, EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()))
       END::float8,
       CASE WHEN pg_is_in_recovery() THEN 1 ELSE 0 END
"""


def sqlalchemy_to_libpq(url: str) -> str | None:
    """The libpq URL of a PostgreSQL SQLAlchemy URL (driver stripped), else None.

    >>> sqlalchemy_to_libpq("postgresql+psycopg://postgres@127.0.0.1:5432/shop")
    'postgresql://postgres@127.0.0.1:5432/shop'
    >>> sqlalchemy_to_libpq("sqlite:///shop.db") is None
    True
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
        return None
    return f"postgresql://{rest}"


def poll_url(settings: Settings) -> str | None:
    """What the collector polls: ``collect.postgres``, else the shop's PostgreSQL, else None.

    ``collect.postgres: off`` turns the poller off even for a PostgreSQL shop.
    """
    configured = settings.collect.postgres.strip()
    if configured.lower() == "off":
        return None
    if configured:
        return configured
    return sqlalchemy_to_libpq(settings.shop_db_url)


def instance_of(url: str) -> str:
    """The ``instance`` label: ``host:port`` of the URL (``localhost:5432`` by default).

    >>> instance_of("postgresql://u:secret@db.example:6432/shop")
    'db.example:6432'
    """
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return "unknown"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def password_from(env: Mapping[str, str] | None = None) -> str | None:
    """The password from ``VIGIL_POSTGRES_PASSWORD`` (libpq reads ``PGPASSWORD`` itself)."""
    env = os.environ if env is None else env
    return env.get(PASSWORD_ENV) or None


def connect(url: str, *, timeout_s: float, password: str | None) -> psycopg.Connection[Any]:
    """An autocommit connection whose connect and every statement end after ``timeout_s``."""
    kwargs: dict[str, Any] = {
        # libpq rounds connect_timeout down to whole seconds, at least 2.
        "connect_timeout": max(2, round(timeout_s)),
        "application_name": "vigil-collector",
        "autocommit": True,
        # Also ends a wait for a lock (pg_table_size of a table being altered).
        "options": f"-c statement_timeout={int(timeout_s * 1000)}",
    }
    if password is not None:
        kwargs["password"] = password
    return psycopg.connect(url, **kwargs)


@dataclass(frozen=True)
class PollResult:
    """The samples of one poll (including ``up``) and why it failed, if it did."""

    samples: tuple[Sample, ...]
    error: str | None

    @property
    def up(self) -> bool:
        return self.error is None


def _num(value: Any) -> float:
    return 0.0 if value is None else float(value)


class PostgresPoller:
    """A collector source: one poll of ``url`` per ``collect()``, as one batch.

    The connection is kept between polls and opened again after any error.
    ``timeout_s`` is the connect timeout, the server-side ``statement_timeout``
    of every query, and (twice over) how long a poll may take in all before
    it is abandoned, so a server that hangs mid-answer cannot stall the loop.
    """

    def __init__(
        self,
        url: str,
        metrics: CollectorMetrics,
        *,
        timeout_s: float = 3.0,
        max_tables: int = 50,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.instance = instance_of(url)
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._max_tables = max_tables
        # The password comes from the environment only; libpq reads PGPASSWORD itself.
        self._password = password_from(env)
        self._clock = clock
        self._conn: psycopg.Connection[Any] | None = None
        self._running: Future[list[Sample]] | None = None

    # -- connection ---------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._conn = connect(self.url, timeout_s=self._timeout_s, password=self._password)
        return self._conn

    def close(self) -> None:
        """Close the connection (a later poll opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    # -- one poll -----------------------------------------------------------

    def _query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        conn = self._connect()
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())

    def _read(self, timestamp: float) -> list[Sample]:
        out: list[Sample] = []

        def add(name: str, value: Any, **labels: str) -> None:
            out.append(
                Sample(
                    make_labels(name, job=JOB, instance=self.instance, **labels),
                    timestamp,
                    _num(value),
                )
            )

        for datid, datname, *values in self._query(_DATABASES_SQL):
            for column, value in zip(_DATABASE_COLUMNS, values, strict=True):
                add(f"pg_stat_database_{column}", value, datid=datid, datname=datname)
        for datname, state, count, max_tx in self._query(_ACTIVITY_SQL, {"states": list(_STATES)}):
            add("pg_stat_activity_count", count, datname=datname, state=state)
            add("pg_stat_activity_max_tx_duration", max_tx, datname=datname, state=state)
        for datname, age in self._query(_QUERY_AGE_SQL):
            add("pg_stat_activity_max_query_duration", age, datname=datname)
        for count, oldest in self._query(_LONG_TX_SQL):
            add("pg_long_running_transactions", count)
            add("pg_long_running_transactions_oldest_timestamp_seconds", oldest)
        for datname, mode, count, waiting in self._query(_LOCKS_SQL, {"modes": list(_LOCK_MODES)}):
            add("pg_locks_count", count, datname=datname, mode=mode)
            add("pg_locks_waiting", waiting, datname=datname, mode=mode)
        for datname, size in self._query(_SIZES_SQL):
            add("pg_database_size_bytes", size, datname=datname)
        tables = self._query(_TABLES_SQL, {"limit": self._max_tables})
        total = 0
        current = ""
        for datname, schema, relname, *values in tables:
            current, total = datname, int(values[-1])
            names = [*_TABLE_COLUMNS, "table_size_bytes", "index_size_bytes"]
            for column, value in zip(names, values[:-1], strict=True):
                add(
                    f"pg_stat_user_tables_{column}",
                    value,
                    **{"datname": datname, "schemaname": schema, "relname": relname},
                )
        if not current:
            current = str(self._query("SELECT current_database()")[0][0])
        add("pg_stat_user_tables_omitted", max(0, total - len(tables)), datname=current)
        for lag, is_replica in self._query(_REPLICATION_SQL):
            add("pg_replication_lag_seconds", lag)
            add("pg_replication_is_replica", is_replica)
        return out

    def _start(self, timestamp: float) -> Future[list[Sample]]:
        """Read in a daemon thread: one stuck in a hung server must not keep the process alive."""
        future: Future[list[Sample]] = Future()

        def work() -> None:
            try:
                future.set_result(self._read(timestamp))
            except BaseException as exc:  # handed to poll(), which decides
                future.set_exception(exc)

        threading.Thread(target=work, name="vigil-pg-poll", daemon=True).start()
        return future

    def poll(self) -> PollResult:
        """One poll; never raises for anything the server does."""
        timestamp = round(self._clock(), 3)
        started = time.monotonic()
        error: str | None = None
        samples: list[Sample] = []
        if self._running is not None and not self._running.done():
            # The last poll is still stuck in a hung server: do not queue another.
            error = "previous poll still waiting for the server"
        else:
            self._running = self._start(timestamp)
            try:
                samples = self._running.result(timeout=2 * self._timeout_s + 1)
            except FutureTimeout:
                error = f"no answer within {2 * self._timeout_s + 1:g} s"
                # Forget the connection; the stuck thread may still use it.
                self._conn = None
            # Refused, timed out, bad URL, authentication, a cancelled statement; and,
            # as anything the server answers is outside input, whatever else goes wrong
            # reading it: the collector loop must keep running.
            except Exception as exc:
                error = f"{type(exc).__name__}: {str(exc).strip()}".rstrip(": ")
                self.close()
        duration = time.monotonic() - started

        def meta(name: str, value: float) -> Sample:
            return Sample(make_labels(name, job=JOB, instance=self.instance), timestamp, value)

        up = 0.0 if error else 1.0
        samples.append(meta("pg_up", up))
        samples += [
            meta("up", up),
            meta("scrape_duration_seconds", duration),
            meta("scrape_samples_scraped", float(len(samples))),
        ]
        if error is not None:
            self._metrics.scrape_errors.labels(JOB).inc()
            log.warning(
                "postgres poll failed; marked up=0",
                extra={
                    "labels.job": JOB,
                    "url.full": redact(self.url),
                    "error.message": error,
                },
            )
        return PollResult(tuple(samples), error)

    def collect(self) -> list[Batch]:
        """One batch with this poll's samples."""
        return [Batch(samples=self.poll().samples)]

    def behind(self) -> bool:
        """Never: a poll reads the current state; the next one is due an interval later."""
        return False


def poller_from(
    settings: Settings, metrics: CollectorMetrics, *, clock: Callable[[], float] = time.time
) -> PostgresPoller | None:
    """The poller ``settings`` ask for (see :func:`poll_url`), or None."""
    url = poll_url(settings)
    if url is None:
        return None
    return PostgresPoller(
        url,
        metrics,
        timeout_s=settings.collect.postgres_timeout_s,
        max_tables=settings.collect.postgres_max_tables,
        clock=clock,
    )
