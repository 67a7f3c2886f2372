"""Scrape Prometheus text-format targets into samples, with ``up`` like Prometheus.

Each sample gets the scrape's start time (rounded to the millisecond) and the
``job`` and ``instance`` labels; a scraped label of the same name is kept as
``exported_job``/``exported_instance`` (Prometheus' ``honor_labels: false``).
Every scrape also writes ``up``, ``scrape_duration_seconds`` and
``scrape_samples_scraped``. A target that is down or answers garbage gets
``up 0``: counted, logged, never raised.

The ``# TYPE``, ``# HELP`` and ``# UNIT`` lines of a good scrape are kept per
metric family (the latest scraped wins) and written to the store's metadata
(``Store.write_metadata``, served by ``/api/v1/metadata``) only when a family's
differs from what this scraper last wrote: once per change, not per scrape.
"""

from __future__ import annotations

import http.client
import logging
import re
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from collectors.metrics import CollectorMetrics
from collectors.sink import Backoff, Batch
from siem import SiemError
from siem.lookups import METRIC_TYPES
from siem.model import METRIC_NAME, MetricMetadata, Sample, Store, labels_from, make_labels
from vigil.haproxy import haproxy_binary
from vigil.settings import CollectSettings, Settings

log = logging.getLogger("vigil.collect.scrape")

MAX_BODY_BYTES = 32 << 20
ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
# Like Prometheus, scrape directly: *_proxy environment variables are not used.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_TARGET_LABELS = ("job", "instance")
METADATA_BACKOFF = Backoff(initial_s=5.0, max_s=300.0)
"""Wait after failed metadata writes, so a store that hangs does not slow every scrape."""
MAX_METADATA_FAMILIES = 100_000
"""Metric families whose metadata one scraper keeps; metadata of more is dropped (counted)."""
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_BLANKS = re.compile(r"[ \t]+")
_HELP_ESCAPE = re.compile(r"\\\\|\\n")


@dataclass(frozen=True)
class Target:
    """One scrape target: ``job`` and ``instance`` labels and the URL to GET."""

    job: str
    instance: str
    url: str
    timeout_s: float


def targets_from(collect: CollectSettings) -> list[Target]:
    """Every (job, target) of ``collect.scrape`` as a :class:`Target`."""
    return [
        Target(name, target, f"http://{target}{job.path}", job.timeout_s)
        for name, job in sorted(collect.scrape.items())
        for target in job.targets
    ]


def stack_targets(settings: Settings, *, haproxy: bool | None = None) -> list[Target]:
    """What ``vigil up`` runs, from the same settings it uses: shops and Vigil's processes.

    Job ``shop``: every shop instance. Job ``vigil``: the collector, the alert
    evaluator, the web UI and the supervisor, each on its own ``/metrics``.
    Job ``haproxy``: haproxy's exporter, when ``vigil up`` runs haproxy (it
    does when the binary is installed; ``haproxy`` None means look for it).
    """
    if not settings.collect.scrape_stack:
        return []
    base = settings.up.shop_base_port
    shops = [f"127.0.0.1:{base + n}" for n in range(settings.up.shop_instances)]
    ports = (
        settings.collect.port,
        settings.alert.port,
        settings.web.port,
        settings.up.control_port,
    )
    own = [f"127.0.0.1:{port}" for port in ports]
    rv = [Target("shop", t, f"http://{t}/metrics", 3.0) for t in shops] + [
        Target("vigil", t, f"http://{t}/metrics", 3.0) for t in own
    ]
    if haproxy is None:
        haproxy = haproxy_binary() is not None
    if haproxy:
        lb = f"127.0.0.1:{settings.up.haproxy_metrics_port}"
        rv.append(Target("haproxy", lb, f"http://{lb}/metrics", 3.0))
    return rv


