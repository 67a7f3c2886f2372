"""JSON Schema building blocks of the shop's OpenAPI 3.0 document.

Small constructors (``string``, ``integer``, ``obj`` …) keep the schemas
readable; ``response_schemas`` describes what the API answers and
``request_schemas`` what it accepts. Limits come from the modules that
enforce them, so the document cannot promise what a handler refuses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from shop import accounts, carts, mailer
from shop.api import admin, admin_catalog
from shop.checkout import MAX_SHIPPING, SHIPPING_FIELDS
from shop.ledger import LEDGER_FAULTS
from shop.models import LANGUAGES, ORDER_STATUSES
from shop.validation import MAX_QUANTITY, MAX_TEXT

Schema = dict[str, Any]

MAX_ID = 2**31 - 1
# Amounts are answered as decimal strings with two places, never floats.
MONEY_PATTERN = r"^-?\d+\.\d{2}$"
# What ``get_decimal`` accepts as a string: a plain decimal number.
DECIMAL_PATTERN = r"^\d+(\.\d+)?$"


def ref(name: str) -> Schema:
    """A reference to ``#/components/schemas/<name>``."""
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema, nullable: bool) -> Schema:
    if nullable:
        schema["nullable"] = True
    return schema


def string(
    *,
    min_len: int | None = None,
    max_len: int | None = None,
    pattern: str | None = None,
    enum: Iterable[str] | None = None,
    fmt: str | None = None,
    nullable: bool = False,
    description: str | None = None,
) -> Schema:
    """A string schema; only the keywords given are written."""
    rv: Schema = {"type": "string"}
    for key, value in (
        ("minLength", min_len),
        ("maxLength", max_len),
        ("pattern", pattern),
        ("format", fmt),
        ("description", description),
    ):
        if value is not None:
            rv[key] = value
    if enum is not None:
        rv["enum"] = list(enum)
    return _nullable(rv, nullable)


def integer(
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    nullable: bool = False,
    description: str | None = None,
) -> Schema:
    """An integer schema, optionally bounded."""
    rv: Schema = {"type": "integer"}
    if minimum is not None:
        rv["minimum"] = minimum
    if maximum is not None:
        rv["maximum"] = maximum
    if description is not None:
        rv["description"] = description
    return _nullable(rv, nullable)


def boolean() -> Schema:
    return {"type": "boolean"}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def obj(
    properties: dict[str, Schema],
    required: Sequence[str] = (),
    *,
    closed: bool = False,
    description: str | None = None,
) -> Schema:
    """An object schema; ``closed`` when the handler rejects unknown fields."""
    rv: Schema = {"type": "object", "properties": properties}
    if required:
        rv["required"] = list(required)
    if closed:
        rv["additionalProperties"] = False
    if description is not None:
        rv["description"] = description
    return rv


def money(description: str | None = None) -> Schema:
    """An amount as the API answers it: a decimal string like ``"9.99"``."""
    return string(pattern=MONEY_PATTERN, description=description)


def decimal_input(
    minimum: Decimal, maximum: Decimal, *, nullable: bool = False, description: str | None = None
) -> Schema:
    """A number the API accepts as a JSON number or a decimal string (``get_decimal``)."""
    number = {"type": "number", "minimum": float(minimum), "maximum": float(maximum)}
    # OpenAPI 3.0 honours ``nullable`` only next to ``type``, so it goes on a branch.
    rv: Schema = {
        "anyOf": [_nullable(number, nullable), string(pattern=DECIMAL_PATTERN, max_len=32)]
    }
    if description is not None:
        rv["description"] = description
    return rv


def timestamp(*, nullable: bool = False) -> Schema:
    """An ISO 8601 time in UTC."""
    return string(fmt="date-time", nullable=nullable)


def texts(max_len: int, *, require_en: bool) -> Schema:
    """Texts keyed by language code; unknown languages are refused."""
    properties = {lang: string(min_len=1, max_len=max_len) for lang in LANGUAGES}
    return obj(properties, ["en"] if require_en else (), closed=True)


# -- what the API answers -------------------------------------------------------------------


def _paged(item: str, *, pages: bool = True) -> Schema:
    properties: dict[str, Schema] = {
        "items": array(ref(item)),
        "page": integer(1),
        "per_page": integer(1),
        "total": integer(0),
    }
    if pages:
        properties["pages"] = integer(0)
    return obj(properties, list(properties))


def _order_line() -> Schema:
    properties = {
        "product_id": integer(1),
        "sku": string(),
        "name": string(),
        "quantity": integer(1, MAX_QUANTITY),
        "unit_price": money(),
        "line_total": money(),
    }
    return obj(properties, list(properties))


