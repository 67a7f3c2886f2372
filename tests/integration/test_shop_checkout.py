"""Checkout end to end on SQLite and PostgreSQL: prices, payments, fraud, stock, metrics."""

from __future__ import annotations

import datetime as dt
import json
import threading
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from conftest import sample
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from shop.accounts import token_digest
from shop.db import Base
from shop.models import (
    AuthToken,
    Cart,
    Coupon,
    Customer,
    MailMessage,
    Order,
    Payment,
    Product,
    utcnow,
)
from shop.payments import luhn_ok
from vigil.settings import Settings

VISA = "4242424242424242"
DECLINED = "4000000000000002"
GATEWAY_ERROR = "4000000000000119"
CENT = Decimal("0.01")
RATES = {
    "EUR": Decimal("1"),
    "USD": Decimal("1.08"),
    "PLN": Decimal("4.30"),
    "CNY": Decimal("7.80"),
}


# --- helpers ---------------------------------------------------------------------------


def session_of(app: Flask) -> Any:
    return app.extensions["vigil.shop"].sessions()


def product(app: Flask, sku: str) -> Product:
    with session_of(app) as session:
        return session.scalars(select(Product).where(Product.sku == sku)).one()


def set_stock(app: Flask, sku: str, stock: int) -> None:
    with app.extensions["vigil.shop"].sessions.begin() as session:
        session.execute(update(Product).where(Product.sku == sku).values(stock=stock))


def make_cart(
    client: FlaskClient,
    app: Flask,
    items: list[tuple[str, int]],
    coupon: str | None = None,
    headers: dict[str, str] | None = None,
) -> str:
    rv = client.post("/api/carts", headers=headers)
    assert rv.status_code == 201, rv.json
    cart_id: str = rv.json["cart_id"]
    for sku, quantity in items:
        rv = client.post(
            f"/api/carts/{cart_id}/items",
            headers=headers,
            json={"product_id": product(app, sku).id, "quantity": quantity},
        )
        assert rv.status_code == 200, rv.json
    if coupon:
        rv = client.post(f"/api/carts/{cart_id}/coupon", json={"code": coupon}, headers=headers)
        assert rv.status_code == 200, rv.json
    return cart_id


