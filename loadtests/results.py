"""The outcome of a load test: per-route figures, checkout outcomes, tables and JSON.

Everything here is plain data: the runner fills a ``RunResult`` from locust's
statistics, gates are evaluated over it, and it is written as JSON to
``<data_dir>/loadtests/<timestamp>-<profile>.json`` for comparison with later runs;
``last_good_result`` finds the run a new one is compared with.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loadtests.gates import GateResult

CHECKOUT_ROUTE = "/api/checkout"

# ``<UTC start, compact>-<profile>.json``, as ``result_path`` names a result file.
_RESULT_NAME = re.compile(r"^(\d{8}T\d{6}Z)-(.+)\.json$")

# HTTP status of POST /api/checkout → outcome; see docs/shop.md.
_CHECKOUT_OUTCOMES = {
    201: "paid",
    402: "declined",
    409: "out_of_stock",
    502: "gateway_error",
    503: "gateway_error",
    0: "no_response",
}


def checkout_outcome(status: int) -> str:
    """The business outcome of a checkout answered with ``status`` (0: no answer)."""
    return _CHECKOUT_OUTCOMES.get(status, f"http_{status}")


@dataclass(frozen=True)
class RouteStats:
    """Figures of one route (locust request name) or of all of them (``Aggregated``)."""

    method: str
    name: str
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float

    @property
    def error_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class RunResult:
    """One load-test run."""

    profile: str
    host: str
    release: str | None
    started_at: str
    duration_s: float
    peak_users: int
    routes: tuple[RouteStats, ...]
    total: RouteStats
    checkouts: Mapping[str, int] = field(default_factory=dict)
    exceptions: int = 0

    @property
    def checkout_attempts(self) -> int:
        return sum(self.checkouts.values())

    @property
    def checkout_success_ratio(self) -> float | None:
        """Paid checkouts / all checkouts; None when nobody checked out."""
        attempts = self.checkout_attempts
        return self.checkouts.get("paid", 0) / attempts if attempts else None

    def to_json(self) -> dict[str, Any]:
        rv = asdict(self)
        rv["checkouts"] = dict(self.checkouts)
        rv["error_ratio"] = self.total.error_ratio
        rv["checkout_success_ratio"] = self.checkout_success_ratio
        return rv

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunResult:
        """The inverse of ``to_json`` (derived figures are recomputed)."""
        return cls(
            profile=data["profile"],
            host=data["host"],
            release=data["release"],
            started_at=data["started_at"],
            duration_s=data["duration_s"],
            peak_users=data["peak_users"],
            routes=tuple(RouteStats(**r) for r in data["routes"]),
            total=RouteStats(**data["total"]),
            checkouts=dict(data["checkouts"]),
            exceptions=data["exceptions"],
        )


def result_path(data_dir: str | Path, result: RunResult) -> Path:
    """``<data_dir>/loadtests/<UTC start, compact>-<profile>.json``."""
    started = dt.datetime.fromisoformat(result.started_at).astimezone(dt.UTC)
    return Path(data_dir) / "loadtests" / f"{started:%Y%m%dT%H%M%SZ}-{result.profile}.json"


def write_result(
    data_dir: str | Path, result: RunResult, verdicts: Sequence[GateResult] = ()
) -> Path:
    """Write the result and the gate verdicts as JSON; return the path."""
    path = result_path(data_dir, result)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"result": result.to_json(), "gates": [asdict(v) for v in verdicts]}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


@dataclass(frozen=True)
class SavedResult:
    """A result file read back: where it is, the run, and whether every gate passed."""

    path: Path
    result: RunResult
    passed: bool


def read_result(path: str | Path) -> SavedResult:
    """Read a file written by ``write_result``; ValueError says what is wrong with it."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"not valid JSON ({exc})") from None
    try:
        result = RunResult.from_json(doc["result"])
        gates = doc["gates"]
        if not isinstance(gates, list) or not all(
            isinstance(g, Mapping) and isinstance(g.get("passed"), bool) for g in gates
        ):
            raise ValueError("gates: expected a list of verdicts with passed true/false")
        _check_figures(result)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a load-test result ({type(exc).__name__}: {exc})") from None
    return SavedResult(path, result, all(g["passed"] for g in gates))


