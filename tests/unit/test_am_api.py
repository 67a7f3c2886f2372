"""The Alertmanager API v2 of ``vigil alert`` answers the requests Grafana's Alertmanager
data source, amtool and Prometheus send, in Alertmanager's JSON shapes, for the
roles docs/security.md states; silence changes leave a ``vigil.audit`` event.

Checked against the sources (read 2026-11-30), not memory:

* prometheus/alertmanager ``api/v2/api.go`` and ``silence/silence.go`` at v0.25.0 and
  at 68fb2d5759b3a92c0bb2a1a13d4ef7ff5b06256d (after v0.34.0): the alert filter
  works out silences and inhibitions when asked (no alert is listed as
  ``unprocessed``; the ``unprocessed`` parameter is parsed and unused); ``receiver``
  is anchored (``^(?:…)$``); a silence POSTed with an ``id`` is updated in place
  when ``canUpdate`` (same matchers; active with the same start to the second and an
  end not past, or pending with a start not past), otherwise the old one is expired
  (unless it already is) and a new one made — so an expired id makes a new silence;
  an unknown id is 404; expiring an expired silence is a no-op. Booleans are read
  by go-openapi's ``swag.ConvertBool`` (``true``, ``1``, ``yes``, ``on``, … are true;
  anything else false; never 400).
* Alertmanager v0.25.0's generated ``api/v2/restapi/operations/*_parameters.go`` and
  ``api/v2/models`` with go-openapi/errors v0.20.3 (``ServeError`` serves the first
  error as ``{code, message}``, a code ≥ 600 as 422; ``NewParseError`` is 400),
  go-openapi/runtime v0.25.0 (content type checked only when there is a body: 415)
  and go-openapi/strfmt v0.21.3 (``UUIDPattern``); ``silence/silence.go``
  ``validateSilence`` does not look at ``createdBy``; ``inhibit/inhibit.go`` counts
  every alert of the store as a source; ``api.go`` sets ``UpdatedAt`` on each post.
* grafana/grafana ``public/app/features/alerting/unified/components/silences/
  SilencesEditor.tsx`` (``pickBy({id, startsAt, endsAt, comment, createdBy, matchers})``,
  matchers ``{name, value, isEqual, isRegex}``; "Recreate" posts an expired silence's
  id with a new period), ``SilencesTable.tsx``/``useSilenceViewData`` (alerts with
  ``silenced=true&active=false&inhibited=false``), ``utils/matchers.ts``
  ``encodeMatcher`` (``filter=name="value"``, repeated).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from alerting.am.api import create_app, format_time, parse_time
from alerting.am.config import parse_config
from alerting.am.dispatch import AlertManager
from alerting.notify.base import GroupDelivery, GroupNotification
from vigil.auth import UserStore

CONFIG = """
route:
  receiver: team
  group_by: [alertname]
  group_wait: 0s
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      group_by: [alertname, instance]
      group_wait: 0s
inhibit_rules:
  - source_matchers: ['alertname="InstanceDown"']
    target_matchers: ['severity="warning"']
    equal: [instance]
receivers:
  - name: team
    webhook_configs:
      - url: http://127.0.0.1:9/team
  - name: pager
    webhook_configs:
      - url: http://127.0.0.1:9/pager
