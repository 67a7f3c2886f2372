"""Secrets the shop must not leak: bearer tokens in its database, cookies over plain HTTP."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from conftest import free_port, make_settings, require_server
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import MetaData, inspect, select, text
from werkzeug.serving import make_server

from shop.app import create_app
from shop.db import create_schema
from shop.models import utcnow
from vigil.haproxy import Server, haproxy_binary, render_config

PASSWORD = "correct horse battery"


def _token(client: FlaskClient) -> str:
    client.post(
        "/api/accounts", json={"email": "ann@example.com", "password": PASSWORD, "name": "Ann"}
    )
    rv = client.post("/api/login", json={"email": "ann@example.com", "password": PASSWORD})
    assert rv.status_code == 200
    token: str = rv.json["token"]
    return token


def _every_value(app: Flask) -> list[Any]:
    """Every value of every row of every table of the shop database."""
    engine = app.extensions["vigil.shop"].engine
    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        return [
            value
            for table in meta.sorted_tables
            for row in conn.execute(select(table))
            for value in row
        ]


def _me(client: FlaskClient, token: str) -> int:
    status: int = client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code
    return status


def test_token_not_in_database_in_clear(client: FlaskClient, app: Flask) -> None:
    token = _token(client)
    values = [str(v) for v in _every_value(app)]
    assert not [v for v in values if token in v]
    assert hashlib.sha256(token.encode()).hexdigest() in values
    # The one the client holds still works, once revoked it does not.
    assert _me(client, token) == 200
    assert (
        client.post("/api/logout", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    )
    assert _me(client, token) == 401


def test_token_hash_itself_is_not_a_token(client: FlaskClient) -> None:
    token = _token(client)
    # Someone who read the table holds the hash: that must not log them in.
    assert _me(client, hashlib.sha256(token.encode()).hexdigest()) == 401


def test_token_plaintext_table_migrated(client: FlaskClient, app: Flask) -> None:
    _token(client)
    engine = app.extensions["vigil.shop"].engine
    live, expired = "plain-live-token", "plain-expired-token"
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        customer_id = conn.execute(text("SELECT id FROM customers")).scalar_one()
        # The schema of the plaintext era.
        conn.execute(
            text(
                "CREATE TABLE auth_tokens (token VARCHAR(64) PRIMARY KEY, "
                "customer_id INTEGER NOT NULL REFERENCES customers(id), expires_at "
                + ("TIMESTAMP WITH TIME ZONE" if postgres else "DATETIME")
                + " NOT NULL)"
            )
        )
        for token, hours in ((live, 1), (expired, -1)):
            expires = utcnow() + dt.timedelta(hours=hours)
            conn.execute(
                text("INSERT INTO auth_tokens VALUES (:t, :c, :e)"),
                # SQLAlchemy keeps UTC in SQLite without an offset.
                {
                    "t": token,
                    "c": customer_id,
                    "e": expires if postgres else expires.replace(tzinfo=None),
                },
            )
    create_schema(engine)
    assert not inspect(engine).has_table("auth_tokens")
    assert not [v for v in map(str, _every_value(app)) if "plain-" in v]
    assert _me(client, live) == 200
    assert _me(client, expired) == 401
    # Starting again finds nothing left to migrate.
    create_schema(engine)
    assert _me(client, live) == 200


def _set_cookie_headers(rv: Any) -> list[str]:
    headers: list[str] = rv.headers.getlist("Set-Cookie")
    assert headers, "the page set no cookie"
    return headers


def _secure(rv: Any) -> list[bool]:
    return ["; Secure" in header for header in _set_cookie_headers(rv)]


def test_cookie_secure_with_trusted_proxy_https(client: FlaskClient) -> None:
    rv = client.get("/?lang=de", headers={"X-Forwarded-Proto": "https"})
    assert rv.status_code == 200
    assert all(_secure(rv))


def test_cookie_not_secure_without_forwarded_proto(client: FlaskClient) -> None:
    assert not any(_secure(client.get("/?lang=de")))


def test_cookie_not_secure_when_untrusted_peer_claims_https(client: FlaskClient) -> None:
    rv = client.get(
        "/?lang=de",
        headers={"X-Forwarded-Proto": "https"},
        environ_overrides={"REMOTE_ADDR": "203.0.113.50"},
    )
    assert not any(_secure(rv))


def test_cookie_secure_setting_names_trusted_proxies(build_app: Any) -> None:
    client = build_app(trusted_proxies=["10.0.0.2"]).test_client()
    from_proxy = client.get(
        "/?lang=de",
        headers={"X-Forwarded-Proto": "https"},
        environ_overrides={"REMOTE_ADDR": "10.0.0.2"},
    )
    assert all(_secure(from_proxy))
    # Loopback is no longer trusted once the setting names another proxy.
    assert not any(_secure(client.get("/?lang=de", headers={"X-Forwarded-Proto": "https"})))


def test_cookie_secure_over_direct_tls(client: FlaskClient) -> None:
    # gunicorn with a certificate sets wsgi.url_scheme=https itself.
    assert all(_secure(client.get("/?lang=de", base_url="https://localhost")))


def test_cookie_login_token_secure_behind_proxy(client: FlaskClient) -> None:
    proxy = {"X-Forwarded-Proto": "https"}
    client.post(
        "/api/accounts", json={"email": "ann@example.com", "password": PASSWORD, "name": "Ann"}
    )
    client.get("/login", headers=proxy)
    csrf = client.get_cookie("csrf_token")
    assert csrf is not None
    rv = client.post(
        "/login",
        data={"csrf_token": csrf.value, "email": "ann@example.com", "password": PASSWORD},
        headers=proxy,
    )
    assert rv.status_code == 303
    token_cookie = [h for h in _set_cookie_headers(rv) if h.startswith("shop_token=")]
    assert len(token_cookie) == 1
    assert "; Secure" in token_cookie[0] and "; HttpOnly" in token_cookie[0]


def test_cookie_behind_real_haproxy_ignores_client_claim(
    sqlite_template: Path, tmp_path: Path
) -> None:
    """haproxy (as ``vigil up`` configures it) overwrites a client's X-Forwarded-Proto."""
    binary = haproxy_binary()
    if binary is None:
        require_server("haproxy", "the haproxy binary is not installed")
        return
    # One database is enough: this is about headers, not storage.
    shutil.copyfile(sqlite_template, tmp_path / "shop.db")
    app = create_app(make_settings(tmp_path, f"sqlite:///{tmp_path / 'shop.db'}"))
    shop_port, front = free_port(), free_port()
    server = make_server("127.0.0.1", shop_port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        render_config(
            port=front, servers=[Server("shop-1", shop_port)], admin_socket=tmp_path / "a.sock"
        )
    )
    proc = subprocess.Popen([binary, "-db", "-f", str(cfg)], stderr=subprocess.DEVNULL)
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{front}/?lang=de", headers={"X-Forwarded-Proto": "https"}
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(request, timeout=5) as rv:
                    cookies = rv.headers.get_all("Set-Cookie") or []
                    break
            except (urllib.error.URLError, ConnectionError):
                # haproxy still starting, or its first health check not yet passed.
                assert time.monotonic() < deadline, "the shop never answered through haproxy"
                time.sleep(0.2)
        assert cookies
        assert not [c for c in cookies if "; Secure" in c]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        server.shutdown()
        app.extensions["vigil.shop"].logs.close()
        app.extensions["vigil.shop"].engine.dispose()
