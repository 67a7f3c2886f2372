"""Order-confirmation e-mail through a real local SMTP server (aiosmtpd)."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from email import message_from_bytes
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from conftest import ADMIN_KEY, free_port, sample
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from shop import mailer
from shop.mailer import MailWorker, flush_queue
from shop.models import MailMessage, MailQuota, Product, utcnow

ADMIN = {"X-API-Key": ADMIN_KEY, "X-Actor": "alice@ops"}


class Inbox:
    """aiosmtpd handler that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[int, Inbox]]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.port, inbox
    controller.stop()


@pytest.fixture
def mail_app(build_app: Callable[..., Flask]) -> Callable[..., Flask]:
    """``mail_app(smtp_port=…, daily_cap=…)``: an app with these mail settings."""

    def build(**mail: Any) -> Flask:
        return build_app(mail={"smtp_host": "127.0.0.1", **mail}, fraud={"max_per_card": 1000})

    return build


def buy(client: FlaskClient, app: Flask, email: str = "ann@example.com") -> str:
    cart_id = client.post("/api/carts").json["cart_id"]
    with app.extensions["vigil.shop"].sessions() as session:
        product_id = session.scalars(select(Product.id).where(Product.sku == "ELEC-002")).one()
    client.post(f"/api/carts/{cart_id}/items", json={"product_id": product_id, "quantity": 1})
    rv = client.post(
        "/api/checkout",
        json={
            "cart_id": cart_id,
            "email": email,
            "currency": "EUR",
            "gateway": "stripe",
            "card": {"number": "4242424242424242", "expiry": "10/37", "cvc": "123"},
        },
    )
    assert rv.status_code == 201, rv.json
    order_id: str = rv.json["order_id"]
    return order_id


def app_log(app: Flask) -> list[dict[str, Any]]:
    path = app.extensions["vigil.shop"].settings.log_dir / "app.log"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def statuses(app: Flask) -> list[str]:
    with app.extensions["vigil.shop"].sessions() as session:
        return list(session.scalars(select(MailMessage.status).order_by(MailMessage.id)))


def test_mail_confirmation_arrives(smtp: tuple[int, Inbox], mail_app: Any) -> None:
    port, inbox = smtp
    app = mail_app(smtp_port=port)
    client = app.test_client()
    order_id = buy(client, app, email="bob@example.com")
    sent = sample("shop_emails_sent_total")

    rv = client.post("/api/admin/mail/flush", headers=ADMIN)

    assert rv.status_code == 200
    assert rv.json == {"sent": 1, "deferred": 0, "failed": 0}
    (message,) = inbox.messages
    assert order_id in message["Subject"]
    assert message["To"] == "bob@example.com"
    assert message["From"] == "shop@vigil.example"
    body = message.get_payload(decode=True).decode()
    assert f"/orders/{order_id}" in body
    assert "Total:    89.99 EUR" in body
    assert sample("shop_emails_sent_total") - sent == 1
    assert statuses(app) == ["sent"]
    events = [e for e in app_log(app) if e.get("event", {}).get("action") == "email-sent"]
    assert events[-1]["email"]["to"]["address"] == "bob@example.com"
    # Nothing is sent twice.
    assert client.post("/api/admin/mail/flush", headers=ADMIN).json["sent"] == 0
    assert len(inbox.messages) == 1


def test_mail_daily_cap_defers_until_next_day(smtp: tuple[int, Inbox], mail_app: Any) -> None:
    port, inbox = smtp
    app = mail_app(smtp_port=port, daily_cap=2)
    client = app.test_client()
    orders = [buy(client, app) for _ in range(3)]
    deferrals = sample("shop_email_deferrals_total")

    rv = client.post("/api/admin/mail/flush", headers=ADMIN)

    assert rv.json == {"sent": 2, "deferred": 1, "failed": 0}
    assert statuses(app) == ["sent", "sent", "deferred"]
    assert sample("shop_email_deferrals_total") - deferrals == 1
    status = client.get("/api/admin/mail", headers=ADMIN).json
    assert status["queue"]["deferred"] == 1
    assert status["queue"]["sent"] == 2
    assert (status["today"]["sent"], status["today"]["cap"]) == (2, 2)
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'shop_email_queue_depth{status="deferred"} 1.0' in metrics
    # Later the same day: still capped, and the deferral is not counted again.
    assert client.post("/api/admin/mail/flush", headers=ADMIN).json["sent"] == 0
    assert sample("shop_email_deferrals_total") - deferrals == 1

    shop = app.extensions["vigil.shop"]
    tomorrow = utcnow() + dt.timedelta(days=1)
    result = flush_queue(shop.sessions, shop.settings.shop.mail, now=tomorrow, logs=shop.logs)

    assert (result.sent, result.deferred, result.failed) == (1, 0, 0)
    assert statuses(app) == ["sent", "sent", "sent"]
    assert sorted(orders) == sorted(
        next(o for o in orders if o in m["Subject"]) for m in inbox.messages
    )
    with shop.sessions() as session:
        assert session.get(MailQuota, mailer.utc_day(tomorrow)).sent == 1


