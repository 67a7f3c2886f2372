"""Every route of every Vigil web app declares a role, and callers get exactly that.

The walk covers each Flask ``url_map`` (the dashboards, the supervisor's
control API and ``vigil alert``'s Alertmanager API) and compares it with the
route table in docs/security.md, so a new route without a rule, or a table that
drifted, fails here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry
from werkzeug.routing import Rule

from alerting.am.api import create_app as create_am_app
from alerting.am.config import parse_config
from alerting.am.dispatch import AlertManager
from alerting.lifecycle import lifecycle_app
from dashboards.app import create_app
from siem.memory import MemoryStore
from vigil.auth import PUBLIC, ROLES, UserStore, rank
from vigil.settings import Settings, from_mapping
from vigil.supervisor import Supervisor
from vigil.webauth import SECURITY_HEADERS, route_role

SECURITY_MD = Path(__file__).resolve().parents[2] / "docs" / "security.md"
# Values for route arguments when the walk calls a route.
ARGS = {"name": "no-such-thing", "filename": "overview.css", "sid": "no-such-silence"}
REFUSED = (401, 403)
# Public forms answer 401/403 themselves for a wrong password or a missing CSRF
# token (test_dashboards_auth.py covers them); the walk only proves the guard lets them be.
PUBLIC_FORMS = {("auth.login", "POST")}


def _settings(tmp_path: Path) -> Settings:
    # Port 8099 on purpose: the Host check compares against it; nothing listens.
    return from_mapping({"data_dir": str(tmp_path), "up": {"control_port": 8099}})


def _apps(tmp_path: Path) -> list[tuple[str, Flask]]:
    """(table name, app); ``vigil alert`` without ``alert.alertmanager_config`` serves a
    subset of the alert app's rows."""
    settings = _settings(tmp_path)
    dashboards = create_app(settings, store=MemoryStore())
    supervisor = Supervisor(settings).control_app()
    manager = AlertManager(
        parse_config("route: {receiver: r}\nreceivers: [{name: r}]\n", "am.yaml"),
        tmp_path / "alerts.db",
        {},
        registry=CollectorRegistry(),
    )
    users = UserStore(tmp_path / "users.db")
    alert = create_am_app(manager, users, registry=CollectorRegistry())
    evaluator = lifecycle_app(users, lambda: "", registry=CollectorRegistry())
    return [
        ("dashboards", dashboards),
        ("supervisor", supervisor),
        ("alert", alert),
        ("alert", evaluator),
    ]


def _base_url(app_name: str) -> str:
    return "http://127.0.0.1:8099" if app_name == "supervisor" else "http://localhost"


def _tokens(tmp_path: Path) -> dict[str, str]:
    users = UserStore(tmp_path / "users.db")
    return {role: users.create_token(f"{role}-bot", role)[1] for role in ROLES}


def _routes(app: Flask) -> Iterator[tuple[Rule, str]]:
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            yield rule, method


def _documented() -> set[tuple[str, str, str, str]]:
    """(app, route, method, role) rows of the route table in docs/security.md."""
    rows = set()
    pattern = re.compile(
        r"^\| (dashboards|supervisor|alert) \| `([^`]+)` \| ([A-Z, ]+) \| (\w+) \|$"
    )
    for line in SECURITY_MD.read_text(encoding="utf-8").splitlines():
        found = pattern.match(line)
        if found:
            app, route, methods, role = found.groups()
            rows |= {(app, route, m.strip(), role) for m in methods.split(",")}
    return rows


def undeclared(app: Flask) -> list[str]:
    """Routes of ``app`` whose endpoint declares no role."""
    rules = app.url_map.iter_rules()
    return [rule.rule for rule in rules if route_role(app, rule.endpoint) is None]


def test_routes_every_route_declares_a_role_listed_in_security_md(tmp_path: Path) -> None:
    served = set()
    for app_name, app in _apps(tmp_path):
        assert undeclared(app) == [], app_name
        for rule, method in _routes(app):
            role = route_role(app, rule.endpoint)
            assert role is not None
            served.add((app_name, rule.rule, method, role))
    assert served == _documented()


