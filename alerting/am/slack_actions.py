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
from pathlib import Path
from typing import Any

from flask import Flask, Response, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.webhook import WebhookClient

from alerting.am.acks import AckError
from alerting.am.dispatch import AlertManager
from alerting.am.silences import SilenceError, new_silence
from alerting.notify.slack import (
    ACK_ACTION,
    CANCEL_ACTION,
    PLAYBOOK_ACTION,
    PLAYBOOK_CONFIRM,
    SILENCE_ACTION,
    button,
)
from playbooks.context import RunContext
from playbooks.loader import PLAYBOOK_DIR, find_playbook
from playbooks.model import PlaybookError
from playbooks.runner import run
from siem.model import Event, Matcher
from vigil.auth import audit_event, rank
from vigil.webauth import public

PlaybookContext = Callable[[str, Callable[[str], None]], RunContext]
"""``(actor, out)`` → the context a playbook runs with (``out`` collects its lines)."""

log = logging.getLogger("vigil.slack")

MAX_BODY = 64 * 1024
"""Slack's interaction payloads are a few KiB; larger bodies are refused unread."""
WINDOW_S = 300.0
MAX_SEEN = 10_000
"""Signatures remembered for the replay check (older than the window are forgotten)."""
ACK_FOR_S = 4 * 3600.0
SILENCE_S = 3600.0
REQUIRED_ROLE = "operator"
SLACK_RESPONSE_URL = "https://hooks.slack.com/"


class _Refused(Exception):
    """The action cannot be done (unknown group or playbook, a run already going)."""


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
    playbook_context: PlaybookContext | None = None,
    playbook_dir: Path = PLAYBOOK_DIR,
    response_url_prefix: str = SLACK_RESPONSE_URL,
) -> Flask:
    """The Flask app serving ``POST /slack/actions``. Without ``playbook_context`` the
    *Run playbook* button answers that playbooks cannot run from Slack here."""
    runs = _Runs(playbook_context, playbook_dir, manager)
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
    replies = _Replies(response_url_prefix, registry)
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
        url = payload.get("response_url")

        def reply(text: str, blocks: list[dict[str, Any]] | None, outcome: str) -> Response:
            """The ephemeral answer, to ``response_url`` (Slack ignores the HTTP body of a
            block_actions answer) and in the body (for tools and tests)."""
            outcomes.labels(outcome).inc()
            answer = _ephemeral_body(text, blocks)
            replies.send(url, answer)
            return Response(json.dumps(answer), 200, mimetype="application/json")

        if action_id == CANCEL_ACTION:
            return reply("Cancelled; nothing was run.", None, "ok")
        playbook = action_id in (PLAYBOOK_ACTION, PLAYBOOK_CONFIRM)
        if playbook and user_id not in roles:
            role = "viewer"  # running playbooks needs an explicit mapping, never the default
        if rank(role) < rank(REQUIRED_ROLE):
            _audit(audit, action_id, actor, "failure", f"{actor} may not {action_id}", value)
            return reply(f"{actor} is {role}; {REQUIRED_ROLE} is needed", None, "denied")
        try:
            if action_id == PLAYBOOK_ACTION:
                return reply(*runs.dry_run(value, actor), "ok")
            if action_id == PLAYBOOK_CONFIRM:
                text = runs.start(value, actor, clock(), audit)
            else:
                text = _act(manager, action_id, value, actor, clock())
        except (AckError, SilenceError, PlaybookError, _Refused) as exc:
            return reply(str(exc), None, "failed")
        if action_id != PLAYBOOK_CONFIRM:  # the run audits itself (playbook-run)
            _audit(audit, action_id, actor, "success", text, value)
        return reply(text, None, "ok")

    return app


MAX_PLAN_LINES = 40
MAX_REPLIES_IN_FLIGHT = 8


