"""The e-mail receiver against real SMTP servers (aiosmtpd): plain, STARTTLS, implicit TLS,
AUTH, certificate checks, the rate limit, and an SMTP outage under the running engine."""

from __future__ import annotations

import logging
import random
import shutil
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, require_server, wait_until
from prometheus_client import CollectorRegistry
from smtp_server import PASSWORD, smtp_server

from alerting.engine import AlertEngine
from alerting.notify.email import EmailConfig, EmailNotifier, parse_email_config
from alerting.rules import load_rules
from alerting.state import Alert, AlertBook, AlertDB
from siem.memory import MemoryStore
from siem.model import Sample, make_labels


@dataclass(frozen=True)
class Certs:
    cert: Path
    key: Path
    other_cert: Path
    other_key: Path

    def server_context(self, *, other: bool = False) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if other:
            context.load_cert_chain(self.other_cert, self.other_key)
        else:
            context.load_cert_chain(self.cert, self.key)
        return context


def _self_signed(directory: Path, name: str, cn: str, san: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={cn}",
            "-addext", f"subjectAltName={san}",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A self-signed certificate for localhost/127.0.0.1, and one for another name."""
    if shutil.which("openssl") is None:
        require_server("openssl", "the openssl command makes the test certificates")
    directory = tmp_path_factory.mktemp("certs")
    cert, key = _self_signed(directory, "smtp", "localhost", "DNS:localhost,IP:127.0.0.1")
    other_cert, other_key = _self_signed(directory, "other", "other.example", "DNS:other.example")
    return Certs(cert, key, other_cert, other_key)


def config(port: int, host: str = "127.0.0.1", **extra: Any) -> EmailConfig:
    """An ``email_configs`` entry for the test server; ``env`` is where secrets come from."""
    env = extra.pop("env", {})
    raw = {
        "to": "oncall@example.com, Ann <ann@example.com>",
        "from": "Vigil <vigil@example.com>",
        "smarthost": f"{host}:{port}",
        "timeout": "5s",
        **extra,
    }
    return parse_email_config(raw, env=env)


def alert(instance: str, state: str = "firing", name: str = "InstanceDown") -> Alert:
    return Alert(
        fingerprint=f"fp-{name}-{instance}",
        labels={"alertname": name, "severity": "critical", "job": "shop", "instance": instance},
        annotations={
            "summary": f"{instance} is down",
            "runbook_url": "http://ui:8090/runbooks/instance-down.md",
        },
        state=state,  # type: ignore[arg-type]
        value=0.0,
        active_at=1_700_000_000.0,
        fired_at=1_700_000_030.0,
        resolved_at=1_700_000_300.0 if state == "resolved" else None,
        expr="up == 0",
    )


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return str(text.get_content()), str(html.get_content())


def test_email_one_mail_per_group_with_headers_bodies_and_recipients() -> None:
    registry = CollectorRegistry()
    with smtp_server() as (port, inbox):
        notifier = EmailNotifier(
            config(port, require_tls=False),
            name="team-mail",
            external_url="http://vigil:8090/",
            registry=registry,
        )
        deliveries = notifier.notify([alert("a:1"), alert("b:1")])
    assert [d.ok for d in deliveries] == [True, True], deliveries
    (mail,) = inbox.received
    assert mail.sender == "vigil@example.com"
    assert mail.recipients == ["oncall@example.com", "ann@example.com"]
    msg = mail.message
    assert msg["Subject"] == "[FIRING:2] InstanceDown (shop critical)"
    assert msg["From"] == "Vigil <vigil@example.com>"
    assert msg["To"] == "oncall@example.com, Ann <ann@example.com>"
    assert msg["Date"] and msg["Message-Id"]
    text, html = parts(msg)
    for body in (text, html):
        assert "a:1 is down" in body and "b:1 is down" in body
        assert "2023-11-14T22:13:50.000Z" in body  # startsAt: when it fired
        assert "http://ui:8090/runbooks/instance-down.md" in body
        assert "http://vigil:8090/alerts?expr=up%20%3D%3D%200" in body.replace("&amp;", "&")
    assert "instance = a:1" in text
    assert "<td>instance</td><td>a:1</td>" in html
    assert registry.get_sample_value("vigil_email_sent_total", {"receiver": "team-mail"}) == 1


def test_email_headers_override_and_send_resolved() -> None:
    with smtp_server() as (port, inbox):
        quiet = EmailNotifier(config(port, require_tls=False), registry=CollectorRegistry())
        (d,) = quiet.notify([alert("a:1", "resolved")])
        assert d.ok and inbox.received == []  # send_resolved is off by default, as Alertmanager
        loud = EmailNotifier(
            config(
                port,
                require_tls=False,
                send_resolved=True,
                headers={"subject": "Shop page", "X-Team": "sre", "To": "pager@example.com"},
            ),
            registry=CollectorRegistry(),
        )
        loud.notify([alert("a:1", "resolved")])
        default_subject = EmailNotifier(
            config(port, require_tls=False, send_resolved=True), registry=CollectorRegistry()
        )
        default_subject.notify([alert("a:1", "resolved")])
    first, second = inbox.received
    assert first.message["Subject"] == "Shop page"
    assert first.message["X-Team"] == "sre"
    assert first.message["To"] == "pager@example.com"
    assert first.recipients == ["oncall@example.com", "ann@example.com"]  # the envelope: `to`
    assert "Ended: 2023-11-14T22:18:20.000Z" in parts(first.message)[0]
    assert second.message["Subject"] == "[RESOLVED] InstanceDown (a:1 shop critical)"


def test_email_starttls_with_auth_plain_and_login(certs: Certs, tmp_path: Path) -> None:
    secret_file = tmp_path / "smtp-password"
    secret_file.write_text(PASSWORD + "\n")
    tls = {"ca_file": str(certs.cert)}
    with smtp_server(
        tls_context=certs.server_context(), require_starttls=True, authenticator=True
    ) as (port, inbox):
        plain = config(
            port, auth_username="vigil", tls_config=tls, env={"VIGIL_SMTP_AUTH_PASSWORD": PASSWORD}
        )
        (d,) = EmailNotifier(plain, registry=CollectorRegistry()).notify([alert("a:1")])
        assert d.ok, d.error
    with smtp_server(
        tls_context=certs.server_context(),
        require_starttls=True,
        authenticator=True,
        auth_exclude_mechanism=["PLAIN"],
    ) as (port, login_inbox):
        login = config(
            port, auth_username="vigil", auth_password_file=str(secret_file), tls_config=tls
        )
        (d,) = EmailNotifier(login, registry=CollectorRegistry()).notify([alert("a:1")])
        assert d.ok, d.error
    assert inbox.logins == [("PLAIN", "vigil", PASSWORD)]
    assert login_inbox.logins == [("LOGIN", "vigil", PASSWORD)]
    assert len(inbox.received) == len(login_inbox.received) == 1


def test_email_wrong_password_fails_and_the_password_is_never_logged(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = PASSWORD[::-1]
    with smtp_server(
        tls_context=certs.server_context(), require_starttls=True, authenticator=True
    ) as (port, inbox):
        cfg = config(
            port,
            auth_username="vigil",
            tls_config={"ca_file": str(certs.cert)},
            env={"VIGIL_SMTP_AUTH_PASSWORD": wrong},
        )
        (d,) = EmailNotifier(cfg, registry=CollectorRegistry()).notify([alert("a:1")])
    assert not d.ok and "535" in d.error
    assert inbox.received == [] and inbox.logins == [("PLAIN", "vigil", wrong)]
    assert wrong not in repr(cfg) and wrong not in d.error
    assert caplog.records and all(wrong not in r.getMessage() for r in caplog.records)


def test_email_require_tls_refuses_a_server_without_starttls() -> None:
    with smtp_server() as (port, inbox):
        (d,) = EmailNotifier(config(port), registry=CollectorRegistry()).notify([alert("a:1")])
    assert not d.ok
    assert "does not offer STARTTLS" in d.error
    assert inbox.received == []


def test_email_untrusted_or_misnamed_certificate_refused_unless_insecure_skip_verify(
    certs: Certs,
) -> None:
    def send(port: int, tls: dict[str, Any]) -> Any:
        cfg = config(port, tls_config=tls)
        (d,) = EmailNotifier(cfg, registry=CollectorRegistry()).notify([alert("a:1")])
        return d

    with smtp_server(tls_context=certs.server_context()) as (port, inbox):
        untrusted = send(port, {})  # the system's CAs do not know the self-signed certificate
        trusted = send(port, {"ca_file": str(certs.cert)})
        misnamed = send(port, {"ca_file": str(certs.cert), "server_name": "mail.example"})
        skipped = send(port, {"insecure_skip_verify": True})
    with smtp_server(tls_context=certs.server_context(other=True)) as (port, other_inbox):
        wrong_host = send(port, {"ca_file": str(certs.other_cert)})  # for other.example only
    assert not untrusted.ok and "certificate" in untrusted.error
    assert trusted.ok, trusted.error
    assert not misnamed.ok and "certificate" in misnamed.error
    assert skipped.ok, skipped.error
    assert not wrong_host.ok and "certificate" in wrong_host.error
    assert len(inbox.received) == 2 and other_inbox.received == []


def test_email_port_465_is_implicit_tls(certs: Certs) -> None:
    # Port 465 is what makes Alertmanager (and Vigil) speak TLS from the first byte; an
    # address of its own in 127/8 keeps parallel runs apart.
    host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    try:
        server = smtp_server(host, 465, ssl_context=certs.server_context())
        port, inbox = server.__enter__()
    except (OSError, RuntimeError) as exc:
        require_server("an SMTPS server on port 465", f"{exc} (binding 465 needs root)")
        return
    try:
        cfg = config(
            port,
            host,
            tls_config={"ca_file": str(certs.cert), "server_name": "localhost"},
        )
        assert cfg.implicit_tls
        (d,) = EmailNotifier(cfg, registry=CollectorRegistry()).notify([alert("a:1")])
        plain = config(port, host, require_tls=False)  # still TLS: the port decides
        (d2,) = EmailNotifier(plain, registry=CollectorRegistry()).notify([alert("b:1")])
    finally:
        server.__exit__(None, None, None)
    assert d.ok, d.error
    assert not d2.ok and "certificate" in d2.error  # TLS spoken, the self-signed cert refused
    (mail,) = inbox.received
    assert mail.message["Subject"] == "[FIRING:1] InstanceDown (a:1 shop critical)"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_email_rate_limit_defers_counts_once_then_sends() -> None:
    registry = CollectorRegistry()
    clock = Clock()

    def metric(name: str) -> float:
        return registry.get_sample_value(name, {"receiver": "email"}) or 0.0

    with smtp_server() as (port, inbox):
        cfg = config(port, require_tls=False, rate_limit="2/h")
        notifier = EmailNotifier(cfg, registry=registry, clock=clock)
        groups = [[alert("a:1", name=n)] for n in ("A", "B", "C", "D")]
        first = [notifier.notify(g)[0] for g in groups]
        assert [d.ok for d in first] == [True, True, False, False]
        assert all(d.deferred and "rate limit 2/1h" in d.error for d in first[2:])
        clock.now += 1800
        again = notifier.notify(groups[2])[0]  # retried while the window is still full
        assert again.deferred
        assert metric("vigil_email_deferred_total") == 2  # C and D, each counted once
        assert metric("vigil_email_deferred_groups") == 2
        clock.now += 1801  # the first two mails leave the window
        later = [notifier.notify(g)[0] for g in groups[2:]]
    assert [d.ok for d in later] == [True, True]
    assert [r.message["Subject"].split()[1] for r in inbox.received] == ["A", "B", "C", "D"]
    assert metric("vigil_email_sent_total") == 4
    assert metric("vigil_email_deferred_groups") == 0


RULES = """\
groups:
  - name: mail
    interval: 1s
    rules:
      - alert: InstanceDown
        expr: up == 0
        labels:
          severity: critical
        annotations:
          summary: "{{ $labels.instance }} is down"
"""


def test_email_rate_limited_alerts_wait_in_the_outbox_as_deferred_not_failed(
    tmp_path: Path,
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("InstanceDown", "Down"))
    store = MemoryStore()
    registry = CollectorRegistry()
    clock = Clock()

    t0 = time.time()

    def up(instance: str, value: float, at: float) -> None:
        store.write(samples=[Sample(make_labels("up", instance=instance), at, value)])

    # Evaluations at fixed times after the samples they must see: no race with the clock.
    up("a:1", 0.0, t0)
    up("b:1", 0.0, t0)
    with smtp_server() as (port, inbox):
        notifier = EmailNotifier(
            config(port, require_tls=False, rate_limit="1/h", send_resolved=True),
            registry=registry,
            clock=clock,
        )
        engine = AlertEngine(
            store, load_rules([rules]), AlertBook(AlertDB(tmp_path / "a.db")), [notifier],
            registry=registry,
        )  # fmt: skip
        engine.run_once(at=t0 + 1)  # both alerts fire: one mail for the group
        up("a:1", 1.0, t0 + 2)
        engine.run_once(at=t0 + 3)  # a:1 resolves: held back by the limit
        up("c:1", 0.0, t0 + 4)
        engine.run_once(at=t0 + 5)  # c:1 fires: held back too
        deferred = registry.get_sample_value(
            "vigil_alert_notifications_total", {"receiver": "email", "outcome": "deferred"}
        )
        failures = registry.get_sample_value("vigil_notifier_failures_total", {"receiver": "email"})
        assert (len(inbox.received), deferred, failures or 0.0) == (1, 3, 0)
        clock.now += 3601
        engine.run_once(at=t0 + 6)
    first, second = inbox.received
    assert first.message["Subject"] == "[FIRING:2] Down (critical)"
    assert second.message["Subject"] == "[FIRING:1] Down (critical)"  # merged: c:1 and a:1
    text, _ = parts(second.message)
    assert "1 firing" in text and "c:1 is down" in text
    assert "1 resolved" in text and "a:1 is down" in text
    assert engine.book.needing("email") == []


def test_email_smtp_down_is_retried_with_backoff_while_evaluation_goes_on(
    tmp_path: Path,
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    store = MemoryStore()
    registry = CollectorRegistry()
    port = free_port()  # nobody listens yet: connection refused
    store.write(samples=[Sample(make_labels("up", instance="a:1"), time.time(), 0.0)])
    notifier = EmailNotifier(config(port, require_tls=False), registry=registry)
    engine = AlertEngine(
        store, load_rules([rules]), AlertBook(AlertDB(tmp_path / "a.db")), [notifier],
        registry=registry, max_backoff_s=1.0,
    )  # fmt: skip

    def metric(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, {"receiver": "email", **labels}) or 0.0

    def evaluations() -> float:
        labels = {"group": "mail"}
        return registry.get_sample_value("vigil_alert_group_evaluations_total", labels) or 0.0

    stop = threading.Event()
    thread = threading.Thread(target=engine.run, args=(stop,))
    thread.start()
    try:
        started = time.monotonic()
        wait_until(
            "three failed attempts", lambda: metric("vigil_notifier_failures_total") >= 3, 20
        )
        elapsed = time.monotonic() - started
        assert evaluations() >= elapsed * 0.8 - 1, (evaluations(), elapsed)
        assert metric("vigil_notifier_queue_items") == 1
        with smtp_server(port=port) as (_, inbox):
            wait_until("the mail after the outage", lambda: len(inbox.received) == 1, 10)
            time.sleep(2.5)  # more passes: nothing is sent twice
            assert len(inbox.received) == 1
    finally:
        stop.set()
        thread.join(timeout=15)
    assert not thread.is_alive()
    assert metric("vigil_notifier_queue_items") == 0
    assert metric("vigil_email_sent_total") == 1
    assert metric("vigil_alert_notifications_total", outcome="failure") >= 3
