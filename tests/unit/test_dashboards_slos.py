"""The SLO pages' API and pages: numbers from the recorded error ratios, the SLO's alerts,
viewer access, and 404 for an unknown SLO."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from slo_data import SHIPPED_SLOS, seed_slo_store

from dashboards.app import create_app
from siem.memory import MemoryStore
from vigil.auth import UserStore
from vigil.settings import from_mapping


@pytest.fixture(scope="module")
def store() -> MemoryStore:
    rv = MemoryStore()
    seed_slo_store(rv, time.time())
    return rv


def _client(tmp_path: Path, store: MemoryStore, slos: list[str]) -> FlaskClient:
    _, token = UserStore(tmp_path / "users.db").create_token("reader", "viewer")
    settings = from_mapping({"data_dir": str(tmp_path), "alert": {"slos": slos}})
    client = create_app(settings, store=store).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def _windows(slo: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (series,) = slo["series"]
    return {w["window"]: w for w in series["windows"]}


def test_slo_api_reports_budget_burn_rates_and_alerts(tmp_path: Path, store: MemoryStore) -> None:
    client = _client(tmp_path, store, [str(SHIPPED_SLOS)])
    rv = client.get("/api/slos/checkout-availability")
    assert rv.status_code == 200, rv.data
    slo = rv.json["data"]
    assert slo["objective"] == 99.5 and slo["window"] == "30d"
    assert slo["error_budget"] == pytest.approx(0.005)
    windows = _windows(slo)
    assert list(windows) == ["5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"]
    for window in windows.values():  # 10% errors throughout: 20x the budget everywhere
        assert window["error_ratio"] == pytest.approx(0.10)
        assert window["burn_rate"] == pytest.approx(20.0)
    assert slo["series"][0]["budget_remaining"] == pytest.approx(-19.0)
    assert [
        (t["severity"], t["burn_rate"], t["long_window"], t["short_window"])
        for t in slo["thresholds"]
    ] == [
        ("page", 14.4, "1h", "5m"),
        ("page", 6.0, "6h", "30m"),
        ("ticket", 3.0, "1d", "2h"),
        ("ticket", 1.0, "3d", "6h"),
    ]
    assert slo["alertnames"] == {
        "page": "CheckoutAvailabilityFastBurn",
        "ticket": "CheckoutAvailabilitySlowBurn",
    }
    alerts = {(a["labels"]["alertname"], a["state"]) for a in slo["alerts"]}
    assert alerts == {
        ("CheckoutAvailabilityFastBurn", "firing"),
        ("CheckoutAvailabilitySlowBurn", "firing"),
    }


def test_slo_list_has_every_slo_and_only_its_own_alerts(tmp_path: Path, store: MemoryStore) -> None:
    client = _client(tmp_path, store, [str(SHIPPED_SLOS)])
    slos = {s["name"]: s for s in client.get("/api/slos").json["data"]["slos"]}
    assert list(slos) == ["checkout-availability", "checkout-latency"]
    latency = slos["checkout-latency"]
    assert latency["series"][0]["budget_remaining"] == pytest.approx(0.5)
    assert _windows(latency)["1h"]["burn_rate"] == pytest.approx(0.5)
    assert latency["alerts"] == []


def test_slo_pages_and_errors(tmp_path: Path, store: MemoryStore) -> None:
    client = _client(tmp_path, store, [str(SHIPPED_SLOS)])
    for path in ("/slos", "/slos/checkout-latency"):
        page = client.get(path)
        assert page.status_code == 200
        assert b'aria-current="page">SLOs</a>' in page.data
    assert client.get("/slos/no-such").status_code == 404
    assert client.get("/api/slos/no-such").status_code == 404
    assert client.get("/api/slos/..%2fx").status_code == 404
    anonymous = create_app(
        from_mapping({"data_dir": str(tmp_path), "alert": {"slos": [str(SHIPPED_SLOS)]}}),
        store=store,
    ).test_client()
    assert anonymous.get("/api/slos").status_code == 401


def test_a_broken_slo_file_shows_no_slos(tmp_path: Path, store: MemoryStore) -> None:
    bad = tmp_path / "slos.yaml"
    bad.write_text("slos: [{name: x}]\n", encoding="utf-8")
    client = _client(tmp_path, store, [str(bad)])
    rv = client.get("/api/slos")
    assert rv.status_code == 200
    assert rv.json["data"]["slos"] == []


def test_prometheus_rules_api_lists_the_generated_slo_rules(
    tmp_path: Path, store: MemoryStore
) -> None:
    """Grafana's rule list (/api/v1/rules) shows the SLO rules `vigil alert` runs."""
    client = _client(tmp_path, store, [str(SHIPPED_SLOS)])
    groups = {g["name"]: g for g in client.get("/api/v1/rules").json["data"]["groups"]}
    long = groups["slo-checkout-availability-long"]
    assert long["interval"] == 60
    ticket = next(r for r in long["rules"] if r["name"] == "CheckoutAvailabilitySlowBurn")
    assert ticket["state"] == "firing"