def pay(
    client: FlaskClient,
    cart_id: str,
    *,
    number: str = VISA,
    gateway: str = "stripe",
    currency: str = "EUR",
    ip: str | None = None,
    email: str | None = "ann@example.com",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Any:
    body: dict[str, Any] = {
        "cart_id": cart_id,
        "currency": currency,
        "gateway": gateway,
        "card": {"number": number, "expiry": "12/39", "cvc": "123", "holder": "Ann Lee"},
        "shipping": {
            "name": "Ann Lee",
            "address": "Main St 1",
            "city": "Berlin",
            "postcode": "10115",
            "country": "DE",
        },
    }
    if email is not None:
        body["email"] = email
    body.update(extra)
    all_headers = dict(headers or {})
    if ip:
        all_headers["X-Forwarded-For"] = ip
    return client.post("/api/checkout", json=body, headers=all_headers)


def card_number(n: int) -> str:
    """A Luhn-valid card number of its own, not one of the sandbox test cards."""
    body = f"5555{n:06d}55555"
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def expected_totals(
    lines: list[tuple[Decimal, int]],
    currency: str,
    *,
    percent: Decimal | None = None,
    fixed_eur: Decimal | None = None,
    vip_percent: Decimal | None = None,
) -> dict[str, Decimal]:
    """Invoice arithmetic: convert and round each unit, then discounts on the subtotal."""
    rate = RATES[currency]
    subtotal = sum((money(price * rate) * qty for price, qty in lines), Decimal("0"))
    coupon = Decimal("0")
    if percent is not None:
        coupon = money(subtotal * percent / 100)
    if fixed_eur is not None:
        coupon = money(fixed_eur * rate)
    vip = money((subtotal - coupon) * vip_percent / 100) if vip_percent else Decimal("0")
    return {"subtotal": subtotal, "discount": coupon + vip, "total": subtotal - coupon - vip}


# --- purchases -------------------------------------------------------------------------


@pytest.mark.parametrize("gateway", ["stripe", "adyen", "payu"])
@pytest.mark.parametrize("currency", ["EUR", "USD", "PLN", "CNY"])
def test_checkout_every_currency_and_gateway(
    client: FlaskClient, app: Flask, currency: str, gateway: str
) -> None:
    items = [("ELEC-002", 2), ("ELEC-004", 1), ("ELEC-008", 3)]
    cart_id = make_cart(client, app, items, coupon="WELCOME10")
    lines = [(product(app, sku).price_eur, qty) for sku, qty in items]
    want = expected_totals(lines, currency, percent=Decimal("10"))
    revenue = sample("shop_revenue_total", currency=currency)
    payments = sample("shop_payments_total", gateway=gateway, outcome="approved")

    rv = pay(client, cart_id, currency=currency, gateway=gateway)

    assert rv.status_code == 201, rv.json
    body = rv.json
    assert body["status"] == "paid"
    assert body["currency"] == currency
    assert Decimal(body["subtotal"]) == want["subtotal"]
    assert Decimal(body["discount"]) == want["discount"]
    assert Decimal(body["total"]) == want["total"]
    assert body["payment"] == {"gateway": gateway, "card": "424242******4242"}
    assert body["tracking_url"] == f"/orders/{body['order_id']}"
    assert rv.headers["Location"] == body["tracking_url"]
    for item, (price, qty) in zip(body["items"], lines, strict=True):
        assert Decimal(item["unit_price"]) == money(price * RATES[currency])
        assert item["quantity"] == qty
        assert Decimal(item["line_total"]) == money(price * RATES[currency]) * qty
    assert body["items"][0]["name"] == product(app, "ELEC-002").names["en"]
    with session_of(app) as session:
        order = session.scalars(select(Order).where(Order.public_id == body["order_id"])).one()
        assert (order.status, order.gateway, order.total) == ("paid", gateway, want["total"])
        assert order.coupon_code == "WELCOME10"
        assert [e.to_status for e in order.history] == ["placed", "paid"]
        payment = session.scalars(select(Payment).where(Payment.order_id == order.id)).one()
        assert (payment.outcome, payment.amount, payment.currency) == (
            "approved",
            want["total"],
            currency,
        )
    assert sample("shop_revenue_total", currency=currency) - revenue == pytest.approx(
        float(want["total"])
    )
    assert sample("shop_payments_total", gateway=gateway, outcome="approved") - payments == 1


def test_checkout_fixed_coupon_vip_customer(client: FlaskClient, app: Flask) -> None:
    with app.extensions["vigil.shop"].sessions.begin() as session:
        customer = Customer(email="vip@example.com", name="Vera", password_hash="x", vip=True)
        session.add(customer)
        session.flush()
        session.add(
            AuthToken(
                token_hash=token_digest("vip-token"),
                customer_id=customer.id,
                expires_at=utcnow() + dt.timedelta(hours=1),
            )
        )
        customer_id = customer.id
    auth = {"Authorization": "Bearer vip-token"}
    items = [("ELEC-001", 1), ("ELEC-006", 2)]
    cart_id = make_cart(client, app, items, coupon="SAVE20", headers=auth)
    lines = [(product(app, sku).price_eur, qty) for sku, qty in items]
    want = expected_totals(lines, "PLN", fixed_eur=Decimal("20"), vip_percent=Decimal("5"))

    rv = pay(client, cart_id, currency="PLN", email=None, headers=auth)

    assert rv.status_code == 201, rv.json
    assert Decimal(rv.json["total"]) == want["total"]
    assert Decimal(rv.json["discount"]) == want["discount"]
    with session_of(app) as session:
        order = session.scalars(select(Order)).one()
        assert order.customer_id == customer_id
        assert order.email == "vip@example.com"


def test_checkout_success_takes_stock_counts_coupon_and_empties_cart(
    client: FlaskClient, app: Flask
) -> None:
    stock = product(app, "ELEC-002").stock
    with session_of(app) as session:
        uses = session.get(Coupon, "BLACKFRIDAY").uses
    cart_id = make_cart(client, app, [("ELEC-002", 3)], coupon="BLACKFRIDAY")
    before = {
        "success": sample("shop_checkouts_total", outcome="success"),
        "redeemed": sample("shop_coupon_redemptions_total", coupon="BLACKFRIDAY"),
        "placed": sample("shop_orders_total", status="placed", currency="EUR"),
        "paid": sample("shop_orders_total", status="paid", currency="EUR"),
    }

    rv = pay(client, cart_id)

    assert rv.status_code == 201, rv.json
    assert product(app, "ELEC-002").stock == stock - 3
    with session_of(app) as session:
        assert session.get(Coupon, "BLACKFRIDAY").uses == uses + 1
        cart = session.get(Cart, cart_id)
        assert cart.items == []
        assert cart.coupon_code is None
        mail = session.scalars(select(MailMessage)).one()
        assert rv.json["order_id"] in mail.subject
        assert mail.recipient == "ann@example.com"
        assert "Berlin" in mail.body
    assert sample("shop_checkouts_total", outcome="success") - before["success"] == 1
    assert sample("shop_coupon_redemptions_total", coupon="BLACKFRIDAY") - before["redeemed"] == 1
    assert sample("shop_orders_total", status="placed", currency="EUR") - before["placed"] == 1
    assert sample("shop_orders_total", status="paid", currency="EUR") - before["paid"] == 1
    # The emptied cart cannot be paid twice.
    again = pay(client, cart_id)
    assert again.status_code == 400
    assert again.json["error"]["code"] == "empty_cart"


# --- failed payments -------------------------------------------------------------------


def test_checkout_declined_card_cancels_order_and_keeps_cart(
    client: FlaskClient, app: Flask
) -> None:
    stock = product(app, "ELEC-005").stock
    cart_id = make_cart(client, app, [("ELEC-005", 2)])
    declined = sample("shop_checkouts_total", outcome="declined")
    payments = sample("shop_payments_total", gateway="adyen", outcome="declined")
    cancelled = sample("shop_orders_total", status="cancelled", currency="EUR")

    rv = pay(client, cart_id, number=DECLINED, gateway="adyen")

    assert rv.status_code == 402
    assert rv.json["error"]["code"] == "payment_declined"
    with session_of(app) as session:
        order = session.scalars(select(Order)).one()
        assert order.status == "cancelled"
        assert [e.to_status for e in order.history] == ["placed", "cancelled"]
        payment = session.scalars(select(Payment)).one()
        assert (payment.outcome, payment.reason) == ("declined", "card_declined")
        assert len(session.get(Cart, cart_id).items) == 1
        assert session.scalars(select(MailMessage)).all() == []
    assert product(app, "ELEC-005").stock == stock
    assert sample("shop_checkouts_total", outcome="declined") - declined == 1
    assert sample("shop_payments_total", gateway="adyen", outcome="declined") - payments == 1
    assert sample("shop_orders_total", status="cancelled", currency="EUR") - cancelled == 1
    # The kept cart goes through with another card.
    assert pay(client, cart_id).status_code == 201


def test_checkout_gateway_error_answers_502(client: FlaskClient, app: Flask) -> None:
    cart_id = make_cart(client, app, [("ELEC-005", 1)])
    errors = sample("shop_checkouts_total", outcome="error")

    rv = pay(client, cart_id, number=GATEWAY_ERROR, gateway="payu")

    assert rv.status_code == 502
    assert rv.json["error"]["code"] == "gateway_error"
    with session_of(app) as session:
        assert session.scalars(select(Order)).one().status == "cancelled"
        assert session.scalars(select(Payment)).one().outcome == "error"
    assert sample("shop_checkouts_total", outcome="error") - errors == 1


def test_checkout_fraud_amount_limit(client: FlaskClient, app: Flask) -> None:
    cart_id = make_cart(client, app, [("ELEC-003", 20)])  # 20 x 329 EUR > 5000 EUR
    fraud = sample("shop_fraud_declines_total", reason="amount_limit")
    outcome = sample("shop_checkouts_total", outcome="fraud")

    rv = pay(client, cart_id)

    assert rv.status_code == 402
    assert rv.json["error"]["code"] == "fraud_suspected"
    with session_of(app) as session:
        payment = session.scalars(select(Payment)).one()
        assert (payment.outcome, payment.reason) == ("fraud", "amount_limit")
        assert payment.amount_eur == Decimal("6580.00")
        assert session.scalars(select(Order)).one().status == "cancelled"
    assert sample("shop_fraud_declines_total", reason="amount_limit") - fraud == 1
    assert sample("shop_checkouts_total", outcome="fraud") - outcome == 1


def test_checkout_fraud_card_velocity(build_app: Any) -> None:
    app = build_app(fraud={"max_per_card": 2, "max_per_ip": 100})
    shop_client = app.test_client()
    fraud = sample("shop_fraud_declines_total", reason="card_velocity")
    # A declined attempt counts as much as an approved one.
    first = pay(
        shop_client,
        make_cart(shop_client, app, [("ELEC-005", 1)]),
        number=DECLINED,
        ip="198.51.100.1",
    )
    assert first.json["error"]["code"] == "payment_declined"
    second = pay(
        shop_client,
        make_cart(shop_client, app, [("ELEC-005", 1)]),
        number=DECLINED,
        ip="198.51.100.2",
    )
    assert second.json["error"]["code"] == "payment_declined"

    rv = pay(
        shop_client,
        make_cart(shop_client, app, [("ELEC-005", 1)]),
        number=DECLINED,
        ip="198.51.100.3",
    )

    assert rv.status_code == 402
    assert rv.json["error"]["code"] == "fraud_suspected"
    assert sample("shop_fraud_declines_total", reason="card_velocity") - fraud == 1
    with session_of(app) as session:
        reasons = [p.reason for p in session.scalars(select(Payment).order_by(Payment.id))]
    assert reasons == ["card_declined", "card_declined", "card_velocity"]
    # Another card is still welcome.
    assert (
        pay(
            shop_client, make_cart(shop_client, app, [("ELEC-005", 1)]), ip="198.51.100.4"
        ).status_code
        == 201
    )


def test_checkout_fraud_ip_velocity(build_app: Any) -> None:
    app = build_app(fraud={"max_per_card": 100, "max_per_ip": 3})
    shop_client = app.test_client()
    fraud = sample("shop_fraud_declines_total", reason="ip_velocity")
    for n in range(3):
        cart_id = make_cart(shop_client, app, [("ELEC-008", 1)])
        assert pay(shop_client, cart_id, number=card_number(n), ip="203.0.113.7").status_code == 201

    rv = pay(
        shop_client,
        make_cart(shop_client, app, [("ELEC-008", 1)]),
        number=card_number(9),
        ip="203.0.113.7",
    )

    assert rv.status_code == 402
    assert rv.json["error"]["code"] == "fraud_suspected"
    assert sample("shop_fraud_declines_total", reason="ip_velocity") - fraud == 1
    with session_of(app) as session:
        last = session.scalars(select(Payment).order_by(Payment.id.desc())).first()
        assert (last.reason, last.client_ip) == ("ip_velocity", "203.0.113.7")
    other = pay(
        shop_client,
        make_cart(shop_client, app, [("ELEC-008", 1)]),
        number=card_number(10),
        ip="203.0.113.8",
    )
    assert other.status_code == 201


# --- refused before an order exists ----------------------------------------------------


def test_checkout_out_of_stock(client: FlaskClient, app: Flask) -> None:
    cart_id = make_cart(client, app, [("ELEC-002", 5)])
    set_stock(app, "ELEC-002", 4)
    stockouts = sample("shop_stockouts_total", sku="ELEC-002")
    outcome = sample("shop_checkouts_total", outcome="out_of_stock")

    rv = pay(client, cart_id)

    assert rv.status_code == 409
    assert rv.json["error"]["code"] == "out_of_stock"
    assert "ELEC-002" in rv.json["error"]["message"]
    assert sample("shop_stockouts_total", sku="ELEC-002") - stockouts == 1
    assert sample("shop_checkouts_total", outcome="out_of_stock") - outcome == 1
    with session_of(app) as session:
        assert session.scalars(select(Order)).all() == []
    assert product(app, "ELEC-002").stock == 4


def test_checkout_invalid_card_is_not_echoed(client: FlaskClient, app: Flask) -> None:
    cart_id = make_cart(client, app, [("ELEC-002", 1)])
    invalid = sample("shop_checkouts_total", outcome="invalid")
    bad = "4242 4242 4242 4241"

    rv = pay(client, cart_id, number=bad)

    assert rv.status_code == 400
    assert rv.json["error"]["field"] == "card.number"
    text = rv.get_data(as_text=True)
    assert bad not in text
    assert "4242424242424241" not in text
    assert sample("shop_checkouts_total", outcome="invalid") - invalid == 1
    with session_of(app) as session:
        assert session.scalars(select(Order)).all() == []
        assert session.scalars(select(Payment)).all() == []


@pytest.mark.parametrize(
    ("change", "status", "code", "field"),
    [
        ({"gateway": "paypal"}, 400, "unknown_gateway", "gateway"),
        ({"currency": "GBP"}, 400, "unknown_currency", "currency"),
        ({"email": "not-an-address"}, 400, "invalid_value", "email"),
        ({"email": None}, 400, "missing_field", "email"),
        ({"card": "4242424242424242"}, 400, "invalid_type", "card"),
        ({"shipping": {"city": "x" * 201}}, 400, "invalid_value", "shipping.city"),
        ({"shipping": {"planet": "Mars"}}, 400, "unknown_field", "shipping.planet"),
        ({"cart_id": "00000000-0000-0000-0000-000000000000"}, 404, "not_found", None),
        ({"cart_id": 7}, 400, "invalid_type", "cart_id"),
    ],
)
def test_checkout_rejects_bad_input(
    client: FlaskClient,
    app: Flask,
    change: dict[str, Any],
    status: int,
    code: str,
    field: str | None,
) -> None:
    cart_id = make_cart(client, app, [("ELEC-002", 1)])
    body = {
        "cart_id": cart_id,
        "email": "ann@example.com",
        "currency": "EUR",
        "gateway": "stripe",
        "card": {"number": VISA, "expiry": "12/39", "cvc": "123", "holder": "Ann"},
    }
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}

    rv = client.post("/api/checkout", json=body)

    assert rv.status_code == status, rv.json
    assert rv.json["error"]["code"] == code
    assert rv.json["error"].get("field") == field
    if code == "unknown_gateway":
        assert "adyen, payu, stripe" in rv.json["error"]["message"]
    assert VISA not in rv.get_data(as_text=True)