def all_targets(settings: Settings, *, haproxy: bool | None = None) -> list[Target]:
    """The stack's targets and the configured jobs, each (job, instance) once."""
    rv: dict[tuple[str, str], Target] = {}
    for target in stack_targets(settings, haproxy=haproxy) + targets_from(settings.collect):
        rv[(target.job, target.instance)] = target
    return list(rv.values())


@dataclass(frozen=True)
class ScrapeResult:
    """The samples of one scrape (including ``up``) and why it failed, if it did."""

    target: Target
    samples: tuple[Sample, ...]
    error: str | None
    metadata: tuple[MetricMetadata, ...] = ()

    @property
    def up(self) -> bool:
        return self.error is None


def parse_exposition(text: str, *, job: str, instance: str, timestamp: float) -> list[Sample]:
    """Samples of a text-format exposition; raises ``ValueError`` on malformed input.

    >>> parse_exposition("a_total 3\\n", job="j", instance="i:1", timestamp=1.0)[0].value
    3.0
    """
    rv: list[Sample] = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {
                (f"exported_{k}" if k in _TARGET_LABELS else k): v for k, v in sample.labels.items()
            }
            labels.update({METRIC_NAME: sample.name, "job": job, "instance": instance})
            rv.append(Sample(labels_from(labels), timestamp, float(sample.value)))
    return rv


def exposition_metadata(text: str) -> list[MetricMetadata]:
    """Type, help and unit of each metric family of an exposition, from its ``# TYPE``,
    ``# HELP`` and ``# UNIT`` lines (a family's last line of each kind wins). Never
    raises: a comment line that is none of these, or names no valid metric or type,
    is a comment and skipped. ``untyped`` reads as ``unknown``, as in Prometheus.

    >>> exposition_metadata("# HELP a_total Requests.\\n# TYPE a_total counter\\na_total 3\\n")
    [MetricMetadata(metric='a_total', type='counter', help='Requests.', unit='')]
    """
    found: dict[str, dict[str, str]] = {}
    for line in text.split("\n"):
        if not line.startswith("#"):
            continue
        parts = _BLANKS.split(line[1:].lstrip(" \t"), maxsplit=2)
        if len(parts) < 2 or parts[0] not in ("HELP", "TYPE", "UNIT"):
            continue
        kind, name = parts[0].lower(), parts[1]
        value = parts[2] if len(parts) > 2 else ""
        if not _METRIC_NAME.fullmatch(name):
            continue
        if kind == "type":
            value = value.strip(" \t").lower()
            value = "unknown" if value == "untyped" else value
            if value not in METRIC_TYPES:
                continue
        elif kind == "unit":
            value = value.strip(" \t")
        else:
            value = _HELP_ESCAPE.sub(lambda m: "\\" if m.group() == "\\\\" else "\n", value)
        found.setdefault(name, {})[kind] = value
    return [
        MetricMetadata(name, d.get("type", "unknown"), d.get("help", ""), d.get("unit", ""))
        for name, d in found.items()
    ]


def fetch(url: str, timeout_s: float) -> str:
    """The body of a GET as text; raises ``OSError``, ``ValueError`` or ``HTTPException``."""
    request = urllib.request.Request(url, headers={"Accept": ACCEPT})
    with _OPENER.open(request, timeout=timeout_s) as resp:
        body: bytes = resp.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"body larger than {MAX_BODY_BYTES} bytes")
    return body.decode("utf-8")


