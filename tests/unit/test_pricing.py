"""Pricing on in-memory models: lines, coupons in order, VIP discount, no database."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from shop.models import Cart, CartItem, Coupon, Customer, Product
from shop.money import Currencies
from shop.pricing import check_coupon, quote
from shop.validation import ApiError

RATES = {"EUR": Decimal("1"), "PLN": Decimal("4.30"), "CNY": Decimal("7.80")}
NOW = dt.datetime(2030, 6, 1, tzinfo=dt.UTC)


def _product(pid: int, price: str, stock: int = 100) -> Product:
    return Product(
        id=pid,
        sku=f"TEST-{pid:03}",
        price_eur=Decimal(price),
        stock=stock,
        names={"en": f"Thing {pid}", "de": f"Ding {pid}"},
        descriptions={},
    )


def _cart(*lines: tuple[Product, int], coupon: str | None = None) -> Cart:
    return Cart(
        id="c", coupon_code=coupon, items=[CartItem(product=p, quantity=q) for p, q in lines]
    )


def _coupon(
    code: str,
    kind: str,
    value: str,
    *,
    min_order: str = "0",
    expires_at: dt.datetime | None = None,
    max_uses: int | None = None,
    uses: int = 0,
) -> Coupon:
    return Coupon(
        code=code,
        kind=kind,
        value=Decimal(value),
        min_order_eur=Decimal(min_order),
        expires_at=expires_at,
        max_uses=max_uses,
        uses=uses,
        active=True,
    )


def test_quote_lines_and_subtotal_eur() -> None:
    rv = quote(
        _cart((_product(1, "19.99"), 3), (_product(2, "5.00"), 1)),
        "EUR",
        Currencies(RATES),
        coupon=None,
        customer=None,
        vip_percent=Decimal("5"),
    )
    assert [line.line_total for line in rv.lines] == [Decimal("59.97"), Decimal("5.00")]
    assert rv.subtotal == rv.total == Decimal("64.97")
    assert rv.discount == Decimal("0")


def test_quote_converts_per_unit_then_multiplies() -> None:
    # 0.99 × 4.30 = 4.257 → 4.26 a unit; 3 units are 12.78, not round(2.97 × 4.30) = 12.77.
    rv = quote(
        _cart((_product(1, "0.99"), 3)),
        "PLN",
        Currencies(RATES),
        coupon=None,
        customer=None,
        vip_percent=Decimal("5"),
    )
    assert rv.lines[0].unit_price == Decimal("4.26")
    assert rv.total == Decimal("12.78")
    assert rv.to_json("de")["items"][0]["name"] == "Ding 1"


def test_quote_percent_coupon_rounds_half_up() -> None:
    coupon = _coupon("TEN", "percent", "10")
    rv = quote(
        _cart((_product(1, "0.25"), 5), coupon="TEN"),
        "EUR",
        Currencies(RATES),
        coupon=coupon,
        customer=None,
        vip_percent=Decimal("5"),
        now=NOW,
    )
    # 1.25 × 10 % = 0.125 → 0.13
    assert rv.coupon_discount == Decimal("0.13")
    assert rv.total == Decimal("1.12")
    assert rv.coupon_code == "TEN"


def test_quote_fixed_coupon_converted_and_capped() -> None:
    coupon = _coupon("SAVE20", "fixed", "20")
    rv = quote(
        _cart((_product(1, "100.00"), 1), coupon="SAVE20"),
        "PLN",
        Currencies(RATES),
        coupon=coupon,
        customer=None,
        vip_percent=Decimal("5"),
        now=NOW,
    )
    assert rv.coupon_discount == Decimal("86.00")
    assert rv.total == Decimal("344.00")
    small = quote(
        _cart((_product(1, "5.00"), 1), coupon="SAVE20"),
        "EUR",
        Currencies(RATES),
        coupon=coupon,
        customer=None,
        vip_percent=Decimal("5"),
        now=NOW,
    )
    assert small.coupon_discount == Decimal("5.00")
    assert small.total == Decimal("0.00")


def test_quote_vip_discount_applies_after_coupon() -> None:
    coupon = _coupon("TEN", "percent", "10")
    vip = Customer(email="v@example.com", vip=True)
    rv = quote(
        _cart((_product(1, "99.99"), 1), coupon="TEN"),
        "EUR",
        Currencies(RATES),
        coupon=coupon,
        customer=vip,
        vip_percent=Decimal("5"),
        now=NOW,
    )
    # 99.99 - 10.00 = 89.99; 5 % of that is 4.4995 → 4.50
    assert rv.coupon_discount == Decimal("10.00")
    assert rv.vip_discount == Decimal("4.50")
    assert rv.total == Decimal("85.49")
    assert rv.total_eur == Decimal("85.49")


def test_quote_no_vip_discount_for_regular_customer() -> None:
    regular = Customer(email="r@example.com", vip=False)
    rv = quote(
        _cart((_product(1, "50.00"), 2)),
        "CNY",
        Currencies(RATES),
        coupon=None,
        customer=regular,
        vip_percent=Decimal("5"),
    )
    assert rv.vip_discount == Decimal("0")
    assert rv.total == Decimal("780.00")
    assert rv.total_eur == Decimal("100.00")


@pytest.mark.parametrize(
    ("coupon", "subtotal", "code"),
    [
        (_coupon("MIN", "fixed", "20", min_order="100"), "99.99", "coupon_min_order"),
        (
            _coupon("OLD", "percent", "5", expires_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)),
            "10",
            "coupon_expired",
        ),
        (_coupon("USED", "percent", "30", max_uses=3, uses=3), "10", "coupon_exhausted"),
        (None, "10", "unknown_coupon"),
    ],
)
def test_check_coupon_refuses(coupon: Coupon | None, subtotal: str, code: str) -> None:
    with pytest.raises(ApiError) as info:
        check_coupon(coupon, "X", Decimal(subtotal), NOW)
    assert info.value.code == code
    assert info.value.field == "code"


def test_check_coupon_inactive_is_unknown() -> None:
    coupon = _coupon("OFF", "percent", "5")
    coupon.active = False
    with pytest.raises(ApiError, match="does not exist"):
        check_coupon(coupon, "OFF", Decimal("10"), NOW)


def test_check_coupon_accepts_at_minimum_and_before_expiry() -> None:
    coupon = _coupon(
        "MIN",
        "fixed",
        "20",
        min_order="100",
        expires_at=NOW + dt.timedelta(seconds=1),
        max_uses=3,
        uses=2,
    )
    assert check_coupon(coupon, "MIN", Decimal("100.00"), NOW) is coupon


def test_quote_raises_when_coupon_stops_applying() -> None:
    coupon = _coupon("MIN", "fixed", "20", min_order="100")
    with pytest.raises(ApiError, match="at least 100"):
        quote(
            _cart((_product(1, "50.00"), 1), coupon="MIN"),
            "EUR",
            Currencies(RATES),
            coupon=coupon,
            customer=None,
            vip_percent=Decimal("5"),
            now=NOW,
        )
