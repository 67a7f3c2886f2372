"""Alertmanager configuration: defaults, inheritance, matchers, time intervals, located errors."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest

from alerting.am.config import AMConfigError, load_config, parse_config
from alerting.am.matchers import MatcherSyntaxError, format_matcher, parse_matchers

ROOT = Path(__file__).resolve().parents[2]


def test_minimal_config_gets_alertmanagers_defaults() -> None:
    cfg = parse_config("route: {receiver: a}\nreceivers: [{name: a}]\n", "am.yml")
    r = cfg.route
    assert (r.group_wait_s, r.group_interval_s, r.repeat_interval_s) == (30, 300, 4 * 3600)
    assert cfg.global_.resolve_timeout_s == 300
    assert r.group_labels({"alertname": "X", "job": "y"}) == {}  # no group_by: one group


def test_children_inherit_and_override() -> None:
    cfg = parse_config(
        """
route:
  receiver: a
  group_by: [alertname]
  group_wait: 10s
  routes:
    - match: {team: db}
      receiver: b
      routes:
        - match_re: {severity: 'crit.*'}
          group_by: ['...']
          group_interval: 1m
receivers: [{name: a}, {name: b, webhook_configs: [{url: 'http://x.example/h'}]}]
""",
        "am.yml",
    )
    (leaf,) = cfg.route.match({"team": "db", "severity": "critical", "x": "1"})
    assert leaf.receiver == "b" and leaf.group_wait_s == 10 and leaf.group_interval_s == 60
    assert leaf.group_labels({"team": "db", "x": "1"}) == {"team": "db", "x": "1"}
    assert leaf.id == '{}/{team="db"}/{severity=~"crit.*"}'
    assert cfg.receivers["b"].webhook[0].send_resolved is True  # Alertmanager's default


def test_continue_sends_to_several_receivers_in_order() -> None:
    cfg = load_config(ROOT / "tests/files/alertmanager/upstream/conf.good.yml")
    labels = {"service": "database", "owner2": "team-X", "owner": "team-Y"}
    assert [r.receiver for r in cfg.route.match(labels)] == ["team-X-pager", "team-Y-pager"]
    assert [r.receiver for r in cfg.route.match({"service": "x"})] == ["team-X-mails"]
    email = cfg.receivers["team-X-mails"].email[0]
    assert (email.host, email.port, email.sender, email.send_resolved) == (
        "localhost",
        25,
        "alertmanager@example.org",
        False,
    )
    # global smtp_* defaults: hello, user and the (literal, warned about) password
    assert (email.hello, email.auth_username) == ("host.example.org", "alertmanager")
    assert email.auth_password == "multiline\nmysecret"
    assert cfg.receivers["team-DB-pager"].unsupported == ("pagerduty_configs",)


def test_matcher_syntax() -> None:
    ms = parse_matchers('{severity="crit\\"ical", service=~foo|bar, a!=, b!~"x,y"}')
    assert [(m.name, m.op, m.value) for m in ms] == [
        ("severity", "=", 'crit"ical'),
        ("service", "=~", "foo|bar"),
        ("a", "!=", ""),
        ("b", "!~", "x,y"),
    ]
    assert format_matcher(ms[0]) == 'severity="crit\\"ical"'
    for bad in ('severity="x', "=x", "a=~(", "{a=b", "a b"):
        with pytest.raises(MatcherSyntaxError):
            parse_matchers(bad)


def test_time_intervals_mute_and_activate() -> None:
    cfg = parse_config(
        """
time_intervals:
  - name: office
    time_intervals:
      - weekdays: ['monday:friday']
        times: [{start_time: '09:00', end_time: '17:00'}]
        location: Europe/Berlin
  - name: month-end
    time_intervals:
      - days_of_month: ['-2:-1']
        months: [january, 'march:april']
        years: ['2026']
route:
  receiver: a
  routes:
    - receiver: a
      matchers: [x=1]
      active_time_intervals: [office]
    - receiver: a
      matchers: [x=2]
      mute_time_intervals: [month-end]