def scrape(
    target: Target,
    *,
    clock: Callable[[], float] = time.time,
    get: Callable[[str, float], str] = fetch,
) -> ScrapeResult:
    """Scrape one target; never raises for anything the target does."""
    timestamp = round(clock(), 3)
    started = time.monotonic()
    error: str | None = None
    samples: list[Sample] = []
    metadata: list[MetricMetadata] = []
    try:
        text = get(target.url, target.timeout_s)
        samples = parse_exposition(
            text, job=target.job, instance=target.instance, timestamp=timestamp
        )
        metadata = exposition_metadata(text)
    except urllib.error.HTTPError as exc:
        error = f"HTTP {exc.code}"
    # Refused, timeout, not HTTP, not UTF-8, bad exposition.
    except (OSError, ValueError, http.client.HTTPException) as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    duration = time.monotonic() - started

    def meta(name: str, value: float) -> Sample:
        return Sample(make_labels(name, job=target.job, instance=target.instance), timestamp, value)

    samples += [
        meta("up", 0.0 if error else 1.0),
        meta("scrape_duration_seconds", duration),
        meta("scrape_samples_scraped", float(len(samples))),
    ]
    return ScrapeResult(target, tuple(samples), error, tuple(metadata))


class Scraper:
    """A source scraping all ``targets`` concurrently, one batch per target.

    With a ``store``, the metric metadata of each pass goes straight to it (not
    through the sink: it is small and rare), for the families whose metadata
    changed since this scraper last wrote them; a failed write is counted in
    ``vigil_collector_write_errors_total`` and tried again on a later pass
    (``METADATA_BACKOFF`` after consecutive failures).
    """

    def __init__(
        self,
        targets: Sequence[Target],
        metrics: CollectorMetrics,
        *,
        clock: Callable[[], float] = time.time,
        store: Store | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._targets = list(targets)
        self._metrics = metrics
        self._clock = clock
        self._store = store
        self._monotonic = monotonic
        self._written: dict[str, MetricMetadata] = {}
        self._failures = 0
        self._retry_at = 0.0

    def scrape_all(self) -> list[ScrapeResult]:
        if not self._targets:
            return []
        with ThreadPoolExecutor(max_workers=min(16, len(self._targets))) as pool:
            results = list(pool.map(lambda t: scrape(t, clock=self._clock), self._targets))
        for result in results:
            if result.error is not None:
                self._metrics.scrape_errors.labels(result.target.job).inc()
                log.warning(
                    "scrape failed; target marked up=0",
                    extra={
                        "labels.job": result.target.job,
                        "url.full": result.target.url,
                        "error.message": result.error,
                    },
                )
        return results

    def collect(self) -> list[Batch]:
        results = self.scrape_all()
        if self._store is not None:
            self.write_metadata(results)
        return [Batch(samples=r.samples) for r in results]

    def write_metadata(self, results: Sequence[ScrapeResult]) -> int:
        """Write the metadata of ``results`` that differs from what was last written
        (when two targets disagree, the later target's wins); how many families."""
        if self._store is None or self._monotonic() < self._retry_at:
            return 0
        latest = {m.metric: m for r in results for m in r.metadata}
        changed = [m for name, m in latest.items() if self._written.get(name) != m]
        room = max(0, MAX_METADATA_FAMILIES - len(self._written))
        kept = [m for m in changed if m.metric in self._written]
        new = [m for m in changed if m.metric not in self._written]
        if len(new) > room:
            self._metrics.metadata_dropped.inc(len(new) - room)
            log.warning(
                "too many metric families; their metadata is not kept",
                extra={"labels.dropped": len(new) - room, "labels.max": MAX_METADATA_FAMILIES},
            )
        changed = kept + new[:room]
        if not changed:
            return 0
        try:
            self._store.write_metadata(changed)
        except (SiemError, sqlite3.Error, OSError, ValueError) as exc:
            self._metrics.write_errors.inc()
            self._failures += 1
            wait = METADATA_BACKOFF.after(self._failures)
            self._retry_at = self._monotonic() + wait
            log.warning(
                "metric metadata not stored; trying again later",
                extra={"error.message": str(exc), "labels.retry_in_s": wait},
            )
            return 0
        self._failures = 0
        self._written.update((m.metric, m) for m in changed)
        return len(changed)

    def behind(self) -> bool:
        """Never: a scrape reads all there is; the next one is due an interval later."""
        return False
