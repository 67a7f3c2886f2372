"""The Alerts page's JSON API: alert groups as the alert manager groups them, and silences.

The data comes from ``<data_dir>/alerts.db`` (``alerting.am.board``), not from
``vigil alert``'s API v2, so the page stays right while that process is down or
restarting: what it shows is what the manager last saved, with silenced and
inhibited worked out at read time as Alertmanager's API does. Silences made or
expired here are written to the same file, where the running manager reads
them on its next pass, as ``vigil silence add`` does.

* ``GET /api/alerts/groups?filter=<matchers>``: groups (receiver, group labels,
  alerts with their state, silences, inhibitors, acknowledgement) and each
  group's history by incident (``incidents``: the current one first, each newest
  first); at most ``MAX_GROUPS`` groups, ``MAX_GROUP_ALERTS`` alerts,
  ``MAX_INCIDENTS`` incidents and ``MAX_HISTORY_ROWS`` history rows per incident,
  with the totals so the page says when it cut. ``resolved``: the incidents of
  groups that resolved and went, within the history retention (120 h), the last
  resolved first, with their alerts, duration, who acknowledged and history (at
  most ``MAX_RESOLVED``, filtered as the groups). What is read from ``alerts.db``
  is capped too (``READ_CAPS``: groups, firing first; pending alerts; silences;
  resolved incidents): ``cut`` names each cap that left rows unread;
* ``GET /api/silences``: active, pending and expired silences (at most ``MAX_SILENCES``);
* ``POST /api/silences`` (operator): ``matchers``, ``duration`` or ``endsAt``,
  optional ``startsAt``, ``comment``; the creator is the logged-in user. A bad
  field answers 400 with ``field`` naming it;
* ``DELETE /api/silences/<sid>`` (operator): expire it now.

Each change is a ``vigil.audit`` event (``silence-add``, ``silence-expire``) with the user as actor.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, request

from alerting.am.acks import Ack, Incident
from alerting.am.api import silence_json, silence_order
from alerting.am.board import (
    AlertStatus,
    Caps,
    GroupStatus,
    IncidentHistory,
    matching,
    read_board,
    recently_resolved,
    timelines,
)
from alerting.am.config import AMConfig, AMConfigError, load_config
from alerting.am.matchers import (
    MAX_MATCHER_TEXT,
    MatcherSyntaxError,
    format_matcher,
    parse_matchers,
)
from alerting.am.silences import MAX_COMMENT, Silence, SilenceError, SilenceStore, new_silence
from alerting.state import Alert
from dashboards.api import install_errors, success
from dashboards.app import context
from dashboards.params import DashboardError, parse_duration, parse_time
from siem.model import Matcher
from vigil.auth import audit_event
from vigil.errors import VigilError
from vigil.webauth import current_principal, requires

bp = Blueprint("alerts", __name__, url_prefix="/api")
log = logging.getLogger("vigil.web")
install_errors(bp)

MAX_GROUPS = 100
"""Groups one answer holds (firing ones first); the page says how many more there are."""
READ_CAPS = Caps()
"""What one answer reads from ``alerts.db`` at most (groups, pending alerts, silences)."""
MAX_GROUP_ALERTS = 50
MAX_HISTORY_ROWS = 20
"""History rows per incident."""
MAX_INCIDENTS = 5
"""Incidents per group (the current one and the latest earlier ones), with the total."""
MAX_RESOLVED = 50
"""Recently resolved incidents one answer holds (the last resolved first)."""
MAX_SILENCES = 200
MAX_SILENCE_S = 365 * 86400.0
"""The longest silence the page makes (a year; expire and recreate beyond that)."""


class FieldError(DashboardError):
    """A field of a posted form is wrong: ``field`` names it, the message says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@bp.errorhandler(FieldError)
def _field_error(err: FieldError) -> tuple[Response, int]:
    body = jsonify(status="error", errorType="bad_data", error=str(err), field=err.field)
    return body, 400


