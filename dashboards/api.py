"""The JSON API behind the charts, in the shapes of Prometheus' HTTP API.

``/api/query`` and ``/api/query_range`` answer like Prometheus'
``/api/v1/query`` and ``/api/v1/query_range``: ``{"status": "success", "data":
{"resultType": ..., "result": ...}}``, values as strings, and on a bad
expression or parameter ``{"status": "error", "errorType": "bad_data",
"error": ...}`` with 400.

Every query runs under a ``siem.limits.QueryBudget`` made from ``query.*``
settings: at most ``query.max_concurrency`` at once (the rest wait, within
their timeout), a sample limit (422 ``execution``), a deadline (503
``timeout``), and cancellation when the client hangs up
(``dashboards.hangup``). Range results are streamed series by series, so the
response is never held twice in memory and other requests keep getting the GIL.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from alerting.am.acks import DEFAULT_ACK_S, AckError, group_id
from alerting.am.dispatch import acknowledge_stored
from alerting.promql import PromQLError
from dashboards.app import context
from dashboards.events import DEPLOY_DATASET, event_json, firing_alerts
from dashboards.hangup import HangupWatcher
from dashboards.panels import OVERVIEW
from dashboards.params import (
    DashboardError,
    parse_duration,
    parse_limit,
    parse_time,
    parse_when,
)
from siem import aggregations as agg
from siem.kql import KqlError
from siem.limits import QueryBudget, QueryLimitError, QueryTimeoutError
from siem.model import Event, EventQuery, Series, get_field
from vigil.auth import audit_event
from vigil.errors import VigilError
from vigil.webauth import current_principal, requires

log = logging.getLogger("vigil.web")

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_POINTS = 11_000
"""Points per series a range query may ask for (Prometheus' limit)."""
MAX_EVENTS = 1000


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it in JSON: ``"0.25"``, ``"NaN"``, ``"+Inf"``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return "-0" if math.copysign(1.0, value) < 0 and not value else str(int(value))
    return repr(value)


def format_time(t: float) -> float | int:
    """A timestamp as Prometheus writes it: seconds to the millisecond, ``1700000000``
    without a fraction when it has none."""
    rounded = round(t, 3)
    return int(rounded) if rounded.is_integer() else rounded


def success(data: Any, warnings: Sequence[str] = ()) -> Response:
    if warnings:
        return jsonify(status="success", data=data, warnings=list(warnings))
    return jsonify(status="success", data=data)


def _error(error_type: str, message: str, status: int) -> tuple[Response, int]:
    return jsonify(status="error", errorType=error_type, error=message), status


def _bad_data(err: VigilError) -> tuple[Response, int]:
    return _error("bad_data", str(err), 400)


def _bad_kql(err: KqlError) -> tuple[Response, int]:
    # The column lets a query bar put the caret where the query went wrong.
    return (
        jsonify(status="error", errorType="bad_data", error=str(err), column=err.column),
        400,
    )


LIMIT_STATUS = {"execution": 422, "timeout": 503, "canceled": 499}
"""Prometheus' status per error type of a query over its limits (499: the client went away)."""


def _limited(err: QueryLimitError) -> tuple[Response, int]:
    return _error(err.kind, str(err), LIMIT_STATUS.get(err.kind, 503))


def _unavailable(err: VigilError) -> tuple[Response, int]:
    # Anything else Vigil raises here comes from the store: not the caller's fault.
    return _error("unavailable", str(err), 503)


def install_errors(blueprint: Blueprint) -> None:
    """Answer ``blueprint``'s errors in Prometheus' envelope: a bad parameter or
    expression 400 ``bad_data``, a query over its limits 422/503/499, the store 503."""
    for kind in (DashboardError, PromQLError, agg.AggregationError):
        blueprint.register_error_handler(kind, _bad_data)
    blueprint.register_error_handler(KqlError, _bad_kql)
    blueprint.register_error_handler(QueryLimitError, _limited)
    blueprint.register_error_handler(VigilError, _unavailable)


install_errors(bp)


_GATES_LOCK = threading.Lock()


def _gate(app: Flask, size: int) -> threading.BoundedSemaphore:
    """The app's semaphore bounding concurrent queries (made on first use)."""
    key = "vigil.query_gate"
    with _GATES_LOCK:
        gate = app.extensions.get(key)
        if gate is None:
            gate = app.extensions[key] = threading.BoundedSemaphore(max(size, 1))
    rv: threading.BoundedSemaphore = gate
    return rv


@contextmanager
def limited(timeout_s: float | None = None) -> Iterator[QueryBudget]:
    """Run the block as one query: wait for a slot, then under a budget that
    is cancelled when the client hangs up. The wait counts against the timeout:
    ``query.timeout_s``, or ``timeout_s`` when that is shorter (a request's own)."""
    settings = context().settings.query
    timeout = settings.timeout_s
    if timeout_s is not None and timeout_s > 0 and (timeout <= 0 or timeout_s < timeout):
        timeout = timeout_s
    budget = QueryBudget(settings.max_samples, timeout)
    gate = _gate(current_app, settings.max_concurrency)
    if not gate.acquire(timeout=timeout if timeout > 0 else None):
        raise QueryTimeoutError("query timed out in query queue")
    watcher = HangupWatcher(request.environ.get("werkzeug.socket"), budget.cancel)
    try:
        with budget.active():
            yield budget
    finally:
        watcher.stop()
        gate.release()


def _expr() -> str:
    expr = request.args.get("expr") or request.args.get("query") or ""
    if not expr.strip():
        raise DashboardError('invalid parameter "expr": an expression is required')
    return expr


def _required(name: str) -> str:
    raw = request.args.get(name)
    if raw is None or raw == "":
        raise DashboardError(f'invalid parameter "{name}": required')
    return raw


@bp.get("/query")
@requires("viewer")
def query() -> Response:
    """``expr`` evaluated at ``time`` (default now): a vector or a scalar."""
    raw_time = request.args.get("time")
    at = parse_time("time", raw_time) if raw_time else time.time()
    return instant_query(_expr(), at)


@bp.get("/query_range")
@requires("viewer")
def query_range() -> Response:
    """``expr`` evaluated every ``step`` from ``start`` to ``end``: a matrix."""
    expr = _expr()
    start = parse_time("start", _required("start"))
    end = parse_time("end", _required("end"))
    step = parse_duration("step", _required("step"))
    return range_query(expr, start, end, step)


RESULTS_TRUNCATED = "results truncated due to limit"
"""Prometheus' warning when ``limit`` cut a result."""


def instant_query(
    expr: str, at: float, *, timeout_s: float | None = None, limit: int = 0
) -> Response:
    """The answer of Prometheus' ``/api/v1/query`` for ``expr`` at ``at``, at most
    ``limit`` series (0: all) under ``limited(timeout_s)``."""
    with limited(timeout_s):
        rv = context().engine.instant(expr, at)
    data, warnings = instant_data(rv, at, limit)
    return success(data, warnings)


def instant_data(
    rv: Sequence[Any] | float | str, at: float, limit: int = 0
) -> tuple[dict[str, Any], list[str]]:
    """An instant query's result in Prometheus' shapes: a scalar or string as
    ``[time, "value"]``, samples (``labels``, ``value``) as a vector, ``Series``
    (an instant query of a range vector) as a matrix. Returns (data, warnings)."""
    when = format_time(at)
    if isinstance(rv, str):
        return {"resultType": "string", "result": [when, rv]}, []
    if isinstance(rv, float | int):
        return {"resultType": "scalar", "result": [when, format_value(float(rv))]}, []
    items, warnings = _truncated(list(rv), limit)
    if items and isinstance(items[0], Series):
        return {"resultType": "matrix", "result": [series_json(s) for s in items]}, warnings
    result = [{"metric": dict(s.labels), "value": [when, format_value(s.value)]} for s in items]
    return {"resultType": "vector", "result": result}, warnings


def _truncated(items: list[Any], limit: int) -> tuple[list[Any], list[str]]:
    if limit > 0 and len(items) > limit:
        return items[:limit], [RESULTS_TRUNCATED]
    return items, []


def series_json(series: Series) -> dict[str, Any]:
    """One series of a matrix: ``{"metric": {...}, "values": [[time, "value"], ...]}``."""
    values = [[format_time(t), format_value(v)] for t, v in series.points]
    return {"metric": dict(series.labels), "values": values}


def range_query(
    expr: str,
    start: float,
    end: float,
    step: float,
    *,
    timeout_s: float | None = None,
    limit: int = 0,
) -> Response:
    """The answer of Prometheus' ``/api/v1/query_range``: checks the range and the
    resolution as Prometheus does, then streams the matrix series by series."""
    if end < start:
        raise DashboardError('invalid parameter "end": end timestamp must not be before start time')
    if step <= 0:
        raise DashboardError(
            'invalid parameter "step": zero or negative query resolution step widths are not '
            "accepted. Try a positive integer"
        )
    if (end - start) / step > MAX_POINTS:
        raise DashboardError(
            f"exceeded maximum resolution of {MAX_POINTS:,} points per timeseries. "
            "Try decreasing the query resolution (?step=XX)"
        )
    with limited(timeout_s):
        series = context().engine.range(expr, start, end, step)
    series, warnings = _truncated(series, limit)
    return Response(_matrix_json(series, warnings), mimetype="application/json")


def _matrix_json(series: list[Series], warnings: list[str]) -> Iterator[str]:
    """``{"status": "success", "data": {"resultType": "matrix", ...}}`` one series at a time."""
    yield '{"status":"success","data":{"resultType":"matrix","result":['
    for i, s in enumerate(series):
        yield ("," if i else "") + json.dumps(series_json(s), separators=(",", ":"))
    yield "]}"
    if warnings:
        yield ',"warnings":' + json.dumps(warnings)
    yield "}"


@bp.get("/alerts")
@requires("viewer")
def alerts() -> Response:
    """Alerts whose latest ``vigil.alert`` event says firing."""
    return success({"alerts": [a.to_json() for a in firing_alerts(context().store)]})


@bp.post("/alerts/groups/<name>/ack")
@requires("operator")
def ack_group(name: str) -> Response:
    """Acknowledge an alert group (``for``: a duration, default 4h) for the web UI; the
    running ``vigil alert`` sees it on its next pass. A ``vigil.audit`` event records it."""
    principal = current_principal()
    actor = principal.name if principal else "anonymous"
    raw = request.values.get("for", "")
    for_s = parse_duration("for", raw) if raw else DEFAULT_ACK_S
    db = Path(context().settings.data_dir) / "alerts.db"
    try:
        ack = acknowledge_stored(db, name[:200], actor, for_s, time.time())
    except AckError as exc:
        raise DashboardError(str(exc)) from None
    event = audit_event(
        "alert-ack",
        actor=actor,
        category="configuration",
        source_ip=request.remote_addr,
        message=f"{actor} acknowledged {ack.group_key}",
        labels={"group": group_id(ack.group_key), "via": "web"},
    )
    try:
        context().store.write(events=[event])
    except VigilError as exc:
        context().metrics.audit_failures.inc()
        log.warning("could not record the alert-ack audit event: %s", exc)
    return success({"group": ack.group_key, "by": ack.by, "at": ack.at, "endsAt": ack.ends_at})


MAX_FIELDS = 50
MAX_TERMS_SIZE = 500
DEFAULT_RANGE_S = 900.0
"""``/api/events/aggregate`` without ``start``: the last 15 minutes, Discover's default."""


def _event_query(limit: int, *, default_range: bool = False) -> EventQuery:
    """The query of ``/api/events`` and ``/api/events/aggregate`` from the request.

    ``query`` is KQL (a malformed one raises ``KqlError``: 400 with its column);
    ``start``/``end`` are absolute (Unix seconds, RFC 3339) or relative (``now-15m``).
    """
    now = time.time()
    raw_start, raw_end = request.args.get("start"), request.args.get("end")
    end = parse_when("end", raw_end, now) if raw_end else None
    start = parse_when("start", raw_start, now) if raw_start else None
    if default_range:
        end = now if end is None else end
        start = end - DEFAULT_RANGE_S if start is None else start
    if start is not None and end is not None and end <= start:
        raise DashboardError('invalid parameter "end": must be after start')
    text = request.args.get("query", "")
    return EventQuery(
        dataset=request.args.get("dataset") or None,
        start=start,
        end=end,
        limit=limit,
        kql=text if text.strip() else None,
        after=_cursor(request.args.get("after")),
    )


def _cursor(raw: str | None) -> tuple[float, str] | None:
    """A page cursor as ``/api/events`` hands it out: ``<timestamp>:<id>``."""
    if not raw:
        return None
    ts, sep, id_ = raw.partition(":")
    try:
        value = float(ts)
    except ValueError:
        value = math.nan
    if not sep or not id_ or not math.isfinite(value):
        raise DashboardError(f'invalid parameter "after": "{raw}" is not a page cursor')
    return value, id_


def _fields() -> list[str] | None:
    raw = request.args.get("fields")
    if not raw:
        return None
    names = [name.strip() for name in raw.split(",") if name.strip()]
    if not names or len(names) > MAX_FIELDS:
        raise DashboardError(f'invalid parameter "fields": give 1 to {MAX_FIELDS} field names')
    return names


@bp.get("/events")
@requires("viewer")
def events() -> Response:
    """Matching events, newest first: KQL ``query``, ``start``/``end``, ``dataset``,
    ``limit``, ``fields`` (only those, as ``{"name": value}``) and ``after`` (the
    ``next`` cursor of the previous page: stable (timestamp, id) order)."""
    limit = parse_limit(request.args.get("limit"), default=50, maximum=MAX_EVENTS)
    query = _event_query(limit)
    fields = _fields()
    with limited():
        found = context().store.search(query)
    if fields is None:
        rows = [event_json(e) for e in found]
    else:
        rows = [
            {
                "id": e.id,
                "timestamp": e.timestamp,
                "dataset": e.dataset,
                "fields": {name: get_field(e.doc, name) for name in fields},
            }
            for e in found
        ]
    last = found[-1] if len(found) == limit else None
    cursor = f"{last.timestamp!r}:{last.id}" if last is not None else None
    return success({"events": rows, "next": cursor})


@bp.get("/events/aggregate")
@requires("viewer")
def events_aggregate() -> Response:
    """For the same ``query``/``start``/``end``/``dataset`` as ``/api/events`` (default
    range: the last 15 minutes): the total, a date histogram (``interval``, or one
    giving at most 100 buckets) and, with ``terms=field``, its ``size`` top values."""
    query = _event_query(MAX_EVENTS, default_range=True)
    assert query.start is not None and query.end is not None
    raw_interval = request.args.get("interval")
    interval = (
        parse_duration("interval", raw_interval)
        if raw_interval
        else agg.auto_interval(query.end - query.start)
    )
    histogram_request = agg.DateHistogram(interval, query.start, query.end)
    terms_field = request.args.get("terms") or None
    size = 10
    if request.args.get("size"):
        try:
            size = int(request.args["size"])
        except ValueError:
            raise DashboardError('invalid parameter "size": not an integer') from None
        if not 1 <= size <= MAX_TERMS_SIZE:
            raise DashboardError(
                f'invalid parameter "size": must be between 1 and {MAX_TERMS_SIZE}'
            )
    terms_request = agg.Terms(terms_field, size) if terms_field else None
    store = context().store
    with limited():
        total = store.aggregate(query, agg.Count())
        histogram = store.aggregate(query, histogram_request)
        terms = store.aggregate(query, terms_request) if terms_request else None
    assert isinstance(total, agg.CountResult) and isinstance(histogram, agg.HistogramResult)
    data: dict[str, Any] = {
        "total": total.count,
        "histogram": {
            "interval": histogram.interval_s,
            "buckets": [[start, n] for start, n in histogram.buckets],
        },
    }
    if isinstance(terms, agg.TermsResult):
        data["terms"] = {
            "field": terms_field,
            "buckets": [{"value": value, "count": n} for value, n in terms.buckets],
            "other": terms.other,
            "missing": terms.missing,
        }
    return success(data)


MAX_EXPORT = 10_000
"""Events one export may hold: a bigger result is cut there (and says so in a header)."""
DEFAULT_CSV_FIELDS = ("@timestamp", "event.dataset", "message")


def _csv_cell(value: Any) -> str:
    """A field's value in a CSV cell: strings as they are, the rest as JSON."""
    if value is None:
        return ""
    if not isinstance(value, str):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    # A text starting = + - @ would make a spreadsheet evaluate the cell (CSV injection).
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


@bp.get("/events/export")
@requires("viewer")
def events_export() -> Response:
    """The matches of ``query``/``start``/``end``/``dataset`` as a download, newest
    first: ``format=ndjson`` (one ``/api/events`` event per line) or ``format=csv``
    (``fields``, default time, dataset and message). At most ``limit`` events
    (default and maximum ``MAX_EXPORT``); ``X-Vigil-Truncated: true`` when there were more."""
    fmt = request.args.get("format", "ndjson")
    if fmt not in ("ndjson", "csv"):
        raise DashboardError('invalid parameter "format": must be ndjson or csv')
    bound = parse_limit(request.args.get("limit"), default=MAX_EXPORT, maximum=MAX_EXPORT)
    fields = _fields()
    query = _event_query(MAX_EVENTS)
    found: list[Event] = []
    store = context().store
    # Read every page before answering, under one budget: a store error or a
    # limit still answers a JSON error, never half a file. One event past the
    # bound tells whether the export was cut.
    with limited():
        while True:
            want = min(MAX_EVENTS, bound + 1 - len(found))
            page = store.search(dataclasses.replace(query, limit=want))
            found.extend(page)
            if len(page) < want or len(found) > bound:
                break
            query = dataclasses.replace(query, after=(page[-1].timestamp, page[-1].id))
    truncated = len(found) > bound
    del found[bound:]
    if fmt == "ndjson":
        body: Iterator[str] = (json.dumps(event_json(e), ensure_ascii=False) + "\n" for e in found)
        mimetype = "application/x-ndjson"
    else:
        body = _csv_rows(found, fields or list(DEFAULT_CSV_FIELDS))
        mimetype = "text/csv"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    headers = {
        "Content-Disposition": f'attachment; filename="vigil-events-{stamp}.{fmt}"',
        "X-Vigil-Truncated": "true" if truncated else "false",
    }
    return Response(body, mimetype=mimetype, headers=headers)


def _csv_rows(found: list[Event], fields: list[str]) -> Iterator[str]:
    """A header of the field names, then a row per event, a line at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in ([*fields], *([_csv_cell(get_field(e.doc, f)) for f in fields] for e in found)):
        writer.writerow(row)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


@bp.get("/overview")
@requires("viewer")
def overview() -> Response:
    """The overview page's panels, and where its deploy markers come from."""
    return success(
        {
            "title": "Shop overview",
            "panels": [p.to_json() for p in OVERVIEW],
            "markers": {
                "dataset": DEPLOY_DATASET,
                "field": "labels.release_after",
                "prefix": "deploy ",
            },
            "refresh_s": 5,
            "ranges": ["15m", "1h", "6h"],
        }
    )
