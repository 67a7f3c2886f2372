"""Alertmanager's HTTP API v2 on ``vigil alert``'s port, so ``amtool``, Grafana's
Alertmanager data source and Prometheus' ``alerting.alertmanagers`` work against Vigil.

The routes and JSON shapes are Alertmanager 0.25's (``api/v2/openapi.yaml``):
``/api/v2/status``, ``/api/v2/receivers``, ``/api/v2/alerts`` (GET with
``filter``, ``receiver``, ``active``/``silenced``/``inhibited``/``unprocessed``;
POST in Prometheus' push format), ``/api/v2/alerts/groups``, ``/api/v2/silences``
(GET with ``filter`` and ``active``/``pending``/``expired``; POST creates, or
changes the silence named by ``id`` as Alertmanager's ``Silences.Set`` does),
``/api/v2/silence/<id>`` (GET, DELETE expires), and ``alerting.lifecycle``'s
``/-/healthy``, ``/-/ready``, ``POST /-/reload`` and the process' ``/metrics``. Errors are
Alertmanager's: a body its go-openapi layer refuses gets a JSON object
``{"code", "message"}`` — 400 when it is not JSON of the schema's types, 422
(``code`` 602 required, 612 too few items, 601 a silence id that is not a
UUID), 415 for another content type — and what its handlers refuse a JSON
string with 400 (bad input) or 404.

Who may call what (``vigil.webauth``): reading is ``viewer``; posting alerts and
creating or expiring silences is ``operator`` — Prometheus sends an operator
token as ``authorization: {credentials: ...}``. Each silence change is a
``vigil.audit`` event with the caller as the actor. Example::

    app = create_app(manager, users, audit=store_writer)
    make_server("127.0.0.1", 8092, app, threaded=True).serve_forever()
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from typing import Any, Literal

from flask import Flask, Response, request
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
)

from alerting.am.dispatch import AlertManager, AlertView, api_alert
from alerting.am.matchers import parse_matchers
from alerting.am.redact import redacted_text
from alerting.am.silences import Silence, SilenceError, new_silence
from alerting.lifecycle import Reload, add_lifecycle_routes
from siem.model import Matcher
from vigil.auth import UserStore, audit_event
from vigil.errors import VigilError
from vigil.webauth import AuthConfig, current_principal, install, requires

log = logging.getLogger("vigil.alertmanager")

EXTENSION = "vigil.am_api"
MAX_BODY_BYTES = 4 * 1024 * 1024
"""Largest request body (Prometheus posts at most 64 alerts at a time)."""
MAX_POST_ALERTS = 1000
"""Alerts one POST may carry."""
MAX_FILTERS = 64
"""``filter`` parameters one request may give."""
MAX_LABELS = 128
"""Labels (or annotations) one posted alert may have."""
MAX_TEXT = 16 * 1024
"""Longest label or annotation value accepted."""
GO_ZERO_YEAR = 1
UUID_RE = re.compile(r"(?i)[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}")
"""go-openapi's ``strfmt.UUIDPattern``."""
"""Go's zero time (``0001-01-01T00:00:00Z``) means "not set"."""


