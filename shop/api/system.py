"""Health, readiness, version, metrics and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify
from sqlalchemy import func, select, text

from shop import metrics
from shop.context import ctx, db
from shop.models import MailMessage
from shop.openapi import openapi_document

bp = Blueprint("system", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    """The process is up."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> Any:
    """The database answers; 503 otherwise, so a balancer stops sending traffic."""
    try:
        db().execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means "not ready"
        return jsonify(status="unavailable", error=str(exc)[:200]), 503
    return {"status": "ready"}


@bp.get("/api/version")
def version() -> Any:
    shop = ctx()
    return {"release": shop.release.name, "service": "shop"}


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    shop = ctx()

    def queue_depth() -> dict[str, int]:
        with shop.sessions() as session:
            rows = session.execute(
                select(MailMessage.status, func.count())
                .where(MailMessage.status.in_(("queued", "deferred")))
                .group_by(MailMessage.status)
            ).all()
        depth = {"queued": 0, "deferred": 0}
        depth.update({status: count for status, count in rows})
        return depth

    url = shop.engine.url
    sqlite_path = (
        Path(url.database) if url.get_backend_name() == "sqlite" and url.database else None
    )
    body, content_type = metrics.exposition(
        metrics.ShopStateCollector(shop.release.name, queue_depth, sqlite_path)
    )
    return Response(body, content_type=content_type)


@bp.get("/api/openapi.json")
def openapi() -> Any:
    return openapi_document(ctx())
