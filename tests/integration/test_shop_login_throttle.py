"""Login throttling through the real app: per account, per client IP, shared, reset on success."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from conftest import sample
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from shop.models import LoginFailures, utcnow

PASSWORD = "correct horse battery"
WRONG = "wrong horse battery"


def _register(client: FlaskClient, email: str = "ann@example.com") -> None:
    rv = client.post("/api/accounts", json={"email": email, "password": PASSWORD, "name": "Ann"})
    assert rv.status_code == 201


def _login(
    client: FlaskClient, email: str = "ann@example.com", password: str = PASSWORD, ip: str = ""
) -> Any:
    # The test client's peer is 127.0.0.1, a trusted proxy: X-Forwarded-For names the client.
    headers = {"X-Forwarded-For": ip} if ip else {}
    return client.post("/api/login", json={"email": email, "password": password}, headers=headers)


def _fail(client: FlaskClient, times: int, email: str = "ann@example.com", ip: str = "") -> None:
    for _ in range(times):
        assert _login(client, email, WRONG, ip).status_code == 401


def _assert_throttled(rv: Any, window_s: int = 900) -> None:
    assert rv.status_code == 429
    assert rv.json["error"]["code"] == "too_many_attempts"
    assert "try again in" in rv.json["error"]["message"]
    assert 1 <= int(rv.headers["Retry-After"]) <= window_s


def test_login_throttle_account_429_with_retry_after(client: FlaskClient, app: Flask) -> None:
    _register(client)
    before = sample("shop_login_throttled_total", scope="account")
    _fail(client, 5)
    # Even the right password: the limit is on guessing, not on being wrong.
    rv = _login(client)
    _assert_throttled(rv)
    assert sample("shop_login_throttled_total", scope="account") == before + 1
    log = app.extensions["vigil.shop"].settings.log_dir / "auth.log"
    last = json.loads(log.read_text(encoding="utf-8").splitlines()[-1])
    assert last["event"]["outcome"] == "failure"
    assert last["event"]["reason"] == "throttled (account limit)"
    # Another account from the same address is not affected.
    _register(client, "bob@example.com")
    assert _login(client, "bob@example.com").status_code == 200


def test_login_throttle_success_resets_account(client: FlaskClient) -> None:
    _register(client)
    _fail(client, 4)
    assert _login(client).status_code == 200
    _fail(client, 5)
    _assert_throttled(_login(client, password=WRONG))


def test_login_throttle_unknown_account_same_as_known(client: FlaskClient) -> None:
    # Throttling an address that has no account too, so a 429 tells nothing about existence.
    _fail(client, 5, "nobody@example.com")
    _assert_throttled(_login(client, "nobody@example.com"))


def test_login_throttle_per_ip(build_app: Callable[..., Flask]) -> None:
    client = build_app(login_throttle={"ip_failures": 4}).test_client()
    _register(client)
    attacker, other = "198.51.100.7", "203.0.113.9"
    before = sample("shop_login_throttled_total", scope="ip")
    # 4 addresses, 1 failure each: no account limit is reached, the IP limit is.
    for n in range(4):
        _fail(client, 1, f"user{n}@example.com", ip=attacker)
    _assert_throttled(_login(client, ip=attacker))
    assert sample("shop_login_throttled_total", scope="ip") == before + 1
    assert _login(client, ip=other).status_code == 200


def test_login_throttle_ip_not_reset_by_success(build_app: Callable[..., Flask]) -> None:
    app = build_app(login_throttle={"ip_failures": 3})
    client = app.test_client()
    _register(client)
    ip = "198.51.100.8"
    _fail(client, 2, "x@example.com", ip=ip)
    # An attacker's own account logging in must not wipe the IP's count.
    assert _login(client, ip=ip).status_code == 200
    _fail(client, 1, "y@example.com", ip=ip)
    _assert_throttled(_login(client, ip=ip))


def test_login_throttle_window_ends(client: FlaskClient, app: Flask) -> None:
    _register(client)
    _fail(client, 5)
    _assert_throttled(_login(client))
    with app.extensions["vigil.shop"].sessions.begin() as session:
        session.execute(
            update(LoginFailures).values(window_ends=utcnow() - dt.timedelta(seconds=1))
        )
    assert _login(client).status_code == 200


def test_login_throttle_shared_between_instances(build_app: Callable[..., Flask]) -> None:
    # Two apps on one database stand for gunicorn workers or instances behind haproxy.
    first, second = build_app().test_client(), build_app().test_client()
    _register(first)
    _fail(first, 3)
    _fail(second, 2)
    _assert_throttled(_login(first))
    _assert_throttled(_login(second))


def test_login_throttle_settings_change_limits(build_app: Callable[..., Flask]) -> None:
    client = build_app(login_throttle={"account_failures": 2, "account_window_s": 60}).test_client()
    _register(client)
    _fail(client, 2)
    _assert_throttled(_login(client), window_s=60)


def test_login_page_throttled_429(client: FlaskClient) -> None:
    _register(client)
    client.get("/login")
    cookie = client.get_cookie("csrf_token")
    assert cookie is not None
    form = {"csrf_token": cookie.value, "email": "ann@example.com"}
    for _ in range(5):
        assert client.post("/login", data={**form, "password": WRONG}).status_code == 401
    rv = client.post("/login", data={**form, "password": PASSWORD})
    assert rv.status_code == 429
    assert 1 <= int(rv.headers["Retry-After"]) <= 900
    assert "too many failed logins" in rv.get_data(as_text=True)
    assert client.get_cookie("shop_token") is None


def test_login_throttle_concurrent_failures_all_counted(build_app: Callable[..., Flask]) -> None:
    apps = [build_app(login_throttle={"account_failures": 100}) for _ in range(2)]
    _register(apps[0].test_client())

    def fail(n: int) -> int:
        return int(_login(apps[n % 2].test_client(), password=WRONG).status_code)

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(fail, range(16))) == [401] * 16
    with apps[0].extensions["vigil.shop"].sessions() as session:
        row = session.get(LoginFailures, ("account", "ann@example.com"))
    assert row is not None
    assert row.failures == 16