def _db() -> Path:
    return Path(context().settings.data_dir) / "alerts.db"


_CONFIG_CACHE: dict[str, tuple[float, AMConfig]] = {}


def _am_config() -> tuple[AMConfig | None, list[str]]:
    """``alert.alertmanager_config`` (re-read when the file changes), for inhibit rules and
    routing pending alerts; a missing or bad file is a warning, not a failure."""
    path = context().settings.alert.alertmanager_config
    if not path:
        return None, ["alert.alertmanager_config is not set: alerts are not grouped or inhibited"]
    try:
        mtime = Path(path).stat().st_mtime
        cached = _CONFIG_CACHE.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1], []
        config = load_config(path)
    except (OSError, AMConfigError) as exc:
        log.warning("the Alerts page cannot read the alert manager configuration: %s", exc)
        return None, [f"inhibit rules not applied: {exc}"]
    _CONFIG_CACHE[path] = (mtime, config)
    return config, []


def _ack_json(ack: Ack | None, firing: set[str], now: float) -> dict[str, Any] | None:
    if ack is None:
        return None
    return {"by": ack.by, "at": ack.at, "endsAt": ack.ends_at, "holds": ack.covers(firing, now)}


def _alert_json(s: AlertStatus | Alert, now: float) -> dict[str, Any]:
    if isinstance(s, Alert):
        s = AlertStatus(s)
    a = s.alert
    status: str = a.state
    if status == "firing" and (s.silenced_by or s.inhibited_by):
        status = "suppressed"
    labels = dict(sorted(a.labels.items()))
    return {
        "fingerprint": a.fingerprint,
        "labels": labels,
        "annotations": dict(a.annotations),
        "state": a.state,
        "status": status,
        "activeAt": a.active_at,
        "startsAt": a.fired_at if a.fired_at is not None else a.active_at,
        "endsAt": a.resolved_at if a.state == "resolved" else None,
        "silencedBy": list(s.silenced_by),
        "inhibitedBy": list(s.inhibited_by),
        "acknowledged": _ack_json(s.acknowledged, {a.fingerprint}, now),
        "matchers": ", ".join(format_matcher(_equal(k, v)) for k, v in labels.items()),
    }


def _equal(name: str, value: str) -> Matcher:
    return Matcher(name, "=", value)


def _incident_json(h: IncidentHistory, current: bool) -> dict[str, Any]:
    inc = h.incident
    return {
        "id": h.id,
        "current": current,
        "startedAt": inc.started_at if inc else None,
        "resolvedAt": inc.resolved_at if inc else None,
        "acknowledgedBy": inc.acked_by if inc else [],
        "history": [{"at": e.at, "kind": e.kind, "text": e.text} for e in h.entries],
        "historyTotal": h.total,
    }


def _resolved_json(inc: Incident, h: IncidentHistory, now: float) -> dict[str, Any]:
    resolved = inc.resolved_at if inc.resolved_at is not None else now
    alerts = sorted(inc.alerts, key=lambda a: sorted(a.labels.items()))
    return {
        "id": inc.group_id,
        "incident": inc.id,
        "key": inc.key,
        "receiver": inc.receiver,
        "labels": inc.labels,
        "startedAt": inc.started_at,
        "resolvedAt": resolved,
        "durationSeconds": max(0.0, resolved - inc.started_at),
        "acknowledgedBy": inc.acked_by,
        "alerts": [_alert_json(a, now) for a in alerts[:MAX_GROUP_ALERTS]],
        "alertsTotal": inc.alerts_total if len(alerts) == len(inc.alerts) else len(alerts),
        "history": [{"at": e.at, "kind": e.kind, "text": e.text} for e in h.entries],
        "historyTotal": h.total,
    }


