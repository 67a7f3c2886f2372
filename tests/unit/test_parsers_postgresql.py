"""The PostgreSQL log parsers over lines a real PostgreSQL 15 wrote, and log_line_prefix."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from collectors.checkpoints import CHECKPOINT_FILE, Checkpoints
from collectors.errors import LineError
from collectors.metrics import CollectorMetrics
from collectors.parsers import PARSERS, get_parser
from collectors.tail import Tailer
from vigil.errors import ConfigError
from vigil.settings import from_mapping

FILES = Path(__file__).resolve().parent.parent / "files"
STDERR = FILES / "postgresql-stderr.log"
JSONLOG = FILES / "postgresql-jsonlog.json"
BAD_STATEMENT = "SELECT *\n  FROM no_such_table\n WHERE id = 1"


def tail(tmp_path: Path, recorded: Path, parser: str) -> list[dict[str, Any]]:
    """Every event of ``recorded`` as the tailer reads it (the file quiet: finished)."""
    log = tmp_path / "pg.log"
    log.write_bytes(recorded.read_bytes())
    tailer = Tailer(
        tmp_path,
        [],
        Checkpoints(tmp_path / CHECKPOINT_FILE),
        CollectorMetrics(CollectorRegistry()),
        parsers={"pg.log": PARSERS[parser]},
        clock=lambda: 1e9,
    )
    os.utime(log, (1e9, 1e9))
    return [e.doc for b in tailer.collect() for e in b.events]


@pytest.mark.parametrize(
    ("recorded", "parser"), [(STDERR, "postgresql_stderr"), (JSONLOG, "postgresql")]
)
def test_postgresql_recorded_logs_give_the_same_events(
    tmp_path: Path, recorded: Path, parser: str
) -> None:
    docs = tail(tmp_path, recorded, parser)
    assert docs and all(d["event"]["dataset"] == "postgresql.log" for d in docs)
    pg = [d["postgresql"]["log"] for d in docs]
    slow = next(d for d, p in zip(docs, pg, strict=True) if "pg_sleep(0.05)" in p.get("query", ""))
    assert slow["event"]["action"] == "statement"
    assert slow["event"]["duration"] >= 50_000_000
    assert slow["user"]["name"] == "postgres"
    assert slow["postgresql"]["log"]["database"] == "postgres"
    error = next(d for d in docs if d["message"].startswith('relation "no_such_table"'))
    assert error["log"]["level"] == "error"
    assert error["event"]["outcome"] == "failure"
    # Debian's log_line_prefix has no %e (SQLSTATE), no %r (client): only jsonlog says.
    if parser == "postgresql":
        assert error["error"] == {"message": error["message"], "code": "42P01"}
        assert error["source"]["ip"] == "127.0.0.1"
        assert error["postgresql"]["log"]["query_pos"] == 17
    else:
        assert error["message"].endswith("at character 17")
    assert error["postgresql"]["log"]["query"] == BAD_STATEMENT
    failed = [d for d in docs if d["event"].get("action") == "authentication-failed"]
    assert {d["user"]["name"] for d in failed} == {"alice", "mallory"}
    assert all(d["event"]["outcome"] == "failure" for d in failed)
    assert all(d["event"]["category"] == ["authentication"] for d in failed)
    assert any("pg_hba.conf line" in d["postgresql"]["log"].get("detail", "") for d in failed)
    deadlock = next(d for d in docs if d["event"].get("action") == "deadlock")
    assert deadlock["postgresql"]["log"]["detail"].startswith("Process ")
    assert "Process " in deadlock["postgresql"]["log"]["detail"].split("\n")[1]
    assert deadlock["postgresql"]["log"]["hint"] == "See server log for query details."
    assert deadlock["postgresql"]["log"]["query"] == "UPDATE pairs SET v = 1 WHERE id = 2"
    done = next(d for d in docs if d["event"].get("action") == "checkpoint-completed")
    assert done["postgresql"]["log"]["checkpoint"]["buffers_written"] > 0
    authorized = [d for d in docs if d["event"].get("action") == "connection-authorized"]
    assert authorized and all(d["event"]["outcome"] == "success" for d in authorized)


def test_postgresql_stderr_prefix_escapes() -> None:
    prefix = "%t [%p]: [%l-1] user=%u,db=%d,app=%a,client=%r %c %e %q"
    parse = get_parser("postgresql_stderr", postgresql_prefix=prefix)
    raw = (
        b"2026-11-29 23:50:01 CET [77]: [3-1] user=bob,db=shop,app=psql,client=10.0.0.5(51000)"
        b' 65a1b2c3.4d 28P01 FATAL:  password authentication failed for user "bob"\n'
        b"2026-11-29 23:50:01 CET [77]: [4-1] user=bob,db=shop,app=psql,client=10.0.0.5(51000)"
        b' 65a1b2c3.4d 28P01 DETAIL:  Connection matched pg_hba.conf line 3: "host all all all md5"'
    )
    doc = parse(raw, source="s", position=0, offset=0, now=0.0).doc
    assert doc["user"] == {"name": "bob"}
    assert doc["source"] == {"address": "10.0.0.5", "ip": "10.0.0.5", "port": 51000}
    pg = doc["postgresql"]["log"]
    assert pg["database"] == "shop"
    assert pg["application_name"] == "psql"
    assert pg["session_id"] == "65a1b2c3.4d"
    assert pg["session_line_number"] == 3
    assert pg["sql_state_code"] == "28P01"
    assert pg["detail"].startswith("Connection matched pg_hba.conf line 3")
    assert doc["event"]["outcome"] == "failure"
    assert doc["process"] == {"pid": 77}


@pytest.mark.parametrize(
    ("stamp", "iso"),
    [
        ("2026-11-29 23:50:01.250 UTC", "2026-11-29T23:50:01.250Z"),
        ("2026-11-29 23:50:01.250 +01", "2026-11-29T22:50:01.250Z"),
        ("2026-11-29 23:50:01.250 -05:30", "2026-11-30T05:20:01.250Z"),
    ],
)
def test_postgresql_timestamps_with_their_zone(stamp: str, iso: str) -> None:
    raw = f'{{"timestamp":"{stamp}","pid":1,"error_severity":"LOG","message":"hi"}}'.encode()
    doc = PARSERS["postgresql"](raw, source="s", position=0, offset=0, now=0.0).doc
    assert doc["@timestamp"] == iso


@pytest.mark.parametrize(
    ("parser", "raw"),
    [
        ("postgresql", b"not json"),
        ("postgresql", b'{"timestamp":"2026-11-29 23:50:01.250 UTC","message":"no severity"}'),
        ("postgresql", b'{"timestamp":"yesterday","error_severity":"LOG","message":"x"}'),
        ("postgresql", b"[1]"),
        ("postgresql_stderr", b"\tcontinuation without its message"),
        ("postgresql_stderr", b"2026-11-29 23:50:01.123 UTC [5] DETAIL:  a detail alone"),
        ("postgresql_stderr", b"2026-11-29 23:50:01.123 UTC [5] LOUD:  no such severity"),
        ("postgresql_stderr", b"2026-13-29 23:50:01.123 UTC [5] LOG:  month 13"),
    ],
)
def test_postgresql_unreadable_line_raises_line_error(parser: str, raw: bytes) -> None:
    with pytest.raises(LineError):
        PARSERS[parser](raw, source="s", position=0, offset=0, now=0.0)


def test_postgresql_prefix_setting_unknown_escape_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"collect\.postgresql_log_line_prefix: .*%Z"):
        from_mapping({"collect": {"postgresql_log_line_prefix": "%Z [%p] "}})
    ok = from_mapping(
        {"collect": {"postgresql_log_line_prefix": "%m %p ", "files": {"x": "postgresql_stderr"}}}
    )
    assert ok.collect.postgresql_log_line_prefix == "%m %p "
