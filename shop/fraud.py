"""The fraud check run before a payment reaches a gateway.

Three rules, checked in this order: the amount in EUR is above the limit
(``amount_limit``), the card made too many payment attempts within the window
(``card_velocity``), or the client IP did (``ip_velocity``). Attempts are
counted from the ``payments`` table, where every attempt — fraud declines
included — is a row, so every worker and instance sees the same counts.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from shop.models import Payment, utcnow
from vigil.settings import FraudSettings


def attempts(session: Session, condition: ColumnElement[bool], since: dt.datetime) -> int:
    """Payment attempts matching ``condition`` made at or after ``since``."""
    count = session.scalar(
        select(func.count()).select_from(Payment).where(condition, Payment.created_at >= since)
    )
    return int(count or 0)


def check(
    session: Session,
    limits: FraudSettings,
    *,
    amount_eur: Decimal,
    card_ref: str,
    client_ip: str,
    now: dt.datetime | None = None,
) -> str | None:
    """The reason to decline this payment, or None when it may go to the gateway."""
    if amount_eur > limits.max_amount_eur:
        return "amount_limit"
    since = (now or utcnow()) - dt.timedelta(seconds=limits.window_seconds)
    if attempts(session, Payment.card_ref == card_ref, since) >= limits.max_per_card:
        return "card_velocity"
    if attempts(session, Payment.client_ip == client_ip, since) >= limits.max_per_ip:
        return "ip_velocity"
    return None
