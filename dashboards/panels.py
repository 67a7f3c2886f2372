"""The overview dashboard's panels: what each shows and the PromQL behind it.

The page is data-driven: it fetches these definitions from ``/api/overview``
and draws one panel per entry, so adding a chart means adding a ``Panel`` here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

PanelKind = Literal["timeseries", "table", "alerts"]


@dataclass(frozen=True)
class Panel:
    """One panel of a dashboard.

    ``kind`` says how it is drawn: ``timeseries`` charts ``expr`` over the
    selected range (``/api/query_range``), ``table`` lists the instant result
    of ``expr`` with ``columns`` taken from its labels (``/api/query``), and
    ``alerts`` lists firing alerts (``/api/alerts``). ``legend`` names the
    labels that tell series apart; ``unit`` is ``reqps``, ``ratio``,
    ``seconds`` or ``""``.
    """

    id: str
    title: str
    kind: PanelKind
    expr: str = ""
    unit: str = ""
    legend: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        rv = asdict(self)
        rv["legend"] = list(self.legend)
        rv["columns"] = list(self.columns)
        return rv


# Shopper traffic only: haproxy's health checks (/readyz every second per
# instance) and the collector's scrapes would otherwise outweigh the shop's
# real routes and dilute its error ratio.
SHOPPERS = 'job="shop", route!~"/readyz|/healthz|/metrics"'

OVERVIEW: tuple[Panel, ...] = (
    Panel(
        "alerts",
        "Firing alerts",
        "alerts",
    ),
    Panel(
        "request-rate",
        "Request rate per route",
        "timeseries",
        f"sum by (route) (rate(shop_http_requests_total{{{SHOPPERS}}}[1m]))",
        "reqps",
        ("route",),
    ),
    Panel(
        "error-ratio",
        "5xx error ratio",
        "timeseries",
        f'sum(rate(shop_http_requests_total{{{SHOPPERS}, status=~"5.."}}[1m]))'
        f" / sum(rate(shop_http_requests_total{{{SHOPPERS}}}[1m]))",
        "ratio",
    ),
    Panel(
        "latency-p95",
        "p95 latency per route",
        "timeseries",
        "histogram_quantile(0.95, sum by (le, route)"
        f" (rate(shop_http_request_duration_seconds_bucket{{{SHOPPERS}}}[1m])))",
        "seconds",
        ("route",),
    ),
    Panel(
        "payments",
        "Payments by gateway and outcome",
        "timeseries",
        "sum by (gateway, outcome) (rate(shop_payments_total[1m]))",
        "reqps",
        ("gateway", "outcome"),
    ),
    Panel(
        "release",
        "Current release per instance",
        "table",
        "shop_release_info",
        columns=("instance", "release"),
    ),
    Panel(
        "up",
        "Scrape targets up",
        "table",
        "up",
        columns=("job", "instance", "value"),
    ),
)
