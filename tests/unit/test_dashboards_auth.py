"""Logging in to the dashboards: sessions, CSRF, idle timeout, throttling and the audit trail."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from dashboards.app import create_app
from siem.memory import MemoryStore
from siem.model import EventQuery
from vigil.auth import UserStore
from vigil.settings import from_mapping

PASSWORD = "correct horse battery"


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def users(tmp_path: Path) -> UserStore:
    rv = UserStore(tmp_path / "users.db")
    rv.add_user("ann", "operator", PASSWORD)
    return rv


@pytest.fixture
def app(tmp_path: Path, store: MemoryStore, users: UserStore) -> Flask:
    settings = from_mapping({"data_dir": str(tmp_path), "web": {"session_idle_s": 60}})
    return create_app(settings, store=store)


def _csrf(client: FlaskClient, path: str = "/login") -> str:
    html = client.get(path).get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def _login(client: FlaskClient, password: str = PASSWORD, next_url: str = "/") -> tuple[int, str]:
    rv = client.post(
        "/login",
        data={
            "username": "ann",
            "password": password,
            "csrf_token": _csrf(client),
            "next": next_url,
        },
    )
    return rv.status_code, rv.headers.get("Location", "")


def _audit(store: MemoryStore) -> list[tuple[str, str, str]]:
    events = store.search(EventQuery(dataset="vigil.audit"))
    return [(e.get("event.action"), e.get("event.outcome"), e.get("user.name")) for e in events]


def test_login_page_redirects_back_and_sets_a_safe_cookie(app: Flask) -> None:
    client = app.test_client()
    first = client.get("/?range=1h")
    assert first.status_code == 302
    assert first.headers["Location"] == "/login?next=/?range=1h"
    assert _login(client, next_url="/?range=1h") == (302, "/?range=1h")
    cookie = client.get_cookie("vigil_session")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Lax"
    assert not cookie.secure  # plain http on loopback: a Secure cookie would never come back
    page = client.get("/")
    assert page.status_code == 200
    assert "ann (operator)" in page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store"
    assert client.get("/api/overview").status_code == 200


def test_login_over_tls_sets_a_secure_cookie(app: Flask) -> None:
    client = app.test_client()
    html = client.get("/login", base_url="https://localhost").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    rv = client.post(
        "/login",
        base_url="https://localhost",
        data={"username": "ann", "password": PASSWORD, "csrf_token": token},
    )
    assert rv.status_code == 302
    cookie = client.get_cookie("vigil_session", domain="localhost")
    assert cookie is not None and cookie.secure


def test_login_without_csrf_token_is_refused(app: Flask) -> None:
    client = app.test_client()
    client.get("/login")
    rv = client.post("/login", data={"username": "ann", "password": PASSWORD})
    assert rv.status_code == 403
    assert client.get("/").status_code == 302


def test_login_wrong_password_is_audited_with_source_ip(app: Flask, store: MemoryStore) -> None:
    client = app.test_client()
    status, _ = _login(client, password="wrong password!")
    assert status == 401
    assert client.get("/").status_code == 302
    _login(client)
    assert _audit(store) == [("login", "success", "ann"), ("login", "failure", "ann")]
    failed = EventQuery(dataset="vigil.audit", equals=(("event.outcome", "failure"),))
    (failure,) = store.search(failed)
    assert failure.get("source.ip") == "127.0.0.1"
    assert failure.get("event.category") == ["authentication"]


def test_login_next_never_leaves_the_site(app: Flask) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        assert _login(app.test_client(), next_url=target) == (302, "/")


def test_login_throttled_after_five_failures(app: Flask, store: MemoryStore) -> None:
    client = app.test_client()
    for _ in range(5):
        assert _login(client, password="guess guess guess")[0] == 401
    # Even the right password waits now: a guesser cannot tell a hit from a miss.
    assert _login(client)[0] == 429
    assert client.get("/").status_code == 302
    assert [a for a in _audit(store) if a[1] == "failure"].__len__() == 6
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'vigil_web_logins_total{outcome="throttled"} 1.0' in metrics


def test_logout_needs_csrf_and_ends_the_session(app: Flask, store: MemoryStore) -> None:
    client = app.test_client()
    _login(client)
    assert client.post("/logout").status_code == 403
    assert client.get("/").status_code == 200
    rv = client.post("/logout", data={"csrf_token": _csrf(client, "/")})
    assert (rv.status_code, rv.headers["Location"]) == (302, "/login")
    assert client.get("/").status_code == 302
    assert _audit(store)[0] == ("logout", "success", "ann")


def test_session_expires_after_idle_timeout(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    import vigil.webauth

    client = app.test_client()
    _login(client)
    real = vigil.webauth.time.time
    monkeypatch.setattr(vigil.webauth.time, "time", lambda: real() + 45)
    assert client.get("/api/alerts").status_code == 200  # active: the clock restarts
    monkeypatch.setattr(vigil.webauth.time, "time", lambda: real() + 45 + 61)
    assert client.get("/api/alerts").status_code == 401


def test_session_removed_user_loses_access_at_once(app: Flask, users: UserStore) -> None:
    client = app.test_client()
    _login(client)
    assert client.get("/api/alerts").status_code == 200
    users.remove_user("ann")
    assert client.get("/api/alerts").status_code == 401


def test_bearer_token_needs_no_csrf_but_must_be_valid(app: Flask, users: UserStore) -> None:
    client = app.test_client()
    _, token = users.create_token("script", "viewer")
    ok = client.get("/api/alerts", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    for header in (f"Bearer {token}x", "Basic YW5uOnB3", "Bearer "):
        rv = client.get("/api/alerts", headers={"Authorization": header})
        assert rv.status_code == 401, header
        assert rv.headers["WWW-Authenticate"] == 'Bearer realm="vigil"'
