"""The HTML pages. They are shells: the data comes from the JSON API."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from flask import Blueprint, Response, abort, render_template

from alerting.slo import NAME as SLO_NAME
from dashboards.slos import defined_slos
from vigil import safeyaml
from vigil.webauth import requires

bp = Blueprint("pages", __name__)
log = logging.getLogger("vigil.web")


@bp.get("/")
@requires("viewer")
def overview() -> str:
    """The overview dashboard."""
    return render_template("overview.html", page="overview")


@bp.get("/events")
@requires("viewer")
def events() -> str:
    """The Events page: search events with KQL, as in Kibana's Discover."""
    return render_template("events.html", page="events")


@bp.get("/alerts")
@requires("viewer")
def alerts() -> str:
    """The Alerts page: alert groups, their history and acknowledgement, and silences."""
    return render_template("alerts.html", page="alerts")


@bp.get("/slos")
@requires("viewer")
def slos() -> str:
    """The SLOs: objective, error budget remaining and burn rates of each."""
    return render_template("slos.html", page="slos", slo="")


@bp.get("/slos/<name>")
@requires("viewer")
def slo(name: str) -> str:
    """One SLO: its budget, burn rates per window, alert thresholds and alerts."""
    if not SLO_NAME.fullmatch(name) or name not in {s.name for s in defined_slos()}:
        abort(404)
    return render_template("slos.html", page="slos", slo=name)


# Runbooks live in the repository's runbooks/ folder; alert links point here.
RUNBOOKS = Path(__file__).resolve().parents[1] / "runbooks"
RUNBOOK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", re.ASCII)
"""A runbook's file name without ``.md``: no separators, no dot first, at most 100 characters."""
MAX_RUNBOOK_BYTES = 1024 * 1024


@bp.get("/runbooks/<name>.md")
@requires("viewer")
def runbook(name: str) -> Response:
    """A runbook as plain Markdown, so the Slack "Runbook" button has a target.

    Any name that is not a runbook file answers 404 (a name too long for the file
    system, a NUL, ``..``); a runbook that is too big or not UTF-8 answers 500
    naming the file and line, and is logged.
    """
    if not RUNBOOK_NAME.fullmatch(name) or ".." in name:
        abort(404)
    path = RUNBOOKS / f"{name}.md"
    try:
        if not path.is_file():
            abort(404)
    except (OSError, ValueError):
        abort(404)
    try:
        text = safeyaml.read_text(path, max_bytes=MAX_RUNBOOK_BYTES)
    except safeyaml.YamlInputError as exc:
        log.error("runbook cannot be served: %s", exc)
        where = f"runbooks/{name}.md" + (f":{exc.line}:{exc.column}" if exc.line else "")
        # The message names the file relative to the repository, not the server's layout.
        return Response(f"{where}: {exc.reason}\n", 500, mimetype="text/plain")
    return Response(text, content_type="text/markdown; charset=utf-8")
