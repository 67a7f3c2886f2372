"""`vigil up` on a PostgreSQL shop collects everything with no configuration but the URL.

A real `vigil up` (shops, haproxy, collector, alerting, web) on a fresh
database of the real PostgreSQL server on 127.0.0.1:5432: the collector polls
the server (postgres_exporter metrics), tails the server log it found by
asking the server (Debian's /var/log/postgresql/postgresql-15-main.log here),
receives haproxy's HTTP log over syslog UDP (`up.syslog_port`), and computes
the payment funnel and the reconciliation with the gateways' ledgers, which
live in the same database. Everything is checked in the store (data/siem.db).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import PG_ADMIN_URL, require_server, up_env, vigil_up

from siem.model import Event, EventQuery, Matcher
from siem.sqlite import SqliteStore
from vigil.haproxy import HaproxyAdmin, HaproxyError, haproxy_binary

REPO = Path(__file__).resolve().parents[2]
ADMIN = {"X-API-Key": "test-admin-key", "X-Actor": "alice@ops"}
DECLINED = "4000000000000002"
# Distinct valid cards, so the fraud check's per-card velocity limit stays out of the way.
CARDS = ("4242424242424242", "5555555555554444", "4000056655665556")


def call(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:
            return resp.status, _json(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, _json(err.read())


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode(errors="replace")  # haproxy's own 503 page


def poll(what: str, found: Callable[[], Any], timeout: float) -> Any:
    """``found()`` once it is truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = found()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


@pytest.fixture
def database(pg_available: str | None) -> Iterator[str]:
    """A fresh, empty database (`vigil up` creates and seeds the shop's tables)."""
    if pg_available is not None:
        require_server("PostgreSQL on 127.0.0.1:5432", pg_available)
    name = f"vigil_up_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def stack(tmp_path: Path, database: str) -> Iterator[dict[str, str]]:
    if haproxy_binary() is None:
        require_server("haproxy", "the haproxy binary is not installed")
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    env = up_env(
        tmp_path / "data",
        VIGIL_SHOP_DB=f"{base}/{database}",
        VIGIL_UP_SHOP_INSTANCES="2",
        VIGIL_SHOP_WORKERS="1",
        VIGIL_STORE_BACKEND="sqlite",
        VIGIL_SHOP_ADMIN_KEY=ADMIN["X-API-Key"],
        VIGIL_SHOP_FAULTS_ENABLED="true",
        VIGIL_COLLECT_INTERVAL="1",
        VIGIL_COLLECT_PAYMENTS_INTERVAL="2",
        # Settle time of a checkout before reconciliation judges it: short, so the
        # injected fault is reported within the test's wait.
        VIGIL_COLLECT_PAYMENTS_GRACE="3",
    )
    front = f"http://127.0.0.1:{env['VIGIL_UP_HAPROXY_PORT']}"

    def serving() -> bool:
        if proc.poll() is not None:  # its output is shown as vigil_up() stops
            raise AssertionError(f"vigil up exited with {proc.returncode}")
        try:
            if call("GET", front + "/api/version")[0] != 200:
                return False
            # haproxy's health checks must see both instances before the test begins.
            states = HaproxyAdmin(tmp_path / "data" / "run" / "haproxy.sock").states()
            return len(states) == 2 and set(states.values()) == {"UP"}
        except (OSError, HaproxyError):
            return False

    with vigil_up(env) as proc:
        poll("the shop behind haproxy", serving, 60)
        yield {**env, "front": front, "database": database}


def checkout(front: str, gateway: str, card: str) -> tuple[int, Any]:
    _, products = call("GET", front + "/api/products?per_page=1")
    _, cart = call("POST", front + "/api/carts")
    item = {"product_id": products["items"][0]["id"], "quantity": 1}
    status, _ = call("POST", f"{front}/api/carts/{cart['cart_id']}/items", item)
    assert status in (200, 201)
    return call(
        "POST",
        front + "/api/checkout",
        {
            "cart_id": cart["cart_id"],
            "email": "ann@example.com",
            "currency": "EUR",
            "gateway": gateway,
            "card": {"number": card, "expiry": "10/37", "cvc": "123"},
        },
    )


def events(store_path: Path, dataset: str, kql: str | None = None) -> list[Event]:
    store = SqliteStore(store_path)
    try:
        return store.search(EventQuery(dataset=dataset, kql=kql, limit=1000))
    finally:
        store.close()


def latest(store_path: Path, name: str, **labels: str) -> dict[tuple[str, ...], float]:
    """The newest value of each series ``name{labels}``, keyed by its other labels' values."""
    now = time.time()
    matchers = [Matcher("__name__", "=", name)]
    matchers += [Matcher(k, "=", v) for k, v in labels.items()]
    store = SqliteStore(store_path)
    try:
        found = store.select(matchers, now - 600, now + 60)
    finally:
        store.close()
    return {
        tuple(v for k, v in s.labels if k != "__name__" and k not in labels): s.points[-1][1]
        for s in found
        if s.points
    }


