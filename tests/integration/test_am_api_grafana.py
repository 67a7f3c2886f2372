"""Grafana's Alertmanager data source (implementation *Prometheus*) against a real
``vigil alert``: the requests Grafana sends, in its order, each answer checked
against Alertmanager's OpenAPI schema and against what Grafana's proxy demands.

What was read (2026-11-30) to write this, rather than memory:

* grafana/grafana ``public/app/plugins/datasource/alertmanager/DataSource.ts``
  (commit 0524cbafcfcf42e76480675784159fd31136e4d2): "Save & test" for
  implementation ``prometheus`` first asks ``{url}/api/v1/status/buildinfo``
  (``discoverAlertmanagerFeaturesByUrl`` in ``features/alerting/unified/api/buildInfo.ts``,
  255a38ebd2ecba702310ac7c173f2e1c27198ff4; any answer but Mimir's is fine), then
  ``{url}/alertmanager/api/v2/status`` — a 200 there fails the test ("detected a
  Mimir or Cortex endpoint") — then ``{url}/api/v2/status``, which must be 200.
* grafana/grafana ``pkg/services/ngalert/api/lotex_am.go``
  (023625e99fc441210d185860e9a9eba60c40d3d5): for implementation ``prometheus`` the
  backend forwards ``/api/alertmanager/{uid}/…`` to ``/api/v2/silences``,
  ``/api/v2/silence/{id}``, ``/api/v2/status``, ``/api/v2/alerts/groups`` and
  ``/api/v2/alerts`` (no configuration endpoint), keeping the query string
  (``withPath`` only replaces the path). ``pkg/services/ngalert/api/util.go``
  (00100d52a5e6527aa4f1e60aaa93b8bde5f3008f): a 2xx answer must have a Content-Type
  containing ``json`` and decode into Alertmanager's Go models; ≥ 400 passes the
  status and body on; DELETE's body is read as a message. The status is decoded
  by ``GettableStatus.UnmarshalJSON``
  (``pkg/services/ngalert/api/tooling/definitions/alertmanager.go``), which parses
  ``config.original`` with Alertmanager's own ``config.Config`` — here checked with
  the real ``amtool check-config``.
* grafana/grafana ``public/app/features/alerting/unified/api/alertmanagerApi.ts``
  (4ce717424b3a585d2d195981b3a5883a3356078a; ``filter`` repeated, one per matcher,
  booleans only when set), ``alertSilencesApi.ts``
  (7087cde240ff52d6ec409a5daa7da288393e3e48; ``ruleMetadata``/``accesscontrol``
  parameters, ``DELETE /api/v2/silence/{id}``), ``alertmanager.ts``
  (829450ec0104e0fd3d71baa9901cc03942de53ac; ``fetchStatus``, ``fetchAlertGroups``),
  ``components/silences/SilencesTable.tsx`` and ``useSilenceViewData`` (alerts with
  ``silenced=true&active=false&inhibited=false``; 404 means "not found"),
  ``SilencesEditor.tsx`` (the body: ``id`` when editing, ``startsAt``, ``endsAt``,
  ``comment``, ``createdBy``, ``matchers`` of ``{name, value, isEqual, isRegex}``;
  "Recreate" of an expired silence sends its id with a new period),
  ``utils/matchers.ts`` ``encodeMatcher`` (``name="value"``).
* prometheus/alertmanager ``api/v2/openapi.yaml`` at v0.25.0 and at
  68fb2d5759b3a92c0bb2a1a13d4ef7ff5b06256d (after v0.34.0): ``SCHEMA`` below is its
  response definitions written out, with the required fields of both (0.34 adds
  ``mutedBy``, ``routeLabels`` and a silence's ``annotations``); a field left out
  when empty (``generatorURL``) is so in Alertmanager too (``omitempty``).

About 5 s (one process start).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema_rs
import pytest
import yaml
from alert_process import alert_env, running_alert
from conftest import free_port, require_server, wait_until
from webhook_receiver import Receiver

from alerting.am.api import format_time
from vigil.auth import UserStore

AM = """\
route:
  receiver: team
  group_by: [alertname]
  group_wait: 0s
  group_interval: 1s
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
inhibit_rules:
  - source_matchers: ['alertname="InstanceDown"']
    target_matchers: ['severity="warning"']
    equal: [instance]
receivers:
  - name: team
    webhook_configs: [{{url: '{url}'}}]
  - name: pager
    webhook_configs: [{{url: '{url}'}}]
