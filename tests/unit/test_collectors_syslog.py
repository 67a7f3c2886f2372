"""The syslog UDP receiver: datagrams → haproxy.log events, errors kept, every loss counted."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from collectors.deferred import RETRY_S, Deferred
from collectors.ecs import ERROR_DATASET
from collectors.errors import CollectorError
from collectors.metrics import CollectorMetrics
from collectors.syslog import SyslogReceiver, parse_address
from siem.model import Event

FILES = Path(__file__).resolve().parent.parent / "files"
LINES = (FILES / "haproxy-httplog-syslog.log").read_bytes().splitlines()


def wait_for(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, "the receiver never got the datagrams"
        time.sleep(0.01)


def send(address: str, datagrams: list[bytes]) -> None:
    host, port = parse_address(address)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for data in datagrams:
            sock.sendto(data, (host, port))


def count(registry: CollectorRegistry, result: str) -> float:
    value = registry.get_sample_value("vigil_collector_syslog_datagrams_total", {"result": result})
    return value or 0.0


def collect_events(receiver: SyslogReceiver) -> list[Event]:
    return [e for b in receiver.collect() for e in b.events]


def test_syslog_receiver_parses_datagrams_and_keeps_bad_ones() -> None:
    registry = CollectorRegistry()
    receiver = SyslogReceiver("127.0.0.1:0", CollectorMetrics(registry), clock=lambda: 1e9)
    try:
        send(receiver.address, [LINES[0], b"<134>Nov 29 haproxy[1]: garbage\n", LINES[0]])
        wait_for(lambda: count(registry, "received") == 3)
        assert receiver.behind()
        events = collect_events(receiver)
        assert [e.dataset for e in events] == ["haproxy.log", ERROR_DATASET, "haproxy.log"]
        assert events[0].doc["haproxy"]["backend_name"] == "app"
        assert events[1].doc["event"]["original"] == "<134>Nov 29 haproxy[1]: garbage"
        # The same line sent twice is two events; every id differs.
        assert len({e.id for e in events}) == 3
        assert (count(registry, "parsed"), count(registry, "failed")) == (2, 1)
        assert not receiver.behind()
        assert collect_events(receiver) == []
    finally:
        receiver.close()


def test_syslog_receiver_full_queue_drops_and_counts() -> None:
    registry = CollectorRegistry()
    receiver = SyslogReceiver("127.0.0.1:0", CollectorMetrics(registry), max_queued=2)
    try:
        send(receiver.address, LINES[:4])
        wait_for(lambda: count(registry, "received") == 4)
        assert count(registry, "dropped") == 2
        assert len(collect_events(receiver)) == 2
    finally:
        receiver.close()


def test_syslog_receiver_address_in_use_is_a_collector_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(CollectorError, match=f"cannot listen on 127.0.0.1:{port}"):
            SyslogReceiver(f"127.0.0.1:{port}", CollectorMetrics(CollectorRegistry()))


@pytest.mark.parametrize("value", ["5140", "host:", ":5140", "h:70000", "h:x"])
def test_syslog_receiver_address_must_be_host_port(value: str) -> None:
    with pytest.raises(ValueError, match="expected host:port"):
        parse_address(value)


def test_collector_with_syslog_port_taken_warns_counts_and_binds_once_free(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A port held by another program does not stop the collector: one warning naming
    the port and the fix, source_up 0, a failure counted per attempt, then it listens."""
    registry = CollectorRegistry()
    metrics = CollectorMetrics(registry)
    now = [0.0]
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{taken.getsockname()[1]}"

    def up() -> float | None:
        return registry.get_sample_value("vigil_collector_source_up", {"source": "syslog"})

    def failures() -> float | None:
        labels = {"source": "syslog"}
        return registry.get_sample_value("vigil_collector_source_failures_total", labels)

    with caplog.at_level("WARNING", logger="vigil.collect"):
        source = Deferred(
            "syslog", lambda: SyslogReceiver(address, metrics), metrics, clock=lambda: now[0]
        )
        assert source.collect() == []
        now[0] += RETRY_S
        assert source.collect() == []
    try:
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1  # the same problem is reported once
        assert f"cannot listen on {address}" in warnings[0]
        assert "up.syslog_port" in warnings[0]
        assert up() == 0 and failures() == 2
        taken.close()
        now[0] += RETRY_S / 2
        assert source.collect() == [] and up() == 0  # not before the retry is due
        now[0] += RETRY_S / 2
        source.collect()
        assert up() == 1
        send(address, LINES[:2])
        wait_for(lambda: count(registry, "received") == 2)
        assert [e.dataset for b in source.collect() for e in b.events] == ["haproxy.log"] * 2
    finally:
        source.close()
        taken.close()
