"""``alerting.shared_select``: rules of one pass share their reads of the store, and see
exactly what reading the store themselves would give."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from alerting.engine import AlertEngine
from alerting.rules import load_rules
from alerting.shared_select import SharedSelects
from alerting.state import AlertBook, AlertDB
from siem import limits
from siem.memory import MemoryStore
from siem.model import Columns, Matcher, Sample, make_labels
from siem.sqlite import SqliteStore

T0 = 1_700_000_000.0


class CountingStore(SqliteStore):
    """A real SQLite store that counts the reads of samples it answers (``select`` and
    ``select_columns``)."""

    selects = 0

    def _columns(self, matchers: Sequence[Matcher], start: float, end: float) -> list[Columns]:
        self.selects += 1
        return super()._columns(matchers, start, end)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    rv = CountingStore(tmp_path / "siem.db")
    samples = []
    for i in range(40):
        for t in range(0, 60, 2):
            labels = make_labels(
                "req_total", service=f"s{i % 10}", instance=f"i{i}", zone="" if i % 3 else "eu"
            )
            samples.append(Sample(labels, T0 + t, float(t * i)))
    samples.append(Sample(make_labels("other", service="s1"), T0 + 10, 1.0))
    rv.write(samples=samples)
    return rv


MATCHER_SETS = [
    [Matcher("service", "=", "s3")],
    [Matcher("service", "!=", "s3")],
    [Matcher("service", "=~", "s[12]"), Matcher("instance", "!~", "i1.*")],
    [Matcher("zone", "=", "")],  # the label is absent
    [Matcher("zone", "=", "eu"), Matcher("service", "=", "s0")],
    [],
]


@pytest.mark.parametrize("matchers", MATCHER_SETS)
def test_shared_select_answers_as_the_store(store: CountingStore, matchers: list[Matcher]) -> None:
    shared = SharedSelects(store)
    name = Matcher("__name__", "=", "req_total")
    want = store.select([name, *matchers], T0 + 10, T0 + 40)
    for _ in range(3):  # the first read, the load, then from memory
        assert shared.select([name, *matchers], T0 + 10, T0 + 40) == want
    assert shared.loads == 1


def test_shared_select_reads_each_name_and_range_once(store: CountingStore) -> None:
    shared = SharedSelects(store)
    name = Matcher("__name__", "=", "req_total")
    for i in range(10):
        shared.select([name, Matcher("service", "=", f"s{i}")], T0, T0 + 30)
    # The first question as asked, the second loads the whole name; the rest are free.
    assert store.selects == 2
    shared.select([name, Matcher("service", "=", "s1")], T0, T0 + 31)  # another range
    shared.select([Matcher("service", "=", "s1")], T0, T0 + 30)  # no name: never shared
    assert store.selects == 4


def test_shared_select_forget_reads_what_the_pass_wrote(store: CountingStore) -> None:
    shared = SharedSelects(store)
    name = [Matcher("__name__", "=", "other")]
    assert len(shared.select(name, T0, T0 + 60)[0].points) == 1
    assert len(shared.select(name, T0, T0 + 60)[0].points) == 1
    store.write(samples=[Sample(make_labels("other", service="s1"), T0 + 20, 2.0)])
    shared.forget(["other"])
    assert len(shared.select(name, T0, T0 + 60)[0].points) == 2


def test_shared_select_counts_memory_answers_against_the_query_budget(
    store: CountingStore,
) -> None:
    shared = SharedSelects(store)
    name = Matcher("__name__", "=", "req_total")
    shared.select([name], T0, T0 + 60)
    shared.select([name], T0, T0 + 60)  # loaded: 40 series x 30 points
    budget = limits.QueryBudget(max_samples=100, timeout_s=5)
    with budget.active(), pytest.raises(limits.TooManySamplesError):
        shared.select([name], T0, T0 + 60)


RULES = """\
groups:
  - name: a
    rules:
      - record: service:req:rate30s
        expr: sum by (service) (rate(req_total[30s]))
      - alert: Busy
        expr: service:req:rate30s > 30
      - alert: BusyInstance
        expr: rate(req_total{service="s9"}[30s]) > 15
  - name: b
    rules:
      - alert: BusyFromRecord
        expr: service:req:rate30s{service=~"s[89]"} > 30
      - alert: AnyBusy
        expr: rate(req_total{service!="s0"}[30s]) > 30
"""


def test_engine_with_shared_fetches_fires_what_it_fires_without(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    groups = load_rules([rules], default_interval=1.0)
    results = []
    for share in (True, False):
        store = MemoryStore()
        engine = AlertEngine(
            store,
            groups,
            AlertBook(AlertDB(tmp_path / f"alerts-{share}.db")),
            [],
            registry=CollectorRegistry(),
            share_fetches=share,
        )
        fired = []
        for step in range(0, 60, 2):
            store.write(
                samples=[
                    Sample(
                        make_labels("req_total", service=f"s{i % 10}", instance=f"i{i}"),
                        T0 + step,
                        float(step * i),
                    )
                    for i in range(40)
                ]
            )
            changes = engine.run_once(at=T0 + step + 1)
            fired.append(
                sorted((c.alert.name, c.after, c.alert.labels.get("service", "")) for c in changes)
            )
        results.append(fired)
        # The recording rule's samples went in before the later rules of the same pass read them.
        assert any(("BusyFromRecord", "firing", "s9") in f for f in fired)
    assert results[0] == results[1]