class APIError(VigilError):
    """A request the API refuses; ``status`` is the HTTP status, the message says why.
    With ``code`` (go-openapi's error code) the body is ``{"code", "message"}``, as
    Alertmanager's generated request binder answers; without, a JSON string, as its
    handlers answer."""

    def __init__(self, message: str, status: int = 400, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


REQUIRED_CODE = 602
"""go-openapi's ``RequiredFailCode``; ``MIN_ITEMS_CODE`` is its ``MinItemsFailCode``,
``INVALID_TYPE_CODE`` its ``InvalidTypeCode`` (all answered with 422)."""
MIN_ITEMS_CODE = 612
INVALID_TYPE_CODE = 601


def required(name: str) -> APIError:
    """go-openapi's ``errors.Required(name, "body")``."""
    return APIError(f"{name} in body is required", 422, REQUIRED_CODE)


def parse_error(param: str, reason: str) -> APIError:
    """go-openapi's ``errors.NewParseError``: the body is not JSON of the schema's types
    (400, ``code`` 400); ``reason`` says where and why."""
    return APIError(f'parsing {param} body from "" failed, because {reason}', 400, 400)


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return _JSON_TYPES.get(type(value), "a number")


def _expect(param: str, field: str, value: object, want: type) -> None:
    """Go's ``encoding/json``: a value of another type than the field's is an error
    (``null`` leaves the field unset)."""
    if value is not None and not isinstance(value, want):
        got = _type_name(value)
        raise parse_error(param, f"{field}: expected {_JSON_TYPES[want]}, got {got}")


def _expect_time(param: str, field: str, value: object) -> None:
    """``strfmt.DateTime`` decoding: a time that does not parse is a parse error."""
    _expect(param, field, value, str)
    try:
        parse_time(field, value)
    except APIError as exc:
        raise parse_error(param, str(exc)) from None


def _expect_strings(param: str, field: str, value: object) -> None:
    _expect(param, field, value, dict)
    if isinstance(value, dict):
        for k, v in value.items():
            _expect(param, f"{field}.{k}", v, str)


def bind_alerts(body: object) -> list[dict[str, Any]]:
    """Alertmanager's ``postAlerts`` binder: Go decoding (400), then the schema (422:
    each alert needs ``labels``); nothing is stored when it fails."""
    if not isinstance(body, list):
        raise parse_error("alerts", f"expected an array of alerts, got {_type_name(body)}")
    for i, item in enumerate(body[: MAX_POST_ALERTS + 1]):
        if not isinstance(item, dict):
            raise parse_error("alerts", f"[{i}]: expected an object, got {_type_name(item)}")
        _expect_strings("alerts", f"[{i}].labels", item.get("labels"))
        _expect_strings("alerts", f"[{i}].annotations", item.get("annotations"))
        _expect_time("alerts", f"[{i}].startsAt", item.get("startsAt"))
        _expect_time("alerts", f"[{i}].endsAt", item.get("endsAt"))
        _expect("alerts", f"[{i}].generatorURL", item.get("generatorURL"), str)
    for i, item in enumerate(body[: MAX_POST_ALERTS + 1]):
        if item.get("labels") is None:
            raise required(f"{i}.labels")
    return body


def bind_silence(body: object) -> dict[str, Any]:
    """Alertmanager's ``postSilences`` binder: Go decoding (400), then the schema's
    required fields in its order (422, the first one missing)."""
    if not isinstance(body, dict):
        raise parse_error("silence", f"expected an object (a silence), got {_type_name(body)}")
    for field in ("id", "comment", "createdBy"):
        _expect("silence", field, body.get(field), str)
    for field in ("startsAt", "endsAt"):
        _expect_time("silence", field, body.get(field))
    matchers: list[Any] = body.get("matchers") or []
    _expect("silence", "matchers", body.get("matchers"), list)
    for i, m in enumerate(matchers[: MAX_FILTERS + 1]):
        if not isinstance(m, dict):
            raise parse_error("silence", f"matchers[{i}]: expected an object, got {_type_name(m)}")
        for key in ("name", "value"):
            _expect("silence", f"matchers[{i}].{key}", m.get(key), str)
        for key in ("isRegex", "isEqual"):
            _expect("silence", f"matchers[{i}].{key}", m.get(key), bool)
    for field in ("comment", "createdBy", "endsAt", "matchers"):
        if body.get(field) is None:
            raise required(field)
        if field == "matchers" and not matchers:
            raise APIError("matchers in body should have at least 1 items", 422, MIN_ITEMS_CODE)
    for i, m in enumerate(matchers[: MAX_FILTERS + 1]):
        for key in ("isRegex", "name", "value"):
            if m.get(key) is None:
                raise required(f"matchers.{i}.{key}")
    if body.get("startsAt") is None:
        raise required("startsAt")
    return body


# -- times -------------------------------------------------------------------------------------
def format_time(ts: float) -> str:
    """Go's ``strfmt.DateTime``: ``2024-05-01T10:00:00.000Z``."""
    at = dt.datetime.fromtimestamp(ts, dt.UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def parse_time(field: str, value: object) -> float | None:
    """An RFC 3339 time (None when absent or Go's zero time); ``APIError`` otherwise."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise APIError(f"{field}: expected an RFC 3339 date-time string")
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        raise APIError(f"{field}: {value!r} is not an RFC 3339 date-time") from None
    if at.tzinfo is None:
        raise APIError(f"{field}: {value!r} has no time zone (add Z or +00:00)")
    if at.year == GO_ZERO_YEAR:
        return None
    return at.timestamp()


# -- parsing posted bodies ---------------------------------------------------------------------
def _label_set(field: str, value: object, *, names_checked: bool) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise APIError(f"{field}: expected an object of strings")
    if len(value) > MAX_LABELS:
        raise APIError(f"{field}: at most {MAX_LABELS} entries")
    rv: dict[str, str] = {}
    for k, v in value.items():
        v = "" if v is None else v  # Go decodes a null value as ""
        if not isinstance(v, str) or len(v) > MAX_TEXT:
            raise APIError(f"{field}.{k}: expected a string of at most {MAX_TEXT} characters")
        if names_checked and (not k or not _label_name(k)):
            raise APIError(f'invalid label set: invalid name "{k}"')
        if v or not names_checked:  # Alertmanager drops empty labels before validating
            rv[k] = v
    return rv


def _label_name(name: str) -> bool:
    return (
        name[0].isascii()
        and (name[0].isalpha() or name[0] == "_")
        and all(c.isascii() and (c.isalnum() or c == "_") for c in name)
    )


def parse_alerts(body: object, now: float) -> tuple[list[Any], list[str]]:
    """Prometheus' alert push (a JSON array) to manager alerts. A body Alertmanager's
    binder refuses is refused whole (``bind_alerts``); past that, invalid entries are left
    out and described (Alertmanager stores the valid ones and answers 400 for the rest)."""
    items = bind_alerts(body)
    if len(items) > MAX_POST_ALERTS:
        raise APIError(f"at most {MAX_POST_ALERTS} alerts per request")
    alerts, errors = [], []
    for i, item in enumerate(items):
        try:
            labels = _label_set("labels", item.get("labels"), names_checked=True)
            if not labels:
                raise APIError("at least one label pair required")
            annotations = _label_set("annotations", item.get("annotations"), names_checked=False)
            starts = parse_time("startsAt", item.get("startsAt"))
            ends = parse_time("endsAt", item.get("endsAt"))
            url = item.get("generatorURL") or ""
            if len(url) > MAX_TEXT:
                raise APIError(f"generatorURL: longer than {MAX_TEXT} characters")
            if starts is None:
                starts = now if ends is None else ends
            if ends is not None and ends < starts:
                raise APIError("end time must not be before start time")
            alerts.append(api_alert(labels, annotations, starts, ends, now, generator_url=url))
        except APIError as exc:
            errors.append(f"alert {i}: {exc}")
    return alerts, errors


def parse_silence(body: object, now: float) -> Silence:
    """A posted silence (``matchers`` of ``{name, value, isRegex, isEqual}``): what
    ``bind_silence`` lets through, checked as Alertmanager's handler and ``Silences.Set``
    do (a JSON string with 400). ``createdBy`` may be empty, as in Alertmanager."""
    bound = bind_silence(body)
    raw: list[dict[str, Any]] = bound["matchers"]
    if len(raw) > MAX_FILTERS:
        raise APIError(f"matchers: at most {MAX_FILTERS}")
    matchers = []
    for i, m in enumerate(raw):
        name, value, is_regex = m["name"], m["value"], m["isRegex"]
        is_equal = m.get("isEqual")
        is_equal = True if is_equal is None else is_equal
        if not name:
            raise APIError(f'matchers[{i}]: invalid label name ""')
        if len(value) > MAX_TEXT:
            raise APIError(f"matchers[{i}]: value longer than {MAX_TEXT} characters")
        op: Literal["=", "!=", "=~", "!~"] = (
            ("=~" if is_equal else "!~") if is_regex else ("=" if is_equal else "!=")
        )
        try:
            matchers.append(Matcher(name, op, value))
        except VigilError as exc:
            raise APIError(f"matchers[{i}]: {exc}") from None
    sid = bound.get("id") or ""
    created_by, comment = bound["createdBy"], bound["comment"]
    starts = parse_time("startsAt", bound.get("startsAt"))
    ends = parse_time("endsAt", bound.get("endsAt"))
    if starts is None or ends is None:
        raise APIError("startsAt and endsAt must not be Go's zero time")
    if starts >= ends:
        raise APIError("failed to create silence: start time must be before end time")
    if ends < now:
        raise APIError("failed to create silence: end time can't be in the past")
    try:
        silence = new_silence(
            matchers,
            created_by=created_by,
            comment=comment,
            starts_at=starts,
            ends_at=ends,
            now=now,
        )
    except SilenceError as exc:
        raise APIError(str(exc)) from None
    # A start in the past is moved to now by the store, for a new silence only: an
    # update in place compares the start as posted (Alertmanager's ``canUpdate``).
    return Silence(sid, silence.matchers, starts, ends, silence.created_by, silence.comment, now)


def check_silence_id(sid: str) -> str:
    """The ``silenceID`` path parameter: go-openapi's ``strfmt.UUID`` (422, code 601)."""
    if not UUID_RE.fullmatch(sid):
        shown = sid if len(sid) <= 64 else sid[:64] + "…"
        raise APIError(
            f'silenceID in path must be of type strfmt.UUID: "{shown}"', 422, INVALID_TYPE_CODE
        )
    return sid


def parse_filters(values: Sequence[str]) -> list[Matcher]:
    """``filter=`` parameters (``alertname="X"``, ``{a=~"b"}``) as matchers."""
    if len(values) > MAX_FILTERS:
        raise APIError(f"at most {MAX_FILTERS} filter parameters")
    rv: list[Matcher] = []
    for value in values:
        try:
            rv.extend(parse_matchers(value))
        except VigilError as exc:
            raise APIError(f"bad matcher format: {exc}") from None
    return rv


def _receiver_filter(value: str | None) -> Matcher | None:
    if not value:
        return None
    try:
        return Matcher("receiver", "=~", value)
    except VigilError as exc:
        raise APIError(f"failed to parse receiver param: {exc}") from None


TRUTHY = frozenset(("true", "1", "yes", "ok", "y", "on", "selected", "checked", "t", "enabled"))
"""What go-openapi's ``swag.ConvertBool`` reads as true; any other value is false."""


def _flag(name: str) -> bool:
    """A boolean query parameter as Alertmanager's generated binder reads it: the last
    value counts, an absent or empty one is the default (true), and anything but
    ``TRUTHY`` is false — never an error."""
    values = request.args.getlist(name)
    if not values or values[-1] == "":
        return True
    return values[-1].lower() in TRUTHY


# -- JSON shapes -------------------------------------------------------------------------------
def alert_json(view: AlertView, now: float, resolve_timeout_s: float) -> dict[str, Any]:
    """A ``gettableAlert``."""
    a = view.alert
    ends = a.resolved_at if a.resolved_at is not None else now + resolve_timeout_s
    rv: dict[str, Any] = {
        "annotations": dict(a.annotations),
        "endsAt": format_time(ends),
        "fingerprint": a.fingerprint,
        "receivers": [{"name": r} for r in view.receivers],
        "startsAt": format_time(a.fired_at if a.fired_at is not None else a.active_at),
        "status": {
            "inhibitedBy": list(view.inhibited_by),
            "mutedBy": [],  # time intervals mute at notification time, not in the API
            "silencedBy": list(view.silenced_by),
            "state": view.state,
        },
        "updatedAt": format_time(view.updated_at),
        "labels": dict(a.labels),
    }
    if a.expr.startswith(("http://", "https://")):  # omitted when empty, as Alertmanager
        rv["generatorURL"] = a.expr
    return rv


def silence_json(s: Silence, now: float) -> dict[str, Any]:
    """A ``gettableSilence``."""
    return {
        "id": s.id,
        "status": {"state": s.state(now)},
        "annotations": {},
        "updatedAt": format_time(s.updated_at),
        "comment": s.comment,
        "createdBy": s.created_by,
        "endsAt": format_time(s.ends_at),
        "matchers": [
            {
                "isEqual": m.op in ("=", "=~"),
                "isRegex": m.op in ("=~", "!~"),
                "name": m.name,
                "value": m.value,
            }
            for m in s.matchers
        ],
        "startsAt": format_time(s.starts_at),
    }


def silence_order(s: Silence, now: float) -> tuple[int, float]:
    """Alertmanager's order: active (ending first), pending (starting first), expired
    (ended last first)."""
    state = s.state(now)
    if state == "active":
        return (0, s.ends_at)
    if state == "pending":
        return (1, s.starts_at)
    return (2, -s.ends_at)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _json(data: object, status: int = 200) -> Response:
    from flask import json

    return Response(json.dumps(data), status=status, mimetype="application/json")


# -- the app -----------------------------------------------------------------------------------
class _APIMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter(
            "alertmanager_alerts_received_total",
            "Alerts received through the API, by status.",
            ["version", "status"],
            registry=registry,
        )
        self.invalid = Counter(
            "alertmanager_alerts_invalid_total",
            "Posted alerts refused as invalid.",
            ["version"],
            registry=registry,
        )


def create_app(
    manager: AlertManager,
    users: UserStore | None,
    *,
    registry: CollectorRegistry = REGISTRY,
    audit: Callable[[Any], object] | None = None,
    static_tokens: Mapping[str, Any] | None = None,
    reload: Reload | None = None,
) -> Flask:
    """The API app for ``manager``; ``audit`` receives each ``vigil.audit`` event;
    ``reload`` serves ``POST /-/reload`` (by default: the Alertmanager file alone)."""
    app = Flask("vigil.alertmanager", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    metrics = _APIMetrics(registry)
    install(app, AuthConfig(users=users, static_tokens=dict(static_tokens or {})))

    def record(action: str, sid: str, message: str) -> None:
        who = current_principal()
        actor = who.name if who else "?"
        log.info("%s (%s)", message, actor, extra={"user.name": actor})
        if audit is None:
            return
        event = audit_event(
            action,
            actor=actor,
            category="configuration",
            source_ip=request.remote_addr,
            message=f"{actor}: {message}",
            labels={"silence": sid},
        )
        try:
            audit(event)
        except VigilError as exc:  # the change is made; the log says the trail misses it
            log.error("could not record the audit event for silence %s: %s", sid, exc)

    @app.errorhandler(APIError)
    def _api_error(exc: APIError) -> Response:
        if exc.code is not None:
            return _json({"code": exc.code, "message": str(exc)}, exc.status)
        return _json(str(exc), exc.status)

    @app.errorhandler(413)
    def _too_large(exc: Exception) -> Response:
        return _json(f"request body larger than {MAX_BODY_BYTES} bytes", 413)

    def body(param: str) -> object:
        """The JSON body as go-openapi's binder takes it: none is 422 (required), another
        content type 415, text that is not JSON 400 (a parse error)."""
        raw = request.get_data(cache=False)
        if not raw:
            raise required(param)
        mimetype = request.mimetype or "application/octet-stream"
        if mimetype != "application/json":
            shown = request.content_type or "application/octet-stream"
            raise APIError(
                f'unsupported media type "{shown}", only [application/json] are allowed',
                415,
                415,
            )
        try:
            return json.loads(raw, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise parse_error(param, f"not JSON: {exc}") from None

    def views(receiver_wanted: bool = True) -> tuple[list[AlertView], float]:
        now = manager.clock()
        filters = parse_filters(request.args.getlist("filter"))
        receiver = _receiver_filter(request.args.get("receiver")) if receiver_wanted else None
        # ``unprocessed`` is accepted and, as in Alertmanager, changes nothing: its API
        # works out each alert's state when asked, so none is listed as unprocessed.
        active, silenced, inhibited = _flag("active"), _flag("silenced"), _flag("inhibited")
        rv = []
        for v in [*manager.alerts(now), *manager.ungrouped(now)]:
            if v.alert.resolved_at is not None and v.alert.resolved_at <= now:
                continue  # ended: Alertmanager no longer lists it
            if receiver and not any(receiver.matches({"receiver": r}) for r in v.receivers):
                continue
            if not all(m.matches(v.alert.labels) for m in filters):
                continue
            if v.state == "active" and not active:
                continue
            if (v.silenced_by and not silenced) or (v.inhibited_by and not inhibited):
                continue
            rv.append(v)
        return rv, now

    timeout = lambda: manager.config.global_.resolve_timeout_s  # noqa: E731

    @app.get("/api/v2/status")
    @requires("viewer")
    def status() -> Response:
        try:
            version = metadata.version("vigil")
        except metadata.PackageNotFoundError:
            version = "unknown"
        return _json(
            {
                "cluster": {"status": "disabled", "peers": []},
                "versionInfo": {
                    "branch": "",
                    "buildDate": "",
                    "buildUser": "",
                    "goVersion": "",
                    "revision": "",
                    "version": f"vigil-{version}",
                },
                "config": {"original": redacted_text(manager.config.text)},
                "uptime": format_time(manager.started_at),
            }
        )

    @app.get("/api/v2/receivers")
    @requires("viewer")
    def receivers() -> Response:
        return _json([{"name": r} for r in manager.receivers()])

    @app.get("/api/v2/alerts")
    @requires("viewer")
    def get_alerts() -> Response:
        found, now = views()
        found.sort(key=lambda v: v.alert.fingerprint)
        return _json([alert_json(v, now, timeout()) for v in found])

    @app.post("/api/v2/alerts")
    @requires("operator")
    def post_alerts() -> Response:
        now = manager.clock()
        alerts, errors = parse_alerts(body("alerts"), now)
        refused = manager.post_alerts(alerts) if alerts else 0
        for a in alerts:
            metrics.received.labels("v2", a.state).inc()
        if errors:
            metrics.invalid.labels("v2").inc(len(errors))
            raise APIError("; ".join(errors[:10]))
        if refused:
            return _json(f"{refused} alert(s) refused: the alert store is full", 503)
        return Response(status=200)

    @app.get("/api/v2/alerts/groups")
    @requires("viewer")
    def alert_groups() -> Response:
        found, now = views(receiver_wanted=False)
        receiver = _receiver_filter(request.args.get("receiver"))
        wanted = {v.alert.fingerprint: v for v in found}
        rv = []
        for g in manager.groups_view(now):
            if receiver and not receiver.matches({"receiver": g.receiver}):
                continue
            members = [
                wanted[v.alert.fingerprint] for v in g.alerts if v.alert.fingerprint in wanted
            ]
            if members:
                rv.append(
                    {
                        "alerts": [alert_json(v, now, timeout()) for v in members],
                        "labels": dict(g.labels),
                        "routeLabels": {},  # Vigil's routes carry no labels of their own
                        "receiver": {"name": g.receiver},
                    }
                )
        return _json(rv)

    @app.get("/api/v2/silences")
    @requires("viewer")
    def get_silences() -> Response:
        now = manager.clock()
        filters = parse_filters(request.args.getlist("filter"))
        # Alertmanager 0.34: active, pending, expired (each default true).
        states = {state for state in ("active", "pending", "expired") if _flag(state)}
        rv = []
        for s in manager.silences.all():
            # As Alertmanager: the filter matches the silence's matchers as labels.
            as_labels = {m.name: m.value for m in s.matchers}
            if s.state(now) in states and all(f.matches(as_labels) for f in filters):
                rv.append(s)
        rv.sort(key=lambda s: silence_order(s, now))
        return _json([silence_json(s, now) for s in rv])

    @app.post("/api/v2/silences")
    @requires("operator")
    def post_silence() -> Response:
        now = manager.clock()
        silence = parse_silence(body("silence"), now)
        if silence.id:
            _existing(silence.id)
        try:
            sid = manager.silences.add(silence, now=now)
        except SilenceError as exc:
            raise APIError(str(exc)) from None
        if not silence.id:
            what = "added"
        elif sid == silence.id:
            what = "updated"
        else:
            what = f"replaced {silence.id} by"
        record("silence-add", sid, f"silence {sid} {what}: {silence.describe()}")
        return _json({"silenceID": sid})

    def _existing(sid: str) -> Silence:
        try:
            return manager.silences.get(sid)
        except SilenceError:
            raise APIError("silence not found", 404) from None

    @app.get("/api/v2/silence/<sid>")
    @requires("viewer")
    def get_silence(sid: str) -> Response:
        return _json(silence_json(_existing(check_silence_id(sid)), manager.clock()))

    @app.delete("/api/v2/silence/<sid>")
    @requires("operator")
    def delete_silence(sid: str) -> Response:
        now = manager.clock()
        if _existing(check_silence_id(sid)).state(now) == "expired":
            return Response(status=200)  # as Alertmanager: expiring twice changes nothing
        try:
            manager.silences.expire(sid, now=now)
        except SilenceError as exc:
            raise APIError(str(exc)) from None
        record("silence-expire", sid, f"silence {sid} expired")
        return Response(status=200)

    reload = reload or manager.reload_now
    add_lifecycle_routes(app, reload, registry=registry, audit=audit)
    return app
