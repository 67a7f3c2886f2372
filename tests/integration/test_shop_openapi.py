"""The shop's OpenAPI document: valid, in step with the routes, and a fuzzer finds no 500.

The fuzzer is schemathesis (v4) over WSGI, on SQLite and on PostgreSQL like
every ``app`` test, and checks every answer against the documented schema.
Positive cases are aimed at things that exist (the cart, order, customer and
coupon made by ``targets``), so handlers run past their 404s; negative cases
keep whatever the fuzzer made up.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from conftest import ADMIN_KEY, make_settings
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import response_schema_conformance
from schemathesis.specs.openapi.definitions import OPENAPI_30_VALIDATOR

from shop.accounts import TOKEN_LIFETIME, token_digest
from shop.app import create_app
from shop.models import AuthToken, utcnow
from shop.seed import load_catalog

PASSWORD = "fuzzing-password"
CARD = {"number": "4242 4242 4242 4242", "expiry": "12/39", "cvc": "123", "holder": "Fuzz"}
PRODUCTS = len(load_catalog()["products"])
# Not fuzzed: faults make later requests fail with 500 on purpose.
FAULTS = {"method": "PUT", "path": "/api/admin/faults"}
CHECKS = [not_a_server_error, response_schema_conformance]
# Per operation; derandomized so a failure reproduces, and bounded to keep the run short.
FUZZ_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _document(client: FlaskClient) -> dict[str, Any]:
    rv = client.get("/api/openapi.json")
    assert rv.status_code == 200
    doc: dict[str, Any] = rv.json
    return doc


def _flask_operations(app: Flask) -> dict[tuple[str, str], str]:
    """(method, OpenAPI path) → endpoint of every route under /api/ plus the health checks."""
    rv = {}
    for rule in app.url_map.iter_rules():
        if not (rule.rule.startswith("/api/") or rule.rule in ("/healthz", "/readyz")):
            continue
        path = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            rv[(method.lower(), path)] = rule.endpoint
    return rv


def _documented(doc: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(method, path) → operationId of every operation in the document."""
    return {
        (method, path): op["operationId"]
        for path, item in doc["paths"].items()
        for method, op in item.items()
    }


def test_openapi_valid_per_openapi_30_schema(client: FlaskClient) -> None:
    doc = _document(client)
    assert doc["openapi"] == "3.0.3"
    errors = [f"{e.instance_path}: {e.message}" for e in OPENAPI_30_VALIDATOR.iter_errors(doc)]
    assert errors == []
    schemathesis.openapi.from_dict(doc).validate()


def test_openapi_describes_every_route_and_nothing_else(app: Flask, client: FlaskClient) -> None:
    assert set(_documented(_document(client))) == set(_flask_operations(app))


def test_openapi_operation_ids_are_the_flask_endpoints(app: Flask, client: FlaskClient) -> None:
    assert _documented(_document(client)) == _flask_operations(app)


def test_openapi_error_responses_use_the_error_schema(client: FlaskClient) -> None:
    doc = _document(client)
    responses = doc["components"]["responses"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if "requestBody" in op:
                assert {"400", "413", "415"} <= set(op["responses"]), f"{method} {path}"
            for code in (c for c in op["responses"] if c.startswith("4")):
                name = op["responses"][code]["$ref"].rsplit("/", 1)[1]
                schema = responses[name]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}


def test_openapi_security_customer_and_admin(client: FlaskClient) -> None:
    doc = _document(client)
    schemes = doc["components"]["securitySchemes"]
    assert (schemes["bearerAuth"]["type"], schemes["bearerAuth"]["scheme"]) == ("http", "bearer")
    assert (schemes["apiKey"]["in"], schemes["apiKey"]["name"]) == ("header", "X-API-Key")
    for path, item in doc["paths"].items():
        for op in item.values():
            if path.startswith("/api/admin/"):
                assert op["security"] == [{"apiKey": []}]
            if path in ("/api/me", "/api/me/orders", "/api/logout"):
                assert op["security"] == [{"bearerAuth": []}]
    review = doc["paths"]["/api/products/{product_id}/reviews"]["post"]
    assert review["security"] == [{"bearerAuth": []}]


def test_openapi_parameters_enums_and_bounds(client: FlaskClient) -> None:
    doc = _document(client)
    components = doc["components"]
    params = {
        p["name"]: p for p in doc["paths"]["/api/products"]["get"]["parameters"] if "name" in p
    }
    assert params["page"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 10000,
        "default": 1,
    }
    assert params["per_page"]["schema"]["maximum"] == 100
    assert params["sort"]["schema"]["enum"] == ["name", "price", "-price", "rating"]
    assert components["parameters"]["Lang"]["schema"]["enum"] == ["en", "de", "pl", "zh"]
    assert components["parameters"]["Currency"]["schema"]["enum"] == ["CNY", "EUR", "PLN", "USD"]
    quantity = components["schemas"]["AddItemRequest"]["properties"]["quantity"]
    assert (quantity["minimum"], quantity["maximum"]) == (1, 1000)
    orders = doc["paths"]["/api/admin/orders"]["get"]["parameters"]
    status = next(p for p in orders if p.get("name") == "status")
    assert "refunded" in status["schema"]["enum"]
    assert components["schemas"]["ProductCreate"]["additionalProperties"] is False
    assert "additionalProperties" not in components["schemas"]["AddItemRequest"]