receivers: [{name: a}]
""",
        "am.yml",
    )
    office, month_end = cfg.route.routes

    def at(*args: int, tz: str = "UTC") -> float:
        import zoneinfo

        return dt.datetime(*args, tzinfo=zoneinfo.ZoneInfo(tz)).timestamp()

    assert not cfg.muted(office, at(2026, 3, 4, 10, 0, tz="Europe/Berlin"))  # Wednesday
    assert cfg.muted(office, at(2026, 3, 4, 17, 0, tz="Europe/Berlin"))  # end is exclusive
    assert cfg.muted(office, at(2026, 3, 7, 10, 0, tz="Europe/Berlin"))  # Saturday
    assert cfg.muted(month_end, at(2026, 1, 31, 12))
    assert cfg.muted(month_end, at(2026, 4, 29, 12))  # 30 April is the last, 29 the one before
    assert not cfg.muted(month_end, at(2026, 4, 28, 12))
    assert not cfg.muted(month_end, at(2026, 2, 28, 12))


@pytest.mark.parametrize(
    ("text", "where", "reason"),
    [
        ("route: {receiver: a}\nreceivers: [{name: a}]\nroutes: []\n", "3:1", "field routes not"),
        ("route:\n  receiver: a\n  group_wait: 5 min\nreceivers: [{name: a}]\n", "3:15", "bad dur"),
        ("route: {receiver: b}\nreceivers: [{name: a}]\n", "1:19", 'undefined receiver "b"'),
        ("receivers: [{name: a}]\n", "1:1", "no routes provided"),
        ("route: {receiver: a, continue: true}\nreceivers: [{name: a}]\n", "1:8", "continue"),
        (
            "route: {receiver: a}\nreceivers:\n  - name: a\n    slack_configs: [{channel: x}]\n",
            "4:21",
            "no global Slack API URL",
        ),
        (
            "route: {receiver: a}\nreceivers: [{name: a}]\ninhibit_rules: [{equal: [1a]}]\n",
            "3:25",
            "label name",
        ),
        ("route: [\n", "2:1", "not valid YAML"),
    ],
)
def test_errors_name_file_line_and_reason(text: str, where: str, reason: str) -> None:
    with pytest.raises(AMConfigError) as info:
        parse_config(text, "am.yml")
    assert str(info.value).startswith(f"am.yml:{where}: "), str(info.value)
    assert reason in str(info.value)


def test_shipped_config_pages_critical_at_once() -> None:
    cfg = load_config(ROOT / "config" / "alertmanager.yaml")
    (page,) = cfg.route.match({"alertname": "ShopHighErrorRate", "severity": "critical"})
    assert page.receiver == "slack-pager" and page.group_wait_s == 0
    (warn,) = cfg.route.match({"alertname": "BruteForceLogin", "severity": "warning"})
    assert warn.group_wait_s == 30 and warn.group_by == ("alertname", "team")
    assert all(s.send_resolved for r in cfg.receivers.values() for s in r.slack)


def test_vigil_alert_refuses_to_start_on_a_bad_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from vigil.cli import main

    bad = tmp_path / "am.yml"
    bad.write_text("route:\n  receiver: team\n  group_wait: soon\nreceivers: [{name: team}]\n")
    monkeypatch.setenv("VIGIL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VIGIL_ALERTMANAGER_CONFIG", str(bad))
    monkeypatch.chdir(ROOT)
    assert main(["alert", "--once"]) == 2
    assert f"{bad}:3:15: group_wait: bad duration 'soon'" in capsys.readouterr().err
    assert not (tmp_path / "data" / "alerts.db").exists()  # refused before touching state


SMTP_GLOBALS = """\
global:
  smtp_smarthost: mail.example.com:587
  smtp_from: vigil@example.com
  smtp_hello: vigil.example.com
  smtp_auth_username: vigil
  smtp_auth_password: hunter2
  smtp_auth_identity: ops
  smtp_require_tls: false
route: {receiver: mail}
receivers:
  - name: mail
    email_configs:
      - to: oncall@example.com
        rate_limit: 10/h
      - to: db@example.com
        auth_password_file: /run/secrets/db-smtp
        require_tls: true
"""


def test_email_configs_take_the_global_smtp_defaults_and_warn_of_a_literal_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="vigil.alert.email"):
        cfg = parse_config(SMTP_GLOBALS, "am.yml")
    first, second = cfg.receivers["mail"].email
    assert (first.host, first.port, first.sender, first.hello) == (
        "mail.example.com",
        587,
        "vigil@example.com",
        "vigil.example.com",
    )
    assert (first.auth_username, first.auth_password, first.auth_identity) == (
        "vigil",
        "hunter2",
        "ops",
    )
    assert first.require_tls is False and str(first.rate_limit) == "10/1h"
    # a receiver's own password file replaces the global password as a pair
    assert (second.auth_password, second.auth_password_file) == ("", "/run/secrets/db-smtp")
    assert second.require_tls is True
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith("am.yml:6: receivers[mail].email_configs[0].auth_password:")
    assert "hunter2" not in warning


def test_email_config_error_names_the_file_and_line_of_the_key() -> None:
    text = SMTP_GLOBALS.replace("to: db@example.com", "to: not an address")
    with pytest.raises(
        AMConfigError, match=r"^am.yml:15: receivers\[mail\]\.email_configs\[1\]\.to"
    ):
        parse_config(text, "am.yml")
    with pytest.raises(AMConfigError, match=r"^am.yml:2: .*smarthost: expected host:port"):
        parse_config(SMTP_GLOBALS.replace("mail.example.com:587", "mail"), "am.yml")
