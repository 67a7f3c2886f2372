"""The e-mail receiver's configuration: Alertmanager's ``email_config`` keys, located errors,
literal secrets warned about, and the ``alert.email`` settings section."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from alerting.am.templates import NotificationTemplates
from alerting.am.templates import group_data as am_group_data
from alerting.cli import notifiers
from alerting.notify.base import GroupNotification
from alerting.notify.email import (
    EmailNotifier,
    RateLimit,
    build_message,
    group_data,
    parse_email_config,
    parse_rate_limit,
)
from alerting.state import Alert
from vigil.errors import ConfigError
from vigil.settings import from_mapping, load_settings

BASE = {"to": "oncall@example.com", "from": "vigil@example.com", "smarthost": "smtp.example:587"}


def parse(**extra: Any) -> Any:
    return parse_email_config({**BASE, **extra}, where="receivers[0].email_configs[0]")


def test_email_config_defaults_are_alertmanagers() -> None:
    cfg = parse()
    assert (cfg.host, cfg.port, cfg.hello) == ("smtp.example", 587, "localhost")
    assert cfg.require_tls and not cfg.send_resolved and not cfg.implicit_tls
    assert cfg.tls.min_version == "TLS12" and not cfg.tls.insecure_skip_verify
    assert cfg.rate_limit is None and cfg.timeout_s == 10.0
    assert parse(smarthost="[::1]:465").implicit_tls


@pytest.mark.parametrize(
    ("text", "limit"),
    [("10/h", RateLimit(10, 3600)), ("3/5m", RateLimit(3, 300)), ("1/1d", RateLimit(1, 86400))],
)
def test_email_rate_limit_forms(text: str, limit: RateLimit) -> None:
    assert parse_rate_limit(text) == limit


@pytest.mark.parametrize(
    ("extra", "where", "reason"),
    [
        ({"smarthost": "smtp.example"}, "smarthost", "expected host:port"),
        ({"smarthost": "smtp.example:99999"}, "smarthost", "port 1-65535"),
        ({"to": "not an address"}, "to", "e-mail addresses"),
        ({"from": "a@b.c, d@e.f"}, "from", "one e-mail address"),
        ({"require_tls": "yes"}, "require_tls", "true or false"),
        ({"rate_limit": "0/h"}, "rate_limit", "like 10/h"),
        ({"rate_limit": "5/fortnight"}, "rate_limit", "bad duration"),
        ({"timeout": "1h"}, "timeout", "between 1ms and 5m"),
        ({"tls_config": {"min_version": "SSL3"}}, "tls_config.min_version", "TLS10"),
        ({"tls_config": {"cert_file": "c.pem"}}, "tls_config.cert_file", "key_file"),
        ({"tls_config": {"verify": True}}, "tls_config.verify", "unknown key"),
        ({"headers": {"X-A": "one\r\nBcc: x@y.z"}}, "headers.X-A", "one-line"),
        ({"headers": {"Bad Name": "x"}}, "headers", "not a header name"),
        ({"headers": {"subject": "a", "Subject": "b"}}, "headers.Subject", "twice"),
        ({"hello": "my host"}, "hello", "host name"),
        (
            {"auth_password": "hunter2", "auth_password_file": "/p"},
            "auth_password",
            "at most one of auth_password & auth_password_file",
        ),
        ({"auth_secret": "hunter2", "auth_secret_file": "/s"}, "auth_secret", "at most one"),
        ({"smarthots": "x:1"}, "smarthots", "unknown key"),
    ],
)
def test_email_config_errors_name_the_key_and_line(
    extra: dict[str, Any], where: str, reason: str
) -> None:
    top = where.split(".")[0]
    with pytest.raises(ConfigError) as info:
        parse_email_config(
            {**BASE, **extra},
            where="receivers[0].email_configs[0]",
            file="alertmanager.yaml",
            line=10,
            lines={top: 14},
        )
    assert str(info.value).startswith(
        f"alertmanager.yaml:14: receivers[0].email_configs[0].{where}: "
    ), str(info.value)
    assert reason in info.value.reason
    assert "hunter2" not in str(info.value)


def test_email_config_missing_key_is_located_at_the_entry() -> None:
    with pytest.raises(ConfigError, match=r"^am.yaml:7: email_configs\[0\].to: is required"):
        parse_email_config({"from": "a@b.c", "smarthost": "h:25"}, file="am.yaml", line=7)


def test_email_literal_password_loads_as_alertmanager_does_with_a_located_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Alertmanager accepts ``auth_password`` in its file, so an existing file must load;
    the warning says where the secret belongs and never shows it."""
    with caplog.at_level(logging.WARNING, logger="vigil.alert.email"):
        cfg = parse_email_config(
            {**BASE, "auth_username": "u", "auth_password": "hunter2"},
            where="receivers[ops].email_configs[0]",
            file="alertmanager.yaml",
            line=10,
            lines={"auth_password": 13},
            env={"VIGIL_SMTP_AUTH_PASSWORD": "from-env"},
        )
    assert cfg.auth_password == "hunter2" and "hunter2" not in repr(cfg)
    (record,) = caplog.records
    message = record.getMessage()
    assert message.startswith("alertmanager.yaml:13: receivers[ops].email_configs[0].auth_password")
    assert "auth_password_file" in message and "$VIGIL_SMTP_AUTH_PASSWORD" in message
    assert "hunter2" not in message


