"""``vigil up`` with real haproxy: rolling deploys without failed requests, restarts, shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import control_token, http_get, require_server, up_env, vigil_up

from siem.model import EventQuery
from siem.sqlite import SqliteStore
from vigil.auth import UserStore
from vigil.deploy import previous_release, roll_out
from vigil.haproxy import HaproxyAdmin, haproxy_binary
from vigil.settings import load_settings

REPO = Path(__file__).resolve().parents[2]


def wait_for(predicate: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, str]]:
    if haproxy_binary() is None:
        require_server("haproxy", "the haproxy binary is not installed")
    env = up_env(
        tmp_path / "data",
        VIGIL_UP_SHOP_INSTANCES="2",
        VIGIL_SHOP_WORKERS="1",
        VIGIL_STORE_BACKEND="sqlite",
    )
    front = f"http://127.0.0.1:{env['VIGIL_UP_HAPROXY_PORT']}"
    with vigil_up(env):
        wait_for(lambda: http_get(front + "/api/version")[0] == 200)
        # haproxy's health checks must see both instances before the tests begin.
        admin = HaproxyAdmin(tmp_path / "data" / "run" / "haproxy.sock")
        wait_for(lambda: set(admin.states().values()) == {"UP"} and len(admin.states()) == 2)
        # A viewer's API token for the dashboards' JSON API.
        _, web_token = UserStore(tmp_path / "data" / "users.db").create_token("tests", "viewer")
        yield {
            **env,
            "front": front,
            "control": f"http://127.0.0.1:{env['VIGIL_UP_CONTROL_PORT']}",
            "web_token": web_token,
        }


def instances(stack: dict[str, str]) -> list[dict[str, object]]:
    token = control_token(Path(stack["VIGIL_DATA_DIR"]))
    body = http_get(stack["control"] + "/api/instances", token=token)[1]
    rv: list[dict[str, object]] = json.loads(body)["instances"]
    return rv


def test_up_rolling_deploy_loses_no_request(stack: dict[str, str]) -> None:
    statuses: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            statuses.append(http_get(stack["front"] + "/api/version")[0])

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        deploy = subprocess.run(
            [sys.executable, "-m", "vigil.cli", "deploy", "--release", "v2", "--actor", "bob"],
            env=stack,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        stop.set()
        worker.join()
    assert deploy.returncode == 0, deploy.stderr
    assert "deployed v2 (was v1)" in deploy.stdout
    assert {i["release"] for i in instances(stack)} == {"v2"}
    assert json.loads(http_get(stack["front"] + "/api/version")[1])["release"] == "v2"
    # Each instance was drained in haproxy before its restart: nothing failed.
    assert len(statuses) > 20
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}

    store = SqliteStore(Path(stack["VIGIL_DATA_DIR"]) / "siem.db")
    (event,) = store.search(EventQuery(dataset="vigil.deploy"))
    audits = store.search(EventQuery(dataset="vigil.audit", equals=(("event.action", "deploy"),)))
    store.close()
    assert event.get("user.name") == "bob"
    assert [(a.get("user.name"), a.get("event.outcome")) for a in audits] == [("bob", "success")]
    assert (event.get("labels.release_before"), event.get("labels.release_after")) == (
        "v1",
        "v2",
    )


def test_up_scrapes_haproxy_exporter(stack: dict[str, str]) -> None:
    """haproxy's own metrics reach the store as job haproxy, queryable like the shop's."""
    web = f"http://127.0.0.1:{stack['VIGIL_WEB_PORT']}"

    def query(expr: str) -> list[dict[str, object]]:
        url = f"{web}/api/query?query={urllib.parse.quote(expr)}"
        status, body = http_get(url, token=stack["web_token"])
        assert status == 200, body
        rv: list[dict[str, object]] = json.loads(body)["data"]["result"]
        return rv

    wait_for(lambda: [r["value"][1] for r in query('up{job="haproxy"}')] == ["1"], timeout=60)  # type: ignore[index]
    # Once a scrape after haproxy's health checks passed is stored, both servers are UP.
    up_servers = 'haproxy_server_status{job="haproxy", proxy="shop", state="UP"} == 1'
    wait_for(
        lambda: sorted(r["metric"]["server"] for r in query(up_servers)) == ["shop-1", "shop-2"],  # type: ignore[index]
        timeout=30,
    )


def test_up_restarts_a_crashed_shop(stack: dict[str, str]) -> None:
    victim = instances(stack)[0]
    os.kill(int(victim["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
    wait_for(
        lambda: (
            instances(stack)[0]["pid"] != victim["pid"]
            and instances(stack)[0]["state"] == "running"
        )
    )
    assert instances(stack)[0]["restarts"] == 1
    wait_for(lambda: http_get(f"http://127.0.0.1:{victim['port']}/readyz")[0] == 200)
    metrics = http_get(stack["control"] + "/metrics")[1].decode()
    assert f'vigil_supervisor_restarts_total{{child="{victim["name"]}"}} 1.0' in metrics


def test_up_deploy_unknown_release_is_refused(stack: dict[str, str]) -> None:
    deploy = subprocess.run(
        [sys.executable, "-m", "vigil.cli", "deploy", "--release", "v9"],
        env=stack,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert deploy.returncode == 2
    assert "unknown release 'v9'" in deploy.stderr
    assert {i["release"] for i in instances(stack)} == {"v1"}


def test_up_previous_release_ignores_rollbacks(stack: dict[str, str]) -> None:
    deploy = subprocess.run(
        [sys.executable, "-m", "vigil.cli", "deploy", "--release", "v2"],
        env=stack,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert deploy.returncode == 0, deploy.stderr
    settings = load_settings(stack["VIGIL_CONFIG"], env=stack)
    store = SqliteStore(Path(stack["VIGIL_DATA_DIR"]) / "siem.db")
    try:
        assert previous_release(store) == "v1"
        roll_out(settings, "v1", actor="carol", store=store, action="rollback")
        # A second rollback must not go "back" to v2, the release the first one left.
        assert previous_release(store) == "v1"
        actions = [e.get("event.action") for e in store.search(EventQuery(dataset="vigil.deploy"))]
        assert actions == ["rollback", "deploy"]
    finally:
        store.close()
    assert {i["release"] for i in instances(stack)} == {"v1"}


def _post_release(url: str, headers: dict[str, str]) -> int:
    body = json.dumps({"release": "v2"}).encode()
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_up_control_api_refuses_anonymous_and_rebound_requests(stack: dict[str, str]) -> None:
    """What any local process, or a page through DNS rebinding, could do on main: roll a release."""
    url = stack["control"] + "/api/instances/shop-1/release"
    token = control_token(Path(stack["VIGIL_DATA_DIR"]))
    path = Path(stack["VIGIL_DATA_DIR"]) / "run" / "control.token"
    assert path.stat().st_mode & 0o777 == 0o600
    assert _post_release(url, {}) == 401
    assert _post_release(url, {"Authorization": "Bearer guessed"}) == 401
    # The browser sends the rebound name as Host, whatever the token.
    rebound = {"Host": f"attacker.example:{stack['VIGIL_UP_CONTROL_PORT']}"}
    assert _post_release(url, {**rebound, "Authorization": f"Bearer {token}"}) == 421
    assert http_get(stack["control"] + "/api/instances")[0] == 401
    assert {i["release"] for i in instances(stack)} == {"v1"}
    # The supervisor's health and metrics stay public (probes and the collector).
    assert http_get(stack["control"] + "/healthz")[0] == 200
