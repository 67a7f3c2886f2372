"""The Alerts page's JSON API over the alerts.db a real alert manager writes: groups with
firing, pending, silenced, inhibited and acknowledged alerts and their history; silences
created and expired by operators only, validated field by field, audited."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry
from slack_server import SlackServer

from alerting.am.acks import group_id
from alerting.am.board import Caps
from alerting.am.config import load_config
from alerting.am.dispatch import AlertManager
from alerting.am.silences import SilenceStore, new_silence
from alerting.notify.slack import SlackNotifier
from alerting.state import Alert, AlertDB, fingerprint
from dashboards import alerts as alerts_api
from dashboards.app import create_app
from siem.memory import MemoryStore
from siem.model import EventQuery
from vigil.auth import UserStore
from vigil.settings import from_mapping

CONFIG = """
route:
  receiver: team
  group_by: [alertname]
  group_wait: 0s
  group_interval: 1m
  repeat_interval: 1h
receivers:
  - name: team
    slack_configs: [{channel: "#alerts", api_url: "http://127.0.0.1:9/api/chat.postMessage"}]
inhibit_rules:
  - source_matchers: [severity="critical"]
    target_matchers: [severity="warning"]
    equal: [service]
"""


def alert(name: str, at: float, state: str = "firing", **labels: str) -> Alert:
    full = {"alertname": name, **labels}
    fired = at if state == "firing" else None
    return Alert(
        fingerprint(full), full, {"summary": f"{name} summary"}, state, 1.0, at, fired_at=fired
    )  # type: ignore[arg-type]


@dataclass
class Rig:
    manager: AlertManager
    store: MemoryStore
    client: FlaskClient
    viewer: dict[str, str]
    operator: dict[str, str]
    now: float
    db: Path


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    now = time.time()
    (tmp_path / "am.yml").write_text(CONFIG)
    with SlackServer(token="xoxb-t") as slack:
        notifier = SlackNotifier("xoxb-t", "#alerts", api_url=slack.api_url, backoff_s=0.01)
        manager = AlertManager(
            load_config(tmp_path / "am.yml"),
            tmp_path / "alerts.db",
            {"team": [notifier]},
            registry=CollectorRegistry(),
        )
        manager.process(
            [
                alert("CheckoutDown", now - 60, severity="critical", service="checkout"),
                alert("CheckoutSlow", now - 30, severity="warning", service="checkout"),
                alert("DiskFull", now - 10, severity="warning", service="db"),
            ],
            now,
        )
        manager.deliver_now()
        # A pending alert lives in the rule engine's table; the manager only sees it firing.
        states = AlertDB(tmp_path / "alerts.db")
        states.save(alert("QueueBacklog", now - 5, "pending", severity="warning", service="db"))
        states.close()
        store = MemoryStore()
        settings = from_mapping(
            {"data_dir": str(tmp_path), "alert": {"alertmanager_config": str(tmp_path / "am.yml")}}
        )
        users = UserStore(tmp_path / "users.db")
        viewer = {"Authorization": f"Bearer {users.create_token('val', 'viewer')[1]}"}
        operator = {"Authorization": f"Bearer {users.create_token('olga', 'operator')[1]}"}
        client = create_app(settings, store=store).test_client()
        yield Rig(manager, store, client, viewer, operator, now, tmp_path / "alerts.db")
        manager.close()


def groups(rig: Rig, **params: str) -> dict[str, Any]:
    r = rig.client.get("/api/alerts/groups", query_string=params, headers=rig.viewer)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json["data"]  # type: ignore[index]
    return data


def by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["labels"]["alertname"]: a for g in data["groups"] for a in g["alerts"]}


def test_alert_groups_show_states_as_the_manager_groups_them(rig: Rig) -> None:
    silence = new_silence('alertname="DiskFull"', created_by="sam", comment="disk swap")
    SilenceStore(rig.db).add(silence)
    gid = group_id(next(k for k in rig.manager.groups if "CheckoutDown" in k))
    r = rig.client.post(f"/api/alerts/groups/{gid}/ack", headers=rig.operator)
    assert r.status_code == 200, r.text

    data = groups(rig)
    assert data["groupsTotal"] == 4 and data["inhibition"] is True
    first = data["groups"][0]  # firing and not suppressed comes first
    assert first["receiver"] == "team" and first["labels"] == {"alertname": "CheckoutDown"}
    assert first["ack"]["by"] == "olga" and first["ack"]["holds"] is True
    alerts = by_name(data)
    assert alerts["CheckoutDown"]["acknowledged"]["by"] == "olga"
    assert alerts["CheckoutDown"]["status"] == "firing"
    assert alerts["CheckoutSlow"]["inhibitedBy"] == [alerts["CheckoutDown"]["fingerprint"]]
    assert alerts["CheckoutSlow"]["status"] == "suppressed"
    assert alerts["DiskFull"]["silencedBy"] and alerts["DiskFull"]["status"] == "suppressed"
    assert alerts["QueueBacklog"]["state"] == "pending"
    pending = next(g for g in data["groups"] if g["labels"] == {"alertname": "QueueBacklog"})
    assert pending["stored"] is False and pending["receiver"] == "team"
    assert (
        alerts["DiskFull"]["matchers"] == 'alertname="DiskFull", service="db", severity="warning"'
    )

    assert first["incidentsTotal"] == 1 and first["incidents"][0]["current"] is True
    assert first["incidents"][0]["acknowledgedBy"] == ["olga"]
    kinds = [(h["kind"], h["text"]) for h in first["incidents"][0]["history"]]
    assert kinds[0] == ("ack", "acknowledged by olga")
    sent = "sent firing to team/slack/0: 1 alert (1 firing, 0 resolved), new message"
    assert ("notification", sent) in kinds
    assert ("firing", "CheckoutDown{service=checkout, severity=critical} firing") in kinds


def test_alert_groups_filter_with_alertmanager_matchers(rig: Rig) -> None:
    assert set(by_name(groups(rig, filter='{severity="critical"}'))) == {"CheckoutDown"}
    found = by_name(groups(rig, filter="service=db, alertname=~Disk.*"))
    assert set(found) == {"DiskFull"}
    r = rig.client.get("/api/alerts/groups?filter=severity%3D%22crit", headers=rig.viewer)
    assert r.status_code == 400
    assert r.json["field"] == "filter" and "unterminated" in r.json["error"]  # type: ignore[index]


def test_alert_groups_say_when_the_answer_is_cut(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alerts_api, "MAX_GROUPS", 2)
    monkeypatch.setattr(alerts_api, "MAX_HISTORY_ROWS", 1)
    data = groups(rig)
    assert len(data["groups"]) == 2 and data["groupsTotal"] == 4
    assert all(len(g["incidents"][0]["history"]) == 1 for g in data["groups"])
    assert data["groups"][0]["incidents"][0]["historyTotal"] > 1


def history_of(rig: Rig, name: str, incident: int = 0) -> list[tuple[str, str]]:
    """The named group's history in its current incident (or an earlier one), oldest first."""
    (g,) = [g for g in groups(rig)["groups"] if g["labels"] == {"alertname": name}]
    return [(h["kind"], h["text"]) for h in reversed(g["incidents"][incident]["history"])]


