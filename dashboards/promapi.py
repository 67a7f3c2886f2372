"""Prometheus' HTTP API under ``/api/v1/``, so Grafana's Prometheus data source and
``promtool query`` work against Vigil unchanged.

Queries (``query``, ``query_range``) take their parameters from the query
string or a form-encoded POST body, as Prometheus does, and run through the
same machinery as ``/api/query``: a ``siem.limits.QueryBudget`` per request
(``query.*`` settings, or a shorter ``timeout`` parameter), cancellation when
the client hangs up, 400 ``bad_data`` / 422 ``execution`` / 503 ``timeout``
answers. Series and label look-ups ask the store's series index (``Store.series``,
``label_names``, ``label_values``), never the samples, under the same budget;
metadata comes from what the collector scraped (``Store.metadata``). Rules
and alerts come from the rule files (``alert.rules``) and the ``vigil.alert``
events the alert process writes;
targets from the scrape configuration and the ``up`` samples the collector
stores. Every route is for the ``viewer`` role, like the rest of the query API.
"""

from __future__ import annotations

import datetime as dt
import math
import platform
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from typing import Any

import promql_parser as pp
from flask import Blueprint, Flask, Response, current_app, request

from alerting.promql import Matrix
from alerting.promql_functions import PromQLError
from alerting.promql_syntax import check_shape, locate_parse_error, parse
from alerting.rules import Rule, RuleError, RuleGroup
from collectors.prometheus import all_targets
from dashboards.api import (
    format_value,
    install_errors,
    instant_data,
    limited,
    range_query,
    success,
)
from dashboards.app import context
from dashboards.events import FiringAlert, active_alerts
from dashboards.params import DashboardError, parse_duration, parse_time
from siem.model import METRIC_NAME, Matcher, MatcherError, Series, is_stale
from vigil.errors import VigilError
from vigil.webauth import requires

bp = Blueprint("promapi", __name__, url_prefix="/api/v1")
install_errors(bp)

QUERY_METHODS = ["GET", "POST"]
MAX_MATCHERS = 100
"""``match[]`` selectors one look-up may give."""
MAX_LOOKUP_RESULTS = 100_000
"""Series, names or values one look-up answers at most (``limit`` lowers it)."""
TARGET_WINDOW_S = 600.0
"""A target whose newest ``up`` sample is older than this has health ``unknown``."""
ZERO_TIME = "0001-01-01T00:00:00Z"
"""How Prometheus writes a time that never happened (a rule never evaluated)."""
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MATCH_OPS: dict[str, Any] = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}


def _param(name: str) -> str | None:
    """A parameter from the query string or the form body (Go's ``FormValue``)."""
    return request.values.get(name)


def _time(name: str, default: float) -> float:
    """A time parameter, to the millisecond as Prometheus keeps it."""
    raw = _param(name)
    return round(parse_time(name, raw) if raw else default, 3)


def _timeout() -> float | None:
    raw = _param("timeout")
    return parse_duration("timeout", raw) if raw else None


def _limit() -> int:
    """``limit``: 0 (none) or a positive count, as Prometheus reads it."""
    raw = _param("limit")
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise DashboardError(f'invalid parameter "limit": cannot parse "{raw}" to an int') from None
    if value < 0:
        raise DashboardError('invalid parameter "limit": limit must be non-negative')
    return value


def _query() -> str:
    expr = _param("query") or ""
    if not expr.strip():
        raise DashboardError('invalid parameter "query": an expression is required')
    return expr


@bp.route("/query", methods=QUERY_METHODS)
@requires("viewer")
def query() -> Response:
    """``query`` at ``time`` (default now), as Prometheus answers it (``Engine.query``): a
    vector, a scalar, a string literal as ``string``, a range vector (``up[5m]``, a
    subquery) as a ``matrix`` of its raw points — empty or not."""
    expr = _query()
    at = _time("time", time.time())
    timeout_s, limit = _timeout(), _limit()
    with limited(timeout_s):
        rv = context().engine.query(expr, at)
    if isinstance(rv, Matrix):
        data, warnings = instant_data(list(rv.series), at, limit)
        data["resultType"] = "matrix"  # also when no series is in the window
        return success(data, warnings)
    data, warnings = instant_data(rv, at, limit)
    return success(data, warnings)


