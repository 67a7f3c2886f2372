"""Vigil's processes start while the Elasticsearch cluster is unreachable.

The store sets itself up (index template, samples index) on its first
operation, not when it is opened; until the cluster answers every operation is
"unavailable". So:

- ``vigil collect`` started with the cluster down collects from the start
  (the tailer waits in its file, scrapes and syslog go to the spool) and,
  once the cluster appears, stores every item exactly once, its spool drained,
  without ever exiting;
- ``vigil web`` started with the cluster down answers /healthz, its APIs answer
  503 in their error envelope naming the store, and 200 once the cluster is up.

The cluster is osmem-server behind the TCP proxy of tests/es_outage.py,
refusing connections, then forwarding.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port, http_get, wait_until
from es_outage import (
    REPO,
    CollectorProcess,
    Proxy,
    assert_each_item_once,
    count,
    proxy_to,
    store_yaml,
    wait_caught_up,
    wait_for,
)
from scrape_target import Target

from siem.elasticsearch import ElasticsearchStore
from vigil.auth import UserStore

DOWN_S = 10.0  # how long the cluster is unreachable after the process started
CATCH_UP_S = 120.0  # an upper bound, never reached when things work


@pytest.fixture
def down_proxy(es_url: str) -> Iterator[Proxy]:
    """A proxy to the test's cluster, refusing connections until the test opens it."""
    with proxy_to(es_url) as rv:
        rv.set_mode("refuse")
        yield rv


def store_warnings(data: Path) -> list[str]:
    """The WARNING lines of the ``vigil.store`` logger in the collector's ECS log."""
    path = data / "logs" / "vigil" / "collect.json"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [
        r["message"]
        for r in records
        if r.get("log", {}).get("logger") == "vigil.store" and r.get("log.level") == "warning"
    ]


def test_es_start_collect_with_the_cluster_down_loses_nothing(
    tmp_path: Path, es_url: str, down_proxy: Proxy
) -> None:
    target = Target("outage_test_scrapes", wait_s=CATCH_UP_S)
    store = ElasticsearchStore(es_url, compat_headers=False)  # the server itself, no proxy
    peak_spool = 0
    try:
        with CollectorProcess(tmp_path, down_proxy, target, request_timeout_s=5) as collector:
            wait_for("the collector's /metrics", lambda: bool(collector.metrics()), 60)
            with collector.load() as load:
                until = time.monotonic() + DOWN_S
                while time.monotonic() < until:
                    assert collector.proc.poll() is None, "the collector exited"
                    metrics = collector.metrics()
                    peak_spool = max(peak_spool, int(metrics["vigil_collector_spool_bytes"]))
                    time.sleep(0.5)
                down = collector.metrics()
                assert count(store, "outage.app") == count(store, "haproxy.log") == 0
                down_proxy.set_mode("forward")
                time.sleep(2)  # load goes on while the collector catches up
            served = target.hold()
            wait_caught_up(store, collector, load, CATCH_UP_S)
            metrics = collector.metrics()
            assert collector.stop() == 0, "the collector stopped with unwritten data"
            assert_each_item_once(store, load, served, metrics)
            log = collector.log()
    finally:
        store.close()
        target.close()
    assert "Traceback" not in log, log[-5000:]
    assert load.lines >= 25 * DOWN_S and load.datagrams >= 10 * DOWN_S and served >= 5
    assert peak_spool > 0, "nothing was spooled while the cluster was down"
    # Setup was tried again with backoff (not once per write), said once, then succeeded.
    assert down["vigil_store_ready"] == 0
    assert 2 <= down["vigil_store_setup_failures_total"] <= 10
    assert down["vigil_collector_write_errors_total"] > 0
    assert metrics["vigil_store_ready"] == 1
    warnings = store_warnings(collector.data)
    assert len(warnings) == 1 and "unavailable" in warnings[0], warnings


def test_es_start_web_answers_503_until_the_cluster_is_up(
    tmp_path: Path, down_proxy: Proxy
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _, token = UserStore(data / "users.db").create_token("reader", "viewer")
    config = tmp_path / "vigil.yaml"
    config.write_text(store_yaml(down_proxy, request_timeout_s=5))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, VIGIL_DATA_DIR=str(data))
    argv = [sys.executable, "-m", "vigil.cli", "--config", str(config), "web", "--port", str(port)]
    stderr = tmp_path / "web.stderr"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
    statuses: Counter[int] = Counter()
    try:

        def healthy() -> bool:
            assert proc.poll() is None, "vigil web exited"
            try:
                return http_get(f"{base}/healthz", 2)[0] == 200
            except OSError:  # not listening yet
                return False

        wait_until("/healthz", healthy, 60)
        for path in ("/api/events", "/api/v1/query?query=up"):
            status, body = http_get(base + path, token=token)
            answer = json.loads(body)
            assert status == 503, (path, status, body)
            assert answer["status"] == "error" and answer["errorType"] == "unavailable"
            assert f"elasticsearch store at {down_proxy.url} unavailable" in answer["error"]
        down_proxy.set_mode("forward")

        def events_answer() -> bool:
            status = http_get(f"{base}/api/events", token=token)[0]
            statuses[status] += 1
            return status == 200

        wait_until("/api/events to answer 200", events_answer, 30)
        status, body = http_get(f"{base}/api/v1/query?query=up", token=token)
        assert status == 200 and json.loads(body)["status"] == "success", body
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert set(statuses) <= {200, 503}, statuses
    log = stderr.read_text(errors="replace")
    assert "Traceback" not in log, log[-5000:]
