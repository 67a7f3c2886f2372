"""Sources that may not be able to start yet, retried instead of stopping the collector.

The syslog receiver (its UDP port taken) and the PostgreSQL server log (not
found, not readable yet) are optional: the collector keeps collecting
everything else and tries again every ``retry_s``. Each distinct problem is
logged once as a WARNING that names the fix; ``vigil_collector_source_up{source}``
is 0 while the source does not work and ``vigil_collector_source_failures_total``
counts the failed attempts.

Example::

    source = Deferred("syslog", lambda: SyslogReceiver(addr, metrics), metrics)
    source.collect()   # [] and a warning while the port is taken; datagrams once bound
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from collectors.errors import CollectorError
from collectors.metrics import CollectorMetrics
from collectors.sink import Batch

log = logging.getLogger("vigil.collect")

RETRY_S = 30.0


class SourceHealth:
    """Whether an optional source works: its metrics and its warnings, each problem once."""

    def __init__(self, name: str, metrics: CollectorMetrics) -> None:
        self.name = name
        self._metrics = metrics
        self._problem: str | None = None

    @property
    def problem(self) -> str | None:
        """The last problem reported, None while the source works (or before it tried)."""
        return self._problem

    def failed(self, problem: str) -> None:
        """Count a failed attempt; warn unless this same problem was reported last time."""
        self._metrics.source_up.labels(self.name).set(0)
        self._metrics.source_failures.labels(self.name).inc()
        if problem != self._problem:
            log.warning(problem, extra={"labels.source": self.name})
        self._problem = problem

    def working(self) -> None:
        """The source works (again)."""
        self._metrics.source_up.labels(self.name).set(1)
        if self._problem is not None:
            log.info("%s works again", self.name, extra={"labels.source": self.name})
        self._problem = None


class Deferred:
    """A source built by ``build`` once it can be; until then retried every ``retry_s``.

    ``build`` raises :class:`CollectorError` (whose message says what to fix)
    while the source cannot start.
    """

    def __init__(
        self,
        name: str,
        build: Callable[[], Any],
        metrics: CollectorMetrics,
        *,
        retry_s: float = RETRY_S,
        keeps_data: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.health = SourceHealth(name, metrics)
        self.keeps_data = keeps_data
        self._build = build
        self._retry_s = retry_s
        self._clock = clock
        self._next_try = 0.0
        self.source: Any = None
        self._ensure()

    def _ensure(self) -> Any:
        if self.source is None and self._clock() >= self._next_try:
            self._next_try = self._clock() + self._retry_s
            try:
                self.source = self._build()
            except CollectorError as exc:
                self.health.failed(f"{exc}; retrying every {self._retry_s:g} s")
            else:
                self.health.working()
        return self.source

    def collect(self) -> list[Batch]:
        source = self._ensure()
        return [] if source is None else list(source.collect())

    def behind(self) -> bool:
        behind = getattr(self.source, "behind", None)
        return bool(behind()) if callable(behind) else False

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if callable(close):
            close()
