"""Bad input, one class per test: every wrong request gets a 4xx JSON error, never a 500.

Runs on SQLite and PostgreSQL (the ``client`` fixture). An error body is
``{"error": {"code", "message", "field"?}}`` with no stack trace; hostile text
(SQL, script) is data, stored and shown verbatim, escaped in HTML.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from conftest import ADMIN_KEY
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from shop.models import Product, Review
from shop.seed import load_catalog
from vigil.settings import Settings

CATALOG = load_catalog()
PRODUCTS = len(CATALOG["products"])
PASSWORD = "correct horse battery"
CARD = {"number": "4242 4242 4242 4242", "expiry": "12/39", "cvc": "123"}
ADMIN = {"X-API-Key": ADMIN_KEY, "X-Actor": "alice@ops"}
SQL = ("' OR 1=1 --", "1; DROP TABLE products", "'; DELETE FROM products; --")
SCRIPT = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')
HOSTILE = SQL + SCRIPT
CHECKOUT = {"email": "ann@example.com", "gateway": "stripe", "card": CARD}
JSON = {"Content-Type": "application/json"}
# (method, path, headers): endpoints whose body is read through json_body() before anything else.
BODY_ENDPOINTS = [
    ("POST", "/api/accounts", {}),
    ("POST", "/api/login", {}),
    ("POST", "/api/products/1/reviews", {}),
    ("POST", "/api/checkout", {}),
    ("POST", "/api/admin/products", ADMIN),
    ("PATCH", "/api/admin/products/1", ADMIN),
    ("POST", "/api/admin/coupons", ADMIN),
]


def assert_error(
    rv: TestResponse, status: int, code: str | None = None, field: str | None = None
) -> dict[str, Any]:
    """The response is ``status`` with the shared JSON error shape; returns the error."""
    text = rv.get_data(as_text=True)
    assert rv.status_code == status, text[:500]
    assert "Traceback" not in text
    assert rv.is_json, text[:200]
    body = rv.json
    assert isinstance(body, dict) and set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) <= {"code", "message", "field"}
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    if field is not None:
        assert error.get("field") == field, error
    return error


def assert_handled(rv: TestResponse) -> None:
    """Not a server error; a 4xx carries the JSON error shape."""
    assert rv.status_code < 500, rv.get_data(as_text=True)[:500]
    if rv.status_code >= 400:
        assert_error(rv, rv.status_code)


def assert_products_intact(app: Flask, client: FlaskClient) -> None:
    with app.extensions["vigil.shop"].sessions() as session:
        assert session.scalar(select(func.count()).select_from(Product)) == PRODUCTS
    rv = client.get("/api/products", query_string={"per_page": 100})
    assert rv.status_code == 200
    assert sorted(p["sku"] for p in rv.json["items"]) == sorted(
        p["sku"] for p in CATALOG["products"]
    )


def register(client: FlaskClient, name: str = "Ann") -> str:
    """A new customer's bearer token."""
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    rv = client.post("/api/accounts", json={"email": email, "password": PASSWORD, "name": name})
    assert rv.status_code == 201, rv.json
    rv = client.post("/api/login", json={"email": email, "password": PASSWORD})
    assert rv.status_code == 200, rv.json
    token: str = rv.json["token"]
    return token


@pytest.fixture
def cart_id(client: FlaskClient) -> str:
    rv = client.post("/api/carts")
    assert rv.status_code == 201
    value: str = rv.json["cart_id"]
    return value


@pytest.fixture
def bearer(client: FlaskClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {register(client)}"}


# -- unknown things ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "admin"),
    [
        ("GET", "/api/products/999999", None, False),
        ("GET", "/api/products/0", None, False),
        ("GET", "/api/products/99999999999999999999", None, False),
        ("GET", "/api/carts/{random}", None, False),
        ("GET", "/api/carts/not-a-uuid", None, False),
        ("POST", "/api/carts/{random}/items", {"product_id": 1, "quantity": 1}, False),
        ("POST", "/api/carts/{cart}/items", {"product_id": 999999, "quantity": 1}, False),
        ("DELETE", "/api/carts/{cart}/items/1", None, False),
        ("GET", "/api/orders/no-such-order", None, False),
        ("POST", "/api/checkout", {"cart_id": "{random}", "gateway": "stripe"}, False),
        ("GET", "/api/admin/products/999999", None, True),
        ("PATCH", "/api/admin/customers/999999", {"vip": True}, True),
        ("PATCH", "/api/admin/customers/99999999999999", {"vip": True}, True),
        ("PATCH", "/api/admin/coupons/NO-SUCH-COUPON", {"active": False}, True),
        ("GET", "/api/admin/orders/no-such-order", None, True),
        ("POST", "/api/admin/orders/no-such-order/refund", {}, True),
    ],
)
def test_bad_input_unknown_ids_404(
    client: FlaskClient, cart_id: str, method: str, path: str, body: Any, admin: bool
) -> None:
    random = str(uuid.uuid4())
    path = path.format(random=random, cart=cart_id)
    if isinstance(body, dict) and body.get("cart_id") == "{random}":
        body = {**body, "cart_id": random}
    rv = client.open(path, method=method, json=body, headers=ADMIN if admin else {})
    assert_error(rv, 404, "not_found")