def test_checkout_empty_cart_and_stale_coupon(client: FlaskClient, app: Flask) -> None:
    empty = client.post("/api/carts").json["cart_id"]
    rv = pay(client, empty)
    assert (rv.status_code, rv.json["error"]["code"]) == (400, "empty_cart")

    cart_id = make_cart(client, app, [("ELEC-002", 1)], coupon="WELCOME10")
    with app.extensions["vigil.shop"].sessions.begin() as session:
        session.get(Coupon, "WELCOME10").expires_at = utcnow() - dt.timedelta(minutes=1)
    rv = pay(client, cart_id)
    assert (rv.status_code, rv.json["error"]["code"]) == (422, "coupon_expired")


def test_checkout_someone_elses_cart_is_not_found(client: FlaskClient, app: Flask) -> None:
    with app.extensions["vigil.shop"].sessions.begin() as session:
        owner = Customer(email="own@example.com", password_hash="x")
        session.add(owner)
        session.flush()
        session.add(
            AuthToken(
                token_hash=token_digest("owner-token"),
                customer_id=owner.id,
                expires_at=utcnow() + dt.timedelta(hours=1),
            )
        )
    cart_id = make_cart(
        client, app, [("ELEC-002", 1)], headers={"Authorization": "Bearer owner-token"}
    )
    rv = pay(client, cart_id)
    assert rv.status_code == 404


