"""Order-confirmation e-mail: a queue in the database, a daily cap, an SMTP relay.

Checkout only enqueues; ``flush_queue`` sends. Several workers (gunicorn
processes, instances) may flush at once, so each message is claimed with a
conditional UPDATE (exactly one claimer sees rowcount 1) and each send first
reserves a slot of the day's quota with another conditional UPDATE. Over the
cap a message is deferred, never dropped, and goes out on a later UTC day.
A failed send goes back to the queue; after ``MAX_ATTEMPTS`` it is failed.

Example::

    result = flush_queue(shop.sessions, shop.settings.shop.mail, logs=shop.logs)
    result.sent, result.deferred, result.failed
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import smtplib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from shop import metrics
from shop.logs import ShopLogs
from shop.models import MailMessage, MailQuota, Order, as_utc, utcnow
from vigil.settings import MailSettings, Settings

if TYPE_CHECKING:
    from shop.context import ShopContext

MAX_ATTEMPTS = 10
# Retry after 10 s, 20 s, 40 s … at most 15 min: ten attempts ride out a relay
# outage of about 50 minutes before a message is marked failed.
FIRST_RETRY = dt.timedelta(seconds=10)
MAX_RETRY = dt.timedelta(minutes=15)
WAITING = ("queued", "deferred")
STATUSES = ("queued", "deferred", "sending", "sent", "failed")

Sender = Callable[[EmailMessage], None]


@dataclass(frozen=True)
class FlushResult:
    """What one queue pass did: mails sent, deferred by the cap, send attempts failed."""

    sent: int = 0
    deferred: int = 0
    failed: int = 0

    def to_json(self) -> dict[str, int]:
        return {"sent": self.sent, "deferred": self.deferred, "failed": self.failed}


def enqueue_confirmation(
    session: Session, order: Order, *, base_url: str = "", shipping: dict[str, str] | None = None
) -> MailMessage:
    """Queue the confirmation of ``order``: its items, total and tracking link."""
    lines = [
        f"Thank you for your order {order.public_id}.",
        "",
        *(
            f"  {item.quantity} x {item.name} ({item.sku})  {item.line_total} {order.currency}"
            for item in order.items
        ),
        "",
        f"Subtotal: {order.subtotal} {order.currency}",
        f"Discount: {order.discount} {order.currency}",
        f"Total:    {order.total} {order.currency}",
    ]
    if shipping:
        address = ", ".join(
            v for k in ("name", "address", "postcode", "city", "country") if (v := shipping.get(k))
        )
        lines += ["", f"Shipping to: {address}"]
    lines += ["", f"Track your order: {base_url.rstrip('/')}/orders/{order.public_id}"]
    message = MailMessage(
        order_id=order.id,
        recipient=order.email,
        subject=f"Your order {order.public_id}",
        body="\n".join(lines) + "\n",
        status="queued",
    )
    session.add(message)
    session.flush()
    return message


def retry_delay(attempts: int) -> dt.timedelta:
    """How long a message that failed ``attempts`` times waits before the next try."""
    return min(FIRST_RETRY * 2 ** max(attempts - 1, 0), MAX_RETRY)


def sender_for(settings: Settings) -> Sender:
    """SMTP when ``shop.mail.smtp_host`` is set, else ``.eml`` files in the outbox dir."""
    if settings.shop.mail.smtp_host:
        return smtp_sender(settings.shop.mail)
    return file_sender(Path(settings.data_dir) / "mail" / "outbox")


def file_sender(outbox: Path) -> Sender:
    """Write each message to ``outbox`` as an ``.eml`` file (no relay configured)."""

    def send(message: EmailMessage) -> None:
        outbox.mkdir(parents=True, exist_ok=True)
        name = f"{utcnow():%Y%m%dT%H%M%S%f}-{abs(hash(message['Subject'])):x}.eml"
        (outbox / name).write_bytes(bytes(message))

    return send


def smtp_sender(settings: MailSettings) -> Sender:
    """Send through the configured SMTP relay."""

    def send(message: EmailMessage) -> None:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=10) as smtp:
            smtp.send_message(message)

    return send


# Far longer than one SMTP exchange (timeout 10 s) of a whole batch.
STALE_CLAIM = dt.timedelta(minutes=10)


def utc_day(now: dt.datetime) -> str:
    """The quota day of ``now``: its UTC date, ``YYYY-MM-DD``."""
    return now.astimezone(dt.UTC).date().isoformat()


def quota_used(session: Session, day: str) -> int:
    """Mails sent (or being sent) on ``day``."""
    row = session.get(MailQuota, day)
    return row.sent if row is not None else 0


def queue_counts(session: Session) -> dict[str, int]:
    """Messages by status, every status present."""
    counts = dict.fromkeys(STATUSES, 0)
    rows = session.execute(
        select(MailMessage.status, func.count()).group_by(MailMessage.status)
    ).all()
    counts.update({status: int(count) for status, count in rows})
    return counts


def _reserve(sessions: sessionmaker[Session], day: str, cap: int) -> bool:
    """Take one slot of ``day``'s quota atomically; False when the cap is reached."""
    for _ in range(3):
        with sessions.begin() as session:
            taken = session.execute(
                update(MailQuota)
                .where(MailQuota.day == day, MailQuota.sent < cap)
                .values(sent=MailQuota.sent + 1)
            ).rowcount  # type: ignore[attr-defined]
            if taken == 1:
                return True
            if session.get(MailQuota, day) is not None:
                return False
        try:
            with sessions.begin() as session:
                session.add(MailQuota(day=day, sent=0))
        except IntegrityError:
            pass  # another worker created the day's row first; use it
    return False


