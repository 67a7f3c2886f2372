"""Shop API: order tracking for the customer, by the order's unguessable public id."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from shop.context import db
from shop.orders import find_order, order_json

bp = Blueprint("orders", __name__)


@bp.get("/api/orders/<public_id>")
def get_order(public_id: str) -> Any:
    """Status, items, totals and history of an order; the card only as BIN and last four."""
    return order_json(find_order(db(), public_id))