# --- card data never kept --------------------------------------------------------------


def test_checkout_pan_never_stored_logged_or_returned(
    client: FlaskClient, app: Flask, settings: Settings
) -> None:
    pan = card_number(42)
    ok = pay(client, make_cart(client, app, [("ELEC-002", 1)]), number=pan)
    assert ok.status_code == 201
    fail = pay(client, make_cart(client, app, [("ELEC-002", 1)]), number=DECLINED)
    assert fail.status_code == 402
    order_view = client.get(ok.json["tracking_url"].replace("/orders/", "/api/orders/"))
    for rv in (ok, fail, order_view):
        assert pan not in rv.get_data(as_text=True)
        assert DECLINED not in rv.get_data(as_text=True)

    logs = "".join(p.read_text(encoding="utf-8") for p in settings.log_dir.glob("*.log"))
    assert "payment approved" in logs
    assert pan not in logs
    assert DECLINED not in logs
    with app.extensions["vigil.shop"].engine.connect() as conn:
        dump = "".join(
            repr(conn.execute(table.select()).all()) for table in Base.metadata.sorted_tables
        )
    assert pan[:6] in dump
    assert pan not in dump
    assert DECLINED not in dump


def test_checkout_payment_log_event(client: FlaskClient, app: Flask, settings: Settings) -> None:
    rv = pay(client, make_cart(client, app, [("ELEC-002", 1)]), gateway="adyen", ip="192.0.2.44")
    assert rv.status_code == 201
    lines = (settings.log_dir / "payment.log").read_text(encoding="utf-8").splitlines()
    event = json.loads(lines[-1])
    assert event["event"]["dataset"] == "shop.payment"
    assert event["event"]["outcome"] == "success"
    assert event["labels"]["gateway"] == "adyen"
    assert event["labels"]["card_bin"] == "424242"
    assert event["labels"]["card_last4"] == "4242"
    assert event["labels"]["order_id"] == rv.json["order_id"]
    assert event["labels"]["amount"] == rv.json["total"]
    assert event["labels"]["currency"] == "EUR"
    assert event["source"]["ip"] == "192.0.2.44"