def _release(sessions: sessionmaker[Session], day: str) -> None:
    with sessions.begin() as session:
        session.execute(
            update(MailQuota)
            .where(MailQuota.day == day, MailQuota.sent > 0)
            .values(sent=MailQuota.sent - 1)
        )


def _set(sessions: sessionmaker[Session], message_id: int, **values: object) -> None:
    with sessions.begin() as session:
        session.execute(update(MailMessage).where(MailMessage.id == message_id).values(**values))


def _claim(
    sessions: sessionmaker[Session], message_id: int, now: dt.datetime
) -> MailMessage | None:
    with sessions.begin() as session:
        claimed = session.execute(
            update(MailMessage)
            .where(MailMessage.id == message_id, MailMessage.status.in_(WAITING))
            .values(status="sending", claimed_at=now)
        ).rowcount  # type: ignore[attr-defined]
        if claimed != 1:
            return None
        return session.get(MailMessage, message_id)


def reclaim_stale(sessions: sessionmaker[Session], now: dt.datetime) -> int:
    """Put messages back in the queue whose sender died mid-send; return how many.

    At-least-once: a worker killed after SMTP accepted but before it recorded
    "sent" makes the mail go out twice, which beats never.
    """
    with sessions.begin() as session:
        rv: int = session.execute(
            update(MailMessage)
            .where(
                MailMessage.status == "sending",
                MailMessage.claimed_at < now - STALE_CLAIM,
            )
            .values(status="queued")
        ).rowcount  # type: ignore[attr-defined]
    return rv


