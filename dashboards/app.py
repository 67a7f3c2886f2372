"""The dashboards' Flask app factory, its own metrics and its error pages.

Example::

    app = create_app(from_mapping({"data_dir": "/tmp/v"}), store=MemoryStore())
    app.test_client().get("/api/query?expr=up").json
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from flask import Flask, Response, current_app, g, jsonify, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from werkzeug.exceptions import HTTPException

from siem.model import Series, Store
from vigil.auth import UserStore, users_path
from vigil.settings import Settings
from vigil.webauth import AuthConfig, install, public, session_secret

if TYPE_CHECKING:
    from alerting.promql import InstantSample, QueryResult

EXTENSION = "vigil.dashboards"
log = logging.getLogger("vigil.web")


class QueryEngine(Protocol):
    """What the dashboards need from a PromQL engine (``alerting.promql.Engine``).

    An instant query answers a vector (samples), a scalar, or a matrix (``Series``,
    for a range vector such as ``up[5m]``)."""

    def instant(
        self, expr: str, at: float
    ) -> Sequence[InstantSample] | Sequence[Series] | float: ...

    def query(self, expr: str, at: float) -> QueryResult:
        """Any expression, as Prometheus' instant query API answers it: a vector, a
        scalar, a ``Matrix`` for a range vector, or a string."""
        ...

    def range(self, expr: str, start: float, end: float, step: float) -> list[Series]: ...


class WebMetrics:
    """The web process's own metrics, in a registry of their own (one per app)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.requests = Counter(
            "vigil_web_requests",
            "HTTP requests answered by the web UI",
            ["method", "endpoint", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "vigil_web_request_duration_seconds",
            "Time to answer a web UI request, by route template",
            ["endpoint"],
            registry=self.registry,
        )
        self.logins = Counter(
            "vigil_web_logins",
            "Login attempts by outcome (success, failure, throttled)",
            ["outcome"],
            registry=self.registry,
        )
        self.audit_failures = Counter(
            "vigil_web_audit_write_failures",
            "vigil.audit events the store did not take (the action itself went on)",
            registry=self.registry,
        )


@dataclass(frozen=True)
class Dashboards:
    """What the blueprints share: settings, the store, the PromQL engine, metrics, users."""

    settings: Settings
    store: Store
    engine: QueryEngine
    metrics: WebMetrics
    users: UserStore
    throttle: Any


def context() -> Dashboards:
    """The ``Dashboards`` of the current app."""
    rv: Dashboards = current_app.extensions[EXTENSION]
    return rv


def create_app(
    settings: Settings, store: Store | None = None, engine: QueryEngine | None = None
) -> Flask:
    """Build the web UI. Without ``store``, opens the configured one (``store.backend``);
    without ``engine``, evaluates PromQL with ``alerting.promql.Engine`` over that store."""
    if store is None:
        from siem.backends import open_store

        store = open_store(settings)
    if engine is None:
        from alerting.promql import Engine

        engine = Engine(store)
    from dashboards import alerts, api, auth, pages, promapi, slos

    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    users = UserStore(users_path(settings))
    app.extensions[EXTENSION] = Dashboards(
        settings, store, engine, WebMetrics(), users, auth.LoginThrottle()
    )
    app.secret_key = session_secret(Path(settings.data_dir).resolve() / "run" / "web.secret")

    app.register_blueprint(api.bp)
    app.register_blueprint(promapi.bp)
    app.register_blueprint(slos.bp)
    app.register_blueprint(alerts.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(auth.bp)
    app.add_url_rule("/metrics", "metrics", _metrics)
    app.add_url_rule("/healthz", "healthz", _healthz)
    _install_hooks(app)
    # After _install_hooks, so a refused request is still counted and logged.
    install(
        app,
        AuthConfig(
            users=users,
            # CSS, JS and the favicon are the same for everyone; the login page needs them.
            roles={"static": "public"},
            sessions=True,
            idle_timeout_s=settings.web.session_idle_s,
            login_endpoint="auth.login",
        ),
    )
    return app


@public
def _metrics() -> Response:
    body = generate_latest(context().metrics.registry)
    return Response(body, content_type=CONTENT_TYPE_LATEST)


@public
def _healthz() -> Response:
    return jsonify(status="ok")


def _install_hooks(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        # The route template, never the raw path, keeps the label set small.
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics = context().metrics
        metrics.requests.labels(request.method, endpoint, str(response.status_code)).inc()
        metrics.duration.labels(endpoint).observe(elapsed)
        log.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={
                "http.request.method": request.method,
                "url.path": request.path,
                "http.response.status_code": response.status_code,
                "event.duration": int(elapsed * 1e9),
                "source.ip": request.remote_addr,
            },
        )
        return response

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Any:
        if not request.path.startswith("/api/"):
            return err
        error_type = "bad_data" if err.code == 400 else "not_found" if err.code == 404 else "error"
        rv = jsonify(status="error", errorType=error_type, error=err.description or err.name)
        return rv, err.code or 500

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Any:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        if request.path.startswith("/api/"):
            return jsonify(status="error", errorType="internal", error=str(err)), 500
        return Response("internal error; see the web process's log", 500, mimetype="text/plain")
