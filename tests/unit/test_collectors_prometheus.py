"""The Prometheus scraper: parsing, target labels, up/scrape_* and failures."""

from __future__ import annotations

import http.client
import math
import urllib.error
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from conftest import free_port
from exposition_server import exposition_server
from prometheus_client import CollectorRegistry

import collectors.prometheus
from collectors.metrics import CollectorMetrics
from collectors.prometheus import (
    Scraper,
    Target,
    all_targets,
    exposition_metadata,
    parse_exposition,
    scrape,
    targets_from,
)
from collectors.sink import Sink
from siem.elasticsearch import ElasticsearchStore
from siem.memory import MemoryStore
from siem.model import Matcher, MetricMetadata, Sample, Store, is_stale
from siem.sqlite import SqliteStore
from vigil.settings import from_mapping

EXPOSITION = """\
# HELP shop_http_requests_total Requests.
# TYPE shop_http_requests_total counter
shop_http_requests_total{route="/",status="200"} 7.0
# HELP lat_seconds Latency.
# TYPE lat_seconds histogram
lat_seconds_bucket{le="0.1"} 1.0
lat_seconds_bucket{le="+Inf"} 2.0
lat_seconds_count 2.0
lat_seconds_sum 0.3
# TYPE odd gauge
odd{job="batch",instance="x"} 1.0
"""
TARGET = Target("shop", "127.0.0.1:8001", "http://127.0.0.1:8001/metrics", 1.0)


def by_name(samples: list[Sample] | tuple[Sample, ...]) -> dict[str, list[Sample]]:
    rv: dict[str, list[Sample]] = {}
    for s in samples:
        rv.setdefault(s.name, []).append(s)
    return rv


def test_prometheus_parse_exposition_keeps_sample_names_and_adds_target_labels() -> None:
    samples = by_name(
        parse_exposition(EXPOSITION, job="shop", instance="h:1", timestamp=1700000000.5)
    )
    assert set(samples) == {
        "shop_http_requests_total",
        "lat_seconds_bucket",
        "lat_seconds_count",
        "lat_seconds_sum",
        "odd",
    }
    (counter,) = samples["shop_http_requests_total"]
    assert dict(counter.labels) == {
        "__name__": "shop_http_requests_total",
        "job": "shop",
        "instance": "h:1",
        "route": "/",
        "status": "200",
    }
    assert counter.value == 7.0
    assert counter.timestamp == 1700000000.5
    assert {dict(s.labels)["le"] for s in samples["lat_seconds_bucket"]} == {"0.1", "+Inf"}


def test_prometheus_parse_exposition_renames_clashing_target_labels() -> None:
    (odd,) = by_name(parse_exposition(EXPOSITION, job="shop", instance="h:1", timestamp=1.0))["odd"]
    labels = dict(odd.labels)
    assert labels["job"] == "shop"
    assert labels["exported_job"] == "batch"
    assert labels["exported_instance"] == "x"


def test_prometheus_parse_exposition_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_exposition("this is { not metrics\n", job="j", instance="i", timestamp=1.0)


def test_prometheus_scrape_success_writes_up_and_scrape_meta() -> None:
    result = scrape(TARGET, clock=lambda: 1700000000.12345, get=lambda url, t: EXPOSITION)
    assert result.up and result.error is None
    samples = by_name(result.samples)
    (up,) = samples["up"]
    assert dict(up.labels) == {"__name__": "up", "job": "shop", "instance": "127.0.0.1:8001"}
    assert up.value == 1.0
    assert up.timestamp == 1700000000.123  # ms-rounded scrape time, on every sample
    assert {s.timestamp for s in result.samples} == {1700000000.123}
    assert samples["scrape_samples_scraped"][0].value == 6.0
    assert samples["scrape_duration_seconds"][0].value >= 0.0


def _http_500(url: str, timeout: float) -> str:
    raise urllib.error.HTTPError(url, 500, "boom", {}, None)  # type: ignore[arg-type]


def _not_http(url: str, timeout: float) -> str:
    raise http.client.BadStatusLine("SSH-2.0-OpenSSH_9.2")


