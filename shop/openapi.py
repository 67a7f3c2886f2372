"""The OpenAPI 3.0.3 document of the shop's JSON API, served at ``/api/openapi.json``.

Built from small helpers rather than one literal, and from the running
shop's settings, so the currency and gateway enums are the configured ones.
``tests/integration/test_shop_openapi.py`` checks that every ``/api/`` route
is described (and nothing else), validates the document against the OpenAPI
3.0 schema and fuzzes every operation from it.

Example::

    doc = openapi_document(ctx())
    doc["paths"]["/api/products"]["get"]["parameters"]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from shop import catalog
from shop.api.catalog import MAX_PAGE, MAX_PER_PAGE
from shop.models import LANGUAGES, ORDER_STATUSES
from shop.openapi_schemas import (
    MAX_ID,
    Schema,
    integer,
    ref,
    request_schemas,
    response_schemas,
    string,
)

if TYPE_CHECKING:
    from shop.context import ShopContext

OPENAPI_VERSION = "3.0.3"

# Status → (component name, description) of the shared error responses.
ERRORS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "invalid input; the error names the field"),
    401: ("Unauthorized", "missing or wrong credentials"),
    402: ("PaymentRequired", "the payment was declined or refused by the fraud check"),
    403: ("Forbidden", "the feature is disabled in the shop's configuration"),
    404: ("NotFound", "no such resource"),
    409: ("Conflict", "the request conflicts with the current state (stock, duplicates …)"),
    413: ("PayloadTooLarge", "the body is larger than shop.max_body_bytes"),
    415: ("UnsupportedMediaType", "the body is not sent as application/json"),
    422: ("Unprocessable", "the coupon exists but does not apply (expired, used up, minimum)"),
    429: ("TooManyRequests", "too many failed logins; retry after Retry-After seconds"),
    502: ("BadGateway", "the payment gateway failed; nothing was charged"),
    503: ("ServiceUnavailable", "the payment gateway is unavailable"),
}
BODY_ERRORS = (400, 413, 415)
Security = list[dict[str, list[str]]]

CUSTOMER: Security = [{"bearerAuth": []}]
# Anonymous or logged in: a token only changes the price (VIP) or the owner.
OPTIONAL_CUSTOMER: Security = [{}, {"bearerAuth": []}]
ADMIN: Security = [{"apiKey": []}]


def param(name: str, where: str, schema: Schema, description: str) -> Schema:
    """One parameter; only path parameters are required."""
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": schema,
    }


def param_ref(name: str) -> Schema:
    """A reference to ``#/components/parameters/<name>``."""
    return {"$ref": f"#/components/parameters/{name}"}


def paging(max_page: int, max_per_page: int, default_per_page: int) -> list[Schema]:
    """``page`` and ``per_page`` query parameters with their bounds."""
    page = integer(1, max_page)
    page["default"] = 1
    per_page = integer(1, max_per_page)
    per_page["default"] = default_per_page
    return [
        param("page", "query", page, "page number, from 1"),
        param("per_page", "query", per_page, "items per page"),
    ]