def _group_json(
    g: GroupStatus, incidents: list[IncidentHistory], total: int, now: float
) -> dict[str, Any]:
    order = {"firing": 0, "pending": 1, "resolved": 2}
    alerts = sorted(g.alerts, key=lambda s: (order[s.alert.state], sorted(s.alert.labels.items())))
    return {
        "id": g.id,
        "key": g.key,
        "receiver": g.receiver,
        "labels": g.labels,
        "stored": g.stored,
        "ack": _ack_json(g.ack, g.firing, now),
        "alerts": [_alert_json(s, now) for s in alerts[:MAX_GROUP_ALERTS]],
        "alertsTotal": len(alerts),
        "incidents": [_incident_json(h, i == 0) for i, h in enumerate(incidents)],
        "incidentsTotal": total,
    }


def _filter() -> list[Matcher]:
    raw = request.args.get("filter", "").strip()
    if not raw:
        return []
    try:
        return parse_matchers(raw)
    except MatcherSyntaxError as exc:
        raise FieldError("filter", str(exc)) from None


def _urgency(g: GroupStatus) -> tuple[int, str]:
    """Groups with alerts firing and not suppressed first, then pending ones, then the rest."""
    live = [s for s in g.alerts if not s.silenced_by and not s.inhibited_by]
    if any(s.alert.state == "firing" for s in live):
        return 0, g.key
    if any(s.alert.state == "pending" for s in g.alerts):
        return 1, g.key
    return 2, g.key


@bp.get("/alerts/groups")
@requires("viewer")
def groups() -> Response:
    """Alert groups (``filter``: Alertmanager matchers on the alerts' labels) and history."""
    matchers = _filter()
    config, warnings = _am_config()
    now = time.time()
    board = read_board(_db(), config, now, READ_CAPS)
    found = sorted(matching(board, matchers), key=_urgency)
    shown = found[:MAX_GROUPS]
    histories = timelines(_db(), shown, MAX_HISTORY_ROWS, MAX_INCIDENTS)
    resolved, resolved_total, cut = recently_resolved(
        _db(), matchers, now, MAX_RESOLVED, MAX_HISTORY_ROWS, READ_CAPS
    )
    data = {
        "groups": [
            _group_json(g, history, total, now)
            for g, (history, total) in zip(shown, histories, strict=True)
        ],
        "groupsTotal": len(found),
        "resolved": [_resolved_json(inc, h, now) for inc, h in resolved],
        "resolvedTotal": resolved_total,
        "limits": {
            "groups": MAX_GROUPS,
            "alerts": MAX_GROUP_ALERTS,
            "history": MAX_HISTORY_ROWS,
            "incidents": MAX_INCIDENTS,
            "resolved": MAX_RESOLVED,
        },
        "inhibition": board.inhibition,
        "cut": {**board.cut, **cut},
    }
    return success(data, warnings)


@bp.get("/silences")
@requires("viewer")
def silences() -> Response:
    """Silences, active (ending first), pending, then expired (ended last first); at most
    ``MAX_SILENCES`` read, with the total."""
    now = time.time()
    store = SilenceStore(_db())
    try:
        found = store.unexpired(now, MAX_SILENCES)
        found += store.expired(now, MAX_SILENCES - len(found))
        total = store.count()
    finally:
        store.close()
    found.sort(key=lambda s: silence_order(s, now))
    rows = []
    for s in found:
        row = silence_json(s, now)
        row["startsAt"], row["endsAt"], row["updatedAt"] = s.starts_at, s.ends_at, s.updated_at
        row["text"] = s.describe()
        rows.append(row)
    return success({"silences": rows, "total": total, "limit": MAX_SILENCES})


def _actor() -> str:
    who = current_principal()
    return who.name if who else "anonymous"


def _text(body: dict[str, Any], name: str, limit: int) -> str:
    value = body.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FieldError(name, "must be text")
    if len(value) > limit:
        raise FieldError(name, f"at most {limit} characters")
    return value.strip()