# --- concurrency -----------------------------------------------------------------------


def test_checkout_concurrent_buyers_never_oversell(client: FlaskClient, app: Flask) -> None:
    carts = [make_cart(client, app, [("ELEC-004", 1)]) for _ in range(6)]
    set_stock(app, "ELEC-004", 3)
    statuses: list[int] = []
    start = threading.Barrier(len(carts))

    def buy(n: int, cart_id: str) -> None:
        start.wait()
        rv = pay(app.test_client(), cart_id, number=card_number(100 + n), ip=f"192.0.2.{n}")
        statuses.append(rv.status_code)

    threads = [threading.Thread(target=buy, args=(n, c)) for n, c in enumerate(carts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(statuses) == [201, 201, 201, 409, 409, 409]
    assert product(app, "ELEC-004").stock == 0
    with session_of(app) as session:
        paid = session.scalars(select(Order).where(Order.status == "paid")).all()
    assert len(paid) == 3


def test_checkout_sold_out_during_payment_voids_and_restores(
    client: FlaskClient, app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shop import checkout as checkout_module
    from shop.context import db

    cart_id = make_cart(client, app, [("ELEC-002", 2), ("ELEC-005", 3)])
    stock_002 = product(app, "ELEC-002").stock
    real = checkout_module.authorise

    def authorise_then_someone_buys(*args: Any, **kwargs: Any) -> Any:
        rv = real(*args, **kwargs)
        # Another buyer takes the last ELEC-005 while the gateway answers.
        db().execute(update(Product).where(Product.sku == "ELEC-005").values(stock=1))
        return rv

    monkeypatch.setattr(checkout_module, "authorise", authorise_then_someone_buys)

    rv = pay(client, cart_id)

    assert rv.status_code == 409
    assert rv.json["error"]["code"] == "out_of_stock"
    assert "voided" in rv.json["error"]["message"]
    assert product(app, "ELEC-002").stock == stock_002  # taken, then given back
    assert product(app, "ELEC-005").stock == 1
    with session_of(app) as session:
        assert session.scalars(select(Order)).one().status == "cancelled"
        payment = session.scalars(select(Payment)).one()
        assert (payment.outcome, payment.reason) == ("approved", "voided: out of stock")
        assert len(session.get(Cart, cart_id).items) == 2
