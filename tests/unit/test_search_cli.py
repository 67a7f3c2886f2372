"""``vigil search``: KQL over a SQLite store, through ``vigil.cli.main`` as a user runs it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from siem.model import Event
from siem.sqlite import SqliteStore
from vigil.cli import main
from vigil.settings import load_settings


@pytest.fixture
def now(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> float:
    """A data dir whose SQLite store holds access and app events of the last hour."""
    monkeypatch.setenv("VIGIL_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("VIGIL_CONFIG", raising=False)
    at = time.time()
    events = [
        Event(
            f"a{n}",
            at - 60 * n,
            "shop.access",
            {
                "message": f"GET /item/{n} {status}",
                "http": {"response": {"status_code": status}},
                "url": {"path": f"/item/{n}"},
            },
        )
        for n, status in enumerate([200, 503, 200, 502, 200, 200, 200, 200, 200, 200, 200, 200])
    ]
    events.append(Event("late", at - 3000, "shop.app", {"message": "Connection\nrefused by db"}))
    store = SqliteStore(load_settings().store_path)
    store.write(events=events)
    store.close()
    return at


def test_search_cli_table_of_matches_newest_first(
    now: float, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["search", "http.response.status_code >= 500", "--since", "15m"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["time", "dataset", "message"]
    assert [line.split()[-1] for line in lines[1:3]] == ["503", "502"]
    assert "GET /item/1 503" in lines[1] and lines[1].split()[1] == "shop.access"
    assert lines[-1] == "2 events"


def test_search_cli_since_until_and_dataset(now: float, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--since", "1h", "--until", "now-5m", "--dataset", "shop.app"]) == 0
    out = capsys.readouterr().out
    # The message's newline is folded so each event stays one table row.
    assert "Connection refused by db" in out and out.endswith("1 event\n")
    assert main(["search", "refused", "--since", "10m"]) == 0
    assert capsys.readouterr().out.endswith("0 events\n")


def test_search_cli_json_is_ndjson(now: float, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "url.path: /item/1*", "--since", "1h", "--json"]) == 0
    rows: list[dict[str, Any]] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # /item/1, /item/10, /item/11: newest (smallest n) first.
    assert [r["id"] for r in rows] == ["a1", "a10", "a11"]
    assert rows[0]["doc"]["http"]["response"]["status_code"] == 503


def test_search_cli_fields_and_limit(now: float, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["search", "--since", "1h", "--fields", "url.path,http.response.status_code"]
    assert main([*argv, "--limit", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["time", "dataset", "url.path", "http.response.status_code"]
    assert [line.split()[2:] for line in lines[1:3]] == [["/item/0", "200"], ["/item/1", "503"]]
    assert main([*argv, "--json", "--limit", "1"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["fields"] == {"url.path": "/item/0", "http.response.status_code": 200}


def test_search_cli_bad_kql_exits_2_with_the_column(
    now: float, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["search", "status >= ", "--since", "15m"]) == 2
    err = capsys.readouterr().err
    assert "column 11" in err
    # The caret sits under the column the error names.
    caret_line = err.splitlines()[-1]
    assert caret_line.index("^") == len("  status >= ")


def test_search_cli_bad_times_exit_2(now: float, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--since", "yesterday"]) == 2
    assert 'cannot parse "yesterday"' in capsys.readouterr().err
    assert main(["search", "--since", "5m", "--until", "10m"]) == 2
    assert "--until must be after --since" in capsys.readouterr().err