def _order_fields(currencies: list[str]) -> dict[str, Schema]:
    """What the checkout answer and the tracking view have in common."""
    return {
        "order_id": string(description="the order's unguessable tracking code"),
        "status": string(enum=ORDER_STATUSES),
        "currency": string(enum=currencies),
        "subtotal": money(),
        "discount": money(),
        "total": money(),
        "coupon": string(nullable=True),
        "items": array(ref("OrderLine")),
        "payment": obj(
            {"gateway": string(), "card": string(description="BIN and last four only")},
            ["gateway", "card"],
        ),
        "tracking_url": string(),
    }


def response_schemas(currencies: list[str], gateways: list[str]) -> dict[str, Schema]:
    """``components.schemas``: every body the API answers, keyed by name."""
    error = obj(
        {
            "error": obj(
                {
                    "code": string(description="machine-readable, e.g. out_of_range"),
                    "message": string(description="what is wrong and how to fix it"),
                    "field": string(description="the offending field, when there is one"),
                },
                ["code", "message"],
            )
        },
        ["error"],
    )
    product = {
        "id": integer(1),
        "sku": string(),
        "category": string(),
        "name": string(),
        "description": string(),
        "price": money(),
        "currency": string(enum=currencies),
        "stock": integer(0),
        "in_stock": boolean(),
        "image_url": string(),
        "rating": {"type": "number", "minimum": 1, "maximum": 5, "nullable": True},
        "review_count": integer(0),
    }
    detail = {
        "names": obj({lang: string() for lang in LANGUAGES}),
        "descriptions": obj({lang: string() for lang in LANGUAGES}),
        "reviews": array(ref("Review")),
    }
    cart_line = {
        "product_id": integer(1),
        "sku": string(),
        "name": string(),
        "quantity": integer(1, MAX_QUANTITY),
        "unit_price": money(),
        "line_total": money(),
        "in_stock": boolean(),
    }
    cart = {
        "cart_id": string(fmt="uuid"),
        "currency": string(enum=currencies),
        "items": array(ref("CartLine")),
        "subtotal": money(),
        "coupon": string(nullable=True),
        "coupon_discount": money(),
        "vip_discount": money(),
        "total": money(),
        "coupon_error": string(
            nullable=True, description="why the coupon on the cart does not apply now"
        ),
    }
    customer = {
        "id": integer(1),
        "email": string(),
        "name": string(),
        "group": string(enum=admin_catalog.GROUPS),
        "vip": boolean(),
    }
    order_summary = {
        "order_id": string(),
        "status": string(enum=ORDER_STATUSES),
        "currency": string(enum=currencies),
        "total": money(),
        "created_at": timestamp(),
    }
    order = {
        **_order_fields(currencies),
        "history": array(obj({"status": string(enum=ORDER_STATUSES), "at": timestamp()})),
        "created_at": timestamp(),
    }
    admin_order = {
        **order,
        "email": string(),
        "customer_id": integer(1, nullable=True),
        "total_eur": money(),
        "updated_at": timestamp(),
        "history": array(
            obj(
                {
                    "from": string(enum=ORDER_STATUSES, nullable=True),
                    "status": string(enum=ORDER_STATUSES),
                    "actor": string(),
                    "note": string(),
                    "at": timestamp(),
                }
            )
        ),
        "payments": array(
            obj(
                {
                    "gateway": string(),
                    "outcome": string(enum=("approved", "declined", "error", "fraud")),
                    "reason": string(),
                    "amount": money(),
                    "currency": string(),
                    "amount_eur": money(),
                    "card": string(),
                    "client_ip": string(),
                    "duration_ms": integer(0),
                    "at": timestamp(),
                }
            )
        ),
    }
    admin_product = {
        "id": integer(1),
        "sku": string(),
        "category": string(),
        "price_eur": money(),
        "stock": integer(0),
        "active": boolean(),
        "image_url": string(),
        "names": obj({lang: string() for lang in LANGUAGES}),
        "descriptions": obj({lang: string() for lang in LANGUAGES}),
        "created_at": timestamp(),
    }
    coupon = {
        "code": string(),
        "kind": string(enum=admin_catalog.COUPON_KINDS),
        "value": money(),
        "min_order_eur": money(),
        "expires_at": timestamp(nullable=True),
        "max_uses": integer(0, nullable=True),
        "uses": integer(0),
        "active": boolean(),
    }
    faults = {
        "latency_ms": integer(0),
        "error_rate": {"type": "number", "minimum": 0, "maximum": 1},
        "slow_db_ms": integer(0),
        "gateway_outage": array(string(enum=gateways)),
        "ledger_faults": array(string(enum=LEDGER_FAULTS)),
    }
    counts = {"sent": integer(0), "deferred": integer(0), "failed": integer(0)}
    txn = {
        "txn_id": string(),
        "gateway": string(),
        "kind": string(enum=("authorisation", "capture")),
        "order_ref": string(),
        "amount": money(),
        "currency": string(),
        "created_at": timestamp(),
    }
    return {
        "Error": error,
        "Status": obj({"status": string()}, ["status"]),
        "Unavailable": obj({"status": string(), "error": string()}, ["status"]),
        "Version": obj({"release": string(), "service": string()}, ["release", "service"]),
        "Category": obj({"slug": string(), "name": string()}, ["slug", "name"]),
        "CategoryList": obj({"categories": array(ref("Category"))}, ["categories"]),
        "Product": obj(product, list(product)),
        "ProductDetail": {"allOf": [ref("Product"), obj(detail, list(detail))]},
        "ProductPage": _paged("Product"),
        "Review": obj(
            {
                "author": string(),
                "rating": integer(1, 5),
                "text": string(),
                "created_at": timestamp(),
            },
            ["author", "rating", "text", "created_at"],
        ),
        "CartLine": obj(cart_line, list(cart_line)),
        "Cart": obj(cart, list(cart)),
        "Customer": obj(customer, list(customer)),
        "Token": obj(
            {"token": string(), "expires_at": timestamp(), "customer": ref("Customer")},
            ["token", "expires_at", "customer"],
        ),
        "OrderSummary": obj(order_summary, list(order_summary)),
        "OrderSummaryList": array(ref("OrderSummary")),
        "OrderLine": _order_line(),
        "CheckoutResult": obj(_order_fields(currencies), list(_order_fields(currencies))),
        "Order": obj(order, list(order)),
        "AdminOrder": obj(admin_order, list(admin_order)),
        "AdminOrderSummary": obj(
            {**order_summary, "email": string(), "gateway": string()},
            [*order_summary, "email", "gateway"],
        ),
        "AdminOrderList": obj(
            {
                "orders": array(ref("AdminOrderSummary")),
                "page": integer(1),
                "per_page": integer(1),
                "total": integer(0),
            },
            ["orders", "page", "per_page", "total"],
        ),
        "AdminProduct": obj(admin_product, list(admin_product)),
        "AdminProductPage": _paged("AdminProduct"),
        "AdminCustomer": obj({**customer, "created_at": timestamp()}, [*customer, "created_at"]),
        "AdminCustomerPage": _paged("AdminCustomer"),
        "Coupon": obj(coupon, list(coupon)),
        "CouponList": obj({"coupons": array(ref("Coupon"))}, ["coupons"]),
        "Faults": obj(
            {"enabled": boolean(), "faults": obj(faults, list(faults))}, ["enabled", "faults"]
        ),
        "GatewayTransactions": obj(
            {"gateway": string(), "transactions": array(ref("GatewayTransaction"))},
            ["gateway", "transactions"],
        ),
        "GatewayTransaction": obj(txn, list(txn)),
        "MailFlush": obj(counts, list(counts)),
        "MailStatus": obj(
            {
                "queue": obj({status: integer(0) for status in mailer.STATUSES}),
                "today": obj(
                    {"day": string(fmt="date"), "sent": integer(0), "cap": integer(0)},
                    ["day", "sent", "cap"],
                ),
            },
            ["queue", "today"],
        ),
    }


