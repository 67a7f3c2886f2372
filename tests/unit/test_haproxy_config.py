"""The generated haproxy configuration, checked by haproxy itself when installed."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from conftest import free_port, http_get, require_server

from collectors.prometheus import Target, scrape
from vigil.haproxy import HaproxyAdmin, HaproxyError, Server, haproxy_binary, render_config
from vigil.settings import from_mapping
from vigil.supervisor import Supervisor


def test_haproxy_config_balances_every_instance_with_health_checks(tmp_path: Path) -> None:
    text = render_config(
        port=8100,
        servers=[Server("shop-1", 8001), Server("shop-2", 8002)],
        admin_socket=tmp_path / "haproxy.sock",
    )
    assert "bind 127.0.0.1:8100" in text
    assert "server shop-1 127.0.0.1:8001 check" in text
    assert "server shop-2 127.0.0.1:8002 check" in text
    assert "option httpchk GET /readyz" in text
    assert "option forwardfor" in text
    assert "http-request set-header X-Forwarded-Proto http if !{ ssl_fc }" in text
    assert f"stats socket {tmp_path / 'haproxy.sock'} mode 600 level admin" in text


def test_haproxy_accepts_the_generated_config(tmp_path: Path) -> None:
    binary = haproxy_binary()
    if binary is None:
        require_server("haproxy", "the haproxy binary is not installed")
        return
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        render_config(port=8100, servers=[Server("shop-1", 8001)], admin_socket=tmp_path / "s")
    )
    check = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_haproxy_admin_unreachable_socket_is_a_clear_error(tmp_path: Path) -> None:
    admin = HaproxyAdmin(tmp_path / "missing.sock")
    assert not admin.available()
    with pytest.raises(HaproxyError, match=r"missing\.sock"):
        admin.set_state("shop-1", "drain")


def test_haproxy_admin_rejects_unknown_state(tmp_path: Path) -> None:
    with pytest.raises(HaproxyError, match="ready, drain or maint"):
        HaproxyAdmin(tmp_path / "x.sock").set_state("shop-1", "sleepy")


def test_haproxy_exporter_is_scraped_as_job_haproxy(tmp_path: Path) -> None:
    """The real haproxy serves its Prometheus exporter on the metrics port; the
    collector's scraper reads it like any target, backend and server states included."""
    binary = haproxy_binary()
    if binary is None:
        require_server("haproxy", "the haproxy binary is not installed")
        return
    front, metrics, dead_shop = free_port(), free_port(), free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        render_config(
            port=front,
            servers=[Server("shop-1", dead_shop)],
            admin_socket=tmp_path / "admin.sock",
            metrics_port=metrics,
        )
    )
    proc = subprocess.Popen([binary, "-db", "-f", str(cfg)], stderr=subprocess.PIPE)
    target = Target("haproxy", f"127.0.0.1:{metrics}", f"http://127.0.0.1:{metrics}/metrics", 3.0)
    try:
        deadline = time.monotonic() + 20
        while True:
            result = scrape(target, clock=time.time)
            down = [
                s
                for s in result.samples
                if s.name == "haproxy_server_status"
                and dict(s.labels).get("server") == "shop-1"
                and dict(s.labels).get("state") == "DOWN"
            ]
            # shop-1 listens nowhere: after its health checks fail it is DOWN.
            if result.up and down and down[0].value == 1.0:
                break
            assert time.monotonic() < deadline, result.error or "shop-1 never went DOWN"
            time.sleep(0.5)
        names = {s.name for s in result.samples}
        assert {"up", "haproxy_frontend_http_requests_total", "haproxy_backend_status"} <= names
        assert {dict(s.labels)["job"] for s in result.samples} == {"haproxy"}
        status, body = http_get(f"http://127.0.0.1:{metrics}/stats")
        assert status == 200 and b"shop-1" in body
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_haproxy_config_logs_http_requests_to_the_collector_when_asked(tmp_path: Path) -> None:
    plain = render_config(port=8100, servers=[Server("shop-1", 8001)], admin_socket=tmp_path / "s")
    assert "option httplog" not in plain and "\n    log " not in plain
    text = render_config(
        port=8100,
        servers=[Server("shop-1", 8001)],
        admin_socket=tmp_path / "s",
        log_target="127.0.0.1:5140",
    )
    assert "    log 127.0.0.1:5140 local0" in text
    assert "    option httplog" in text and "    log global" in text
    binary = haproxy_binary()
    if binary is None:
        require_server("haproxy", "the haproxy binary is not installed")
        return
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    check = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def _up(tmp_path: Path, **collect: object) -> Supervisor:
    settings = from_mapping(
        {"data_dir": str(tmp_path / "data"), "collect": collect, "up": {"syslog_port": 18093}}
    )
    supervisor = Supervisor(settings)
    supervisor.run_dir.mkdir(parents=True)
    if "haproxy" in supervisor.children:
        supervisor._write_haproxy_config()
    return supervisor


def test_vigil_up_sends_haproxy_log_to_the_collector_on_up_syslog_port(tmp_path: Path) -> None:
    if haproxy_binary() is None:
        require_server("haproxy", "the haproxy binary is not installed")
    supervisor = _up(tmp_path)
    assert supervisor.children["collect"].spec.env["VIGIL_COLLECT_SYSLOG_UDP"] == (
        "127.0.0.1:18093"
    )
    text = (supervisor.run_dir / "haproxy.cfg").read_text()
    assert "    log 127.0.0.1:18093 local0" in text
    assert "option httplog" in text
    # collect.syslog_udp set: the collector reads it from the same config; haproxy uses it.
    supervisor = _up(tmp_path / "explicit", syslog_udp="127.0.0.1:5140")
    assert "VIGIL_COLLECT_SYSLOG_UDP" not in supervisor.children["collect"].spec.env
    assert "    log 127.0.0.1:5140 local0" in (supervisor.run_dir / "haproxy.cfg").read_text()


def test_vigil_up_syslog_port_0_turns_haproxy_log_off(tmp_path: Path) -> None:
    settings = from_mapping({"data_dir": str(tmp_path / "data"), "up": {"syslog_port": 0}})
    supervisor = Supervisor(settings)
    assert "VIGIL_COLLECT_SYSLOG_UDP" not in supervisor.children["collect"].spec.env
    assert supervisor.syslog_target("/usr/sbin/haproxy") is None
    assert supervisor.syslog_target(None) is None
