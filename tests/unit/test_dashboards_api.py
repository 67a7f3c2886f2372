"""The dashboards' JSON API over a MemoryStore holding realistic shop samples."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from dashboards.api import format_value
from dashboards.app import create_app
from dashboards.panels import OVERVIEW
from siem.memory import MemoryStore
from siem.model import Event, Sample, make_labels
from vigil.auth import UserStore
from vigil.settings import from_mapping

NOW = 1_700_000_000.0
STEP = 5.0
SHOP = {"job": "shop", "instance": "127.0.0.1:8001"}
# Counter increments per 5 s scrape, so per-second rates are these / 5.
REQUESTS = [
    ({"method": "GET", "route": "/api/products", "status": "200"}, 10.0),  # 2/s
    ({"method": "POST", "route": "/api/checkout", "status": "200"}, 4.0),  # 0.8/s
    ({"method": "POST", "route": "/api/checkout", "status": "502"}, 1.0),  # 0.2/s
]


def _shop_samples(minutes: int = 10) -> list[Sample]:
    rv: list[Sample] = []
    steps = int(minutes * 60 / STEP)
    for i in range(steps + 1):
        t = NOW - (steps - i) * STEP
        for labels, per_step in REQUESTS:
            name_labels = make_labels("shop_http_requests_total", **labels, **SHOP)
            rv.append(Sample(name_labels, t, 1000.0 + per_step * i))
        rv.append(Sample(make_labels("up", **SHOP), t, 1.0))
        rv.append(Sample(make_labels("shop_release_info", release="v1", **SHOP), t, 1.0))
    return rv


def _alert_event(at: float, action: str, name: str, **extra: Any) -> Event:
    doc: dict[str, Any] = {
        "@timestamp": _iso(at),
        "event": {"dataset": "vigil.alert", "action": action, "kind": "alert"},
        "labels": {"alertname": name, "severity": "critical", **extra},
        "message": f"{name} is {action}",
        "vigil": {"alert": {"annotations": {"runbook_url": "runbooks/x.md"}, "value": 0.09}},
    }
    return Event.from_doc(doc, source="test", position=f"{name}-{at}-{action}")


def _iso(at: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def store() -> MemoryStore:
    rv = MemoryStore()
    rv.write(samples=_shop_samples())
    return rv


@pytest.fixture
def app(store: MemoryStore, tmp_path: Path) -> Flask:
    settings = from_mapping({"data_dir": str(tmp_path)})
    application = create_app(settings, store=store)
    application.config["TESTING"] = True
    return application


@pytest.fixture
def client(app: Flask, tmp_path: Path) -> FlaskClient:
    """A client with a viewer's API token, as a script reading the API would have."""
    _, token = UserStore(tmp_path / "users.db").create_token("reader", "viewer")
    rv = app.test_client()
    rv.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return rv


def _by_route(result: list[dict[str, Any]]) -> dict[str, list[list[Any]]]:
    return {r["metric"]["route"]: r["values"] for r in result}


def test_query_range_rates_per_route(client: FlaskClient) -> None:
    rv = client.get(
        "/api/query_range",
        query_string={
            "expr": "sum by (route) (rate(shop_http_requests_total[1m]))",
            "start": NOW - 120,
            "end": NOW,
            "step": "30s",
        },
    )
    assert rv.status_code == 200
    body = rv.get_json()
    assert body["status"] == "success"
    assert body["data"]["resultType"] == "matrix"
    series = _by_route(body["data"]["result"])
    assert set(series) == {"/api/products", "/api/checkout"}
    for route, expected in (("/api/products", 2.0), ("/api/checkout", 1.0)):
        points = series[route]
        assert [t for t, _ in points] == [NOW - 120 + 30 * k for k in range(5)]
        assert all(isinstance(v, str) for _, v in points)
        assert [float(v) for _, v in points] == pytest.approx([expected] * 5, rel=1e-9)


def test_query_range_error_ratio(client: FlaskClient) -> None:
    error_ratio = next(p for p in OVERVIEW if p.id == "error-ratio")
    rv = client.get(
        "/api/query_range",
        query_string={"expr": error_ratio.expr, "start": NOW - 60, "end": NOW, "step": 60},
    )
    [series] = rv.get_json()["data"]["result"]
    assert [float(v) for _, v in series["values"]] == pytest.approx([0.2 / 3.0] * 2, rel=1e-9)