def _check_figures(result: RunResult) -> None:
    """Reject a result whose figures are not numbers (a hand-edited or foreign file)."""

    def number(value: object) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not isinstance(result.profile, str) or not number(result.peak_users):
        raise ValueError("profile or peak_users has the wrong type")
    for r in (*result.routes, result.total):
        figures = (r.requests, r.failures, r.rps, r.p50_ms, r.p95_ms)
        if not all(number(v) for v in figures) or not isinstance(r.name, str):
            raise ValueError(f"route {r.name!r}: its figures must be numbers")
    if not all(isinstance(v, int) for v in result.checkouts.values()):
        raise ValueError("checkouts: counts must be whole numbers")


def warn_stderr(message: str) -> None:
    """Print ``warning: message`` on stderr (the default ``warn`` of loadtests)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def last_good_result(
    data_dir: str | Path,
    profile: str,
    *,
    before: str | Path | None = None,
    warn: Callable[[str], None] = warn_stderr,
) -> SavedResult | None:
    """The newest result of ``profile`` under ``data_dir`` whose gates all passed.

    Only runs that started before ``before`` (a result file path, usually the
    new run's) count. Files are ordered by the start time in their names; a
    file that cannot be read or parsed is skipped with ``warn(message)``
    naming it, and so is a failing run, silently. None when no run qualifies.
    """
    directory = Path(data_dir) / "loadtests"
    limit: str | None = None
    if before is not None:
        match = _RESULT_NAME.match(Path(before).name)
        if match is None:
            raise ValueError(f"{before}: not a result file name (<timestamp>-<profile>.json)")
        limit = match.group(1)
    candidates: list[tuple[str, Path]] = []
    for path in directory.glob("*.json") if directory.is_dir() else ():
        match = _RESULT_NAME.match(path.name)
        if match is None or match.group(2) != profile:
            continue
        if limit is not None and match.group(1) >= limit:
            continue
        candidates.append((match.group(1), path))
    for _, path in sorted(candidates, reverse=True):
        try:
            saved = read_result(path)
        except ValueError as exc:
            warn(f"skipping load-test result {path}: {exc}")
            continue
        if saved.passed and saved.result.profile == profile:
            return saved
    return None


def format_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, left: Collection[int] = (0,)
) -> str:
    """A plain-text table; the ``left`` columns (the first) left-aligned, the others right."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(c).ljust(w) if i in left else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def summary_table(result: RunResult) -> str:
    """Requests, failures, req/s, p50 and p95 per route, then checkout outcomes."""
    header = ("route", "requests", "failures", "req/s", "p50 ms", "p95 ms")

    def row(r: RouteStats, label: str) -> list[str]:
        return [
            label,
            str(r.requests),
            f"{r.failures} ({r.error_ratio:.1%})",
            f"{r.rps:.1f}",
            f"{r.p50_ms:.0f}",
            f"{r.p95_ms:.0f}",
        ]

    rows = [row(r, f"{r.method} {r.name}") for r in result.routes]
    rows.append(row(result.total, "all routes"))
    lines = [
        f"load test {result.profile} against {result.host} "
        f"(release {result.release or 'unknown'}): {result.duration_s:.0f} s, "
        f"up to {result.peak_users} users",
        format_table(header, rows),
    ]
    ratio = result.checkout_success_ratio
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(result.checkouts.items()))
    lines.append(
        f"checkouts: {result.checkout_attempts} ({outcomes or 'none'}); success ratio "
        + (f"{ratio:.3f}" if ratio is not None else "n/a")
    )
    if result.exceptions:
        lines.append(f"locustfile exceptions: {result.exceptions} (a journey raised; see stderr)")
    return "\n".join(lines)
