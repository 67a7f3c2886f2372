"""SLO gates: limits a run must meet, and their verdicts.

Each gate name in a profile's ``gates:`` maps to a ``GateSpec`` in ``GATES``:
what it measures on a ``RunResult`` and whether the limit is a maximum or a
minimum. A gate whose figure cannot be measured (no checkout happened) fails:
a run that proved nothing does not pass.

Example::

    verdicts = evaluate_gates(result, (Gate("p95_ms", 800),))
    all(v.passed for v in verdicts)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from loadtests.results import RunResult, format_table


@dataclass(frozen=True)
class GateSpec:
    """What a gate measures, its unit and whether its limit is an upper (``max``) bound."""

    description: str
    upper_bound: bool
    is_ratio: bool
    measure: Callable[[RunResult], float | None]


GATES: dict[str, GateSpec] = {
    "p95_ms": GateSpec(
        "95th percentile response time over all routes, in ms",
        upper_bound=True,
        is_ratio=False,
        measure=lambda r: r.total.p95_ms,
    ),
    "error_ratio": GateSpec(
        "failed requests / all requests",
        upper_bound=True,
        is_ratio=True,
        measure=lambda r: r.total.error_ratio,
    ),
    "checkout_success_ratio": GateSpec(
        "paid checkouts / all checkouts (declines count as not paid)",
        upper_bound=False,
        is_ratio=True,
        measure=lambda r: r.checkout_success_ratio,
    ),
}


@dataclass(frozen=True)
class Gate:
    """A gate of a profile: ``name`` (a key of ``GATES``) and its limit."""

    name: str
    limit: float


@dataclass(frozen=True)
class GateResult:
    """A gate's verdict: the measured figure (None when unmeasurable) against the limit."""

    name: str
    limit: float
    measured: float | None
    passed: bool


def evaluate_gate(result: RunResult, gate: Gate) -> GateResult:
    """The verdict of one gate on ``result``."""
    spec = GATES[gate.name]
    measured = spec.measure(result)
    if measured is None:
        passed = False
    elif spec.upper_bound:
        passed = measured <= gate.limit
    else:
        passed = measured >= gate.limit
    return GateResult(gate.name, gate.limit, measured, passed)


def evaluate_gates(result: RunResult, gates: Sequence[Gate]) -> tuple[GateResult, ...]:
    """The verdicts of all gates, in the profile's order."""
    return tuple(evaluate_gate(result, g) for g in gates)


def _show(name: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if GATES[name].is_ratio else f"{value:.0f}"


def gate_table(verdicts: Sequence[GateResult]) -> str:
    """One line per gate: name, measured, bound and PASS or FAIL."""
    rows = [
        [
            v.name,
            _show(v.name, v.measured),
            ("<= " if GATES[v.name].upper_bound else ">= ") + _show(v.name, v.limit),
            "PASS" if v.passed else "FAIL",
        ]
        for v in verdicts
    ]
    return format_table(("gate", "measured", "limit", "result"), rows)