def test_group_history_shows_every_notification_in_order(rig: Rig) -> None:
    clock = [rig.now + 61]
    rig.manager.clock = lambda: clock[0]
    others = [
        alert("CheckoutSlow", rig.now - 30, severity="warning", service="checkout"),
        alert("DiskFull", rig.now - 10, severity="warning", service="db"),
    ]
    a = alert("CheckoutDown", rig.now - 60, severity="critical", service="checkout")
    b = alert("CheckoutDown", rig.now + 50, severity="critical", service="checkout", pod="b")
    rig.manager.process([a, b, *others], clock[0])  # b joins the group: its message is edited
    rig.manager.deliver_now()

    sent = [text for kind, text in history_of(rig, "CheckoutDown") if kind == "notification"]
    assert sent == [
        "sent firing to team/slack/0: 1 alert (1 firing, 0 resolved), new message",
        "sent firing to team/slack/0: 2 alerts (2 firing, 0 resolved), message updated",
    ]


def resolve_checkout(rig: Rig, clock: list[float]) -> list[Alert]:
    """CheckoutDown (acknowledged by olga) resolves and is notified: its group goes."""
    rig.manager.clock = lambda: clock[0]
    r = rig.client.post(
        f"/api/alerts/groups/{group_id(checkout_key(rig))}/ack", headers=rig.operator
    )
    assert r.status_code == 200, r.text
    others = [
        alert("CheckoutSlow", rig.now - 30, severity="warning", service="checkout"),
        alert("DiskFull", rig.now - 10, severity="warning", service="db"),
    ]
    down = alert("CheckoutDown", rig.now - 60, severity="critical", service="checkout")
    rig.manager.process([replace(down, state="resolved", resolved_at=clock[0]), *others], clock[0])
    rig.manager.deliver_now()
    assert not any("CheckoutDown" in k for k in rig.manager.groups)  # resolved and forgotten
    return others


