"""The shop's Flask app factory.

Example::

    app = create_app(from_mapping({"data_dir": "/tmp/shop"}))
    app.test_client().get("/api/products").json
"""

from __future__ import annotations

import logging
import random
import time
import traceback
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, jsonify, render_template, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from shop import metrics
from shop.context import EXTENSION, ShopContext, resolve_client_ip
from shop.db import create_schema, error_kind, make_engine, make_sessionmaker
from shop.faults import Faults
from shop.logs import ShopLogs
from shop.money import Currencies
from shop.proxies import ForwardedProto
from shop.releases import get_release
from shop.scrub import scrub_pan
from shop.seed import seed
from shop.throttle import LoginThrottle
from shop.validation import ApiError
from vigil.settings import Settings, load_settings

# Requests a drill never breaks: health, metrics and the admin API that ends the drill.
_FAULT_EXEMPT = ("/healthz", "/readyz", "/metrics", "/api/admin", "/api/version", "/static")


def create_app(
    settings: Settings | None = None, *, init_db: bool = True, instance: str = ""
) -> Flask:
    """Build the shop app. ``init_db`` creates the schema and seeds an empty database."""
    settings = settings or load_settings()
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    release = get_release(settings.shop.release)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.shop.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]

    faults_holder: list[Faults] = []
    engine = make_engine(
        settings.shop_db_url,
        slow_db=lambda: faults_holder[0].slow_db_seconds() if faults_holder else 0.0,
        busy_timeout_s=settings.shop.db_busy_timeout_s,
    )
    sessions = make_sessionmaker(engine)
    faults = Faults(sessions, settings.shop.faults_enabled)
    faults_holder.append(faults)
    if init_db:
        create_schema(engine)
        with sessions.begin() as session:
            seed(session)
    shop = ShopContext(
        settings=settings,
        engine=engine,
        sessions=sessions,
        logs=ShopLogs(settings.log_dir, instance=instance or f"shop-{settings.shop.port}"),
        currencies=Currencies(settings.shop.rates),
        release=release,
        faults=faults,
        throttle=LoginThrottle(sessions, settings.shop.login_throttle),
    )
    app.extensions[EXTENSION] = shop

    app.wsgi_app = ForwardedProto(app.wsgi_app, settings.shop.trusted_proxies)  # type: ignore[method-assign]
    _install_hooks(app, shop)
    _install_error_handlers(app, shop)

    from shop.api import accounts, admin, admin_catalog, cart, catalog, checkout, orders, system
    from shop.web import pages

    for module in (system, catalog, cart, accounts, checkout, orders, admin, admin_catalog, pages):
        app.register_blueprint(module.bp)
    return app


def _install_hooks(app: Flask, shop: ShopContext) -> None:
    @app.before_request
    def _start() -> Response | None:
        g.started = time.perf_counter()
        g.client_ip = resolve_client_ip(
            request.remote_addr or "",
            request.headers.get("X-Forwarded-For"),
            shop.settings.shop.trusted_proxies,
        )
        metrics.HTTP_IN_PROGRESS.labels(request.method).inc()
        g.in_progress = True
        if _has_nul():
            raise ApiError(400, "invalid_text", "the request must not contain NUL (%00) characters")
        if request.path.startswith(_FAULT_EXEMPT):
            return None
        state = shop.faults.current()
        if state.latency_ms:
            time.sleep(state.latency_ms / 1000.0)
        if state.error_rate and random.random() < state.error_rate:
            rv = jsonify(
                error={
                    "code": "injected_fault",
                    "message": "fault injection: simulated server error",
                }
            )
            rv.status_code = 500
            return rv
        return None

    @app.after_request
    def _finish(response: Response) -> Response:
        session = g.pop("db", None)
        if session is not None:
            try:
                if response.status_code < 400:
                    session.commit()
                else:
                    session.rollback()
            finally:
                session.close()
        _observe(shop, response.status_code)
        return response

    @app.teardown_request
    def _teardown(exc: BaseException | None) -> None:
        session = g.pop("db", None)
        if session is not None:
            session.rollback()
            session.close()
        if g.pop("in_progress", False):
            metrics.HTTP_IN_PROGRESS.labels(request.method).dec()