def test_routes_walk_refuses_and_admits_each_role_as_declared(tmp_path: Path) -> None:
    tokens = _tokens(tmp_path)
    walked = 0
    for app_name, app in _apps(tmp_path):
        client = app.test_client()
        for rule, method in _routes(app):
            role = route_role(app, rule.endpoint)
            assert role is not None
            url = rule.build(ARGS, append_unknown=False)[1]  # type: ignore[union-attr]
            base = _base_url(app_name)
            anon = client.open(url, method=method, base_url=base)
            form = (rule.endpoint, method) in PUBLIC_FORMS
            if role == PUBLIC:
                assert anon.status_code not in REFUSED or form, (app_name, url, method, anon)
            elif method == "GET" and app_name == "dashboards" and not url.startswith("/api/"):
                assert anon.status_code == 302, (url, anon.status_code)
                assert anon.headers["Location"].startswith("/login?next=")
            else:
                assert anon.status_code == 401, (app_name, url, method, anon.status_code)
            for held in ROLES:
                rv = client.open(
                    url,
                    method=method,
                    base_url=base,
                    headers={"Authorization": f"Bearer {tokens[held]}"},
                    json={} if method == "POST" else None,
                )
                if role != PUBLIC and rank(held) < rank(role):
                    assert rv.status_code == 403, (app_name, url, method, held, rv.status_code)
                else:
                    assert rv.status_code not in REFUSED or form, (app_name, url, held, rv)
                walked += 1
    assert walked >= 16 * len(ROLES)


def test_routes_without_a_role_are_refused_not_served(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path), store=MemoryStore())
    app.add_url_rule("/forgotten", "forgotten", lambda: "secret")
    assert undeclared(app) == ["/forgotten"]
    token = _tokens(tmp_path)["admin"]
    rv = app.test_client().get("/forgotten", headers={"Authorization": f"Bearer {token}"})
    assert rv.status_code == 500
    assert b"secret" not in rv.data


def test_headers_on_every_response_of_every_app(tmp_path: Path) -> None:
    for app_name, app in _apps(tmp_path):
        client = app.test_client()
        base = _base_url(app_name)
        for path in ("/healthz", "/metrics", "/api/instances", "/nowhere"):
            rv = client.get(path, base_url=base)
            for name, value in SECURITY_HEADERS.items():
                assert rv.headers.get(name) == value, (app_name, path, name)
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp


def test_templates_have_no_inline_script_style_or_handlers() -> None:
    templates = Path(__file__).resolve().parents[2] / "dashboards" / "templates"
    for page in templates.glob("*.html"):
        html = page.read_text(encoding="utf-8")
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), page.name
        assert "<style" not in html and " style=" not in html, page.name
        assert not re.search(r"\son[a-z]+=", html), page.name


# -- the supervisor's control API ----------------------------------------------------------------
@pytest.fixture
def control(tmp_path: Path) -> tuple[Supervisor, FlaskClient]:
    supervisor = Supervisor(_settings(tmp_path))
    return supervisor, supervisor.control_app().test_client()


def test_control_api_needs_the_token_from_the_0600_file(
    control: tuple[Supervisor, FlaskClient], tmp_path: Path
) -> None:
    supervisor, client = control
    path = tmp_path / "run" / "control.token"
    assert path.stat().st_mode & 0o777 == 0o600
    token = path.read_text(encoding="utf-8").strip()
    assert token == supervisor.control_token()
    base = "http://127.0.0.1:8099"
    body = {"release": "v2"}
    assert client.post("/api/instances/shop-1/release", json=body, base_url=base).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    refused = client.post("/api/instances/shop-1/release", json=body, base_url=base, headers=wrong)
    assert refused.status_code == 401
    ok = client.get("/api/instances", base_url=base, headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    assert {i["name"] for i in ok.json["instances"]} == {"shop-1", "shop-2"}  # type: ignore[index]


@pytest.mark.parametrize(
    "host", ["evil.example:8099", "127.0.0.1:8098", "localhost", "127.0.0.1.nip.io:8099"]
)
def test_control_api_refuses_foreign_host_headers(
    control: tuple[Supervisor, FlaskClient], host: str
) -> None:
    supervisor, client = control
    # A page in the operator's browser, after DNS rebinding, sends its own host name.
    rv = client.post(
        "/api/instances/shop-1/release",
        json={"release": "v2"},
        headers={"Host": host, "Authorization": f"Bearer {supervisor.control_token()}"},
    )
    assert rv.status_code == 421
    assert supervisor.instances()[0]["pid"] is None  # nothing was restarted


@pytest.mark.parametrize("host", ["127.0.0.1:8099", "localhost:8099"])
def test_control_api_accepts_its_own_address(
    control: tuple[Supervisor, FlaskClient], host: str
) -> None:
    supervisor, client = control
    headers = {"Host": host, "Authorization": f"Bearer {supervisor.control_token()}"}
    assert client.get("/api/instances", headers=headers).status_code == 200


def test_control_api_revoked_user_token_stops_working(
    control: tuple[Supervisor, FlaskClient], tmp_path: Path
) -> None:
    _, client = control
    users = UserStore(tmp_path / "users.db")
    token_id, token = users.create_token("ci", "operator")
    headers = {"Authorization": f"Bearer {token}"}
    base = "http://127.0.0.1:8099"
    assert client.get("/api/instances", base_url=base, headers=headers).status_code == 200
    users.revoke_token(token_id)
    assert client.get("/api/instances", base_url=base, headers=headers).status_code == 401