def test_email_password_comes_from_the_environment_or_a_file() -> None:
    env = {"VIGIL_SMTP_AUTH_PASSWORD": "pw-from-env", "VIGIL_SMTP_AUTH_SECRET": "cram"}
    cfg = parse_email_config({**BASE, "auth_username": "u"}, env=env)
    assert (cfg.auth_password, cfg.auth_secret) == ("pw-from-env", "cram")
    assert "pw-from-env" not in repr(cfg) and "cram" not in repr(cfg)
    from_file = parse_email_config({**BASE, "auth_password_file": "/run/secrets/smtp"}, env=env)
    assert from_file.auth_password == "" and from_file.auth_password_file == "/run/secrets/smtp"


def test_email_settings_section_builds_the_notifier(tmp_path: Path) -> None:
    config = tmp_path / "vigil.yaml"
    config.write_text(
        "alert:\n"
        "  email:\n"
        "    to: oncall@example.com\n"
        "    smarthost: mail.example:465\n"
        "    rate_limit: 10/h\n"
        "    headers:\n"
        "      X-Team: sre\n"
        "    tls_config:\n"
        "      server_name: mail.example\n"
    )
    settings = load_settings(config, env={"VIGIL_ALERT_EMAIL_FROM": "pager@example.com"})
    (email,) = [n for n in notifiers(settings) if isinstance(n, EmailNotifier)]
    assert email.name == "email"
    cfg = email.config
    assert (cfg.to, cfg.sender, cfg.host, cfg.port) == (
        "oncall@example.com",
        "pager@example.com",
        "mail.example",
        465,
    )
    assert cfg.implicit_tls and cfg.rate_limit == RateLimit(10, 3600)
    assert cfg.headers == {"X-Team": "sre"} and cfg.tls.server_name == "mail.example"
    assert not [n for n in notifiers(from_mapping({})) if isinstance(n, EmailNotifier)]


def test_email_settings_errors_name_the_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "vigil.yaml"
    config.write_text("alert:\n  email:\n    to: oncall@example.com\n    rate_limit: lots\n")
    with pytest.raises(
        ConfigError, match=r"vigil.yaml:4: alert.email.rate_limit: expected a count"
    ):
        load_settings(config, env={})
    config.write_text("alert:\n  email:\n    to: a@b.c\n    auth_password: hunter2\n")
    with pytest.raises(ConfigError, match=r"vigil.yaml:4: alert.email.auth_password: unknown key"):
        load_settings(config, env={})


def test_email_custom_text_and_subject_templates_use_the_templater() -> None:
    alert = Alert("fp", {"alertname": "Down", "job": "shop"}, {}, "firing", 1.0, 100.0)
    data = group_data([alert], receiver="email", external_url="")
    cfg = parse(text="Alerts: {{ .Status }}", headers={"Subject": "{{ .Status }} page"})
    templates = NotificationTemplates()
    n = GroupNotification("team", "{}:{}", {"alertname": "Down"}, [alert])

    def templater(template: str, html: bool) -> str:
        return templates.render(template, am_group_data(n), html=html)

    with_templates = build_message(cfg, data, templater=templater)
    assert with_templates["Subject"] == "firing page"
    text = with_templates.get_body(("plain",))
    assert text is not None and text.get_content() == "Alerts: firing\n"
    html = with_templates.get_body(("html",))
    assert html is not None and "View in Alertmanager" in html.get_content()  # AM's default
    without = build_message(cfg, data)  # no templater: the default rendering stands in
    assert without["Subject"] == "[FIRING:1] Down (shop)"
