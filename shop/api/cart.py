"""Shop API: carts, their items and their coupon.

Every answer is the cart's quote in ``?currency=`` with names in ``?lang=``,
so a client always shows the price the checkout will charge.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from shop import carts, catalog
from shop.context import ctx, current_customer, db
from shop.models import Cart
from shop.validation import MAX_QUANTITY, json_body, require_int, require_str

bp = Blueprint("cart", __name__)


def _view() -> tuple[str, str]:
    """``?lang=`` and ``?currency=``, checked before anything changes."""
    lang = catalog.check_lang(request.args.get("lang"))
    return lang, ctx().currencies.check(request.args.get("currency") or None)


def _cart_json(cart: Cart, view: tuple[str, str]) -> dict[str, Any]:
    lang, currency = view
    customer = current_customer(required=False)
    quote, coupon_error = carts.cart_quote(db(), cart, currency, customer, ctx().settings)
    return {"cart_id": cart.id, **quote.to_json(lang), "coupon_error": coupon_error}


@bp.post("/api/carts")
def create_cart() -> Any:
    """A new empty cart → 201; a logged-in caller owns it."""
    view = _view()
    cart = carts.create_cart(db(), current_customer(required=False))
    return _cart_json(cart, view), 201


@bp.get("/api/carts/<cart_id>")
def get_cart(cart_id: str) -> Any:
    view = _view()
    return _cart_json(carts.get_cart(db(), cart_id), view)


@bp.post("/api/carts/<cart_id>/items")
def add_item(cart_id: str) -> Any:
    """Add ``{"product_id", "quantity"}`` to what the cart holds."""
    view = _view()
    cart = carts.get_cart(db(), cart_id)
    data = json_body()
    product_id = require_int(data, "product_id", minimum=1, maximum=2**31 - 1)
    quantity = require_int(data, "quantity", minimum=1, maximum=MAX_QUANTITY)
    carts.add_item(db(), cart, product_id, quantity)
    return _cart_json(cart, view)


@bp.put("/api/carts/<cart_id>/items/<int:product_id>")
def set_quantity(cart_id: str, product_id: int) -> Any:
    """Set ``{"quantity"}`` of a product; 0 removes it."""
    view = _view()
    cart = carts.get_cart(db(), cart_id)
    quantity = require_int(json_body(), "quantity", minimum=0, maximum=MAX_QUANTITY)
    carts.set_quantity(db(), cart, product_id, quantity)
    return _cart_json(cart, view)


@bp.delete("/api/carts/<cart_id>/items/<int:product_id>")
def remove_item(cart_id: str, product_id: int) -> Any:
    view = _view()
    cart = carts.get_cart(db(), cart_id)
    carts.remove_item(db(), cart, product_id)
    return _cart_json(cart, view)


@bp.post("/api/carts/<cart_id>/coupon")
def apply_coupon(cart_id: str) -> Any:
    """Apply ``{"code"}`` (case-insensitive), replacing any coupon already on the cart."""
    view = _view()
    cart = carts.get_cart(db(), cart_id)
    code = require_str(json_body(), "code", min_len=1, max_len=carts.MAX_CODE_LEN)
    carts.apply_coupon(db(), cart, code)
    return _cart_json(cart, view)


@bp.delete("/api/carts/<cart_id>/coupon")
def remove_coupon(cart_id: str) -> Any:
    view = _view()
    cart = carts.get_cart(db(), cart_id)
    carts.remove_coupon(cart)
    return _cart_json(cart, view)
