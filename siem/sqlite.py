"""The embedded Store: one SQLite file in WAL mode, one writer process, many readers.

Events keep their ECS document as JSON text and are filtered with SQLite's
JSON functions (``siem.kql`` compiles KQL to SQL); samples live in a
``series`` table (one row per label set) and a ``samples`` table keyed by
(series, timestamp), so ``INSERT OR IGNORE`` makes every write idempotent.
A sample's ``value`` is a REAL; the values a REAL does not keep (every NaN, which
SQLite stores as NULL, among them Prometheus' stale marker; and -0.0, read back as
0.0) also keep their 8 bytes in the nullable ``special`` column, so reads give back
the very bits written. A file from before that column gets it when opened.
Connections come from a small pool, so any thread may call any method.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import json
import logging
import math
import os
import sqlite3
import struct
import threading
import time
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from siem import SiemError, kql, limits, lookups
from siem import aggregations as agg
from siem import retention as ret
from siem.model import (
    METRIC_NAME,
    Columns,
    Event,
    EventQuery,
    Labels,
    Matcher,
    MetricMetadata,
    Sample,
    SampleChanges,
    SelectsColumns,
    WriteResult,
)

_log = logging.getLogger("vigil.siem")

BUSY_TIMEOUT_S = 30.0
WRITE_CACHE_KIB = 65536
MAX_IDLE_CONNECTIONS = 4
_IN_CHUNK = 500  # series ids per ``IN (...)``; well below SQLite's variable limit
_PROGRESS_STEPS = 10_000  # SQLite VM steps between deadline/cancellation checks
_TAKE_EVERY = 4096  # rows read between sample-budget checks
_MAX_HOLD_S = 0.05  # longest a prune transaction keeps the write lock while it seeks series
_VACUUM_PAGES = 2048  # pages given back per incremental-vacuum transaction (8 MiB of 4 KiB)
_STATS_SAMPLE_ROWS = 256  # newest documents per dataset whose length estimates its size
_MANY_EVENTS = 50_000  # a terms aggregation over more walks the hot field's whole index
_RANGE_BUCKETS = 1000  # histograms up to this many buckets count each with its own range
SAMPLE_LOG_KEEP_S = 120.0
"""How long the sample log keeps a write: a reader of ``samples_since`` further behind
than that gets ``reset`` and reads everything again."""
_LOG_TRIM_EVERY_S = 10.0  # a writer trims the sample log at most this often

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        id TEXT PRIMARY KEY, ts REAL NOT NULL, dataset TEXT NOT NULL, doc TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS events_dataset_ts ON events (dataset, ts)",
    "CREATE INDEX IF NOT EXISTS events_ts ON events (ts)",
    """CREATE TABLE IF NOT EXISTS series (
        id INTEGER PRIMARY KEY, labels_key TEXT NOT NULL UNIQUE,
        labels TEXT NOT NULL, name TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS series_name ON series (name)",
    """CREATE TABLE IF NOT EXISTS samples (
        series_id INTEGER NOT NULL REFERENCES series (id), ts REAL NOT NULL, value REAL,
        special BLOB, PRIMARY KEY (series_id, ts)) WITHOUT ROWID""",
    # The sample log (``samples_since``): every stored sample's key, numbered in commit
    # order (writers are serialised by the write lock; AUTOINCREMENT never reuses a
    # number), kept ``SAMPLE_LOG_KEEP_S``. The trigger fires only for the rows that
    # INSERT OR IGNORE really inserts.
    """CREATE TABLE IF NOT EXISTS sample_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT, series_id INTEGER NOT NULL, ts REAL NOT NULL)""",
    """CREATE TRIGGER IF NOT EXISTS samples_logged AFTER INSERT ON samples BEGIN
        INSERT INTO sample_log (series_id, ts) VALUES (new.series_id, new.ts); END""",
    # ``log_trimmed_to``: the sample log's numbers up to this are gone;
    # ``samples_deleted_before``: the highest cutoff samples were ever deleted below.
    """CREATE TABLE IF NOT EXISTS store_state (
        key TEXT PRIMARY KEY, value REAL NOT NULL) WITHOUT ROWID""",
)

_SPECIAL_INDEX = (
    "CREATE INDEX IF NOT EXISTS samples_special ON samples (series_id, ts) "
    "WHERE special IS NOT NULL"
)
"""The few samples whose value needs ``special`` (NaN, -0.0): a read finds them apart."""

_METADATA_SCHEMA = (
    # One row per metric family: the latest # TYPE / # HELP / # UNIT scraped.
    """CREATE TABLE IF NOT EXISTS metric_metadata (
        metric TEXT PRIMARY KEY, type TEXT NOT NULL, help TEXT NOT NULL,
        unit TEXT NOT NULL) WITHOUT ROWID""",
)

HOT_FIELDS = (
    "event.dataset",
    "http.response.status_code",
    "source.ip",
    "url.path",
    "log.level",
    "user.name",
)
"""Fields with an indexed generated column: KQL conditions, terms aggregations read it."""
HOT_COLUMNS = {name: "f_" + name.replace(".", "_") for name in HOT_FIELDS}


