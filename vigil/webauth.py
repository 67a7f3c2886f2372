"""Access control for Vigil's Flask apps: every route declares a role, or nobody gets in.

A view says who may call it with ``@requires("viewer")`` (or ``operator``,
``admin``) or ``@public``; endpoints a view cannot carry an attribute for
(Flask's ``static``) are declared in ``install(..., roles={...})``. A
``before_request`` hook refuses any endpoint without a declaration (500: a
programming error, never an open door), then:

* checks the ``Host`` header when ``allowed_hosts`` is given (DNS rebinding: 421);
* authenticates ``Authorization: Bearer <token>`` (user API tokens, or the
  fixed tokens given as ``static_tokens``), ``Authorization: Basic`` whose
  password is a user API token (what Grafana's and promtool's basic-auth
  settings send; any user name), else the session cookie. A user's password
  is never taken in a header: checking it costs a deliberately slow scrypt
  per request and would bypass the login form's throttle;
* answers 401 (JSON, or a redirect to the login page for HTML) or 403;
* checks the CSRF token (session value == form field ``csrf_token`` or
  header ``X-CSRF-Token``) on every unsafe method not authenticated by a
  bearer token; browsers cannot forge that header cross-site.

Every response gets the security headers (CSP without inline script, nosniff,
DENY framing, no referrer).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from flask import Flask, Request, Response, abort, g, jsonify, redirect, request, session
from flask.sessions import SecureCookieSessionInterface

from vigil.auth import PUBLIC, AuthError, Principal, UserStore, rank, read_secret_file
from vigil.auth import write_secret_file as _write_secret

F = TypeVar("F", bound=Callable[..., Any])

ROLE_ATTR = "vigil_role"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def requires(role: str) -> Callable[[F], F]:
    """Declare the least role that may call this view (``viewer``, ``operator``, ``admin``)."""
    rank(role)

    def mark(view: F) -> F:
        setattr(view, ROLE_ATTR, role)
        return view

    return mark


def public(view: F) -> F:
    """Declare a view anyone may call (health, metrics, the login page)."""
    setattr(view, ROLE_ATTR, PUBLIC)
    return view


def route_role(app: Flask, endpoint: str) -> str | None:
    """The role declared for ``endpoint``, or None when it has none (then it is refused)."""
    declared: Mapping[str, str] = app.extensions.get("vigil.auth", AuthConfig()).roles
    if endpoint in declared:
        return declared[endpoint]
    view = app.view_functions.get(endpoint)
    role = getattr(view, ROLE_ATTR, None)
    return role if isinstance(role, str) else None


def current_principal() -> Principal | None:
    """Who the current request is authenticated as (None: anonymous)."""
    rv: Principal | None = g.get("vigil_principal")
    return rv


def csrf_token() -> str:
    """This session's CSRF token (created on first use); put it in every form."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


@dataclass
class AuthConfig:
    """How ``install`` guards one app."""

    users: UserStore | None = None
    static_tokens: dict[str, Principal] = field(default_factory=dict)
    allowed_hosts: frozenset[str] | None = None
    roles: dict[str, str] = field(default_factory=dict)
    sessions: bool = False
    idle_timeout_s: float = 1800.0
    login_endpoint: str | None = None


class _TlsAwareSessions(SecureCookieSessionInterface):
    """Session cookies are ``Secure`` whenever the request came over TLS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config.get("SESSION_COOKIE_SECURE")) or request.is_secure


def session_secret(path: Path) -> str:
    """The app's session-signing key, kept in a 0600 file so sessions survive restarts."""
    try:
        return read_secret_file(path)
    except AuthError:
        secret = secrets.token_urlsafe(48)
        _write_secret(path, secret)
        return secret


