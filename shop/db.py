"""Database engine and sessions for the shop: SQLite by default, PostgreSQL by URL.

Every query is timed into ``shop_db_query_duration_seconds``; the ``slow_db``
fault adds latency here, so a drill slows the database path and nothing else.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, MetaData, Table, create_engine, event, insert, inspect, select
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from shop import metrics


class Base(DeclarativeBase):
    """Declarative base of every shop model."""


def make_engine(
    url: str, *, slow_db: Callable[[], float] | None = None, busy_timeout_s: float = 30.0
) -> Engine:
    """Create the engine for ``url`` with query timing and error counting.

    ``slow_db`` returns extra seconds to sleep before each statement (fault
    injection); None disables it. ``busy_timeout_s``: how long a SQLite
    statement waits for another connection's lock before failing with
    "database is locked".
    """
    kwargs: dict[str, Any] = {"future": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": busy_timeout_s}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # WAL lets the gunicorn workers read while one writes.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            cur.close()

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        if slow_db is not None:
            delay = slow_db()
            if delay > 0:
                time.sleep(delay)
        conn.info.setdefault("query_start", []).append(time.perf_counter())

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        started = conn.info["query_start"].pop()
        operation = statement.lstrip().split(" ", 1)[0].lower()
        if operation not in {"select", "insert", "update", "delete"}:
            operation = "other"
        metrics.DB_QUERY_DURATION.labels(operation).observe(time.perf_counter() - started)

    @event.listens_for(engine, "handle_error")
    def _count_error(context: ExceptionContext) -> None:
        kind = error_kind(context.sqlalchemy_exception)
        if kind is not None:
            metrics.DB_ERRORS.labels(kind).inc()

    return engine


_SQLITE_KINDS = ("busy", "locked", "readonly", "ioerr", "full")


def error_kind(exc: BaseException | None) -> str | None:
    """The ``shop_db_errors_total`` kind of a database error; None when it is no operational one.

    SQLite names its error (``SQLITE_BUSY_SNAPSHOT``): the kind is the family
    (``busy``), so the label stays a short fixed list; other drivers' are ``other``.
    """
    if not isinstance(exc, OperationalError):
        return None
    if isinstance(exc.orig, sqlite3.OperationalError):
        family = getattr(exc.orig, "sqlite_errorname", "").removeprefix("SQLITE_").lower()
        family = family.split("_", 1)[0]
        return family if family in _SQLITE_KINDS else "other"
    return "other"


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """A session factory whose objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False, future=True)


def create_schema(engine: Engine) -> None:
    """Create all tables that do not exist yet, and migrate plaintext bearer tokens."""
    from shop import models  # noqa: F401  (registers the tables on Base)

    Base.metadata.create_all(engine)
    migrate_plaintext_tokens(engine)


def migrate_plaintext_tokens(engine: Engine) -> int:
    """Move the tokens of the old ``auth_tokens`` table (plaintext) into ``customer_tokens``.

    Each live token is stored as its SHA-256, so customers stay logged in;
    expired ones are dropped, and so is the old table. Returns how many were
    migrated. Two instances starting at once may race: the loser finds the
    table gone (or its rows already there) and leaves it to the winner.
    """
    from shop.accounts import token_digest
    from shop.models import AuthToken, as_utc, utcnow

    if not inspect(engine).has_table("auth_tokens"):
        return 0
    old = Table("auth_tokens", MetaData(), autoload_with=engine)
    now = utcnow()
    try:
        with engine.begin() as conn:
            rows = [
                {
                    "token_hash": token_digest(row.token),
                    "customer_id": row.customer_id,
                    "expires_at": row.expires_at,
                }
                for row in conn.execute(select(old))
                if row.expires_at is not None and as_utc(row.expires_at) > now
            ]
            if rows:
                conn.execute(insert(AuthToken), rows)
            old.drop(conn)
    except DBAPIError:
        if inspect(engine).has_table("auth_tokens"):
            raise
        return 0
    return len(rows)