def checkout_key(rig: Rig) -> str:
    return next(k for k in rig.manager.groups if "CheckoutDown" in k)


def test_a_resolved_group_is_listed_as_recently_resolved_with_its_history(rig: Rig) -> None:
    clock = [rig.now + 61]
    resolve_checkout(rig, clock)
    data = groups(rig)
    assert "CheckoutDown" not in by_name(data)
    assert data["resolvedTotal"] == 1
    (done,) = data["resolved"]
    assert done["labels"] == {"alertname": "CheckoutDown"} and done["receiver"] == "team"
    assert done["startedAt"] == pytest.approx(rig.now - 60)
    assert done["resolvedAt"] == pytest.approx(clock[0])
    assert done["durationSeconds"] == pytest.approx(121)
    assert done["acknowledgedBy"] == ["olga"]
    ((a),) = done["alerts"]
    assert a["labels"]["service"] == "checkout" and a["state"] == "resolved"
    assert a["endsAt"] == pytest.approx(clock[0])
    kinds = [(h["kind"], h["text"]) for h in reversed(done["history"])]  # oldest first
    assert kinds == [
        ("firing", "CheckoutDown{service=checkout, severity=critical} firing"),
        (
            "notification",
            "sent firing to team/slack/0: 1 alert (1 firing, 0 resolved), new message",
        ),
        ("ack", "acknowledged by olga"),
        ("resolved", "CheckoutDown{service=checkout, severity=critical} resolved"),
        (
            "notification",
            "sent resolved to team/slack/0: 1 alert (0 firing, 1 resolved), message updated",
        ),
    ]
    assert done["historyTotal"] == len(kinds)
    # The filter applies to it as to the groups.
    assert groups(rig, filter='severity="critical"')["resolvedTotal"] == 1
    assert groups(rig, filter='severity="warning"')["resolved"] == []


def test_a_group_firing_again_starts_a_new_incident(rig: Rig) -> None:
    clock = [rig.now + 61]
    others = resolve_checkout(rig, clock)
    # Fires again three times and stays firing the last time; the second time comes before
    # the manager has told (and forgotten) the resolution before it.
    for wait in (30, 61, None):
        clock[0] += 61
        again = alert("CheckoutDown", clock[0], severity="critical", service="checkout")
        rig.manager.process([again, *others], clock[0])
        rig.manager.deliver_now()
        if wait is not None:
            clock[0] += wait
            gone = replace(again, state="resolved", resolved_at=clock[0])
            rig.manager.process([gone, *others], clock[0])
            rig.manager.deliver_now()

    data = groups(rig)
    (g,) = [g for g in data["groups"] if g["labels"] == {"alertname": "CheckoutDown"}]
    assert g["incidentsTotal"] == 4
    current, *earlier = g["incidents"]
    assert current["current"] and current["resolvedAt"] is None
    assert current["startedAt"] == pytest.approx(clock[0])
    assert current["acknowledgedBy"] == []
    assert [(h["kind"], h["text"]) for h in reversed(current["history"])] == [
        ("firing", "CheckoutDown{service=checkout, severity=critical} firing"),
        (
            "notification",
            "sent firing to team/slack/0: 1 alert (1 firing, 0 resolved), new message",
        ),
    ]
    assert [i["current"] for i in earlier] == [False] * 3
    assert [i["startedAt"] for i in earlier] == sorted(
        (i["startedAt"] for i in earlier), reverse=True
    )
    first = earlier[-1]
    assert first["acknowledgedBy"] == ["olga"]
    assert [h["kind"] for h in first["history"]][:2] == ["notification", "resolved"]
    assert first["history"][-1]["kind"] == "firing"
    assert ("ack", "acknowledged by olga") in [(h["kind"], h["text"]) for h in first["history"]]
    assert all(h["kind"] != "ack" for i in earlier[:-1] for h in i["history"])
    lasted = [i["resolvedAt"] - i["startedAt"] for i in earlier[:-1]]
    assert lasted == [pytest.approx(61), pytest.approx(30)]
    # The three resolved incidents are the recently resolved ones, the last resolved first.
    assert data["resolvedTotal"] == 3
    ends = [r["resolvedAt"] for r in data["resolved"]]
    assert ends == sorted(ends, reverse=True)
    assert [r["incident"] for r in data["resolved"]] == [i["id"] for i in earlier]