def flush_queue(
    sessions: sessionmaker[Session],
    mail_settings: MailSettings,
    *,
    now: dt.datetime | None = None,
    send: Sender | None = None,
    logs: ShopLogs | None = None,
) -> FlushResult:
    """Send up to ``batch_size`` waiting messages, oldest first, within the daily cap."""
    now = now or utcnow()
    day = utc_day(now)
    send = send or smtp_sender(mail_settings)
    reclaim_stale(sessions, now)
    with sessions() as session:
        full = quota_used(session, day) >= mail_settings.daily_cap
        # With the day's quota spent, only fresh messages are looked at, to mark them deferred.
        waiting = ("queued",) if full else WAITING
        rows = session.execute(
            select(MailMessage.id, MailMessage.status, MailMessage.attempts, MailMessage.claimed_at)
            .where(MailMessage.status.in_(waiting))
            # Fresh messages first, so a few failing ones cannot block the queue.
            .order_by(MailMessage.attempts, MailMessage.id)
            .limit(mail_settings.batch_size * 4)
        ).all()
    candidates = [
        (message_id, status)
        for message_id, status, attempts, tried_at in rows
        if not attempts or tried_at is None or as_utc(tried_at) + retry_delay(attempts) <= now
    ][: mail_settings.batch_size]
    sent = deferred = failed = 0
    for message_id, previous in candidates:
        message = _claim(sessions, message_id, now)
        if message is None:
            continue  # another worker has it
        if not _reserve(sessions, day, mail_settings.daily_cap):
            _set(sessions, message_id, status="deferred")
            deferred += 1
            if previous == "queued":
                metrics.EMAIL_DEFERRALS.inc()
            continue
        try:
            send(_email(message, mail_settings))
        except Exception as exc:  # any SMTP or network failure: retry later
            _release(sessions, day)
            failed += 1
            _failed(sessions, message, exc, logs)
            continue
        _set(sessions, message_id, status="sent", sent_at=now, last_error="")
        sent += 1
        metrics.EMAILS_SENT.inc()
        if logs is not None:
            fields: dict[str, Any] = {
                "event.action": "email-sent",
                "event.outcome": "success",
                "email.to.address": message.recipient,
                "email.subject": message.subject,
                "labels.mail_id": str(message_id),
            }
            logs.app(f"sent e-mail {message.subject!r} to {message.recipient}", **fields)
    return FlushResult(sent, deferred, failed)


def _email(message: MailMessage, settings: MailSettings) -> EmailMessage:
    email = EmailMessage()
    email["From"] = settings.sender
    email["To"] = message.recipient
    email["Subject"] = message.subject
    email.set_content(message.body)
    return email


def _failed(
    sessions: sessionmaker[Session], message: MailMessage, exc: Exception, logs: ShopLogs | None
) -> None:
    metrics.EMAIL_FAILURES.inc()
    attempts = message.attempts + 1
    final = attempts >= MAX_ATTEMPTS
    error = f"{type(exc).__name__}: {exc}"[:500]
    _set(
        sessions,
        message.id,
        status="failed" if final else "queued",
        attempts=attempts,
        last_error=error,
    )
    if logs is not None:
        verb = "gave up on" if final else "could not send"
        logs.app(
            f"{verb} e-mail to {message.recipient} (attempt {attempts}): {error}",
            level=logging.ERROR if final else logging.WARNING,
            **{
                "event.action": "email-failed" if final else "email-retry",
                "event.outcome": "failure",
                "email.to.address": message.recipient,
                "error.type": type(exc).__name__,
                "error.message": str(exc)[:500],
                "labels.mail_id": str(message.id),
            },
        )


class MailWorker:
    """Flushes the mail queue every ``interval`` seconds in a daemon thread.

    The loop survives every exception (it logs and tries again), so a broken
    relay delays mail but never kills the worker. Example::

        worker = MailWorker(shop).start()
        ...
        worker.stop()
    """

    def __init__(
        self, shop: ShopContext, interval: float = 2.0, *, send: Sender | None = None
    ) -> None:
        self.shop = shop
        self.interval = interval
        self.send = send or sender_for(shop.settings)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> MailWorker:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="shop-mail", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_once(self) -> FlushResult:
        """One queue pass with this worker's settings."""
        return flush_queue(
            self.shop.sessions, self.shop.settings.shop.mail, send=self.send, logs=self.shop.logs
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # the database may be down; try again next round
                # Logging may fail too (disk full); the loop must still go on.
                with contextlib.suppress(Exception):
                    self.shop.logs.app(
                        f"mail queue pass failed: {exc!r}",
                        level=logging.ERROR,
                        **{
                            "event.action": "email-queue",
                            "event.outcome": "failure",
                            "error.type": type(exc).__name__,
                            "error.message": str(exc)[:500],
                        },
                    )
            self._stop.wait(self.interval)
