"""Orders: the status machine, refunds and the JSON views of an order.

Statuses move only along ``TRANSITIONS``; ``cancelled`` and ``refunded`` are
final. Every change is an ``OrderEvent`` (the order's own history), a count in
``shop_orders`` and, when a person made it, an audit event.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from shop import metrics
from shop.models import Order, OrderEvent, Payment, Product, iso_utc
from shop.payments import mask
from shop.validation import ApiError, not_found

TRANSITIONS: dict[str, tuple[str, ...]] = {
    "placed": ("paid", "cancelled"),
    "paid": ("shipped", "cancelled", "refunded"),
    "shipped": ("delivered",),
    "delivered": ("refunded",),
    "cancelled": (),
    "refunded": (),
}


def change_stock(session: Session, product_id: int, delta: int) -> bool:
    """Add ``delta`` to a product's stock in one statement; False if it would go negative.

    The condition lives in the UPDATE (``stock >= :q``), so concurrent checkouts
    on SQLite or PostgreSQL can never sell more than is on the shelf.
    """
    stmt = update(Product).where(Product.id == product_id)
    if delta < 0:
        stmt = stmt.where(Product.stock >= -delta)
    result = session.execute(
        stmt.values(stock=Product.stock + delta).execution_options(synchronize_session=False)
    )
    product = session.identity_map.get(identity_key(Product, product_id))
    if product is not None:
        session.expire(product, ["stock"])
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def record_status(
    session: Session, order: Order, to_status: str, *, actor: str, note: str = ""
) -> OrderEvent:
    """Move ``order`` to ``to_status`` without checks: history row and ``shop_orders``."""
    event = OrderEvent(from_status=order.status, to_status=to_status, actor=actor[:120], note=note)
    order.status = to_status
    order.history.append(event)
    session.flush()
    metrics.ORDERS.labels(to_status, order.currency).inc()
    return event


def check_transition(order: Order, to_status: str) -> None:
    """A 409 ``illegal_transition`` unless ``order`` may go to ``to_status``."""
    allowed = TRANSITIONS.get(order.status, ())
    if to_status not in allowed:
        options = ", ".join(allowed) if allowed else f"none, {order.status} is final"
        raise ApiError(
            409,
            "illegal_transition",
            f"cannot go from {order.status} to {to_status}; allowed: {options}",
            "status",
        )


def transition(
    session: Session, order: Order, to_status: str, actor: str, note: str = ""
) -> OrderEvent:
    """Change the status of ``order`` as ``actor`` and audit it (needs a request context)."""
    from shop.context import audit

    check_transition(order, to_status)
    before = order.status
    event = record_status(session, order, to_status, actor=actor, note=note)
    audit(
        "order-status",
        actor=actor,
        target=f"order:{order.public_id}",
        before={"status": before},
        after={"status": to_status, "note": note},
    )
    return event


def refund(session: Session, order: Order, *, actor: str, reason: str) -> OrderEvent:
    """Refund a paid or delivered order; a paid one's items go back into stock.

    Counts the amount in ``shop_refunds`` and audits ``order-refund``.
    """
    from shop.context import audit

    check_transition(order, "refunded")
    before = order.status
    if before == "paid":
        # Not shipped yet: the goods are still on the shelf.
        for item in order.items:
            change_stock(session, item.product_id, item.quantity)
    event = record_status(session, order, "refunded", actor=actor, note=reason)
    metrics.REFUNDS.labels(order.currency).inc(float(order.total))
    audit(
        "order-refund",
        actor=actor,
        target=f"order:{order.public_id}",
        before={"status": before},
        after={
            "status": "refunded",
            "reason": reason,
            "amount": str(order.total),
            "currency": order.currency,
            "restocked": before == "paid",
        },
    )
    return event


def find_order(session: Session, public_id: str) -> Order:
    """The order with this tracking code, or a 404."""
    order = session.scalar(select(Order).where(Order.public_id == public_id[:32]))
    if order is None:
        raise not_found("order", public_id)
    return order


def list_orders(
    session: Session, *, status: str | None, page: int, per_page: int
) -> tuple[list[Order], int]:
    """One page of orders, newest first, and how many match in all."""
    query = select(Order)
    counter = select(func.count()).select_from(Order)
    if status:
        query = query.where(Order.status == status)
        counter = counter.where(Order.status == status)
    total = int(session.scalar(counter) or 0)
    rows = session.scalars(
        query.order_by(Order.id.desc()).offset((page - 1) * per_page).limit(per_page)
    ).all()
    return list(rows), total


def order_summary(order: Order) -> dict[str, Any]:
    """One line of the admin order list."""
    return {
        "order_id": order.public_id,
        "status": order.status,
        "email": order.email,
        "currency": order.currency,
        "total": str(order.total),
        "gateway": order.gateway,
        "created_at": iso_utc(order.created_at),
    }


def order_json(order: Order) -> dict[str, Any]:
    """What the customer's tracking page shows: no e-mail, no card beyond BIN and last four."""
    return {
        "order_id": order.public_id,
        "status": order.status,
        "currency": order.currency,
        "subtotal": str(order.subtotal),
        "discount": str(order.discount),
        "total": str(order.total),
        "coupon": order.coupon_code,
        "items": [
            {
                "product_id": item.product_id,
                "sku": item.sku,
                "name": item.name,
                "quantity": item.quantity,
                "unit_price": str(item.unit_price),
                "line_total": str(item.line_total),
            }
            for item in order.items
        ],
        "payment": {"gateway": order.gateway, "card": mask(order.card_bin, order.card_last4)},
        "history": [
            {"status": event.to_status, "at": iso_utc(event.at)} for event in order.history
        ],
        "created_at": iso_utc(order.created_at),
        "tracking_url": f"/orders/{order.public_id}",
    }


def admin_order_json(session: Session, order: Order) -> dict[str, Any]:
    """The full order for the admin API: customer, history with actors, every payment."""
    payments = session.scalars(
        select(Payment).where(Payment.order_id == order.id).order_by(Payment.id)
    ).all()
    rv = order_json(order)
    rv.update(
        {
            "email": order.email,
            "customer_id": order.customer_id,
            "total_eur": str(order.total_eur),
            "updated_at": iso_utc(order.updated_at),
            "history": [
                {
                    "from": event.from_status,
                    "status": event.to_status,
                    "actor": event.actor,
                    "note": event.note,
                    "at": iso_utc(event.at),
                }
                for event in order.history
            ],
            "payments": [
                {
                    "gateway": p.gateway,
                    "outcome": p.outcome,
                    "reason": p.reason,
                    "amount": str(p.amount),
                    "currency": p.currency,
                    "amount_eur": str(p.amount_eur),
                    "card": mask(p.card_bin, p.card_last4),
                    "client_ip": p.client_ip,
                    "duration_ms": p.duration_ms,
                    "at": iso_utc(p.created_at),
                }
                for p in payments
            ],
        }
    )
    return rv
