"""Carts and coupons: what a customer is about to buy, priced by ``shop.pricing``.

A cart is addressed by an unguessable UUID, so an anonymous visitor can keep
one. Stock is checked when items are added (a 409 naming the SKU and the
stock left) but only reserved at checkout. One coupon per cart: applying a
new code replaces the old one.

Example::

    cart = create_cart(session, customer=None)
    add_item(session, cart, product_id=1, quantity=2)
    apply_coupon(session, cart, "welcome10")
    quote, coupon_error = cart_quote(session, cart, "PLN", None, settings)
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy.orm import Session

from shop import metrics
from shop.catalog import get_product
from shop.models import Cart, CartItem, Coupon, Customer, Product, utcnow
from shop.money import Currencies
from shop.pricing import Quote, check_coupon, quote
from shop.validation import MAX_QUANTITY, ApiError, not_found
from vigil.settings import Settings

MAX_CODE_LEN = 64


def create_cart(session: Session, customer: Customer | None) -> Cart:
    """A new empty cart, owned by ``customer`` when one is logged in."""
    cart = Cart(id=str(uuid.uuid4()), customer_id=customer.id if customer else None)
    session.add(cart)
    session.flush()
    return cart


def get_cart(session: Session, cart_id: str) -> Cart:
    """The cart, or a 404 (also for ids that are not UUIDs)."""
    try:
        key = str(uuid.UUID(cart_id))
    except ValueError:
        raise not_found("cart", cart_id) from None
    cart = session.get(Cart, key)
    if cart is None:
        raise not_found("cart", cart_id)
    return cart


def _find_item(cart: Cart, product_id: int) -> CartItem | None:
    return next((item for item in cart.items if item.product_id == product_id), None)


def _check_stock(product: Product, quantity: int) -> None:
    if quantity > product.stock:
        metrics.STOCKOUTS.labels(product.sku).inc()
        raise ApiError(
            409,
            "out_of_stock",
            f"only {product.stock} of {product.sku} in stock; "
            f"lower the quantity to at most {product.stock}",
            "quantity",
        )


def _check_quantity(quantity: int) -> None:
    if not 0 <= quantity <= MAX_QUANTITY:
        raise ApiError(
            400,
            "out_of_range",
            f"the quantity of one product must be between 0 and {MAX_QUANTITY}",
            "quantity",
        )


def _touch(session: Session, cart: Cart) -> None:
    # Items live in their own table; bump the cart so "last changed" means the contents.
    cart.updated_at = utcnow()
    session.flush()
    session.expire(cart, ["items"])


def add_item(session: Session, cart: Cart, product_id: int, quantity: int) -> CartItem:
    """Add ``quantity`` of a product to what the cart already holds.

    404 for an unknown or deactivated product, 400 when the total would exceed
    ``MAX_QUANTITY``, 409 when it exceeds the stock.
    """
    if quantity < 1:
        raise ApiError(400, "out_of_range", "'quantity' must be at least 1", "quantity")
    product = get_product(session, product_id)
    item = _find_item(cart, product_id)
    new_quantity = quantity + (item.quantity if item else 0)
    if new_quantity > MAX_QUANTITY:
        raise ApiError(
            400,
            "out_of_range",
            f"a cart holds at most {MAX_QUANTITY} of one product; "
            f"it already has {new_quantity - quantity}",
            "quantity",
        )
    _check_stock(product, new_quantity)
    if item is None:
        item = CartItem(product=product, quantity=new_quantity)
        cart.items.append(item)
    else:
        item.quantity = new_quantity
    _touch(session, cart)
    return item


def set_quantity(session: Session, cart: Cart, product_id: int, quantity: int) -> CartItem | None:
    """Set a product's quantity; 0 removes it. Returns the item, None when removed."""
    _check_quantity(quantity)
    item = _find_item(cart, product_id)
    if quantity == 0:
        if item is not None:
            cart.items.remove(item)
            _touch(session, cart)
        return None
    product = get_product(session, product_id)
    _check_stock(product, quantity)
    if item is None:
        item = CartItem(product=product, quantity=quantity)
        cart.items.append(item)
    else:
        item.quantity = quantity
    _touch(session, cart)
    return item


def remove_item(session: Session, cart: Cart, product_id: int) -> None:
    """Take a product out of the cart; 404 when it is not in it."""
    item = _find_item(cart, product_id)
    if item is None:
        raise ApiError(404, "not_found", f"product {product_id} is not in this cart")
    cart.items.remove(item)
    _touch(session, cart)


def subtotal_eur(cart: Cart) -> Decimal:
    """The cart's value in EUR before discounts, as coupon minimums are stated."""
    return sum((item.product.price_eur * item.quantity for item in cart.items), Decimal("0"))


def normalise_code(code: str) -> str:
    """Coupon codes are case-insensitive: stored and compared upper-case."""
    return code.strip().upper()[:MAX_CODE_LEN]


def apply_coupon(session: Session, cart: Cart, code: str) -> Coupon:
    """Put a coupon on the cart, replacing any other; the coupon's 4xx when it does not apply."""
    normalised = normalise_code(code)
    coupon = session.get(Coupon, normalised) if normalised else None
    applied = check_coupon(coupon, code, subtotal_eur(cart))
    cart.coupon_code = applied.code
    _touch(session, cart)
    return applied


def remove_coupon(cart: Cart) -> None:
    """Take the coupon off the cart."""
    cart.coupon_code = None
    cart.updated_at = utcnow()


def _without_coupon(cart: Cart) -> Cart:
    # A transient copy: clearing the real cart's code would be saved by the request.
    return Cart(
        id=cart.id,
        coupon_code=None,
        items=[CartItem(product=item.product, quantity=item.quantity) for item in cart.items],
    )


def cart_quote(
    session: Session, cart: Cart, currency: str, customer: Customer | None, settings: Settings
) -> tuple[Quote, str | None]:
    """Price the cart in ``currency`` for ``customer`` (VIP discount).

    When the stored coupon no longer applies (expired, used up, cart now below
    its minimum) the cart is priced without it and the second value says why;
    the coupon stays on the cart and applies again once the cart qualifies.
    """
    currencies = Currencies(settings.shop.rates)
    currency = currencies.check(currency)
    vip_percent = settings.shop.vip_discount_percent
    coupon = session.get(Coupon, cart.coupon_code) if cart.coupon_code else None
    try:
        rv = quote(
            cart, currency, currencies, coupon=coupon, customer=customer, vip_percent=vip_percent
        )
    except ApiError as err:
        if err.field != "code":
            raise
        rv = quote(
            _without_coupon(cart),
            currency,
            currencies,
            coupon=None,
            customer=customer,
            vip_percent=vip_percent,
        )
        return rv, err.message
    return rv, None
