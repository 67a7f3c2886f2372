"""One evaluation pass's reads of the store, shared between its rules.

A thousand rules that each pick a few series of the same metric over the same
window (``rate(x{service="s1"}[30s])``, ``rate(x{service="s2"}[30s])``...) would
each ask the store for their series: a ``SqliteStore`` walks every series of
the metric's name per question. ``SharedSelects`` stands between the
evaluator and the store for one pass: the second question about a metric name
over the same time range loads all of that name's series once, and this
question and every later one are answered from memory through a per-label
index. A name asked about once is read exactly as before, so a pass with no
repetition costs what it did. ``forget`` drops a name the pass has just
written (a recording rule's result, ``ALERTS``), so later rules read the new
samples, as Prometheus' rule order promises.

The evaluator (``alerting.promql.Engine``) reads the store only through
``select_columns`` and ``latest_columns``; everything else goes to the store
itself. Over the engine's ``alerting.sample_cache.SampleCache`` a read the
cache answers from memory goes straight to it (nothing to share), ``forget``
tells the cache to catch up.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from siem import limits
from siem.model import METRIC_NAME, Columns, Matcher, SelectsColumns, Store

_Key = tuple[str, float, float]


@dataclass
class _Loaded:
    series: list[Columns]
    labels: list[dict[str, str]]
    index: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    def positions(self, name: str, value: str) -> list[int]:
        """Positions of the series whose label ``name`` is ``value`` (an index built once)."""
        by_value = self.index.get(name)
        if by_value is None:
            by_value = {}
            for i, labels in enumerate(self.labels):
                by_value.setdefault(labels.get(name, ""), []).append(i)
            self.index[name] = by_value
        return by_value.get(value, [])


class SharedSelects(SelectsColumns):
    """``select`` for one evaluation pass, shared by every rule of the pass."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._read = getattr(store, "select_columns", None) or (
            lambda matchers, start, end: [
                (
                    s.labels,
                    array("d", [p[0] for p in s.points]),
                    array("d", [p[1] for p in s.points]),
                )
                for s in store.select(matchers, start, end)
            ]
        )
        self._asked: set[_Key] = set()
        self._loaded: dict[_Key, _Loaded] = {}
        self.loads = 0
        """Whole-name loads so far (for tests and the benchmark)."""

    def latest_columns(
        self, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[Columns]:
        """The store's own ``latest_columns`` (the sample cache's, where it holds the
        time), else the shared window cut to each series' newest sample."""
        own = getattr(self.store, "latest_columns", None)
        serves = getattr(self.store, "serves", None)
        if own is not None and (serves is None or serves(matchers, end)):
            found: list[Columns] = own(matchers, start, end)
            return found
        return [(lb, t[-1:], v[-1:]) for lb, t, v in self._columns(matchers, start, end) if t]

    def _columns(self, matchers: Sequence[Matcher], start: float, end: float) -> list[Columns]:
        name = next((m.value for m in matchers if m.name == METRIC_NAME and m.op == "="), None)
        serves = getattr(self.store, "serves", None)
        if name is None or (serves is not None and serves(matchers, start)):
            found: list[Columns] = self._read(matchers, start, end)
            return found
        key = (name, start, end)
        loaded = self._loaded.get(key)
        served = False  # a load from the store was counted against the budget there
        if loaded is None:
            if key not in self._asked:
                self._asked.add(key)
                found = self._read(matchers, start, end)
                return found
            found = self._read([Matcher(METRIC_NAME, "=", name)], start, end)
            loaded = _Loaded(found, [dict(s[0]) for s in found])
            self._loaded[key] = loaded
            self.loads += 1
        else:
            limits.check()
            served = True
        rest = [m for m in matchers if m.name != METRIC_NAME or m.op != "="]
        exact = next((m for m in rest if m.op == "="), None)
        if exact is not None:
            candidates: Iterable[int] = loaded.positions(exact.name, exact.value)
        else:
            candidates = range(len(loaded.series))
        rv = [
            loaded.series[i] for i in candidates if all(m.matches(loaded.labels[i]) for m in rest)
        ]
        if served:
            limits.take(sum(len(s[1]) for s in rv))
        return rv

    def forget(self, names: Iterable[str]) -> None:
        """The pass wrote samples named ``names``: read them from the store again."""
        gone = set(names)
        forget = getattr(self.store, "forget", None)
        if forget is not None:
            forget(gone)
        for key in [k for k in self._loaded if k[0] in gone]:
            del self._loaded[key]
        self._asked = {k for k in self._asked if k[0] not in gone}
