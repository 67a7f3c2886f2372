"""Playbooks against real processes: `vigil up` with haproxy, an HTTP server, SQLite."""

from __future__ import annotations

import dataclasses
import json
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import free_port, require_server, up_env, vigil_up

from playbooks.context import default_context
from playbooks.loader import find_playbook, load_playbook
from playbooks.runner import run
from siem.model import EventQuery
from siem.sqlite import SqliteStore
from vigil.deploy import roll_out
from vigil.haproxy import haproxy_binary
from vigil.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wait_until(predicate: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


def write_playbook(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Settings, dict[str, str]]]:
    """`vigil up` (two shops behind haproxy) on free ports in a temporary data dir."""
    if haproxy_binary() is None:
        require_server("haproxy", "the haproxy binary is not installed")
    env = up_env(tmp_path / "data", VIGIL_UP_SHOP_INSTANCES="2", VIGIL_SHOP_WORKERS="1")
    front = f"http://127.0.0.1:{env['VIGIL_UP_HAPROXY_PORT']}"
    with vigil_up(env):
        wait_until(lambda: get(front + "/api/version")[0] == 200)
        yield load_settings(env=env), {**env, "front": front}


def test_rollback_playbook_rolls_a_real_stack_back(
    stack: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    settings, env = stack
    store = SqliteStore(settings.store_path)
    try:
        roll_out(settings, "v2", actor="bob", store=store)
    finally:
        store.close()
    assert json.loads(get(env["front"] + "/api/version")[1])["release"] == "v2"

    # The shipped rollback step, then checks through haproxy (no collector data needed).
    shipped = find_playbook("rollback-shop").steps[0]
    path = write_playbook(
        tmp_path,
        "rollback-drill",
        f"""
        name: rollback-drill
        description: roll back, check the shop answers, report
        params:
          release: {{default: ""}}
        steps:
          - name: rollback
            action: rollback
            with: {{release: "{shipped.with_["release"]}"}}
            timeout: 2m
          - name: front-answers
            action: http
            with: {{url: "{env["front"]}/api/version", expect_status: 200}}
          - name: report
            action: report
        """,
    )
    playbook = load_playbook(path)

    lines: list[str] = []
    ctx = dataclasses.replace(default_context(settings, "carol"), out=lines.append)
    try:
        dry = run(playbook, ctx, dry_run=True)
        assert dry.exit_code == 0, lines
        assert "would roll shop-1, shop-2 from v2 to v1, one instance at a time" in dry.plans[0]
        assert json.loads(get(env["front"] + "/api/version")[1])["release"] == "v2"

        result = run(playbook, ctx, assume_yes=True)
        assert result.exit_code == 0, "\n".join(lines)
        assert result.steps[0].message == "rolled shop-1, shop-2 from v2 to v1"
        assert "releases now: shop-1 (v1), shop-2 (v1)" in result.steps[2].message

        for version in (get(env["front"] + "/api/version") for _ in range(4)):
            assert version[0] == 200 and json.loads(version[1])["release"] == "v1"

        events = ctx.store.search(EventQuery(dataset="vigil.playbook", limit=100))
        assert {e.get("labels.run_id") for e in events} == {result.run_id}
        assert len(events) == 8  # run start/end and start/end of 3 steps
        assert {e.get("user.name") for e in events} == {"carol"}
        deploys = ctx.store.search(EventQuery(dataset="vigil.deploy"))
        assert [(e.get("user.name"), e.get("labels.release_after")) for e in deploys] == [
            ("carol", "v1"),
            ("bob", "v2"),
        ]
        # The audit trail names who did what: the run, the rollback it made, the deploy before.
        audits = ctx.store.search(EventQuery(dataset="vigil.audit"))
        assert [
            (e.get("event.action"), e.get("user.name"), e.get("event.outcome")) for e in audits
        ] == [
            ("playbook-run", "carol", "success"),
            ("rollback", "carol", "success"),
            ("deploy", "bob", "success"),
        ]
    finally:
        ctx.store.close()


def test_dry_run_without_a_supervisor_says_what_is_missing(tmp_path: Path) -> None:
    settings = load_settings(
        env={"VIGIL_DATA_DIR": str(tmp_path / "data"), "VIGIL_UP_CONTROL_PORT": str(free_port())}
    )
    (tmp_path / "data").mkdir()
    lines: list[str] = []
    ctx = dataclasses.replace(default_context(settings, "dave"), out=lines.append)
    try:
        result = run(find_playbook("rollback-shop"), ctx, params={"release": "v1"}, dry_run=True)
    finally:
        ctx.store.close()
    assert result.exit_code == 1
    assert "cannot reach the vigil up supervisor" in result.aborted
    assert "is `vigil up` running?" in lines[-1]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 503 if self.path == "/down" else 200
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"{}")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(201 if json.loads(body) == {"ip": "10.0.0.9"} else 400)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_action_checks_status_against_a_real_server(http_server: str, tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}/"
    path = write_playbook(
        tmp_path,
        "probe",
        f"""
        name: probe
        steps:
          - name: up
            action: http
            with: {{url: "{http_server}/healthz"}}
          - name: block
            action: http
            with: {{url: "{http_server}/block", method: POST, body: {{ip: 10.0.0.9}},
                    expect_status: [201, 202]}}
          - name: down
            action: http
            with: {{url: "{http_server}/down", expect_status: 200}}
            continue_on_error: true
          - name: closed
            action: http
            with: {{url: "{closed}", timeout: 2s}}
        """,
    )
    settings = load_settings(env={"VIGIL_DATA_DIR": str(tmp_path / "data")})
    (tmp_path / "data").mkdir()
    lines: list[str] = []
    ctx = dataclasses.replace(default_context(settings, "erin"), out=lines.append)
    try:
        result = run(load_playbook(path), ctx, assume_yes=True)
        stored = ctx.store.search(EventQuery(dataset="vigil.playbook", limit=100))
    finally:
        ctx.store.close()
    assert [s.outcome for s in result.steps] == ["success", "success", "failure", "failure"]
    assert result.steps[1].message == f"POST {http_server}/block answered 201"
    assert result.steps[2].message == f"GET {http_server}/down answered 503, expected 200"
    assert result.steps[3].message.startswith(f"GET {closed}: ")
    assert result.exit_code == 1
    failed = [e for e in stored if e.get("event.outcome") == "failure"]
    assert {e.get("labels.step") for e in failed} == {"down", "closed", None}
