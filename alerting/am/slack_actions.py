"""Slack's interactivity endpoint: the *Acknowledge* and *Silence 1h* buttons.

Slack POSTs ``payload=<block_actions JSON>`` (form-encoded) to the app's
interactivity request URL, here ``POST /slack/actions`` on the ``vigil alert``
process (it needs the ``AlertManager``). Every request must carry a valid
``X-Slack-Signature`` for ``X-Slack-Request-Timestamp`` (slack-sdk's
``SignatureVerifier``, HMAC-SHA256 with ``$VIGIL_SLACK_SIGNING_SECRET``, 5-minute
window); a signature already used is refused too, so a captured request cannot
be replayed inside the window. Anything refused answers 401 and changes nothing.

The Slack user is the actor: ``alert.slack.users`` maps Slack user ids to Vigil
user names (else ``slack:<id>``), ``alert.slack.roles`` maps Slack user ids to
Vigil roles (else ``alert.slack.default_role``); both buttons need ``operator``.
Each action is a ``vigil.audit`` event and a line in the group's history.
Example::

    app = create_app(manager, signing_secret=secret, audit=store_events)
    app.run(port=8093)
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Response, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from slack_sdk.signature import Clock, SignatureVerifier

from alerting.am.acks import AckError
from alerting.am.dispatch import AlertManager
from alerting.am.silences import SilenceError, new_silence
from alerting.notify.slack import ACK_ACTION, SILENCE_ACTION
from siem.model import Event, Matcher
from vigil.auth import audit_event, rank
from vigil.webauth import public

log = logging.getLogger("vigil.slack")

MAX_BODY = 64 * 1024
"""Slack's interaction payloads are a few KiB; larger bodies are refused unread."""
WINDOW_S = 300.0
MAX_SEEN = 10_000
"""Signatures remembered for the replay check (older than the window are forgotten)."""
ACK_FOR_S = 4 * 3600.0
SILENCE_S = 3600.0
REQUIRED_ROLE = "operator"


class _FnClock(Clock):
    def __init__(self, fn: Callable[[], float]) -> None:
        self.fn = fn

    def now(self) -> float:
        return self.fn()


class _Replays:
    """Signatures seen in the last ``WINDOW_S`` seconds (bounded)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}

    def first_use(self, signature: str, now: float) -> bool:
        with self._lock:
            if len(self._seen) >= MAX_SEEN:
                self._seen = {s: t for s, t in self._seen.items() if t > now - WINDOW_S}
            if signature in self._seen or len(self._seen) >= MAX_SEEN:
                return False
            self._seen[signature] = now
            return True


def create_app(
    manager: AlertManager,
    *,
    signing_secret: str,
    audit: Callable[[Event], None],
    users: Mapping[str, str] | None = None,
    roles: Mapping[str, str] | None = None,
    default_role: str = REQUIRED_ROLE,
    clock: Callable[[], float] = time.time,
    registry: CollectorRegistry = REGISTRY,
) -> Flask:
    """The Flask app serving ``POST /slack/actions``."""
    verifier = SignatureVerifier(signing_secret, clock=_FnClock(clock))
    replays = _Replays()
    users = dict(users or {})
    roles = dict(roles or {})
    rank(default_role)  # an unknown role is a configuration error, raised now
    for role in roles.values():
        rank(role)
    outcomes = Counter(
        "vigil_slack_interactions",
        "Slack button requests by outcome (ok, refused: bad_signature, replayed, bad_payload,"
        " denied, failed)",
        ["outcome"],
        registry=registry,
    )
    app = Flask("vigil-slack-actions")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY

    def refuse(outcome: str, status: int, text: str) -> Response:
        outcomes.labels(outcome).inc()
        return Response(text + "\n", status, mimetype="text/plain")

    @app.post("/slack/actions")
    @public  # Slack is not a Vigil user: the signature is the authentication
    def actions() -> Response:
        body = request.get_data(cache=True)
        headers = {k: v for k, v in request.headers.items()}
        try:
            valid = verifier.is_valid_request(body, headers)
        except ValueError:  # a timestamp that is not a number
            valid = False
        if not valid:
            return refuse("bad_signature", 401, "invalid or stale Slack signature")
        if not replays.first_use(request.headers.get("X-Slack-Signature", ""), clock()):
            return refuse("replayed", 401, "request already processed")
        try:
            payload = json.loads(request.form.get("payload", ""))
            user_id = str(payload["user"]["id"])
            action = payload["actions"][0]
            action_id, value = str(action["action_id"]), str(action["value"])
        except (ValueError, KeyError, IndexError, TypeError):
            return refuse("bad_payload", 400, "not a block_actions payload")
        actor = users.get(user_id) or f"slack:{user_id}"
        role = roles.get(user_id, default_role)
        if rank(role) < rank(REQUIRED_ROLE):
            _audit(audit, action_id, actor, "failure", f"{actor} may not {action_id}", value)
            return refuse("denied", 200, f"{actor} is {role}; {REQUIRED_ROLE} is needed")
        try:
            text = _act(manager, action_id, value, actor, clock())
        except (AckError, SilenceError) as exc:
            outcomes.labels("failed").inc()
            return _ephemeral(str(exc))
        _audit(audit, action_id, actor, "success", text, value)
        outcomes.labels("ok").inc()
        return _ephemeral(text)

    return app


def _act(manager: AlertManager, action_id: str, gid: str, actor: str, now: float) -> str:
    if action_id == ACK_ACTION:
        ack = manager.acknowledge(gid, actor, ACK_FOR_S, now)
        return f"{actor} acknowledged {ack.group_key}"
    if action_id == SILENCE_ACTION:
        g = manager.find_group(gid)
        if g is None:
            raise AckError(f"no alert group {gid!r} (resolved already?)")
        if not g.labels:
            raise SilenceError("the group has no labels to silence by; use `vigil silence add`")
        matchers = [Matcher(k, "=", v) for k, v in sorted(g.labels.items())]
        silence = new_silence(
            matchers,
            created_by=actor,
            comment="Silence 1h from Slack",
            duration_s=SILENCE_S,
            now=now,
        )
        sid = manager.silences.add(silence, now=now)
        manager.acks.note(g.key, now, "silence", f"silenced 1h by {actor} (silence {sid})")
        return f"{actor} silenced {g.key} for 1h (silence {sid})"
    raise AckError(f"unknown action {action_id!r}")


def _audit(
    audit: Callable[[Event], None], action: str, actor: str, outcome: str, text: str, gid: str
) -> None:
    event = audit_event(
        f"alert-{action.removeprefix('vigil_').replace('_', '-')}",
        actor=actor,
        outcome=outcome,
        category="configuration",
        message=text,
        labels={"group": gid, "via": "slack"},
    )
    try:
        audit(event)
    except Exception as exc:  # the action is done; a lost audit line is logged
        log.warning("could not record the %s audit event: %s", action, exc)


def _ephemeral(text: str) -> Response:
    body: dict[str, Any] = {"response_type": "ephemeral", "replace_original": False, "text": text}
    return Response(json.dumps(body), 200, mimetype="application/json")
