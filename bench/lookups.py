"""Series look-up benchmark: Grafana's metric and label pickers on SQLite, with and without
reading samples.

Fills one SQLite file with S series (default 2,000: 40 metrics x 50 instances)
of P samples each (default 500, one every 15 s), then runs each look-up
``--runs`` times through ``SqliteStore``'s series index (``series``,
``label_names``, ``label_values``: what ``/api/v1/`` answers from) and the
same question answered by reading the samples (``select`` over the same
range, then the label sets: how ``/api/v1/`` answered before, the baseline),
and prints the p50 of each and their ratio.

    .venv/bin/python bench/lookups.py [--series 2000] [--samples 500] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from siem.model import METRIC_NAME, Matcher, Sample, make_labels
from siem.sqlite import SqliteStore

T0 = 1_700_000_000.0
STEP_S = 15.0
METRICS = 40
BATCH = 50_000


def fill(store: SqliteStore, series: int, samples: int) -> None:
    labels = [
        make_labels(f"bench_metric_{n % METRICS}", job="bench", instance=f"host{n // METRICS}:9100")
        for n in range(series)
    ]
    batch: list[Sample] = []
    for i in range(samples):
        for lab in labels:
            batch.append(Sample(lab, T0 + STEP_S * i, float(i)))
            if len(batch) == BATCH:
                store.write(samples=batch)
                batch = []
    store.write(samples=batch)


def p50_ms(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=2_000)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    end = T0 + STEP_S * args.samples
    every = [Matcher(METRIC_NAME, "=~", ".+")]
    one = [Matcher(METRIC_NAME, "=", "bench_metric_7")]
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "siem.db")
        started = time.perf_counter()
        fill(store, args.series, args.samples)
        print(
            f"{args.series:,} series x {args.samples:,} samples filled in "
            f"{time.perf_counter() - started:.1f} s; p50 of {args.runs} runs, ms"
        )

        def names_from_samples(matchers: list[Matcher]) -> set[str]:
            return {s.name for s in store.select(matchers, T0, end)}

        def series_from_samples(matchers: list[Matcher]) -> list[Any]:
            return [s.labels for s in store.select(matchers, T0, end)]

        def label_names_from_samples(matchers: list[Matcher]) -> set[str]:
            return {k for s in store.select(matchers, T0, end) for k, _ in s.labels}

        cases: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
            (
                "label/__name__/values",
                lambda: store.label_values(METRIC_NAME, [], T0, end),
                lambda: names_from_samples(every),
            ),
            (
                "series?match[]=bench_metric_7",
                lambda: store.series(one, T0, end),
                lambda: series_from_samples(one),
            ),
            (
                "labels?match[]=bench_metric_7",
                lambda: store.label_names(one, T0, end),
                lambda: label_names_from_samples(one),
            ),
            (
                "label/instance/values (all)",
                lambda: store.label_values("instance", [], T0, end),
                lambda: {dict(lab)["instance"] for lab in series_from_samples(every)},
            ),
        ]
        print(f"{'look-up':34} {'index':>9} {'samples':>9} {'ratio':>7}")
        for name, indexed, baseline in cases:
            fast = p50_ms(indexed, args.runs)
            slow = p50_ms(baseline, args.runs)
            print(f"{name:34} {fast:9.1f} {slow:9.1f} {slow / fast:6.0f}x")
        store.close()


if __name__ == "__main__":
    main()
