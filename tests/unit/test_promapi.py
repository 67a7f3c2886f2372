"""``/api/v1/``: the requests Grafana's Prometheus data source sends, and Prometheus'
envelopes, error types and status codes for what goes wrong.

The Grafana requests are those of its ``pkg/promlib`` client: the health check
(instant ``1+1`` at time 4), queries as form POSTs with ``step`` in float
seconds and a ``timeout``, label and series look-ups as GET or POST.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from alerting.promql import InstantSample
from collectors.prometheus import stack_targets
from dashboards.api import instant_data
from dashboards.app import EXTENSION, create_app
from dashboards.params import DashboardError
from dashboards.promapi import parse_selector
from siem.memory import MemoryStore
from siem.model import STALE_NAN, Event, Matcher, MetricMetadata, Sample, Series, make_labels
from vigil.auth import UserStore
from vigil.settings import from_mapping

T0 = 1_700_000_000.0
SHOP_A = {"job": "shop", "instance": "a:1"}
SHOP_B = {"job": "shop", "instance": "b:2"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _samples(now: float) -> list[Sample]:
    rv = []
    for i in range(21):
        t = T0 + 15 * i
        rv.append(Sample(make_labels("up", **SHOP_A), t, 1.0))
        rv.append(Sample(make_labels("up", **SHOP_B), t, 0.0 if i >= 10 else 1.0))
        labels = make_labels("shop_http_requests_total", route="/api/cart", **SHOP_A)
        rv.append(Sample(labels, t, 100.0 + 30.0 * i))
        rv.append(Sample(make_labels("odd_values", kind="nan", **SHOP_A), t, math.nan))
        rv.append(Sample(make_labels("odd_values", kind="inf", **SHOP_A), t, math.inf))
        rv.append(Sample(make_labels("odd_values", kind="-inf", **SHOP_A), t, -math.inf))
    # The targets' last minute, for /api/v1/targets (which looks at the recent past).
    for offset in (60.0, 45.0, 30.0):
        rv.append(Sample(make_labels("up", job="shop", instance="c:3"), now - offset, 1.0))
        rv.append(Sample(make_labels("up", job="db", instance="d:4"), now - offset, 0.0))
        took = make_labels("scrape_duration_seconds", job="shop", instance="c:3")
        rv.append(Sample(took, now - offset, 0.012))
    return rv


RULES = """\
groups:
  - name: availability
    interval: 10s
    rules:
      - alert: InstanceDown
        expr: up == 0
        for: 30s
        labels: {severity: critical}
        annotations: {summary: "{{ $labels.instance }} is down"}
      - alert: TooManyRequests
        expr: rate(shop_http_requests_total[1m]) > 100
  - name: aggregates
    limit: 5
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
        labels: {team: sre}