def _has_nul() -> bool:
    """NUL in the path, query, form or credentials: PostgreSQL text cannot hold it."""
    values = [request.path, request.headers.get("Authorization", ""), *request.cookies.values()]
    # request.form parses only form bodies; a JSON body is checked by json_body().
    for fields in (request.args, request.form):
        values += [value for _, items in fields.lists() for value in items]
    return any("\x00" in value for value in values)


def _observe(shop: ShopContext, status: int) -> None:
    elapsed = time.perf_counter() - g.get("started", time.perf_counter())
    # The route template, never the raw path: ids in paths would explode cardinality.
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    metrics.HTTP_REQUESTS.labels(request.method, route, str(status)).inc()
    metrics.HTTP_DURATION.labels(request.method, route).observe(elapsed)
    # Masked before the status is appended, which would otherwise join a card number's run.
    path, _ = scrub_pan(request.path)
    shop.logs.access(
        f"{request.method} {path} {status}",
        **{
            "event.kind": "event",
            "event.category": ["web"],
            "event.type": ["access"],
            "event.outcome": "failure" if status >= 400 else "success",
            "event.duration": int(elapsed * 1e9),
            "source.ip": g.get("client_ip") or request.remote_addr,
            "http.request.method": request.method,
            "http.response.status_code": status,
            "url.original": request.full_path.rstrip("?"),
            "url.path": request.path,
            "user_agent.original": request.headers.get("User-Agent", ""),
            "user.name": g.get("user_name"),
            "labels.route": route,
            "labels.release": shop.release.name,
        },
    )


def _wants_json() -> bool:
    if request.path.startswith("/api/") or request.path in ("/healthz", "/readyz"):
        return True
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == (
        "application/json"
    )


def _install_error_handlers(app: Flask, shop: ShopContext) -> None:
    def render(
        status: int, code: str, message: str, payload: dict[str, Any] | None = None
    ) -> tuple[Any, int]:
        if _wants_json():
            return jsonify(payload or {"error": {"code": code, "message": message}}), status
        return render_template("error.html", status=status, message=message), status

    @app.errorhandler(ApiError)
    def _api_error(err: ApiError) -> Response:
        rv = app.make_response(render(err.status, err.code, err.message, err.payload()))
        rv.headers.update(err.headers)
        return rv

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Response:
        status = err.code or 500
        code = (err.name or "error").lower().replace(" ", "_")
        message = err.description or err.name
        if status == 413:
            message = f"the request body is larger than {shop.settings.shop.max_body_bytes} bytes"
        rv = app.make_response(render(status, code, message))
        # Keep the exception's own headers, e.g. Allow on a 405 (RFC 9110, 15.5.6).
        for name, value in err.get_headers():
            if name.lower() != "content-type":
                rv.headers[name] = value
        return rv

    @app.errorhandler(OperationalError)
    def _database_busy(err: OperationalError) -> Any:
        kind = error_kind(err)
        if kind not in ("busy", "locked"):
            return _unexpected(err)
        # Another connection held the database past the busy timeout: the request
        # changed nothing (its transaction is rolled back), so a retry is safe.
        shop.logs.app(
            f"database {kind} on {request.method} {request.path}: {err.orig}",
            level=logging.WARNING,
            **{"error.type": f"database_{kind}", "error.message": str(err.orig)},
        )
        message = "the database is busy; retry in a moment"
        rv = app.make_response(render(503, "database_busy", message))
        rv.headers["Retry-After"] = "1"
        return rv

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> tuple[Any, int]:
        shop.logs.app(
            f"unhandled error on {request.method} {request.path}: {err!r}",
            level=logging.ERROR,
            **{
                "error.type": type(err).__name__,
                "error.message": str(err),
                "error.stack_trace": traceback.format_exc(),
            },
        )
        return render(500, "internal_error", "the shop hit an internal error; it was logged")
