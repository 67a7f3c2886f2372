"""The haproxy and nginx line parsers over recorded real lines, the registry and the tailer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from collectors.checkpoints import CHECKPOINT_FILE, Checkpoints
from collectors.ecs import ERROR_DATASET
from collectors.errors import LineError
from collectors.metrics import CollectorMetrics
from collectors.parsers import PARSERS, get_parser
from collectors.tail import Tailer
from siem.model import Event
from vigil.errors import ConfigError
from vigil.settings import from_mapping

TAIL = b' 200 1 - - ---- 1/1/0/0/0 0/0 "GET / HTTP/1.1"'
FILES = Path(__file__).resolve().parent.parent / "files"
LINES_SYSLOG = (FILES / "haproxy-httplog-syslog.log").read_bytes().splitlines()


def parse_file(name: str, parser: str) -> list[Event]:
    lines = (FILES / name).read_bytes().splitlines()
    return [
        PARSERS[parser](raw, source=name, position=i, offset=0, now=0.0)
        for i, raw in enumerate(lines)
    ]


def test_haproxy_recorded_syslog_datagrams_become_haproxy_log_events() -> None:
    events = parse_file("haproxy-httplog-syslog.log", "haproxy")
    docs = [e.doc for e in events]
    assert [d["http"]["response"]["status_code"] for d in docs] == [200, 200, 404, 503, 200]
    first = docs[0]
    assert first["@timestamp"] == "2026-11-29T23:33:48.975Z"  # the accept date (TZ=UTC here)
    assert first["source"] == {"address": "127.0.0.1", "ip": "127.0.0.1", "port": 59150}
    assert first["haproxy"]["frontend_name"] == "web"
    assert first["haproxy"]["backend_name"] == "app"
    assert first["haproxy"]["server_name"] == "app1"
    assert first["haproxy"]["http"]["request"]["time_wait_without_data_ms"] == 1
    assert first["event"]["duration"] == 1_000_000
    assert first["haproxy"]["http"]["request"]["captured_headers"] == [
        "127.0.0.1:45887",
        "curl/7.88.1",
    ]
    assert first["haproxy"]["connections"] == {
        "active": 1,
        "frontend": 1,
        "backend": 0,
        "server": 0,
        "retries": 0,
    }
    assert first["process"] == {"name": "haproxy", "pid": 15418}
    assert first["log"]["syslog"]["facility"]["code"] == 16  # local0
    no_server = docs[3]
    assert no_server["haproxy"]["server_name"] == "<NOSRV>"
    assert no_server["haproxy"]["total_waiting_time_ms"] == -1
    assert no_server["haproxy"]["connection_wait_time_ms"] == -1
    assert no_server["haproxy"]["termination_state"] == "SC--"
    assert no_server["event"]["outcome"] == "failure"
    assert docs[4]["url"]["original"] == "/a%20b?x=%22y%22"
    assert len({e.id for e in events}) == 5


def test_haproxy_edge_cases_plus_signs_aborted_timers_and_no_header() -> None:
    marked, aborted = (e.doc for e in parse_file("haproxy-httplog-edge.log", "haproxy"))
    assert marked["haproxy"]["connections"]["retries"] == 2
    assert marked["haproxy"]["redispatched"] is True
    assert marked["haproxy"]["logasap"] is True
    assert marked["haproxy"]["tls"] is True
    assert marked["haproxy"]["frontend_name"] == "http-in"
    assert marked["http"]["response"]["bytes"] == 2750
    assert marked["haproxy"]["http"]["request"]["time_wait_ms"] == 10
    assert marked["haproxy"]["http"]["response"]["captured_headers"] == []
    # No syslog header; an aborted request: no status, -1 timers, no method.
    assert "process" not in aborted
    assert "status_code" not in aborted["http"]["response"]
    assert aborted["haproxy"]["http"]["request"]["time_wait_ms"] == -1
    assert aborted["haproxy"]["http"]["request"]["raw_request_line"] == "<BADREQ>"
    assert "request" not in aborted["http"]
    assert aborted["event"]["duration"] == 5_002_000_000


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"<134>Nov 29 22:00:00 haproxy[1]: Proxy web started.",
        b"127.0.0.1:1 [31/Feb/2026:00:00:00.000] web app/a 0/0/0/0/0" + TAIL,
        b"127.0.0.1:1 [01/Feb/2026:00:00:00.000] web app/a 0/0/0/0" + TAIL,
        b"\xff127.0.0.1:1 [01/Feb/2026:00:00:00.000] web app/a 0/0/0/0/0" + TAIL,
    ],
    ids=["empty", "not-a-request", "bad-date", "four-timers", "not-utf8"],
)
def test_haproxy_unreadable_line_raises_line_error(raw: bytes) -> None:
    with pytest.raises(LineError):
        PARSERS["haproxy"](raw, source="s", position=0, offset=0, now=0.0)


def test_nginx_recorded_combined_and_json_lines_agree() -> None:
    combined = [e.doc for e in parse_file("nginx-access-combined.log", "nginx")]
    as_json = [e.doc for e in parse_file("nginx-access-json.log", "nginx")]
    for docs in (combined, as_json):
        assert [d["event"]["dataset"] for d in docs] == ["nginx.access"] * 3
        assert [d["url"]["original"] for d in docs] == ["/index.html", "/nope?q=1", "/app/x"]
        assert [d["http"]["response"]["status_code"] for d in docs] == [200, 404, 200]
        assert [d["http"]["response"]["body"]["bytes"] for d in docs] == [2, 153, 5]
        assert docs[0]["http"]["request"]["referrer"] == "http://x/"
        assert docs[1]["user_agent"]["original"] == 'say "hi"'  # \x22 in the combined line
        assert docs[0]["@timestamp"] == "2026-11-29T23:33:55.000Z"
        assert docs[0]["source"]["ip"] == "127.0.0.1"
    assert as_json[2]["event"]["duration"] == 1_000_000
    assert as_json[2]["nginx"]["access"]["upstream_addr"].startswith("127.0.0.1:")
    assert as_json[0]["http"]["request"]["id"] == "0effca35a09013e39f07d5ed6fc21fe2"
    assert "user" not in as_json[0]  # "remote_user":"" is no user


def test_nginx_recorded_error_line_splits_message_and_context() -> None:
    (doc,) = (e.doc for e in parse_file("nginx-error.log", "nginx_error"))
    assert doc["event"]["dataset"] == "nginx.error"
    assert doc["message"].startswith('open() "/tmp/')
    assert doc["message"].endswith("failed (2: No such file or directory)")
    assert doc["log"]["level"] == "error"
    assert doc["process"] == {"pid": 15484, "thread": {"id": 15484}}
    assert doc["nginx"]["error"]["connection_id"] == 3
    assert doc["source"]["ip"] == "127.0.0.1"
    assert "server" not in doc  # nginx wrote "server: ," (no server_name)
    assert doc["http"]["request"]["method"] == "GET"
    assert doc["url"] == {"domain": "127.0.0.1:41865", "original": "/nope?q=1"}


@pytest.mark.parametrize(
    ("parser", "raw"),
    [
        ("nginx", b'127.0.0.1 - - [99/May/2024:12:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "-"'),
        ("nginx", b'{"remote_addr":"1.2.3.4"}'),
        ("nginx", b'{"time":"2024-05-01T12:00:00+00:00","status":"OK"}'),
        ("nginx", b"[1,2]"),
        ("nginx", b"hello world"),
        ("nginx_error", b"2024/05/01 12:00:00 [loud] 1#0: hi"),
        ("nginx_error", b"2024/13/01 12:00:00 [error] 1#0: hi"),
    ],
)
def test_nginx_unreadable_line_raises_line_error(parser: str, raw: bytes) -> None:
    with pytest.raises(LineError):
        PARSERS[parser](raw, source="s", position=0, offset=0, now=0.0)


def test_parser_registry_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown parser 'apache'.*ecs, haproxy, nginx"):
        get_parser("apache")


def test_parser_settings_reject_an_unknown_parser_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"collect\.files\./var/log/x\.log: unknown parser"):
        from_mapping({"collect": {"files": {"/var/log/x.log": "apache"}}})
    ok = from_mapping({"collect": {"files": {"/var/log/x.log": "haproxy"}}})
    assert ok.collect.files == {"/var/log/x.log": "haproxy"}


def make_tailer(data_dir: Path) -> Tailer:
    return Tailer(
        data_dir,
        ["logs/*.log"],
        Checkpoints(data_dir / CHECKPOINT_FILE),
        CollectorMetrics(CollectorRegistry()),
        parsers={"lb/haproxy.log": PARSERS["haproxy"], "lb/error.log": PARSERS["nginx_error"]},
        clock=lambda: 1e9,
    )


def collect(tailer: Tailer) -> list[Event]:
    batches = tailer.collect()
    for batch in batches:
        if batch.on_written is not None:
            batch.on_written()
    return [e for b in batches for e in b.events]


def test_parser_per_glob_tailer_checkpoints_rotation_and_ids(tmp_path: Path) -> None:
    lines = (FILES / "haproxy-httplog-syslog.log").read_bytes().splitlines(keepends=True)
    (tmp_path / "lb").mkdir()
    (tmp_path / "logs").mkdir()
    hap = tmp_path / "lb" / "haproxy.log"
    hap.write_bytes(b"".join(lines[:2]) + b"garbage\n")
    (tmp_path / "lb" / "error.log").write_bytes((FILES / "nginx-error.log").read_bytes())
    (tmp_path / "logs" / "app.log").write_bytes(b'{"@timestamp":"2024-05-01T12:00:00Z"}\n')
    first = collect(make_tailer(tmp_path))
    datasets = sorted(e.dataset for e in first)
    assert datasets == sorted(["haproxy.log"] * 2 + [ERROR_DATASET, "nginx.error", "unknown"])
    broken = next(e for e in first if e.dataset == ERROR_DATASET)
    assert broken.doc["event"]["original"] == "garbage"
    # A restart reads only what is new; a rotation is followed; ids stay put.
    with hap.open("ab") as fh:
        fh.write(lines[2])
    again = make_tailer(tmp_path)
    assert [e.doc["http"]["response"]["status_code"] for e in collect(again)] == [404]
    os.rename(hap, tmp_path / "lb" / "haproxy.log.1")
    hap.write_bytes(b"".join(lines[3:]))
    after = collect(make_tailer(tmp_path))
    assert [e.doc["http"]["response"]["status_code"] for e in after] == [503, 200]
    # Lines read but never stored are read again after a restart, with the same ids.
    with hap.open("ab") as fh:
        fh.write(lines[0])
    unstored = [e.id for b in make_tailer(tmp_path).collect() for e in b.events]
    assert len(unstored) == 1
    assert [e.id for e in collect(make_tailer(tmp_path))] == unstored


def test_haproxy_syslog_header_with_hostname_is_skipped() -> None:
    body = LINES_SYSLOG[0].split(b"]: ", 1)[1]
    for header in (b"<134>Nov  9 22:00:00 lb-1 haproxy[7]: ", b"haproxy[7]: ", b""):
        doc = PARSERS["haproxy"](header + body, source="s", position=0, offset=0, now=0.0).doc
        assert doc["source"]["port"] == 59150
        assert doc["haproxy"]["server_name"] == "app1"
        assert ("process" in doc) == bool(header)