"""


@pytest.fixture
def store() -> MemoryStore:
    import time

    rv = MemoryStore()
    rv.write(samples=_samples(time.time()))
    return rv


@pytest.fixture
def app(store: MemoryStore, tmp_path: Path) -> Flask:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "a.yaml").write_text(RULES, encoding="utf-8")
    settings = from_mapping(
        {
            "data_dir": str(tmp_path),
            "alert": {"rules": [str(tmp_path / "rules" / "*.yaml")], "slos": []},
            "collect": {"scrape": {"db": {"targets": ["d:4"], "timeout_s": 2.0}}},
            "query": {"max_samples": 2000},
        }
    )
    return create_app(settings, store=store)


@pytest.fixture
def token(tmp_path: Path) -> str:
    return UserStore(tmp_path / "users.db").create_token("grafana", "viewer")[1]


@pytest.fixture
def client(app: Flask, token: str) -> FlaskClient:
    rv = app.test_client()
    rv.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return rv


def _ok(rv: Any) -> Any:
    assert rv.status_code == 200, rv.get_data(as_text=True)
    body = rv.get_json()
    assert body["status"] == "success"
    return body["data"]


def _error(rv: Any, status: int, error_type: str) -> str:
    assert rv.status_code == status, rv.get_data(as_text=True)
    body = rv.get_json()
    assert body["status"] == "error" and body["errorType"] == error_type, body
    assert set(body) == {"status", "errorType", "error"}
    message: str = body["error"]
    return message


# -- Grafana's requests ------------------------------------------------------------------------


def test_grafana_health_check_new_and_old(client: FlaskClient) -> None:
    new = client.post("/api/v1/query", data={"query": "1+1", "time": "4"}, headers=FORM)
    assert _ok(new) == {"resultType": "scalar", "result": [4, "2"]}
    old = client.get("/api/v1/query?query=1%2B1&time=4")
    assert _ok(old) == {"resultType": "scalar", "result": [4, "2"]}
    spaced = client.get("/api/v1/query?query=1+%2B+1&time=4")
    assert _ok(spaced) == {"resultType": "scalar", "result": [4, "2"]}


def test_grafana_range_query_form_post_with_float_step_and_timeout(client: FlaskClient) -> None:
    form = {
        "query": 'up{instance="b:2"}',
        "start": str(T0 + 120),
        "end": str(T0 + 180),
        "step": "30",
        "timeout": "30s",
    }
    data = _ok(client.post("/api/v1/query_range", data=form, headers=FORM))
    assert data["resultType"] == "matrix"
    assert data["result"] == [
        {
            "metric": {"__name__": "up", "instance": "b:2", "job": "shop"},
            "values": [[1700000120, "1"], [1700000150, "0"], [1700000180, "0"]],
        }
    ]
    # Grafana's step with a fraction, and RFC 3339 times, as promtool sends them.
    rfc = client.get(
        "/api/v1/query_range",
        query_string={
            "query": 'up{instance="a:1"}',
            "start": "2023-11-14T22:15:20Z",
            "end": "2023-11-14T22:15:21Z",
            "step": "0.5",
        },
    )
    values = _ok(rfc)["result"][0]["values"]
    assert values == [[1700000120, "1"], [1700000120.5, "1"], [1700000121, "1"]]


def test_grafana_label_and_series_lookups(client: FlaskClient) -> None:
    window = {"start": str(T0), "end": str(T0 + 300)}
    names = _ok(client.get("/api/v1/labels", query_string=window))
    assert names == ["__name__", "instance", "job", "kind", "route"]
    metrics = _ok(client.get("/api/v1/label/__name__/values", query_string=window))
    assert metrics == ["odd_values", "shop_http_requests_total", "up"]
    filtered = client.get(
        "/api/v1/label/instance/values", query_string={**window, "match[]": 'up{instance!="a:1"}'}
    )
    assert _ok(filtered) == ["b:2"]
    # Grafana's resource calls are POSTs when the data source is set to POST.
    series = client.post(
        "/api/v1/series",
        data={**window, "match[]": ["up", 'shop_http_requests_total{route=~"/api/.*"}']},
        headers=FORM,
    )
    assert _ok(series) == [
        {
            "__name__": "shop_http_requests_total",
            "instance": "a:1",
            "job": "shop",
            "route": "/api/cart",
        },
        {"__name__": "up", "instance": "a:1", "job": "shop"},
        {"__name__": "up", "instance": "b:2", "job": "shop"},
    ]
    posted = client.post("/api/v1/labels", data={**window, "match[]": "up"}, headers=FORM)
    assert _ok(posted) == ["__name__", "instance", "job"]


def test_lookups_without_start_cover_all_retained_time(client: FlaskClient) -> None:
    # The samples are from 2023: without start (and end) a look-up sees them, as Prometheus does.
    assert _ok(client.get("/api/v1/label/__name__/values")) == [
        "odd_values",
        "scrape_duration_seconds",
        "shop_http_requests_total",
        "up",
    ]
    assert _ok(client.get("/api/v1/labels", query_string={"match[]": "odd_values"})) == [
        "__name__",
        "instance",
        "job",
        "kind",
    ]
    old = client.get("/api/v1/series", query_string={"match[]": "up", "end": T0 + 300})
    assert [s["instance"] for s in _ok(old)] == ["a:1", "b:2"]
    recent = client.get("/api/v1/series", query_string={"match[]": "up", "start": T0 + 301})
    assert [s["instance"] for s in _ok(recent)] == ["c:3", "d:4"]


def test_lookups_read_no_samples(store: MemoryStore, client: FlaskClient) -> None:
    # query.max_samples is 2000 in this app: reading these 3 x 1,000 samples would fail (422).
    busy = [make_labels("busy_total", shard=str(n), **SHOP_A) for n in range(3)]
    store.write(samples=[Sample(lab, T0 + i, float(i)) for lab in busy for i in range(1000)])
    window = {"match[]": "busy_total", "start": T0, "end": T0 + 1000}
    assert len(_ok(client.get("/api/v1/series", query_string=window))) == 3
    assert _ok(client.get("/api/v1/label/shard/values", query_string=window)) == ["0", "1", "2"]
    assert "shard" in _ok(client.get("/api/v1/labels", query_string=window))
    query = {"query": "count_over_time(busy_total[1000s])", "time": T0 + 1000}
    _error(client.get("/api/v1/query", query_string=query), 422, "execution")
    cut = client.get("/api/v1/series", query_string={**window, "limit": "2"})
    assert [s["shard"] for s in _ok(cut)] == ["0", "1"]
    assert cut.get_json()["warnings"] == ["results truncated due to limit"]
    exact = client.get("/api/v1/series", query_string={**window, "limit": "3"})
    assert len(_ok(exact)) == 3 and "warnings" not in exact.get_json()


def test_metadata_from_what_the_collector_scraped(store: MemoryStore, client: FlaskClient) -> None:
    assert _ok(client.get("/api/v1/metadata")) == {}
    store.write_metadata(
        [
            MetricMetadata("up", "gauge", "Whether the target answered."),
            MetricMetadata("shop_http_requests_total", "counter", "Requests served."),
            MetricMetadata("latency_seconds", "histogram", "Latency.", "seconds"),
        ]
    )
    assert _ok(client.get("/api/v1/metadata")) == {
        "latency_seconds": [{"type": "histogram", "help": "Latency.", "unit": "seconds"}],
        "shop_http_requests_total": [{"type": "counter", "help": "Requests served.", "unit": ""}],
        "up": [{"type": "gauge", "help": "Whether the target answered.", "unit": ""}],
    }
    assert _ok(client.get("/api/v1/metadata?metric=up&limit_per_metric=1")) == {
        "up": [{"type": "gauge", "help": "Whether the target answered.", "unit": ""}]
    }
    assert list(_ok(client.get("/api/v1/metadata?limit=2"))) == [
        "latency_seconds",
        "shop_http_requests_total",
    ]
    # As Prometheus: limit 0 answers nothing, a negative limit everything.
    assert _ok(client.get("/api/v1/metadata?limit=0")) == {}
    assert len(_ok(client.get("/api/v1/metadata?limit=-1"))) == 3
    assert _ok(client.get("/api/v1/metadata?metric=nope")) == {}


def test_grafana_metadata_buildinfo_exemplars(client: FlaskClient) -> None:
    # Nothing scraped with # TYPE/# HELP: the empty answer Prometheus gives.
    assert _ok(client.get("/api/v1/metadata")) == {}
    info = _ok(client.get("/api/v1/status/buildinfo"))
    assert info["version"] and "features" not in info  # no features: Grafana sees Prometheus
    assert _ok(client.get("/api/v1/query_exemplars?query=up&start=1&end=2")) == []
    formatted = client.get("/api/v1/format_query", query_string={"query": "sum(up)by(job)"})
    assert _ok(formatted) == "sum by (job) (up)"


# -- values and shapes -------------------------------------------------------------------------


def test_values_as_prometheus_writes_them(client: FlaskClient) -> None:
    data = _ok(client.get("/api/v1/query", query_string={"query": "odd_values", "time": T0}))
    by_kind = {r["metric"]["kind"]: r["value"] for r in data["result"]}
    assert by_kind == {
        "nan": [1700000000, "NaN"],
        "inf": [1700000000, "+Inf"],
        "-inf": [1700000000, "-Inf"],
    }
    # Time to the millisecond, as Prometheus keeps it.
    scalar = _ok(client.get("/api/v1/query", query_string={"query": "0.25", "time": "4.1234"}))
    assert scalar == {"resultType": "scalar", "result": [4.123, "0.25"]}


def test_instant_query_of_a_range_vector_or_a_string_as_prometheus(client: FlaskClient) -> None:
    """``up[30s]`` answers a matrix of the raw points, a subquery a matrix of its steps,
    an empty window still a matrix, and a string literal a string."""
    query = {"query": 'up{instance="b:2"}[30s]', "time": T0 + 160}
    data = _ok(client.get("/api/v1/query", query_string=query))
    assert data == {
        "resultType": "matrix",
        "result": [
            {
                "metric": {"__name__": "up", "instance": "b:2", "job": "shop"},
                "values": [[1700000135, "1"], [1700000150, "0"]],
            }
        ],
    }
    # steps at multiples of 20 s in (T0 + 130, T0 + 170]: T0 + 140 and T0 + 160
    subquery = {"query": 'sum(up{job="shop"})[40s:20s]', "time": T0 + 170}
    sub = _ok(client.get("/api/v1/query", query_string=subquery))
    assert sub == {
        "resultType": "matrix",
        "result": [{"metric": {}, "values": [[1700000140, "2"], [1700000160, "1"]]}],
    }
    empty = _ok(client.get("/api/v1/query", query_string={"query": "up[1m]", "time": T0 - 3600}))
    assert empty == {"resultType": "matrix", "result": []}
    text = _ok(
        client.post("/api/v1/query", data={"query": '"a string"', "time": "4"}, headers=FORM)
    )
    assert text == {"resultType": "string", "result": [4, "a string"]}


def test_serializer_takes_a_matrix_from_an_instant_query() -> None:
    # An instant query of a range vector (up[1m]) answers Series: a matrix, as in Prometheus.
    series = [Series(make_labels("up", **SHOP_A), ((T0 - 15, 1.0), (T0, math.nan)))]
    data, warnings = instant_data(series, T0)
    assert warnings == []
    assert data == {
        "resultType": "matrix",
        "result": [
            {
                "metric": {"__name__": "up", "instance": "a:1", "job": "shop"},
                "values": [[1699999985, "1"], [1700000000, "NaN"]],
            }
        ],
    }
    assert instant_data([], T0)[0] == {"resultType": "vector", "result": []}
    assert instant_data("text", 4.5)[0] == {"resultType": "string", "result": [4.5, "text"]}
    vector = [InstantSample(make_labels(**SHOP_A), 2.0), InstantSample(make_labels(**SHOP_B), 1.0)]
    cut, warned = instant_data(vector, T0, limit=1)
    assert cut["result"] == [{"metric": SHOP_A, "value": [1700000000, "2"]}]
    assert warned == ["results truncated due to limit"]


def test_limit_truncates_with_a_warning(client: FlaskClient) -> None:
    rv = client.get("/api/v1/query", query_string={"query": "up", "time": T0, "limit": "1"})
    assert rv.get_json()["warnings"] == ["results truncated due to limit"]
    assert len(_ok(rv)["result"]) == 1
    ranged = client.get(
        "/api/v1/query_range",
        query_string={"query": "up", "start": T0, "end": T0 + 30, "step": "15s", "limit": "1"},
    )
    assert ranged.get_json()["warnings"] == ["results truncated due to limit"]
    assert len(_ok(ranged)["result"]) == 1
    labels = client.get("/api/v1/labels", query_string={"start": T0, "end": T0 + 1, "limit": 2})
    assert _ok(labels) == ["__name__", "instance"]
    assert labels.get_json()["warnings"] == ["results truncated due to limit"]
    assert "warnings" not in client.get("/api/v1/query?query=up&time=1700000000").get_json()


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "needle"),
    [
        ("/api/v1/query", {"query": "sum(up"}, "unclosed left parenthesis"),
        ("/api/v1/query", {"query": ""}, '"query"'),
        ("/api/v1/query", {"query": "up", "time": "yesterday"}, '"time"'),
        ("/api/v1/query", {"query": "up", "timeout": "soon"}, '"timeout"'),
        ("/api/v1/query", {"query": "up", "limit": "-1"}, '"limit"'),
        ("/api/v1/query", {"query": 'up{job=~"("}', "time": "4"}, "regex"),
        ("/api/v1/query_range", {"query": "up", "start": "1"}, '"end"'),
        ("/api/v1/query_range", {"query": "up", "start": "1", "end": "2"}, '"step"'),
        ("/api/v1/query_range", {"query": "up", "start": "9", "end": "2", "step": "1"}, "before"),
        ("/api/v1/query_range", {"query": "up", "start": "0", "end": "1", "step": "0"}, "zero"),
        (
            "/api/v1/query_range",
            {"query": "up", "start": "0", "end": "100000", "step": "1"},
            "11,000 points",
        ),
        ("/api/v1/series", {}, "no match[] parameter provided"),
        ("/api/v1/series", {"match[]": "1"}, "not a series selector"),
        ("/api/v1/series", {"match[]": 'up{job="x"'}, "match[]"),
        ("/api/v1/series", {"match[]": "rate(up[1m])"}, "not a series selector"),
        ("/api/v1/label/1a/values", {}, 'invalid label name: "1a"'),
        ("/api/v1/labels", {"start": "soon"}, '"start"'),
        ("/api/v1/metadata", {"limit": "x"}, "limit must be a number"),
        ("/api/v1/metadata", {"limit_per_metric": "1.5"}, "limit_per_metric must be a number"),
        ("/api/v1/format_query", {"query": "sum("}, '"query"'),
        ("/api/v1/query_exemplars", {"query": "sum("}, '"query"'),
        ("/api/v1/rules", {"type": "both"}, '"type"'),
        ("/api/v1/targets", {"state": "gone"}, '"state"'),
    ],
)
def test_bad_requests_answer_400_bad_data(
    client: FlaskClient, path: str, params: dict[str, str], needle: str
) -> None:
    assert needle in _error(client.get(path, query_string=params), 400, "bad_data")


def test_a_query_over_the_sample_limit_is_422_execution(client: FlaskClient) -> None:
    # query.max_samples is 2000 in this app; 9,001 steps of a scalar hold more.
    rv = client.get(
        "/api/v1/query_range",
        query_string={"query": "time()", "start": T0, "end": T0 + 9000, "step": "1"},
    )
    assert "too many samples" in _error(rv, 422, "execution")


def test_a_query_past_its_timeout_parameter_is_503_timeout(client: FlaskClient) -> None:
    rv = client.get(
        "/api/v1/query_range",
        query_string={
            "query": "sum_over_time(shop_http_requests_total[5m])",
            "start": T0,
            "end": T0 + 300,
            "step": "1",
            "timeout": "1ms",
        },
    )
    assert "timed out" in _error(rv, 503, "timeout")


def test_unknown_route_and_wrong_method_in_the_envelope(client: FlaskClient) -> None:
    _error(client.get("/api/v1/nope"), 404, "not_found")
    assert client.post("/api/v1/metadata").status_code == 405


def test_parse_selector() -> None:
    assert parse_selector('up{job="shop",instance=~"a.*"}') == [
        Matcher("__name__", "=", "up"),
        Matcher("job", "=", "shop"),
        Matcher("instance", "=~", "a.*"),
    ]
    assert parse_selector('{__name__=~"up|x"}') == [Matcher("__name__", "=~", "up|x")]
    for bad in ('{job=~".*"}', "up offset 5m", "up[5m]", "(up)", "up @ 10", "x" * 20_000):
        with pytest.raises(DashboardError):
            parse_selector(bad)


# -- who may call ------------------------------------------------------------------------------


def test_basic_auth_with_an_api_token_as_password(app: Flask, token: str) -> None:
    client = app.test_client()
    good = base64.b64encode(f"grafana:{token}".encode()).decode()
    rv = client.post(
        "/api/v1/query",
        data={"query": "1+1", "time": "4"},
        headers={**FORM, "Authorization": f"Basic {good}"},
    )
    assert _ok(rv)["result"] == [4, "2"]  # a POST, yet no CSRF token needed: not a session
    wrong = base64.b64encode(b"grafana:vgt_not-a-token").decode()
    refused = client.get("/api/v1/labels", headers={"Authorization": f"Basic {wrong}"})
    assert refused.status_code == 401 and refused.get_json()["errorType"] == "unauthorized"
    for garbage in ("Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode()):
        assert client.get("/api/v1/labels", headers={"Authorization": garbage}).status_code == 401
    assert client.get("/api/v1/labels").status_code == 401


def test_basic_auth_refuses_a_users_password(app: Flask, tmp_path: Path) -> None:
    users = UserStore(tmp_path / "users.db")
    users.add_user("ann", "viewer", "correct horse battery")
    basic = base64.b64encode(b"ann:correct horse battery").decode()
    rv = app.test_client().get("/api/v1/labels", headers={"Authorization": f"Basic {basic}"})
    assert rv.status_code == 401


# -- alerts, rules, targets --------------------------------------------------------------------


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")


def _alert_event(at: float, state: str, instance: str) -> Event:
    """A ``vigil.alert`` event as ``alerting.engine`` writes it."""
    labels = {"alertname": "InstanceDown", "severity": "critical", "instance": instance}
    doc = {
        "@timestamp": _iso(at),
        "event": {"dataset": "vigil.alert", "kind": "alert", "action": f"alert-{state}"},
        "labels": labels,
        "vigil": {
            "alert": {
                "state": state,
                "value": 0.0,
                "annotations": {"summary": f"{instance} is down"},
            }
        },
    }
    return Event.from_doc(doc, source="test", position=f"{instance}/{state}/{at}")


@pytest.fixture
def alerting(store: MemoryStore) -> None:
    store.write(
        events=[
            _alert_event(T0 + 150, "pending", "b:2"),
            _alert_event(T0 + 180, "firing", "b:2"),
            _alert_event(T0 + 200, "pending", "c:3"),
            _alert_event(T0 + 100, "pending", "d:4"),
            _alert_event(T0 + 140, "resolved", "d:4"),
        ]
    )


@pytest.mark.usefixtures("alerting")
def test_alerts_pending_and_firing_as_prometheus_lists_them(client: FlaskClient) -> None:
    alerts = _ok(client.get("/api/v1/alerts"))["alerts"]
    by_instance = {a["labels"]["instance"]: a for a in alerts}
    assert set(by_instance) == {"b:2", "c:3"}  # d:4 resolved
    assert by_instance["b:2"] == {
        "labels": {"alertname": "InstanceDown", "severity": "critical", "instance": "b:2"},
        "annotations": {"summary": "b:2 is down"},
        "state": "firing",
        "activeAt": "2023-11-14T22:15:50Z",  # when it went pending (T0 + 150)
        "value": "0e+00",
    }
    assert by_instance["c:3"]["state"] == "pending"
    # The dashboards' own list shows the engine's firing alert too.
    firing = client.get("/api/alerts").get_json()["data"]["alerts"]
    assert [a["labels"]["instance"] for a in firing] == ["b:2"]


@pytest.mark.usefixtures("alerting")
def test_rules_from_the_rule_files_with_their_alerts(client: FlaskClient, tmp_path: Path) -> None:
    groups = _ok(client.get("/api/v1/rules"))["groups"]
    assert [g["name"] for g in groups] == ["availability", "aggregates"]
    group = groups[0]
    assert group["file"] == str(tmp_path / "rules" / "a.yaml")
    assert group["interval"] == 10
    down, busy = group["rules"]
    assert (down["name"], down["type"], down["query"], down["duration"]) == (
        "InstanceDown",
        "alerting",
        "up == 0",
        30,
    )
    assert down["state"] == "firing"
    assert sorted(a["state"] for a in down["alerts"]) == ["firing", "pending"]
    assert down["labels"] == {"severity": "critical"}
    assert (busy["state"], busy["alerts"]) == ("inactive", [])
    named = _ok(client.get("/api/v1/rules?rule_name[]=TooManyRequests"))["groups"]
    assert [r["name"] for r in named[0]["rules"]] == ["TooManyRequests"]


def test_recording_rules_as_prometheus_shows_them(client: FlaskClient) -> None:
    """A recording rule is ``type: recording`` with Prometheus' fields (no state, no
    alerts); ``type=record`` and ``type=alert`` keep one kind, dropping emptied groups."""
    groups = _ok(client.get("/api/v1/rules"))["groups"]
    aggregates = groups[1]
    assert (aggregates["name"], aggregates["limit"]) == ("aggregates", 5)
    assert aggregates["rules"] == [
        {
            "name": "job:up:sum",
            "query": "sum by (job) (up)",
            "labels": {"team": "sre"},
            "health": "unknown",
            "lastError": "",
            "evaluationTime": 0,
            "lastEvaluation": "0001-01-01T00:00:00Z",
            "type": "recording",
        }
    ]
    recorded = _ok(client.get("/api/v1/rules", query_string={"type": "record"}))["groups"]
    assert [(g["name"], [r["name"] for r in g["rules"]]) for g in recorded] == [
        ("aggregates", ["job:up:sum"])
    ]
    alerting = _ok(client.get("/api/v1/rules", query_string={"type": "alert"}))["groups"]
    assert [(g["name"], [r["type"] for r in g["rules"]]) for g in alerting] == [
        ("availability", ["alerting", "alerting"])
    ]
    assert alerting[0]["rules"][0]["keepFiringFor"] == 0


def test_rules_keep_the_last_good_files_and_report_the_error(
    client: FlaskClient, tmp_path: Path
) -> None:
    assert len(_ok(client.get("/api/v1/rules"))["groups"]) == 2
    path = tmp_path / "rules" / "a.yaml"
    path.write_text(RULES.replace("up == 0", "up ==== 0"), encoding="utf-8")
    import os

    os.utime(path, (T0, T0))  # a new mtime even within the clock's resolution
    rules = _ok(client.get("/api/v1/rules"))["groups"][0]["rules"]
    assert rules[0]["query"] == "up == 0" and rules[0]["health"] == "err"
    assert "a.yaml" in rules[0]["lastError"]


def test_targets_configured_and_scraped_with_their_health(app: Flask, client: FlaskClient) -> None:
    settings = app.extensions[EXTENSION].settings
    first_shop = stack_targets(settings, haproxy=False)[0]
    data = _ok(client.get("/api/v1/targets"))
    assert data["droppedTargets"] == []
    by_instance = {t["labels"]["instance"]: t for t in data["activeTargets"]}
    shop = by_instance["c:3"]  # seen only in the store
    assert (shop["health"], shop["scrapePool"], shop["lastScrapeDuration"]) == ("up", "shop", 0.012)
    assert shop["lastScrape"].endswith("Z") and shop["lastError"] == ""
    db = by_instance["d:4"]  # configured (collect.scrape.db) and down
    assert (db["health"], db["scrapeUrl"], db["scrapeTimeout"]) == (
        "down",
        "http://d:4/metrics",
        "2s",
    )
    assert db["lastError"]
    shop_instance = by_instance[first_shop.instance]  # the stack's shop: never scraped here
    assert (shop_instance["health"], shop_instance["lastScrape"]) == (
        "unknown",
        "0001-01-01T00:00:00Z",
    )
    assert set(_ok(client.get("/api/v1/targets?state=dropped"))) == {"droppedTargets"}


def test_targets_skip_a_stale_marker_as_no_value(store: MemoryStore, client: FlaskClient) -> None:
    # A stale marker ends a series; it is not an ``up`` value (a NaN, so "down") nor a scrape.
    import time

    before = _ok(client.get("/api/v1/targets"))["activeTargets"]
    shop = next(t for t in before if t["labels"]["instance"] == "c:3")
    store.write(
        samples=[Sample(make_labels("up", job="shop", instance="c:3"), time.time(), STALE_NAN)]
    )
    after = _ok(client.get("/api/v1/targets"))["activeTargets"]
    assert next(t for t in after if t["labels"]["instance"] == "c:3") == shop
    assert shop["health"] == "up"


def test_targets_answer_json_when_a_scrape_duration_is_nan(
    store: MemoryStore, client: FlaskClient
) -> None:
    # A NaN sample (from an odd exposition) is no JSON number: the answer stays JSON.
    import time

    took = make_labels("scrape_duration_seconds", job="shop", instance="c:3")
    store.write(samples=[Sample(took, time.time(), math.nan)])
    body = client.get("/api/v1/targets").get_data(as_text=True)
    data = json.loads(body, parse_constant=lambda name: pytest.fail(f"{name} in {body}"))
    shop = next(t for t in data["data"]["activeTargets"] if t["labels"]["instance"] == "c:3")
    assert shop["lastScrapeDuration"] == 0.0
