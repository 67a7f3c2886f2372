"""The HTML pages. They are shells: the data comes from the JSON API."""

from __future__ import annotations

from flask import Blueprint, render_template

bp = Blueprint("pages", __name__)


@bp.get("/")
def overview() -> str:
    """The overview dashboard."""
    return render_template("overview.html")
