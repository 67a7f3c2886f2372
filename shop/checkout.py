"""Checkout: turn a cart into a paid order, or into a cancelled one that says why.

The flow: validate, price with ``shop.pricing.quote``, check stock, create the
order (``placed``), run the fraud check, ask the gateway, then either mark it
``paid`` — take the stock, count the coupon, empty the cart, queue the
confirmation — or ``cancelled``. Every attempt leaves a ``payments`` row.

``checkout`` raises ``ApiError`` when no order was created (bad input, empty
cart, out of stock) and otherwise returns a ``CheckoutResult``. A failed
payment is committed before returning, because the caller answers >= 400 and
the app rolls back such requests. Example::

    result = checkout(session, shop, cart=cart, email="ann@example.com", currency="EUR",
                      gateway="stripe", card=card_json, shipping=None, customer=None,
                      client_ip="203.0.113.9")
    if result.error is not None:
        raise result.error
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from shop import fraud, ledger, mailer, metrics
from shop.models import Cart, Coupon, Customer, Order, OrderEvent, OrderItem, Payment
from shop.orders import change_stock, order_json, transition
from shop.payments import Authorisation, CardData, authorise, log_payment, parse_card, rng
from shop.pricing import Quote, quote
from shop.validation import ApiError

if TYPE_CHECKING:
    from shop.context import ShopContext

SHIPPING_FIELDS = ("name", "address", "city", "postcode", "country")
MAX_SHIPPING = 200
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
ACTOR = "checkout"


@dataclass
class CheckoutResult:
    """An order that was created: paid (``error`` None) or cancelled with the error to answer."""

    order: Order
    outcome: str  # success, declined, fraud, error, out_of_stock
    error: ApiError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        """The 201 body of ``POST /api/checkout``."""
        view = order_json(self.order)
        return {
            "order_id": view["order_id"],
            "status": view["status"],
            "currency": view["currency"],
            "subtotal": view["subtotal"],
            "discount": view["discount"],
            "total": view["total"],
            "coupon": view["coupon"],
            "items": view["items"],
            "payment": view["payment"],
            "tracking_url": view["tracking_url"],
        }


def check_gateway(shop: ShopContext, gateway: Any) -> str:
    """The gateway name if configured, else a 400 listing the configured ones."""
    if not isinstance(gateway, str) or gateway not in shop.settings.shop.gateways:
        raise ApiError(
            400,
            "unknown_gateway",
            f"unknown gateway {gateway!r:.40}; use one of {', '.join(shop.gateways)}",
            "gateway",
        )
    return gateway


def check_email(email: Any, customer: Customer | None) -> str:
    """The order's e-mail: the one given, or the logged-in customer's."""
    if email is None or email == "":
        if customer is not None:
            return customer.email
        raise ApiError(400, "missing_field", "'email' is required for a guest checkout", "email")
    if not isinstance(email, str) or len(email) > 254 or not _EMAIL.match(email.strip()):
        raise ApiError(400, "invalid_value", "'email' must be an e-mail address", "email")
    return email.strip()


def check_shipping(shipping: Any) -> dict[str, str] | None:
    """Optional shipping address: strings of at most 200 characters, known keys only."""
    if shipping is None:
        return None
    if not isinstance(shipping, dict):
        raise ApiError(400, "invalid_type", "'shipping' must be an object", "shipping")
    unknown = sorted(set(shipping) - set(SHIPPING_FIELDS))
    if unknown:
        raise ApiError(
            400,
            "unknown_field",
            f"unknown shipping field {unknown[0]!r:.40}; known: {', '.join(SHIPPING_FIELDS)}",
            f"shipping.{unknown[0]:.40}",
        )
    rv: dict[str, str] = {}
    for key in SHIPPING_FIELDS:
        value = shipping.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or len(value.strip()) > MAX_SHIPPING:
            raise ApiError(
                400,
                "invalid_value",
                f"'shipping.{key}' must be a string of at most {MAX_SHIPPING} characters",
                f"shipping.{key}",
            )
        rv[key] = value.strip()
    return rv


def _price(
    session: Session, shop: ShopContext, cart: Cart, currency: str, customer: Customer | None
) -> Quote:
    if not cart.items:
        raise ApiError(
            400, "empty_cart", "the cart is empty; add items before checking out", "cart_id"
        )
    coupon = session.get(Coupon, cart.coupon_code) if cart.coupon_code else None
    return quote(
        cart,
        currency,
        shop.currencies,
        coupon=coupon,
        customer=customer,
        vip_percent=shop.settings.shop.vip_discount_percent,
    )


def _check_stock(priced: Quote) -> None:
    for line in priced.lines:
        product = line.product
        if not product.active or product.stock < line.quantity:
            metrics.STOCKOUTS.labels(product.sku).inc()
            metrics.CHECKOUTS.labels("out_of_stock").inc()
            left = product.stock if product.active else 0
            raise ApiError(
                409,
                "out_of_stock",
                f"only {left} of {product.sku} in stock; lower the quantity in the "
                "cart and check out again",
                "cart_id",
            )


def _create_order(
    session: Session,
    priced: Quote,
    *,
    email: str,
    gateway: str,
    card: CardData,
    customer: Customer | None,
    shipping: dict[str, str] | None,
) -> Order:
    order = Order(
        public_id=secrets.token_urlsafe(9),
        customer_id=customer.id if customer else None,
        email=email,
        status="placed",
        currency=priced.currency,
        subtotal=priced.subtotal,
        discount=priced.discount,
        total=priced.total,
        total_eur=priced.total_eur,
        coupon_code=priced.coupon_code,
        gateway=gateway,
        card_bin=card.bin,
        card_last4=card.last4,
        shipping=shipping,
    )
    for line in priced.lines:
        order.items.append(
            OrderItem(
                product_id=line.product.id,
                sku=line.product.sku,
                name=line.product.names.get("en", line.product.sku),
                quantity=line.quantity,
                unit_price=line.unit_price,
                line_total=line.line_total,
            )
        )
    order.history.append(OrderEvent(from_status=None, to_status="placed", actor=ACTOR))
    session.add(order)
    session.flush()
    metrics.ORDERS.labels("placed", order.currency).inc()
    return order


def checkout(
    session: Session,
    shop: ShopContext,
    *,
    cart: Cart,
    email: Any,
    currency: Any,
    gateway: Any,
    card: Any,
    shipping: Any,
    customer: Customer | None,
    client_ip: str,
    base_url: str = "",
) -> CheckoutResult:
    """Check out ``cart``; see the module docstring for what is raised and returned."""
    try:
        gateway = check_gateway(shop, gateway)
        currency = shop.currencies.check(currency)
        email = check_email(email, customer)
        address = check_shipping(shipping)
        card_data = parse_card(card)
        if cart.customer_id is not None and (customer is None or customer.id != cart.customer_id):
            # Someone else's cart: answer as if it did not exist.
            raise ApiError(404, "not_found", f"cart {cart.id} does not exist", "cart_id")
        priced = _price(session, shop, cart, currency, customer)
    except ApiError:
        metrics.CHECKOUTS.labels("invalid").inc()
        raise
    _check_stock(priced)
    delay = shop.release.checkout_delay_s
    if delay:
        time.sleep(delay * rng.uniform(0.9, 1.1))
    order = _create_order(
        session,
        priced,
        email=email,
        gateway=gateway,
        card=card_data,
        customer=customer,
        shipping=address,
    )
    if order.coupon_code and not _reserve_coupon(session, order.coupon_code):
        error = ApiError(
            422, "coupon_exhausted", f"coupon {order.coupon_code} has just been used up", "code"
        )
        return _cancel(session, order, "invalid", error, "coupon used up")
    reason = fraud.check(
        session,
        shop.settings.shop.fraud,
        amount_eur=priced.total_eur,
        card_ref=card_data.card_ref,
        client_ip=client_ip,
    )
    if reason is not None:
        metrics.FRAUD_DECLINES.labels(reason).inc()
        result = Authorisation(gateway, "fraud", reason, 0)
        log_payment(
            shop,
            result,
            card_data,
            amount=order.total,
            currency=order.currency,
            order_id=order.public_id,
            client_ip=client_ip,
        )
    else:
        result = authorise(
            shop,
            gateway,
            card_data,
            amount=order.total,
            currency=order.currency,
            order_id=order.public_id,
            client_ip=client_ip,
        )
    payment = _record_payment(session, order, result, card_data, client_ip)
    if result.approved:
        ledger.record_authorisation(session, order)
    elif result.outcome != "fraud":
        ledger.record_failed(session, shop, order)
    if not result.approved:
        _release_coupon(session, order)
        return _fail(session, order, result)
    if not _take_stock(session, order):
        # Sold out between the check and now: void the authorisation, keep the cart.
        payment.reason = "voided: out of stock"
        for line in priced.lines:
            if line.product.stock < line.quantity:
                metrics.STOCKOUTS.labels(line.product.sku).inc()
        error = ApiError(
            409,
            "out_of_stock",
            "an item sold out while you were paying; the payment was voided. "
            "Lower the quantity in the cart and check out again",
            "cart_id",
        )
        _release_coupon(session, order)
        return _cancel(session, order, "out_of_stock", error, "sold out during payment")
    transition(session, order, "paid", actor=ACTOR, note=f"{gateway} approved")
    ledger.record_capture(session, shop, order)
    if order.coupon_code:
        metrics.COUPON_REDEMPTIONS.labels(order.coupon_code).inc()
    cart.items.clear()
    cart.coupon_code = None
    session.flush()
    metrics.REVENUE.labels(order.currency).inc(float(order.total))
    mailer.enqueue_confirmation(session, order, base_url=base_url, shipping=address)
    metrics.CHECKOUTS.labels("success").inc()
    shop.logs.app(
        f"order {order.public_id} paid: {order.total} {order.currency} via {gateway}",
        **{
            "event.action": "order-paid",
            "event.outcome": "success",
            "labels.order_id": order.public_id,
            "labels.gateway": gateway,
            "labels.currency": order.currency,
            "labels.total": str(order.total),
            "user.name": customer.email if customer is not None else None,
            "source.ip": client_ip,
        },
    )
    return CheckoutResult(order, "success")


def _reserve_coupon(session: Session, code: str) -> bool:
    """Take one use of the coupon atomically, so two checkouts cannot share its last use."""
    taken = session.execute(
        update(Coupon)
        .where(
            Coupon.code == code,
            or_(Coupon.max_uses.is_(None), Coupon.uses < Coupon.max_uses),
        )
        .values(uses=Coupon.uses + 1)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    _expire_uses(session, code)
    return bool(taken == 1)


def _release_coupon(session: Session, order: Order) -> None:
    """Give back the use reserved for an order whose payment failed."""
    if not order.coupon_code:
        return
    session.execute(
        update(Coupon)
        .where(Coupon.code == order.coupon_code, Coupon.uses > 0)
        .values(uses=Coupon.uses - 1)
        .execution_options(synchronize_session=False)
    )
    _expire_uses(session, order.coupon_code)


def _expire_uses(session: Session, code: str) -> None:
    coupon = session.get(Coupon, code)
    if coupon is not None:
        session.expire(coupon, ["uses"])


def _record_payment(
    session: Session, order: Order, result: Authorisation, card: CardData, client_ip: str
) -> Payment:
    payment = Payment(
        order_id=order.id,
        gateway=result.gateway,
        amount=order.total,
        currency=order.currency,
        amount_eur=order.total_eur,
        outcome=result.outcome,
        reason=result.reason,
        card_bin=card.bin,
        card_last4=card.last4,
        card_ref=card.card_ref,
        client_ip=client_ip[:64],
        duration_ms=result.duration_ms,
    )
    session.add(payment)
    session.flush()
    return payment


def _take_stock(session: Session, order: Order) -> bool:
    """Take every line's quantity off the shelf, all or nothing."""
    taken: list[tuple[int, int]] = []
    # Items are in product order, so concurrent checkouts lock rows in the same order.
    for item in sorted(order.items, key=lambda i: i.product_id):
        if not change_stock(session, item.product_id, -item.quantity):
            for product_id, quantity in taken:
                change_stock(session, product_id, quantity)
            return False
        taken.append((item.product_id, item.quantity))
    return True


def _fail(session: Session, order: Order, result: Authorisation) -> CheckoutResult:
    if result.outcome == "fraud":
        error = ApiError(
            402,
            "fraud_suspected",
            "the payment was refused by our fraud check; contact support if this is a mistake",
        )
    elif result.outcome == "declined":
        error = ApiError(
            402, "payment_declined", "the card was declined; try another card or contact your bank"
        )
    elif result.http_status == 503:
        error = ApiError(
            503,
            "gateway_unavailable",
            f"the payment gateway {result.gateway} is unavailable; try another "
            "gateway or again later",
        )
    else:
        error = ApiError(
            502,
            "gateway_error",
            f"the payment gateway {result.gateway} failed; nothing was charged, please try again",
        )
    note = f"{result.gateway} {result.outcome}: {result.reason}"
    return _cancel(session, order, result.outcome, error, note)


def _cancel(
    session: Session, order: Order, outcome: str, error: ApiError, note: str
) -> CheckoutResult:
    transition(session, order, "cancelled", actor=ACTOR, note=note)
    session.commit()
    metrics.CHECKOUTS.labels(outcome).inc()
    return CheckoutResult(order, outcome, error)
