"""``/api/v1/`` takes any parameters: a success or a Prometheus error envelope, never a 500.

``match[]`` selectors, times, durations and limits come from whoever calls
the API; each either parses or is a 400 ``bad_data`` naming the parameter.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import pytest
from flask import Flask
from fuzz_inputs import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from dashboards.app import create_app
from dashboards.params import DashboardError
from dashboards.promapi import parse_selector
from siem.memory import MemoryStore
from siem.model import Sample, make_labels
from vigil.auth import UserStore
from vigil.settings import from_mapping

PIECES = [
    "up",
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    "job",
    "=",
    "!=",
    "=~",
    "!~",
    '"',
    "'",
    "`",
    ",",
    "__name__",
    ".*",
    "(",
    "\\",
    "offset 5m",
    "@ 10",
    "[5m]",
    " or ",
    "1",
    "-",
    "1e309",
    "NaN",
    "Inf",
    "\x00",
    "\ud800",
    "😀",
    "15s",
    "2023-11-14T22:13:20Z",
    "now",
]
TEXT = st.lists(st.sampled_from(PIECES) | st.text(max_size=5), max_size=12).map("".join)


@given(TEXT)
@FUZZ
def test_fuzz_match_selector_parses_or_is_a_dashboard_error(text: str) -> None:
    try:
        matchers = parse_selector(text)
    except DashboardError as exc:
        assert 'invalid parameter "match[]"' in str(exc)
        return
    assert matchers and not all(m.matches({}) for m in matchers)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> tuple[Flask, str]:
    tmp: Path = tmp_path_factory.mktemp("fuzz-promapi")
    store = MemoryStore()
    store.write(samples=[Sample(make_labels("up", job="a"), 1000.0 + i, 1.0) for i in range(5)])
    settings = from_mapping({"data_dir": str(tmp), "query": {"max_samples": 100_000}})
    _, token = UserStore(tmp / "users.db").create_token("fuzz", "viewer")
    return create_app(settings, store=store), token


PATHS = [
    "/api/v1/query",
    "/api/v1/query_range",
    "/api/v1/series",
    "/api/v1/labels",
    "/api/v1/label/job/values",
    "/api/v1/format_query",
    "/api/v1/query_exemplars",
]
PARAMS = st.dictionaries(
    st.sampled_from(["query", "time", "start", "end", "step", "timeout", "limit", "match[]"]),
    TEXT,
    max_size=6,
)


@given(st.sampled_from(PATHS), PARAMS, st.booleans())
@FUZZ
def test_fuzz_api_v1_answers_success_or_a_prometheus_error(
    app: tuple[Flask, str], path: str, params: dict[str, str], post: bool
) -> None:
    flask_app, token = app
    client = flask_app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    # Percent-encoded by hand: a lone surrogate becomes bytes that are not UTF-8.
    encoded = urlencode(params, encoding="utf-8", errors="surrogatepass")
    if post and path != "/api/v1/label/job/values":  # the one GET-only path here
        form = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
        rv = client.post(path, data=encoded, headers=form)
    else:
        rv = client.get(f"{path}?{encoded}", headers=headers)
    body = rv.get_json()
    if rv.status_code == 200:
        assert body["status"] == "success"
    else:
        assert (rv.status_code, body["status"]) in {(400, "error"), (422, "error")}, body
        assert body["errorType"] in ("bad_data", "execution"), body
