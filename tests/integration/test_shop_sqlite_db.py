"""The shop's SQLite database on /metrics: file and WAL sizes, and lock errors that end
in a clear 503 instead of a hung or failed request."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families


def scrape(client: FlaskClient) -> dict[str, float]:
    body = client.get("/metrics").get_data(as_text=True)
    return {
        s.name + "".join(f",{k}={v}" for k, v in sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def database(app: Flask) -> Path:
    return Path(app.extensions["vigil.shop"].engine.url.database)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_shop_metrics_report_the_sqlite_file_and_wal_sizes(app: Flask, client: FlaskClient) -> None:
    client.post("/api/carts")  # a write: the WAL holds it until a checkpoint
    samples = scrape(client)
    path = database(app)
    assert samples["shop_sqlite_db_bytes"] == path.stat().st_size > 0
    assert samples["shop_sqlite_wal_bytes"] == os.stat(f"{path}-wal").st_size > 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_shop_answers_503_and_counts_when_the_database_stays_locked(
    build_app: Callable[..., Flask],
) -> None:
    app = build_app(db_busy_timeout_s=0.2)
    client = app.test_client()
    before = scrape(client).get("shop_db_errors_total,kind=busy", 0.0)
    holder = sqlite3.connect(database(app), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
    try:
        rv = client.post("/api/carts")
        assert rv.status_code == 503
        assert rv.json == {
            "error": {"code": "database_busy", "message": "the database is busy; retry in a moment"}
        }
        assert rv.headers["Retry-After"] == "1"
        assert scrape(client)["shop_db_errors_total,kind=busy"] == before + 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert client.post("/api/carts").status_code == 201  # the lock gone, writes work again
    log = (app.extensions["vigil.shop"].settings.log_dir / "app.log").read_text(encoding="utf-8")
    assert "database busy on POST /api/carts" in log
