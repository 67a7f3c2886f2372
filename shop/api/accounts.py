"""Shop API: registration, login, logout and the caller's own account."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from shop import accounts
from shop.context import client_ip, ctx, current_customer, db
from shop.validation import ApiError, get_str, json_body, require_str

bp = Blueprint("accounts", __name__)

# Only to refuse absurd bodies; the real rule (8..128) is checked on registration.
MAX_PASSWORD_INPUT = 1024


def _password(data: dict[str, Any]) -> str:
    # Not through get_str: that strips, and spaces in a password are the user's business.
    value = data.get("password")
    if value is None:
        raise ApiError(400, "missing_field", "'password' is required", "password")
    if not isinstance(value, str):
        raise ApiError(400, "invalid_type", "'password' must be a string", "password")
    if len(value) > MAX_PASSWORD_INPUT:
        raise ApiError(400, "invalid_value", "'password' is too long", "password")
    return value


def _request_token() -> str:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.cookies.get("shop_token", "")


@bp.post("/api/accounts")
def register() -> Any:
    """``{"email", "password", "name"}`` → 201 with the new customer."""
    data = json_body()
    email = require_str(data, "email", max_len=accounts.MAX_EMAIL)
    password = _password(data)
    name = get_str(data, "name", required=False, max_len=accounts.MAX_NAME, default="") or ""
    customer = accounts.register(db(), email, password, name)
    return accounts.customer_json(customer), 201


@bp.post("/api/login")
def login() -> Any:
    """``{"email", "password"}`` → a bearer token valid for 24 hours, 401, or 429 when throttled."""
    data = json_body()
    email = require_str(data, "email", max_len=accounts.MAX_EMAIL)
    password = _password(data)
    token = accounts.login(
        db(),
        email,
        password,
        logs=ctx().logs,
        source_ip=client_ip(),
        user_agent=request.headers.get("User-Agent", ""),
        throttle=ctx().throttle,
    )
    if token is None:
        raise ApiError(401, "login_failed", accounts.LOGIN_FAILED)
    return accounts.token_json(token)


@bp.post("/api/logout")
def logout() -> Any:
    """Revoke the caller's token."""
    current_customer(required=True)
    accounts.logout(db(), _request_token())
    rv = jsonify(status="logged out")
    rv.delete_cookie("shop_token", secure=request.is_secure, httponly=True, samesite="Lax")
    return rv


@bp.get("/api/me")
def me() -> Any:
    customer = current_customer(required=True)
    assert customer is not None
    return accounts.customer_json(customer)


@bp.get("/api/me/orders")
def my_orders() -> Any:
    """The caller's orders, newest first."""
    customer = current_customer(required=True)
    assert customer is not None
    return [accounts.order_summary_json(o) for o in accounts.customer_orders(db(), customer)]
