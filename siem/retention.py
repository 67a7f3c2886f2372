"""Retention: how long the store keeps events (per dataset) and samples, and how big it may get.

Every backend implements ``prune(policy, now)`` and ``stats()`` (see
``siem.model.Store``); the collector applies the policy in the background
(``collectors.retention``), ``vigil store prune`` applies it at once.

- Age: an event is removed once ``now - timestamp`` exceeds its dataset's
  maximum age (``store.retention``, ``default`` for the others); a sample
  once it exceeds ``store.samples_retention``. 0 keeps forever.
- Size (SQLite, and the memory store by its estimate): while the store holds
  more than ``max_bytes``, the oldest events and samples go first, across
  datasets, a slice of time at a time (``size_cap``).
- Bounded work: a backend deletes at most ``chunk`` rows per transaction or
  request and pauses ``pause_s`` between them, so writers are never locked out
  for long; ``siem.limits`` (a ``QueryBudget``) cancels a running prune between
  chunks.

>>> policy = RetentionPolicy({"default": 30 * 86400, "shop.access": 7 * 86400})
>>> policy.event_cutoff("shop.access", now=1_700_000_000.0)
1699395200.0
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from siem import limits

if TYPE_CHECKING:
    from vigil.settings import StoreSettings

DEFAULT_KEY = "default"
"""The ``store.retention`` entry for datasets without one of their own."""
DEFAULT_EVENTS_MAX_AGE_S = 30 * 86400.0
DEFAULT_SAMPLES_MAX_AGE_S = 15 * 86400.0
"""Prometheus' ``--storage.tsdb.retention.time`` default."""
PRUNE_CHUNK = 5000
"""Rows deleted per transaction (SQLite) or per ``_delete_by_query`` request."""
PRUNE_PAUSE_S = 0.1
"""Pause between chunks: longer than SQLite's longest busy-handler sleep (100 ms), so a
writer waiting for the lock finds it free."""
SAMPLE_BYTES = 24
"""Estimated bytes of one stored sample (series id, timestamp, value)."""
SIZE_CAP_SLICES = 50
"""Over the size cap, each round removes the oldest 1/50 of the time span still stored."""


@dataclass(frozen=True)
class RetentionPolicy:
    """Maximum ages (seconds; 0 keeps forever), the size cap (bytes; 0: none), the chunking."""

    events_max_age_s: Mapping[str, float] = field(
        default_factory=lambda: {DEFAULT_KEY: DEFAULT_EVENTS_MAX_AGE_S}
    )
    samples_max_age_s: float = DEFAULT_SAMPLES_MAX_AGE_S
    max_bytes: int = 0
    chunk: int = PRUNE_CHUNK
    pause_s: float = PRUNE_PAUSE_S

    def __post_init__(self) -> None:
        if self.chunk < 1:
            raise ValueError(f"chunk must be at least 1, got {self.chunk}")

    def max_age_s(self, dataset: str) -> float:
        """The maximum age of ``dataset``'s events; 0 keeps them forever."""
        ages = self.events_max_age_s
        return float(ages.get(dataset, ages.get(DEFAULT_KEY, DEFAULT_EVENTS_MAX_AGE_S)))

    def event_cutoff(self, dataset: str, now: float) -> float | None:
        """Events of ``dataset`` older than this (``ts < cutoff``) go; None keeps them all."""
        age = self.max_age_s(dataset)
        return None if age <= 0 else now - age

    def samples_cutoff(self, now: float) -> float | None:
        """Samples older than this go; None keeps them all."""
        return None if self.samples_max_age_s <= 0 else now - self.samples_max_age_s

    def pause(self) -> None:
        """Let writers in between two chunks; ``limits.check()`` stops a cancelled prune."""
        limits.check()
        if self.pause_s > 0:
            time.sleep(self.pause_s)
        limits.check()