"""

_DATE = {"type": "string", "format": "date-time"}
_STR = {"type": "string"}
_STRS = {"type": "array", "items": _STR}
_VERSION_INFO = ("version", "revision", "branch", "buildUser", "buildDate", "goVersion")
DEFINITIONS: dict[str, Any] = {
    "labelSet": {"type": "object", "additionalProperties": _STR},
    "receiverReference": {
        "type": "object",
        "properties": {"name": _STR},
        "required": ["name"],
    },
    "receiver": {
        "type": "object",
        "properties": {"name": _STR, "labels": {"$ref": "#/definitions/labelSet"}},
        "required": ["name"],
    },
    "alertStatus": {
        "type": "object",
        "properties": {
            "state": {"type": "string", "enum": ["unprocessed", "active", "suppressed"]},
            "silencedBy": _STRS,
            "inhibitedBy": _STRS,
            "mutedBy": _STRS,
        },
        "required": ["state", "silencedBy", "inhibitedBy", "mutedBy"],
    },
    "gettableAlert": {
        "type": "object",
        "properties": {
            "annotations": {"$ref": "#/definitions/labelSet"},
            "receivers": {"type": "array", "items": {"$ref": "#/definitions/receiverReference"}},
            "fingerprint": _STR,
            "startsAt": _DATE,
            "updatedAt": _DATE,
            "endsAt": _DATE,
            "status": {"$ref": "#/definitions/alertStatus"},
            "labels": {"$ref": "#/definitions/labelSet"},
            "generatorURL": {"type": "string", "format": "uri"},
        },
        "required": [
            "receivers",
            "fingerprint",
            "startsAt",
            "updatedAt",
            "endsAt",
            "annotations",
            "status",
            "labels",
        ],
    },
    "alertGroup": {
        "type": "object",
        "properties": {
            "labels": {"$ref": "#/definitions/labelSet"},
            "routeLabels": {"$ref": "#/definitions/labelSet"},
            "receiver": {"$ref": "#/definitions/receiverReference"},
            "alerts": {"type": "array", "items": {"$ref": "#/definitions/gettableAlert"}},
        },
        "required": ["labels", "routeLabels", "receiver", "alerts"],
    },
    "matcher": {
        "type": "object",
        "properties": {
            "name": _STR,
            "value": _STR,
            "isRegex": {"type": "boolean"},
            "isEqual": {"type": "boolean"},
        },
        "required": ["name", "value", "isRegex"],
    },
    "gettableSilence": {
        "type": "object",
        "properties": {
            "id": _STR,
            "status": {
                "type": "object",
                "properties": {
                    "state": {"type": "string", "enum": ["expired", "active", "pending"]}
                },
                "required": ["state"],
            },
            "updatedAt": _DATE,
            "matchers": {
                "type": "array",
                "items": {"$ref": "#/definitions/matcher"},
                "minItems": 1,
            },
            "startsAt": _DATE,
            "endsAt": _DATE,
            "createdBy": _STR,
            "comment": _STR,
            "annotations": {"$ref": "#/definitions/labelSet"},
        },
        "required": [
            "id",
            "status",
            "updatedAt",
            "annotations",
            "matchers",
            "startsAt",
            "endsAt",
            "createdBy",
            "comment",
        ],
    },
    "alertmanagerStatus": {
        "type": "object",
        "properties": {
            "cluster": {
                "type": "object",
                "properties": {
                    "name": _STR,
                    "status": {"type": "string", "enum": ["ready", "settling", "disabled"]},
                    "peers": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"name": _STR, "address": _STR},
                            "required": ["name", "address"],
                        },
                    },
                },
                "required": ["status"],
            },
            "versionInfo": {
                "type": "object",
                "properties": {
                    k: _STR
                    for k in (
                        "version",
                        "revision",
                        "branch",
                        "buildUser",
                        "buildDate",
                        "goVersion",
                    )
                },
                "required": [
                    "version",
                    "revision",
                    "branch",
                    "buildUser",
                    "buildDate",
                    "goVersion",
                ],
            },
            "config": {
                "type": "object",
                "properties": {"original": _STR},
                "required": ["original"],
            },
            "uptime": _DATE,
        },
        "required": ["cluster", "versionInfo", "config", "uptime"],
    },
    "postSilencesOK": {
        "type": "object",
        "properties": {"silenceID": _STR},
        "required": ["silenceID"],  # Grafana reads it; Alertmanager always sends it
    },
}


def _validator(name: str, array: bool = False) -> Any:
    ref = {"$ref": f"#/definitions/{name}"}
    schema = {"type": "array", "items": ref} if array else ref
    return jsonschema_rs.Draft4Validator(
        {**schema, "definitions": DEFINITIONS}, validate_formats=True
    )


SCHEMA = {
    "status": _validator("alertmanagerStatus"),
    "alerts": _validator("gettableAlert", array=True),
    "groups": _validator("alertGroup", array=True),
    "silences": _validator("gettableSilence", array=True),
    "silence": _validator("gettableSilence"),
    "receivers": _validator("receiver", array=True),
    "silenceID": _validator("postSilencesOK"),
    "error": jsonschema_rs.Draft4Validator({"type": "string"}),
}


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Vigil:
    url: str
    operator: str
    viewer: str

    def call(self, method: str, path: str, body: object = None, token: str | None = None) -> Answer:
        """One request as Grafana's data source proxy sends it: Basic auth, the user name
        Grafana's and the password a Vigil token."""
        secret = base64.b64encode(f"grafana:{token or self.viewer}".encode()).decode()
        headers = {"Authorization": f"Basic {secret}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return Answer(r.status, r.headers.get("Content-Type", ""), r.read())
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, exc.headers.get("Content-Type", ""), exc.read())

    def grafana(self, path: str, schema: str, method: str = "GET", body: object = None) -> Any:
        """A request Grafana's backend proxies and decodes: 200, JSON, valid against
        Alertmanager's schema."""
        token = self.operator if method != "GET" else None
        rv = self.call(method, path, body, token)
        assert rv.status == 200, (method, path, rv.status, rv.body)
        assert "json" in rv.content_type, (path, rv.content_type)  # Grafana's jsonExtractor
        data = rv.json()
        errors = [e.message for e in SCHEMA[schema].iter_errors(data)]
        assert errors == [], (path, errors)
        return data


