"""Slack's buttons on a group message, over real HTTP: *Acknowledge* edits the message and
stops repeats, *Silence 1h* silences the group; forged, stale and replayed requests are
refused with 401 and change nothing. The far end is the fake Slack Web API."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import free_port
from prometheus_client import CollectorRegistry
from slack_sdk.signature import SignatureVerifier
from slack_server import SlackServer
from werkzeug.serving import make_server

from alerting.am.acks import group_id
from alerting.am.config import parse_config
from alerting.am.dispatch import AlertManager
from alerting.am.slack_actions import create_app
from alerting.notify.slack import (
    ACK_ACTION,
    PLAYBOOK_ACTION,
    PLAYBOOK_CONFIRM,
    SILENCE_ACTION,
    SlackNotifier,
)
from alerting.state import Alert, fingerprint
from playbooks.context import RunContext
from siem.memory import MemoryStore
from siem.model import Event, EventQuery
from vigil.deploy import DeployResult, DeployStep
from vigil.settings import from_mapping

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
T0 = 1_790_000_000.0  # 2026-09-21 14:13:20 UTC

CONFIG = """
route:
  receiver: team
  group_by: [alertname]
  group_wait: 0s
  group_interval: 1m
  repeat_interval: 1h
receivers:
  - name: team
    webhook_configs:
      - url: http://127.0.0.1:9/unused
"""


def alert(name: str, instance: str, **annotations: str) -> Alert:
    labels = {"alertname": name, "instance": instance, "severity": "critical"}
    notes = {"summary": name, **annotations}
    return Alert(fingerprint(labels), labels, notes, "firing", 1.0, T0, fired_at=T0)


class Deployer:
    """The shop's releases as the rollback playbook sees them; roll-outs are recorded."""

    def __init__(self) -> None:
        self.releases = {"shop-1": "v2", "shop-2": "v2"}
        self.rollouts: list[tuple[str, str]] = []

    def current_releases(self) -> dict[str, str]:
        return dict(self.releases)

    def previous_release(self) -> str | None:
        return "v1"

    def roll_out(
        self,
        release: str,
        *,
        actor: str,
        on_step: Callable[[Any], None] | None = None,
        action: str = "deploy",
    ) -> DeployResult:
        self.rollouts.append((release, actor))
        steps = []
        for name in sorted(self.releases):
            steps.append(DeployStep(name, self.releases[name], release, 0.1))
            self.releases[name] = release
            if on_step is not None:
                on_step(steps[-1])
        return DeployResult("v2", release, steps)


class Recovered:
    """The PromQL engine of the playbook: the 5xx ratio is already below 1%."""

    def instant(self, expr: str, at: float) -> float:
        return 1.0


@dataclass
class Rig:
    manager: AlertManager
    slack: SlackServer
    url: str
    now: list[float]
    audit: list[Event] = field(default_factory=list)
    deployer: Deployer = field(default_factory=Deployer)
    store: MemoryStore = field(default_factory=MemoryStore)

    def playbook_context(self, actor: str, out: Callable[[str], None]) -> RunContext:
        return RunContext(
            settings=from_mapping({}),
            store=self.store,
            engine=Recovered(),  # type: ignore[arg-type]
            deployer=self.deployer,
            actor=actor,
            out=out,
        )

    def step(self, alerts: list[Alert], at: float) -> None:
        self.now[0] = at
        self.manager.process(alerts, at)
        self.manager.deliver_now()

    def message(self) -> dict[str, Any]:
        (msg,) = self.slack.messages.values()
        return msg

    def post(self, body: bytes, headers: dict[str, str]) -> requests.Response:
        headers = {"Content-Type": "application/x-www-form-urlencoded", **headers}
        return requests.post(self.url, data=body, headers=headers, timeout=5)


def click(action_id: str, value: str, user: str = "U111", response_url: str = "") -> bytes:
    """A block_actions payload as Slack sends it: form field ``payload`` holding JSON."""
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": "ana", "team_id": "T1"},
        "api_app_id": "A1",
        "container": {"type": "message", "message_ts": "1700000000.000100"},
        "channel": {"id": "C1", "name": "alerts"},
        "response_url": response_url or "https://hooks.slack.com/actions/T1/1/x",
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": f"vigil:{value}",
                "value": value,
                "action_ts": "1700000001.000200",
            }
        ],
    }
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