# -- what the API accepts -------------------------------------------------------------------


def _card() -> Schema:
    return obj(
        {
            "number": string(
                pattern=r"^[0-9][0-9 -]*$",
                max_len=40,
                description="12 to 19 digits passing the Luhn check; spaces and dashes allowed",
            ),
            "expiry": string(pattern=r"^\d{2}\s*/\s*\d{2}$", description="MM/YY, e.g. 08/29"),
            "cvc": string(pattern=r"^\d{3,4}$"),
            "holder": string(max_len=120, nullable=True),
        },
        ["number", "expiry", "cvc"],
    )


def _checkout(currencies: list[str], gateways: list[str]) -> Schema:
    shipping = obj(
        {key: string(max_len=MAX_SHIPPING, nullable=True) for key in SHIPPING_FIELDS}, closed=True
    )
    shipping["nullable"] = True
    return obj(
        {
            "cart_id": string(fmt="uuid", max_len=64),
            "email": string(
                fmt="email",
                max_len=accounts.MAX_EMAIL,
                nullable=True,
                description="required for a guest; a logged-in customer's address by default",
            ),
            "currency": string(enum=currencies, nullable=True),
            "gateway": string(enum=gateways),
            "card": _card(),
            "shipping": shipping,
        },
        ["cart_id", "gateway", "card"],
    )


