"""What a request handler needs: settings, the database session, logs, the caller.

Handlers call ``ctx()`` for the shop's long-lived parts and ``db()`` for the
request's session, which the app commits after a successful request and rolls
back after an error.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from flask import current_app, g, request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from shop.accounts import find_token
from shop.faults import Faults
from shop.logs import ShopLogs
from shop.models import Customer, as_utc, utcnow
from shop.money import Currencies
from shop.releases import Release
from shop.throttle import LoginThrottle
from shop.validation import ApiError
from vigil.settings import Settings

EXTENSION = "vigil.shop"


@dataclass
class ShopContext:
    """The shop's long-lived parts, one per app."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    logs: ShopLogs
    currencies: Currencies
    release: Release
    faults: Faults
    throttle: LoginThrottle

    @property
    def gateways(self) -> list[str]:
        return sorted(self.settings.shop.gateways)


def ctx() -> ShopContext:
    rv: ShopContext = current_app.extensions[EXTENSION]
    return rv


def db() -> Session:
    """The session of the current request, opened on first use."""
    if "db" not in g:
        g.db = ctx().sessions()
    session: Session = g.db
    return session


def client_ip() -> str:
    """The client's address; X-Forwarded-For only counts when it came via a trusted proxy."""
    ip: str = g.get("client_ip") or request.remote_addr or ""
    return ip


def resolve_client_ip(remote_addr: str, forwarded_for: str | None, trusted: list[str]) -> str:
    """Walk X-Forwarded-For from the right, skipping trusted proxies (as nginx's realip does)."""
    if not forwarded_for or remote_addr not in trusted:
        return remote_addr
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop[:64]
    return hops[0][:64] if hops else remote_addr


def current_customer(*, required: bool) -> Customer | None:
    """The customer of the Bearer token, None when anonymous and not required."""
    if "customer" in g:
        cached: Customer | None = g.customer
        if cached is None and required:
            raise ApiError(401, "unauthorized", "log in first: send Authorization: Bearer <token>")
        return cached
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    if not token:
        token = request.cookies.get("shop_token", "")
    customer = None
    if token:
        row = find_token(db(), token)
        if row is not None and as_utc(row.expires_at) > utcnow():
            customer = row.customer
    g.customer = customer
    # Read now, while loaded: after a failed flush the row is expired and unreadable,
    # and the access log (written after the request) still needs the name.
    g.user_name = customer.email if customer is not None else None
    if customer is None and required:
        raise ApiError(
            401,
            "unauthorized",
            "log in first: send Authorization: Bearer <token> from POST /api/login",
        )
    return customer


def require_admin() -> str:
    """Check the admin API key; return who acts (``X-Actor`` or ``admin``)."""
    key = ctx().settings.shop.admin_api_key
    if not key:
        raise ApiError(
            403,
            "admin_disabled",
            "the admin API is disabled; set VIGIL_SHOP_ADMIN_KEY to enable it",
        )
    given = request.headers.get("X-API-Key", "")
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise ApiError(401, "unauthorized", "send the admin key in the X-API-Key header")
    actor = request.headers.get("X-Actor", "").strip()[:120] or "admin"
    g.actor = actor
    return actor


def audit(action: str, *, actor: str, target: str, before: Any, after: Any, **fields: Any) -> None:
    """Write one audit event: who did what to which thing, before and after."""
    ctx().logs.audit(
        f"{actor} {action} {target}",
        **{
            "event.action": action,
            "event.category": ["configuration"],
            "event.kind": "event",
            "user.name": actor,
            "source.ip": client_ip(),
            "audit.target": target,
            "audit.before": before,
            "audit.after": after,
        },
        **fields,
    )