def test_mail_smtp_failure_retries_then_gives_up(mail_app: Any) -> None:
    app = mail_app(smtp_port=free_port())  # nothing listens there
    client = app.test_client()
    buy(client, app)
    failures = sample("shop_email_failures_total")

    rv = client.post("/api/admin/mail/flush", headers=ADMIN)

    assert rv.json == {"sent": 0, "deferred": 0, "failed": 1}
    shop = app.extensions["vigil.shop"]
    with shop.sessions() as session:
        message = session.scalars(select(MailMessage)).one()
        assert (message.status, message.attempts) == ("queued", 1)
        assert "Connection" in message.last_error
        # A failed send gives its slot of the daily cap back.
        assert session.get(MailQuota, mailer.utc_day(utcnow())).sent == 0
    # Right away, the message waits out its back-off.
    assert flush_queue(shop.sessions, shop.settings.shop.mail, logs=shop.logs).failed == 0
    later = utcnow()
    for attempt in range(1, mailer.MAX_ATTEMPTS):
        later += mailer.retry_delay(attempt)
        assert (
            flush_queue(shop.sessions, shop.settings.shop.mail, now=later, logs=shop.logs).failed
            == 1
        )

    assert statuses(app) == ["failed"]
    assert sample("shop_email_failures_total") - failures == mailer.MAX_ATTEMPTS
    errors = [e for e in app_log(app) if e.get("event", {}).get("action") == "email-failed"]
    assert len(errors) == 1
    assert errors[0]["log.level"] == "error"
    # A failed message is left alone from now on.
    later += dt.timedelta(days=1)
    assert flush_queue(shop.sessions, shop.settings.shop.mail, now=later).failed == 0


def test_mail_concurrent_flushers_send_each_message_once(mail_app: Any) -> None:
    app = mail_app(batch_size=50)
    shop = app.extensions["vigil.shop"]
    with shop.sessions.begin() as session:
        for n in range(12):
            session.add(MailMessage(recipient=f"c{n}@example.com", subject=f"m{n}", body="x"))
    delivered: list[str] = []
    lock = threading.Lock()

    def send(message: EmailMessage) -> None:
        time.sleep(0.01)
        with lock:
            delivered.append(str(message["Subject"]))

    start = threading.Barrier(4)
    results: list[int] = []

    def worker() -> None:
        start.wait()
        results.append(flush_queue(shop.sessions, shop.settings.shop.mail, send=send).sent)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(delivered) == sorted(f"m{n}" for n in range(12))
    assert sum(results) == 12
    with shop.sessions() as session:
        assert session.get(MailQuota, mailer.utc_day(utcnow())).sent == 12


def test_mail_worker_survives_errors(
    smtp: tuple[int, Inbox], mail_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, inbox = smtp
    app = mail_app(smtp_port=port)
    order_id = buy(app.test_client(), app)
    real = mailer.flush_queue
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> mailer.FlushResult:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(mailer, "flush_queue", flaky)
    worker = MailWorker(app.extensions["vigil.shop"], interval=0.05).start()
    try:
        deadline = time.monotonic() + 10
        while not inbox.messages and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()

    assert order_id in inbox.messages[0]["Subject"]
    assert calls["n"] >= 2
    failures = [e for e in app_log(app) if e.get("event", {}).get("action") == "email-queue"]
    assert "database went away" in failures[0]["message"]
    assert worker._thread is None


def test_mail_admin_status_counts(mail_app: Any) -> None:
    app = mail_app(daily_cap=7)
    client = app.test_client()
    buy(client, app)
    buy(client, app)

    rv = client.get("/api/admin/mail", headers=ADMIN)

    assert rv.status_code == 200
    assert rv.json["queue"] == {"queued": 2, "deferred": 0, "sending": 0, "sent": 0, "failed": 0}
    assert rv.json["today"]["cap"] == 7
    assert rv.json["today"]["sent"] == 0
    assert rv.json["today"]["day"] == utcnow().date().isoformat()


def test_mail_stale_claim_of_dead_worker_is_sent(smtp: tuple[int, Inbox], mail_app: Any) -> None:
    port, inbox = smtp
    app = mail_app(smtp_port=port)
    order_id = buy(app.test_client(), app)
    shop = app.extensions["vigil.shop"]
    now = utcnow()
    with shop.sessions.begin() as session:
        # A worker claimed the message and died before sending it.
        message = session.scalars(select(MailMessage)).one()
        message.status = "sending"
        message.claimed_at = now - dt.timedelta(minutes=30)
    assert flush_queue(shop.sessions, shop.settings.shop.mail, now=now).sent == 1
    assert [order_id in m["Subject"] for m in inbox.messages] == [True]


def test_mail_fresh_claim_is_left_to_its_worker(mail_app: Any) -> None:
    app = mail_app(smtp_port=free_port())
    buy(app.test_client(), app)
    shop = app.extensions["vigil.shop"]
    now = utcnow()
    with shop.sessions.begin() as session:
        message = session.scalars(select(MailMessage)).one()
        message.status = "sending"
        message.claimed_at = now - dt.timedelta(seconds=5)
    result = flush_queue(shop.sessions, shop.settings.shop.mail, now=now)
    assert (result.sent, result.failed) == (0, 0)
    with shop.sessions() as session:
        assert session.scalars(select(MailMessage.status)).one() == "sending"


def test_mail_retry_delay_doubles_up_to_a_cap() -> None:
    delays = [mailer.retry_delay(n).total_seconds() for n in range(1, 10)]
    assert delays == [10, 20, 40, 80, 160, 320, 640, 900, 900]


def test_mail_without_relay_goes_to_outbox_files(build_app: Callable[..., Flask]) -> None:
    app = build_app()  # no smtp_host: the outbox under the data dir
    client = app.test_client()
    order_id = buy(client, app)

    assert client.post("/api/admin/mail/flush", headers=ADMIN).json["sent"] == 1

    outbox = Path(app.extensions["vigil.shop"].settings.data_dir) / "mail" / "outbox"
    (eml,) = outbox.glob("*.eml")
    message = message_from_bytes(eml.read_bytes())
    assert message["To"] == "ann@example.com"
    assert order_id in message["Subject"]
