"""Login and logout for the dashboards, with throttling and ``vigil.audit`` events.

The login form posts name, password and the session's CSRF token; success
puts the user name in the signed session cookie (HttpOnly, SameSite=Lax,
Secure over TLS). After ``LOGIN_MAX_FAILURES`` failures for one name or one
client address within ``LOGIN_WINDOW_S`` seconds, further attempts are
answered 429 without checking the password.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from flask import Blueprint, Response, redirect, render_template, request, session

from dashboards.app import context
from vigil.auth import UserStore, audit_event
from vigil.errors import VigilError
from vigil.webauth import csrf_token, current_principal, public, requires

bp = Blueprint("auth", __name__)
log = logging.getLogger("vigil.web")

LOGIN_MAX_FAILURES = 5
LOGIN_WINDOW_S = 300.0


class LoginThrottle:
    """Failures per key (user name, client address) in a sliding window; bounded memory."""

    def __init__(self, limit: int = LOGIN_MAX_FAILURES, window_s: float = LOGIN_WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, *keys: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            return any(len(self._recent(k, now)) >= self.limit for k in keys)

    def fail(self, *keys: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._failures) > 10_000:
                self._failures.clear()  # bounded: a flood of names cannot grow memory forever
            for key in keys:
                self._recent(key, now).append(now)

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque(maxlen=self.limit))
        while times and now - times[0] > self.window_s:
            times.popleft()
        return times


def _users() -> UserStore:
    rv: UserStore = context().users
    return rv


def _audit(action: str, actor: str, outcome: str, message: str) -> None:
    event = audit_event(
        action,
        actor=actor,
        outcome=outcome,
        category="authentication",
        source_ip=request.remote_addr,
        message=message,
    )
    try:
        context().store.write(events=[event])
    except VigilError as exc:
        context().metrics.audit_failures.inc()
        log.warning("could not record the %s audit event: %s", action, exc)


def _safe_next(raw: str | None) -> str:
    # Only same-site paths: "//evil.example" or "https://…" would be an open redirect.
    if raw and raw.startswith("/") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return "/"


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> Any:
    """The login form; POST checks the password and starts a session."""
    next_url = _safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("login.html", next=next_url, error="", token=csrf_token())
    name = request.form.get("username", "")[:64]
    password = request.form.get("password", "")[:1024]
    throttle: LoginThrottle = context().throttle
    keys = (f"user:{name}", f"ip:{request.remote_addr}")
    if throttle.blocked(*keys):
        context().metrics.logins.labels("throttled").inc()
        _audit("login", name, "failure", f"login for {name!r} refused: too many failures")
        page = render_template(
            "login.html",
            next=next_url,
            error="Too many failed logins; wait a few minutes.",
            token=csrf_token(),
        )
        return Response(page, 429, headers={"Retry-After": str(int(LOGIN_WINDOW_S))})
    principal = _users().authenticate(name, password)
    if principal is None:
        throttle.fail(*keys)
        context().metrics.logins.labels("failure").inc()
        _audit("login", name, "failure", f"failed login for {name!r}")
        page = render_template(
            "login.html", next=next_url, error="Wrong user name or password.", token=csrf_token()
        )
        return Response(page, 401)
    # A fresh session (and CSRF token) on login: no session fixation.
    session.clear()
    session["user"] = principal.name
    session["seen"] = int(time.time())
    csrf_token()
    context().metrics.logins.labels("success").inc()
    _audit("login", principal.name, "success", f"{principal.name} logged in")
    return redirect(next_url)


@bp.post("/logout")
@requires("viewer")
def logout() -> Any:
    """End the session (a POST with the CSRF token, so no page can log you out)."""
    principal = current_principal()
    session.clear()
    if principal is not None:
        _audit("logout", principal.name, "success", f"{principal.name} logged out")
    return redirect("/login")