# -- numbers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "code"),
    [
        (-1, "out_of_range"),
        (0, "out_of_range"),
        (1001, "out_of_range"),
        (10**12, "out_of_range"),
        (2**64, "out_of_range"),
        ("2", "invalid_type"),
        (2.5, "invalid_type"),
        (True, "invalid_type"),
        ([1], "invalid_type"),
        ({"n": 1}, "invalid_type"),
        (None, "missing_field"),
    ],
)
def test_bad_input_add_quantity_rejected(
    client: FlaskClient, cart_id: str, quantity: Any, code: str
) -> None:
    rv = client.post(f"/api/carts/{cart_id}/items", json={"product_id": 1, "quantity": quantity})
    assert_error(rv, 400, code, "quantity")
    assert client.get(f"/api/carts/{cart_id}").json["items"] == []


@pytest.mark.parametrize("quantity", [-1, 1001, 10**30, "1", False, 1.0])
def test_bad_input_set_quantity_rejected(client: FlaskClient, cart_id: str, quantity: Any) -> None:
    rv = client.put(f"/api/carts/{cart_id}/items/1", json={"quantity": quantity})
    assert_error(rv, 400, field="quantity")


@pytest.mark.parametrize(
    ("product_id", "code"), [("1", "invalid_type"), (0, "out_of_range"), (2**31, "out_of_range")]
)
def test_bad_input_product_id_rejected(
    client: FlaskClient, cart_id: str, product_id: Any, code: str
) -> None:
    rv = client.post(f"/api/carts/{cart_id}/items", json={"product_id": product_id, "quantity": 1})
    assert_error(rv, 400, code, "product_id")


@pytest.mark.parametrize(
    "query",
    [
        {"page": 0},
        {"page": -1},
        {"page": 10001},
        {"page": "two"},
        {"page": "1e3"},
        {"per_page": 101},
        {"per_page": "9" * 40},
    ],
)
def test_bad_input_paging_rejected(client: FlaskClient, query: dict[str, Any]) -> None:
    rv = client.get("/api/products", query_string=query)
    assert_error(rv, 400, field=next(iter(query)))


# -- coupons, currencies, languages -----------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"), [("NOPE", 400), ("", 400), ("   ", 400), ("x" * 65, 400)]
)
def test_bad_input_unknown_coupon(
    client: FlaskClient, cart_id: str, code: str, status: int
) -> None:
    rv = client.post(f"/api/carts/{cart_id}/coupon", json={"code": code})
    assert_error(rv, status, field="code")
    assert client.get(f"/api/carts/{cart_id}").json["coupon"] is None


def test_bad_input_unknown_coupon_code_named(client: FlaskClient, cart_id: str) -> None:
    rv = client.post(f"/api/carts/{cart_id}/coupon", json={"code": "NOPE"})
    assert_error(rv, 400, "unknown_coupon", "code")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/products?currency=XYZ"),
        ("GET", "/api/products/1?currency=GBP"),
        ("POST", "/api/carts?currency=BTC"),
        ("GET", "/api/carts/{cart}?currency=EURO"),
    ],
)
def test_bad_input_unknown_currency_in_query(
    client: FlaskClient, cart_id: str, method: str, path: str
) -> None:
    rv = client.open(path.format(cart=cart_id), method=method)
    assert_error(rv, 400, "unknown_currency", "currency")


