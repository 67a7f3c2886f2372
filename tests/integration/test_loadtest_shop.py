"""``vigil loadtest`` against a real shop under gunicorn, run as a child process.

Locust monkey-patches its process with gevent, so the load test always runs in
a subprocess here, never inside pytest.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port

from siem.model import EventQuery
from siem.sqlite import SqliteStore
from vigil.settings import load_settings

REPO = Path(__file__).resolve().parents[2]

# Gateways without random declines or errors, so a healthy shop passes every gate.
SHOP_CONFIG = """\
shop:
  gateways:
    stripe: {latency_ms: 20, decline_rate: 0, error_rate: 0}
    adyen: {latency_ms: 20, decline_rate: 0, error_rate: 0}
    payu: {latency_ms: 20, decline_rate: 0, error_rate: 0}
"""


def wait_ready(base: str, proc: subprocess.Popen[bytes], deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"shop exited early with {proc.returncode}")
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("shop did not become ready in time")


@pytest.fixture(scope="module")
def shop(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    """A healthy shop (v1, SQLite) and the environment for ``loadtest`` runs against it."""
    tmp = tmp_path_factory.mktemp("loadtest")
    db = tmp / "shop.db"
    shutil.copyfile(sqlite_template, db)
    config = tmp / "vigil.yaml"
    config.write_text(SHOP_CONFIG, encoding="utf-8")
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "VIGIL_CONFIG": str(config),
            "VIGIL_DATA_DIR": str(tmp / "data"),
            "VIGIL_SHOP_DB": f"sqlite:///{db}",
            "VIGIL_SHOP_PORT": str(port),
            "VIGIL_SHOP_WORKERS": "2",
            "VIGIL_SHOP_RELEASE": "v1",
            "VIGIL_SMTP_PORT": str(free_port()),
        }
    )
    with (tmp / "shop.out").open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vigil.cli", "shop", "serve"],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base, proc)
            yield base, env
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise


def loadtest(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtests", "loadtest", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_loadtest_smoke_passes_against_healthy_shop(shop: tuple[str, dict[str, str]]) -> None:
    base, env = shop
    done = loadtest(env, "smoke", "--host", base, "--duration", "10s", "--users", "10")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    out = done.stdout
    assert "load test smoke against" in out and "(release v1)" in out
    for route in ("GET /api/products", "POST /api/carts/[id]/items", "POST /api/checkout"):
        assert route in out
    assert "PASS: smoke" in out
    assert "no earlier passing run of smoke to compare with" in out
    (saved,) = (Path(env["VIGIL_DATA_DIR"]) / "loadtests").glob("*-smoke.json")
    doc = json.loads(saved.read_text(encoding="utf-8"))
    assert doc["result"]["checkout_success_ratio"] > 0
    assert doc["result"]["checkouts"]["paid"] > 0
    assert doc["result"]["total"]["requests"] > 0
    assert all(g["passed"] for g in doc["gates"])

    # The run is recorded in the store as one loadtest.run event.
    store_path = load_settings(env["VIGIL_CONFIG"], env=env).store_path
    store = SqliteStore(store_path)
    try:
        (event,) = store.search(
            EventQuery(dataset="loadtest.run", equals=(("labels.profile", "smoke"),))
        )
    finally:
        store.close()
    assert event.get("event.outcome") == "success" and event.get("labels.release") == "v1"
    assert event.get("url.full") == base
    assert event.get("loadtest.result_file") == str(saved.resolve())
    assert event.get("loadtest.requests") == doc["result"]["total"]["requests"]
    assert {g["name"] for g in event.get("loadtest.gates")} == {
        "p95_ms",
        "error_ratio",
        "checkout_success_ratio",
    }

    # A second, shorter run is compared with the first; its own gates decide its exit code.
    again = loadtest(env, "smoke", "--host", base, "--duration", "4s", "--users", "10")
    assert again.returncode in (0, 1), again.stdout + again.stderr[-3000:]
    assert f"compared with the last passing run of smoke: {saved.name}" in again.stdout
    table = again.stdout.split("compared with", 1)[1]
    assert "GET /api/products" in table and "all routes" in table and " → " in table
    store = SqliteStore(store_path)
    try:
        events = store.search(
            EventQuery(dataset="loadtest.run", equals=(("labels.profile", "smoke"),))
        )
    finally:
        store.close()
    assert len(events) == 2
    assert events[0].get("loadtest.baseline") == saved.name


def test_loadtest_failing_gate_exits_1(shop: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    base, env = shop
    profile = tmp_path / "impossible.yaml"
    profile.write_text(
        "users: 2\nspawn_rate: 2\nduration: 3s\ngates:\n  p95_ms: 1\n", encoding="utf-8"
    )
    done = loadtest(env, str(profile), "--host", base)
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    assert "FAIL: impossible" in done.stdout
    gate_line = next(line for line in done.stdout.splitlines() if line.startswith("p95_ms"))
    assert gate_line.split()[-3:] == ["<=", "1", "FAIL"]


def test_loadtest_unreachable_host_exits_2(shop: tuple[str, dict[str, str]]) -> None:
    _, env = shop
    done = loadtest(env, "smoke", "--host", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 2
    assert "does not answer" in done.stderr
