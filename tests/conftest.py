"""Shared fixtures: a shop app on SQLite and on the real PostgreSQL server.

Every test that uses ``app`` or ``client`` runs twice, once per database.
PostgreSQL tests need the server on 127.0.0.1:5432 (user postgres, trust);
without it they skip locally and fail when CI=true, so CI never passes by
skipping them.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from vigil.settings import Settings, from_mapping

PG_ADMIN_URL = os.environ.get("VIGIL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
ADMIN_KEY = "test-admin-key"


def sample(name: str, **labels: str) -> float:
    """A sample of the process-wide prometheus registry (0 when absent); compare deltas."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(url: str, timeout: float = 10.0, token: str | None = None) -> tuple[int, bytes]:
    """Status and body of a GET (with ``Authorization: Bearer token`` when given);
    HTTP errors are answers too, not exceptions."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        ) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wait_until(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    """Poll ``predicate`` every 0.1 s; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def privileged(*args: str) -> None:
    """Run a root-only command (``mount``, ``chattr``) for a reliability scenario.

    Without root it skips locally and fails when CI=true (CI runs as root), so CI
    never passes by skipping a scenario.
    """
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        message = f"{' '.join(args)} failed: {result.stderr.strip()} (needs root)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def consecutive_ports() -> int:
    """A free port whose successor is free too (two shop instances under ``vigil up``).

    Taken below the kernel's ephemeral range, from a block of its own per xdist
    worker, so stacks started by parallel tests can never pick overlapping pairs
    (a port bound by nobody yet is not reserved).
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    low = 20000 + int(worker or 0) * 2000
    for base in random.sample(range(low, low + 1998), 200):
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", base))
                b.bind(("127.0.0.1", base + 1))
        except OSError:
            continue
        return base
    raise AssertionError("no two consecutive free ports")


CHROMIUM = Path("/usr/bin/chromium")  # Debian's, installed by scripts/install-system-deps
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright, one per test session (xdist worker)."""
    if not CHROMIUM.exists():
        require_server("Chromium", f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def up_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment for a ``vigil up`` of its own: the repository's config,
    ``data_dir``, and every port free (shop pairs from this worker's block), so
    stacks of parallel tests never collide. ``overrides`` are added last."""
    env = dict(os.environ)
    env.update(
        {
            "VIGIL_CONFIG": str(Path(__file__).resolve().parents[1] / "config" / "vigil.yaml"),
            "VIGIL_DATA_DIR": str(data_dir),
            "VIGIL_UP_SHOP_BASE_PORT": str(consecutive_ports()),
            "VIGIL_UP_HAPROXY_PORT": str(free_port()),
            "VIGIL_UP_HAPROXY_METRICS_PORT": str(free_port()),
            "VIGIL_UP_CONTROL_PORT": str(free_port()),
            "VIGIL_COLLECT_PORT": str(free_port()),
            "VIGIL_ALERT_PORT": str(free_port()),
            "VIGIL_WEB_PORT": str(free_port()),
            "VIGIL_UP_SYSLOG_PORT": str(free_udp_port()),
            **overrides,
        }
    )
    return env


@contextlib.contextmanager
def vigil_up(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``vigil up`` with ``env`` (see :func:`up_env`), output piped; stopped with
    SIGTERM at the end, which must exit 0 (its last output is shown when it does not)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vigil.cli", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out.decode(errors="replace")[-3000:]


def require_server(name: str, reason: str) -> NoReturn:
    """Skip for a missing server locally; fail in CI (CI=true) so nothing is silently skipped."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{name} is required in CI but unavailable: {reason}")
    pytest.skip(f"{name} unavailable: {reason}")


def promtool_path() -> str:
    """Debian's promtool; skips without it, except in CI (CI=true), where that fails."""
    path = shutil.which("promtool")
    if path is None:
        require_server("promtool", "not installed (scripts/install-system-deps installs it)")
    assert path is not None
    return path


@contextlib.contextmanager
def live_server(app: Flask) -> Iterator[str]:
    """``app`` in a real threaded HTTP server on a free port, for a browser; its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


@pytest.fixture(scope="session")
def es_server() -> Iterator[Any]:
    """An osmem-server (in-memory OpenSearch-compatible) for the Elasticsearch store.

    Skips when it cannot start, except in CI (CI=true), where that fails.
    Tests take ``es_url`` (a fresh, empty clone of the server per test).
    """
    try:
        from osmem_server import OsmemServer

        server = OsmemServer.start(japanese=False)
    except Exception as exc:  # ImportError, OsmemError, OSError: all mean "no server"
        require_server("osmem-server", str(exc))
    yield server
    server.close()


@pytest.fixture
def es_url(es_server: Any) -> Iterator[str]:
    """The URL of an empty Elasticsearch-compatible cluster for one test."""
    clone = es_server.clone()
    yield clone.url
    clone.close()


def _pg_connect(dbname: str = "postgres") -> Any:
    import psycopg

    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + dbname
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


@pytest.fixture(scope="session")
def pg_available() -> str | None:
    try:
        with _pg_connect() as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return str(exc)
    return None


def _seed_into(url: str) -> None:
    from shop.server import init_database

    init_database(from_mapping({"data_dir": "/tmp", "shop": {"db": url}}))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded SQLite file, copied for each test (seeding once keeps the suite fast)."""
    path = tmp_path_factory.mktemp("template") / "shop.db"
    _seed_into(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template(pg_available: str | None) -> Iterator[str | None]:
    """A seeded PostgreSQL database used as TEMPLATE for each test's database."""
    if pg_available is not None:
        yield None
        return
    name = f"vigil_tmpl_{uuid.uuid4().hex[:12]}"
    with _pg_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        _seed_into(_pg_url(name))
        yield name
    finally:
        with _pg_connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_url(name: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{name}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(
    request: pytest.FixtureRequest, tmp_path: Path, pg_available: str | None
) -> Iterator[str]:
    """A fresh, seeded shop database URL on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "shop.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    if pg_available is not None:
        require_server("PostgreSQL on 127.0.0.1:5432", pg_available)
    template = request.getfixturevalue("pg_template")
    dropper: ThreadPoolExecutor = request.getfixturevalue("pg_dropper")
    name = f"vigil_test_{uuid.uuid4().hex[:12]}"
    with _pg_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield _pg_url(name)
    finally:
        dropper.submit(_drop_database, name)


def _drop_database(name: str) -> None:
    with _pg_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_dropper() -> Iterator[ThreadPoolExecutor]:
    """Drops finished test databases in the background, while the next tests run."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-drop") as pool:
        yield pool


def make_settings(tmp_path: Path, db_url: str, **shop: Any) -> Settings:
    shop_cfg: dict[str, Any] = {
        "db": db_url,
        "admin_api_key": ADMIN_KEY,
        "faults_enabled": True,
        "gateways": {
            # No artificial latency and no random declines: tests decide outcomes.
            "stripe": {"latency_ms": 0, "decline_rate": 0, "error_rate": 0},
            "adyen": {"latency_ms": 0, "decline_rate": 0, "error_rate": 0},
            "payu": {"latency_ms": 0, "decline_rate": 0, "error_rate": 0},
        },
    }
    shop_cfg.update(shop)
    return from_mapping({"data_dir": str(tmp_path / "data"), "shop": shop_cfg})


@pytest.fixture
def build_app(tmp_path: Path, db_url: str) -> Iterator[Callable[..., Flask]]:
    """Build apps with custom shop settings on this test's database: ``build_app(release="v2")``."""
    from shop.app import create_app

    apps: list[Flask] = []

    def build(**shop: Any) -> Flask:
        application = create_app(make_settings(tmp_path / f"app{len(apps)}", db_url, **shop))
        application.config["TESTING"] = True
        apps.append(application)
        return application

    yield build
    for application in apps:
        application.extensions["vigil.shop"].logs.close()
        application.extensions["vigil.shop"].engine.dispose()


@pytest.fixture
def settings(app: Flask) -> Settings:
    rv: Settings = app.extensions["vigil.shop"].settings
    return rv


@pytest.fixture
def app(build_app: Callable[..., Flask]) -> Flask:
    return build_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"X-API-Key": ADMIN_KEY, "X-Actor": "alice@ops"}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print what tests measured (``record_property("measured", text)``), such as the
    incident drill's time to detect and recover, so CI's log shows the figures
    even under ``-q`` and xdist."""
    lines = [
        f"{report.nodeid.split('::')[-1]}: {value}"
        for report in terminalreporter.stats.get("passed", [])
        if report.when == "call"
        for name, value in report.user_properties
        if name == "measured"
    ]
    if lines:
        terminalreporter.section("measured")
        for line in lines:
            terminalreporter.write_line(line)


def browser_login(page: Any, url: str, user: str, password: str) -> None:
    """Open ``url`` in ``page``, be sent to the login form, log in, and land back on ``url``."""
    page.goto(url)
    page.wait_for_url(re.compile(r"/login\?next="))
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(url)


def watch_console(page: Any) -> list[str]:
    """Page errors, console errors and any Content-Security-Policy report, as they happen."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def on_console(msg: Any) -> None:
        if msg.type == "error" or "Content Security Policy" in msg.text:
            errors.append(msg.text)

    page.on("console", on_console)
    return errors


def control_token(data_dir: Path) -> str:
    """The token ``vigil up`` wrote for its control API (data/run/control.token)."""
    return (data_dir / "run" / "control.token").read_text(encoding="utf-8").strip()


@pytest.fixture(scope="session")
def promql_oracle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A ``promql_oracle.Oracle``: the oracle data set in a Vigil SQLite store and in a
    real Prometheus (backfilled by promtool), started once per session.

    Skips without ``prometheus``/``promtool`` locally, fails under CI=true.
    """
    from promql_oracle import Oracle, PrometheusUnavailable

    try:
        oracle = Oracle.start(tmp_path_factory.mktemp("promql-oracle"))
    except PrometheusUnavailable as exc:
        require_server("prometheus", str(exc))
    yield oracle
    oracle.close()