"""
T0 = 1_700_000_000.0


class Recorder:
    integration = "webhook"
    send_resolved = True

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[GroupNotification] = []

    def notify_group(self, n: GroupNotification) -> GroupDelivery:
        self.sent.append(n)
        return GroupDelivery(True)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Env:
    def __init__(self, tmp_path: Path, config: str = CONFIG) -> None:
        self.clock = Clock()
        self.team, self.pager = Recorder("team"), Recorder("pager")
        self.manager = AlertManager(
            parse_config(config, "am.yaml"),
            tmp_path / "alerts.db",
            {"team": [self.team], "pager": [self.pager]},
            registry=CollectorRegistry(),
            clock=self.clock,
        )
        users = UserStore(tmp_path / "users.db")
        self.tokens = {r: users.create_token(f"{r}-bot", r)[1] for r in ("viewer", "operator")}
        self.audit: list[Any] = []
        self.registry = CollectorRegistry()
        app = create_app(self.manager, users, registry=self.registry, audit=self.audit.append)
        self.client: FlaskClient = app.test_client()

    def h(self, role: str = "operator") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def get(self, url: str, role: str = "viewer") -> Any:
        rv = self.client.get(url, headers=self.h(role))
        assert rv.status_code == 200, (url, rv.status_code, rv.data)
        return rv.json

    def post_alerts(self, alerts: list[dict[str, Any]]) -> Any:
        return self.client.post("/api/v2/alerts", json=alerts, headers=self.h())

    def process(self) -> None:
        self.manager.process([], self.clock.now)
        self.manager.deliver_now()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.manager.close()


def prom_alert(name: str, **labels: str) -> dict[str, Any]:
    """An alert as Prometheus 2.42 pushes it (``notifier.Alert`` JSON)."""
    return {
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": f"{name} fires"},
        "startsAt": "2023-11-14T22:13:20.123456789Z",
        "endsAt": format_time(T0 + 60),
        "generatorURL": "http://prometheus:9090/graph?g0.expr=vector%281%29",
    }


def test_times_round_trip_as_go_writes_them() -> None:
    assert format_time(T0) == "2023-11-14T22:13:20.000Z"
    assert parse_time("t", "2023-11-14T22:13:20.5+01:00") == T0 - 3600 + 0.5
    assert parse_time("t", "0001-01-01T00:00:00Z") is None


def test_prometheus_push_is_listed_at_once_then_routed_grouped_and_notified(env: Env) -> None:
    rv = env.post_alerts(
        [
            prom_alert("DiskFull", severity="critical", instance="db1"),
            prom_alert("SlowPage", severity="warning", instance="web1"),
        ]
    )
    assert rv.status_code == 200 and rv.data == b""
    # Before any evaluation pass, as Alertmanager: state and receivers worked out now.
    before = {a["labels"]["alertname"]: a for a in env.get("/api/v2/alerts")}
    assert before["DiskFull"]["status"]["state"] == "active"
    assert before["DiskFull"]["receivers"] == [{"name": "pager"}]
    assert before["SlowPage"]["receivers"] == [{"name": "team"}]
    assert env.get("/api/v2/alerts?unprocessed=false") == env.get("/api/v2/alerts")
    assert env.get("/api/v2/alerts/groups") == []  # grouping waits for the pass
    env.process()
    alerts = env.get("/api/v2/alerts")
    by_name = {a["labels"]["alertname"]: a for a in alerts}
    disk = by_name["DiskFull"]
    assert disk["receivers"] == [{"name": "pager"}]
    assert disk["status"] == {
        "inhibitedBy": [],
        "mutedBy": [],
        "silencedBy": [],
        "state": "active",
    }
    assert disk["startsAt"] == "2023-11-14T22:13:20.123Z"
    assert disk["endsAt"] == format_time(T0 + 60)
    assert disk["generatorURL"].startswith("http://prometheus:9090/graph")
    assert disk["annotations"] == {"summary": "DiskFull fires"}
    assert set(disk) >= {"fingerprint", "updatedAt", "labels"}
    assert by_name["SlowPage"]["receivers"] == [{"name": "team"}]
    assert [a.labels["alertname"] for n in env.pager.sent for a in n.alerts] == ["DiskFull"]
    assert [a.labels["alertname"] for n in env.team.sent for a in n.alerts] == ["SlowPage"]
    received = env.registry.get_sample_value(
        "alertmanager_alerts_received_total", {"version": "v2", "status": "firing"}
    )
    assert received == 2


def test_push_validation_errors_are_400_strings_and_valid_alerts_are_kept(env: Env) -> None:
    bad_end = {**prom_alert("Early"), "endsAt": "2023-11-14T22:00:00Z"}
    rv = env.post_alerts([prom_alert("Good"), {"labels": {}}, bad_end, {"labels": {"1x": "y"}}])
    assert rv.status_code == 400
    message = rv.json
    assert isinstance(message, str)
    assert "at least one label pair required" in message
    assert "end time must not be before start time" in message
    assert 'invalid label set: invalid name "1x"' in message
    env.process()
    assert [a["labels"]["alertname"] for a in env.get("/api/v2/alerts")] == ["Good"]
    invalid = env.registry.get_sample_value("alertmanager_alerts_invalid_total", {"version": "v2"})
    assert invalid == 3


def test_bodies_the_openapi_binder_refuses_get_its_status_and_shape(env: Env) -> None:
    """As Alertmanager's go-openapi layer: not JSON of the schema's types is 400 with a
    ``{code: 400, message}`` parse error, a missing required field 422 with ``code`` 602
    (the first one in the schema's order), no body 422, another content type 415; the
    whole request is refused, nothing is stored."""

    def post(path: str, body: Any) -> Any:
        return env.client.post(path, json=body, headers=env.h())

    bad_json = env.client.post(
        "/api/v2/alerts", data="{", content_type="application/json", headers=env.h()
    )
    assert bad_json.status_code == 400 and bad_json.json["code"] == 400
    assert bad_json.json["message"].startswith('parsing alerts body from "" failed, because')
    obj = post("/api/v2/alerts", {"labels": {}})
    assert obj.status_code == 400 and "expected an array of alerts" in obj.json["message"]
    typed = post("/api/v2/alerts", [prom_alert("Good"), {"labels": {"a": 1}}])
    assert typed.status_code == 400 and typed.json["code"] == 400
    assert "[1].labels.a: expected a string, got a number" in typed.json["message"]
    when = post("/api/v2/alerts", [{**prom_alert("Good"), "startsAt": "yesterday"}])
    assert when.status_code == 400 and "[0].startsAt" in when.json["message"]
    no_labels = post("/api/v2/alerts", [prom_alert("Good"), {"annotations": {}}])
    assert no_labels.status_code == 422
    assert no_labels.json == {"code": 602, "message": "1.labels in body is required"}
    assert env.get("/api/v2/alerts") == []  # the valid alert of a refused body is not kept
    empty = env.client.post("/api/v2/alerts", headers=env.h())
    assert empty.status_code == 422
    assert empty.json == {"code": 602, "message": "alerts in body is required"}
    text = env.client.post("/api/v2/silences", data="x", content_type="text/plain", headers=env.h())
    assert text.status_code == 415 and text.json["code"] == 415
    assert text.json["message"] == (
        'unsupported media type "text/plain", only [application/json] are allowed'
    )

    def silence_error(**fields: Any) -> tuple[int, Any]:
        body = {k: v for k, v in _silence(**fields).items() if v is not None}
        rv = post("/api/v2/silences", body)
        return rv.status_code, rv.json

    assert silence_error(comment=None, createdBy=None) == (
        422,
        {"code": 602, "message": "comment in body is required"},
    )
    assert silence_error(matchers=[]) == (
        422,
        {"code": 612, "message": "matchers in body should have at least 1 items"},
    )
    assert silence_error(matchers=[{"name": "a", "value": "b"}]) == (
        422,
        {"code": 602, "message": "matchers.0.isRegex in body is required"},
    )
    assert silence_error(startsAt=None)[1]["message"] == "startsAt in body is required"
    status, error = silence_error(createdBy=7, comment=None)  # a type error comes first
    assert status == 400 and error["code"] == 400
    assert "createdBy: expected a string, got a number" in error["message"]
    status, error = silence_error(matchers=[{"name": "a", "value": "b", "isRegex": "no"}])
    assert status == 400 and "matchers[0].isRegex: expected a boolean" in error["message"]
    assert post("/api/v2/silences", [_silence()]).json["code"] == 400
    assert env.get("/api/v2/silences") == [] and env.audit == []
    # The silenceID path parameter is a UUID (strfmt.UUID): 422, code 601.
    for method in (env.client.get, env.client.delete):
        rv = method("/api/v2/silence/not-a-uuid", headers=env.h())
        assert rv.status_code == 422
        assert rv.json == {
            "code": 601,
            "message": 'silenceID in path must be of type strfmt.UUID: "not-a-uuid"',
        }


def test_generator_url_is_left_out_when_empty_as_alertmanager(env: Env) -> None:
    bare = {k: v for k, v in prom_alert("NoSource").items() if k != "generatorURL"}
    assert env.post_alerts([bare, prom_alert("WithSource")]).status_code == 200
    urls = {a["labels"]["alertname"]: a.get("generatorURL") for a in env.get("/api/v2/alerts")}
    assert urls == {"NoSource": None, "WithSource": prom_alert("X")["generatorURL"]}


def test_grafana_alert_list_filters_flags_and_receiver(env: Env) -> None:
    env.post_alerts(
        [
            prom_alert("InstanceDown", severity="critical", instance="web1"),
            prom_alert("SlowPage", severity="warning", instance="web1"),
            prom_alert("SlowPage", severity="warning", instance="web2"),
        ]
    )
    env.process()
    # Grafana: fetchAlerts(matchers, silenced, active, inhibited)
    flt = quote('alertname="SlowPage"')
    slow = env.get(f"/api/v2/alerts?filter={flt}&silenced=true&active=true&inhibited=true")
    assert {a["labels"]["instance"] for a in slow} == {"web1", "web2"}
    web1 = next(a for a in slow if a["labels"]["instance"] == "web1")
    assert web1["status"]["state"] == "suppressed" and len(web1["status"]["inhibitedBy"]) == 1
    shown = env.get(f"/api/v2/alerts?filter={flt}&inhibited=false")
    assert [a["labels"]["instance"] for a in shown] == ["web2"]
    regex = quote('instance=~"web.*"')
    assert len(env.get(f"/api/v2/alerts?filter={regex}&filter={flt}")) == 2
    assert [a["labels"]["alertname"] for a in env.get("/api/v2/alerts?receiver=pag.*")] == [
        "InstanceDown"
    ]
    assert env.get("/api/v2/alerts?receiver=pag") == []  # anchored, as Alertmanager
    assert env.get("/api/v2/alerts?active=false") == [web1]
    # go-openapi booleans: the last value counts, empty is the default, unknown is false.
    assert env.get("/api/v2/alerts?active=no") == [web1]
    assert env.get("/api/v2/alerts?active=bogus") == [web1]
    assert len(env.get("/api/v2/alerts?active=false&active=yes")) == 3
    assert len(env.get("/api/v2/alerts?active=")) == 3
    # Grafana's silence pages: silenced alerts only.
    assert env.get("/api/v2/alerts?silenced=true&active=false&inhibited=false") == []
    bad = env.client.get("/api/v2/alerts?filter=%7Balertname%3D%22x%22", headers=env.h("viewer"))
    assert bad.status_code == 400 and "bad matcher format" in bad.json


def test_a_just_posted_alert_inhibits_at_once_in_the_api_and_in_notifications(
    env: Env,
) -> None:
    """As Alertmanager's inhibitor, which reads the alert store: a source alert counts as
    soon as it is posted, before any pass has grouped it."""
    env.post_alerts([prom_alert("SlowPage", severity="warning", instance="web1")])
    env.manager.process([], env.clock.now)  # grouped and due; not delivered yet
    env.post_alerts([prom_alert("InstanceDown", severity="critical", instance="web1")])
    source = next(a for a in env.get("/api/v2/alerts") if a["labels"]["alertname"] != "SlowPage")
    slow = next(a for a in env.get("/api/v2/alerts") if a["labels"]["alertname"] == "SlowPage")
    assert slow["status"]["state"] == "suppressed"
    assert slow["status"]["inhibitedBy"] == [source["fingerprint"]]
    assert [a["labels"]["alertname"] for a in env.get("/api/v2/alerts?inhibited=false")] == [
        "InstanceDown"
    ]
    env.manager.deliver_now()  # the queued SlowPage notification is worked out now
    assert [a.labels["alertname"] for n in env.team.sent for a in n.alerts] == []
    # Both posted together and never grouped: the same.
    env.post_alerts(
        [
            prom_alert("SlowPage", severity="warning", instance="web2"),
            prom_alert("InstanceDown", severity="critical", instance="web2"),
        ]
    )
    web2 = [a for a in env.get("/api/v2/alerts") if a["labels"]["instance"] == "web2"]
    assert {a["labels"]["alertname"]: a["status"]["state"] for a in web2} == {
        "SlowPage": "suppressed",
        "InstanceDown": "active",
    }
    # A source whose end has passed stops inhibiting at once, before the next pass.
    env.clock.now = T0 + 61  # prom_alert's endsAt is T0 + 60
    env.post_alerts(
        [{**prom_alert("SlowPage", severity="warning", instance="web1"), "endsAt": None}]
    )
    slow = next(a for a in env.get("/api/v2/alerts") if a["labels"]["instance"] == "web1")
    assert slow["status"] == {**slow["status"], "state": "active", "inhibitedBy": []}


def test_updated_at_is_when_the_alert_was_last_received(env: Env) -> None:
    """Alertmanager's ``UpdatedAt``: set to the time of each post, not the request's."""
    env.post_alerts([prom_alert("SlowPage", severity="warning", instance="a")])
    env.clock.now = T0 + 30
    first = env.get("/api/v2/alerts")[0]
    assert first["updatedAt"] == format_time(T0)
    env.process()
    assert env.get("/api/v2/alerts")[0]["updatedAt"] == format_time(T0)
    env.post_alerts([prom_alert("SlowPage", severity="warning", instance="a")])
    env.clock.now = T0 + 50
    assert env.get("/api/v2/alerts")[0]["updatedAt"] == format_time(T0 + 30)
    groups = env.get("/api/v2/alerts/groups")
    assert groups[0]["alerts"][0]["updatedAt"] == format_time(T0 + 30)


def test_grafana_groups_status_and_receivers(env: Env) -> None:
    env.post_alerts(
        [prom_alert("SlowPage", severity="warning", instance=i) for i in ("a", "b")]
        + [prom_alert("DiskFull", severity="critical", instance="db1")]
    )
    env.process()
    groups = env.get("/api/v2/alerts/groups")
    shape = sorted((g["receiver"]["name"], g["labels"], len(g["alerts"])) for g in groups)
    assert shape == [
        ("pager", {"alertname": "DiskFull", "instance": "db1"}, 1),
        ("team", {"alertname": "SlowPage"}, 2),
    ]
    assert [g["receiver"]["name"] for g in env.get("/api/v2/alerts/groups?receiver=team")] == [
        "team"
    ]
    flt = quote('instance="a"')
    only_a = env.get(f"/api/v2/alerts/groups?filter={flt}")
    assert [[a["labels"]["instance"] for a in g["alerts"]] for g in only_a] == [["a"]]
    status = env.get("/api/v2/status")
    assert status["cluster"]["status"] == "disabled"
    assert set(status["versionInfo"]) == {
        "branch",
        "buildDate",
        "buildUser",
        "goVersion",
        "revision",
        "version",
    }
    assert yaml.safe_load(status["config"]["original"]) == yaml.safe_load(CONFIG)
    assert status["uptime"] == format_time(T0)
    assert env.get("/api/v2/receivers") == [{"name": "pager"}, {"name": "team"}]
    for path in ("/-/healthy", "/-/ready"):
        assert env.client.get(path).status_code == 200


SECRETS = """
global:
  smtp_smarthost: mail.example:587
  smtp_from: vigil@example.org
  smtp_auth_username: vigil
  smtp_auth_password: hunter2-smtp
route: {receiver: team}
receivers:
  - name: team
    webhook_configs:
      - url: http://127.0.0.1:9/team
        http_config: {basic_auth: {username: u, password: hunter2-basic}}
    slack_configs:
      - api_url: https://hooks.slack.example/services/T0/B0/hunter2-slack
        channel: '#ops'
    email_configs: [{to: ops@example.org}]
"""


def test_status_shows_the_config_with_secrets_hidden_as_alertmanager(tmp_path: Path) -> None:
    env = Env(tmp_path, SECRETS)
    try:
        original = env.get("/api/v2/status")["config"]["original"]
    finally:
        env.manager.close()
    assert "hunter2" not in original
    shown = yaml.safe_load(original)
    assert shown["global"]["smtp_auth_password"] == "<secret>"
    assert shown["global"]["smtp_auth_username"] == "vigil"
    team = shown["receivers"][0]
    assert team["webhook_configs"][0]["http_config"]["basic_auth"]["password"] == "<secret>"
    assert team["webhook_configs"][0]["url"] == "http://127.0.0.1:9/team"  # as in 0.25
    assert team["slack_configs"][0] == {"api_url": "<secret>", "channel": "#ops"}
    assert shown["route"] == {"receiver": "team"}


def _silence(**over: Any) -> dict[str, Any]:
    """What Grafana's silence editor posts."""
    body = {
        "matchers": [{"name": "alertname", "value": "SlowPage", "isRegex": False, "isEqual": True}],
        "startsAt": format_time(T0),
        "endsAt": format_time(T0 + 7200),
        "createdBy": "ana",
        "comment": "deploy window",
    }
    return {**body, **over}


def test_grafana_silence_create_list_update_and_expire_with_audit(env: Env) -> None:
    env.post_alerts([prom_alert("SlowPage", severity="warning", instance="a")])
    rv = env.client.post("/api/v2/silences", json=_silence(), headers=env.h())
    assert rv.status_code == 200
    sid = rv.json["silenceID"]
    env.process()
    alert = env.get("/api/v2/alerts")[0]
    assert alert["status"] == {
        "inhibitedBy": [],
        "mutedBy": [],
        "silencedBy": [sid],
        "state": "suppressed",
    }
    silenced_page = "/api/v2/alerts?silenced=true&active=false&inhibited=false"
    assert [a["fingerprint"] for a in env.get(silenced_page)] == [alert["fingerprint"]]
    assert env.team.sent == []
    got = env.get(f"/api/v2/silence/{sid}")
    assert got == {
        "id": sid,
        "status": {"state": "active"},
        "annotations": {},
        "updatedAt": format_time(T0),
        "comment": "deploy window",
        "createdBy": "ana",
        "endsAt": format_time(T0 + 7200),
        "matchers": [{"isEqual": True, "isRegex": False, "name": "alertname", "value": "SlowPage"}],
        "startsAt": format_time(T0),
    }
    flt = quote('alertname="SlowPage"')
    assert [s["id"] for s in env.get(f"/api/v2/silences?filter={flt}")] == [sid]
    other = quote('alertname="Other"')
    assert env.get(f"/api/v2/silences?filter={other}") == []
    # Grafana's editor posts the id back. Same matchers and start, a later end: updated
    # in place, as Alertmanager's canUpdate allows.
    env.clock.now += 10
    longer = _silence(id=sid, comment="longer", endsAt=format_time(T0 + 9000))
    rv = env.client.post("/api/v2/silences", json=longer, headers=env.h())
    assert rv.json == {"silenceID": sid}
    kept = env.get(f"/api/v2/silence/{sid}")
    assert (kept["comment"], kept["endsAt"], kept["updatedAt"]) == (
        "longer",
        format_time(T0 + 9000),
        format_time(T0 + 10),
    )
    # Other matchers: the old one is expired and a new one replaces it.
    other = [{"name": "alertname", "value": "Slow.*", "isRegex": True, "isEqual": True}]
    rv = env.client.post("/api/v2/silences", json=_silence(id=sid, matchers=other), headers=env.h())
    new = rv.json["silenceID"]
    states = {s["id"]: s["status"]["state"] for s in env.get("/api/v2/silences")}
    assert states == {new: "active", sid: "expired"}
    assert [s["id"] for s in env.get("/api/v2/silences?expired=false")] == [new]
    assert [s["id"] for s in env.get("/api/v2/silences?active=false&pending=0")] == [sid]
    assert env.client.delete(f"/api/v2/silence/{new}", headers=env.h()).status_code == 200
    assert env.get(f"/api/v2/silence/{new}")["status"]["state"] == "expired"
    # Expiring it again changes nothing (Alertmanager's expire returns nil for expired).
    assert env.client.delete(f"/api/v2/silence/{new}", headers=env.h()).status_code == 200
    # "Recreate" of an expired silence posts its id with a new period: a new silence.
    env.clock.now += 60
    again = _silence(id=new, startsAt=format_time(env.clock.now), endsAt=format_time(T0 + 7200))
    rv = env.client.post("/api/v2/silences", json=again, headers=env.h())
    assert rv.status_code == 200 and rv.json["silenceID"] not in (sid, new)
    assert env.get(f"/api/v2/silence/{new}")["status"]["state"] == "expired"
    actions = [(e.doc["event"]["action"], e.doc["user"]["name"]) for e in env.audit]
    assert actions == [
        ("silence-add", "operator-bot"),
        ("silence-add", "operator-bot"),
        ("silence-add", "operator-bot"),
        ("silence-expire", "operator-bot"),
        ("silence-add", "operator-bot"),
    ]
    assert env.audit[0].doc["labels"]["silence"] == sid
    assert "updated" in env.audit[1].doc["message"]
    assert f"replaced {sid} by" in env.audit[2].doc["message"]


def test_an_empty_creator_is_accepted_and_the_audit_names_the_caller(env: Env) -> None:
    """Alertmanager 0.25 accepts ``createdBy: ""`` (the schema wants the field, its
    ``validateSilence`` no content); the audit event still says who called."""
    rv = env.client.post("/api/v2/silences", json=_silence(createdBy=""), headers=env.h())
    assert rv.status_code == 200, rv.json
    sid = rv.json["silenceID"]
    assert env.get(f"/api/v2/silence/{sid}")["createdBy"] == ""
    assert [e.doc["user"]["name"] for e in env.audit] == ["operator-bot"]


def test_silence_errors_as_alertmanager(env: Env) -> None:
    def post(body: Any) -> Any:
        return env.client.post("/api/v2/silences", json=body, headers=env.h())

    past = post(_silence(endsAt=format_time(T0 - 1), startsAt=format_time(T0 - 60)))
    assert past.status_code == 400 and "end time can't be in the past" in past.json
    reversed_ = post(_silence(endsAt=format_time(T0 + 1), startsAt=format_time(T0 + 60)))
    assert "start time must be before end time" in reversed_.json
    empty = post(_silence(matchers=[{"name": "a", "value": "", "isRegex": False}]))
    assert empty.status_code == 400 and "must not match the empty string" in empty.json
    regex = post(_silence(matchers=[{"name": "a", "value": "(", "isRegex": True}]))
    assert regex.status_code == 400
    unknown = "6f1c1c54-5f34-4b51-9d08-6d9d9d1e1234"
    assert post(_silence(id=unknown)).status_code == 404
    assert env.client.get(f"/api/v2/silence/{unknown}", headers=env.h()).status_code == 404
    assert env.client.delete(f"/api/v2/silence/{unknown}", headers=env.h()).status_code == 404
    assert env.audit == []


def test_roles_viewer_reads_operator_writes(env: Env) -> None:
    assert env.client.get("/api/v2/alerts").status_code == 401
    assert (
        env.client.post(
            "/api/v2/alerts", json=[prom_alert("X")], headers=env.h("viewer")
        ).status_code
        == 403
    )
    assert (
        env.client.post("/api/v2/silences", json=_silence(), headers=env.h("viewer")).status_code
        == 403
    )
    # Prometheus' basic_auth / Grafana's basic auth: any user name, the token as password.
    import base64

    basic = base64.b64encode(f"prometheus:{env.tokens['operator']}".encode()).decode()
    rv = env.client.post(
        "/api/v2/alerts", json=[prom_alert("X")], headers={"Authorization": f"Basic {basic}"}
    )
    assert rv.status_code == 200


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=30),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "labels",
                        "annotations",
                        "startsAt",
                        "endsAt",
                        "generatorURL",
                        "matchers",
                        "name",
                        "value",
                        "isRegex",
                        "isEqual",
                        "createdBy",
                        "comment",
                        "id",
                        "a",
                    ]
                ),
                inner,
                max_size=6,
            )
        ),
        max_leaves=12,
    )
)
def test_fuzz_hostile_bodies_get_200_400_or_422_never_500(env: Env, body: Any) -> None:
    for path in ("/api/v2/alerts", "/api/v2/silences"):
        rv = env.client.post(path, json=body, headers=env.h())
        assert rv.status_code in (200, 400, 404, 422), (path, body, rv.data)
        if rv.status_code == 422:  # go-openapi's validation error
            assert set(rv.json) == {"code", "message"} and rv.json["code"] >= 600


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    raw=st.binary(max_size=64) | st.text(alphabet='[]{}":,0123456789.-eEtrufalsn \\', max_size=40)
)
def test_fuzz_raw_bodies_are_refused_with_a_coded_error_or_taken(
    env: Env, raw: bytes | str
) -> None:
    """Bytes that may not be JSON at all: a go-openapi ``{code, message}`` error (400
    parse, 422 required) or a handler's answer; never a 500."""
    for path in ("/api/v2/alerts", "/api/v2/silences"):
        rv = env.client.post(path, data=raw, content_type="application/json", headers=env.h())
        assert rv.status_code in (200, 400, 404, 422), (path, raw, rv.data)
        if rv.status_code != 200:
            error = rv.json
            assert isinstance(error, str) or set(error) == {"code", "message"}, error
            assert rv.status_code != 422 or isinstance(error, dict)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    flt=st.text(alphabet='a_=~!"{},.*()[]|\\ x1', max_size=24),
    receiver=st.text(alphabet="ab.*()[]|\\+?{}", max_size=12),
    flag=st.sampled_from(["true", "false", "1", "0", "yes", ""]),
)
def test_fuzz_hostile_query_parameters_get_200_or_400(
    env: Env, flt: str, receiver: str, flag: str
) -> None:
    q = f"filter={quote(flt)}&receiver={quote(receiver)}&silenced={quote(flag)}"
    for path in ("/api/v2/alerts", "/api/v2/alerts/groups", "/api/v2/silences"):
        rv = env.client.get(f"{path}?{q}", headers=env.h("viewer"))
        assert rv.status_code in (200, 400), (path, q, rv.data)
        assert isinstance(rv.json, list if rv.status_code == 200 else str)