def parse_silence_form(body: object, actor: str, now: float) -> Silence:
    """The silence the page's form describes; ``FieldError`` names the first bad field.

    ``matchers``: Alertmanager matcher text; ``duration`` (``2h``, ``1d12h``) or
    ``endsAt`` (RFC 3339); ``startsAt`` (RFC 3339, default now); ``comment`` (required).
    """
    if not isinstance(body, dict):
        raise FieldError("body", "send a JSON object with matchers, duration or endsAt, comment")
    text = _text(body, "matchers", MAX_MATCHER_TEXT)
    if not text:
        raise FieldError("matchers", 'at least one matcher is required, e.g. alertname="Foo"')
    try:
        matchers = parse_matchers(text)
    except MatcherSyntaxError as exc:
        raise FieldError("matchers", str(exc)) from None
    start = now
    raw_start = _text(body, "startsAt", 64)
    if raw_start:
        start = max(_when("startsAt", raw_start), now)
    raw_end, raw_duration = _text(body, "endsAt", 64), _text(body, "duration", 64)
    if raw_end:
        end = _when("endsAt", raw_end)
        if end <= start:
            raise FieldError("endsAt", "must be after the start")
    elif raw_duration:
        try:
            length = parse_duration("duration", raw_duration)
        except DashboardError:
            raise FieldError("duration", f"{raw_duration!r} is not a duration like 2h") from None
        if length <= 0:
            raise FieldError("duration", "must be more than 0s")
        end = start + length
    else:
        raise FieldError("duration", "give a duration (2h) or an end time")
    if end - start > MAX_SILENCE_S:
        field = "endsAt" if raw_end else "duration"
        raise FieldError(field, "at most 365d")
    comment = _text(body, "comment", MAX_COMMENT)
    if not comment:
        raise FieldError("comment", "say why (the on-call reads it)")
    try:
        silence = new_silence(
            matchers, created_by=actor, comment=comment, starts_at=start, ends_at=end, now=now
        )
    except SilenceError as exc:
        field, _, reason = str(exc).partition(": ")
        if field == "endsAt" and not raw_end:
            field = "duration"
        raise FieldError(field if reason else "matchers", reason or str(exc)) from None
    return silence


def _when(field: str, raw: str) -> float:
    try:
        return parse_time(field, raw)
    except DashboardError:
        raise FieldError(field, f"{raw!r} is not an RFC 3339 time") from None


def _audit(action: str, sid: str, message: str) -> None:
    actor = _actor()
    event = audit_event(
        action,
        actor=actor,
        category="configuration",
        source_ip=request.remote_addr,
        message=f"{actor}: {message}",
        labels={"silence": sid, "via": "web"},
    )
    try:
        context().store.write(events=[event])
    except VigilError as exc:
        context().metrics.audit_failures.inc()
        log.warning("could not record the %s audit event: %s", action, exc)


@bp.post("/silences")
@requires("operator")
def create_silence() -> Response:
    """Make a silence from the page's form (JSON); the creator is the logged-in user."""
    now = time.time()
    silence = parse_silence_form(request.get_json(silent=True), _actor(), now)
    store = SilenceStore(_db())
    try:
        sid = store.add(silence, now=now)
    except SilenceError as exc:
        raise FieldError("endsAt", str(exc)) from None
    finally:
        store.close()
    _audit("silence-add", sid, f"silence {sid} added: {silence.describe()}")
    return success({"silenceID": sid})


@bp.delete("/silences/<sid>")
@requires("operator")
def expire_silence(sid: str) -> tuple[Response, int] | Response:
    """End silence ``sid`` now (404 when there is none, 400 when it has ended already)."""
    store = SilenceStore(_db())
    try:
        if len(sid) > 64:
            raise SilenceError("not found")
        store.get(sid)
    except SilenceError:
        store.close()
        return jsonify(status="error", errorType="not_found", error=f"no silence {sid!r}"), 404
    try:
        store.expire(sid)
    except SilenceError as exc:
        raise DashboardError(str(exc)) from None
    finally:
        store.close()
    _audit("silence-expire", sid, f"silence {sid} expired")
    return success({"silenceID": sid})