@pytest.mark.parametrize("currency", ["XYZ", "", 978, ["EUR"]])
def test_bad_input_unknown_currency_at_checkout(
    client: FlaskClient, cart_id: str, currency: Any
) -> None:
    body = {"cart_id": cart_id, "email": "ann@example.com", "gateway": "stripe", "card": CARD}
    rv = client.post("/api/checkout", json={**body, "currency": currency})
    assert_error(rv, 400, "unknown_currency", "currency")


@pytest.mark.parametrize(
    "path", ["/api/categories?lang=fr", "/api/products?lang=EN", "/api/products/1?lang=xx"]
)
def test_bad_input_unknown_language(client: FlaskClient, path: str) -> None:
    assert_error(client.get(path), 400, "unknown_language", "lang")


# -- the body itself --------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "headers"), BODY_ENDPOINTS)
@pytest.mark.parametrize("body", ['{"email": ', "{'email': 'a'}", "{email: 1}", "null", ""])
def test_bad_input_malformed_json(
    client: FlaskClient, method: str, path: str, headers: dict[str, str], body: str
) -> None:
    rv = client.open(path, method=method, data=body, headers={**headers, **JSON})
    assert_error(rv, 400, "malformed_json")


@pytest.mark.parametrize(("method", "path", "headers"), BODY_ENDPOINTS)
@pytest.mark.parametrize("body", ["[]", '[{"email": "a@example.com"}]', '"text"', "42", "true"])
def test_bad_input_body_not_an_object(
    client: FlaskClient, method: str, path: str, headers: dict[str, str], body: str
) -> None:
    rv = client.open(path, method=method, data=body, headers={**headers, **JSON})
    assert_error(rv, 400, "invalid_body")


@pytest.mark.parametrize(("method", "path", "headers"), BODY_ENDPOINTS)
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None]
)
def test_bad_input_wrong_content_type(
    client: FlaskClient, method: str, path: str, headers: dict[str, str], content_type: str | None
) -> None:
    sent = {**headers, "Content-Type": content_type} if content_type else headers
    rv = client.open(path, method=method, data='{"email": "a@example.com"}', headers=sent)
    assert_error(rv, 415, "unsupported_media_type")


@pytest.mark.parametrize(("method", "path", "headers"), BODY_ENDPOINTS)
def test_bad_input_oversized_body(
    app: Flask, client: FlaskClient, method: str, path: str, headers: dict[str, str]
) -> None:
    limit = app.extensions["vigil.shop"].settings.shop.max_body_bytes
    body = json.dumps({"email": "a@example.com", "name": "x" * limit})
    rv = client.open(path, method=method, data=body, headers={**headers, **JSON})
    error = assert_error(rv, 413)
    assert str(limit) in error["message"]


