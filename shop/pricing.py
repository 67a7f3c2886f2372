"""Pricing a cart: lines, coupon, VIP discount and total in the chosen currency.

One function, ``quote``, prices a cart for display and for checkout, so what
the customer saw is what they pay. Discounts are applied in this order: the
coupon (one per order), then the VIP discount on what remains.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from shop.models import Cart, Coupon, Customer, Product, as_utc, utcnow
from shop.money import Currencies, round_money
from shop.validation import ApiError

ZERO = Decimal("0.00")


@dataclass(frozen=True)
class Line:
    product: Product
    quantity: int
    unit_price: Decimal
    line_total: Decimal


@dataclass(frozen=True)
class Quote:
    """A priced cart. Amounts are in ``currency``; ``total_eur`` is for limits and revenue."""

    currency: str
    lines: list[Line]
    subtotal: Decimal
    coupon_code: str | None
    coupon_discount: Decimal
    vip_discount: Decimal
    total: Decimal
    total_eur: Decimal

    @property
    def discount(self) -> Decimal:
        return self.coupon_discount + self.vip_discount

    def to_json(self, lang: str = "en") -> dict[str, Any]:
        return {
            "currency": self.currency,
            "items": [
                {
                    "product_id": line.product.id,
                    "sku": line.product.sku,
                    "name": line.product.names.get(lang) or line.product.names.get("en", ""),
                    "quantity": line.quantity,
                    "unit_price": str(line.unit_price),
                    "line_total": str(line.line_total),
                    "in_stock": line.product.stock >= line.quantity,
                }
                for line in self.lines
            ],
            "subtotal": str(self.subtotal),
            "coupon": self.coupon_code,
            "coupon_discount": str(self.coupon_discount),
            "vip_discount": str(self.vip_discount),
            "total": str(self.total),
        }


def check_coupon(
    coupon: Coupon | None, code: str, subtotal_eur: Decimal, now: dt.datetime | None = None
) -> Coupon:
    """The coupon if it may be used on an order of ``subtotal_eur``; a 4xx saying why not."""
    now = now or utcnow()
    if coupon is None or not coupon.active:
        raise ApiError(400, "unknown_coupon", f"coupon {code!r:.70} does not exist", "code")
    if coupon.expires_at is not None and as_utc(coupon.expires_at) <= now:
        raise ApiError(422, "coupon_expired", f"coupon {coupon.code} has expired", "code")
    if coupon.max_uses is not None and coupon.uses >= coupon.max_uses:
        raise ApiError(
            422,
            "coupon_exhausted",
            f"coupon {coupon.code} has been used up ({coupon.max_uses} uses)",
            "code",
        )
    if subtotal_eur < coupon.min_order_eur:
        raise ApiError(
            422,
            "coupon_min_order",
            f"coupon {coupon.code} needs an order of at least {coupon.min_order_eur} EUR",
            "code",
        )
    return coupon


def quote(
    cart: Cart,
    currency: str,
    currencies: Currencies,
    *,
    coupon: Coupon | None,
    customer: Customer | None,
    vip_percent: Decimal,
    now: dt.datetime | None = None,
) -> Quote:
    """Price ``cart`` in ``currency``. ``coupon`` must be the row of ``cart.coupon_code``.

    Raises the coupon's 4xx when it no longer applies (expired, used up, order too small).
    """
    lines: list[Line] = []
    subtotal_eur = ZERO
    for item in cart.items:
        unit = currencies.convert(item.product.price_eur, currency)
        lines.append(Line(item.product, item.quantity, unit, unit * item.quantity))
        subtotal_eur += item.product.price_eur * item.quantity
    subtotal = sum((line.line_total for line in lines), ZERO)
    coupon_discount = ZERO
    code = None
    if cart.coupon_code:
        applied = check_coupon(coupon, cart.coupon_code, subtotal_eur, now)
        code = applied.code
        if applied.kind == "percent":
            coupon_discount = round_money(subtotal * applied.value / 100)
        else:
            coupon_discount = currencies.convert(applied.value, currency)
        coupon_discount = min(coupon_discount, subtotal)
    vip_discount = ZERO
    if customer is not None and customer.vip:
        vip_discount = round_money((subtotal - coupon_discount) * vip_percent / 100)
    total = subtotal - coupon_discount - vip_discount
    return Quote(
        currency=currency,
        lines=lines,
        subtotal=subtotal,
        coupon_code=code,
        coupon_discount=coupon_discount,
        vip_discount=vip_discount,
        total=total,
        total_eur=currencies.to_eur(total, currency),
    )
