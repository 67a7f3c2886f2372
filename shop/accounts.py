"""Customer accounts: registration, login with bearer tokens, logout.

Passwords are stored only as werkzeug hashes (scrypt by default), bearer
tokens only as their SHA-256: the client gets the token once, at login. A
failed login answers the same for an unknown e-mail and a wrong password, and
takes the same time, so the API does not tell which addresses have accounts;
the reason is written to the auth log only, where the SIEM needs it. Failed
logins are limited per account and per client IP (``shop.throttle``).

Example::

    register(session, "ann@example.com", "correct horse", "Ann")
    issued = login(session, "ann@example.com", "correct horse", logs=logs, source_ip="10.0.0.7")
    issued.token  # the only time the raw token exists outside the client
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from shop import metrics
from shop.logs import ShopLogs
from shop.models import AuthToken, Customer, Order, iso_utc, utcnow
from shop.throttle import LoginThrottle, Throttled
from shop.validation import ApiError

TOKEN_LIFETIME = dt.timedelta(hours=24)
MIN_PASSWORD = 8
MAX_PASSWORD = 128
MAX_EMAIL = 254
MAX_NAME = 120
# Deliberately simple: one @, no spaces, a dot in the domain. Delivery is the real test.
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
LOGIN_FAILED = "wrong e-mail or password"
# Tokens the shop issues are 43 characters; anything much longer is not one.
MAX_TOKEN = 64


@dataclass(frozen=True)
class IssuedToken:
    """A token just issued: the raw value, which is stored nowhere, and its row."""

    token: str
    row: AuthToken


def token_digest(token: str) -> str:
    """What the database keeps of a bearer token: its SHA-256, hex.

    A plain hash, not a slow KDF: the token is 256 random bits, nothing to
    brute-force, and every authenticated request computes it.
    """
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def find_token(session: Session, token: str) -> AuthToken | None:
    """The row of a bearer token as the client sends it, None when unknown."""
    if not token or len(token) > MAX_TOKEN:
        return None
    return session.get(AuthToken, token_digest(token))


def normalise_email(email: str) -> str:
    """An address as stored: trimmed and lower-cased."""
    return email.strip().lower()


def check_email(email: str) -> str:
    """The normalised address, or a 400 saying what is wrong with it."""
    normalised = normalise_email(email)
    if len(normalised) > MAX_EMAIL or not EMAIL_RE.match(normalised):
        raise ApiError(
            400, "invalid_email", "'email' must be an e-mail address like name@example.com", "email"
        )
    return normalised


def check_password(password: str) -> None:
    """A 400 unless the password has 8 to 128 characters."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ApiError(
            400,
            "invalid_password",
            f"'password' must have {MIN_PASSWORD} to {MAX_PASSWORD} characters",
            "password",
        )


def register(session: Session, email: str, password: str, name: str) -> Customer:
    """Create a customer account; 400 for a bad e-mail or password, 409 when taken."""
    address = check_email(email)
    check_password(password)
    if len(name) > MAX_NAME:
        raise ApiError(
            400, "invalid_value", f"'name' must be at most {MAX_NAME} characters", "name"
        )
    taken = ApiError(
        409,
        "email_taken",
        "an account with this e-mail already exists; log in or reset the password",
        "email",
    )
    if session.scalar(select(Customer.id).where(Customer.email == address)) is not None:
        raise taken
    customer = Customer(
        email=address,
        name=name.strip(),
        password_hash=generate_password_hash(password),
        group="retail",
        vip=False,
    )
    session.add(customer)
    try:
        session.flush()
    except IntegrityError:
        # Two registrations raced; the unique index decided.
        raise taken from None
    return customer


@functools.cache
def _dummy_hash() -> str:
    return generate_password_hash(secrets.token_urlsafe(16))


def login(
    session: Session,
    email: str,
    password: str,
    *,
    logs: ShopLogs,
    source_ip: str = "",
    user_agent: str = "",
    throttle: LoginThrottle | None = None,
) -> IssuedToken | None:
    """A new 24-hour token, or None when the e-mail or password is wrong.

    Every attempt is counted in ``shop_logins`` and written to the auth log
    with the client's address, the outcome and, on failure, the reason. With
    ``throttle``, an account or IP over its failed-login limit raises
    ``Throttled`` (429) before the password is even checked.
    """
    address = normalise_email(email)
    if throttle is not None:
        try:
            throttle.check(session, account=address, ip=source_ip)
        except Throttled as err:
            _log_login(logs, email, source_ip, user_agent, None, f"throttled ({err.scope} limit)")
            raise
    customer = session.scalar(select(Customer).where(Customer.email == address))
    if customer is None:
        # Hash anyway, so the answer takes as long as for a real account.
        check_password_hash(_dummy_hash(), password)
        failure = "unknown user"
    elif not check_password_hash(customer.password_hash, password):
        failure = "bad password"
    else:
        failure = ""
    if failure:
        if throttle is not None:
            throttle.failed(account=address, ip=source_ip)
        _log_login(logs, email, source_ip, user_agent, customer, failure)
        return None
    assert customer is not None
    if throttle is not None:
        throttle.succeeded(session, account=address)
    now = utcnow()
    session.execute(
        delete(AuthToken).where(AuthToken.customer_id == customer.id, AuthToken.expires_at < now)
    )
    raw = secrets.token_urlsafe(32)
    row = AuthToken(
        token_hash=token_digest(raw), customer=customer, expires_at=now + TOKEN_LIFETIME
    )
    session.add(row)
    session.flush()
    _log_login(logs, email, source_ip, user_agent, customer, None)
    return IssuedToken(raw, row)


def _log_login(
    logs: ShopLogs,
    email: str,
    source_ip: str,
    user_agent: str,
    customer: Customer | None,
    failure: str | None,
) -> None:
    outcome = "failure" if failure else "success"
    metrics.LOGINS.labels(outcome).inc()
    given = email[:MAX_EMAIL]
    fields: dict[str, Any] = {
        "event.kind": "event",
        "event.category": ["authentication"],
        "event.type": ["start"],
        "event.action": "user-login",
        "event.outcome": outcome,
        "event.reason": failure,
        "user.name": given,
        "user.id": str(customer.id) if customer is not None else None,
        "source.ip": source_ip or None,
        "user_agent.original": user_agent or None,
    }
    if failure:
        logs.auth(f"login failed for {given}: {failure}", **fields)
    else:
        logs.auth(f"login succeeded for {given}", **fields)


def logout(session: Session, token: str) -> bool:
    """Revoke a token; False when it did not exist."""
    row = find_token(session, token)
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


def customer_json(customer: Customer) -> dict[str, Any]:
    return {
        "id": customer.id,
        "email": customer.email,
        "name": customer.name,
        "group": customer.group,
        "vip": customer.vip,
    }


def token_json(issued: IssuedToken) -> dict[str, Any]:
    return {
        "token": issued.token,
        "expires_at": iso_utc(issued.row.expires_at),
        "customer": customer_json(issued.row.customer),
    }


def customer_orders(session: Session, customer: Customer) -> list[Order]:
    """The customer's orders, newest first."""
    return list(
        session.scalars(
            select(Order)
            .where(Order.customer_id == customer.id)
            .order_by(Order.created_at.desc(), Order.id.desc())
        )
    )


def order_summary_json(order: Order) -> dict[str, Any]:
    return {
        "order_id": order.public_id,
        "status": order.status,
        "currency": order.currency,
        "total": str(order.total),
        "created_at": iso_utc(order.created_at),
    }
