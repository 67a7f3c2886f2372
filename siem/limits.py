"""Per-query limits: a sample budget, a deadline and cancellation, shared by every reader.

A ``QueryBudget`` is made for one query (a PromQL evaluation, a KQL search)
and put in scope with ``budget.active()``. The stores and the PromQL engine
look it up with ``current()`` and

- call ``take(n)`` for every sample or row they load, so a query that would
  hold too much fails before it does (Prometheus' ``--query.max-samples``);
- call ``check()`` in their loops, so a query stops at its deadline
  (``--query.timeout``) or as soon as someone calls ``cancel()`` (the web
  server does when the client hangs up);
- give SQLite ``interrupted`` as its progress handler, so a long statement
  stops inside SQLite too.

The budget travels in a ``contextvars.ContextVar`` rather than as a parameter
so the ``Store`` protocol and the engines' callers stay unchanged: code that
never opens a scope runs unlimited, as before.

>>> budget = QueryBudget(max_samples=1000, timeout_s=5.0)
>>> with budget.active():
...     engine.instant("up", at=now)                               # doctest: +SKIP
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from siem import SiemError

DEFAULT_MAX_SAMPLES = 10_000_000
"""Samples one query may hold (Prometheus' ``--query.max-samples``, default 50,000,000).

Prometheus holds a sample in 16 bytes, so its default caps a query near 800 MB;
a sample held by Vigil's Python engine, with its share of the response, takes
about 75 (measured: 864,000 loaded plus 1,080,100 result points raised the
peak RSS by 150 MB), so 10,000,000 keeps about the same ceiling.
"""
DEFAULT_TIMEOUT_S = 120.0
"""Prometheus' ``--query.timeout`` default (2 minutes)."""

_CURRENT: contextvars.ContextVar[QueryBudget | None] = contextvars.ContextVar(
    "vigil_query_budget", default=None
)


class QueryLimitError(SiemError):
    """A query hit one of its limits; ``kind`` is Prometheus' ``errorType`` for it."""

    kind = "execution"


class TooManySamplesError(QueryLimitError):
    """The query would hold more samples (or rows) than its budget allows."""

    kind = "execution"


class QueryTimeoutError(QueryLimitError):
    """The query ran past its deadline."""

    kind = "timeout"


class QueryCancelledError(QueryLimitError):
    """The query was cancelled, usually because its client went away."""

    kind = "canceled"


class QueryBudget:
    """The limits of one query; safe to ``cancel()`` from another thread.

    ``max_samples`` counts samples loaded from the store plus points held in
    results (0 means no limit); ``timeout_s`` is measured from construction
    (0 means no deadline).
    """

    def __init__(
        self,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_samples = max_samples
        self.timeout_s = timeout_s
        self.samples = 0
        self._clock = clock
        self._deadline = clock() + timeout_s if timeout_s > 0 else None
        self._cancelled = threading.Event()
        self.stage = "query execution"

    def cancel(self) -> None:
        """Make the next ``check()`` (and SQLite's progress handler) stop the query."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def check(self) -> None:
        """Raise if the query was cancelled or its deadline passed."""
        if self._cancelled.is_set():
            raise QueryCancelledError(f"query cancelled in {self.stage}")
        if self._deadline is not None and self._clock() > self._deadline:
            raise QueryTimeoutError(f"query timed out in {self.stage}")

    def remaining_s(self) -> float | None:
        """Seconds left before the deadline (``None`` without one): a request's timeout."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - self._clock())

    def take(self, n: int) -> None:
        """Account for ``n`` more samples held; raise when over the budget."""
        self.samples += n
        if self.max_samples > 0 and self.samples > self.max_samples:
            raise TooManySamplesError(
                f"query processing would load too many samples into memory in {self.stage} "
                f"(limit {self.max_samples:,})"
            )

    def give_back(self, n: int) -> None:
        """``n`` samples taken earlier are no longer held."""
        self.samples = max(0, self.samples - n)

    def interrupted(self) -> int:
        """SQLite progress handler: non-zero stops the running statement."""
        if self._cancelled.is_set():
            return 1
        return int(self._deadline is not None and self._clock() > self._deadline)

    @contextmanager
    def active(self) -> Iterator[QueryBudget]:
        """Make this the budget ``current()`` returns inside the block."""
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)


def current() -> QueryBudget | None:
    """The budget of the query running in this context, if any."""
    return _CURRENT.get()


def take(n: int) -> None:
    """``current().take(n)`` when a budget is in scope: ``n`` more samples or rows held."""
    budget = _CURRENT.get()
    if budget is not None:
        budget.take(n)


def check() -> None:
    """``current().check()`` when a budget is in scope."""
    budget = _CURRENT.get()
    if budget is not None:
        budget.check()