# -- wrong types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/accounts", {"email": ["a@example.com"], "password": PASSWORD}, "email"),
        ("/api/accounts", {"email": 12345, "password": PASSWORD}, "email"),
        ("/api/accounts", {"email": "a@example.com", "password": 12345678}, "password"),
        (
            "/api/accounts",
            {"email": "a@example.com", "password": PASSWORD, "name": {"x": 1}},
            "name",
        ),
        ("/api/login", {"email": {"$ne": None}, "password": PASSWORD}, "email"),
        ("/api/login", {"email": "a@example.com", "password": True}, "password"),
        ("/api/carts/{cart}/coupon", {"code": 123}, "code"),
        ("/api/carts/{cart}/coupon", {"code": True}, "code"),
        ("/api/carts/{cart}/coupon", {"code": {"code": "WELCOME10"}}, "code"),
        ("/api/checkout", {"cart_id": 5, "gateway": "stripe"}, "cart_id"),
        ("/api/checkout", {"cart_id": "{cart}", "gateway": ["stripe"], "card": CARD}, "gateway"),
        ("/api/checkout", {"cart_id": "{cart}", **CHECKOUT, "card": "4242"}, "card"),
        (
            "/api/checkout",
            {"cart_id": "{cart}", **CHECKOUT, "card": {**CARD, "cvc": 123}},
            "card.cvc",
        ),
        ("/api/checkout", {"cart_id": "{cart}", **CHECKOUT, "shipping": "Main St 1"}, "shipping"),
        ("/api/checkout", {"cart_id": "{cart}", **CHECKOUT, "email": ["a@example.com"]}, "email"),
    ],
)
def test_bad_input_wrong_types_public(
    client: FlaskClient, cart_id: str, path: str, body: dict[str, Any], field: str
) -> None:
    body = {k: cart_id if v == "{cart}" else v for k, v in body.items()}
    rv = client.post(path.format(cart=cart_id), json=body)
    assert_error(rv, 400, field=field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rating": "5", "text": "good"}, "rating"),
        ({"rating": True, "text": "good"}, "rating"),
        ({"rating": 4.5, "text": "good"}, "rating"),
        ({"rating": 6, "text": "good"}, "rating"),
        ({"rating": 5, "text": {"a": 1}}, "text"),
        ({"rating": 5, "text": ["good"]}, "text"),
    ],
)
def test_bad_input_wrong_types_review(
    client: FlaskClient, bearer: dict[str, str], body: dict[str, Any], field: str
) -> None:
    before = client.get("/api/products/1").json["review_count"]
    rv = client.post("/api/products/1/reviews", json=body, headers=bearer)
    assert_error(rv, 400, field=field)
    assert client.get("/api/products/1").json["review_count"] == before


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("PATCH", "/api/admin/products/1", {"price_eur": True}, "price_eur"),
        ("PATCH", "/api/admin/products/1", {"price_eur": [1]}, "price_eur"),
        ("PATCH", "/api/admin/products/1", {"price_eur": "cheap"}, "price_eur"),
        ("PATCH", "/api/admin/products/1", {"price_eur": "NaN"}, "price_eur"),
        ("PATCH", "/api/admin/products/1", {"price_eur": "1e999999"}, "price_eur"),
        ("PATCH", "/api/admin/products/1", {"stock": "5"}, "stock"),
        ("PATCH", "/api/admin/products/1", {"active": "yes"}, "active"),
        ("PATCH", "/api/admin/products/1", {"names": "Lamp"}, "names"),
        ("PATCH", "/api/admin/products/1", {"names": {"en": 5}}, "en"),
        ("PATCH", "/api/admin/products/1", {"prize_eur": 5}, "prize_eur"),
        ("POST", "/api/admin/products/1/stock", {"delta": "5"}, "delta"),
        ("POST", "/api/admin/products/1/stock", {"delta": 5.5}, "delta"),
        ("PATCH", "/api/admin/customers/{customer}", {"group": 1}, "group"),
        ("PATCH", "/api/admin/customers/{customer}", {"vip": "true"}, "vip"),
        ("POST", "/api/admin/coupons", {"code": "X1", "kind": "percent", "value": {}}, "value"),
        ("POST", "/api/admin/coupons", {"code": "X1", "kind": 1, "value": 5}, "kind"),
        (
            "POST",
            "/api/admin/coupons",
            {"code": "X1", "kind": "fixed", "value": 5, "max_uses": "9"},
            "max_uses",
        ),
        ("POST", "/api/admin/orders/x/status", {"status": 5}, "status"),
    ],
)
def test_bad_input_wrong_types_admin(
    client: FlaskClient, bearer: dict[str, str], method: str, path: str, body: Any, field: str
) -> None:
    customer_id = client.get("/api/me", headers=bearer).json["id"]
    path = path.format(customer=customer_id)
    rv = client.open(path, method=method, json=body, headers=ADMIN)
    assert_error(rv, 400, field=field)


def test_bad_input_admin_key_wrong(client: FlaskClient) -> None:
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": ADMIN_KEY + "x"}):
        assert_error(client.get("/api/admin/products", headers=headers), 401, "unauthorized")
    rv = client.patch("/api/admin/products/1", json={"price_eur": 0.01}, headers={"X-API-Key": ""})
    assert_error(rv, 401, "unauthorized")
    assert client.get("/api/products/1").json["price"] != "0.01"


# -- hostile text -----------------------------------------------------------------------------


def _hostile_requests(client: FlaskClient, cart_id: str, text: str) -> Iterator[TestResponse]:
    """Every place a client can put free text, with ``text`` in it."""
    segment = quote(text, safe="")
    for param in ("q", "category", "sort", "lang", "currency"):
        yield client.get("/api/products", query_string={param: text})
    yield client.get("/api/categories", query_string={"lang": text})
    yield client.get(f"/api/orders/{segment}")
    yield client.get(f"/api/carts/{segment}")
    yield client.post(f"/api/carts/{cart_id}/coupon", json={"code": text})
    yield client.post("/api/login", json={"email": text, "password": text})
    yield client.post("/api/accounts", json={"email": text, "password": PASSWORD})
    yield client.post(
        "/api/checkout",
        json={
            "cart_id": cart_id,
            "email": text,
            "gateway": "stripe",
            "card": {**CARD, "holder": text},
            "shipping": {"name": text, "address": text},
        },
    )
    yield client.get("/api/admin/orders", query_string={"status": text}, headers=ADMIN)
    yield client.get(f"/api/admin/orders/{segment}", headers=ADMIN)
    yield client.patch(f"/api/admin/coupons/{segment}", json={"active": False}, headers=ADMIN)
    yield client.post(
        "/api/admin/coupons", json={"code": text, "kind": "percent", "value": 5}, headers=ADMIN
    )
    yield client.post(
        "/api/admin/products",
        json={"sku": text, "category": text, "price_eur": 1, "names": {"en": text}},
        headers=ADMIN,
    )


