"""A small runner for Prometheus' PromQL test-script format (``promql/promqltest``).

Reads ``load``/``clear``/``eval instant``/``eval range`` scripts like the files in
tests/data/promqltest/ (copied from Prometheus, Apache-2.0) and runs them
against ``alerting.promql.Engine`` over a real ``MemoryStore``. Cases with
native histograms (``{{...}}``) are skipped: Vigil refuses those.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from alerting.promql import Engine, InstantSample, Matrix, PromQLError
from siem.memory import MemoryStore
from siem.model import STALE_NAN, Labels, Sample, Series

_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_SERIES = re.compile(r"^\s*(?P<metric>[^{\s]*(?:\{.*?\})?)\s+(?P<values>.*)$")
_LABEL = re.compile(r'\s*([^\s=,"]+|"(?:[^"\\]|\\.)*")\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_EVAL = re.compile(
    r"^eval(?P<variant>_\w+)?\s+(?:instant\s+at\s+(?P<at>\S+)|range\s+from\s+(?P<start>\S+)"
    r"\s+to\s+(?P<end>\S+)\s+step\s+(?P<step>\S+))\s+(?P<expr>.+)$"
)


def duration(text: str) -> float:
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return float(text)
    sign = -1 if text.startswith("-") else 1
    return sign * sum(int(n) * _UNITS[u] for n, u in _DURATION.findall(text))


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), text)


def parse_metric(text: str) -> Labels:
    text = text.strip()
    name, _, rest = text.partition("{")
    labels: dict[str, str] = {}
    if name:
        labels["__name__"] = name
    for key, value in _LABEL.findall(rest.rstrip("}")):
        if key.startswith('"'):
            if "=" not in rest:
                continue
            key = _unescape(key[1:-1])
        labels[key] = _unescape(value)
    return tuple(sorted(labels.items()))


def _number(text: str) -> float:
    lowered = text.lower()
    if lowered in {"inf", "+inf"}:
        return math.inf
    if lowered == "-inf":
        return -math.inf
    if lowered == "nan":
        return math.nan
    if lowered == "stale":
        return STALE_NAN
    return float(text)


def expand_values(text: str) -> list[float | None]:
    """Prometheus' series notation: ``1+2x3`` is 1 3 5 7, ``_`` a gap, ``stale``."""
    out: list[float | None] = []
    for item in text.split():
        m = re.fullmatch(r"(_|[^x]+?)(?:([+-])([^x]+))?x(\d+)", item)
        if m:
            times = int(m.group(4))
            if m.group(1) == "_":
                out.extend([None] * times)
                continue
            base = _number(m.group(1))
            inc = _number(m.group(3)) if m.group(3) else 0.0
            if m.group(2) == "-":
                inc = -inc
            out.extend(base + inc * i for i in range(times + 1))
        elif item == "_":
            out.append(None)
        else:
            out.append(_number(item))
    return out


@dataclass
class Case:
    """One ``eval``: where it is, what to run and what to expect."""

    file: str
    line: int
    expr: str
    at: float | None
    start: float = 0.0
    end: float = 0.0
    step: float = 0.0
    fail: bool = False
    ordered: bool = False
    expected: list[tuple[Labels | None, list[float | None]]] = field(default_factory=list)
    samples: tuple[Sample, ...] = ()
    skip: str | None = None
    string: str | None = None

    @property
    def name(self) -> str:
        return f"{self.file}:{self.line}"