@bp.route("/query_range", methods=QUERY_METHODS)
@requires("viewer")
def query_range() -> Response:
    """``query`` every ``step`` from ``start`` to ``end``: a matrix."""
    expr = _query()
    start = round(parse_time("start", _required("start", "timestamp")), 3)
    end = round(parse_time("end", _required("end", "timestamp")), 3)
    step = parse_duration("step", _required("step", "duration"))
    return range_query(expr, start, end, step, timeout_s=_timeout(), limit=_limit())


def _required(name: str, what: str) -> str:
    raw = _param(name)
    if not raw:
        raise DashboardError(f'invalid parameter "{name}": cannot parse "" to a valid {what}')
    return raw


# -- series and labels -------------------------------------------------------------------------


def _parsed(name: str, text: str) -> pp.Expr:
    """``text`` parsed (after the length and depth checks), or a ``DashboardError``
    naming parameter ``name`` and where the text went wrong."""
    try:
        check_shape(text)
        return parse(text)
    except PromQLError as exc:
        raise DashboardError(f'invalid parameter "{name}": {exc}') from None
    except ValueError as exc:
        where = locate_parse_error(text, str(exc))
        raise DashboardError(
            f'invalid parameter "{name}": {exc} (at character {where + 1})'
        ) from None


def parse_selector(text: str) -> list[Matcher]:
    """The matchers of a series selector (``up{job="x"}``, ``{__name__=~"a|b"}``), as
    Prometheus' ``match[]`` takes it; ``DashboardError`` when it is anything else."""
    expr = _parsed("match[]", text)
    if not isinstance(expr, pp.VectorSelector):
        raise DashboardError(f'invalid parameter "match[]": {text!r} is not a series selector')
    vs = expr
    if vs.matchers.or_matchers or vs.at is not None or vs.offset is not None:
        raise DashboardError(f'invalid parameter "match[]": {text!r} is not a plain selector')
    try:
        matchers = [
            Matcher(m.name, _MATCH_OPS[str(m.op).rsplit(".", 1)[-1]], m.value)
            for m in vs.matchers.matchers
        ]
    except MatcherError as exc:
        raise DashboardError(f'invalid parameter "match[]": {exc}') from None
    if vs.name is not None:
        matchers.insert(0, Matcher(METRIC_NAME, "=", vs.name))
    if all(m.matches({}) for m in matchers):
        raise DashboardError(
            'invalid parameter "match[]": match[] must contain at least one non-empty matcher'
        )
    return matchers


def _selectors(*, required: bool) -> list[list[Matcher]]:
    """The ``match[]`` selectors; none given (and not ``required``): one matching all."""
    raw = request.values.getlist("match[]")
    if not raw:
        if required:
            raise DashboardError("no match[] parameter provided")
        return [[]]
    if len(raw) > MAX_MATCHERS:
        raise DashboardError(f'invalid parameter "match[]": give at most {MAX_MATCHERS}')
    return [parse_selector(text) for text in raw]


def _lookup_range() -> tuple[float | None, float | None]:
    """``start``/``end`` of a look-up; an absent one is no bound (all retained time),
    as in Prometheus."""
    raw_start, raw_end = _param("start"), _param("end")
    start = round(parse_time("start", raw_start), 3) if raw_start else None
    end = round(parse_time("end", raw_end), 3) if raw_end else None
    return start, end


Finder = Callable[[list[Matcher], float | None, float | None, int], list[Any]]
"""A store look-up: ``(matchers, start, end, limit)`` → sorted items."""