def _product_body(*, create: bool) -> Schema:
    properties: dict[str, Schema] = {
        "sku": string(
            min_len=1,
            max_len=32,
            pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$",
            description="stored upper-case",
        ),
        "category": string(description="a slug from GET /api/categories"),
        "price_eur": decimal_input(admin_catalog.MIN_PRICE, admin_catalog.MAX_PRICE),
        "stock": integer(0, admin_catalog.MAX_STOCK),
        "names": texts(255, require_en=create),
        "descriptions": {**texts(MAX_TEXT, require_en=False), "nullable": True},
        "active": boolean(),
        "image_url": string(
            max_len=255,
            pattern=admin_catalog.IMAGE_RE.pattern,
            nullable=True,
            description="a path starting with / or an http(s) URL",
        ),
    }
    if create:
        return obj(properties, ["sku", "category", "price_eur", "names"], closed=True)
    del properties["sku"]
    return obj(properties, closed=True)


def _stock_body() -> Schema:
    max_stock = admin_catalog.MAX_STOCK
    rv = obj(
        {"delta": integer(-max_stock, max_stock), "stock": integer(0, max_stock)},
        closed=True,
        description="exactly one of 'delta' (add or take) or 'stock' (set)",
    )
    rv["oneOf"] = [{"required": ["delta"]}, {"required": ["stock"]}]
    return rv


def _coupon_body(*, create: bool) -> Schema:
    properties: dict[str, Schema] = {
        "code": string(
            min_len=1,
            max_len=carts.MAX_CODE_LEN,
            pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
            description="stored upper-case",
        ),
        "kind": string(enum=admin_catalog.COUPON_KINDS),
        "value": decimal_input(
            Decimal("0.01"),
            max(admin_catalog.COUPON_LIMITS.values()),
            description="percent: at most 100; fixed (EUR): at most 10000",
        ),
        "min_order_eur": decimal_input(Decimal("0"), Decimal("1000000"), nullable=True),
        "expires_at": timestamp(nullable=True),
        "max_uses": integer(0, 10_000_000, nullable=True),
        "active": boolean(),
    }
    if create:
        return obj(properties, ["code", "kind", "value"], closed=True)
    return obj(
        {key: properties[key] for key in ("active", "max_uses", "expires_at")},
        closed=True,
        description="null clears a limit",
    )


def request_schemas(currencies: list[str], gateways: list[str]) -> dict[str, Schema]:
    """``components.schemas`` of request bodies, keyed by name."""
    note = string(max_len=admin.MAX_NOTE, nullable=True)
    return {
        "RegisterRequest": obj(
            {
                "email": string(fmt="email", max_len=accounts.MAX_EMAIL),
                "password": string(min_len=accounts.MIN_PASSWORD, max_len=accounts.MAX_PASSWORD),
                "name": string(max_len=accounts.MAX_NAME, nullable=True),
            },
            ["email", "password"],
        ),
        "LoginRequest": obj(
            {
                "email": string(max_len=accounts.MAX_EMAIL),
                "password": string(max_len=1024),
            },
            ["email", "password"],
        ),
        "ReviewRequest": obj(
            {"rating": integer(1, 5), "text": string(max_len=2000)}, ["rating", "text"]
        ),
        "AddItemRequest": obj(
            {"product_id": integer(1, MAX_ID), "quantity": integer(1, MAX_QUANTITY)},
            ["product_id", "quantity"],
        ),
        "SetQuantityRequest": obj(
            {"quantity": integer(0, MAX_QUANTITY, description="0 removes the product")},
            ["quantity"],
        ),
        "CouponRequest": obj({"code": string(min_len=1, max_len=carts.MAX_CODE_LEN)}, ["code"]),
        "CheckoutRequest": _checkout(currencies, gateways),
        "ProductCreate": _product_body(create=True),
        "ProductUpdate": _product_body(create=False),
        "StockChange": _stock_body(),
        "CustomerUpdate": obj(
            {"group": string(enum=admin_catalog.GROUPS), "vip": boolean()}, closed=True
        ),
        "CouponCreate": _coupon_body(create=True),
        "CouponUpdate": _coupon_body(create=False),
        "StatusChange": obj(
            {"status": string(enum=ORDER_STATUSES, max_len=16), "note": note}, ["status"]
        ),
        "RefundRequest": obj({"reason": note}),
        "FaultsUpdate": obj(
            {
                "latency_ms": integer(0, 30000),
                "error_rate": decimal_input(Decimal("0"), Decimal("1")),
                "slow_db_ms": integer(0, 10000),
                "gateway_outage": array(string(enum=gateways)),
                "ledger_faults": array(string(enum=LEDGER_FAULTS)),
            },
            closed=True,
            description="faults left out keep their value",
        ),
    }
