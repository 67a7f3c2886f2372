"""Console logs for people, ECS JSON for machines: the formatter and the choice of format."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vigil.console import ChildEcho
from vigil.logging import HumanFormatter, choose_format, human_from_ecs, setup_logging


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for h in root.handlers:
        if h not in handlers:
            h.close()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(
    ("flag", "env", "tty", "expected"),
    [
        (None, {}, True, "human"),
        (None, {}, False, "json"),
        ("json", {}, True, "json"),
        ("human", {}, False, "human"),
        (None, {"VIGIL_LOG_FORMAT": "json"}, True, "json"),
        (None, {"VIGIL_LOG_FORMAT": "HUMAN"}, False, "human"),
        ("json", {"VIGIL_LOG_FORMAT": "human"}, True, "json"),
        (None, {"VIGIL_LOG_FORMAT": "xml"}, False, "json"),
    ],
)
def test_logging_choose_format(
    flag: str | None, env: dict[str, str], tty: bool, expected: str
) -> None:
    stream = Tty() if tty else io.StringIO()
    assert choose_format(flag, env=env, stream=stream) == expected


def test_logging_human_formatter_line() -> None:
    record = logging.LogRecord(
        "vigil.collect", logging.INFO, "x.py", 1, "collector %s", ("up",), None
    )
    record.created = dt.datetime(2026, 11, 29, 22, 14, 3).timestamp()
    assert HumanFormatter("collect").format(record) == "22:14:03 INFO  collect  collector up"
    record.__dict__.update({"file.path": "logs/app.log", "labels.job": "shop", "plain": "x"})
    assert HumanFormatter("collect").format(record) == (
        "22:14:03 INFO  collect  collector up  file=logs/app.log job=shop"
    )


def test_logging_human_formatter_keeps_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "vigil.alert", logging.ERROR, "x.py", 1, "pass failed", (), sys.exc_info()
        )
    text = HumanFormatter("alert").format(record)
    assert text.splitlines()[0].endswith("ERROR alert    pass failed")
    assert "ValueError: boom" in text


def test_logging_human_from_ecs_renders_and_drops_access_lines() -> None:
    line = json.dumps(
        {
            "@timestamp": "2026-11-29T22:14:03.000Z",
            "log.level": "warning",
            "message": "scrape failed",
            "log": {"logger": "vigil.collect"},
            "labels": {"job": "shop"},
            "url": {"full": "http://127.0.0.1:8001/metrics"},
            "error": {"message": "connection refused"},
        }
    )
    rendered = human_from_ecs(line, "collect")
    assert rendered is not None
    assert rendered.endswith(
        " WARN  collect  scrape failed"
        "  url=http://127.0.0.1:8001/metrics error=connection refused job=shop"
    )
    access = json.dumps(
        {"log.level": "info", "message": "GET /metrics", "log": {"logger": "werkzeug"}}
    )
    assert human_from_ecs(access, "web") is None
    assert human_from_ecs("Traceback (most recent call last):", "shop-1") == (
        "shop-1   | Traceback (most recent call last):"
    )


def test_logging_setup_human_console_and_json_file(
    tmp_path: Path, restore_root: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    console = Tty()
    monkeypatch.setattr("sys.stderr", console)
    assert setup_logging("web", data_dir=tmp_path, log_format=None) == "human"
    logging.getLogger("vigil.web").info("web UI listening")
    logging.getLogger("werkzeug").info('127.0.0.1 - - "GET /api/instances HTTP/1.1" 200 -')
    logging.getLogger("vigil.web").info(
        "GET /metrics 200", extra={"http.response.status_code": 200}
    )
    lines = console.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("INFO  web      web UI listening")
    docs = [
        json.loads(x) for x in (tmp_path / "logs" / "vigil" / "web.json").read_text().splitlines()
    ]
    assert docs[0]["message"] == "web UI listening"
    assert len(docs) == 3  # the access lines are kept in the file
    assert docs[0]["service"]["name"] == "vigil-web"


def test_logging_child_echo_follows_new_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "collect.log"
    path.write_text('{"log.level": "info", "message": "before the supervisor"}\n')
    out = io.StringIO()
    echo = ChildEcho({"collect": path}, out)
    with path.open("a") as f:
        f.write(
            '{"@timestamp": "2026-11-29T22:14:03Z", "log.level": "info", "message": "started"}\n'
        )
        f.write('{"log.level": "info", "message": "half')
    assert echo.poll() == 1
    with path.open("a") as f:
        f.write(' a line"}\n')
    assert echo.poll() == 1
    shown = out.getvalue().splitlines()
    assert [s.split("collect  ")[1] for s in shown] == ["started", "half a line"]