def test_query_instant_vector_and_scalar(client: FlaskClient) -> None:
    rv = client.get("/api/query", query_string={"expr": "shop_release_info", "time": NOW})
    data = rv.get_json()["data"]
    assert data["resultType"] == "vector"
    [row] = data["result"]
    assert row["metric"]["release"] == "v1"
    assert row["metric"]["instance"] == "127.0.0.1:8001"
    assert row["value"] == [NOW, "1"]

    rv = client.get("/api/query", query_string={"expr": "1 + 1", "time": NOW})
    assert rv.get_json()["data"] == {"resultType": "scalar", "result": [NOW, "2"]}


def test_query_time_accepts_rfc3339(client: FlaskClient) -> None:
    rv = client.get("/api/query", query_string={"expr": "up", "time": _iso(NOW)})
    assert rv.get_json()["data"]["result"][0]["value"] == [NOW, "1"]


def test_query_stale_series_are_absent(client: FlaskClient) -> None:
    # Ten minutes after the last sample the lookback (5 min) finds nothing.
    rv = client.get("/api/query", query_string={"expr": "up", "time": NOW + 600})
    assert rv.get_json()["data"]["result"] == []


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("/api/query", {"expr": "sum(rate(x[1m]"}, ""),
        ("/api/query", {"expr": ""}, "expression is required"),
        ("/api/query", {"expr": "up", "time": "yesterday"}, 'cannot parse "yesterday"'),
        ("/api/query_range", {"expr": "up", "start": NOW, "end": NOW}, '"step": required'),
        ("/api/query_range", {"expr": "up", "end": NOW, "step": 5}, '"start": required'),
        ("/api/query_range", {"expr": "up", "start": NOW, "end": NOW, "step": 0}, "positive"),
        ("/api/query_range", {"expr": "up", "start": NOW, "end": NOW, "step": "5x"}, "duration"),
        (
            "/api/query_range",
            {"expr": "up", "start": NOW, "end": NOW - 1, "step": 5},
            "must not be before start",
        ),
        (
            "/api/query_range",
            {"expr": "up", "start": NOW - 86400, "end": NOW, "step": 1},
            "maximum resolution",
        ),
        ("/api/events", {"limit": "lots"}, "not an integer"),
        ("/api/events", {"limit": 0}, "between 1 and"),
    ],
)
def test_api_bad_request_is_400_bad_data(
    client: FlaskClient, path: str, params: dict[str, Any], message: str
) -> None:
    rv = client.get(path, query_string=params)
    assert rv.status_code == 400
    body = rv.get_json()
    assert body["status"] == "error"
    assert body["errorType"] == "bad_data"
    assert message in body["error"]


def test_query_bad_expr_carries_the_promql_error(client: FlaskClient) -> None:
    from alerting.promql import Engine, PromQLError

    expr = "sum(rate(shop_http_requests_total[1m]) by"
    with pytest.raises(PromQLError) as raised:
        Engine(MemoryStore()).instant(expr, NOW)
    rv = client.get(
        "/api/query_range", query_string={"expr": expr, "start": 0, "end": 1, "step": 1}
    )
    assert rv.status_code == 400
    assert rv.get_json()["error"] == str(raised.value)


def test_alerts_latest_state_per_label_set(client: FlaskClient, store: MemoryStore) -> None:
    store.write(
        events=[
            _alert_event(NOW - 300, "pending", "ShopHighErrorRate"),
            _alert_event(NOW - 270, "firing", "ShopHighErrorRate"),
            _alert_event(NOW - 200, "firing", "ShopSlowCheckout"),
            _alert_event(NOW - 100, "resolved", "ShopSlowCheckout"),
            _alert_event(NOW - 90, "firing", "ShopInstanceDown", instance="127.0.0.1:8002"),
            _alert_event(NOW - 80, "resolved", "ShopInstanceDown", instance="127.0.0.1:8001"),
            _alert_event(NOW - 10, "pending", "BruteForceLogin"),
        ]
    )
    rv = client.get("/api/alerts")
    alerts = rv.get_json()["data"]["alerts"]
    assert [(a["labels"]["alertname"], a["labels"].get("instance")) for a in alerts] == [
        ("ShopInstanceDown", "127.0.0.1:8002"),
        ("ShopHighErrorRate", None),
    ]
    high = alerts[1]
    assert high["state"] == "firing"
    assert high["activeAt"] == NOW - 270
    assert high["summary"] == "ShopHighErrorRate is firing"
    assert high["annotations"] == {"runbook_url": "runbooks/x.md"}
    assert high["value"] == "0.09"


def test_alerts_reads_dotted_documents(client: FlaskClient, store: MemoryStore) -> None:
    doc = {
        "@timestamp": _iso(NOW),
        "event.dataset": "vigil.alert",
        "event.action": "firing",
        "labels.alertname": "Flat",
    }
    store.write(events=[Event.from_doc(doc, source="test", position=1)])
    [alert] = client.get("/api/alerts").get_json()["data"]["alerts"]
    assert alert["labels"] == {"alertname": "Flat"}