def _hot_schema(conn: sqlite3.Connection) -> None:
    """Add the hot-field columns and their (value, ts) indexes; a no-op once there.

    The writer fills them from the decoded document (``_hot_values``), cheaper
    than SQLite's JSON functions; the events of a ``siem.db`` from before they
    existed get theirs from ``kql.value_sql``, the same values, at the first open.
    """
    have = {row[1] for row in conn.execute("PRAGMA table_xinfo(events)")}
    added = [(name, column) for name, column in HOT_COLUMNS.items() if column not in have]
    for _, column in added:
        # No declared type, so no affinity: '503' stays text and 503 a number.
        conn.execute(f"ALTER TABLE events ADD COLUMN {column}")
    if added:
        if conn.execute("SELECT 1 FROM events LIMIT 1").fetchone() is not None:
            _log.warning("indexing the hot fields of the events already stored (once)")
        sets = ", ".join(f"{column} = {kql.value_sql(name)}" for name, column in added)
        conn.execute(f"UPDATE events SET {sets}")
    for column in HOT_COLUMNS.values():
        conn.execute(f"CREATE INDEX IF NOT EXISTS events_{column} ON events ({column}, ts)")


_INT64 = (-(2**63), 2**63 - 1)
_LIST_MARK = b""  # kql.LIST_MARK as a value
_HOT_PATHS = tuple((name, tuple(name.split("."))) for name in HOT_FIELDS)


def _hot_values(doc: Mapping[str, Any]) -> list[Any]:
    """``kql.value_sql`` of every hot field, computed in Python on the decoded document
    (the write path's share of the work: plain dict lookups, no JSON parsed again)."""
    rv: list[Any] = []
    for flat, parts in _HOT_PATHS:
        if flat in doc:  # a flat key wins, as in get_field
            value = doc[flat]
        else:
            value = doc
            for part in parts:
                if not isinstance(value, Mapping) or part not in value:
                    value = None
                    break
                value = value[part]
        rv.append(value if value is None or type(value) is str else _hot_value(value))
    return rv