@pytest.fixture
def gbp_app(tmp_path: Path, db_url: str) -> Iterator[Flask]:
    application = create_app(
        make_settings(
            tmp_path,
            db_url,
            rates={"EUR": "1", "GBP": "0.86"},
            gateways={"mollie": {"latency_ms": 0, "decline_rate": 0, "error_rate": 0}},
        )
    )
    yield application
    shop = application.extensions["vigil.shop"]
    shop.logs.close()
    shop.engine.dispose()


def test_openapi_enums_follow_the_settings(gbp_app: Flask) -> None:
    doc = _document(gbp_app.test_client())
    schemas = doc["components"]["schemas"]
    assert doc["components"]["parameters"]["Currency"]["schema"]["enum"] == ["EUR", "GBP"]
    assert schemas["CheckoutRequest"]["properties"]["gateway"]["enum"] == ["mollie"]
    outage = schemas["FaultsUpdate"]["properties"]["gateway_outage"]["items"]
    assert outage["enum"] == ["mollie"]


def test_openapi_coupon_amounts_have_two_places(
    client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    # Found by the fuzzer's response check: every amount is a string with two decimals.
    body = {"code": "PLAIN5", "kind": "fixed", "value": 5}
    rv = client.post("/api/admin/coupons", json=body, headers=admin_headers)
    assert rv.status_code == 201, rv.json
    assert (rv.json["value"], rv.json["min_order_eur"]) == ("5.00", "0.00")


# -- fuzzing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Targets:
    """Things that exist, to aim positive cases at, and the credentials to send."""

    app: Flask
    token: str
    customer_id: int
    cart_id: str
    order_id: str

    def headers(self, path: str) -> dict[str, str]:
        # Logging out revokes the token it is sent with: give it a throwaway one.
        token = self.fresh_token() if path == "/api/logout" else self.token
        return {"Authorization": f"Bearer {token}", "X-API-Key": ADMIN_KEY}

    def fresh_token(self) -> str:
        token = secrets.token_urlsafe(32)
        with self.app.extensions["vigil.shop"].sessions.begin() as session:
            session.add(
                AuthToken(
                    token_hash=token_digest(token),
                    customer_id=self.customer_id,
                    expires_at=utcnow() + TOKEN_LIFETIME,
                )
            )
        return token

    def aim(self, case: schemathesis.Case) -> None:
        """Point a positive case's path parameters at existing things."""
        params = case.path_parameters
        if not params or (case.meta and case.meta.is_negative_at(ParameterLocation.PATH)):
            return
        if "cart_id" in params:
            params["cart_id"] = self.cart_id
        if "public_id" in params:
            params["public_id"] = self.order_id
        if "customer_id" in params:
            params["customer_id"] = self.customer_id
        if "code" in params:
            params["code"] = "WELCOME10"
        product_id = params.get("product_id")
        if isinstance(product_id, int) and product_id > 0:
            params["product_id"] = (product_id - 1) % PRODUCTS + 1


@pytest.fixture
def targets(app: Flask, client: FlaskClient) -> Targets:
    email = f"fuzz-{uuid.uuid4().hex[:8]}@example.com"
    rv = client.post("/api/accounts", json={"email": email, "password": PASSWORD, "name": "Fuzz"})
    assert rv.status_code == 201, rv.json
    customer_id = rv.json["id"]
    login = client.post("/api/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.json

    def cart_with_items() -> str:
        cart_id: str = client.post("/api/carts").json["cart_id"]
        for product_id in (1, 2):
            rv = client.post(
                f"/api/carts/{cart_id}/items", json={"product_id": product_id, "quantity": 1}
            )
            assert rv.status_code == 200, rv.json
        return cart_id

    paid = client.post(
        "/api/checkout",
        json={"cart_id": cart_with_items(), "email": email, "gateway": "stripe", "card": CARD},
    )
    assert paid.status_code == 201, paid.json
    return Targets(
        app=app,
        token=login.json["token"],
        customer_id=customer_id,
        cart_id=cart_with_items(),
        order_id=paid.json["order_id"],
    )


def _fuzz(operation: APIOperation, targets: Targets) -> str | None:
    """Run one operation's positive and negative cases; the failure report, or None."""
    strategy = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(
        GenerationMode.NEGATIVE
    )

    @FUZZ_SETTINGS
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        targets.aim(case)
        case.call_and_validate(headers=targets.headers(case.path), checks=CHECKS)

    try:
        run()
    except (AssertionError, BaseExceptionGroup) as exc:  # carries the request to replay
        return f"{operation.label}: {exc}"
    return None


def test_api_fuzz_no_server_errors_and_responses_conform(app: Flask, targets: Targets) -> None:
    # Schemathesis' own pytest integration (from_fixture) does not run under pytest 9,
    # so each operation gets a plain Hypothesis test built from its strategies.
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app).exclude(**FAULTS)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 40
    failures = [report for op in operations if (report := _fuzz(op, targets)) is not None]
    assert not failures, "\n\n".join(failures)
