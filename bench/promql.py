"""PromQL benchmark: the same range queries on the same samples in Vigil and in Prometheus.

Generates a few hundred series (``--instances`` × 10 counters ``m_total{x}``,
``--instances`` × 2/3 classic histograms ``h_bucket{le}``/``h_sum``/``h_count``
and ``--instances`` gauges ``g``) over 2 hours at a 15 s scrape interval,
backfills them into Debian's Prometheus 2.42 (``promtool tsdb
create-blocks-from openmetrics``, the harness of ``tests/promql_oracle.py``)
and writes them into a Vigil ``SqliteStore`` and a ``MemoryStore``. Each query
then runs as a range query over 1 hour at a 15 s step (241 steps), ``--runs``
times after one warm-up, in the same run:

- **Prometheus**: its own ``execTotalTime`` of ``/api/v1/query_range``
  (``stats=all``) and the CPU time the server process spent
  (``/proc/<pid>/stat``, its HTTP and JSON work included);
- **Vigil SQLite**: ``alerting.promql.Engine.range`` on the SQLite store, end to
  end in-process (read, evaluate; no HTTP or JSON), wall and CPU time;
- **Vigil memory**: the same on the in-memory store (samples already in memory:
  the evaluator's own time, the like-for-like figure for the query engine).

Prints medians of wall time and means of CPU time, Vigil SQLite ÷ Prometheus
(wall over execution time, the like-for-like figure; and CPU over CPU, which a
shared machine distorts less), and whether both gave the same answer. Goal: within
2× of Prometheus for ``sum by (x) (rate(m[5m]))`` and ``histogram_quantile``.

    .venv/bin/python bench/promql.py [--instances 30] [--runs 5]
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from promql_oracle import (
    HOUR,
    T0,
    Answer,
    PrometheusServer,
    PrometheusUnavailable,
    SampleBuilder,
    difference,
    vigil_range,
)

from alerting.promql import Engine
from siem.memory import MemoryStore
from siem.model import Sample
from siem.sqlite import SqliteStore

GOAL_RATIO = 2.0
QUERIES = (
    "sum by (x) (rate(m_total[5m]))",
    "histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))",
    "rate(m_total[5m])",
    "max_over_time(g[5m])",
    "sum by (instance) (increase(m_total[5m]))",
)
GOAL_QUERIES = QUERIES[:2]
START = T0 + HOUR + 1  # ≡ 1 (mod 5): no sample on a window edge, as in the oracle test
END = START + HOUR
STEP = 15.0


def samples(instances: int) -> list[Sample]:
    """``instances`` × 10 counters, ``instances`` × 2/3 histograms and ``instances`` gauges."""
    b = SampleBuilder(random.Random(42))
    end = T0 + 2 * HOUR
    for i in range(instances):
        for x in range(10):
            b.counter("m_total", {"instance": f"i{i}", "x": f"x{x}"}, T0, end)
        if i % 3 != 2:
            b.histogram("h", {"instance": f"i{i}"}, T0, end)
        b.gauge("g", {"instance": f"i{i}"}, T0, end)
    return b.samples


def timed(run: Callable[[], object], runs: int, cpu: Callable[[], float]) -> tuple[float, float]:
    """(median wall seconds, mean CPU seconds by ``cpu``) of ``runs`` calls after a warm-up."""
    run()
    times = []
    cpu_start = cpu()
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), (cpu() - cpu_start) / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=30, help="instances (10 counters each)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per query and engine")
    args = parser.parse_args()
    logging.getLogger("vigil").setLevel(logging.WARNING)
    data = samples(args.instances)
    series = len({s.labels for s in data})
    with tempfile.TemporaryDirectory(prefix="vigil-bench-promql-") as tmp:
        work = Path(tmp)
        sqlite_store, memory_store = SqliteStore(work / "siem.db"), MemoryStore()
        sqlite_store.write(samples=data)
        memory_store.write(samples=data)
        try:
            prometheus = PrometheusServer.start(data, work)
        except PrometheusUnavailable as exc:
            # `make bench` goes on with the other benchmarks.
            print(f"skipped: Prometheus is needed for this benchmark: {exc}")
            sqlite_store.close()
            return
        try:
            print(
                f"{series} series, {len(data):,} samples; range queries over 1 h at a "
                f"{STEP:.0f} s step ({int((END - START) / STEP) + 1} steps), median of "
                f"{args.runs} runs, on {os.cpu_count()} CPUs"
            )
            run(prometheus, Engine(sqlite_store), Engine(memory_store), args.runs)
        finally:
            prometheus.close()
            sqlite_store.close()


def measure(
    prometheus: PrometheusServer, on_sqlite: Engine, in_memory: Engine, expr: str, runs: int
) -> dict[str, float]:
    """Seconds per engine for ``expr`` (median wall, mean CPU; Prometheus' own execution
    time), and whether Vigil gave Prometheus' answer (1.0) or not (0.0)."""
    execs: list[float] = []

    def ask_prometheus() -> Answer:
        rv = prometheus.query_range(expr, START, END, STEP, stats=True)
        execs.append(rv.exec_seconds or 0.0)
        return rv

    rv: dict[str, float] = {}
    _, rv["prom_cpu"] = timed(ask_prometheus, runs, prometheus.cpu_seconds)
    rv["exec"] = statistics.median(execs[1:])
    sqlite_range = functools.partial(on_sqlite.range, expr, START, END, STEP)
    rv["sqlite"], rv["sqlite_cpu"] = timed(sqlite_range, runs, time.process_time)
    memory_range = functools.partial(in_memory.range, expr, START, END, STEP)
    rv["memory"], rv["memory_cpu"] = timed(memory_range, runs, time.process_time)
    answer = prometheus.query_range(expr, START, END, STEP)
    same = difference(vigil_range(on_sqlite, expr, START, END, STEP), answer) is None
    rv["same"] = 1.0 if same else 0.0
    return rv


