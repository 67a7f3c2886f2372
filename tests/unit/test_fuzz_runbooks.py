"""The runbook route takes any URL: the runbook, 404, or a 500 that names file and line.

Hypothesis sends random percent-encoded names (NUL, surrogates as bytes, dots,
slashes, names longer than a file system allows); only shipped runbooks answer
200 and nothing answers 500 — a broken runbook file is the one 500, and it says
where the file is broken.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from fuzz_inputs import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from dashboards import pages
from dashboards.app import create_app
from siem.memory import MemoryStore
from vigil.auth import UserStore
from vigil.settings import from_mapping

SHIPPED = sorted(p.stem for p in pages.RUNBOOKS.glob("*.md"))


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    data_dir = tmp_path_factory.mktemp("runbooks")
    settings = from_mapping({"data_dir": str(data_dir)})
    application = create_app(settings, store=MemoryStore())
    application.config["TESTING"] = True
    # Runbooks are for viewers and up: read them as a viewer's script would.
    _, token = UserStore(data_dir / "users.db").create_token("reader", "viewer")
    application.config["VIEWER_TOKEN"] = token
    return application


def _client(app: Flask) -> FlaskClient:
    rv = app.test_client()
    rv.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {app.config['VIEWER_TOKEN']}"
    return rv


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return _client(app)


names = st.one_of(
    st.binary(max_size=40).map(lambda b: urllib.parse.quote(b, safe="")),
    st.text(max_size=40).map(lambda t: urllib.parse.quote(t.encode("utf-8", "surrogatepass"))),
    st.integers(200, 5000).map(lambda n: "a" * n),
    st.sampled_from(["..", "../README", "%2e%2e/README", "x/../shop-instance-down", ".hidden"]),
    st.sampled_from(SHIPPED),
)


@FUZZ
@given(names)
def test_fuzz_runbooks_any_name_answers_the_runbook_or_404(app: Flask, name: str) -> None:
    # A name with "//" is first redirected (308) to its merged-slashes form.
    rv = _client(app).get(f"/runbooks/{name}.md", follow_redirects=True)
    if name in SHIPPED:
        assert rv.status_code == 200
        assert rv.get_data(as_text=True) == (pages.RUNBOOKS / f"{name}.md").read_text("utf-8")
    else:
        assert rv.status_code == 404, (name, rv.status_code)


def test_runbooks_300_character_name_is_404(client: FlaskClient) -> None:
    assert client.get(f"/runbooks/{'x' * 300}.md").status_code == 404


def test_runbooks_nul_in_name_is_404(client: FlaskClient) -> None:
    assert client.get("/runbooks/shop-instance-down%00.md").status_code == 404


def test_runbooks_file_that_is_not_utf8_answers_500_naming_file_and_line(
    client: FlaskClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken.md").write_bytes(b"---\nalert: X\n---\n# X \xff\n")
    monkeypatch.setattr(pages, "RUNBOOKS", tmp_path)
    rv = client.get("/runbooks/broken.md")
    assert rv.status_code == 500
    assert rv.get_data(as_text=True).startswith("runbooks/broken.md:4:5: byte 0xff is not UTF-8")
    assert str(tmp_path) not in rv.get_data(as_text=True)


def test_runbooks_file_over_the_size_limit_answers_500(
    client: FlaskClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "huge.md").write_bytes(b"x" * (pages.MAX_RUNBOOK_BYTES + 1))
    monkeypatch.setattr(pages, "RUNBOOKS", tmp_path)
    rv = client.get("/runbooks/huge.md")
    assert rv.status_code == 500 and "larger than 1024 KiB" in rv.get_data(as_text=True)
