"""Loading and running Alertmanager notification templates: located errors at load (start
refused, reload keeps the last good configuration), bounded rendering, the data's methods."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from alerting.am.config import AMConfigError, load_config
from alerting.am.dispatch import AlertManager
from alerting.am.templates import MAX_FIELD_OUTPUT, NotificationTemplates, group_data
from alerting.notify.base import GroupNotification
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
