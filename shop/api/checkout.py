"""Shop API: ``POST /api/checkout`` — pay for a cart and get an order back.

Request::

    {"cart_id": "…", "email": "ann@example.com", "currency": "EUR", "gateway": "stripe",
     "card": {"number": "4242 4242 4242 4242", "expiry": "12/30", "cvc": "123",
              "holder": "Ann"},
     "shipping": {"name", "address", "city", "postcode", "country"}}

201 with the order on success; 402 ``payment_declined`` / ``fraud_suspected``,
409 ``out_of_stock``, 502 ``gateway_error`` or 503 ``gateway_unavailable``
otherwise (the cancelled order is kept, the cart too).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from shop import metrics
from shop.carts import get_cart
from shop.checkout import checkout
from shop.context import client_ip, ctx, current_customer, db
from shop.validation import ApiError, json_body, require_str

bp = Blueprint("checkout", __name__)


@bp.post("/api/checkout")
def post_checkout() -> Any:
    """Check out a cart; see the module docstring for the body and the answers."""
    try:
        data = json_body()
        cart = get_cart(db(), require_str(data, "cart_id", max_len=64))
        customer = current_customer(required=False)
    except ApiError:
        metrics.CHECKOUTS.labels("invalid").inc()
        raise
    result = checkout(
        db(),
        ctx(),
        cart=cart,
        email=data.get("email"),
        currency=data.get("currency", "EUR"),
        gateway=data.get("gateway"),
        card=data.get("card"),
        shipping=data.get("shipping"),
        customer=customer,
        client_ip=client_ip(),
        base_url=request.host_url,
    )
    if result.error is not None:
        raise result.error
    rv = result.to_json()
    return rv, 201, {"Location": rv["tracking_url"]}
