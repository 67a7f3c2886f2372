"""Loading and running Alertmanager notification templates: located errors at load (start
refused, reload keeps the last good configuration), bounded rendering, the data's methods."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from alerting.am.config import AMConfigError, load_config, parse_config
from alerting.am.dispatch import AlertManager, api_alert
from alerting.am.templates import MAX_FIELD_OUTPUT, NotificationTemplates, group_data
from alerting.notify.base import GroupDelivery, GroupNotification
from alerting.state import Alert
from alerting.templates import TemplateError

CONFIG = """\
templates: ['tmpl/*.tmpl']
route: {receiver: team}
receivers: [{name: team}]
"""


def write(tmp_path: Path, template: str) -> Path:
    (tmp_path / "tmpl").mkdir(exist_ok=True)
    (tmp_path / "tmpl" / "a.tmpl").write_text(template)
    path = tmp_path / "am.yml"
    path.write_text(CONFIG)
    return path


def test_template_syntax_error_is_located_at_its_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '{{ define "a" }}\nfine\n{{ .Labels | }}\n{{ end }}\n')
    with pytest.raises(AMConfigError, match=r"tmpl/a.tmpl:3: template: missing value"):
        load_config(path)
    path = write(tmp_path, '{{ define "a" }}\n\n{{ nosuch . }}{{ end }}')
    with pytest.raises(AMConfigError, match=r"a.tmpl:3: template: function 'nosuch' not"):
        load_config(path)
    path = write(tmp_path, '{{ define "a" }}\n{{ if . }}x\n')
    with pytest.raises(AMConfigError, match=r"a.tmpl:\d+: template: unexpected EOF"):
        load_config(path)


def test_reload_with_a_broken_template_keeps_the_last_good_config(tmp_path: Path) -> None:
    path = write(tmp_path, '{{ define "a" }}A{{ end }}')
    cfg = load_config(path)
    registry = CollectorRegistry()
    manager = AlertManager(
        cfg,
        tmp_path / "alerts.db",
        {},
        registry=registry,
        config_path=path,
        build_integrations=lambda c: {},
    )
    try:
        path_text = path.read_text()
        write(tmp_path, '{{ define "a" }}{{ end')
        path.write_text(path_text + "\n")  # the config file changes: a reload is tried
        assert manager.reload_if_changed() is False
        assert manager.config is cfg
        assert registry.get_sample_value("alertmanager_config_last_reload_successful") == 0
        assert cfg.notification_templates.render('{{ template "a" . }}', group_data(n())) == "A"
    finally:
        manager.close()


def n(count: int = 2) -> GroupNotification:
    alerts = [
        Alert(f"fp{i}", {"alertname": "X", "i": str(i)}, {}, "firing", 1.0, 100.0)
        for i in range(count)
    ]
    return GroupNotification("team.a", "k", {"alertname": "X"}, alerts)


def test_rendering_is_bounded_and_failures_are_template_errors() -> None:
    t = NotificationTemplates()
    huge = '{{ range .Alerts }}{{ printf "%0100000d" 1 }}{{ end }}'
    with pytest.raises(TemplateError, match="output longer than"):
        t.render(huge, group_data(n(5)))
    assert len(t.render('{{ printf "%0100000d" 1 }}', group_data(n()))) < MAX_FIELD_OUTPUT
    with pytest.raises(TemplateError, match="more than"):
        t.render("{{ range 1000000 }}{{ end }}", group_data(n()))
    with pytest.raises(TemplateError, match='no such template "x"'):
        t.render('{{ template "x" . }}', group_data(n()))


def test_data_methods_and_receiver_quoting() -> None:
    t = NotificationTemplates()
    data = group_data(n())
    assert t.render("{{ .Receiver }}", data) == "team\\.a"  # regexp.QuoteMeta, as Alertmanager
    assert t.render("{{ .CommonLabels.Remove .GroupLabels.Names }}", data) == ""
    assert t.render('{{ (index .Alerts 1).Labels.SortedPairs.Values | join "," }}', data) == ("X,1")
    assert t.render("{{ (index .Alerts 0).StartsAt.Unix }} {{ .Status }}", data) == "100 firing"
    assert t.render("{{ (index .Alerts 0).EndsAt.IsZero }}", data) == "true"


def test_field_template_that_does_not_parse_loads_with_a_located_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "am.yml"
    path.write_text(
        "global: {slack_api_url: 'https://slack.com/api/'}\n"
        "route: {receiver: team}\n"
        "receivers:\n"
        "  - name: team\n"
        "    slack_configs:\n"
        "      - title: '{{ .Status'\n"
        "        fields: [{title: x, value: '{{ nosuch }}'}]\n"
    )
    with caplog.at_level("WARNING", logger="vigil.alertmanager"):
        load_config(path)  # Alertmanager loads it too, and fails when sending
    messages = [r.getMessage() for r in caplog.records]
    assert any("am.yml:6:16: slack_config.title: template: unclosed action" in m for m in messages)
    assert any(
        "am.yml:7:36: slack_config.fields[0].value: template: function 'nosuch'" in m
        for m in messages
    )


def test_editing_only_a_template_file_reloads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, '{{ define "a" }}one{{ end }}')
    registry = CollectorRegistry()
    manager = AlertManager(
        load_config(path),
        tmp_path / "alerts.db",
        {},
        registry=registry,
        config_path=path,
        build_integrations=lambda c: {},
    )

    def rendered() -> str:
        templates = manager.config.notification_templates
        return templates.render('{{ template "a" . }}{{ template "b" . }}', group_data(n()))

    def edit(name: str, text: str) -> None:
        (tmp_path / "tmpl" / name).write_text(text)

    try:
        assert manager.reload_if_changed() is False  # nothing changed
        edit("a.tmpl", '{{ define "a" }}two{{ end }}{{ define "b" }}{{ end }}')
        assert manager.reload_if_changed() is True
        assert rendered() == "two"
        edit("b.tmpl", '{{ define "b" }}!{{ end }}')  # a new file the glob matches
        assert manager.reload_if_changed() is True
        assert rendered() == "two!"
        with caplog.at_level("ERROR", logger="vigil.alertmanager"):
            edit("b.tmpl", '{{ define "b" }}\n{{ .Status | }}{{ end }}')
            assert manager.reload_if_changed() is False
        assert rendered() == "two!"  # the last good templates
        assert registry.get_sample_value("alertmanager_config_last_reload_successful") == 0
        assert any("tmpl/b.tmpl:2: template:" in r.getMessage() for r in caplog.records)
        assert manager.reload_if_changed() is False  # refused once, not at every check
        (tmp_path / "tmpl" / "b.tmpl").unlink()  # a removed file
        assert manager.reload_if_changed() is True
        assert rendered() == "two"
        assert registry.get_sample_value("alertmanager_config_last_reload_successful") == 1
    finally:
        manager.close()


def test_a_refused_config_watches_the_template_files_it_names(tmp_path: Path) -> None:
    path = write(tmp_path, '{{ define "a" }}A{{ end }}')
    registry = CollectorRegistry()
    manager = AlertManager(
        load_config(path),
        tmp_path / "alerts.db",
        {},
        registry=registry,
        config_path=path,
        build_integrations=lambda c: {},
    )
    try:
        (tmp_path / "more").mkdir()
        (tmp_path / "more" / "m.tmpl").write_text('{{ define "m" }}{{ end')
        path.write_text(CONFIG.replace("'tmpl/*.tmpl'", "'tmpl/*.tmpl', 'more/*.tmpl'"))
        assert manager.reload_if_changed() is False
        assert registry.get_sample_value("alertmanager_config_last_reload_successful") == 0
        (tmp_path / "more" / "m.tmpl").write_text('{{ define "m" }}M{{ end }}')  # the fix
        assert manager.reload_if_changed() is True
        templates = manager.config.notification_templates
        assert templates.render('{{ template "m" . }}', group_data(n())) == "M"
        assert registry.get_sample_value("alertmanager_config_last_reload_successful") == 1
    finally:
        manager.close()


class Kept:
    """A receiver that keeps the notifications it is given."""

    integration = "webhook"
    send_resolved = True

    def __init__(self) -> None:
        self.sent: list[GroupNotification] = []

    def notify_group(self, notification: GroupNotification) -> GroupDelivery:
        self.sent.append(notification)
        return GroupDelivery(True)


ALERT_TIMES = (
    "{{ range .Alerts }}{{ .Labels.alertname }} {{ .Status }} {{ .StartsAt.Unix }} "
    "{{ if .EndsAt.IsZero }}zero{{ else }}{{ .EndsAt.Unix }}{{ end }} {{ .GeneratorURL }};"
    "{{ end }}"
)


def test_alert_times_and_urls_are_what_alertmanager_shows(tmp_path: Path) -> None:
    """Alertmanager keeps a firing alert's end (Prometheus' now + 4 evaluation intervals, or
    now + resolve_timeout for an alert posted without one) but hands templates a firing
    alert with a zero ``.EndsAt`` (dispatch.go, ``aggrGroup.flush``); a resolved one shows
    when it ended. A posted alert's ``.GeneratorURL`` is the one it was posted with."""
    config = "route: {receiver: team, group_wait: 0s, group_by: [alertname]}\n"
    config += "receivers: [{name: team}]\n"
    kept = Kept()
    manager = AlertManager(
        parse_config(config, "am.yml"),
        tmp_path / "alerts.db",
        {"team": [kept]},
        registry=CollectorRegistry(),
        clock=lambda: 1000.0,
        external_url="http://vigil:8090",
    )
    ruled = Alert("fp", {"alertname": "Engine"}, {}, "firing", 1.0, 900.0, 960.0, expr="up == 0")
    posted = [
        api_alert({"alertname": "Posted"}, {}, 990.0, None, 1000.0, "https://prom:9090/graph"),
        api_alert({"alertname": "Ended"}, {}, 800.0, 950.0, 1000.0),
        api_alert({"alertname": "Future"}, {}, 800.0, 5000.0, 1000.0),
    ]
    try:
        manager.post_alerts(posted)
        manager.process([ruled], 1000.0)
        manager.deliver_now()
        shown = {
            n.group_labels["alertname"]: NotificationTemplates().render(ALERT_TIMES, group_data(n))
            for n in kept.sent
        }
    finally:
        manager.close()
    assert shown == {
        "Engine": "Engine firing 960 zero http://vigil:8090/alerts?expr=up%20%3D%3D%200;",
        "Posted": "Posted firing 990 zero https://prom:9090/graph;",
        "Future": "Future firing 800 zero ;",
    }  # "Ended" was resolved when it came: no group is opened for it
    ended = [api_alert({"alertname": "Ended"}, {}, 800.0, 950.0, 1000.0)]
    n = GroupNotification("team", "k", {}, ended, external_url="http://vigil:8090")
    assert NotificationTemplates().render(ALERT_TIMES, group_data(n)) == "Ended resolved 800 950 ;"
