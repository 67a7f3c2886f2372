"""The SLO pages' JSON API: each SLO's objective, error budget, burn rates and alerts.

``/api/slos`` lists the SLOs of ``alert.slos`` and ``/api/slos/<name>`` answers one.
The numbers come from the series the generated rules record (``alerting.slo``):
``slo:sli_error:ratio_rate<window>{slo="<name>"}`` for each alert window and the
compliance window, read in one instant query per SLO. The burn rate over a window
is its error ratio over the budget (``1 - objective``); the budget remaining is
``1 - burn rate over the compliance window``, what ``slo:period_error_budget_remaining:ratio``
records. The alerts are the SLO's pending and firing alerts (label ``slo``), as
``/api/alerts`` reads them from ``vigil.alert`` events.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from flask import Blueprint, Response, abort

from alerting.rules import RuleError, expand
from alerting.slo import ERROR_RATIO, NAME, Slo, load_slos
from dashboards.api import limited, success
from dashboards.app import context
from dashboards.events import FiringAlert, active_alerts
from siem.model import METRIC_NAME
from vigil.webauth import requires

bp = Blueprint("slos", __name__, url_prefix="/api")
log = logging.getLogger("vigil.web")

MAX_SLOS = 100
"""SLOs ``/api/slos`` evaluates per request; more are listed by name only."""


def defined_slos() -> list[Slo]:
    """The SLOs of ``alert.slos``; a file with errors is logged and shows no SLOs (``vigil
    alert`` refuses it too, so there is nothing to show)."""
    try:
        return load_slos(expand(context().settings.alert.slos))
    except RuleError as exc:
        log.error("SLO files with errors, no SLOs shown:\n%s", exc)
        return []


def _number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) or math.isinf(value) else value


def slo_json(slo: Slo, alerts: Sequence[FiringAlert], at: float) -> dict[str, Any]:
    """One SLO with its windows' error ratios and burn rates, budget and alerts."""
    budget = float(slo.budget)
    with limited():
        found = context().engine.instant(f'{{__name__=~"{ERROR_RATIO}.+", slo="{slo.name}"}}', at)
    # One row of windows per series: an SLI grouped by labels has one series per group.
    series: dict[tuple[tuple[str, str], ...], dict[str, float]] = {}
    for sample in found if isinstance(found, list) else []:
        labels = dict(sample.labels)
        window = labels.pop(METRIC_NAME, "").removeprefix(ERROR_RATIO)
        key = tuple(sorted((k, v) for k, v in labels.items() if k != "slo"))
        series.setdefault(key, {})[window] = sample.value
    rows = []
    for key, ratios in sorted(series.items()):
        period = _number(ratios.get(slo.window))
        rows.append(
            {
                "labels": dict(key),
                "budget_remaining": None if period is None else 1 - period / budget,
                "windows": [
                    {
                        "window": w,
                        "error_ratio": _number(ratios.get(w)),
                        "burn_rate": None if _number(ratios.get(w)) is None else ratios[w] / budget,
                    }
                    for w in [*slo.windows(), slo.window]
                ],
            }
        )
    return {
        "name": slo.name,
        "description": slo.description,
        "objective": float(slo.objective),
        "window": slo.window,
        "error_budget": budget,
        "alertnames": slo.alert_names,
        "series": rows,
        "thresholds": [
            {
                "severity": row.severity,
                "burn_rate": row.factor,
                "long_window": long_w,
                "short_window": short_w,
                "budget_spent": row.share,
            }
            for row, long_w, short_w in slo.burn_rates()
        ],
        "alerts": [a.to_json() for a in alerts if a.labels.get("slo") == slo.name],
    }


@bp.get("/slos")
@requires("viewer")
def slos() -> Response:
    """Every SLO (the first ``MAX_SLOS`` with their numbers)."""
    found = defined_slos()
    alerts = active_alerts(context().store)
    now = time.time()
    data = [slo_json(s, alerts, now) for s in found[:MAX_SLOS]]
    more = [s.name for s in found[MAX_SLOS:]]
    warnings = [f"{len(more)} more SLOs not evaluated: {', '.join(more[:20])}"] if more else []
    return success({"slos": data}, warnings)


@bp.get("/slos/<name>")
@requires("viewer")
def slo(name: str) -> Response:
    """One SLO; 404 when no SLO has that name."""
    if not NAME.fullmatch(name):
        abort(404)
    for found in defined_slos():
        if found.name == name:
            return success(slo_json(found, active_alerts(context().store), time.time()))
    abort(404)