def run(prometheus: PrometheusServer, on_sqlite: Engine, in_memory: Engine, runs: int) -> None:
    print("ms per query; Prometheus CPU includes its HTTP and JSON work, Vigil's has none")
    print(
        f"{'query':<58} {'Prom exec':>9} {'CPU':>6} {'SQLite':>7} {'CPU':>6} {'memory':>6} "
        f"{'CPU':>6} {'SQLite × exec':>13} {'× CPU':>6} {'memory × exec':>13} {'× CPU':>6} same"
    )
    verdicts: dict[str, list[bool]] = {"SQLite, end to end": [], "in memory": []}
    for expr in QUERIES:
        m = measure(prometheus, on_sqlite, in_memory, expr, runs)
        ratio, memory_ratio = m["sqlite"] / m["exec"], m["memory"] / m["exec"]
        if expr in GOAL_QUERIES:
            verdicts["SQLite, end to end"].append(ratio <= GOAL_RATIO)
            verdicts["in memory"].append(memory_ratio <= GOAL_RATIO)
        print(
            f"{expr:<58} {m['exec'] * 1e3:>9.1f} {m['prom_cpu'] * 1e3:>6.1f} "
            f"{m['sqlite'] * 1e3:>7.1f} {m['sqlite_cpu'] * 1e3:>6.1f} {m['memory'] * 1e3:>6.1f} "
            f"{m['memory_cpu'] * 1e3:>6.1f} {ratio:>13.1f} {m['sqlite_cpu'] / m['prom_cpu']:>6.1f} "
            f"{memory_ratio:>13.1f} {m['memory_cpu'] / m['prom_cpu']:>6.1f} "
            f"{'yes' if m['same'] else 'NO'}"
        )
    for store, met in verdicts.items():
        verdict = "met" if all(met) else "NOT met"
        print(
            f"goal, Vigil {store} within {GOAL_RATIO:.0f}x of Prometheus' execution time: {verdict}"
        )


if __name__ == "__main__":
    main()
