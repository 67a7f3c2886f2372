"""``/api/events`` (KQL, time range, fields, paging) and ``/api/events/aggregate``, over SQLite."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from dashboards.app import create_app
from siem.model import Event
from siem.sqlite import SqliteStore
from vigil.auth import UserStore
from vigil.settings import from_mapping

BASE = 1_700_000_100.0  # a multiple of 60 s: minute buckets start here


def _access(n: int, ts: float, status: int, path: str) -> Event:
    doc: dict[str, Any] = {
        "event": {"dataset": "shop.access"},
        "http": {"response": {"status_code": status}},
        "url": {"path": path},
        "message": f"GET {path} {status}",
    }
    return Event(f"a{n:04d}", ts, "shop.access", doc)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    rv = SqliteStore(tmp_path / "siem.db")
    events = [
        _access(n, BASE + n * 10, 503 if n % 4 == 0 else 200, "/cart" if n % 2 else "/checkout")
        for n in range(30)
    ]
    app_event = Event("app1", BASE + 5, "shop.app", {"message": "Connection refused by db"})
    rv.write(events=[*events, app_event])
    yield rv
    rv.close()


@pytest.fixture
def client(store: SqliteStore, tmp_path: Path) -> FlaskClient:
    app = create_app(from_mapping({"data_dir": str(tmp_path)}), store=store)
    app.config["TESTING"] = True
    _, token = UserStore(tmp_path / "users.db").create_token("reader", "viewer")
    rv = app.test_client()
    rv.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return rv


def _data(client: FlaskClient, path: str, **params: Any) -> dict[str, Any]:
    rv = client.get(path, query_string=params)
    assert rv.status_code == 200, rv.get_json()
    data: dict[str, Any] = rv.get_json()["data"]
    return data


def test_events_api_kql_range_and_fields(client: FlaskClient) -> None:
    data = _data(
        client,
        "/api/events",
        query="http.response.status_code >= 500 and url.path: /checkout",
        start=BASE,
        end=BASE + 200,
        fields="http.response.status_code,url.path",
    )
    # n = 0, 4, 8, 12, 16 are 503s on /checkout (even n); BASE + 200 is n = 20, excluded.
    assert [e["id"] for e in data["events"]] == ["a0016", "a0012", "a0008", "a0004", "a0000"]
    assert data["events"][0]["fields"] == {
        "http.response.status_code": 503,
        "url.path": "/checkout",
    }
    assert "doc" not in data["events"][0]
    assert data["next"] is None  # fewer than limit: no further page


def test_events_api_free_text_and_dataset(client: FlaskClient) -> None:
    data = _data(client, "/api/events", query="refused")
    assert [e["id"] for e in data["events"]] == ["app1"]
    assert data["events"][0]["doc"]["message"] == "Connection refused by db"
    assert _data(client, "/api/events", query="refused", dataset="shop.access")["events"] == []


def test_events_api_pages_with_the_next_cursor(client: FlaskClient) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"dataset": "shop.access", "limit": 7}
    while True:
        data = _data(client, "/api/events", **params)
        seen.extend(e["id"] for e in data["events"])
        if data["next"] is None:
            break
        params["after"] = data["next"]
    assert seen == [f"a{n:04d}" for n in range(29, -1, -1)]


def test_events_api_relative_time(client: FlaskClient, store: SqliteStore) -> None:
    now = time.time()
    store.write(
        events=[_access(900, now - 60, 200, "/recent"), _access(901, now - 3600, 200, "/old")]
    )
    data = _data(client, "/api/events", start="now-15m", end="now")
    assert [e["id"] for e in data["events"]] == ["a0900"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"start": "yesterday"}, 'cannot parse "yesterday"'),
        ({"start": "now-15q"}, "relative like now-15m"),
        ({"start": BASE, "end": BASE}, "must be after start"),
        ({"after": "garbage"}, "page cursor"),
        ({"fields": ","}, '"fields"'),
    ],
)
def test_events_api_bad_parameters_are_400(
    client: FlaskClient, params: dict[str, Any], message: str
) -> None:
    rv = client.get("/api/events", query_string=params)
    assert rv.status_code == 400
    assert rv.get_json()["errorType"] == "bad_data"
    assert message in rv.get_json()["error"]


def test_events_api_bad_kql_is_400_with_the_column(client: FlaskClient) -> None:
    for path in ("/api/events", "/api/events/aggregate"):
        rv = client.get(path, query_string={"query": "status: (200 or"})
        assert rv.status_code == 400
        body = rv.get_json()
        assert body["errorType"] == "bad_data"
        # 15 characters: the query ends where a value was expected, at column 16.
        assert body["column"] == 16
        assert "column 16" in body["error"]


def test_events_aggregate_histogram_and_terms(client: FlaskClient) -> None:
    data = _data(
        client,
        "/api/events/aggregate",
        query="event.dataset: shop.access",
        start=BASE,
        end=BASE + 300,
        interval="1m",
        terms="http.response.status_code",
        size=1,
    )
    assert data["total"] == 30
    assert data["histogram"]["interval"] == 60.0
    # Six events per minute; the 300th second is the end, excluded.
    assert data["histogram"]["buckets"] == [[BASE + 60 * k, 6] for k in range(5)]
    # 200 for n % 4 != 0 (22 events), 503 for the 8 others.
    assert data["terms"] == {
        "field": "http.response.status_code",
        "buckets": [{"value": "200", "count": 22}],
        "other": 8,
        "missing": 0,
    }


def test_events_aggregate_auto_interval_like_kibana(client: FlaskClient) -> None:
    data = _data(client, "/api/events/aggregate", start=BASE, end=BASE + 3600)
    assert data["histogram"]["interval"] == 60.0
    assert len(data["histogram"]["buckets"]) == 60
    assert sum(n for _, n in data["histogram"]["buckets"]) == data["total"] == 31
    assert "terms" not in data


def test_events_aggregate_bad_parameters_are_400(client: FlaskClient) -> None:
    for params, message in (
        ({"start": BASE, "end": BASE + 86400 * 30, "interval": "1s"}, "buckets"),
        ({"terms": "url.path", "size": 0}, '"size"'),
        ({"interval": "soon"}, '"interval"'),
        ({"terms": 'url.path"); --'}, "invalid field name"),
    ):
        rv = client.get("/api/events/aggregate", query_string=params)
        assert rv.status_code == 400, params
        assert message in rv.get_json()["error"]
