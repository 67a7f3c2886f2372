"""The embedded Store: one SQLite file in WAL mode, one writer process, many readers.

Events keep their ECS document as JSON text and are filtered with SQLite's
JSON functions (``siem.kql`` compiles KQL to SQL); samples live in a
``series`` table (one row per label set) and a ``samples`` table keyed by
(series, timestamp), so ``INSERT OR IGNORE`` makes every write idempotent.
Connections come from a small pool, so any thread may call any method.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from siem import SiemError, kql, limits
from siem import aggregations as agg
from siem.model import (
    METRIC_NAME,
    Event,
    EventQuery,
    Labels,
    Matcher,
    Sample,
    Series,
    WriteResult,
)

BUSY_TIMEOUT_S = 30.0
WRITE_CACHE_KIB = 65536
MAX_IDLE_CONNECTIONS = 4
_IN_CHUNK = 500  # series ids per ``IN (...)``; well below SQLite's variable limit
_PROGRESS_STEPS = 10_000  # SQLite VM steps between deadline/cancellation checks
_TAKE_EVERY = 4096  # rows read between sample-budget checks

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
        PRIMARY KEY (series_id, ts)) WITHOUT ROWID""",
)


_INSERT_EVENT = "INSERT OR IGNORE INTO events (id, ts, dataset, doc) VALUES (?, ?, ?, ?)"


class SqliteStore:
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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SiemError(f"{self.path}: cannot create the store's directory: {exc}") from exc
        with self._connection() as conn, _transaction(conn, "IMMEDIATE"):
            for statement in _SCHEMA:
                conn.execute(statement)

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
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
                        "INSERT OR IGNORE INTO samples (series_id, ts, value) VALUES (?, ?, ?)",
                        [(ids[s.labels], s.timestamp, _to_sql_value(s.value)) for s in sample_list],
                    ).rowcount
        with self._lock:
            self._series_ids.update(new_ids)
        return WriteResult(stored, len(event_rows) - stored, s_stored, len(sample_list) - s_stored)

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
        sql = (
            f"SELECT id, ts, dataset, doc FROM events WHERE {where} "
            "ORDER BY ts DESC, id DESC LIMIT ?"
        )
        with self._connection() as conn:
            rows = conn.execute(sql, [*args, max(query.limit, 0)]).fetchall()
        _take(len(rows))
        return [Event(id_, ts, dataset, json.loads(doc)) for id_, ts, dataset, doc in rows]

    def count_by(self, query: EventQuery, field_name: str) -> dict[str, int]:
        """How many matching events per value of ``field_name``, as ``str()`` of the value."""
        where, args = _where(query)
        counts, _ = self._value_counts(where, args, field_name)
        return counts

    def _value_counts(
        self, where: str, args: list[Any], field_name: str
    ) -> tuple[dict[str, int], int]:
        """Events per ``str()`` of the value, and events without it, in one scan."""
        path_sql, path_args = kql.field_path_sql(field_name)
        sql = (
            f"SELECT json_type(doc, {path_sql}) AS t, json_extract(doc, {path_sql}) AS v, "
            f"COUNT(*) FROM events WHERE {where} GROUP BY t, v"
        )
        counts: Counter[str] = Counter()
        missing = 0
        with self._connection() as conn:
            held = 0  # one group per row: a runaway group_by stops at the budget
            for type_, value, count in conn.execute(sql, [*path_args, *path_args, *args]):
                if type_ is not None and type_ != "null":
                    counts[_python_str(type_, value)] += count
                else:
                    missing += count
                held += 1
                if held == _TAKE_EVERY:
                    _take(held)
                    held = 0
            _take(held)
        return dict(counts), missing

    def aggregate(self, query: EventQuery, request: agg.Aggregation) -> agg.AggregationResult:
        """``request`` computed in SQL (counts, buckets, ordered numbers) over the matches."""
        where, args = _where(query)
        if isinstance(request, agg.Count):
            with self._connection() as conn:
                (n,) = conn.execute(f"SELECT COUNT(*) FROM events WHERE {where}", args).fetchone()
            return agg.CountResult(n)
        if isinstance(request, agg.DateHistogram):
            first = request.first_bucket()
            # Same arithmetic as MemoryStore: int((ts - first) / interval), never negative.
            sql = (
                f"SELECT CAST((ts - ?) / ? AS INTEGER) AS k, COUNT(*) FROM events "
                f"WHERE {where} AND ts >= ? AND ts < ? GROUP BY k"
            )
            with self._connection() as conn:
                rows = conn.execute(
                    sql, [first, request.interval_s, *args, request.start, request.end]
                ).fetchall()
            _take(len(rows))
            return agg.histogram_result(request, dict(rows))
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
        counts, missing = self._value_counts(where, args, request.field)
        if isinstance(request, agg.Cardinality):
            return agg.CardinalityResult(len(counts))
        return agg.terms_result(counts, request.size, sum(counts.values()) + missing)

    def select(self, matchers: Sequence[Matcher], start: float, end: float) -> list[Series]:
        """Series matching all ``matchers`` with their points in [start, end], sorted by labels."""
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
                labels: Labels = tuple((k, v) for k, v in json.loads(key))
                as_dict = dict(labels)
                if all(m.matches(as_dict) for m in matchers):
                    wanted[series_id] = labels
            points: dict[int, list[tuple[float, float]]] = {}
            ids = list(wanted)
            loaded = 0
            for i in range(0, len(ids), _IN_CHUNK):
                chunk = ids[i : i + _IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                for series_id, ts, value in conn.execute(
                    f"SELECT series_id, ts, value FROM samples WHERE series_id IN ({marks}) "
                    "AND ts >= ? AND ts <= ? ORDER BY series_id, ts",
                    [*chunk, start, end],
                ):
                    points.setdefault(series_id, []).append((ts, _from_sql_value(value)))
                    loaded += 1
                    if loaded == _TAKE_EVERY:
                        # Counted while streaming: too big a query stops before it holds all.
                        _take(loaded)
                        loaded = 0
            _take(loaded)
        rv = [Series(wanted[sid], tuple(pts)) for sid, pts in points.items()]
        rv.sort(key=lambda s: s.labels)
        return rv

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
        sql, more = kql.to_sql(kql.parse(query.kql))
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


def _to_sql_value(value: float) -> float | None:
    # SQLite stores NaN as NULL; read back, NULL becomes NaN again (Prometheus has NaN values).
    return None if math.isnan(value) else value


def _from_sql_value(value: float | None) -> float:
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