def test_recently_resolved_is_bounded_and_says_so(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [rig.now + 61]
    others = resolve_checkout(rig, clock)
    for _ in range(3):
        clock[0] += 61
        again = alert("CheckoutDown", clock[0], severity="critical", service="checkout")
        rig.manager.process([again, *others], clock[0])
        rig.manager.deliver_now()
        clock[0] += 61  # past the group interval: the resolution is told, the group goes
        gone = replace(again, state="resolved", resolved_at=clock[0])
        rig.manager.process([gone, *others], clock[0])
        rig.manager.deliver_now()
    monkeypatch.setattr(alerts_api, "MAX_RESOLVED", 2)
    data = groups(rig)
    assert len(data["resolved"]) == 2 and data["resolvedTotal"] == 4 and data["cut"] == {}
    monkeypatch.setattr(alerts_api, "READ_CAPS", Caps(resolved=3))
    data = groups(rig)
    assert data["cut"] == {"resolved": 3} and data["resolvedTotal"] == 3


def test_group_history_notes_a_failed_notification_with_its_reason(
    rig: Rig, tmp_path: Path
) -> None:
    down = SlackNotifier("xoxb-t", "#alerts", api_url="http://127.0.0.1:9/api/", backoff_s=0.01)
    manager = AlertManager(
        load_config(tmp_path / "am.yml"),
        rig.db,
        {"team": [down]},
        registry=CollectorRegistry(),
    )
    late = alert("Latency", rig.now, severity="warning", service="api")
    manager.process([late], rig.now)
    manager.deliver_now()
    manager.close()
    ((kind, text),) = [h for h in history_of(rig, "Latency") if h[0].startswith("notification")]
    assert kind == "notification-failed"
    assert text.startswith("failed to send firing to team/slack/0: 1 alert (1 firing, 0 resolved)")
    assert "Connection refused" in text or "Errno" in text


def test_alert_groups_bound_what_they_read_and_say_so(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CheckoutDown resolves but is not delivered yet: a stored group with nothing firing.
    rig.manager.process(
        [
            alert("CheckoutDown", rig.now - 60, "resolved", severity="critical"),
            alert("CheckoutSlow", rig.now - 30, severity="warning", service="checkout"),
            alert("DiskFull", rig.now - 10, severity="warning", service="db"),
        ],
        rig.now + 1,
    )
    states = AlertDB(rig.db)
    for n in range(3):
        states.save(alert(f"Backlog{n}", rig.now, "pending", service="db"))
    states.close()
    silences = SilenceStore(rig.db)
    for n in range(3):
        silences.add(new_silence(f'alertname="Nothing{n}"', created_by="sam", comment="c"))
    silences.close()

    monkeypatch.setattr(alerts_api, "READ_CAPS", Caps(groups=2, pending=2, silences=2))
    data = groups(rig)
    assert data["cut"] == {"groups": 2, "pending": 2, "silences": 2}
    stored = [g["labels"]["alertname"] for g in data["groups"] if g["stored"]]
    assert sorted(stored) == ["CheckoutSlow", "DiskFull"]  # the firing groups first
    pending = [g for g in data["groups"] if not g["stored"]]
    assert len(pending) == 2
    assert data["groupsTotal"] == 4

    monkeypatch.setattr(alerts_api, "READ_CAPS", Caps(groups=10, pending=10, silences=10))
    data = groups(rig)
    assert data["cut"] == {} and data["groupsTotal"] == 3 + 4


def test_silences_read_at_most_the_limit_active_first(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SilenceStore(rig.db)
    ids = [
        store.add(new_silence(f'alertname="X{n}"', created_by="sam", comment="c")) for n in range(3)
    ]
    store.expire(ids[0])
    store.close()
    monkeypatch.setattr(alerts_api, "MAX_SILENCES", 2)
    data = rig.client.get("/api/silences", headers=rig.viewer).json["data"]  # type: ignore[index]
    assert [s["status"]["state"] for s in data["silences"]] == ["active", "active"]
    assert data["total"] == 3 and data["limit"] == 2
    monkeypatch.setattr(alerts_api, "MAX_SILENCES", 3)
    data = rig.client.get("/api/silences", headers=rig.viewer).json["data"]  # type: ignore[index]
    assert [s["id"] for s in data["silences"]][-1] == ids[0]


def test_silences_viewer_reads_operator_creates_and_expires_audited(rig: Rig) -> None:
    body = {"matchers": 'alertname="CheckoutDown"', "duration": "2h", "comment": "deploying"}
    assert rig.client.get("/api/silences", headers=rig.viewer).status_code == 200
    assert rig.client.post("/api/silences", json=body, headers=rig.viewer).status_code == 403
    r = rig.client.post("/api/silences", json=body, headers=rig.operator)
    assert r.status_code == 200, r.text
    sid = r.json["data"]["silenceID"]  # type: ignore[index]

    (listed,) = rig.client.get("/api/silences", headers=rig.viewer).json["data"]["silences"]  # type: ignore[index]
    assert listed["id"] == sid and listed["status"]["state"] == "active"
    assert listed["createdBy"] == "olga" and listed["comment"] == "deploying"
    assert listed["endsAt"] - listed["startsAt"] == pytest.approx(7200, abs=1)
    assert by_name(groups(rig))["CheckoutDown"]["silencedBy"] == [sid]
    # The running manager reads the same file: the alert is suppressed there too.
    (view,) = [v for v in rig.manager.alerts() if v.alert.name == "CheckoutDown"]
    assert view.silenced_by == (sid,)

    assert rig.client.delete(f"/api/silences/{sid}", headers=rig.viewer).status_code == 403
    assert rig.client.delete(f"/api/silences/{sid}", headers=rig.operator).status_code == 200
    again = rig.client.delete(f"/api/silences/{sid}", headers=rig.operator)
    assert again.status_code == 400 and "already expired" in again.text
    assert rig.client.delete("/api/silences/nope", headers=rig.operator).status_code == 404
    (listed,) = rig.client.get("/api/silences", headers=rig.viewer).json["data"]["silences"]  # type: ignore[index]
    assert listed["status"]["state"] == "expired"
    assert by_name(groups(rig))["CheckoutDown"]["silencedBy"] == []

    events = rig.store.search(EventQuery(dataset="vigil.audit", limit=10))
    found = sorted((e.doc["event"]["action"], e.doc["user"]["name"]) for e in events)
    assert found == [("silence-add", "olga"), ("silence-expire", "olga")]
    assert all(e.doc["labels"] == {"silence": sid, "via": "web"} for e in events)


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (
            {"matchers": 'alertname="X', "duration": "1h", "comment": "c"},
            "matchers",
            "unterminated",
        ),
        ({"matchers": "", "duration": "1h", "comment": "c"}, "matchers", "at least one"),
        ({"matchers": 'job=~".*"', "duration": "1h", "comment": "c"}, "matchers", "empty string"),
        ({"matchers": "a=b", "duration": "soon", "comment": "c"}, "duration", "not a duration"),
        ({"matchers": "a=b", "duration": "", "comment": "c"}, "duration", "give a duration"),
        ({"matchers": "a=b", "endsAt": "yesterday", "comment": "c"}, "endsAt", "RFC 3339"),
        ({"matchers": "a=b", "endsAt": "2001-01-01T00:00:00Z", "comment": "c"}, "endsAt", "after"),
        ({"matchers": "a=b", "duration": "1h", "comment": " "}, "comment", "say why"),
        ({"matchers": "a=b", "duration": "1h", "comment": 5}, "comment", "text"),
        ([1, 2], "body", "JSON object"),
    ],
)
def test_silence_form_errors_name_the_field(
    rig: Rig, body: object, field: str, reason: str
) -> None:
    r = rig.client.post("/api/silences", json=body, headers=rig.operator)
    assert r.status_code == 400, r.text
    assert r.json["field"] == field and reason in r.json["error"]  # type: ignore[index]
    assert SilenceStore(rig.db).all() == []
    assert rig.store.search(EventQuery(dataset="vigil.audit", limit=10)) == []


def test_alerts_page_offers_changes_to_operators_only(rig: Rig) -> None:
    page = rig.client.get("/alerts", headers=rig.viewer)
    assert page.status_code == 200
    assert 'data-can-change="false"' in page.text and 'id="silence-form"' not in page.text
    page = rig.client.get("/alerts", headers=rig.operator)
    assert 'data-can-change="true"' in page.text and 'id="silence-form"' in page.text
    assert 'href="/alerts" aria-current="page">Alerts<' in page.text
