"""Shop API for operators: orders, refunds, fault injection and the mail queue.

Every route calls ``require_admin()`` first (``X-API-Key``; ``X-Actor`` names
who acts in the audit log).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, request
from sqlalchemy import delete

from shop import ledger, mailer
from shop.context import audit, ctx, db, require_admin
from shop.faults import read_faults, update_faults
from shop.models import ORDER_STATUSES, FaultSetting, utcnow
from shop.orders import (
    admin_order_json,
    find_order,
    list_orders,
    order_summary,
    refund,
    transition,
)
from shop.validation import ApiError, json_body, query_int, require_str

bp = Blueprint("admin", __name__)

MAX_NOTE = 500
MAX_EPOCH = 32503680000  # year 3000: a bound every database's datetime can hold


@bp.get("/api/admin/orders")
def admin_orders() -> Any:
    """Orders newest first: ``?status=&page=&per_page=``."""
    require_admin()
    status = request.args.get("status") or None
    if status is not None and status not in ORDER_STATUSES:
        raise ApiError(
            400,
            "invalid_value",
            f"unknown status {status!r:.20}; use one of {', '.join(ORDER_STATUSES)}",
            "status",
        )
    page = query_int("page", default=1, minimum=1, maximum=100000)
    per_page = query_int("per_page", default=50, minimum=1, maximum=200)
    orders, total = list_orders(db(), status=status, page=page, per_page=per_page)
    return {
        "orders": [order_summary(o) for o in orders],
        "page": page,
        "per_page": per_page,
        "total": total,
    }


@bp.get("/api/admin/orders/<public_id>")
def admin_order(public_id: str) -> Any:
    """One order with its customer, full history and every payment attempt."""
    require_admin()
    return admin_order_json(db(), find_order(db(), public_id))


@bp.post("/api/admin/orders/<public_id>/status")
def admin_order_status(public_id: str) -> Any:
    """``{"status", "note"}``: move the order; 409 for a transition the model forbids."""
    actor = require_admin()
    data = json_body()
    to_status = require_str(data, "status", max_len=16)
    if to_status not in ORDER_STATUSES:
        raise ApiError(
            400,
            "invalid_value",
            f"unknown status {to_status!r:.20}; use one of {', '.join(ORDER_STATUSES)}",
            "status",
        )
    note = _optional_text(data, "note")
    order = find_order(db(), public_id)
    if to_status == "refunded":
        # A refund is more than a status: it restocks and counts the money.
        refund(db(), order, actor=actor, reason=note)
    else:
        transition(db(), order, to_status, actor, note)
    return admin_order_json(db(), order)


@bp.post("/api/admin/orders/<public_id>/refund")
def admin_order_refund(public_id: str) -> Any:
    """``{"reason"}``: refund a paid or delivered order."""
    actor = require_admin()
    data = json_body()
    reason = _optional_text(data, "reason")
    order = find_order(db(), public_id)
    refund(db(), order, actor=actor, reason=reason)
    return admin_order_json(db(), order)


def _optional_text(data: dict[str, Any], field: str) -> str:
    value = data.get(field, "")
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_NOTE:
        raise ApiError(
            400,
            "invalid_value",
            f"'{field}' must be a string of at most {MAX_NOTE} characters",
            field,
        )
    return value.strip()


def _require_faults() -> None:
    if not ctx().settings.shop.faults_enabled:
        raise ApiError(
            403,
            "faults_disabled",
            "fault injection is disabled; set shop.faults_enabled: true in the "
            "config or VIGIL_SHOP_FAULTS_ENABLED=true and restart the shop",
        )


def _faults_json() -> dict[str, Any]:
    shop = ctx()
    return {"enabled": shop.settings.shop.faults_enabled, "faults": read_faults(db()).to_json()}


@bp.get("/api/admin/gateways/<name>/transactions")
def gateway_transactions(name: str) -> Any:
    """A simulated gateway's ledger, oldest first: ``?since=<epoch seconds>&limit=``."""
    require_admin()
    if name not in ctx().settings.shop.gateways:
        raise ApiError(404, "not_found", f"gateway {name!r:.40} does not exist", "name")
    since = query_int("since", default=0, minimum=0, maximum=MAX_EPOCH)
    limit = query_int("limit", default=100, minimum=1, maximum=1000)
    rows = ledger.transactions(
        db(), name, since=dt.datetime.fromtimestamp(since, dt.UTC), limit=limit
    )
    return {"gateway": name, "transactions": [ledger.transaction_json(t) for t in rows]}


@bp.get("/api/admin/faults")
def get_faults() -> Any:
    """The faults in force (all zero when none, or when fault injection is disabled)."""
    require_admin()
    return _faults_json()


@bp.put("/api/admin/faults")
def put_faults() -> Any:
    """Set faults: latency_ms, error_rate, slow_db_ms, gateway_outage; others keep their value."""
    actor = require_admin()
    _require_faults()
    data = json_body()
    session = db()
    before = read_faults(session).to_json()
    after = update_faults(session, data, ctx().gateways).to_json()
    _apply_faults()
    audit("fault-set", actor=actor, target="shop:faults", before=before, after=after)
    return _faults_json()


@bp.delete("/api/admin/faults")
def delete_faults() -> Any:
    """Clear every fault: the drill is over."""
    actor = require_admin()
    _require_faults()
    session = db()
    before = read_faults(session).to_json()
    session.execute(delete(FaultSetting))
    _apply_faults()
    audit(
        "fault-clear",
        actor=actor,
        target="shop:faults",
        before=before,
        after=read_faults(session).to_json(),
    )
    return _faults_json()


def _apply_faults() -> None:
    # Commit first: the reload below, and other workers' reloads, must see the change.
    db().commit()
    faults = ctx().faults
    faults.invalidate()
    faults.current()


@bp.post("/api/admin/mail/flush")
def flush_mail() -> Any:
    """Run one pass of the mail queue now: ``{"sent", "deferred", "failed"}``."""
    require_admin()
    shop = ctx()
    send = mailer.sender_for(shop.settings)
    return mailer.flush_queue(
        shop.sessions, shop.settings.shop.mail, send=send, logs=shop.logs
    ).to_json()


@bp.get("/api/admin/mail")
def mail_status() -> Any:
    """Messages by status and today's sends against the daily cap."""
    require_admin()
    session = db()
    day = mailer.utc_day(utcnow())
    cap = ctx().settings.shop.mail.daily_cap
    return {
        "queue": mailer.queue_counts(session),
        "today": {"day": day, "sent": mailer.quota_used(session, day), "cap": cap},
    }
