"""PCI DSS through the real app: a card number a client sends never reaches a log file whole."""

from __future__ import annotations

import json
from typing import Any

from conftest import ADMIN_KEY, sample
from flask import Flask
from flask.testing import FlaskClient

PAN = "4111111111111111"
MASKED = "411111******1111"
# Luhn-invalid on purpose: masked all the same.
TYPO = "5500 0000 0000 0005"
TYPO_MASKED = "5500 00** **** 0005"


def _log(app: Flask, dataset: str) -> tuple[str, list[dict[str, Any]]]:
    path = app.extensions["vigil.shop"].settings.log_dir / f"{dataset}.log"
    raw = path.read_text(encoding="utf-8")
    return raw, [json.loads(line) for line in raw.splitlines()]


def _all_logs(app: Flask) -> str:
    log_dir = app.extensions["vigil.shop"].settings.log_dir
    return "".join(p.read_text(encoding="utf-8") for p in sorted(log_dir.glob("*.log")))


def _assert_no_pan(app: Flask) -> None:
    logs = _all_logs(app)
    for digits in (PAN, TYPO, TYPO.replace(" ", ""), TYPO.replace(" ", "+")):
        assert digits not in logs


def test_log_scrub_pan_in_url_path(client: FlaskClient, app: Flask) -> None:
    before = sample("shop_log_pans_masked_total", dataset="access")
    assert client.get(f"/api/orders/{PAN}").status_code == 404
    _, events = _log(app, "access")
    last = events[-1]
    assert last["url"]["path"] == f"/api/orders/{MASKED}"
    assert last["url"]["original"] == f"/api/orders/{MASKED}"
    assert last["message"] == f"GET /api/orders/{MASKED} 404"
    assert sample("shop_log_pans_masked_total", dataset="access") > before
    _assert_no_pan(app)


def test_log_scrub_pan_in_query_string(client: FlaskClient, app: Flask) -> None:
    assert client.get("/api/products", query_string={"q": TYPO, "card": PAN}).status_code == 200
    _, events = _log(app, "access")
    # Query strings are logged URL-encoded: the spaces are "+" there.
    assert events[-1]["url"]["original"] == f"/api/products?q=5500+00**+****+0005&card={MASKED}"
    _assert_no_pan(app)


def test_log_scrub_pan_in_json_body_audit(client: FlaskClient, app: Flask) -> None:
    rv = client.patch(
        "/api/admin/products/1",
        json={"names": {"en": f"Gift card {TYPO}"}},
        headers={"X-API-Key": ADMIN_KEY, "X-Actor": f"ops {PAN}"},
    )
    assert rv.status_code == 200
    _, events = _log(app, "audit")
    last = events[-1]
    assert last["audit"]["after"]["names"]["en"] == f"Gift card {TYPO_MASKED}"
    assert last["user"]["name"] == f"ops {MASKED}"
    assert MASKED in last["message"]
    _assert_no_pan(app)


def test_log_scrub_pan_in_login_email(client: FlaskClient, app: Flask) -> None:
    rv = client.post("/api/login", json={"email": f"{PAN}@example.com", "password": "whatever1"})
    assert rv.status_code == 401
    _, events = _log(app, "auth")
    assert events[-1]["user"]["name"] == f"{MASKED}@example.com"
    assert events[-1]["message"] == f"login failed for {MASKED}@example.com: unknown user"
    _assert_no_pan(app)


def test_log_scrub_pan_in_error_message(build_app: Any) -> None:
    app = build_app()

    # A handler whose exception repeats client input: its message and trace go to app.log.
    @app.get("/echo/<card>")
    def _echo(card: str) -> str:
        raise RuntimeError(f"cannot handle card {card}")

    client = app.test_client()
    assert client.get(f"/echo/{TYPO}").status_code == 500
    _, events = _log(app, "app")
    last = events[-1]
    assert TYPO_MASKED in last["message"]
    assert TYPO_MASKED in last["error"]["message"]
    assert TYPO_MASKED in last["error"]["stack_trace"]
    _assert_no_pan(app)
