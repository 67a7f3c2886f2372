"""Login throttling: failed logins per account and per client IP.

Each scope has a fixed window that starts with its first failure: after
``account_failures`` failures for one e-mail address (known or not, so the
answer tells nothing about which accounts exist) or ``ip_failures`` from one
client address within the window, every further login is answered 429 with
``Retry-After`` until the window ends — even with the right password, which
is the point. A successful login clears the account's count; the IP's count
stays, or an attacker with an account of their own could clear it between
guesses. A refused attempt is not counted, so waiting always helps.

Counts live in the shop database (``login_failures``), written with one
atomic upsert, so all gunicorn workers and all instances share them.

Example::

    throttle = LoginThrottle(sessions, settings.shop.login_throttle)
    throttle.check(session, account="ann@example.com", ip="10.0.0.7")  # raises Throttled
    throttle.failed(account="ann@example.com", ip="10.0.0.7")
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from sqlalchemy import and_, case, delete, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from shop import metrics
from shop.models import LoginFailures, as_utc, utcnow
from shop.validation import ApiError
from vigil.settings import LoginThrottleSettings

SUBJECT_MAX = 254


class Throttled(ApiError):
    """429: too many failed logins; ``retry_after`` is in whole seconds."""

    def __init__(self, scope: str, retry_after: int) -> None:
        minutes = max(1, math.ceil(retry_after / 60))
        super().__init__(
            429,
            "too_many_attempts",
            f"too many failed logins; try again in {minutes} minute{'s' if minutes > 1 else ''}",
        )
        self.scope = scope
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


class LoginThrottle:
    """The failed-login limits of one shop, counted in its database."""

    def __init__(self, sessions: sessionmaker[Session], limits: LoginThrottleSettings) -> None:
        self.sessions = sessions
        self.limits = limits

    def _scopes(self, account: str, ip: str) -> list[tuple[str, str, int, int]]:
        limits = self.limits
        rv = [("account", account[:SUBJECT_MAX], limits.account_failures, limits.account_window_s)]
        if ip:
            rv.append(("ip", ip[:SUBJECT_MAX], limits.ip_failures, limits.ip_window_s))
        return rv

    def check(
        self, session: Session, *, account: str, ip: str, now: dt.datetime | None = None
    ) -> None:
        """Raise ``Throttled`` when the account or the IP is over its limit."""
        now = now or utcnow()
        scopes = self._scopes(account, ip)
        limit = {scope: failures for scope, _, failures, _ in scopes}
        wanted = [
            and_(LoginFailures.scope == scope, LoginFailures.subject == subject)
            for scope, subject, _, _ in scopes
        ]
        rows = session.scalars(select(LoginFailures).where(or_(*wanted)))
        blocked = [
            (row.scope, math.ceil((as_utc(row.window_ends) - now).total_seconds()))
            for row in rows
            if as_utc(row.window_ends) > now and row.failures >= limit[row.scope]
        ]
        if blocked:
            scope, retry_after = max(blocked, key=lambda item: item[1])
            metrics.LOGIN_THROTTLED.labels(scope).inc()
            raise Throttled(scope, max(1, retry_after))

    def failed(self, *, account: str, ip: str, now: dt.datetime | None = None) -> None:
        """Count one failed login, in a transaction of its own.

        The login's request rolls back with its 401, which must not take the
        count with it.
        """
        now = now or utcnow()
        with self.sessions.begin() as session:
            # Expired windows of anyone: keeps the table as small as the live windows.
            session.execute(delete(LoginFailures).where(LoginFailures.window_ends <= now))
            for scope, subject, _, window_s in self._scopes(account, ip):
                session.execute(
                    _upsert(session, scope, subject, now, now + dt.timedelta(seconds=window_s))
                )

    def succeeded(self, session: Session, *, account: str) -> None:
        """Clear the account's failures (in the login's own transaction)."""
        session.execute(
            delete(LoginFailures).where(
                LoginFailures.scope == "account", LoginFailures.subject == account[:SUBJECT_MAX]
            )
        )


def _upsert(
    session: Session, scope: str, subject: str, now: dt.datetime, window_ends: dt.datetime
) -> Any:
    """One failure more, or a new window at 1 when there is none or it has ended.

    ``INSERT … ON CONFLICT DO UPDATE`` (SQLite ≥ 3.24 and PostgreSQL): two
    workers counting the same subject at once cannot lose a count.
    """
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    live = LoginFailures.window_ends > now
    stmt = dialect.insert(LoginFailures).values(
        scope=scope, subject=subject, failures=1, window_ends=window_ends
    )
    return stmt.on_conflict_do_update(
        index_elements=[LoginFailures.scope, LoginFailures.subject],
        set_={
            "failures": case((live, LoginFailures.failures + 1), else_=1),
            "window_ends": case((live, LoginFailures.window_ends), else_=window_ends),
        },
    )
