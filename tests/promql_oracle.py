"""Prometheus as the oracle for Vigil's PromQL: the same samples in both, compared answers.

``generate()`` makes deterministic samples (counters with resets, gauges,
classic histograms, series with gaps, series that start late or end early,
special values, non-ASCII label values); ``openmetrics()`` writes them for
``promtool tsdb create-blocks-from openmetrics``; ``PrometheusServer.start``
backfills them into a real Prometheus (Debian's 2.42) and serves its HTTP API
on a free port; ``vigil_instant``/``vigil_range`` and ``PrometheusServer.query``/
``query_range`` give an ``Answer`` each, and ``difference`` compares two;
``Oracle`` holds it all for the differential test (fixture ``promql_oracle``).
``.venv/bin/python tests/promql_oracle.py`` prints the expressions Vigil answers
differently, as the test's ``KNOWN_GAPS`` should list them.

Timestamps. Prometheus 2 selects windows closed on the left (``[t - r, t]``),
Prometheus 3 and Vigil open (``(t - r, t]``); the two only differ for a sample
or a subquery step exactly on ``t - r``. Every sample here is at whole seconds
plus 1–999 ms, and every evaluation time (query times, range-query steps,
``@`` times) is a whole second ≡ 1 (mod 5): with ranges, offsets and subquery
steps in whole multiples of 5 s, no sample or subquery step ever lands on a
window's edge, so both versions give Prometheus 3's answer.

Staleness. OpenMetrics has no staleness marker, so a series "goes stale" by
ending: after its last sample it is found for the 5-minute lookback, then no
more — what Prometheus does for a series without a marker (e.g. backfilled).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from conftest import free_port

from alerting.promql import Engine, Matrix, PromQLError
from siem.model import Labels, Sample, Series, labels_from
from siem.sqlite import SqliteStore

T0 = 1_714_521_600
"""2024-05-01T00:00:00Z: old enough that the backfilled blocks never touch Prometheus' head."""

HOUR = 3600
PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"

Points = tuple[tuple[float, float], ...]

BOUNDS = ("0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf")
"""Histogram bucket bounds, as ``le`` label values."""


class PrometheusUnavailable(Exception):
    """The binaries are missing or the server did not start."""


def _ms(seconds: int, rng: random.Random) -> int:
    """A timestamp in ms: whole ``seconds`` plus 1–999 ms, never on a window edge, and
    one Prometheus reads back exactly (promtool parses the seconds as a float and
    truncates ``seconds * 1000``; Python's float arithmetic is the same)."""
    while True:
        ms = seconds * 1000 + rng.randint(1, 999)
        if int(float(_ts_text(ms)) * 1000) == ms:
            return ms


def _ts_text(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000:03d}"


@dataclass
class SampleBuilder:
    """Deterministic series (from ``rng``) at timestamps ``_ms`` makes safe."""

    rng: random.Random
    samples: list[Sample] = field(default_factory=list)

    def add(self, name: str, labels: dict[str, str], points: list[tuple[int, float]]) -> None:
        key = labels_from({"__name__": name, **labels})
        for ms, value in points:
            self.samples.append(Sample(key, ms / 1000, value))

    def times(
        self, start: int, end: int, interval: int, phase: int = 7
    ) -> Iterator[tuple[int, int]]:
        """(index, ms timestamp) every ``interval`` s from ``start + phase`` to before ``end``."""
        for i, s in enumerate(range(start + phase, end, interval)):
            yield i, _ms(s, self.rng)

    def counter(
        self, name: str, labels: dict[str, str], start: int, end: int, interval: int = 15
    ) -> None:
        resets = {self.rng.randrange(20, 600) for _ in range(self.rng.randint(0, 2))}
        value, points = self.rng.uniform(0, 1000), []
        for i, ms in self.times(start, end, interval, self.rng.randint(1, 14)):
            value = self.rng.uniform(0, 3) if i in resets else value + self.rng.uniform(0, 20)
            points.append((ms, round(value, 3)))
        self.add(name, labels, points)

    def gauge(
        self, name: str, labels: dict[str, str], start: int, end: int, interval: int = 15
    ) -> None:
        """A random walk around -10..40 (negative values included)."""
        value, points = self.rng.uniform(-10, 40), []
        for _, ms in self.times(start, end, interval, 3):
            value += self.rng.uniform(-1.5, 1.5)
            points.append((ms, round(value, 2)))
        self.add(name, labels, points)

    def histogram(
        self, name: str, labels: dict[str, str], start: int, end: int, interval: int = 15
    ) -> None:
        """A classic histogram: ``name_bucket{le}`` for ``BOUNDS``, ``name_sum`` and
        ``name_count``, with exponentially distributed observations and one reset."""
        rng = self.rng
        reset = rng.randrange(100, 600)
        counts = [0.0] * len(BOUNDS)
        total = 0.0
        series: dict[str, list[tuple[int, float]]] = {le: [] for le in BOUNDS}
        sums: list[tuple[int, float]] = []
        for i, ms in self.times(start, end, interval, 11):
            if i == reset:
                counts, total = [0.0] * len(BOUNDS), 0.0
            for _ in range(rng.randint(0, 12)):
                observed = rng.expovariate(2.0)
                total += observed
                for k, le in enumerate(BOUNDS):
                    if observed <= float(le):
                        counts[k] += 1
            for k, le in enumerate(BOUNDS):
                series[le].append((ms, counts[k]))
            sums.append((ms, round(total, 6)))
        for le in BOUNDS:
            self.add(f"{name}_bucket", {**labels, "le": le}, series[le])
        self.add(f"{name}_sum", labels, sums)
        self.add(f"{name}_count", labels, series["+Inf"])


