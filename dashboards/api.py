"""The JSON API behind the charts, in the shapes of Prometheus' HTTP API.

``/api/query`` and ``/api/query_range`` answer like Prometheus'
``/api/v1/query`` and ``/api/v1/query_range``: ``{"status": "success", "data":
{"resultType": ..., "result": ...}}``, values as strings, and on a bad
expression or parameter ``{"status": "error", "errorType": "bad_data",
"error": ...}`` with 400.
"""

from __future__ import annotations

import math
import time
from typing import Any

from flask import Blueprint, Response, jsonify, request

from alerting.promql import PromQLError
from dashboards.app import context
from dashboards.events import DEPLOY_DATASET, event_json, firing_alerts
from dashboards.panels import OVERVIEW
from dashboards.params import DashboardError, parse_duration, parse_limit, parse_time
from siem.model import EventQuery
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


@bp.errorhandler(VigilError)
def _unavailable(err: VigilError) -> tuple[Response, int]:
    # Anything else Vigil raises here comes from the store: not the caller's fault.
    return _error("unavailable", str(err), 503)


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
    series = context().engine.range(expr, start, end, step)
    result = [
        {"metric": dict(s.labels), "values": [[t, format_value(v)] for t, v in s.points]}
        for s in series
    ]
    return _success({"resultType": "matrix", "result": result})


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
    found = context().store.search(
        EventQuery(
            dataset=dataset,
            start=parse_time("start", raw_start) if raw_start else None,
            end=parse_time("end", raw_end) if raw_end else None,
            limit=limit,
        )
    )
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