def signed(body: bytes, at: float, secret: str = SECRET) -> dict[str, str]:
    ts = str(int(at))
    sig = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    assert sig is not None
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig}


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    now = [T0]
    with SlackServer(token="xoxb-t") as slack:
        notifier = SlackNotifier("xoxb-t", "#alerts", api_url=slack.api_url, backoff_s=0.01)
        manager = AlertManager(
            parse_config(CONFIG, "am.yml"),
            tmp_path / "alerts.db",
            {"team": [notifier]},
            registry=CollectorRegistry(),
            clock=lambda: now[0],
        )
        audit: list[Event] = []
        rig = Rig(manager, slack, "", now, audit)
        app = create_app(
            manager,
            signing_secret=SECRET,
            audit=audit.append,
            users={"U111": "ana"},
            roles={"U999": "viewer", "U777": "operator"},
            clock=lambda: now[0],
            registry=CollectorRegistry(),
            playbook_context=rig.playbook_context,
            response_url_prefix=slack.response_url_prefix,
        )
        port = free_port()
        server = make_server("127.0.0.1", port, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            rig.url = f"http://127.0.0.1:{port}/slack/actions"
            yield rig
        finally:
            server.shutdown()
            thread.join(5)
            rig.manager.close()


def buttons(msg: dict[str, Any]) -> list[str]:
    return [
        e["action_id"]
        for b in msg["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if e.get("value")
    ]


def context_text(msg: dict[str, Any]) -> str:
    return " ".join(
        e["text"] for b in msg["blocks"] if b["type"] == "context" for e in b["elements"]
    )


def test_acknowledge_button_edits_the_message_and_stops_repeats(rig: Rig) -> None:
    a = alert("CheckoutDown", "a")
    rig.step([a], T0)
    msg = rig.message()
    assert buttons(msg) == [ACK_ACTION, SILENCE_ACTION]
    gid = next(e["value"] for b in msg["blocks"] if b["type"] == "actions" for e in b["elements"])
    assert gid == group_id(next(iter(rig.manager.groups)))

    body = click(ACK_ACTION, gid)
    rig.now[0] = T0 + 60  # 14:14:20
    r = rig.post(body, signed(body, T0 + 60))
    assert r.status_code == 200, r.text
    assert "ana acknowledged" in r.json()["text"]
    rig.manager.deliver_now()
    msg = rig.message()
    assert "Acknowledged by @ana at 14:14 UTC" in context_text(msg)
    assert buttons(msg) == [SILENCE_ACTION]
    (event,) = rig.audit
    doc = event.doc
    assert doc["user"]["name"] == "ana"
    assert doc["event"]["action"] == "alert-ack" and doc["labels"]["via"] == "slack"
    history = rig.manager.acks.history(next(iter(rig.manager.groups)))
    assert [(h.kind, h.text.rsplit(", ", 1)[-1]) for h in history] == [
        ("notification", "new message"),
        ("ack", "acknowledged by ana"),
        ("notification", "message updated"),  # the message now says who acknowledged
    ]

    calls = len(rig.slack.calls)
    for t in range(1, 4):  # three repeat intervals (the ack holds 4h): nothing re-sent
        rig.step([a], T0 + t * 3600 + 61)
    assert len(rig.slack.calls) == calls

    b = alert("CheckoutDown", "b")  # an alert joins: the group changed, the ack lapses
    rig.step([a, b], T0 + 3 * 3600 + 200)
    rig.step([a, b], T0 + 3 * 3600 + 261)
    msg = rig.message()
    assert "FIRING:2" in msg["text"]
    assert "Acknowledged" not in context_text(msg)
    assert buttons(msg) == [ACK_ACTION, SILENCE_ACTION]


def test_acknowledgement_expires_and_repeats_resume(rig: Rig) -> None:
    a = alert("CheckoutDown", "a")
    rig.step([a], T0)
    group = next(iter(rig.manager.groups))
    rig.manager.acknowledge(group_id(group), "ana", 2 * 3600, T0 + 10)
    rig.step([a], T0 + 20)
    posts = len(rig.slack.ok_calls("chat.postMessage")) + len(rig.slack.ok_calls("chat.update"))
    rig.step([a], T0 + 3600 + 30)  # within the ack: no repeat
    assert len(rig.slack.ok_calls("chat.update")) + 1 == posts
    rig.step([a], T0 + 2 * 3600 + 30)  # the ack ended: repeated (edited in place)
    assert len(rig.slack.ok_calls("chat.update")) + 1 == posts + 1


def test_acknowledgement_lapses_when_the_group_resolves(rig: Rig) -> None:
    """Acknowledged, then resolved: the resolve is still sent, and when the same alert
    fires again it is a new incident, notified and repeated as if never acknowledged."""
    a = alert("CheckoutDown", "a")
    rig.step([a], T0)
    key = next(iter(rig.manager.groups))
    rig.manager.acknowledge(key, "ana", 4 * 3600, T0 + 10)
    rig.step([a], T0 + 20)
    resolved = dataclasses.replace(a, state="resolved", resolved_at=T0 + 100)
    rig.step([resolved], T0 + 100)
    page = next(iter(rig.slack.messages.values()))  # the group's message, then its thread
    assert page["text"].startswith("✅ [RESOLVED] CheckoutDown")
    assert rig.manager.groups == {}

    again = dataclasses.replace(a, active_at=T0 + 600, fired_at=T0 + 600)
    rig.step([again], T0 + 600)
    assert rig.manager.acks.all() == []
    last = rig.slack.ok_calls("chat.postMessage")[-1].payload
    assert last["text"].startswith("🔴 [FIRING] CheckoutDown") and "thread_ts" not in last
    assert "Acknowledged" not in context_text(last)
    assert buttons(last) == [ACK_ACTION, SILENCE_ACTION]
    calls = len(rig.slack.calls)
    rig.step([again], T0 + 600 + 3600 + 61)  # repeat_interval (1h): re-sent, no ack holds it
    assert len(rig.slack.calls) > calls


def test_silence_button_silences_the_group_for_an_hour(rig: Rig) -> None:
    rig.step([alert("CheckoutDown", "a")], T0)
    gid = group_id(next(iter(rig.manager.groups)))
    body = click(SILENCE_ACTION, gid, user="U222")
    r = rig.post(body, signed(body, T0 + 5))
    assert r.status_code == 200, r.text
    (s,) = rig.manager.silences.active(T0 + 10)
    assert s.created_by == "slack:U222" and s.ends_at == T0 + 3600  # server time + 1h
    assert s.describe() == 'alertname="CheckoutDown"'
    assert rig.audit[0].doc["event"]["action"] == "alert-silence-1h"
    assert rig.audit[0].doc["user"]["name"] == "slack:U222"  # the Slack user is the actor


def test_forged_stale_replayed_and_unsigned_requests_change_nothing(rig: Rig) -> None:
    rig.step([alert("CheckoutDown", "a")], T0)
    gid = group_id(next(iter(rig.manager.groups)))
    body = click(ACK_ACTION, gid)
    refused = [
        rig.post(body, signed(body, T0, secret="not-the-secret")),  # forged
        rig.post(body, {}),  # unsigned
        rig.post(body, signed(body, T0 - 301)),  # stale: outside the 5-minute window
        rig.post(body, {**signed(body, T0), "X-Slack-Request-Timestamp": "soon"}),
        rig.post(click(ACK_ACTION, gid, user="U666"), signed(body, T0)),  # body swapped
    ]
    assert [r.status_code for r in refused] == [401] * 5
    assert rig.manager.acks.all() == [] and rig.audit == []

    headers = signed(body, T0)
    assert rig.post(body, headers).status_code == 200
    assert rig.post(body, headers).status_code == 401  # the same request replayed
    assert len(rig.audit) == 1


def test_viewer_slack_user_may_not_acknowledge(rig: Rig) -> None:
    rig.step([alert("CheckoutDown", "a")], T0)
    gid = group_id(next(iter(rig.manager.groups)))
    body = click(ACK_ACTION, gid, user="U999")
    r = rig.post(body, signed(body, T0))
    assert r.status_code == 200 and "operator is needed" in r.text
    assert rig.manager.acks.all() == []
    (event,) = rig.audit
    assert event.doc["event"]["outcome"] == "failure"
    assert event.doc["user"]["name"] == "slack:U999"


def test_time_is_real_when_no_clock_is_given(tmp_path: Path) -> None:
    """With the default clock a request signed now passes (the window is real time)."""
    manager = AlertManager(
        parse_config(CONFIG, "am.yml"),
        tmp_path / "alerts.db",
        {},
        registry=CollectorRegistry(),
    )
    app = create_app(
        manager, signing_secret=SECRET, audit=lambda e: None, registry=CollectorRegistry()
    )
    body = click(ACK_ACTION, "nope")
    r = app.test_client().post(
        "/slack/actions",
        data=body,
        headers={**signed(body, time.time()), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200 and "no alert group" in r.get_json()["text"]
    manager.close()


def wait_for(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_run_playbook_shows_the_dry_run_then_runs_after_confirmation(rig: Rig) -> None:
    rig.step([alert("ShopHighErrorRate", "a", playbook="rollback-shop")], T0)
    (run_button,) = [
        e
        for b in rig.message()["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if e["action_id"] == PLAYBOOK_ACTION
    ]
    assert run_button["text"]["text"] == "Run playbook"
    hook = rig.slack.response_url_prefix + "T1/1/x"

    # Not mapped to a role: the default (operator) may acknowledge but not run playbooks.
    body = click(PLAYBOOK_ACTION, run_button["value"], user="U111", response_url=hook)
    r = rig.post(body, signed(body, T0))
    assert "viewer; operator is needed" in r.json()["text"]

    body = click(PLAYBOOK_ACTION, run_button["value"], user="U777", response_url=hook)
    r = rig.post(body, signed(body, T0))
    dry = r.json()
    assert dry["response_type"] == "ephemeral"
    assert "Dry run of playbook rollback-shop: nothing was changed." in dry["text"]
    plan = dry["blocks"][1]["text"]["text"]
    assert "1. rollback (rollback)" in plan and "v1" in plan
    confirm = dry["blocks"][-1]["elements"][0]
    assert confirm["action_id"] == PLAYBOOK_CONFIRM
    assert rig.deployer.rollouts == []  # the dry run changed nothing
    wait_for(lambda: len(rig.slack.responses) == 2)  # the answers also went to response_url
    assert rig.slack.responses[1]["text"] == dry["text"]

    body = click(PLAYBOOK_CONFIRM, confirm["value"], user="U777", response_url=hook)
    r = rig.post(body, signed(body, T0 + 1))
    assert "slack:U777 started playbook rollback-shop" in r.json()["text"]
    wait_for(lambda: bool(rig.store.search(EventQuery(dataset="vigil.audit", limit=5))))
    assert rig.deployer.rollouts == [("v1", "slack:U777")]
    (run_event,) = rig.store.search(EventQuery(dataset="vigil.audit", limit=5))
    assert run_event.doc["event"]["action"] == "playbook-run"
    assert run_event.doc["user"]["name"] == "slack:U777"
    group = next(iter(rig.manager.groups))
    assert [h.kind for h in rig.manager.acks.history(group)] == ["notification", "playbook"]


def test_restart_keeps_the_acknowledgement_and_edits_nothing_again(
    rig: Rig, tmp_path: Path
) -> None:
    a = alert("CheckoutDown", "a")
    rig.step([a], T0)
    rig.manager.acknowledge(next(iter(rig.manager.groups)), "ana", 4 * 3600, T0 + 5)
    rig.step([a], T0 + 10)
    calls = len(rig.slack.calls)
    rig.manager.close()
    notifier = SlackNotifier("xoxb-t", "#alerts", api_url=rig.slack.api_url, backoff_s=0.01)
    rig.manager = AlertManager(
        parse_config(CONFIG, "am.yml"),
        tmp_path / "alerts.db",
        {"team": [notifier]},
        registry=CollectorRegistry(),
        clock=lambda: rig.now[0],
    )
    for t in (20, 3600 + 30, 2 * 3600 + 60):  # past repeat_interval, within the ack
        rig.step([a], T0 + t)
    assert len(rig.slack.calls) == calls