def generate(seed: int = 9, span: int = 3 * HOUR) -> list[Sample]:
    """The oracle data set: about 100 series over ``span`` seconds from ``T0``."""
    b = SampleBuilder(random.Random(seed))
    rng = b.rng
    end = T0 + span
    instances = ("a:9100", "b:9100", "c:9100")
    for job in ("api", "web"):
        for instance in instances:
            for code in ("200", "500"):
                for method in ("GET", "POST"):
                    labels = {"job": job, "instance": instance, "code": code, "method": method}
                    b.counter("http_requests_total", labels, T0, end)
    for instance in instances:
        for zone in ("north", "south"):
            labels = {"instance": instance, "zone": zone}
            b.gauge("node_temperature_celsius", labels, T0, end)
    # Classic histograms: cumulative buckets, _sum and _count, one reset per instance.
    for instance in instances:
        b.histogram("request_duration_seconds", {"job": "api", "instance": instance}, T0, end)
    # Gaps: a 12-minute hole (longer than the lookback) and a 2-minute one.
    for instance in instances:
        value, points = 0.0, []
        for _, ms in b.times(T0, end, 30, 13):
            s = ms // 1000 - T0
            if 5400 <= s < 6120 or 8000 <= s < 8120:
                continue
            value += rng.uniform(0, 5)
            points.append((ms, round(value, 3)))
        b.add("batch_items_processed_total", {"job": "batch", "instance": instance}, points)
    # Churn: pods that start late and end early, and so go stale mid-range.
    lifetimes = ((0, 3), (0, 2.1), (1.6, 2.7), (2.2, 3), (0.5, 1.2), (2.75, 3))
    for n, (first, last) in enumerate(lifetimes, 1):
        points = []
        for _, ms in b.times(T0 + int(first * HOUR), T0 + int(last * HOUR), 15, 5):
            points.append((ms, float(rng.randint(0, 50))))
        b.add("worker_queue_depth", {"pod": f"w-{n}", "job": "worker"}, points)
    # Values Prometheus handles specially.
    special = {
        "nan": lambda i: math.nan if i % 7 == 0 else float(i % 5),
        "inf": lambda i: math.inf if i % 11 == 0 else -2.5,
        "neginf": lambda i: -math.inf,
        "huge": lambda i: 1.6e308 + i * 1e292,
        "tiny": lambda i: 5e-324 * (i % 3),
        "zero": lambda i: 0.0,
    }
    for kind, value_at in special.items():
        points = [(ms, value_at(i)) for i, ms in b.times(T0, end, 15, 2)]
        b.add("special_values", {"kind": kind}, points)
    for n in range(3):
        points = [(ms, 1.7e308 - n * 1e307) for _, ms in b.times(T0, end, 15, 4)]
        b.add("huge_values", {"i": str(n)}, points)
    # Label values for RE2 classes (\pL, [[:alpha:]], \d) and label_replace/label_join.
    cities = ("Zürich", "東京", "abc", "a_1", "ÅSA", "123", "x-y.z")
    for n, city in enumerate(cities):
        points = [(ms, float(n)) for _, ms in b.times(T0, end, 60, 9)]
        b.add("city_info", {"city": city, "path": f"/api/v{n % 3}/items"}, points)
    for instance in instances:
        points = [
            (ms, 0.0 if 3000 <= ms // 1000 - T0 < 3300 and instance == "b:9100" else 1.0)
            for _, ms in b.times(T0, end, 15, 6)
        ]
        b.add("up", {"job": "api", "instance": instance}, points)
    return b.samples


def _value_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _label_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def openmetrics(samples: list[Sample]) -> str:
    """``samples`` in OpenMetrics text (no TYPE lines: every family is "unknown")."""
    lines = []
    for sample in sorted(samples, key=lambda s: (s.timestamp, s.labels)):
        labels = dict(sample.labels)
        name = labels.pop("__name__")
        pairs = ",".join(f'{k}="{_label_text(v)}"' for k, v in labels.items())
        ms = round(sample.timestamp * 1000)
        lines.append(f"{name}{{{pairs}}} {_value_text(sample.value)} {_ts_text(ms)}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Answer:
    """A query's result in a form both sides share.

    ``kind`` is Prometheus' result type (``vector``, ``scalar``, ``matrix``,
    ``string``) or ``error``; ``series`` maps labels to points (one point for
    a vector element, at the query time); ``order`` is the vector's values in
    answer order (what ``sort()`` decides).
    """

    kind: str
    series: dict[Labels, Points] = field(default_factory=dict)
    order: tuple[float, ...] = ()
    detail: str = ""
    exec_seconds: float | None = None  # Prometheus' own execTotalTime, when asked (stats)


class PrometheusServer:
    """A Prometheus serving only backfilled blocks, for the whole test session."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log

    @classmethod
    def start(cls, samples: list[Sample], work: Path, timeout: float = 30.0) -> PrometheusServer:
        """Backfill ``samples`` into a TSDB under ``work`` and serve it; raises
        ``PrometheusUnavailable`` when the binaries are missing or it does not start."""
        for binary in (PROMETHEUS, PROMTOOL):
            if not Path(binary).exists() and not shutil.which(Path(binary).name):
                raise PrometheusUnavailable(f"{binary} not found (scripts/install-system-deps)")
        source, data = work / "samples.om", work / "tsdb"
        source.write_text(openmetrics(samples), encoding="utf-8")
        done = subprocess.run(
            [_which(PROMTOOL), "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
            capture_output=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise PrometheusUnavailable(f"promtool backfill failed: {done.stderr.decode()[-2000:]}")
        config = work / "prometheus.yml"
        config.write_text("global: {}\n", encoding="utf-8")
        port = free_port()
        log = work / "prometheus.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    _which(PROMETHEUS),
                    f"--storage.tsdb.path={data}",
                    f"--config.file={config}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=100y",
                    "--query.lookback-delta=5m",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = cls(process, f"http://127.0.0.1:{port}", log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise PrometheusUnavailable(f"prometheus exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(server.url + "/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return server
            except OSError:
                pass
            time.sleep(0.1)
        server.close()
        raise PrometheusUnavailable(f"prometheus not ready after {timeout:.0f} s")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far (Linux ``/proc``)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _get(self, path: str, params: dict[str, str]) -> Answer:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=60) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as err:
            body = json.loads(err.read())
            return Answer("error", detail=f"{body.get('errorType')}: {body.get('error')}")
        answer = _from_prometheus(body["data"])
        timings = body["data"].get("stats", {}).get("timings", {})
        if "execTotalTime" in timings:
            return replace(answer, exec_seconds=float(timings["execTotalTime"]))
        return answer

    def query(self, expr: str, at: float) -> Answer:
        return self._get("/api/v1/query", {"query": expr, "time": _num(at)})

    def query_range(
        self, expr: str, start: float, end: float, step: float, *, stats: bool = False
    ) -> Answer:
        """The range query; with ``stats`` the answer carries Prometheus' execution time."""
        params = {"query": expr, "start": _num(start), "end": _num(end), "step": _num(step)}
        if stats:
            params["stats"] = "all"
        return self._get("/api/v1/query_range", params)


def _which(binary: str) -> str:
    return binary if Path(binary).exists() else shutil.which(Path(binary).name) or binary


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _from_prometheus(data: dict[str, object]) -> Answer:
    kind, result = str(data["resultType"]), data["result"]
    if kind == "scalar" or kind == "string":
        assert isinstance(result, list)
        value = float(result[1]) if kind == "scalar" else math.nan
        return Answer(kind, {(): ((float(result[0]), value),)}, detail=str(result[1]))
    assert isinstance(result, list)
    series: dict[Labels, Points] = {}
    order = []
    for item in result:
        labels = labels_from(item["metric"])
        if kind == "vector":
            t, v = item["value"]
            series[labels] = ((float(t), float(v)),)
            order.append(float(v))
        else:
            series[labels] = tuple((float(t), float(v)) for t, v in item["values"])
    return Answer(kind, series, tuple(order))


def _from_vigil(result: object, at: float) -> Answer:
    if isinstance(result, str):
        return Answer("string", {(): ((at, math.nan),)}, detail=result)
    if isinstance(result, float | int):
        return Answer("scalar", {(): ((at, float(result)),)})
    if isinstance(result, Matrix):
        return _matrix(list(result.series))
    assert isinstance(result, list)
    series: dict[Labels, Points] = {}
    for item in result:
        if item.labels in series:
            return Answer("error", detail=f"duplicate labels {item.labels} in the answer")
        series[item.labels] = ((at, float(item.value)),)
    return Answer("vector", series, tuple(float(item.value) for item in result))


def _matrix(result: list[Series]) -> Answer:
    series: dict[Labels, Points] = {}
    for item in result:
        if item.labels in series:
            return Answer("error", detail=f"duplicate labels {item.labels} in the answer")
        series[item.labels] = tuple((float(t), float(v)) for t, v in item.points)
    return Answer("matrix", series)


def vigil_instant(engine: Engine, expr: str, at: float) -> Answer:
    """``expr`` at ``at`` as Prometheus' instant query API answers it (``Engine.query``):
    a vector, a scalar, a matrix for a range vector, or a string."""
    try:
        return _from_vigil(engine.query(expr, at), at)
    except PromQLError as exc:
        return Answer("error", detail=str(exc))
    except Exception as exc:  # a crash is an answer that never matches
        return Answer("crash", detail=f"{type(exc).__name__}: {exc}")


def vigil_range(engine: Engine, expr: str, start: float, end: float, step: float) -> Answer:
    try:
        return _matrix(engine.range(expr, start, end, step))
    except PromQLError as exc:
        return Answer("error", detail=str(exc))
    except Exception as exc:  # a crash is an answer that never matches
        return Answer("crash", detail=f"{type(exc).__name__}: {exc}")


def same_value(a: float, b: float) -> bool:
    """Equal within relative 1e-9 / absolute 1e-12; NaN equals NaN, infinities by sign."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= 1e-12 + 1e-9 * max(abs(a), abs(b))


def _show(labels: Labels) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in labels) + "}"


def difference(vigil: Answer, prometheus: Answer, ordered: bool = False) -> str | None:
    """How ``vigil`` differs from ``prometheus`` (the first difference), or None.

    Two errors are the same answer (the messages differ by design); ``ordered``
    also compares the vector's order of values (for ``sort()``/``sort_desc()``).
    """
    if vigil.kind == "error" and prometheus.kind == "error":
        return None
    if vigil.kind != prometheus.kind:
        return (
            f"Vigil gives {vigil.kind} {vigil.detail!s:.200}, "
            f"Prometheus {prometheus.kind} {prometheus.detail!s:.200}"
        )
    if vigil.kind == "string" and vigil.detail != prometheus.detail:
        return f"Vigil gives the string {vigil.detail!r}, Prometheus {prometheus.detail!r}"
    missing = sorted(set(prometheus.series) - set(vigil.series))
    extra = sorted(set(vigil.series) - set(prometheus.series))
    if missing or extra:
        return (
            f"series differ: only Prometheus has {', '.join(map(_show, missing[:3]))} "
            f"({len(missing)}); only Vigil has {', '.join(map(_show, extra[:3]))} ({len(extra)})"
        )
    for labels, expected in prometheus.series.items():
        got = vigil.series[labels]
        if [t for t, _ in got] != [t for t, _ in expected]:
            times = sorted({t for t, _ in got} ^ {t for t, _ in expected})
            return f"{_show(labels)}: points at different times, e.g. {times[:3]}"
        for (t, a), (_, b) in zip(got, expected, strict=True):
            if not same_value(a, b):
                return f"{_show(labels)} at {t:.3f}: Vigil {a!r}, Prometheus {b!r}"
    if ordered and not all(
        same_value(a, b) for a, b in zip(vigil.order, prometheus.order, strict=True)
    ):
        return f"order differs: Vigil {vigil.order[:5]}, Prometheus {prometheus.order[:5]}"
    return None


EXPRESSIONS = Path(__file__).parent / "files" / "promql_oracle" / "expressions.txt"


def load_expressions(path: Path = EXPRESSIONS) -> list[tuple[str, str]]:
    """(annotation, expression) per line of ``path``: the annotation is "", "empty" or
    "error" (a line's ``empty:``/``error:`` prefix); blank and ``#`` lines are skipped."""
    rv = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        kind, _, rest = text.partition(": ")
        rv.append((kind, rest) if kind in ("empty", "error") and rest else ("", text))
    return rv


EVAL_TIMES = (T0 + 2 * HOUR + 1, T0 + 2 * HOUR + 2401, T0 + 3 * HOUR + 121)
"""Instant query times: mid-data, while pods churn and a series has a gap, and just
after the data ends (only the lookback still finds samples)."""

RANGE = (T0 + HOUR + 1801, T0 + 2 * HOUR + 1801, 15.0)
"""Range query start, end and step: the middle hour at a 15-second step (241 steps)."""


@dataclass
class Oracle:
    """The same samples in Prometheus and in a Vigil SQLite store, and both answers."""

    samples: list[Sample]
    prometheus: PrometheusServer
    store: SqliteStore
    engine: Engine = field(init=False)
    _cache: dict[tuple[str, str], list[Answer]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.engine = Engine(self.store)

    @classmethod
    def start(cls, work: Path, samples: list[Sample] | None = None) -> Oracle:
        samples = generate() if samples is None else samples
        store = SqliteStore(work / "siem.db")
        try:
            store.write(samples=samples)
            return cls(samples, PrometheusServer.start(samples, work), store)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        self.prometheus.close()
        self.store.close()

    def answers(self, side: str, expr: str) -> list[Answer]:
        """``expr``'s answers from ``side`` ("vigil" or "prometheus"): one instant query
        per ``EVAL_TIMES``, then the ``RANGE`` query."""
        key = (side, expr)
        if key not in self._cache:
            if side == "prometheus":
                rv = [self.prometheus.query(expr, t) for t in EVAL_TIMES]
                rv.append(self.prometheus.query_range(expr, *RANGE))
            else:
                rv = [vigil_instant(self.engine, expr, t) for t in EVAL_TIMES]
                rv.append(vigil_range(self.engine, expr, *RANGE))
            self._cache[key] = rv
        return self._cache[key]

    def difference(self, expr: str) -> str | None:
        """Where Vigil's answers to ``expr`` differ from Prometheus' (the first), or None."""
        ordered = expr.startswith("sort")
        labels = [f"instant at T0+{t - T0:.0f}s" for t in EVAL_TIMES] + ["range"]
        pairs = zip(self.answers("vigil", expr), self.answers("prometheus", expr), strict=True)
        for label, (mine, theirs) in zip(labels, pairs, strict=True):
            found = difference(mine, theirs, ordered=ordered and label != "range")
            if found:
                return f"{label}: {found}"
        return None


def main() -> None:
    """Print the expressions Vigil answers differently from Prometheus, as the
    differential test's ``KNOWN_GAPS`` should list them, with the first difference each."""
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="vigil-promql-oracle-") as tmp:
        oracle = Oracle.start(Path(tmp))
        try:
            expressions = [expr for _, expr in load_expressions()]
            found = {expr: oracle.difference(expr) for expr in expressions}
        finally:
            oracle.close()
    gaps = [expr for expr in expressions if found[expr]]
    for expr in gaps:
        print(f"{expr}\n    {found[expr]}", file=sys.stderr)
    print(f"{len(expressions) - len(gaps)} of {len(expressions)} match", file=sys.stderr)
    print("\n".join(gaps))


if __name__ == "__main__":
    main()