def json_content(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def operation(
    operation_id: str,
    summary: str,
    *,
    ok: tuple[int, str | Schema],
    errors: Iterable[int] = (),
    params: Sequence[Schema] = (),
    body: str | None = None,
    security: Security | None = None,
) -> dict[str, Any]:
    """One operation: ``ok`` is (status, schema or its name), ``errors`` are status codes.

    A JSON body adds 400, 413 and 415; admin security adds 401, 403 and ``X-Actor``.
    The tag is the blueprint of ``operation_id`` (the Flask endpoint), admin ones as admin.
    """
    status, schema = ok
    codes = set(errors)
    blueprint = operation_id.split(".")[0]
    tag = "admin" if blueprint.startswith("admin") else blueprint
    op: dict[str, Any] = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    parameters = list(params)
    if body is not None:
        codes.update(BODY_ERRORS)
        op["requestBody"] = {"required": True, "content": json_content(ref(body))}
    if security is not None:
        op["security"] = security
        if security == CUSTOMER:
            codes.add(401)
        if security == ADMIN:
            codes.update((401, 403))
            parameters.append(param_ref("XActor"))
    if parameters:
        op["parameters"] = parameters
    responses: dict[str, Any] = {
        str(status): {
            "description": summary,
            "content": json_content(ref(schema) if isinstance(schema, str) else schema),
        }
    }
    for code in sorted(codes):
        responses[str(code)] = {"$ref": f"#/components/responses/{ERRORS[code][0]}"}
    op["responses"] = responses
    return op


def _error_response(name: str, description: str) -> dict[str, Any]:
    rv: dict[str, Any] = {"description": description, "content": json_content(ref("Error"))}
    if name == "TooManyRequests":
        rv["headers"] = {
            "Retry-After": {
                "description": "seconds until the failed-login window ends",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return rv


def _view() -> list[Schema]:
    return [param_ref("Lang"), param_ref("Currency")]


def catalog_paths() -> dict[str, dict[str, Any]]:
    search = [
        param("q", "query", string(max_len=catalog.MAX_QUERY_LEN), "words to find"),
        param("category", "query", string(), "a category slug"),
        param("sort", "query", string(enum=catalog.SORTS), "order; by id when absent"),
    ]
    return {
        "/api/categories": {
            "get": operation(
                "catalog.categories",
                "The categories, names in ?lang=",
                ok=(200, "CategoryList"),
                errors=(400,),
                params=[param_ref("Lang")],
            )
        },
        "/api/products": {
            "get": operation(
                "catalog.products",
                "Search and page through the catalogue",
                ok=(200, "ProductPage"),
                errors=(400,),
                params=[*search, *_view(), *paging(MAX_PAGE, MAX_PER_PAGE, 20)],
            )
        },
        "/api/products/{product_id}": {
            "get": operation(
                "catalog.product",
                "One product with every language and its reviews",
                ok=(200, "ProductDetail"),
                errors=(400, 404),
                params=[param_ref("ProductId"), *_view()],
            )
        },
        "/api/products/{product_id}/reviews": {
            "post": operation(
                "catalog.add_review",
                "Review a product",
                ok=(201, "Review"),
                errors=(404,),
                params=[param_ref("ProductId")],
                body="ReviewRequest",
                security=CUSTOMER,
            )
        },
    }


def cart_paths() -> dict[str, dict[str, Any]]:
    cart = [param_ref("CartId"), *_view()]
    item = [param_ref("CartId"), param_ref("ProductId"), *_view()]

    def cart_op(operation_id: str, summary: str, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("ok", (200, "Cart"))
        kwargs.setdefault("params", cart)
        errors = (400, 404, *kwargs.pop("errors", ()))
        return operation(
            operation_id,
            summary,
            errors=errors,
            security=OPTIONAL_CUSTOMER,
            **kwargs,
        )

    return {
        "/api/carts": {
            "post": operation(
                "cart.create_cart",
                "A new empty cart, owned by the caller when logged in",
                ok=(201, "Cart"),
                errors=(400,),
                params=_view(),
                security=OPTIONAL_CUSTOMER,
            )
        },
        "/api/carts/{cart_id}": {"get": cart_op("cart.get_cart", "The cart, priced")},
        "/api/carts/{cart_id}/items": {
            "post": cart_op("cart.add_item", "Add a product", errors=(409,), body="AddItemRequest")
        },
        "/api/carts/{cart_id}/items/{product_id}": {
            "put": cart_op(
                "cart.set_quantity",
                "Set a product's quantity; 0 removes it",
                errors=(409,),
                params=item,
                body="SetQuantityRequest",
            ),
            "delete": cart_op("cart.remove_item", "Take a product out", params=item),
        },
        "/api/carts/{cart_id}/coupon": {
            "post": cart_op(
                "cart.apply_coupon",
                "Apply a coupon (case-insensitive), replacing any other",
                errors=(422,),
                body="CouponRequest",
            ),
            "delete": cart_op("cart.remove_coupon", "Take the coupon off"),
        },
    }


def account_paths() -> dict[str, dict[str, Any]]:
    return {
        "/api/accounts": {
            "post": operation(
                "accounts.register",
                "Register a customer account",
                ok=(201, "Customer"),
                errors=(409,),
                body="RegisterRequest",
            )
        },
        "/api/login": {
            "post": operation(
                "accounts.login",
                "Log in: a bearer token valid for 24 hours",
                ok=(200, "Token"),
                errors=(401, 429),
                body="LoginRequest",
            )
        },
        "/api/logout": {
            "post": operation(
                "accounts.logout",
                "Revoke the caller's token",
                ok=(200, "Status"),
                security=CUSTOMER,
            )
        },
        "/api/me": {
            "get": operation("accounts.me", "The caller", ok=(200, "Customer"), security=CUSTOMER)
        },
        "/api/me/orders": {
            "get": operation(
                "accounts.my_orders",
                "The caller's orders, newest first",
                ok=(200, "OrderSummaryList"),
                security=CUSTOMER,
            )
        },
    }


def order_paths() -> dict[str, dict[str, Any]]:
    checkout = operation(
        "checkout.post_checkout",
        "Pay for a cart; the order comes back",
        ok=(201, "CheckoutResult"),
        errors=(402, 404, 409, 422, 502, 503),
        body="CheckoutRequest",
        security=OPTIONAL_CUSTOMER,
    )
    checkout["responses"]["201"]["headers"] = {
        "Location": {"description": "the order's tracking page", "schema": string()}
    }
    return {
        "/api/checkout": {"post": checkout},
        "/api/orders/{public_id}": {
            "get": operation(
                "orders.get_order",
                "Track an order by its public id",
                ok=(200, "Order"),
                errors=(404,),
                params=[param_ref("PublicId")],
            )
        },
    }


def _admin(operation_id: str, summary: str, **kwargs: Any) -> dict[str, Any]:
    return operation(operation_id, summary, security=ADMIN, **kwargs)


def admin_catalog_paths() -> dict[str, dict[str, Any]]:
    product = [param_ref("ProductId")]
    coupon = [param("code", "path", string(max_len=64), "the coupon code")]
    customer = [param("customer_id", "path", integer(1, MAX_ID), "the customer's id")]
    return {
        "/api/admin/products": {
            "get": _admin(
                "admin_catalog.list_products",
                "Every product, deactivated ones too",
                ok=(200, "AdminProductPage"),
                errors=(400,),
                params=paging(10000, 200, 50),
            ),
            "post": _admin(
                "admin_catalog.create_product",
                "Create a product",
                ok=(201, "AdminProduct"),
                errors=(409,),
                body="ProductCreate",
            ),
        },
        "/api/admin/products/{product_id}": {
            "get": _admin(
                "admin_catalog.get_product",
                "One product",
                ok=(200, "AdminProduct"),
                errors=(404,),
                params=product,
            ),
            "patch": _admin(
                "admin_catalog.update_product",
                "Change a product",
                ok=(200, "AdminProduct"),
                errors=(404,),
                params=product,
                body="ProductUpdate",
            ),
            "delete": _admin(
                "admin_catalog.delete_product",
                "Deactivate a product",
                ok=(200, "AdminProduct"),
                errors=(404,),
                params=product,
            ),
        },
        "/api/admin/products/{product_id}/stock": {
            "post": _admin(
                "admin_catalog.adjust_stock",
                "Add, take or set stock; never below 0",
                ok=(200, "AdminProduct"),
                errors=(404, 409),
                params=product,
                body="StockChange",
            )
        },
        "/api/admin/customers": {
            "get": _admin(
                "admin_catalog.list_customers",
                "Customers by id",
                ok=(200, "AdminCustomerPage"),
                errors=(400,),
                params=paging(10000, 200, 50),
            )
        },
        "/api/admin/customers/{customer_id}": {
            "patch": _admin(
                "admin_catalog.update_customer",
                "Change a customer's group or VIP flag",
                ok=(200, "AdminCustomer"),
                errors=(404,),
                params=customer,
                body="CustomerUpdate",
            )
        },
        "/api/admin/coupons": {
            "get": _admin("admin_catalog.list_coupons", "Every coupon", ok=(200, "CouponList")),
            "post": _admin(
                "admin_catalog.create_coupon",
                "Create a coupon",
                ok=(201, "Coupon"),
                errors=(409,),
                body="CouponCreate",
            ),
        },
        "/api/admin/coupons/{code}": {
            "patch": _admin(
                "admin_catalog.update_coupon",
                "Change a coupon's active flag or limits",
                ok=(200, "Coupon"),
                errors=(404,),
                params=coupon,
                body="CouponUpdate",
            )
        },
    }


def admin_ops_paths() -> dict[str, dict[str, Any]]:
    order = [param_ref("PublicId")]
    status = param("status", "query", string(enum=ORDER_STATUSES), "only this status")
    return {
        "/api/admin/orders": {
            "get": _admin(
                "admin.admin_orders",
                "Orders, newest first",
                ok=(200, "AdminOrderList"),
                errors=(400,),
                params=[status, *paging(100000, 200, 50)],
            )
        },
        "/api/admin/orders/{public_id}": {
            "get": _admin(
                "admin.admin_order",
                "One order with its customer, history and payments",
                ok=(200, "AdminOrder"),
                errors=(404,),
                params=order,
            )
        },
        "/api/admin/orders/{public_id}/status": {
            "post": _admin(
                "admin.admin_order_status",
                "Move an order along its status machine",
                ok=(200, "AdminOrder"),
                errors=(404, 409),
                params=order,
                body="StatusChange",
            )
        },
        "/api/admin/orders/{public_id}/refund": {
            "post": _admin(
                "admin.admin_order_refund",
                "Refund a paid or delivered order",
                ok=(200, "AdminOrder"),
                errors=(404, 409),
                params=order,
                body="RefundRequest",
            )
        },
        "/api/admin/gateways/{name}/transactions": {
            "get": _admin(
                "admin.gateway_transactions",
                "A simulated gateway's ledger: authorisations and captures, oldest first",
                ok=(200, "GatewayTransactions"),
                errors=(400, 404),
                params=[
                    param("name", "path", string(max_len=32), "the gateway"),
                    param("since", "query", integer(0, 32503680000), "from this epoch second"),
                    param("limit", "query", integer(1, 1000), "at most this many entries"),
                ],
            )
        },
        "/api/admin/faults": {
            "get": _admin("admin.get_faults", "The faults in force", ok=(200, "Faults")),
            "put": _admin(
                "admin.put_faults",
                "Inject faults (a drill)",
                ok=(200, "Faults"),
                body="FaultsUpdate",
            ),
            "delete": _admin("admin.delete_faults", "End the drill", ok=(200, "Faults")),
        },
        "/api/admin/mail/flush": {
            "post": _admin(
                "admin.flush_mail", "Run one pass of the mail queue", ok=(200, "MailFlush")
            )
        },
        "/api/admin/mail": {
            "get": _admin(
                "admin.mail_status", "The mail queue and today's quota", ok=(200, "MailStatus")
            )
        },
    }


def system_paths() -> dict[str, dict[str, Any]]:
    ready = operation("system.readyz", "The database answers", ok=(200, "Status"))
    ready["responses"]["503"] = {
        "description": "the database does not answer",
        "content": json_content(ref("Unavailable")),
    }
    return {
        "/healthz": {"get": operation("system.healthz", "The process is up", ok=(200, "Status"))},
        "/readyz": {"get": ready},
        "/api/version": {
            "get": operation("system.version", "The running release", ok=(200, "Version"))
        },
        "/api/openapi.json": {
            "get": operation("system.openapi", "This document", ok=(200, {"type": "object"}))
        },
    }


def _components(currencies: list[str], gateways: list[str]) -> dict[str, Any]:
    return {
        "schemas": {
            **response_schemas(currencies, gateways),
            **request_schemas(currencies, gateways),
        },
        "parameters": {
            "Lang": param("lang", "query", string(enum=LANGUAGES), "language of names"),
            "Currency": param(
                "currency", "query", string(enum=currencies), "currency of prices; EUR"
            ),
            "ProductId": param("product_id", "path", integer(1, MAX_ID), "the product's id"),
            "CartId": param("cart_id", "path", string(fmt="uuid"), "the cart's id"),
            "PublicId": param(
                "public_id", "path", string(min_len=1, max_len=32), "the order's public id"
            ),
            "XActor": param(
                "X-Actor", "header", string(max_len=120), "who acts, for the audit log"
            ),
        },
        "responses": {
            name: _error_response(name, description) for name, description in ERRORS.values()
        },
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "the token from POST /api/login",
            },
            "apiKey": {
                "type": "apiKey",
                "in": "header",
                "name": "X-API-Key",
                "description": "the admin key (shop.admin_api_key)",
            },
        },
    }


def openapi_document(shop: ShopContext) -> dict[str, Any]:
    """The OpenAPI 3.0.3 document of the JSON API, with this shop's currencies and gateways."""
    currencies = shop.currencies.codes
    gateways = shop.gateways
    paths: dict[str, dict[str, Any]] = {}
    for part in (
        system_paths(),
        catalog_paths(),
        cart_paths(),
        account_paths(),
        order_paths(),
        admin_catalog_paths(),
        admin_ops_paths(),
    ):
        paths.update(part)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Vigil shop",
            "version": "1",
            "description": (
                f"The reference shop's JSON API (release {shop.release.name}). Every 4xx "
                'answers {"error": {"code", "message", "field"}}. During a fault drill any '
                "request outside /api/admin may answer 500 injected_fault."
            ),
        },
        "tags": [
            {"name": name}
            for name in ("catalog", "cart", "accounts", "checkout", "orders", "admin", "system")
        ],
        "paths": paths,
        "components": _components(currencies, gateways),
    }