@pytest.fixture(scope="module")
def vigil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vigil]:
    tmp = tmp_path_factory.mktemp("amgrafana")
    receiver = Receiver()
    data = tmp / "data"
    data.mkdir()
    users = UserStore(data / "users.db")
    operator = users.create_token("grafana-editor", "operator")[1]
    viewer = users.create_token("grafana", "viewer")[1]
    (tmp / "rules.yaml").write_text("groups: []\n")
    (tmp / "am.yaml").write_text(AM.format(url=receiver.url))
    config = tmp / "vigil.yaml"
    config.write_text(
        f"data_dir: {data}\nalert:\n  rules: [{tmp / 'rules.yaml'}]\n  slos: []\n"
        f"  interval_s: 1\n  alertmanager_config: {tmp / 'am.yaml'}\n"
    )
    port = free_port()
    try:
        with running_alert(config, alert_env(port)):
            url = f"http://127.0.0.1:{port}"
            yield Vigil(url, operator, viewer)
    finally:
        receiver.close()


def test_grafana_save_and_test_and_the_config_it_parses(vigil: Vigil, tmp_path: Path) -> None:
    # DataSource.testDatasource, implementation "prometheus", in its order.
    assert vigil.call("GET", "/api/v1/status/buildinfo").status == 404  # not Mimir
    assert vigil.call("GET", "/alertmanager/api/v2/status").status == 404  # not Mimir/Cortex
    status = vigil.grafana("/api/v2/status", "status")
    assert status["cluster"]["status"] == "disabled"
    # Grafana's backend parses config.original with Alertmanager's config.Config: so
    # does the real amtool.
    amtool = shutil.which("amtool")
    if amtool is None:
        require_server("amtool", "not installed (scripts/install-system-deps installs it)")
    assert amtool is not None
    (tmp_path / "original.yaml").write_text(status["config"]["original"])
    checked = subprocess.run(
        [amtool, "check-config", str(tmp_path / "original.yaml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert {r["name"] for r in yaml.safe_load(status["config"]["original"])["receivers"]} == {
        "team",
        "pager",
    }
    assert vigil.grafana("/api/v2/receivers", "receivers") == [{"name": "pager"}, {"name": "team"}]


def _alert(name: str, **labels: str) -> dict[str, Any]:
    return {
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": f"{name} fires"},
        "endsAt": format_time(time.time() + 3600),
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
    }


def test_grafana_alert_and_silence_pages_request_by_request(vigil: Vigil) -> None:
    posted = vigil.call(
        "POST",
        "/api/v2/alerts",
        [
            _alert("InstanceDown", severity="critical", instance="web1"),
            _alert("SlowPage", severity="warning", instance="web1"),
            _alert("SlowPage", severity="warning", instance="web2"),
        ],
        vigil.operator,
    )
    assert posted.status == 200
    # Alerting > Groups: fetchAlertGroups, then the configuration (vanilla: the status).
    wait_until(
        "the alerts to be grouped",
        lambda: len(vigil.grafana("/api/v2/alerts/groups", "groups")) == 2,
        15,
    )
    groups = vigil.grafana("/api/v2/alerts/groups", "groups")
    assert sorted((g["receiver"]["name"], len(g["alerts"])) for g in groups) == [
        ("pager", 1),
        ("team", 2),
    ]
    vigil.grafana("/api/v2/status", "status")
    web1 = next(
        a
        for g in groups
        for a in g["alerts"]
        if a["labels"] == {"alertname": "SlowPage", "severity": "warning", "instance": "web1"}
    )
    assert web1["status"]["state"] == "suppressed" and len(web1["status"]["inhibitedBy"]) == 1

    # Silences page: the alerts it counts per silence, and the silences.
    silenced_only = "/api/v2/alerts?silenced=true&active=false&inhibited=false"
    assert vigil.grafana(silenced_only, "alerts") == []
    assert vigil.grafana("/api/v2/silences?ruleMetadata=true&accesscontrol=true", "silences") == []

    # New silence: the editor's preview (one filter per matcher), then the POST as
    # Grafana's backend re-marshals it (PostableSilence: no id, isEqual set).
    preview = (
        "/api/v2/alerts?filter="
        + quote('alertname="SlowPage"')
        + "&filter="
        + quote('instance="web2"')
    )
    assert [a["labels"]["instance"] for a in vigil.grafana(preview, "alerts")] == ["web2"]
    now = time.time()
    body = {
        "comment": "deploy window",
        "createdBy": "Ana",
        "endsAt": format_time(now + 7200),
        "matchers": [
            {"isEqual": True, "isRegex": False, "name": "alertname", "value": "SlowPage"},
            {"isEqual": True, "isRegex": False, "name": "instance", "value": "web2"},
        ],
        "startsAt": format_time(now),
    }
    sid = vigil.grafana("/api/v2/silences", "silenceID", "POST", body)["silenceID"]
    shown = vigil.grafana(f"/api/v2/silence/{sid}?ruleMetadata=true&accesscontrol=true", "silence")
    assert (shown["status"]["state"], shown["createdBy"]) == ("active", "Ana")
    (silenced,) = vigil.grafana(silenced_only, "alerts")
    assert silenced["labels"]["instance"] == "web2" and silenced["status"]["silencedBy"] == [sid]
    assert [s["id"] for s in vigil.grafana("/api/v2/silences", "silences")] == [sid]

    # Edit: same matchers and start, longer: Alertmanager keeps the id.
    longer = {**body, "id": sid, "endsAt": format_time(now + 10800)}
    assert vigil.grafana("/api/v2/silences", "silenceID", "POST", longer) == {"silenceID": sid}
    # Edit the matchers: a new silence replaces it.
    wider = {**longer, "matchers": body["matchers"][:1]}
    new = vigil.grafana("/api/v2/silences", "silenceID", "POST", wider)["silenceID"]
    assert new != sid
    assert vigil.grafana(f"/api/v2/silence/{sid}", "silence")["status"]["state"] == "expired"
    assert len(vigil.grafana(silenced_only, "alerts")) == 1  # web1 is inhibited, not listed

    # Unsilence: DELETE (twice changes nothing); Grafana reads the body as a message.
    assert vigil.call("DELETE", f"/api/v2/silence/{new}", token=vigil.operator).status == 200
    assert vigil.call("DELETE", f"/api/v2/silence/{new}", token=vigil.operator).status == 200
    assert vigil.grafana(silenced_only, "alerts") == []
    # Recreate: the expired silence's id with a new period.
    recreate = {**wider, "id": new, "startsAt": format_time(time.time())}
    again = vigil.grafana("/api/v2/silences", "silenceID", "POST", recreate)["silenceID"]
    assert again not in (sid, new)
    states = {s["id"]: s["status"]["state"] for s in vigil.grafana("/api/v2/silences", "silences")}
    assert states == {sid: "expired", new: "expired", again: "active"}

    # Errors Grafana passes on: 404 for an unknown silence (the view's "not found"),
    # 400 with a text message for a bad matcher, 403 for a viewer's change.
    missing = vigil.call("GET", "/api/v2/silence/6f1c1c54-5f34-4b51-9d08-6d9d9d1e1234")
    assert missing.status == 404 and "json" in missing.content_type
    bad = vigil.call("GET", "/api/v2/alerts?filter=" + quote('alertname="x'))
    assert bad.status == 400 and "json" in bad.content_type
    assert SCHEMA["error"].is_valid(bad.json()) and "bad matcher format" in bad.json()
    refused = vigil.call("POST", "/api/v2/silences", body)  # the viewer token
    assert refused.status == 403