def parse_script(name: str, text: str) -> Iterator[Case]:
    loaded: dict[tuple[Labels, int], float] = {}  # a later duplicate wins
    histograms: set[str] = set()  # metric names with native histogram samples (not loaded)
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if line == "clear":
            loaded, histograms = {}, set()
            continue
        if line.startswith("load"):
            interval_ms = round(duration(line.split()[1]) * 1000)
            while i < len(lines) and lines[i].strip() and lines[i][0] in " \t":
                body = lines[i].strip()
                i += 1
                if body.startswith("#"):
                    continue
                if "{{" in body:
                    histograms.add(re.split(r"[{\s]", body, maxsplit=1)[0] or "{")
                    continue
                m = _SERIES.match(body)
                assert m, body
                labels = parse_metric(m.group("metric"))
                metric = dict(labels).get("__name__", "")
                if line.startswith("load_with_nhcb") and metric.endswith("_bucket"):
                    histograms.add(metric[: -len("_bucket")])  # also loaded as native
                for n, value in enumerate(expand_values(m.group("values"))):
                    if value is not None:
                        loaded[(labels, n * interval_ms)] = value
            continue
        m = _EVAL.match(line)
        if not m:
            continue  # other directives (e.g. load_with_nhcb) are not supported
        samples = tuple(Sample(lb, ms / 1000, v) for (lb, ms), v in loaded.items())
        case = Case(name, i, m.group("expr"), None, samples=samples)
        variant = m.group("variant") or ""
        case.fail = variant == "_fail"
        case.ordered = variant == "_ordered"
        if m.group("at"):
            case.at = duration(m.group("at"))
        else:
            case.start, case.end = duration(m.group("start")), duration(m.group("end"))
            case.step = duration(m.group("step"))
        while i < len(lines) and lines[i].strip() and lines[i][0] in " \t":
            body = lines[i].strip()
            i += 1
            if body.startswith("#"):
                continue
            if body.startswith("expect"):
                if body.startswith("expect fail"):
                    case.fail = True
                elif body.startswith("expect ordered"):
                    case.ordered = True
                elif body.startswith("expect string"):
                    quoted = body[len("expect string") :].strip()
                    case.string = _unescape(quoted[1:-1]) if quoted[0] != "`" else quoted[1:-1]
                continue
            if "{{" in body:
                case.skip = "native histograms"
                continue
            if re.fullmatch(r"[-+]?([0-9.e+-]+|Inf|NaN|inf|nan)", body):
                case.expected.append((None, [_number(body)]))
                continue
            sm = _SERIES.match(body)
            assert sm, f"{name}:{i}: {body}"
            case.expected.append(
                (parse_metric(sm.group("metric")), expand_values(sm.group("values")))
            )
        names = set(re.findall(r"[a-zA-Z_:][\w:]*", case.expr))
        by_regex = "__name__=~" in case.expr and histograms
        if case.skip is None and (names & histograms or "{" in histograms or by_regex):
            case.skip = "native histograms in the loaded data"
        yield case


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if a == b:
        return True
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


def run(case: Case) -> str | None:
    """``None`` when ``case`` gives Prometheus' answer, else what differs."""
    store = MemoryStore()
    store.write(samples=case.samples)
    engine = Engine(store)
    try:
        if case.at is not None:
            result = engine.query(case.expr, case.at)
        else:
            result = engine.range(case.expr, case.start, case.end, case.step)
    except PromQLError as exc:
        return None if case.fail else f"error: {exc}"
    if case.fail:
        return "expected an error"
    got: list[tuple[Labels | None, list[float | None]]] = []
    if isinstance(result, float):
        got = [(None, [result])]
    elif isinstance(result, Matrix):
        return _compare_range(case, list(result.series), matrix=True)
    elif isinstance(result, str):
        return None if result == case.string else f"got string {result!r}, want {case.string!r}"
    elif case.string is not None:
        return f"got {result!r}, want the string {case.string!r}"
    elif case.at is None:
        assert isinstance(result, list)
        return _compare_range(case, result, matrix=False)  # type: ignore[arg-type]
    else:
        assert isinstance(result, list)
        got = [(s.labels, [s.value]) for s in result if isinstance(s, InstantSample)]
    return _compare(case, got)


def _compare(case: Case, got: list[tuple[Labels | None, list[float | None]]]) -> str | None:
    want = case.expected
    if len(got) != len(want):
        return f"got {len(got)} results, want {len(want)}: {got!r}"
    if case.ordered:
        pairs = list(zip(got, want, strict=True))
    else:
        by_labels = {labels: values for labels, values in got}
        pairs = []
        for labels, values in want:
            if labels not in by_labels:
                return f"missing {labels}; got {got!r}"
            pairs.append(((labels, by_labels[labels]), (labels, values)))
    for (gl, gv), (wl, wv) in pairs:
        if gl != wl:
            return f"labels {gl} != {wl}"
        if len(gv) != len(wv) or not all(_close(a, b) for a, b in zip(gv, wv, strict=True)):
            return f"{wl}: got {gv}, want {wv}"
    return None


def _compare_range(case: Case, series: list[Series], *, matrix: bool) -> str | None:
    got: list[tuple[Labels | None, list[float | None]]] = []
    for s in series:
        if matrix:
            got.append((s.labels, [v for _, v in s.points]))
            continue
        by_time = dict(s.points)
        steps = round((case.end - case.start) / case.step) + 1
        values = [by_time.get(case.start + n * case.step) for n in range(steps)]
        while values and values[-1] is None:
            values.pop()
        got.append((s.labels if s.labels or case.expected[0][0] is not None else None, values))
    if matrix:
        want = case.expected
        case = Case(case.file, case.line, case.expr, case.at, ordered=case.ordered)
        case.expected = [(labels, [v for v in values if v is not None]) for labels, values in want]
    else:
        trimmed = []
        for labels, values in case.expected:
            values = list(values)
            while values and values[-1] is None:
                values.pop()
            trimmed.append((labels, values))
        case = Case(case.file, case.line, case.expr, case.at, ordered=case.ordered)
        case.expected = trimmed
    return _compare(case, got)