def test_up_on_postgresql_collects_metrics_server_log_haproxy_log_and_payments(
    stack: dict[str, str],
) -> None:
    front = stack["front"]
    store_path = Path(stack["VIGIL_DATA_DIR"]) / "siem.db"
    marker = uuid.uuid4().hex[:12]

    # Requests through haproxy: a few marked ones, and checkouts (random declines
    # are the simulators' own: what the shop answered is what the funnel must count).
    for _ in range(3):
        assert call("GET", f"{front}/api/version?probe={marker}")[0] == 200
    answers = [checkout(front, "stripe", card)[0] for card in CARDS[:2]]
    answers.append(checkout(front, "adyen", CARDS[2])[0])
    assert set(answers) <= {201, 402}, answers
    # The ledger fault: payu captures a payment it declined (a capture without an order).
    status, _ = call(
        "PUT", front + "/api/admin/faults", {"ledger_faults": ["capture_without_order"]}, ADMIN
    )
    assert status == 200
    time.sleep(1.2)  # each shop instance re-reads the faults at most once a second
    assert checkout(front, "payu", DECLINED)[0] == 402
    _, cancelled = call("GET", front + "/api/admin/orders?status=cancelled", headers=ADMIN)
    (charged,) = [o["order_id"] for o in cancelled["orders"] if o["gateway"] == "payu"]

    # A statement error in the test's database, for the server log.
    with (
        psycopg.connect(
            PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + stack["database"], autocommit=True
        ) as conn,
        pytest.raises(psycopg.errors.DivisionByZero),
    ):
        conn.execute(f"SELECT 1/0 AS vigil_{marker}")

    # PostgreSQL metrics, polled from the shop's database.
    instance = "127.0.0.1:5432"
    assert poll(
        "pg_up 1",
        lambda: latest(store_path, "pg_up", job="postgres", instance=instance).get(()) == 1,
        30,
    )
    assert latest(store_path, "up", job="postgres", instance=instance)[()] == 1
    commits = latest(store_path, "pg_stat_database_xact_commit", datname=stack["database"])
    assert commits and all(v > 0 for v in commits.values()), commits

    # The server log, found by asking the server: the error with its statement.
    (failed,) = poll(
        "the statement error in the PostgreSQL server log",
        lambda: (
            events(store_path, "postgresql.log", f'postgresql.log.query:"*vigil_{marker}*"')
            or [
                e
                for e in events(store_path, "postgresql.log", "log.level:error")
                if marker in str(e.get("postgresql.log.query"))
            ]
        ),
        30,
    )
    assert failed.get("error.message") == "division by zero"
    assert failed.get("postgresql.log.database") == stack["database"]
    assert failed.get("user.name") == "postgres"
    assert failed.get("event.outcome") == "failure"

    # haproxy's HTTP log over syslog UDP: the marked requests, with status and timers.
    def marked_requests() -> list[Event]:
        found = [
            e for e in events(store_path, "haproxy.log") if marker in str(e.get("url.original"))
        ]
        return found if len(found) >= 3 else []

    marked = poll("haproxy.log events of the marked requests", marked_requests, 30)
    for event in marked:
        assert event.get("http.response.status_code") == 200
        assert event.get("http.request.method") == "GET"
        assert event.get("haproxy.backend_name") == "shop"
        assert isinstance(event.get("haproxy.total_waiting_time_ms"), int)
        assert event.get("event.duration") >= 0
    checkouts = [
        e.get("http.response.status_code")
        for e in events(store_path, "haproxy.log")
        if e.get("url.original") == "/api/checkout"
    ]
    assert sorted(checkouts) == sorted([*answers, 402])

    # The payment funnel, from the shop's payment events.
    expected_attempts = {("adyen",): 1.0, ("payu",): 1.0, ("stripe",): 2.0}
    poll(
        "the payment funnel",
        lambda: latest(store_path, "vigil_payments_attempts_total") == expected_attempts,
        30,
    )
    authorised = latest(store_path, "vigil_payments_authorised_total")
    assert authorised == {
        ("adyen",): float(answers[2] == 201),
        ("payu",): 0.0,
        ("stripe",): float(answers[:2].count(201)),
    }

    # The reconciliation with payu's ledger, in the same PostgreSQL database.
    (found,) = poll(
        "the reconciliation event",
        lambda: events(store_path, "payments.reconciliation"),
        30,
    )
    assert found.get("event.action") == "capture_without_order"
    assert found.get("labels.gateway") == "payu"
    assert found.get("labels.order_id") == charged