def _looked_up(find: Finder, *, required: bool = False) -> tuple[list[Any], list[str]]:
    """``find`` for each ``match[]`` in ``start``..``end`` from the store's series index
    (never the samples), merged, sorted and cut at ``limit``, with Prometheus' warning
    when cut. Each ``find`` is asked for one more than wanted, to know whether to warn."""
    selectors = _selectors(required=required)
    limit = _limit()
    bound = min(limit, MAX_LOOKUP_RESULTS) if limit else MAX_LOOKUP_RESULTS
    start, end = _lookup_range()
    found: set[Any] = set()
    if start is None or end is None or start <= end:  # end before start: nothing, no error
        with limited(_timeout()):
            for matchers in selectors:
                found.update(find(matchers, start, end, bound + 1))
    items = sorted(found)
    return items[:bound], ["results truncated due to limit"] if len(items) > bound else []


@bp.route("/series", methods=QUERY_METHODS)
@requires("viewer")
def series() -> Response:
    """The label sets of the series matching ``match[]`` (one or more) in ``start``..``end``."""
    items, warnings = _looked_up(context().store.series, required=True)
    return success([dict(labels) for labels in items], warnings)


@bp.route("/labels", methods=QUERY_METHODS)
@requires("viewer")
def labels() -> Response:
    """The label names of the series matching ``match[]`` (default: all), sorted."""
    return success(*_looked_up(context().store.label_names))


@bp.get("/label/<name>/values")
@requires("viewer")
def label_values(name: str) -> Response:
    """The values of label ``name`` on the series matching ``match[]`` (default: all)."""
    if not _LABEL_NAME.fullmatch(name):
        raise DashboardError(f'invalid label name: "{name}"')
    store = context().store
    return success(
        *_looked_up(lambda m, start, end, limit: store.label_values(name, m, start, end, limit))
    )


def _count(name: str) -> int:
    """A count parameter as Prometheus' metadata endpoint reads it: absent is -1 (none)."""
    raw = _param(name)
    if not raw:
        return -1
    try:
        return int(raw)
    except ValueError:
        raise DashboardError(f"{name} must be a number") from None


@bp.get("/metadata")
@requires("viewer")
def metadata_() -> Response:
    """Type, help and unit of the scraped metric families (``# TYPE``/``# HELP``/``# UNIT``,
    the latest scraped of each), as ``{"metric": [{"type", "help", "unit"}]}``.

    ``metric`` picks one family; ``limit`` caps the families (negative: no cap; 0:
    none, as in Prometheus); ``limit_per_metric`` is checked, but Vigil keeps one
    entry per family, so it cuts nothing.
    """
    limit = _count("limit")
    _count("limit_per_metric")
    metric = _param("metric") or None
    if limit == 0:
        return success({})
    bound = min(limit, MAX_LOOKUP_RESULTS) if limit > 0 else MAX_LOOKUP_RESULTS
    with limited(_timeout()):
        found = context().store.metadata(metric, bound)
    return success({m.metric: [{"type": m.type, "help": m.help, "unit": m.unit}] for m in found})


@bp.route("/query_exemplars", methods=QUERY_METHODS)
@requires("viewer")
def query_exemplars() -> Response:
    """Exemplars of ``query``'s series: none, since Vigil stores none (checked like Prometheus)."""
    _parsed("query", _query())
    _lookup_range()
    return success([])


@bp.route("/format_query", methods=QUERY_METHODS)
@requires("viewer")
def format_query() -> Response:
    """``query`` pretty-printed as promql_parser writes it (Prometheus' ``Pretty``)."""
    return success(_parsed("query", _query()).prettify())


# -- rules, alerts, targets, status -----------------------------------------------------------


def _rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, tz=dt.UTC).isoformat().replace("+00:00", "Z")


def _alert_json(alert: FiringAlert) -> dict[str, Any]:
    """An alert as Prometheus' ``/api/v1/alerts`` and ``/api/v1/rules`` show it."""
    return {
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "state": alert.state,
        "activeAt": _rfc3339(alert.active_at if alert.active_at is not None else alert.since),
        "value": _value_text(alert.value),
    }