@dataclass
class PruneResult:
    """What a prune removed (or, with ``dry_run``, would remove by age)."""

    events: Counter[str] = field(default_factory=Counter)
    """Events removed per dataset (by age and by the size cap)."""
    samples: int = 0
    size_cap: Counter[str] = field(default_factory=Counter)
    """Of ``events``, how many the size cap removed per dataset (younger than their max age)."""
    size_cap_samples: int = 0
    over_cap_bytes: int = 0
    """A dry run: by how much the store is over ``max_bytes`` now (a prune would remove
    the oldest data until it is under)."""
    reclaimed_bytes: int = 0
    """File space given back to the file system (SQLite's incremental vacuum)."""
    dry_run: bool = False

    @property
    def total_events(self) -> int:
        return sum(self.events.values())

    @property
    def size_cap_events(self) -> int:
        return sum(self.size_cap.values())


@dataclass(frozen=True)
class DatasetStats:
    """One dataset's events: how many, their size, the oldest and newest timestamps."""

    dataset: str
    events: int
    bytes: int
    oldest: float | None
    newest: float | None


@dataclass(frozen=True)
class StoreStats:
    """What a store holds. ``bytes_exact`` says whether the per-dataset sizes are measured
    (Elasticsearch: the indices' store size) or estimated (SQLite, memory: from the
    documents' length)."""

    datasets: tuple[DatasetStats, ...]
    series: int
    samples: int
    samples_bytes: int
    oldest_sample: float | None
    newest_sample: float | None
    total_bytes: int
    """The whole store: SQLite's file and WAL, the indices' size, or the memory estimate."""
    free_bytes: int = 0
    """SQLite: pages inside the file that are free (reused by writes, or given back by vacuum)."""
    bytes_exact: bool = False

    @property
    def events(self) -> int:
        return sum(d.events for d in self.datasets)


def estimate_event_bytes(id_len: int, dataset_len: int, doc_bytes: int) -> int:
    """Estimated bytes of one stored event: its document, its id and dataset twice (row and
    index entries) and about 40 bytes of row and index overhead."""
    return doc_bytes + 2 * (id_len + dataset_len) + 40


class SizeCapped(Protocol):
    """What ``size_cap`` needs of a backend."""

    def used_bytes(self) -> int:
        """Bytes the data takes now (SQLite: pages in use)."""
        ...

    def time_span(self) -> tuple[float, float] | None:
        """The oldest and newest timestamps of all events and samples; None when empty."""
        ...

    def delete_before(self, cutoff: float, policy: RetentionPolicy) -> tuple[Counter[str], int]:
        """Remove every event and sample older than ``cutoff``, in chunks: (events per
        dataset, samples)."""
        ...


def size_cap(target: SizeCapped, policy: RetentionPolicy, result: PruneResult) -> None:
    """While over ``policy.max_bytes``, remove the oldest slice of time of all data.

    Each round removes everything older than the oldest timestamp plus 1/50 of the
    span still stored, so the newest data goes last and a round never overshoots by
    more than 2 % of the span.
    """
    if policy.max_bytes <= 0:
        return
    while target.used_bytes() > policy.max_bytes:
        span = target.time_span()
        if span is None:
            return
        oldest, newest = span
        cutoff = oldest + max((newest - oldest) / SIZE_CAP_SLICES, 0.001)
        events, samples = target.delete_before(cutoff, policy)
        result.events.update(events)
        result.size_cap.update(events)
        result.samples += samples
        result.size_cap_samples += samples
        if cutoff > newest:
            return  # everything went


def prune_with(
    datasets: Callable[[], list[str]],
    delete_events: Callable[[str, float], int],
    delete_samples: Callable[[float], int],
    policy: RetentionPolicy,
    now: float,
    result: PruneResult,
) -> None:
    """Apply the maximum ages: ``delete_events(dataset, cutoff)`` for each dataset with one,
    ``delete_samples(cutoff)`` once (each returns how many went, or would go)."""
    for dataset in datasets():
        cutoff = policy.event_cutoff(dataset, now)
        if cutoff is not None:
            removed = delete_events(dataset, cutoff)
            if removed:
                result.events[dataset] += removed
    cutoff = policy.samples_cutoff(now)
    if cutoff is not None:
        result.samples += delete_samples(cutoff)


def policy_from(store: StoreSettings) -> RetentionPolicy:
    """The policy of the ``store.*`` settings (``store.retention``, ``samples_retention``,
    ``max_bytes``)."""
    return RetentionPolicy(
        events_max_age_s=dict(store.retention),
        samples_max_age_s=float(store.samples_retention),
        max_bytes=int(store.max_bytes),
    )