def test_events_newest_first_by_dataset_and_limit(client: FlaskClient, store: MemoryStore) -> None:
    store.write(
        events=[_alert_event(NOW - k, "firing", f"A{k}") for k in range(5)]
        + [
            Event.from_doc(
                {"@timestamp": _iso(NOW), "event": {"dataset": "vigil.deploy"}},
                source="test",
                position="deploy",
            )
        ]
    )
    rv = client.get("/api/events", query_string={"dataset": "vigil.alert", "limit": 3})
    events = rv.get_json()["data"]["events"]
    assert [e["doc"]["labels"]["alertname"] for e in events] == ["A0", "A1", "A2"]
    assert all(e["dataset"] == "vigil.alert" for e in events)
    rv = client.get("/api/events", query_string={"dataset": "vigil.deploy", "start": NOW - 1})
    assert [e["timestamp"] for e in rv.get_json()["data"]["events"]] == [NOW]


def test_overview_panels_all_evaluate(client: FlaskClient) -> None:
    data = client.get("/api/overview").get_json()["data"]
    kinds = {p["id"]: p["kind"] for p in data["panels"]}
    assert kinds["alerts"] == "alerts"
    assert data["markers"]["dataset"] == "vigil.deploy"
    for panel in data["panels"]:
        if not panel["expr"]:
            continue
        rv = client.get(
            "/api/query_range",
            query_string={"expr": panel["expr"], "start": NOW - 60, "end": NOW, "step": 15},
        )
        assert rv.status_code == 200, (panel["id"], rv.get_json())


def test_overview_p95_latency_from_histogram(client: FlaskClient, store: MemoryStore) -> None:
    # Every checkout takes between 0.5 s and 1 s: p95 interpolates to 0.975 s.
    buckets = [("0.5", 0.0), ("1.0", 2.0), ("+Inf", 2.0)]
    samples = [
        Sample(
            make_labels(
                "shop_http_request_duration_seconds_bucket",
                le=le,
                method="POST",
                route="/api/checkout",
                **SHOP,
            ),
            NOW - 60 + k * STEP,
            per_step * k,
        )
        for k in range(13)
        for le, per_step in buckets
    ]
    store.write(samples=samples)
    latency = next(p for p in OVERVIEW if p.id == "latency-p95")
    rv = client.get("/api/query", query_string={"expr": latency.expr, "time": NOW})
    [row] = rv.get_json()["data"]["result"]
    assert row["metric"] == {"route": "/api/checkout"}
    assert float(row["value"][1]) == pytest.approx(0.975)


def test_metrics_count_requests_by_route_template(client: FlaskClient) -> None:
    client.get("/api/query", query_string={"expr": "up", "time": NOW})
    client.get("/api/query", query_string={"expr": "up", "time": NOW})
    client.get("/api/query", query_string={"expr": "up(", "time": NOW})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'vigil_web_requests_total{endpoint="/api/query",method="GET",status="200"} 2.0' in text
    assert 'vigil_web_requests_total{endpoint="/api/query",method="GET",status="400"} 1.0' in text
    assert "vigil_web_request_duration_seconds_bucket" in text


def test_healthz_and_unknown_api_path(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    rv = client.get("/api/nope")
    assert rv.status_code == 404
    assert rv.get_json()["errorType"] == "not_found"


def test_overview_page_loads_vendored_chart_library(client: FlaskClient) -> None:
    page = client.get("/").get_data(as_text=True)
    assert "/static/vendor/uplot/uPlot.iife.min.js" in page
    assert "//cdn" not in page
    assert client.get("/static/vendor/uplot/uPlot.iife.min.js").status_code == 200
    assert client.get("/static/overview.js").status_code == 200


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (2.0, "2"),
        (0.25, "0.25"),
        (math.nan, "NaN"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (-0.0, "-0"),  # Go's strconv.FormatFloat keeps the sign of zero
        (0.0, "0"),
    ],
)
def test_format_value_like_prometheus(value: float, text: str) -> None:
    assert format_value(value) == text


def test_runbook_is_served_as_markdown(client: FlaskClient) -> None:
    rv = client.get("/runbooks/shop-high-error-rate.md")
    assert rv.status_code == 200
    assert rv.content_type.startswith("text/markdown")
    assert "rollback-shop" in rv.get_data(as_text=True)
    assert client.get("/runbooks/../README.md").status_code == 404
    assert client.get("/runbooks/nope.md").status_code == 404