@pytest.mark.parametrize("text", HOSTILE)
def test_bad_input_hostile_text_never_500(
    app: Flask, client: FlaskClient, cart_id: str, text: str
) -> None:
    for rv in _hostile_requests(client, cart_id, text):
        assert_handled(rv)
    assert_products_intact(app, client)


@pytest.mark.parametrize("text", HOSTILE)
def test_bad_input_hostile_text_stored_verbatim(app: Flask, client: FlaskClient, text: str) -> None:
    token = register(client, name=text)
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/me", headers=bearer).json["name"] == text
    rv = client.post("/api/products/2/reviews", json={"rating": 4, "text": text}, headers=bearer)
    assert rv.status_code == 201, rv.json
    assert rv.json == {**rv.json, "author": text, "text": text}
    rv = client.patch("/api/admin/products/3", json={"names": {"de": text}}, headers=ADMIN)
    assert rv.status_code == 200, rv.json
    assert client.get("/api/products/3?lang=de").json["name"] == text
    assert_products_intact(app, client)


@pytest.mark.parametrize(
    ("q", "skus"),
    [
        ("%", {"HOME-004", "FASH-007"}),
        ("100%", {"HOME-004", "FASH-007"}),
        ("_", set()),
        ("h_me", set()),
        ("%%", set()),
        ("\\", set()),
    ],
)
def test_bad_input_search_wildcards_are_literal(
    client: FlaskClient, q: str, skus: set[str]
) -> None:
    rv = client.get("/api/products", query_string={"q": q, "per_page": 100})
    assert rv.status_code == 200
    assert {p["sku"] for p in rv.json["items"]} == skus
    assert rv.json["total"] == len(skus)


def test_bad_input_script_escaped_in_product_page(client: FlaskClient) -> None:
    name = "<script>alert('name')</script>"
    review = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    bearer = {"Authorization": f"Bearer {register(client, name=name)}"}
    rv = client.post("/api/products/1/reviews", json={"rating": 5, "text": review}, headers=bearer)
    assert rv.status_code == 201
    page = client.get("/products/1", headers={"Accept": "text/html"})
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert name not in html and review not in html
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(" in html
    assert "&lt;img src=x onerror=" in html
    detail = client.get("/api/products/1").json
    assert {"author": name, "text": review}.items() <= detail["reviews"][0].items()


# -- routing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/nope", "/api/products/abc", "/api/products/-1", "/api/admin/nope"]
)
@pytest.mark.parametrize("accept", ["application/json", "text/html"])
def test_bad_input_unknown_api_path_json_404(client: FlaskClient, path: str, accept: str) -> None:
    assert_error(client.get(path, headers={"Accept": accept}), 404, "not_found")


WRONG_METHODS = [
    ("DELETE", "/api/products", "GET"),
    ("PUT", "/api/login", "POST"),
    ("GET", "/api/checkout", "POST"),
    ("POST", "/api/products/1", "GET"),
]


@pytest.mark.parametrize(("method", "path", "allowed"), WRONG_METHODS)
def test_bad_input_wrong_method_json_405(
    client: FlaskClient, method: str, path: str, allowed: str
) -> None:
    rv = client.open(path, method=method, headers={"Accept": "text/html"})
    assert_error(rv, 405, "method_not_allowed")


