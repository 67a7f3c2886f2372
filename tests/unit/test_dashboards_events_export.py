"""``/api/events/export`` (NDJSON and CSV downloads of the matches) and the ``/events`` page."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from dashboards import api
from dashboards.app import create_app
from siem.model import Event
from siem.sqlite import SqliteStore
from vigil.auth import UserStore
from vigil.settings import from_mapping

BASE = 1_700_000_100.0


def _access(n: int, status: int, message: str) -> Event:
    doc: dict[str, Any] = {
        "@timestamp": BASE + n,
        "event": {"dataset": "shop.access"},
        "http": {"response": {"status_code": status}},
        "message": message,
    }
    return Event(f"a{n:04d}", BASE + n, "shop.access", doc)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[FlaskClient]:
    store = SqliteStore(tmp_path / "siem.db")
    events = [_access(n, 503 if n % 3 == 0 else 200, f"GET /p/{n}") for n in range(25)]
    events.append(_access(100, 500, '=HYPERLINK("http://evil.example","x"), "quoted"'))
    store.write(events=events)
    app = create_app(from_mapping({"data_dir": str(tmp_path)}), store=store)
    app.config["TESTING"] = True
    _, token = UserStore(tmp_path / "users.db").create_token("reader", "viewer")
    rv = app.test_client()
    rv.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    yield rv
    store.close()


def test_events_export_ndjson_is_every_match_newest_first(client: FlaskClient) -> None:
    rv = client.get(
        "/api/events/export",
        query_string={
            "query": "http.response.status_code >= 500",
            "start": BASE,
            "end": BASE + 200,
        },
    )
    assert rv.status_code == 200
    assert rv.mimetype == "application/x-ndjson"
    assert rv.headers["Content-Disposition"].startswith('attachment; filename="vigil-events-')
    assert rv.headers["X-Vigil-Truncated"] == "false"
    lines = [json.loads(line) for line in rv.get_data(as_text=True).splitlines()]
    # n = 0, 3, … 24 are 503s, and the 500 at n = 100.
    assert [e["id"] for e in lines] == ["a0100", *(f"a{n:04d}" for n in range(24, -1, -3))]
    assert lines[1]["doc"]["http"]["response"]["status_code"] == 503


def test_events_export_pages_through_the_store_and_says_when_cut(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Store pages of 4 make the export follow the cursor across several pages.
    monkeypatch.setattr(api, "MAX_EVENTS", 4)
    params = {"start": BASE, "end": BASE + 200}
    whole = client.get("/api/events/export", query_string=params)
    ids = [json.loads(line)["id"] for line in whole.get_data(as_text=True).splitlines()]
    assert len(ids) == 26 and len(set(ids)) == 26
    assert ids[0] == "a0100" and ids[-1] == "a0000"
    assert whole.headers["X-Vigil-Truncated"] == "false"

    cut = client.get("/api/events/export", query_string={**params, "limit": 10})
    cut_ids = [json.loads(line)["id"] for line in cut.get_data(as_text=True).splitlines()]
    assert cut_ids == ids[:10]
    assert cut.headers["X-Vigil-Truncated"] == "true"

    exact = client.get("/api/events/export", query_string={**params, "limit": 26})
    assert exact.headers["X-Vigil-Truncated"] == "false"


def test_events_export_csv_has_chosen_fields_and_defuses_formulas(client: FlaskClient) -> None:
    rv = client.get(
        "/api/events/export",
        query_string={
            "format": "csv",
            "query": "http.response.status_code: 500",
            "fields": "http.response.status_code,message,no.such.field",
            "start": BASE,
            "end": BASE + 200,
        },
    )
    assert rv.status_code == 200
    assert rv.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(rv.get_data(as_text=True))))
    assert rows[0] == ["http.response.status_code", "message", "no.such.field"]
    # The leading "=" is quoted away so a spreadsheet shows the text, not a formula.
    assert rows[1:] == [["500", '\'=HYPERLINK("http://evil.example","x"), "quoted"', ""]]


def test_events_export_default_csv_columns(client: FlaskClient) -> None:
    rv = client.get(
        "/api/events/export",
        query_string={"format": "csv", "query": "http.response.status_code: 500", "start": BASE},
    )
    rows = list(csv.reader(io.StringIO(rv.get_data(as_text=True))))
    assert rows[0] == ["@timestamp", "event.dataset", "message"]
    assert rows[1][:2] == [str(BASE + 100), "shop.access"]


def test_events_export_refuses_bad_requests_with_json(client: FlaskClient) -> None:
    rv = client.get("/api/events/export", query_string={"format": "xlsx"})
    assert rv.status_code == 400 and "format" in rv.get_json()["error"]
    rv = client.get("/api/events/export", query_string={"query": "status: (200"})
    body = rv.get_json()
    assert rv.status_code == 400 and body["column"] == 13
    rv = client.get("/api/events/export", query_string={"limit": api.MAX_EXPORT + 1})
    assert rv.status_code == 400


def test_events_page_is_a_shell_with_the_shared_navigation(client: FlaskClient) -> None:
    rv = client.get("/events")
    assert rv.status_code == 200
    html = rv.get_data(as_text=True)
    assert 'src="/static/events.js"' in html
    assert 'href="/events" aria-current="page"' in html
    overview = client.get("/").get_data(as_text=True)
    assert 'href="/" aria-current="page"' in overview and 'href="/events"' in overview