def _hot_value(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return value if _INT64[0] <= value <= _INT64[1] else float(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # as _dumps stores it
    if isinstance(value, (Mapping, list, tuple)):
        return _LIST_MARK
    return str(value)  # _dumps writes other objects as str()


_INSERT_EVENT = (
    f"INSERT OR IGNORE INTO events (id, ts, dataset, doc, {', '.join(HOT_COLUMNS.values())}) "
    f"VALUES (?, ?, ?, ?{', ?' * len(HOT_COLUMNS)})"
)


class SqliteStore(lookups.SeriesLookups, SelectsColumns):
    """``Store`` in one SQLite file; several processes may open the same file.

    >>> store = SqliteStore("data/siem.db")
    >>> store.write(samples=[Sample(make_labels("up", job="shop"), 1700000000.0, 1.0)])
    WriteResult(events=0, duplicate_events=0, samples=1, duplicate_samples=0)
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float | None = None) -> None:
        """``busy_timeout_s``: how long a statement waits for a lock another connection
        holds before it fails with ``database is locked`` (default ``BUSY_TIMEOUT_S``)."""
        self.path = Path(path)
        self._busy_timeout_s = BUSY_TIMEOUT_S if busy_timeout_s is None else busy_timeout_s
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False
        # Only committed series ids are cached: a rolled-back id must not be reused.
        self._series_ids: dict[Labels, int] = {}
        # (when, newest sample log number) of this writer's commits, for trimming the log
        self._logged: list[tuple[float, int]] = []
        self._trimmed_at = time.monotonic()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SiemError(f"{self.path}: cannot create the store's directory: {exc}") from exc
        with self._connection() as conn, _transaction(conn, "IMMEDIATE"):
            for statement in (*_SCHEMA, *_METADATA_SCHEMA):
                conn.execute(statement)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(samples)")}
            if "special" not in columns:
                # A file from before the column: adding a nullable column rewrites nothing.
                conn.execute("ALTER TABLE samples ADD COLUMN special BLOB")
            conn.execute(_SPECIAL_INDEX)
            _hot_schema(conn)

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
            # A new file gives pages freed by a prune back with `incremental_vacuum`; this
            # must come before WAL mode writes the header (an older file keeps its mode).
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL is durable against application crashes, and much faster.
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise SiemError(
                f"{self.path}: cannot open the store ({exc}); check the path and its permissions"
            ) from exc
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise SiemError(f"{self.path}: the store is closed")
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._open()
        budget = limits.current()
        if budget is not None:
            # SQLite calls this every N virtual-machine steps and stops the statement
            # when it returns non-zero: the deadline and cancellation reach into a scan.
            conn.set_progress_handler(budget.interrupted, _PROGRESS_STEPS)
        try:
            yield conn
        except sqlite3.Error as exc:
            if budget is not None:
                budget.check()  # "interrupted" by the handler: say why
            raise SiemError(f"{self.path}: {exc}") from exc
        finally:
            if budget is not None:
                conn.set_progress_handler(None, 0)
            with self._lock:
                keep = not self._closed and len(self._idle) < MAX_IDLE_CONNECTIONS
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()

    def write(self, events: Iterable[Event] = (), samples: Iterable[Sample] = ()) -> WriteResult:
        """Store a batch in one transaction; already stored events and points are counted.

        The write path: one ``BEGIN IMMEDIATE`` per batch, ``executemany`` over
        statements SQLite keeps prepared, and for events read from a log line
        (``Event.text``) the line's own JSON text instead of encoding the
        document again.
        """
        event_rows = [
            (
                e.id,
                _finite(e.timestamp, e.id),
                e.dataset,
                e.text if e.text is not None else _dumps(e.doc),
                *_hot_values(e.doc),
            )
            for e in events
        ]
        sample_list = list(samples)
        for sample in sample_list:
            _finite(sample.timestamp, sample.labels)
        if not event_rows and not sample_list:
            return WriteResult()
        stored = s_stored = 0
        with self._connection() as conn:
            # Event ids are hashes, so inserts touch index pages all over: a bigger
            # page cache on writing connections saves about a quarter of the CPU.
            conn.execute(f"PRAGMA cache_size = -{WRITE_CACHE_KIB}")
            with _transaction(conn, "IMMEDIATE"):
                if event_rows:
                    stored = conn.executemany(_INSERT_EVENT, event_rows).rowcount
                new_ids: dict[Labels, int] = {}
                if sample_list:
                    ids = self._series_for(conn, {s.labels for s in sample_list}, new_ids)
                    s_stored = conn.executemany(
                        "INSERT OR IGNORE INTO samples (series_id, ts, value, special) "
                        "VALUES (?, ?, ?, ?)",
                        [(ids[s.labels], s.timestamp, *_to_sql(s.value)) for s in sample_list],
                    ).rowcount
                    if s_stored:
                        self._trim_log(conn)
        with self._lock:
            self._series_ids.update(new_ids)
        return WriteResult(stored, len(event_rows) - stored, s_stored, len(sample_list) - s_stored)

    def _trim_log(self, conn: sqlite3.Connection) -> None:
        """Inside a write: note the log's newest number, and every ``_LOG_TRIM_EVERY_S``
        delete what was logged more than ``SAMPLE_LOG_KEEP_S`` ago."""
        now = time.monotonic()
        (newest,) = conn.execute("SELECT MAX(id) FROM sample_log").fetchone()
        self._logged.append((now, newest or 0))
        if now - self._trimmed_at < _LOG_TRIM_EVERY_S:
            return
        self._trimmed_at = now
        old = [n for when, n in self._logged if when < now - SAMPLE_LOG_KEEP_S]
        self._logged = [(when, n) for when, n in self._logged if when >= now - SAMPLE_LOG_KEEP_S]
        if old:
            conn.execute("DELETE FROM sample_log WHERE id <= ?", (old[-1],))
            _raise_state(conn, "log_trimmed_to", old[-1])

    def samples_since(self, cursor: int | None) -> SampleChanges:
        """The samples stored since ``cursor`` (from an earlier answer; ``None``: only the
        cursor now), late and out-of-order writes included, from one snapshot of the file;
        ``reset`` when the log no longer reaches back to ``cursor``."""
        with self._connection() as conn, _transaction(conn, "DEFERRED"):
            state = dict(conn.execute("SELECT key, value FROM store_state").fetchall())
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'sample_log'")
            newest = (row.fetchone() or (0,))[0]
            deleted_before = float(state.get("samples_deleted_before", -math.inf))
            if cursor is None:
                return SampleChanges(newest, False, deleted_before, [])
            if cursor < state.get("log_trimmed_to", 0) or cursor > newest:
                return SampleChanges(newest, True, deleted_before, [])
            rows = conn.execute(
                "SELECT l.series_id, l.ts, s.value, s.special, r.labels_key FROM sample_log AS l "
                "JOIN samples AS s ON s.series_id = l.series_id AND s.ts = l.ts "
                "JOIN series AS r ON r.id = l.series_id WHERE l.id > ? AND l.id <= ?",
                (cursor, newest),
            ).fetchall()
        samples = [
            (
                _labels_of(key),
                ts,
                value if special is None and value is not None else _from_sql(value, special),
            )
            for _, ts, value, special, key in rows
        ]
        return SampleChanges(newest, False, deleted_before, samples)

    def _series_for(
        self, conn: sqlite3.Connection, wanted: set[Labels], new_ids: dict[Labels, int]
    ) -> dict[Labels, int]:
        with self._lock:
            ids = {
                labels: self._series_ids[labels] for labels in wanted if labels in self._series_ids
            }
        for labels in wanted - ids.keys():
            key = json.dumps(labels, separators=(",", ":"))
            conn.execute(
                "INSERT OR IGNORE INTO series (labels_key, labels, name) VALUES (?, ?, ?)",
                (key, json.dumps(dict(labels)), dict(labels).get(METRIC_NAME, "")),
            )
            (series_id,) = conn.execute(
                "SELECT id FROM series WHERE labels_key = ?", (key,)
            ).fetchone()
            ids[labels] = new_ids[labels] = series_id
        return ids

    def search(self, query: EventQuery) -> list[Event]:
        """Matching events, newest first, at most ``query.limit``."""
        where, args = _where(query)
        # The newest rowids first, then their documents: when an index hands over
        # many matches out of time order, only (rowid, ts, id) gets sorted.
        sql = (
            "SELECT id, ts, dataset, doc FROM events WHERE rowid IN ("
            f"SELECT rowid FROM events WHERE {where} ORDER BY ts DESC, id DESC LIMIT ?) "
            "ORDER BY ts DESC, id DESC"
        )
        with self._connection() as conn:
            rows = conn.execute(sql, [*args, max(query.limit, 0)]).fetchall()
        _take(len(rows))
        return [Event(id_, ts, dataset, json.loads(doc)) for id_, ts, dataset, doc in rows]

    def count_by(self, query: EventQuery, field_name: str) -> dict[str, int]:
        """How many matching events per value of ``field_name``, as ``str()`` of the value."""
        where, args = _where(query)
        counts, _ = self._value_counts(query, where, args, field_name)
        return counts

    def _value_counts(
        self, query: EventQuery, where: str, args: list[Any], field_name: str
    ) -> tuple[dict[str, int], int]:
        """Events per ``str()`` of the value, and events without it, in one scan."""
        hot = HOT_COLUMNS.get(field_name)
        counts: Counter[str] = Counter()
        missing = 0
        # One snapshot: the statements below must see the same events.
        with self._connection() as conn, _transaction(conn, "DEFERRED"):
            if hot is not None:
                # Over many events, walking the whole (value, ts) index beats reading
                # the JSON of each event in the time range (SQLite, without statistics,
                # would take the ts index): about ten times faster at a million.
                table = f"events INDEXED BY events_{hot}" if _many(conn, query) else "events"
                sql = f"SELECT {hot}, COUNT(*) FROM {table} WHERE {where} GROUP BY {hot}"
                walk, numbers = [], {}
                for value, count in _taken(conn.execute(sql, args)):
                    if value is None:
                        missing += count
                    elif isinstance(value, bytes) or value in ("true", "false"):
                        walk.append(value)  # lists, and booleans next to the text "true"
                    elif isinstance(value, (int, float)):
                        numbers[value] = count
                    else:
                        counts[value] += count
                if numbers:
                    # 502 and 502.0 are one group in SQL but two values in Python: the
                    # reals, counted apart over the numbers only (they sort before text).
                    sql = (
                        f"SELECT {hot}, COUNT(*) FROM {table} WHERE {where} "
                        f"AND {hot} < '' AND typeof({hot}) = 'real' GROUP BY {hot}"
                    )
                    reals = dict(conn.execute(sql, args).fetchall())
                    for value, count in numbers.items():
                        real = reals.get(value, 0)
                        if real < count:
                            counts[str(int(value))] += count - real
                        if real:
                            counts[str(float(value))] += real
                if not walk:
                    return dict(counts), missing
                where = f"({where}) AND {hot} IN ({','.join('?' * len(walk))})"
                args = [*args, *walk]
            path_sql, path_args = kql.field_path_sql(field_name)
            sql = (
                f"SELECT json_type(doc, {path_sql}) AS t, json_extract(doc, {path_sql}) AS v, "
                f"COUNT(*) FROM events WHERE {where} GROUP BY t, v"
            )
            # One group per row: a runaway group_by stops at the budget.
            for type_, value, count in _taken(conn.execute(sql, [*path_args, *path_args, *args])):
                if type_ is not None and type_ != "null":
                    counts[_python_str(type_, value)] += count
                else:
                    missing += count
        return dict(counts), missing

    def aggregate(self, query: EventQuery, request: agg.Aggregation) -> agg.AggregationResult:
        """``request`` computed in SQL (counts, buckets, ordered numbers) over the matches."""
        where, args = _where(query)
        if isinstance(request, agg.Count):
            with self._connection() as conn:
                (n,) = conn.execute(f"SELECT COUNT(*) FROM events WHERE {where}", args).fetchone()
            return agg.CountResult(n)
        if isinstance(request, agg.DateHistogram):
            return self._histogram(query, request)
        if isinstance(request, agg.Percentiles):
            path_sql, path_args = kql.field_path_sql(request.field)
            sql = (
                f"SELECT v FROM (SELECT json_type(doc, {path_sql}) AS t, "
                f"json_extract(doc, {path_sql}) AS v FROM events WHERE {where}) "
                "WHERE t IN ('integer', 'real') ORDER BY v"
            )
            values: list[float] = []
            with self._connection() as conn:
                for (value,) in conn.execute(sql, [*path_args, *path_args, *args]):
                    values.append(float(value))
                    if len(values) % _TAKE_EVERY == 0:
                        _take(_TAKE_EVERY)
            _take(len(values) % _TAKE_EVERY)
            return agg.percentiles_result(request, [v for v in values if math.isfinite(v)])
        counts, missing = self._value_counts(query, where, args, request.field)
        if isinstance(request, agg.Cardinality):
            return agg.CardinalityResult(len(counts))
        return agg.terms_result(counts, request.size, sum(counts.values()) + missing)

    def _histogram(self, query: EventQuery, request: agg.DateHistogram) -> agg.HistogramResult:
        # The query's time range joins the buckets' own: one range per statement, so
        # SQLite walks just that stretch of the (ts) index.
        where, args = _where(dataclasses.replace(query, start=None, end=None))
        lowest = request.start if query.start is None else max(query.start, request.start)
        highest = request.end if query.end is None else min(query.end, request.end)
        edges = _bucket_edges(request)
        counts: dict[int, int] = {}
        with self._connection() as conn, _transaction(conn, "DEFERRED"):
            if len(edges) <= _RANGE_BUCKETS:
                # A COUNT(*) per bucket walks an index range without sorting: about
                # five times faster than grouping a million rows by bucket.
                sql = f"SELECT COUNT(*) FROM events WHERE {where} AND ts >= ? AND ts < ?"
                for k, (lo, hi) in enumerate(zip(edges, [*edges[1:], request.end], strict=True)):
                    lo, hi = max(lo, lowest), min(hi, highest)
                    if lo < hi:
                        (counts[k],) = conn.execute(sql, [*args, lo, hi]).fetchone()
            else:
                # Same arithmetic as MemoryStore: int((ts - first) / interval), never negative.
                sql = (
                    f"SELECT CAST((ts - ?) / ? AS INTEGER) AS k, COUNT(*) FROM events "
                    f"WHERE {where} AND ts >= ? AND ts < ? GROUP BY k"
                )
                first = request.first_bucket()
                rows = conn.execute(sql, [first, request.interval_s, *args, lowest, highest])
                counts = dict(rows.fetchall())
        _take(len(counts))
        return agg.histogram_result(request, counts)

    def _columns(self, matchers: Sequence[Matcher], start: float, end: float) -> list[Columns]:
        """Series matching all ``matchers`` with their points in [start, end], by labels.

        Each series' rows are read in primary-key order into two ``array('d')``,
        without a Python object kept per point (``_read_columns``).
        """
        name = next((m.value for m in matchers if m.name == METRIC_NAME and m.op == "="), None)
        with self._connection() as conn, _transaction(conn, "DEFERRED"):
            if name is None:
                rows = conn.execute("SELECT id, labels_key FROM series").fetchall()
            else:
                rows = conn.execute(
                    "SELECT id, labels_key FROM series WHERE name = ?", (name,)
                ).fetchall()
            wanted: dict[int, Labels] = {}
            for n, (series_id, key) in enumerate(rows):
                if n % _TAKE_EVERY == 0:
                    limits.check()
                labels = _labels_of(key)
                as_dict = dict(labels)
                if all(m.matches(as_dict) for m in matchers):
                    wanted[series_id] = labels
            specials = _specials(conn, list(wanted), start, end)
            rv: list[Columns] = []
            for series_id, labels in wanted.items():
                found = _read_columns(conn, series_id, start, end, specials.get(series_id, ()))
                if found is not None:
                    rv.append((labels, *found))
        rv.sort(key=lambda c: c[0])
        return rv

    # --- retention (siem.retention) -----------------------------------------

    def prune(
        self, policy: ret.RetentionPolicy, now: float, *, dry_run: bool = False
    ) -> ret.PruneResult:
        """Remove what ``policy`` no longer keeps, ``policy.chunk`` rows per transaction.

        Then, over ``policy.max_bytes`` (pages in use), the oldest data across events
        and samples goes first; last, a file created with ``auto_vacuum = INCREMENTAL``
        gives the freed pages back to the file system (``incremental_vacuum``, a few
        MiB per transaction). An older file keeps its free pages and reuses them for
        new writes: it stops growing but does not shrink (``vacuum()`` converts it).
        """
        result = ret.PruneResult(dry_run=dry_run)
        if dry_run:
            ret.prune_with(
                self._datasets, self._count_events, self._count_samples, policy, now, result
            )
            if policy.max_bytes > 0:
                result.over_cap_bytes = max(0, self.used_bytes() - policy.max_bytes)
            return result
        ret.prune_with(
            self._datasets,
            lambda dataset, cutoff: self._delete_events(dataset, cutoff, policy),
            lambda cutoff: self._delete_samples(cutoff, policy),
            policy,
            now,
            result,
        )
        ret.size_cap(self, policy, result)
        if result.total_events or result.samples:
            result.reclaimed_bytes = self._reclaim(policy)
        return result

    def _datasets(self) -> list[str]:
        """The distinct datasets, one index seek each (a skip scan of ``events_dataset_ts``)."""
        sql = (
            "WITH RECURSIVE d(name) AS (SELECT MIN(dataset) FROM events UNION ALL "
            "SELECT (SELECT MIN(dataset) FROM events WHERE dataset > d.name) FROM d "
            "WHERE d.name IS NOT NULL) SELECT name FROM d WHERE name IS NOT NULL"
        )
        with self._connection() as conn:
            return [name for (name,) in conn.execute(sql)]

    def _count_events(self, dataset: str, cutoff: float) -> int:
        with self._connection() as conn:
            (n,) = conn.execute(
                "SELECT COUNT(*) FROM events WHERE dataset = ? AND ts < ?", (dataset, cutoff)
            ).fetchone()
        return int(n)

    def _count_samples(self, cutoff: float) -> int:
        sql = (
            "SELECT TOTAL((SELECT COUNT(*) FROM samples WHERE series_id = s.id AND ts < ?)) "
            "FROM series AS s"
        )
        with self._connection() as conn:
            (n,) = conn.execute(sql, (cutoff,)).fetchone()
        return int(n)

    def _delete_events(self, dataset: str, cutoff: float, policy: ret.RetentionPolicy) -> int:
        sql = (
            "DELETE FROM events WHERE rowid IN "
            "(SELECT rowid FROM events WHERE dataset = ? AND ts < ? LIMIT ?)"
        )
        total = 0
        while True:
            with self._connection() as conn, _transaction(conn, "IMMEDIATE"):
                n = conn.execute(sql, (dataset, cutoff, policy.chunk)).rowcount
            total += n
            if n < policy.chunk:
                return total
            policy.pause()

    def _delete_samples(self, cutoff: float, policy: ret.RetentionPolicy) -> int:
        """Samples older than ``cutoff``, series by series along the primary key (there is
        no index on the timestamp alone); a transaction ends after ``policy.chunk`` rows
        or 50 ms. Series rows stay: writers cache their ids."""
        sql = (
            "DELETE FROM samples WHERE series_id = ? AND ts IN "
            "(SELECT ts FROM samples WHERE series_id = ? AND ts < ? ORDER BY ts LIMIT ?)"
        )
        with self._connection() as conn, _transaction(conn, "IMMEDIATE"):
            _raise_state(conn, "samples_deleted_before", cutoff)  # readers drop them too
            ids = [sid for (sid,) in conn.execute("SELECT id FROM series ORDER BY id")]
        total = i = 0
        while i < len(ids):
            deleted = 0
            started = time.monotonic()
            with self._connection() as conn, _transaction(conn, "IMMEDIATE"):
                while (
                    i < len(ids)
                    and deleted < policy.chunk
                    and time.monotonic() - started < _MAX_HOLD_S
                ):
                    left = policy.chunk - deleted
                    n = conn.execute(sql, (ids[i], ids[i], cutoff, left)).rowcount
                    deleted += n
                    if n < left:
                        i += 1
            total += deleted
            if i < len(ids):
                policy.pause()
        return total

    def used_bytes(self) -> int:
        """Bytes of the pages in use (the file's pages minus the free ones)."""
        with self._connection() as conn:
            return self._page_bytes(conn)[0]

    @staticmethod
    def _page_bytes(conn: sqlite3.Connection) -> tuple[int, int]:
        """(bytes in use, free bytes) of the file, as of this connection's snapshot."""
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        (free,) = conn.execute("PRAGMA freelist_count").fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
        return (pages - free) * size, free * size

    _SAMPLES_SPAN = (
        "SELECT (SELECT MIN((SELECT ts FROM samples WHERE series_id = s.id ORDER BY ts LIMIT 1)) "
        "FROM series AS s), (SELECT MAX((SELECT ts FROM samples WHERE series_id = s.id "
        "ORDER BY ts DESC LIMIT 1)) FROM series AS s)"
    )

    def time_span(self) -> tuple[float, float] | None:
        with self._connection() as conn, _transaction(conn, "DEFERRED"):
            events = conn.execute(
                "SELECT (SELECT MIN(ts) FROM events), (SELECT MAX(ts) FROM events)"
            ).fetchone()
            samples = conn.execute(self._SAMPLES_SPAN).fetchone()
        times = [t for t in (*events, *samples) if t is not None]
        return (min(times), max(times)) if times else None

    def delete_before(self, cutoff: float, policy: ret.RetentionPolicy) -> tuple[Counter[str], int]:
        """Every event and sample older than ``cutoff`` (the size cap), in chunks."""
        sql = (
            "DELETE FROM events WHERE rowid IN "
            "(SELECT rowid FROM events WHERE ts < ? LIMIT ?) RETURNING dataset"
        )
        events: Counter[str] = Counter()
        while True:
            with self._connection() as conn, _transaction(conn, "IMMEDIATE"):
                gone = conn.execute(sql, (cutoff, policy.chunk)).fetchall()
            events.update(dataset for (dataset,) in gone)
            if len(gone) < policy.chunk:
                break
            policy.pause()
        return events, self._delete_samples(cutoff, policy)

    def _reclaim(self, policy: ret.RetentionPolicy) -> int:
        """Give free pages back to the file system, ``_VACUUM_PAGES`` per transaction, when
        the file was created with incremental auto-vacuum; the bytes the file lost."""
        with self._connection() as conn:
            (mode,) = conn.execute("PRAGMA auto_vacuum").fetchone()
            if mode != 2:  # 2: INCREMENTAL
                return 0
            before = sum(self._page_bytes(conn))
        last_free = None
        while True:
            with self._connection() as conn:
                # executescript steps the pragma to the end (execute() stops after one page).
                try:
                    conn.executescript(
                        f"BEGIN IMMEDIATE; PRAGMA incremental_vacuum({_VACUUM_PAGES}); COMMIT;"
                    )
                finally:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                _, free = self._page_bytes(conn)
            if not free or (last_free is not None and free >= last_free):
                break  # all given back (or other writers free pages as fast)
            last_free = free
            policy.pause()
        with self._connection() as conn:
            after = sum(self._page_bytes(conn))
            # The file shrinks when the WAL is copied back; PASSIVE never waits for readers.
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        return max(0, before - after)

    def vacuum(self) -> int:
        """Rewrite the file with incremental auto-vacuum (``VACUUM``): an older file then
        shrinks after every prune. Holds the write lock for the whole copy and needs free
        disk space for a second copy of the file; the bytes the file lost."""
        with self._connection() as conn:
            before = sum(self._page_bytes(conn))
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("VACUUM")
            after = sum(self._page_bytes(conn))
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return max(0, before - after)

    def stats(self) -> ret.StoreStats:
        """Counts and time spans exact; bytes per dataset estimated from the length of its
        newest 256 documents; the file's size exact (with its WAL)."""
        sample = (
            "SELECT AVG(length(CAST(doc AS BLOB))), AVG(length(id)) FROM "
            "(SELECT doc, id FROM events WHERE dataset = ? ORDER BY ts DESC LIMIT ?)"
        )
        datasets = []
        with self._connection() as conn, _transaction(conn, "DEFERRED"):
            rows = conn.execute(
                "SELECT dataset, COUNT(*), MIN(ts), MAX(ts) FROM events GROUP BY dataset"
            ).fetchall()
            for dataset, count, oldest, newest in rows:
                doc_len, id_len = conn.execute(sample, (dataset, _STATS_SAMPLE_ROWS)).fetchone()
                size = ret.estimate_event_bytes(
                    round(id_len or 0), len(dataset.encode("utf-8", "surrogatepass")), 0
                ) + round(doc_len or 0)
                datasets.append(ret.DatasetStats(dataset, count, size * count, oldest, newest))
            (series,) = conn.execute(
                "SELECT COUNT(*) FROM series AS s "
                "WHERE EXISTS (SELECT 1 FROM samples WHERE series_id = s.id)"
            ).fetchone()
            (samples,) = conn.execute("SELECT COUNT(*) FROM samples").fetchone()
            oldest_sample, newest_sample = conn.execute(self._SAMPLES_SPAN).fetchone()
            used, free = self._page_bytes(conn)
        try:
            wal = os.path.getsize(f"{self.path}-wal")
        except OSError:
            wal = 0
        return ret.StoreStats(
            datasets=tuple(datasets),
            series=series,
            samples=samples,
            samples_bytes=samples * ret.SAMPLE_BYTES,
            oldest_sample=oldest_sample,
            newest_sample=newest_sample,
            total_bytes=used + free + wal,
            free_bytes=free,
        )

    def _in_range(
        self, matchers: Sequence[Matcher], start: float | None, end: float | None
    ) -> Iterator[Labels]:
        """The label sets of the series with a sample in [start, end], from the series
        table (by name when a matcher pins it) and one primary-key probe of ``samples``
        per series: the samples themselves are never read."""
        clauses, args = _sample_bounds(start, end)
        where = f"EXISTS (SELECT 1 FROM samples WHERE series_id = series.id{clauses})"
        name = lookups.exact_name(matchers)
        if name is not None:
            where += " AND name = ?"
            args.append(name)
        with self._connection() as conn, _transaction(conn, "DEFERRED"):
            rows = conn.execute(f"SELECT labels_key FROM series WHERE {where}", args).fetchall()
        for (key,) in rows:
            yield tuple((k, v) for k, v in json.loads(key))

    def _metric_names(self, start: float | None, end: float | None, limit: int) -> list[str]:
        """Grafana's metric picker (``label/__name__/values``): from the name column."""
        clauses, args = _sample_bounds(start, end)
        sql = (
            "SELECT DISTINCT name FROM series WHERE name != '' AND EXISTS "
            f"(SELECT 1 FROM samples WHERE series_id = series.id{clauses}) ORDER BY name"
        )
        if limit > 0:
            sql += " LIMIT ?"
            args.append(limit)
        with self._connection() as conn, _transaction(conn, "DEFERRED"):
            rows = conn.execute(sql, args).fetchall()
        return lookups.pick_values((name for (name,) in rows), limit)

    def write_metadata(self, items: Iterable[MetricMetadata]) -> int:
        rows = [(m.metric, m.type, m.help, m.unit) for m in items]
        if not rows:
            return 0
        with self._connection() as conn, _transaction(conn, "IMMEDIATE"):
            conn.executemany(
                "INSERT OR REPLACE INTO metric_metadata (metric, type, help, unit) "
                "VALUES (?, ?, ?, ?)",
                rows,
            )
        return len(rows)

    def metadata(self, metric: str | None = None, limit: int = 0) -> list[MetricMetadata]:
        sql = "SELECT metric, type, help, unit FROM metric_metadata"
        args: list[Any] = []
        if metric is not None:
            sql += " WHERE metric = ?"
            args.append(metric)
        sql += " ORDER BY metric"
        if limit > 0:
            sql += " LIMIT ?"
            args.append(limit)
        with self._connection() as conn:
            rows = conn.execute(sql, args).fetchall()
        return lookups.pick_metadata((MetricMetadata(*row) for row in rows), metric, limit)

    def close(self) -> None:
        """Close the pooled connections; connections in use close when released."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


@contextmanager
def _transaction(conn: sqlite3.Connection, mode: str) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front: a deferred transaction that later
    # wants to write fails with "database is locked" instead of waiting.
    conn.execute(f"BEGIN {mode}")
    try:
        yield
    except BaseException:
        conn.set_progress_handler(None, 0)  # a query's expired deadline must not stop this
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _raise_state(conn: sqlite3.Connection, key: str, value: float) -> None:
    conn.execute(
        "INSERT INTO store_state (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
        (key, value),
    )


@functools.lru_cache(maxsize=65_536)
def _labels_of(key: str) -> Labels:
    """The labels of a ``series.labels_key`` (cached: a query reads the same series often)."""
    return tuple((k, v) for k, v in json.loads(key))


def _specials(
    conn: sqlite3.Connection, ids: list[int], start: float, end: float
) -> dict[int, list[tuple[float, float]]]:
    """(ts, value) of the samples of series ``ids`` in [start, end] whose value a REAL does
    not keep (NaN, -0.0), read through the partial index on ``special``."""
    rv: dict[int, list[tuple[float, float]]] = {}
    for i in range(0, len(ids), _IN_CHUNK):
        chunk = ids[i : i + _IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        for series_id, ts, value, special in conn.execute(
            "SELECT series_id, ts, value, special FROM samples INDEXED BY samples_special "
            f"WHERE series_id IN ({marks}) AND ts >= ? AND ts <= ? AND special IS NOT NULL",
            [*chunk, start, end],
        ):
            rv.setdefault(series_id, []).append((ts, _from_sql(value, special)))
    return rv


def _read_columns(
    conn: sqlite3.Connection,
    series_id: int,
    start: float,
    end: float,
    specials: Iterable[tuple[float, float]],
) -> tuple[array[float], array[float]] | None:
    """The times and values of one series in [start, end], or ``None`` if it has none there.

    Rows come in primary-key order, a batch at a time, into two ``array('d')``
    (no Python object kept per sample); ``specials`` (from ``_specials``) then
    put back the values a REAL does not keep.
    """
    cursor = conn.execute(
        "SELECT ts, value FROM samples WHERE series_id = ? AND ts >= ? AND ts <= ? ORDER BY ts",
        (series_id, start, end),
    )
    times = array("d")
    values: list[float | None] = []
    while batch := cursor.fetchmany(_TAKE_EVERY):
        # Counted while reading: too big a query stops before it holds all.
        _take(len(batch))
        batch_times, batch_values = zip(*batch, strict=True)
        times.extend(batch_times)
        values.extend(batch_values)
    if not times:
        return None
    if None in values:  # NaN is NULL; a file from before ``special`` has no bytes for it
        values = [math.nan if v is None else v for v in values]
    column: array[float] = array("d", cast(list[float], values))
    for ts, value in specials:
        column[bisect.bisect_left(times, ts)] = value
    return times, column


def _sample_bounds(start: float | None, end: float | None) -> tuple[str, list[Any]]:
    """`` AND ts >= ? AND ts <= ?`` for the bounds given, and their arguments."""
    clauses = ""
    args: list[Any] = []
    if start is not None:
        clauses += " AND ts >= ?"
        args.append(start)
    if end is not None:
        clauses += " AND ts <= ?"
        args.append(end)
    return clauses, args


def _many(conn: sqlite3.Connection, query: EventQuery) -> bool:
    """Whether ``query``'s time range holds at least ``_MANY_EVENTS`` events (a bounded count)."""
    sql = "SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE ts >= ? AND ts < ? LIMIT ?)"
    lo = -math.inf if query.start is None else query.start
    hi = math.inf if query.end is None else query.end
    (n,) = conn.execute(sql, (lo, hi, _MANY_EVENTS)).fetchone()
    return bool(n >= _MANY_EVENTS)


def _bucket_edges(request: agg.DateHistogram) -> list[float]:
    """The first timestamp of each bucket: bucket k holds [edges[k], edges[k+1]) (the last
    ends at ``request.end``), exactly the events that ``int((ts - first) / interval)``
    (the arithmetic every backend shares) puts in k, found by stepping through the
    floats next to ``first + k * interval``: that function never decreases with ts."""
    first, interval = request.first_bucket(), request.interval_s

    def bucket(ts: float) -> int:
        return int((ts - first) / interval)

    edges = [request.start]
    for k in range(1, len(request.bucket_starts())):
        edge = first + k * interval
        while bucket(edge) >= k:
            edge = math.nextafter(edge, -math.inf)
        while bucket(edge) < k:
            edge = math.nextafter(edge, math.inf)
        edges.append(max(edge, request.start))
    return edges


def _taken(rows: Iterable[Any]) -> Iterator[Any]:
    """``rows``, counted against the query's budget every ``_TAKE_EVERY`` rows."""
    held = 0
    for row in rows:
        yield row
        held += 1
        if held == _TAKE_EVERY:
            _take(held)
            held = 0
    _take(held)


def _take(n: int) -> None:
    budget = limits.current()
    if budget is not None:
        budget.take(n)
        budget.check()


def _where(query: EventQuery) -> tuple[str, list[Any]]:
    clauses: list[str] = ["1"]
    args: list[Any] = []
    if query.dataset is not None:
        clauses.append("dataset = ?")
        args.append(query.dataset)
    if query.start is not None:
        clauses.append("ts >= ?")
        args.append(query.start)
    if query.end is not None:
        clauses.append("ts < ?")
        args.append(query.end)
    if query.after is not None:
        # Row-value comparison: the (ts, id) order of search(), so a page never repeats a row.
        clauses.append("(ts, id) < (?, ?)")
        args.extend(query.after)
    for name, value in query.equals:
        sql, more = _equals_sql(name, value)
        clauses.append(sql)
        args.extend(more)
    if query.kql is not None:
        sql, more = kql.to_sql(kql.parse(query.kql), columns=HOT_COLUMNS)
        clauses.append(sql)
        args.extend(more)
    return " AND ".join(clauses), args


def _equals_sql(name: str, value: Any) -> tuple[str, list[Any]]:
    """SQL with the semantics of ``EventQuery.equals``: equal, or equal as ``str()``."""
    path_sql, path_args = kql.field_path_sql(name)
    if value is None:
        return f"(COALESCE(json_type(doc, {path_sql}), 'null') = 'null')", path_args
    raw = value if isinstance(value, (str, int, float)) else str(value)
    text = (
        "(CASE j.type WHEN 'true' THEN 'True' WHEN 'false' THEN 'False' "
        "ELSE CAST(j.value AS TEXT) END)"
    )
    sql = (
        f"EXISTS (SELECT 1 FROM json_each(doc, {path_sql}) AS j "
        "WHERE j.type NOT IN ('null', 'object', 'array') AND typeof(j.key) != 'text' "
        f"AND (j.value = ? OR {text} = ?))"
    )
    return sql, [*path_args, raw, str(value)]


def _python_str(type_: str, value: Any) -> str:
    """``str()`` of a JSON value as Python would give it for the decoded document."""
    if type_ in ("true", "false"):
        return str(type_ == "true")
    if type_ in ("array", "object"):
        return str(json.loads(value))
    return str(value)


def _finite(timestamp: float, what: object) -> float:
    if not math.isfinite(timestamp):
        raise SiemError(f"timestamp {timestamp!r} of {what!r} is not a finite number of seconds")
    return timestamp


def _to_sql(value: float) -> tuple[float | None, bytes | None]:
    """``(value, special)`` columns: a REAL, and the 8 bytes of the values a REAL does not
    keep (NaN, stored as NULL, and -0.0, stored as 0.0)."""
    if math.isnan(value):
        return None, struct.pack("<d", value)
    if value == 0.0 and math.copysign(1.0, value) < 0:
        return value, struct.pack("<d", value)
    return value, None


def _from_sql(value: float | None, special: bytes | None) -> float:
    """The value ``_to_sql`` stored; NULL without bytes (a file from before the column)
    is NaN."""
    if special is not None and len(special) == 8:
        rv: float = struct.unpack("<d", special)[0]
        return rv
    return math.nan if value is None else value


def _dumps(doc: Any) -> str:
    try:
        return json.dumps(
            doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str
        )
    except ValueError:
        # NaN/Infinity are not JSON, and SQLite's JSON functions reject the whole document.
        return json.dumps(_finite_json(doc), separators=(",", ":"), ensure_ascii=False, default=str)


def _finite_json(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v) for v in value]
    return value
