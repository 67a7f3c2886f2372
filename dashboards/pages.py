"""The HTML pages. They are shells: the data comes from the JSON API."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, abort, render_template
from werkzeug.security import safe_join

from vigil.webauth import requires

bp = Blueprint("pages", __name__)


@bp.get("/")
@requires("viewer")
def overview() -> str:
    """The overview dashboard."""
    return render_template("overview.html")


# Runbooks live in the repository's runbooks/ folder; alert links point here.
RUNBOOKS = Path(__file__).resolve().parents[1] / "runbooks"


@bp.get("/runbooks/<name>.md")
@requires("viewer")
def runbook(name: str) -> Response:
    """A runbook as plain Markdown, so the Slack "Runbook" button has a target."""
    path = safe_join(str(RUNBOOKS), f"{name}.md")
    if path is None or not Path(path).is_file():
        abort(404)
    return Response(
        Path(path).read_text(encoding="utf-8"), content_type="text/markdown; charset=utf-8"
    )