# -- found by fuzzing: these fail until the fixes in the report are applied ------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "auth"),
    [
        ("GET", "/api/products?q=a%00b", None, None),
        ("GET", "/api/products?category=a%00b", None, None),
        ("GET", "/api/orders/a%00b", None, None),
        ("GET", "/api/admin/orders/a%00b", None, "admin"),
        ("PATCH", "/api/admin/coupons/a%00b", {"active": True}, "admin"),
        ("POST", "/api/carts/{cart}/coupon", {"code": "a\x00b"}, None),
        ("POST", "/api/accounts", {"email": "a\x00b@example.com", "password": PASSWORD}, None),
        (
            "POST",
            "/api/accounts",
            {"email": "nul@example.com", "password": PASSWORD, "name": "a\x00b"},
            None,
        ),
        ("POST", "/api/login", {"email": "a\x00b@example.com", "password": PASSWORD}, None),
        ("POST", "/api/products/1/reviews", {"rating": 5, "text": "a\x00b"}, "customer"),
        ("PATCH", "/api/admin/products/1", {"names": {"en": "a\x00b"}}, "admin"),
    ],
)
def test_bad_input_nul_character_rejected(
    client: FlaskClient, cart_id: str, method: str, path: str, body: Any, auth: str | None
) -> None:
    # PostgreSQL text cannot hold NUL: psycopg raises DataError, which was a 500.
    headers = ADMIN if auth == "admin" else {}
    if auth == "customer":
        headers = {"Authorization": f"Bearer {register(client)}"}
    rv = client.open(path.format(cart=cart_id), method=method, json=body, headers=headers)
    assert_error(rv, 400)


@pytest.mark.parametrize(("method", "path", "allowed"), WRONG_METHODS)
def test_bad_input_wrong_method_names_allowed_methods(
    client: FlaskClient, method: str, path: str, allowed: str
) -> None:
    # RFC 9110 15.5.6: a 405 must send Allow; the JSON error handler dropped it.
    rv = client.open(path, method=method)
    assert rv.status_code == 405
    assert allowed in rv.headers.get("Allow", "")


@pytest.mark.parametrize(("method", "path", "headers"), BODY_ENDPOINTS)
def test_bad_input_deeply_nested_json_rejected(
    client: FlaskClient, method: str, path: str, headers: dict[str, str]
) -> None:
    # json.loads raises RecursionError (not ValueError) past ~1000 levels.
    body = "[" * 20000 + "]" * 20000
    rv = client.open(path, method=method, data=body, headers={**headers, **JSON})
    assert_error(rv, 400, "malformed_json")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/accounts", '{"email": "s@example.com", "password": "\\ud800aaaaaaaaaa"}'),
        ("/api/accounts", '{"email": "s\\udfff@example.com", "password": "aaaaaaaaaa"}'),
        ("/api/login", '{"email": "s@example.com", "password": "\\ud800aaaaaaaaaa"}'),
    ],
)
def test_bad_input_lone_surrogate_rejected(client: FlaskClient, path: str, body: str) -> None:
    # A JSON "\ud800" escape decodes to a str that cannot be encoded as UTF-8.
    assert_error(client.post(path, data=body, headers=JSON), 400)


@pytest.mark.parametrize("expires_at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-23:59"])
def test_bad_input_coupon_expiry_out_of_range(client: FlaskClient, expires_at: str) -> None:
    # On PostgreSQL these were stored (as 1 BC / year 10000) and every later read of
    # the coupon, including GET /api/admin/coupons, failed with a 500.
    body = {"code": "EDGE1", "kind": "percent", "value": 5, "expires_at": expires_at}
    rv = client.post("/api/admin/coupons", json=body, headers=ADMIN)
    assert_error(rv, 400, field="expires_at")
    assert client.get("/api/admin/coupons", headers=ADMIN).status_code == 200


def test_bad_input_database_error_of_logged_in_request_is_logged(
    client: FlaskClient, settings: Settings, bearer: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A failed flush expires the session's objects; after_request then read the caller's
    # e-mail, raised again, and the 500 left no access-log line and no HTTP metric.
    def broken_review(session: Session, product: Product, *args: Any) -> None:
        product.reviews.append(Review(author=None, rating=5, text="x"))
        session.flush()  # NOT NULL violated on both databases

    monkeypatch.setattr("shop.catalog.add_review", broken_review)
    rv = client.post("/api/products/1/reviews", json={"rating": 5, "text": "ok"}, headers=bearer)
    assert rv.status_code == 500
    assert rv.json["error"]["code"] == "internal_error"
    lines = (settings.log_dir / "access.log").read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines]
    hits = [e for e in events if e["url"]["path"] == "/api/products/1/reviews"]
    assert [e["http"]["response"]["status_code"] for e in hits] == [500]
    assert hits[0]["user"]["name"].endswith("@example.com")
