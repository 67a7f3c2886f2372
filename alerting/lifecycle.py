"""The management routes of ``vigil alert``'s port, as Alertmanager and Prometheus serve
them: ``/-/healthy`` and ``/-/ready`` (200 ``OK``, public), ``/metrics`` (public) and
``POST /-/reload`` (``admin``: it applies configuration). Reload answers as
Alertmanager's handler (``ui/web.go``): 200 with no body, or 500
``failed to reload config: <why>``; each call is a ``config-reload`` audit event with
its outcome. The Alertmanager API app adds them to its routes; without
``alert.alertmanager_config`` they are the port's whole app. Example::

    app = lifecycle_app(users, engine.request_reload, audit=store_writer)
    make_server("127.0.0.1", 8092, app, threaded=True).serve_forever()
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from vigil.auth import UserStore, audit_event
from vigil.errors import VigilError
from vigil.webauth import AuthConfig, current_principal, install, public, requires

log = logging.getLogger("vigil.alert")

Reload = Callable[[], str]
"""Reads the files again; "" when all loaded, else why not (the last good ones stay)."""


def add_lifecycle_routes(
    app: Flask,
    reload: Reload,
    *,
    registry: CollectorRegistry = REGISTRY,
    audit: Callable[[Any], object] | None = None,
) -> None:
    """Add ``/-/healthy``, ``/-/ready``, ``/-/reload`` and ``/metrics`` to ``app``."""

    @app.route("/-/healthy", methods=["GET", "HEAD"])
    @public
    def healthy() -> Response:
        return Response("OK", mimetype="text/plain")

    @app.route("/-/ready", methods=["GET", "HEAD"])
    @public
    def ready() -> Response:
        return Response("OK", mimetype="text/plain")

    @app.post("/-/reload")
    @requires("admin")
    def reload_files() -> Response:
        error = reload()
        outcome = "failure" if error else "success"
        who = current_principal()
        actor = who.name if who else "?"
        log.info("configuration reload by %s: %s", actor, outcome, extra={"user.name": actor})
        if audit is not None:
            event = audit_event(
                "config-reload",
                actor=actor,
                outcome=outcome,
                category="configuration",
                source_ip=request.remote_addr,
                message=f"{actor}: configuration reload: {outcome}",
            )
            try:
                audit(event)
            except VigilError as exc:  # the reload happened; the log says the trail misses it
                log.error("could not record the audit event of a reload: %s", exc)
        if error:
            return Response(f"failed to reload config: {error}\n", 500, mimetype="text/plain")
        return Response(status=200)

    @app.get("/metrics")
    @public
    def metrics_page() -> Response:
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def lifecycle_app(
    users: UserStore | None,
    reload: Reload,
    *,
    registry: CollectorRegistry = REGISTRY,
    audit: Callable[[Any], object] | None = None,
) -> Flask:
    """The port's app when ``vigil alert`` runs without an Alertmanager configuration."""
    app = Flask("vigil.alert", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024  # no route reads a body
    install(app, AuthConfig(users=users))
    add_lifecycle_routes(app, reload, registry=registry, audit=audit)
    return app
