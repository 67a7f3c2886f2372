"""The shop under real gunicorn: several workers, one correct /metrics, clean shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import free_port
from prometheus_client.parser import text_string_to_metric_families


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wait_ready(base: str, proc: subprocess.Popen[bytes], deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"shop exited early with {proc.returncode}")
        try:
            if get(base + "/readyz", timeout=1)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("shop did not become ready in time")


@pytest.fixture
def served_shop(tmp_path: Path, db_url: str) -> Iterator[tuple[str, Path]]:
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "VIGIL_CONFIG": str(Path(__file__).resolve().parents[2] / "config" / "vigil.yaml"),
            "VIGIL_DATA_DIR": str(tmp_path / "data"),
            "VIGIL_SHOP_DB": db_url,
            "VIGIL_SHOP_PORT": str(port),
            "VIGIL_SHOP_WORKERS": "2",
            "VIGIL_SMTP_PORT": str(free_port()),
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "vigil.cli", "shop", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield base, tmp_path / "data"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert proc.returncode == 0, out.decode(errors="replace")[-2000:]


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = get(base + "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_shop_server_metrics_sum_over_all_workers(served_shop: tuple[str, Path]) -> None:
    base, _ = served_shop
    requests = 60
    # Concurrent requests so that both workers answer some of them.
    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(lambda _: get(base + "/api/version")[0], range(requests)))
    assert statuses == [200] * requests
    samples = scrape(base)
    key = (
        "shop_http_requests_total",
        (("method", "GET"), ("route", "/api/version"), ("status", "200")),
    )
    # Every request counted once, whichever worker answered it and whichever scrapes.
    assert samples[key] == requests
    assert samples[("shop_release_info", (("release", "v1"),))] == 1
    assert ("shop_http_requests_in_progress", (("method", "GET"),)) in samples
    count_key = (
        "shop_http_request_duration_seconds_count",
        (("method", "GET"), ("route", "/api/version")),
    )
    assert samples[count_key] == requests


def test_shop_server_serves_catalogue_and_pages(served_shop: tuple[str, Path]) -> None:
    base, _ = served_shop
    status, body = get(base + "/api/products?per_page=5")
    assert status == 200
    assert json.loads(body)["total"] >= 50
    status, body = get(base + "/")
    assert status == 200
    assert b"<html" in body.lower()
