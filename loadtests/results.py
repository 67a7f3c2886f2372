"""The outcome of a load test: per-route figures, checkout outcomes, tables and JSON.

Everything here is plain data: the runner fills a ``RunResult`` from locust's
statistics, gates are evaluated over it, and it is written as JSON to
``<data_dir>/loadtests/<timestamp>-<profile>.json`` for comparison with later runs.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loadtests.gates import GateResult

CHECKOUT_ROUTE = "/api/checkout"

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


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table; the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
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
