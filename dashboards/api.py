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

import json
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from alerting.promql import PromQLError
from dashboards.app import context
from dashboards.events import DEPLOY_DATASET, event_json, firing_alerts
from dashboards.hangup import HangupWatcher
from dashboards.panels import OVERVIEW
from dashboards.params import DashboardError, parse_duration, parse_limit, parse_time
from siem.limits import QueryBudget, QueryLimitError, QueryTimeoutError, TooManySamplesError
from siem.model import EventQuery, Series
from vigil.errors import VigilError
from vigil.webauth import requires

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
        return str(int(value))
    return repr(value)


def _success(data: dict[str, Any]) -> Response:
    return jsonify(status="success", data=data)


def _error(error_type: str, message: str, status: int) -> tuple[Response, int]:
    return jsonify(status="error", errorType=error_type, error=message), status


@bp.errorhandler(DashboardError)
@bp.errorhandler(PromQLError)
def _bad_data(err: VigilError) -> tuple[Response, int]:
    return _error("bad_data", str(err), 400)


@bp.errorhandler(QueryLimitError)
def _limited(err: QueryLimitError) -> tuple[Response, int]:
    # Prometheus: too many samples is 422 "execution", a timeout 503 "timeout".
    status = 422 if isinstance(err, TooManySamplesError) else 503
    return _error(err.kind, str(err), status)


@bp.errorhandler(VigilError)
def _unavailable(err: VigilError) -> tuple[Response, int]:
    # Anything else Vigil raises here comes from the store: not the caller's fault.
    return _error("unavailable", str(err), 503)


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
def limited() -> Iterator[QueryBudget]:
    """Run the block as one query: wait for a slot, then under a budget that
    is cancelled when the client hangs up. The wait counts against the timeout."""
    settings = context().settings.query
    budget = QueryBudget(settings.max_samples, settings.timeout_s)
    gate = _gate(current_app, settings.max_concurrency)
    if not gate.acquire(timeout=settings.timeout_s if settings.timeout_s > 0 else None):
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
    expr = _expr()
    raw_time = request.args.get("time")
    at = parse_time("time", raw_time) if raw_time else time.time()
    with limited():
        rv = context().engine.instant(expr, at)
    if isinstance(rv, float | int):
        return _success({"resultType": "scalar", "result": [at, format_value(float(rv))]})
    result = [
        {"metric": dict(sample.labels), "value": [at, format_value(sample.value)]} for sample in rv
    ]
    return _success({"resultType": "vector", "result": result})


@bp.get("/query_range")
@requires("viewer")
def query_range() -> Response:
    """``expr`` evaluated every ``step`` from ``start`` to ``end``: a matrix."""
    expr = _expr()
    start = parse_time("start", _required("start"))
    end = parse_time("end", _required("end"))
    step = parse_duration("step", _required("step"))
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
    with limited():
        series = context().engine.range(expr, start, end, step)
    return Response(_matrix_json(series), mimetype="application/json")


def _matrix_json(series: list[Series]) -> Iterator[str]:
    """``{"status": "success", "data": {"resultType": "matrix", ...}}`` one series at a time."""
    yield '{"status":"success","data":{"resultType":"matrix","result":['
    for i, s in enumerate(series):
        values = [[t, format_value(v)] for t, v in s.points]
        item = json.dumps({"metric": dict(s.labels), "values": values}, separators=(",", ":"))
        yield ("," if i else "") + item
    yield "]}}"


@bp.get("/alerts")
@requires("viewer")
def alerts() -> Response:
    """Alerts whose latest ``vigil.alert`` event says firing."""
    return _success({"alerts": [a.to_json() for a in firing_alerts(context().store)]})


@bp.get("/events")
@requires("viewer")
def events() -> Response:
    """The newest events, optionally of one ``dataset`` and within [``start``, ``end``)."""
    dataset = request.args.get("dataset") or None
    limit = parse_limit(request.args.get("limit"), default=50, maximum=MAX_EVENTS)
    raw_start, raw_end = request.args.get("start"), request.args.get("end")
    query = EventQuery(
        dataset=dataset,
        start=parse_time("start", raw_start) if raw_start else None,
        end=parse_time("end", raw_end) if raw_end else None,
        limit=limit,
    )
    with limited():
        found = context().store.search(query)
    return _success({"events": [event_json(e) for e in found]})


@bp.get("/overview")
@requires("viewer")
def overview() -> Response:
    """The overview page's panels, and where its deploy markers come from."""
    return _success(
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