def _value_text(raw: str) -> str:
    """An alert's value as Prometheus writes it (``1e+00``), from what the event holds."""
    try:
        value = float(raw)
    except ValueError:
        return raw
    if not math.isfinite(value):
        return format_value(value)
    mantissa, _, exponent = f"{value:e}".partition("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{exponent}"


@bp.get("/alerts")
@requires("viewer")
def alerts() -> Response:
    """Pending and firing alerts, from the newest ``vigil.alert`` event of each."""
    with limited():
        found = active_alerts(context().store)
    return success({"alerts": [_alert_json(a) for a in found]})


class _RuleCache:
    """The rule files of ``alert.rules`` and the rules generated from the SLO files of
    ``alert.slos``, read again only when one changes."""

    def __init__(self, patterns: Sequence[str], slos: Sequence[str], interval_s: float) -> None:
        from alerting.slo import SloRuleSource

        self._source = SloRuleSource(patterns, slos, default_interval=interval_s)
        self._lock = threading.Lock()
        self._groups: list[RuleGroup] = []
        self._error = ""
        self._loaded = False

    def groups(self) -> tuple[list[RuleGroup], str]:
        """The last good groups, and the error of the files as they are now ("" if none)."""
        with self._lock:
            if not self._loaded or self._source.changed():
                self._loaded = True
                try:
                    self._groups, self._error = self._source.load(), ""
                except RuleError as exc:
                    self._error = str(exc)
                except (OSError, VigilError) as exc:
                    self._error = f"cannot read the rule files: {exc}"
            return self._groups, self._error


_RULES_LOCK = threading.Lock()


def _rule_cache(app: Flask) -> _RuleCache:
    key = "vigil.promapi.rules"
    with _RULES_LOCK:
        cache = app.extensions.get(key)
        if cache is None:
            settings = context().settings.alert
            cache = app.extensions[key] = _RuleCache(
                settings.rules, settings.slos, settings.interval_s
            )
    rv: _RuleCache = cache
    return rv


def _rule_query(rule: Rule) -> str:
    if rule.expr is not None:
        return rule.expr
    from alerting.state import _event_expr

    return _event_expr(rule)


def _rule_json(rule: Rule, alerts: list[FiringAlert], error: str) -> dict[str, Any]:
    """A rule as Prometheus' ``/api/v1/rules`` shows it: an alerting rule with its
    state and alerts, or a recording rule (``type: recording``)."""
    common = {
        "name": rule.name,
        "query": _rule_query(rule),
        "labels": dict(rule.labels),
        "health": "err" if error else "unknown",
        "lastError": error,
        "evaluationTime": 0,
        "lastEvaluation": ZERO_TIME,
    }
    if rule.kind == "record":
        return {**common, "type": "recording"}
    states = {a.state for a in alerts}
    state = "firing" if "firing" in states else "pending" if states else "inactive"
    return {
        "state": state,
        **common,
        "duration": rule.for_s,
        "keepFiringFor": rule.keep_firing_for_s,
        "annotations": dict(rule.annotations),
        "alerts": [_alert_json(a) for a in alerts],
        "type": "alerting",
    }


@bp.get("/rules")
@requires("viewer")
def rules() -> Response:
    """The groups of the rule files: alerting rules with their current alerts, and
    recording rules (``type: recording``).

    Rule files are read by this process (``alert.rules``); the alerts come from
    the ``vigil.alert`` events. ``health`` is ``unknown`` (the evaluator's
    results are not shared), or ``err`` with the files' error while they do not
    load. ``type=alert`` / ``type=record`` keep only that kind of rule, and a
    group left without rules by a filter is left out, as in Prometheus.
    """
    kind = _param("type") or ""
    if kind not in ("", "alert", "record"):
        raise DashboardError('invalid parameter "type": must be "alert" or "record"')
    wanted_rules = set(request.args.getlist("rule_name[]"))
    wanted_groups = set(request.args.getlist("rule_group[]"))
    wanted_files = set(request.args.getlist("file[]"))
    groups, error = _rule_cache(current_app).groups()
    with limited():
        found = active_alerts(context().store)
    by_name: dict[str, list[FiringAlert]] = {}
    for alert in found:
        by_name.setdefault(alert.labels.get("alertname", ""), []).append(alert)
    rv = []
    for group in groups:
        if (wanted_groups and group.name not in wanted_groups) or (
            wanted_files and group.file not in wanted_files
        ):
            continue
        rules_json = [
            _rule_json(rule, by_name.get(rule.name, []), error)
            for rule in group.rules
            if kind in ("", rule.kind) and (not wanted_rules or rule.name in wanted_rules)
        ]
        if not rules_json and (wanted_rules or kind):
            continue
        rv.append(
            {
                "name": group.name,
                "file": group.file,
                "rules": rules_json,
                "interval": group.interval_s,
                "limit": group.limit,
                "evaluationTime": 0,
                "lastEvaluation": ZERO_TIME,
            }
        )
    return success({"groups": rv})


def _latest(series: Iterable[Series]) -> dict[tuple[str, str], tuple[float, float]]:
    """The newest (time, value) of each (job, instance) among ``series``; a stale
    marker is no value (the series ended there), so it is skipped."""
    rv: dict[tuple[str, str], tuple[float, float]] = {}
    for s in series:
        points = [p for p in s.points if not is_stale(p[1])]
        if not points:
            continue
        labels = dict(s.labels)
        key = (labels.get("job", ""), labels.get("instance", ""))
        point = points[-1]
        if key not in rv or rv[key][0] < point[0]:
            rv[key] = point
    return rv


def _seconds(value: float) -> float:
    """A duration for JSON, which has no NaN or infinity (a sample may hold them)."""
    return value if math.isfinite(value) else 0.0


@bp.get("/targets")
@requires("viewer")
def targets() -> Response:
    """The scrape targets (configured, and any with ``up`` samples of the last
    ``TARGET_WINDOW_S``) and their health from their newest ``up`` sample."""
    state = _param("state") or "any"
    if state not in ("any", "active", "dropped"):
        raise DashboardError('invalid parameter "state": must be any, active or dropped')
    settings = context().settings
    now = time.time()
    store = context().store
    with limited():
        up = _latest(store.select([Matcher(METRIC_NAME, "=", "up")], now - TARGET_WINDOW_S, now))
        took = _latest(
            store.select(
                [Matcher(METRIC_NAME, "=", "scrape_duration_seconds")], now - TARGET_WINDOW_S, now
            )
        )
    urls = {(t.job, t.instance): (t.url, t.timeout_s) for t in all_targets(settings)}
    interval = f"{settings.collect.interval_s:g}s"
    active = []
    for job, instance in sorted(set(urls) | set(up)):
        url, timeout_s = urls.get((job, instance), (f"http://{instance}/metrics", 0.0))
        seen = up.get((job, instance))
        health = "unknown" if seen is None else "up" if seen[1] == 1.0 else "down"
        labels = {"instance": instance, "job": job}
        active.append(
            {
                "discoveredLabels": {"__address__": instance, "job": job},
                "labels": labels,
                "scrapePool": job,
                "scrapeUrl": url,
                "globalUrl": url,
                "lastError": "" if health != "down" else "scrape failed (see the collector's log)",
                "lastScrape": _rfc3339(seen[0]) if seen else ZERO_TIME,
                "lastScrapeDuration": _seconds(took.get((job, instance), (0.0, 0.0))[1]),
                "health": health,
                "scrapeInterval": interval,
                "scrapeTimeout": f"{timeout_s:g}s" if timeout_s else "",
            }
        )
    data: dict[str, Any] = {}
    if state in ("any", "active"):
        data["activeTargets"] = active
    if state in ("any", "dropped"):
        data["droppedTargets"] = []
    return success(data)


def _version() -> str:
    try:
        return metadata.version("vigil")
    except metadata.PackageNotFoundError:
        return "unknown"


@bp.get("/status/buildinfo")
@requires("viewer")
def buildinfo() -> Response:
    """Vigil's version in Prometheus' build-info shape; no ``features``, so Grafana
    treats the data source as Prometheus (not Mimir)."""
    return success(
        {
            "version": _version(),
            "revision": "",
            "branch": "",
            "buildUser": "",
            "buildDate": "",
            "goVersion": f"python{platform.python_version()}",
        }
    )