def install(app: Flask, config: AuthConfig) -> None:
    """Guard every route of ``app`` as described in the module docstring."""
    app.extensions["vigil.auth"] = config
    if config.sessions:
        app.session_interface = _TlsAwareSessions()
        app.config.update(
            SESSION_COOKIE_HTTPONLY=True,
            SESSION_COOKIE_SAMESITE="Lax",
            SESSION_COOKIE_NAME="vigil_session",
        )
        app.jinja_env.globals["csrf_token"] = csrf_token
        app.jinja_env.globals["current_principal"] = current_principal

    @app.before_request
    def _guard() -> Any:
        if config.allowed_hosts is not None and request.host not in config.allowed_hosts:
            return _deny(421, f"misdirected request: Host {request.host!r} is not this server")
        if request.endpoint is None:
            return None  # no route: Flask answers 404 (or 405)
        role = route_role(app, request.endpoint)
        if role is None:
            # A route nobody declared is a bug; refuse it rather than serve it open.
            return _deny(500, f"route {request.endpoint!r} declares no role")
        principal, error = _authenticate(config, request)
        if error:
            return _deny(401, error)
        g.vigil_principal = principal
        if role != PUBLIC:
            if principal is None:
                return _login_required(config)
            if not principal.allows(role):
                return _deny(403, f"{principal.name} ({principal.role}) may not do this: {role}")
        if request.method not in SAFE_METHODS and (principal is None or principal.via != "token"):
            sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
            want = session.get("csrf") if config.sessions else None
            if not isinstance(want, str) or not hmac.compare_digest(sent, want):
                return _deny(403, "missing or wrong CSRF token; reload the page")
        return None

    @app.after_request
    def _headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        principal = current_principal()
        if principal is not None and principal.via == "session":
            # Pages behind a login must not be served from a shared cache.
            response.headers.setdefault("Cache-Control", "no-store")
        return response


def _basic_secret(encoded: str) -> str:
    """The password of a Basic credential (``base64(user:password)``), or ""."""
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return ""
    return decoded.partition(":")[2]


def _authenticate(config: AuthConfig, req: Request) -> tuple[Principal | None, str]:
    header = req.headers.get("Authorization", "")
    if header:
        scheme, _, secret = header.partition(" ")
        secret = secret.strip()
        if scheme.lower() == "basic" and secret:
            secret = _basic_secret(secret)
            if not secret:
                return None, "Basic credentials must be base64 of <name>:<API token>"
        elif scheme.lower() != "bearer" or not secret:
            return None, "send Authorization: Bearer <token>"
        for known, principal in config.static_tokens.items():
            if hmac.compare_digest(known.encode(), secret.encode()):
                return principal, ""
        found = config.users.principal_for_token(secret) if config.users else None
        return (found, "") if found else (None, "unknown or revoked token")
    if not config.sessions or config.users is None:
        return None, ""
    name = session.get("user")
    if not isinstance(name, str):
        return None, ""
    now = time.time()
    seen = session.get("seen")
    if not isinstance(seen, int | float) or now - seen > config.idle_timeout_s:
        session.pop("user", None)
        return None, ""
    # The role is read again on each request: a removed or demoted user loses access at once.
    role = config.users.user_role(name)
    if role is None:
        session.pop("user", None)
        return None, ""
    # Refreshed at most every tenth of the timeout (and at least once a minute): a cookie
    # rewritten on every response would race the page's own parallel requests.
    if now - seen >= min(60.0, config.idle_timeout_s / 10):
        session["seen"] = int(now)
    return Principal(name, role, "session"), ""


def _login_required(config: AuthConfig) -> Any:
    wants_html = request.method == "GET" and not request.path.startswith("/api/")
    if config.login_endpoint and wants_html:
        return redirect(f"/login?next={quote(request.full_path.rstrip('?'), safe='/?=&')}")
    return _deny(401, "authentication required: log in or send Authorization: Bearer <token>")


def _deny(status: int, message: str) -> Any:
    if request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json":
        kind = {401: "unauthorized", 403: "forbidden", 421: "misdirected"}.get(status, "error")
        rv = jsonify(status="error", errorType=kind, error=message)
        rv.status_code = status
        if status == 401:
            rv.headers["WWW-Authenticate"] = 'Bearer realm="vigil"'
        return rv
    abort(status, description=message)