class _Replies:
    """Posts ephemeral answers to Slack's ``response_url`` from threads (at most
    ``MAX_REPLIES_IN_FLIGHT`` at once, 5 s each; more are dropped and counted). Only URLs
    under ``prefix`` (Slack's hooks host) are called: the payload is signed, but a URL
    elsewhere is never fetched."""

    def __init__(self, prefix: str, registry: CollectorRegistry) -> None:
        self.prefix = prefix
        self._slots = threading.BoundedSemaphore(MAX_REPLIES_IN_FLIGHT)
        self.failed = Counter(
            "vigil_slack_replies_failed",
            "Answers to Slack's response_url not delivered (refused URL, busy, error)",
            registry=registry,
        )

    def send(self, url: object, body: dict[str, Any]) -> None:
        if not isinstance(url, str) or not url.startswith(self.prefix):
            if url:
                self.failed.inc()
            return
        if not self._slots.acquire(blocking=False):
            self.failed.inc()
            return

        def post() -> None:
            try:
                answer = WebhookClient(url, timeout=5).send_dict(body)
                if answer.status_code != 200:
                    raise OSError(f"HTTP {answer.status_code}: {answer.body[:200]}")
            except Exception as exc:  # an unanswered button must not hurt the process
                self.failed.inc()
                log.warning("slack: answering the button failed: %s", exc)
            finally:
                self._slots.release()

        threading.Thread(target=post, name="slack-reply", daemon=True).start()


class _Runs:
    """*Run playbook*: the dry run first (with *Run it* / *Cancel*), then the run in a
    thread (Slack wants an answer within 3 s); one run of a playbook at a time."""

    def __init__(
        self, factory: PlaybookContext | None, directory: Path, manager: AlertManager
    ) -> None:
        self.factory = factory
        self.directory = directory
        self.manager = manager
        self._lock = threading.Lock()
        self.running: dict[str, threading.Thread] = {}

    def _resolve(self, value: str) -> tuple[str, str, PlaybookContext]:
        gid, _, name = value.partition("|")
        if self.factory is None:
            raise _Refused("playbooks cannot be run from Slack on this server")
        g = self.manager.find_group(gid)
        if g is None:
            raise _Refused(f"no alert group {gid!r} (resolved already?)")
        offered = {a.annotations.get("playbook") for a in g.alerts.values()}
        if name not in offered:
            raise _Refused(f"no alert of this group names playbook {name!r}")
        return g.key, name, self.factory

    def dry_run(self, value: str, actor: str) -> tuple[str, list[dict[str, Any]]]:
        _, name, factory = self._resolve(value)
        playbook = find_playbook(name, self.directory)
        lines: list[str] = []
        ctx = factory(actor, lines.append)
        try:
            result = run(playbook, ctx, dry_run=True)
        finally:
            ctx.store.close()
        plan = "\n".join(lines[:MAX_PLAN_LINES])[:2900]
        text = f"Dry run of playbook {name}: nothing was changed."
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"```{plan}```"}},
        ]
        if result.aborted:
            blocks.append(_context(f"It cannot run: {result.aborted}"))
            return text, blocks
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    button(f"Run {name}", PLAYBOOK_CONFIRM, value, style="danger"),
                    button("Cancel", CANCEL_ACTION, value),
                ],
            }
        )
        return text, blocks

    def start(self, value: str, actor: str, now: float, audit: Callable[[Event], None]) -> str:
        key, name, factory = self._resolve(value)
        playbook = find_playbook(name, self.directory)
        with self._lock:
            going = self.running.get(name)
            if going is not None and going.is_alive():
                raise _Refused(f"playbook {name} is running already")

            def work() -> None:
                ctx = factory(actor, lambda line: log.info("playbook %s: %s", name, line))
                try:
                    result = run(playbook, ctx, assume_yes=True)
                    log.info("playbook %s run by %s: exit %d", name, actor, result.exit_code)
                except Exception as exc:  # a crashed run must not end the alert process
                    log.warning("playbook %s run by %s failed: %s", name, actor, exc)
                finally:
                    ctx.store.close()

            thread = threading.Thread(target=work, name=f"playbook-{name}", daemon=True)
            self.running[name] = thread
            thread.start()
        self.manager.acks.note(key, now, "playbook", f"playbook {name} run by {actor}")
        return f"{actor} started playbook {name}; its steps are in the vigil.playbook events."


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


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


def _ephemeral_body(text: str, blocks: list[dict[str, Any]] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"response_type": "ephemeral", "replace_original": False, "text": text}
    if blocks:
        body["blocks"] = blocks
    return body
