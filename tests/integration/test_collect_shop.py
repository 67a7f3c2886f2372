"""The collector against a real shop under gunicorn: scrape, tail, restart, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from test_shop_server import get, wait_ready

from collectors.ecs import ERROR_DATASET
from collectors.loop import Collector
from siem.memory import MemoryStore
from siem.model import Event, EventQuery, Matcher, Store
from vigil.settings import from_mapping

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A shop on a free port: its ``host:port`` and its log dir."""
    data = tmp_path_factory.mktemp("shop") / "data"
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "VIGIL_CONFIG": str(REPO / "config" / "vigil.yaml"),
            "VIGIL_DATA_DIR": str(data),
            "VIGIL_SHOP_PORT": str(port),
            "VIGIL_SHOP_WORKERS": "1",
            "VIGIL_SMTP_PORT": str(free_port()),
        }
    )
    env.pop("VIGIL_SHOP_DB", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vigil.cli", "shop", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        yield f"127.0.0.1:{port}", data / "logs"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


def collector_for(
    tmp_path: Path, target: str, logs: Path, store: Store, **jobs: list[str]
) -> tuple[Collector, CollectorRegistry]:
    registry = CollectorRegistry()
    settings = from_mapping(
        {
            "data_dir": str(tmp_path),
            "collect": {
                "scrape_stack": False,
                "scrape": {
                    "shop": {"targets": [target]},
                    **{k: {"targets": v} for k, v in jobs.items()},
                },
                "tail": [str(logs / "*.log")],
            },
        }
    )
    return Collector(settings, store, registry=registry), registry


def value(store: Store, name: str, **labels: str) -> float:
    matchers = [Matcher("__name__", "=", name)] + [Matcher(k, "=", v) for k, v in labels.items()]
    (series,) = store.select(matchers, 0, 1e12)
    return series.points[-1][1]


def access_events(store: Store, path: str) -> list[Event]:
    query = EventQuery(dataset="shop.access", equals=(("url.original", path),), limit=1000)
    return store.search(query)


def test_collect_shop_scrapes_metrics_and_tails_access_log(
    shop: tuple[str, Path], tmp_path: Path
) -> None:
    target, logs = shop
    path = f"/api/version?probe={tmp_path.name}"
    for _ in range(3):
        assert get(f"http://{target}{path}")[0] == 200
    dead = f"127.0.0.1:{free_port()}"
    store = MemoryStore()
    collector, registry = collector_for(tmp_path, target, logs, store, dead=[dead])
    assert collector.run_once()

    assert value(store, "up", job="shop", instance=target) == 1.0
    assert value(store, "up", job="dead", instance=dead) == 0.0
    assert registry.get_sample_value("vigil_collector_scrape_errors_total", {"job": "dead"}) == 1
    requests = value(
        store,
        "shop_http_requests_total",
        job="shop",
        instance=target,
        method="GET",
        route="/api/version",
        status="200",
    )
    assert requests >= 3
    assert value(store, "scrape_samples_scraped", job="shop", instance=target) > 10

    events = access_events(store, path)
    assert len(events) == 3
    event = events[0]
    assert event.get("http.request.method") == "GET"
    assert event.get("http.response.status_code") == 200
    assert event.get("log.file.path") == str((logs / "access.log").resolve())
    assert (registry.get_sample_value("vigil_collector_events_total") or 0) >= 3


def test_collect_shop_restart_stores_no_duplicates(shop: tuple[str, Path], tmp_path: Path) -> None:
    target, logs = shop
    path = f"/api/version?probe={tmp_path.name}"
    get(f"http://{target}{path}")
    store = MemoryStore()
    first, _ = collector_for(tmp_path, target, logs, store)
    assert first.run_once()
    stored = len(store.search(EventQuery(limit=100_000)))

    get(f"http://{target}{path}")
    restarted, registry = collector_for(tmp_path, target, logs, store)
    assert restarted.run_once()
    assert len(access_events(store, path)) == 2
    assert registry.get_sample_value("vigil_collector_duplicate_events_total") == 0

    # Checkpoints lost: everything is read again, and stored once.
    (tmp_path / "collect-checkpoints.json").unlink()
    again, registry = collector_for(tmp_path, target, logs, store)
    total_before = len(store.search(EventQuery(limit=100_000)))
    assert total_before > stored
    assert again.run_once()
    # Every stored event came from these files, so each is re-read as a duplicate.
    assert registry.get_sample_value("vigil_collector_duplicate_events_total") == total_before
    assert len(access_events(store, path)) == 2


def test_collect_shop_garbage_line_becomes_error_event(
    shop: tuple[str, Path], tmp_path: Path
) -> None:
    target, logs = shop
    store = MemoryStore()
    collector, registry = collector_for(tmp_path, target, logs, store)
    assert collector.run_once()
    garbage = f"GARBAGE {tmp_path.name} <<not json>>"
    with (logs / "access.log").open("a") as fh:
        fh.write(garbage + "\n")
    assert collector.run_once()
    errors = store.search(EventQuery(dataset=ERROR_DATASET, limit=1000))
    mine = [e for e in errors if e.get("event.original") == garbage]
    assert len(mine) == 1
    assert "not JSON" in mine[0].get("error.message")
    assert registry.get_sample_value("vigil_collector_parse_errors_total") == 1


# ``vigil collect`` before the lead wires collectors.cli into vigil/cli.py.
def cli(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "vigil.cli", "--config", str(config), "collect", *args]


def write_config(tmp_path: Path, target: str, logs: Path) -> Path:
    config = tmp_path / "vigil.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            collect:
              scrape_stack: false
              interval_s: 0.2
              scrape:
                shop:
                  targets: ["{target}"]
              tail: ["{logs}/*.log"]
            """
        )
    )
    return config


def test_collect_shop_cli_once_writes_sqlite(shop: tuple[str, Path], tmp_path: Path) -> None:
    from siem.sqlite import SqliteStore

    target, logs = shop
    path = f"/api/version?probe={tmp_path.name}"
    get(f"http://{target}{path}")
    config = write_config(tmp_path, target, logs)
    done = subprocess.run(
        cli(config, "--once"),
        env=dict(os.environ, VIGIL_DATA_DIR=str(tmp_path / "data")),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    store = SqliteStore(tmp_path / "data" / "siem.db")
    try:
        assert value(store, "up", job="shop", instance=target) == 1.0
        assert len(access_events(store, path)) == 1
    finally:
        store.close()
    assert json.loads((tmp_path / "data" / "collect-checkpoints.json").read_text())["files"]


def test_collect_shop_cli_loop_serves_metrics_and_stops_on_sigterm(
    shop: tuple[str, Path], tmp_path: Path
) -> None:
    from siem.sqlite import SqliteStore

    target, logs = shop
    path = f"/api/version?probe={tmp_path.name}"
    get(f"http://{target}{path}")
    port = free_port()
    env = dict(os.environ, VIGIL_DATA_DIR=str(tmp_path / "data"), VIGIL_COLLECT_PORT=str(port))
    proc = subprocess.Popen(
        cli(write_config(tmp_path, target, logs)),
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        written = 0.0
        while written < 1 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            try:
                families = text_string_to_metric_families(
                    get(f"http://127.0.0.1:{port}/metrics", timeout=1)[1].decode()
                )
                written = sum(
                    s.value
                    for f in families
                    for s in f.samples
                    if s.name == "vigil_collector_events_total"
                )
            except OSError:
                pass
            time.sleep(0.1)
        assert written >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr[-2000:]
    assert "collector stopped; everything collected was stored" in stderr
    store = SqliteStore(tmp_path / "data" / "siem.db")
    try:
        assert len(access_events(store, path)) == 1
    finally:
        store.close()
