"""Accounts API: registration, login with auth logging and metrics, logout, me, my orders."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from werkzeug.security import check_password_hash

from shop.models import Customer, Order
from vigil.settings import Settings

PASSWORD = "correct horse battery"


def _register(client: FlaskClient, email: str = "Ann@Example.com", **extra: Any) -> Any:
    return client.post(
        "/api/accounts", json={"email": email, "password": PASSWORD, "name": "Ann", **extra}
    )


def _login(
    client: FlaskClient, email: str = "ann@example.com", password: str = PASSWORD, **headers: str
) -> Any:
    return client.post("/api/login", json={"email": email, "password": password}, headers=headers)


def _auth_events(settings: Settings) -> list[dict[str, Any]]:
    path = settings.log_dir / "auth.log"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _logins(outcome: str) -> float:
    return REGISTRY.get_sample_value("shop_logins_total", {"outcome": outcome}) or 0.0


def test_register_creates_customer(client: FlaskClient) -> None:
    rv = _register(client)
    assert rv.status_code == 201
    assert rv.json == {
        "id": rv.json["id"],
        "email": "ann@example.com",
        "name": "Ann",
        "group": "retail",
        "vip": False,
    }


def test_register_stores_only_a_hash(app: Flask, client: FlaskClient) -> None:
    _register(client)
    with app.extensions["vigil.shop"].sessions() as session:
        customer = session.query(Customer).one()
    assert customer.password_hash != PASSWORD
    assert PASSWORD not in customer.password_hash
    assert customer.password_hash.startswith(("scrypt:", "pbkdf2:"))
    assert check_password_hash(customer.password_hash, PASSWORD)


def test_register_duplicate_409(client: FlaskClient) -> None:
    assert _register(client).status_code == 201
    rv = _register(client, "ANN@example.COM")
    assert rv.status_code == 409
    assert rv.json["error"]["code"] == "email_taken"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
        ({"email": "a@b", "password": PASSWORD}, "email"),
        ({"email": "a b@example.com", "password": PASSWORD}, "email"),
        ({"email": "x" * 250 + "@example.com", "password": PASSWORD}, "email"),
        ({"email": "ann@example.com", "password": "short"}, "password"),
        ({"email": "ann@example.com", "password": "p" * 129}, "password"),
        ({"email": "ann@example.com", "password": 12345678}, "password"),
        ({"email": "ann@example.com"}, "password"),
        ({"password": PASSWORD}, "email"),
        ({"email": "ann@example.com", "password": PASSWORD, "name": "n" * 121}, "name"),
    ],
)
def test_register_invalid_400(client: FlaskClient, body: dict[str, Any], field: str) -> None:
    rv = client.post("/api/accounts", json=body)
    assert rv.status_code == 400
    assert rv.json["error"]["field"] == field


def test_register_password_length_bounds(client: FlaskClient) -> None:
    assert _register(client, "eight@example.com", password="12345678").status_code == 201
    assert _register(client, "long@example.com", password="p" * 128).status_code == 201


def test_login_me_logout(client: FlaskClient) -> None:
    _register(client)
    before = _logins("success")
    rv = _login(client, "ANN@example.com")
    assert rv.status_code == 200
    assert _logins("success") == before + 1
    token = rv.json["token"]
    assert len(token) >= 40
    expires = dt.datetime.fromisoformat(rv.json["expires_at"])
    assert abs(expires - dt.datetime.now(dt.UTC) - dt.timedelta(hours=24)) < dt.timedelta(minutes=1)
    assert rv.json["customer"]["email"] == "ann@example.com"
    headers = {"Authorization": f"Bearer {token}"}
    me = client.get("/api/me", headers=headers)
    assert (me.status_code, me.json["email"]) == (200, "ann@example.com")
    assert client.post("/api/logout", headers=headers).status_code == 200
    assert client.get("/api/me", headers=headers).status_code == 401
    assert client.post("/api/logout", headers=headers).status_code == 401


def test_me_without_token_401(client: FlaskClient) -> None:
    assert client.get("/api/me").status_code == 401
    assert client.get("/api/me", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/api/me/orders").status_code == 401


def test_login_wrong_password_401_logged(client: FlaskClient, settings: Settings) -> None:
    _register(client)
    before = _logins("failure")
    rv = _login(
        client,
        password="wrong password",
        **{"X-Forwarded-For": "203.0.113.9", "User-Agent": "curl/8.5"},
    )
    assert rv.status_code == 401
    assert _logins("failure") == before + 1
    assert "bad password" not in rv.get_data(as_text=True)
    event = _auth_events(settings)[-1]
    assert event["event"]["outcome"] == "failure"
    assert event["event"]["action"] == "user-login"
    assert event["event"]["category"] == ["authentication"]
    assert event["event"]["reason"] == "bad password"
    assert event["source"]["ip"] == "203.0.113.9"
    assert event["user"]["name"] == "ann@example.com"
    assert event["user_agent"]["original"] == "curl/8.5"
    assert PASSWORD not in json.dumps(event)
    assert "wrong password" not in json.dumps(event)


def test_login_unknown_user_same_answer(client: FlaskClient, settings: Settings) -> None:
    _register(client)
    wrong = _login(client, password="wrong password")
    unknown = _login(client, "nobody@example.com")
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json == wrong.json
    event = _auth_events(settings)[-1]
    assert (event["event"]["outcome"], event["event"]["reason"]) == ("failure", "unknown user")
    assert event["user"]["name"] == "nobody@example.com"
    assert event["source"]["ip"] == "127.0.0.1"


def test_login_success_logged(client: FlaskClient, settings: Settings) -> None:
    _register(client)
    _login(client)
    event = _auth_events(settings)[-1]
    assert event["event"]["outcome"] == "success"
    assert "reason" not in event["event"]
    assert event["source"]["ip"] == "127.0.0.1"


@pytest.mark.parametrize(
    "body", [{"email": "ann@example.com"}, {"password": "x"}, {"email": 1, "password": "x"}]
)
def test_login_invalid_body_400(client: FlaskClient, body: dict[str, Any]) -> None:
    assert client.post("/api/login", json=body).status_code == 400


def test_my_orders_newest_first(app: Flask, client: FlaskClient) -> None:
    customer_id = _register(client).json["id"]
    other = _register(client, "other@example.com").json["id"]
    headers = {"Authorization": f"Bearer {_login(client).json['token']}"}
    assert client.get("/api/me/orders", headers=headers).json == []
    start = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    with app.extensions["vigil.shop"].sessions.begin() as session:
        for n, owner in enumerate((customer_id, customer_id, other)):
            session.add(
                Order(
                    public_id=f"ORD{n}",
                    customer_id=owner,
                    email="x@example.com",
                    status="paid",
                    currency="PLN",
                    subtotal=Decimal("10.00"),
                    total=Decimal("10.00") + n,
                    total_eur=Decimal("2.33"),
                    gateway="stripe",
                    created_at=start + dt.timedelta(days=n),
                )
            )
    rv = client.get("/api/me/orders", headers=headers)
    assert rv.status_code == 200
    assert [o["order_id"] for o in rv.json] == ["ORD1", "ORD0"]
    assert rv.json[0] == {
        "order_id": "ORD1",
        "status": "paid",
        "currency": "PLN",
        "total": "11.00",
        "created_at": "2030-01-02T00:00:00+00:00",
    }