@pytest.mark.parametrize(
    ("get", "reason"),
    [
        (lambda url, t: "garbage { here\n", "ValueError"),
        (_http_500, "HTTP 500"),
        (_not_http, "BadStatusLine"),
    ],
)
def test_prometheus_scrape_failure_is_up_zero(get: object, reason: str) -> None:
    result = scrape(TARGET, clock=lambda: 5.0, get=get)  # type: ignore[arg-type]
    assert not result.up
    assert result.error is not None and reason in result.error
    samples = by_name(result.samples)
    assert set(samples) == {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
    assert samples["up"][0].value == 0.0
    assert samples["scrape_samples_scraped"][0].value == 0.0


def test_prometheus_scraper_counts_dead_target_per_job() -> None:
    registry = CollectorRegistry()
    dead = f"127.0.0.1:{free_port()}"
    settings = from_mapping({"collect": {"scrape": {"shop": {"targets": [dead], "timeout_s": 2}}}})
    targets = targets_from(settings.collect)
    assert targets == [Target("shop", dead, f"http://{dead}/metrics", 2.0)]
    scraper = Scraper(targets, CollectorMetrics(registry))
    (batch,) = scraper.collect()
    assert by_name(batch.samples)["up"][0].value == 0.0
    assert registry.get_sample_value("vigil_collector_scrape_errors_total", {"job": "shop"}) == 1


def test_prometheus_scraper_without_targets_collects_nothing() -> None:
    assert Scraper([], CollectorMetrics(CollectorRegistry())).collect() == []


def test_prometheus_stack_targets_follow_the_up_ports() -> None:
    settings = from_mapping(
        {
            "up": {
                "shop_instances": 3,
                "shop_base_port": 9001,
                "control_port": 9099,
                "haproxy_metrics_port": 9101,
            },
            "collect": {
                "port": 9091,
                "scrape": {
                    "shop": {"targets": ["127.0.0.1:9001"]},
                    "db": {"targets": ["127.0.0.1:9187"]},
                },
            },
            "alert": {"port": 9092},
            "web": {"port": 9090},
        }
    )
    jobs = sorted((t.job, t.instance) for t in all_targets(settings, haproxy=True))
    assert jobs == [
        ("db", "127.0.0.1:9187"),
        ("haproxy", "127.0.0.1:9101"),
        ("shop", "127.0.0.1:9001"),  # listed twice, scraped once
        ("shop", "127.0.0.1:9002"),
        ("shop", "127.0.0.1:9003"),
        ("vigil", "127.0.0.1:9090"),
        ("vigil", "127.0.0.1:9091"),
        ("vigil", "127.0.0.1:9092"),
        ("vigil", "127.0.0.1:9099"),
    ]


def test_prometheus_stack_targets_leave_out_haproxy_when_it_does_not_run() -> None:
    jobs = {t.job for t in all_targets(from_mapping({}), haproxy=False)}
    assert jobs == {"shop", "vigil"}


def test_prometheus_stack_targets_can_be_turned_off() -> None:
    settings = from_mapping({"collect": {"scrape_stack": False}})
    assert all_targets(settings) == []


# -- metric metadata: # TYPE, # HELP, # UNIT ------------------------------------------------------

WITH_UNIT = (
    EXPOSITION
    + "# HELP esc_seconds Back\\\\slash and\\nnewline.\n# UNIT esc_seconds seconds\n"
    + "# TYPE esc_seconds untyped\nesc_seconds 1\n"
)


def test_prometheus_scrape_keeps_type_help_and_unit_per_family() -> None:
    result = scrape(TARGET, clock=lambda: 5.0, get=lambda url, t: WITH_UNIT)
    assert {m.metric: m for m in result.metadata} == {
        "shop_http_requests_total": MetricMetadata(
            "shop_http_requests_total", "counter", "Requests."
        ),
        "lat_seconds": MetricMetadata("lat_seconds", "histogram", "Latency."),
        "odd": MetricMetadata("odd", "gauge"),
        # Help escapes undone; untyped is Prometheus' "unknown"; # UNIT kept.
        "esc_seconds": MetricMetadata(
            "esc_seconds", "unknown", "Back\\slash and\nnewline.", "seconds"
        ),
    }
    # A failed scrape keeps none (its lines may be garbage).
    bad = scrape(TARGET, clock=lambda: 5.0, get=lambda url, t: WITH_UNIT + "x {\n")
    assert not bad.up and bad.metadata == ()


def test_prometheus_exposition_metadata_skips_other_comments() -> None:
    text = (
        "# a comment\n#\n# HELP\n# TYPE 1bad counter\n# TYPE x bogus\n"
        "# HELP x First.\n# HELP x Second.\n# TYPE x GAUGE\n"
    )
    assert exposition_metadata(text) == [MetricMetadata("x", "gauge", "Second.")]


class CountingStore(MemoryStore):
    """A MemoryStore that remembers each metadata write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[list[str]] = []

    def write_metadata(self, items: Iterable[MetricMetadata]) -> int:
        items = list(items)
        self.writes.append([m.metric for m in items])
        return super().write_metadata(items)


@pytest.fixture
def exporter() -> Iterator[dict[str, str]]:
    """A real HTTP target serving ``body["text"]`` at /metrics; its host:port in "address"."""
    body = {"text": EXPOSITION}
    with exposition_server(lambda: body["text"]) as address:
        body["address"] = address
        yield body


def test_prometheus_scraper_stores_metadata_once_per_change(exporter: dict[str, str]) -> None:
    store = CountingStore()
    address = exporter["address"]
    targets = [Target("shop", address, f"http://{address}/metrics", 2.0)]
    scraper = Scraper(targets, CollectorMetrics(CollectorRegistry()), store=store)
    scraper.collect()
    scraper.collect()  # nothing changed: nothing written
    assert store.writes == [["shop_http_requests_total", "lat_seconds", "odd"]]
    assert store.metadata("lat_seconds") == [MetricMetadata("lat_seconds", "histogram", "Latency.")]
    exporter["text"] = EXPOSITION.replace("# HELP lat_seconds Latency.", "# HELP lat_seconds Slow.")
    scraper.collect()
    assert store.writes[1:] == [["lat_seconds"]]  # only the family that changed
    assert store.metadata("lat_seconds") == [MetricMetadata("lat_seconds", "histogram", "Slow.")]


def test_prometheus_scraper_metadata_write_failure_is_counted_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = CollectorRegistry()
    closed = SqliteStore(tmp_path / "siem.db")
    closed.close()
    now = [100.0]
    scraper = Scraper([], CollectorMetrics(registry), store=closed, monotonic=lambda: now[0])
    results = [scrape(TARGET, clock=lambda: 5.0, get=lambda url, t: EXPOSITION)]
    assert scraper.write_metadata(results) == 0
    assert registry.get_sample_value("vigil_collector_write_errors_total") == 1
    now[0] += 4.9  # backing off (5 s after the first failure): not even tried
    assert scraper.write_metadata(results) == 0
    assert registry.get_sample_value("vigil_collector_write_errors_total") == 1
    now[0] += 0.1
    assert scraper.write_metadata(results) == 0
    assert registry.get_sample_value("vigil_collector_write_errors_total") == 2
    store = SqliteStore(tmp_path / "siem.db")
    try:
        scraper._store = store  # the store is back: the next try writes all of it
        now[0] += 10.0
        assert scraper.write_metadata(results) == 3
        assert [m.metric for m in store.metadata()] == [
            "lat_seconds",
            "odd",
            "shop_http_requests_total",
        ]
        # Over the limit of families: the new ones are dropped and counted.
        monkeypatch.setattr(collectors.prometheus, "MAX_METADATA_FAMILIES", 4)
        more = "".join(f"# TYPE extra_{n} gauge\nextra_{n} 1\n" for n in range(3))
        results = [scrape(TARGET, clock=lambda: 6.0, get=lambda url, t: EXPOSITION + more)]
        assert scraper.write_metadata(results) == 1
        assert registry.get_sample_value("vigil_collector_metadata_dropped_total") == 2
        assert len(store.metadata()) == 4
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["memory", "sqlite", "elasticsearch"])
def test_prometheus_scrape_keeps_nan_and_infinities_through_to_the_store(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    exposition = (
        "# TYPE lat_seconds summary\n"
        'lat_seconds{quantile="0.99"} NaN\n'
        "lat_seconds_sum 0.0\n"
        "lat_seconds_count 0\n"
        "# TYPE headroom gauge\n"
        'headroom{side="up"} +Inf\n'
        'headroom{side="down"} -Inf\n'
    )
    store: Store
    if backend == "memory":
        store = MemoryStore()
    elif backend == "sqlite":
        store = SqliteStore(tmp_path / "siem.db")
    else:
        store = ElasticsearchStore(request.getfixturevalue("es_url"), compat_headers=False)
    metrics = CollectorMetrics(CollectorRegistry())
    try:
        with exposition_server(lambda: exposition) as address:
            targets = [Target("shop", address, f"http://{address}/metrics", 2.0)]
            batches = Scraper(targets, metrics).collect()
        sink = Sink(store, metrics)
        for batch in batches:
            sink.submit(batch)
        assert sink.flush(5.0)
        got = {
            (s.name, dict(s.labels).get("quantile") or dict(s.labels).get("side")): s.points[0][1]
            for name in ("lat_seconds", "headroom")
            for s in store.select([Matcher("__name__", "=", name)], 0, 2e9)
        }
        nan = got[("lat_seconds", "0.99")]
        assert math.isnan(nan) and not is_stale(nan)  # a NaN scraped is a value, not an end
        assert got[("headroom", "up")] == math.inf
        assert got[("headroom", "down")] == -math.inf
    finally:
        store.close()
