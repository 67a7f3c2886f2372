"""``vigil collect`` prunes its SQLite store in the background while it runs, shows it on
``/metrics`` and in its log, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import free_port, http_get, wait_until
from prometheus_client.parser import text_string_to_metric_families

from siem.model import Event, EventQuery, Sample, make_labels
from siem.sqlite import SqliteStore

REPO = Path(__file__).resolve().parents[2]
DAY = 86400.0


def metric(port: int, name: str, **labels: str) -> float:
    try:
        status, body = http_get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    except OSError:  # not listening yet
        return 0.0
    if status != 200:
        return 0.0
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_collect_prunes_in_the_background_and_serves_the_store_metrics(tmp_path: Path) -> None:
    data = tmp_path / "data"
    now = time.time()
    store = SqliteStore(data / "siem.db")
    store.write(
        events=[Event(f"o{n}", now - 40 * DAY - n, "shop.app", {"n": n}) for n in range(30)]
        + [Event(f"a{n}", now - n * DAY, "shop.access", {"n": n}) for n in range(10)],
        samples=[Sample(make_labels("up", job="shop"), now - n * DAY, 1.0) for n in range(20)],
    )
    store.close()
    config = tmp_path / "vigil.yaml"
    config.write_text(
        "store:\n  retention: {default: 30d, shop.access: 5d}\n  retention_interval_s: 0.3\n"
        "collect:\n  scrape_stack: false\n  interval_s: 0.2\n  tail: []\n"
    )
    port = free_port()
    env = dict(os.environ, VIGIL_DATA_DIR=str(data), VIGIL_COLLECT_PORT=str(port))
    cmd = [sys.executable, "-m", "vigil.cli", "--config", str(config), "collect"]
    proc = subprocess.Popen(
        cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(
            "the first retention pass on /metrics",
            lambda: (
                proc.poll() is None and metric(port, "vigil_store_last_prune_timestamp_seconds") > 0
            ),
            timeout=30,
        )
        pruned = "vigil_store_pruned_events_total"
        assert metric(port, pruned, dataset="shop.app", reason="age") == 30
        assert metric(port, pruned, dataset="shop.access", reason="age") == 5
        assert metric(port, "vigil_store_pruned_samples_total") == 5  # 15..19 days old
        assert metric(port, "vigil_store_events", dataset="shop.access") == 5
        assert metric(port, "vigil_store_size_bytes") > 0
        assert metric(port, "vigil_store_prune_errors_total") == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr[-2000:]
    assert "retention removed 35 events and 5 samples" in stderr
    store = SqliteStore(data / "siem.db")
    try:
        kept = store.search(EventQuery(limit=100))
    finally:
        store.close()
    assert sorted(e.id for e in kept) == sorted(f"a{n}" for n in range(5))
