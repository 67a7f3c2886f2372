"""Vigil renders Alertmanager notification templates as Debian's real ``amtool`` (0.25) does.

Each case renders one template text with the same data (``tests/files/am_templates/
data.json``, the webhook payload's JSON that ``amtool template render --template.data``
reads) and the same template files (Alertmanager's default templates and
``custom.tmpl``, which uses the functions, KV methods, range/if/with/printf) in amtool
and in Vigil, and compares the output byte for byte; the HTML cases run Go's
html/template (``--template.type=html``). Without amtool this skips locally and fails
under CI=true.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import require_server

from alerting.am.dispatch import api_alert
from alerting.am.templates import NotificationTemplates, data_from_json, group_data
from alerting.notify.base import GroupNotification
from alerting.notify.webhook import payload
from alerting.state import Alert
from alerting.templates import TemplateError

FILES = Path(__file__).resolve().parents[1] / "files" / "am_templates"
DEBIAN = Path("/usr/share/prometheus/alertmanager")

TEXT_CASES = [
    '{{ template "slack.default.title" . }}',
    '{{ template "slack.default.fallback" . }}',
    '{{ template "slack.default.titlelink" . }}',
    '{{ template "slack.default.username" . }}',
    '{{ template "email.default.subject" . }}',
    '{{ template "__text_alert_list" .Alerts }}',
    '{{ template "opsgenie.default.description" . }}',
    '{{ template "wechat.default.message" . }}',
    '{{ template "custom.title" . }}',
    '{{ template "custom.text" . }}',
    '{{ template "custom.labels" . }}',
    '{{ template "custom.funcs" . }}',
    "{{ range .Alerts.Resolved }}{{ .EndsAt }} {{ .Fingerprint }}{{ end }}",
    "{{ with .CommonAnnotations.nothing }}yes{{ else }}no{{ end }} {{ len .Alerts.Firing }}",
    "{{ $n := len .Alerts }}{{ if gt $n 1 }}{{ $n }} alerts{{ end }} {{ .GroupLabels.Names }}",
    "{{ .CommonLabels.severity | toUpper }}{{/* a comment */}} {{- .Status -}} !",
    '{{ (index .Alerts 0).StartsAt.Format "2006-01-02 15:04" }}'
    ' {{ ((.CommonLabels).Remove (stringSlice "severity")).Names }}',
]
HTML_CASES = [
    '{{ template "email.default.html" . }}',
    '{{ template "custom.html" . }}',
    "<b>{{ .Receiver }}</b> {{ .CommonAnnotations.summary | html }}",
    '{{ "a+b<" | html }} {{ html "a" 1 }} {{ "a b&" | urlquery }}'
    ' <a href="/x?q={{ "a b+" | urlquery }}&r={{ "a b+" }}">{{ "c d" | urlquery }}</a>',
    '<a href="{{ "http://x/a b?c=d e" | html }}" title=x{{ .Status }}>t</a>'
    '<a href=\'{{ "it\'s" }}\'>s</a><a href="{{ .ExternalURL | urlquery }}">q</a>',
    '<A HREF="{{ .ExternalURL }}">u</A><div {{ "Title" }}="{{ "x" }}" {{ "onclick" }}="y"></div>',
    '<p>{{ .Receiver }}</p ><title id=x>{{ "<a>" }}</title><!-- x -->{{ safeHtml "<!-- k -->" }}',
    '<img src="{{ .ExternalURL }}/{{ .CommonAnnotations.summary }}"'
    ' alt="{{ safeHtml "<i>x</i>" }}">'
    '<a href="{{ "HTTPS://x.y/ä b" }}">{{ "ä" }}</a><a href="{{ "data:x" }}">d</a>'
    '<textarea>{{ safeHtml "<b>&amp;</b>" }}</textarea>{{ safeHtml "<b>&amp;</b>" }}',
]


@pytest.fixture(scope="module")
def amtool() -> str:
    path = shutil.which("amtool")
    if path is None or not (DEBIAN / "default.tmpl").exists():
        require_server("amtool", "not installed (scripts/install-system-deps installs it)")
    return path


def theirs(amtool: str, text: str, kind: str, data: Path = FILES / "data.json") -> str:
    cmd = [
        amtool,
        "template",
        "render",
        f"--template.glob={DEBIAN / 'default.tmpl'}",
        f"--template.glob={DEBIAN / 'email.tmpl'}",
        f"--template.glob={FILES / 'custom.tmpl'}",
        f"--template.data={data}",
        f"--template.type={kind}",
        f"--template.text={text}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True)
    return done.stdout


def ours(text: str, kind: str) -> str:
    templates = NotificationTemplates.load(["custom.tmpl"], FILES)
    data = data_from_json(json.loads((FILES / "data.json").read_text()))
    return templates.render(text, data, html=kind == "html")


@pytest.mark.parametrize(("text",), [(t,) for t in TEXT_CASES])
def test_text_template_renders_as_amtool(amtool: str, text: str) -> None:
    assert ours(text, "text") == theirs(amtool, text, "text")


@pytest.mark.parametrize(("text",), [(t,) for t in HTML_CASES])
def test_html_template_renders_as_amtool(amtool: str, text: str) -> None:
    assert ours(text, "html") == theirs(amtool, text, "html")


@pytest.mark.parametrize(
    ("text",),
    [
        ('{{ template "pagerduty.default.instances" . }}',),  # ranges over the data itself
        ('{{ template "no.such.template" . }}',),
        ("{{ .NoSuchField }}",),
        ('{{ join "," .Receiver }}',),
        ("{{ (index .Alerts 0) 1 }}",),
    ],
)
def test_template_failing_in_amtool_fails_in_vigil(amtool: str, text: str) -> None:
    with pytest.raises(subprocess.CalledProcessError):
        theirs(amtool, text, "text")
    with pytest.raises(TemplateError):
        ours(text, "text")


@pytest.mark.parametrize(
    ("text",),
    [
        ('{{ "c d" | urlquery | html }}',),  # a predefined escaper must come last
        ("<a title=x href={{ .ExternalURL }}/x?a={{ .Receiver }}>y</a>",),  # = unquoted
    ],
)
def test_html_template_failing_in_amtool_fails_in_vigil(amtool: str, text: str) -> None:
    with pytest.raises(subprocess.CalledProcessError):
        theirs(amtool, text, "html")
    with pytest.raises(TemplateError):
        ours(text, "html")


def test_shipped_default_templates_are_alertmanagers(amtool: str) -> None:
    shipped = (Path(__file__).resolve().parents[2] / "alerting" / "am" / "default.tmpl").read_text()
    for name in ("default.tmpl", "email.tmpl"):
        assert (DEBIAN / name).read_text() in shipped


def test_notification_data_of_engine_and_posted_alerts_renders_as_amtool(
    amtool: str, tmp_path: Path
) -> None:
    """A group with an alert of Vigil's engine and alerts posted to its API (with and without
    ``generatorURL``, firing until ``resolve_timeout`` or resolved): Vigil's template data
    renders as amtool renders the webhook payload of the same notification (firing alerts
    with Go's zero ``.EndsAt``, as Alertmanager hands them to templates)."""
    now = 1709622489.25
    engine = Alert("e1", {"alertname": "A", "i": "1"}, {}, "firing", 1.0, now - 90, now - 30.5)
    alerts = [
        dataclasses.replace(engine, expr='rate(x{job="shop"}[5m]) > 0.1'),
        api_alert({"alertname": "A", "i": "2"}, {}, now - 5, now + 300, now, "https://p:9090/g"),
        api_alert({"alertname": "A", "i": "3"}, {}, now - 600, now - 60.125, now),
    ]
    n = GroupNotification("team", "k", {"alertname": "A"}, alerts, external_url="http://v:8090")
    data = tmp_path / "data.json"
    data.write_text(json.dumps(payload(n.alerts, receiver="team", external_url=n.external_url)))
    text = (
        "{{ range .Alerts }}{{ .Status }} {{ .StartsAt }} {{ .EndsAt }} {{ .EndsAt.IsZero }}"
        " {{ .GeneratorURL }}|{{ end }}{{ .Status }} {{ len .Alerts.Firing }}"
    )
    ours_text = NotificationTemplates().render(text, group_data(n))
    assert ours_text == theirs(amtool, text, "text", data)
    assert "0001-01-01 00:00:00 +0000 UTC true https://p:9090/g|" in ours_text
